//! What a DevRev id (DON) says about itself: the organization it belongs to. Shared by the
//! merge run and the restore, which both check that ids they read from disk belong to the
//! token's org before anything is sent.

/// The `devo/<org>` part of a DON, which names the DevRev organization it belongs to
/// (`don:identity:dvrv-us-1:devo/<org>:revu/<id>` → `devo/<org>`). `None` for an id that is
/// not a DON (`REVU-1`).
pub fn org_of(don: &str) -> Option<String> {
    let at = don.find("devo/")?;
    let rest = &don[at..];
    Some(rest.split(':').next().unwrap_or(rest).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_comes_from_the_devo_segment() {
        assert_eq!(
            org_of("don:identity:dvrv-us-1:devo/abc:revu/X").as_deref(),
            Some("devo/abc")
        );
        assert_eq!(
            org_of("don:identity:dvrv-us-1:devo/abc").as_deref(),
            Some("devo/abc")
        );
        assert_eq!(org_of("REVU-1"), None);
    }
}
