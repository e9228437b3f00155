//! Typed errors from the DevRev API, carrying what DevRev said (`type`, `message`, `detail`,
//! `reference_id`) so reports can quote it and support can look it up.

use serde::Deserialize;

/// The JSON error body DevRev sends. Every field is optional: the route-not-found body is
/// just `{"message":"route not found"}` with no `type`.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq)]
pub struct ErrorBody {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_name: Option<String>,
    /// `int64` in the spec: a negative one reads as 0 and a fractional one (seen from
    /// proxies) as its next whole second, never as a body that cannot be read at all.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_wait"
    )]
    pub retry_after: Option<u64>,
    /// The answer's `Location` header (a 301 names the object's new id there). Not part of
    /// DevRev's body, so never read from it.
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The same `Location` as DevRev sent it, never scrubbed: the id in it is compared (is it
    /// the primary?), and the scrubber only touches text that is shown or stored. Never
    /// serialized, and `Debug` does not print it.
    #[serde(skip)]
    pub location_raw: Unshown,
}

/// A server value kept exactly as sent for comparisons only: `Debug` never prints it, so no
/// log line or error dump can show an echoed token through it.
#[derive(Clone, Default, PartialEq)]
pub struct Unshown(pub Option<String>);

impl std::fmt::Debug for Unshown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "[kept, not shown]"
        } else {
            "None"
        })
    }
}

/// A wait in seconds from any JSON number (negative: 0; fractional: rounded up); any other
/// value is no wait.
fn lenient_wait<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(v.and_then(|v| {
        v.as_u64()
            .or_else(|| v.as_f64().map(|f| f.max(0.0).ceil() as u64))
    }))
}

impl ErrorBody {
    /// The body with `secret` taken out of every text field (see [`scrub`]).
    pub(crate) fn scrubbed(mut self, secret: &str) -> Self {
        for field in [
            &mut self.kind,
            &mut self.message,
            &mut self.detail,
            &mut self.reference_id,
            &mut self.field_name,
            &mut self.location,
        ]
        .into_iter()
        .flatten()
        {
            *field = scrub(field, secret);
        }
        self
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(k) = &self.kind {
            parts.push(k.clone());
        }
        if let Some(m) = &self.message {
            parts.push(m.clone());
        }
        if let Some(d) = &self.detail {
            parts.push(d.clone());
        }
        if let Some(f) = &self.field_name {
            parts.push(format!("field `{f}`"));
        }
        if let Some(r) = &self.reference_id {
            parts.push(format!("reference id {r}"));
        }
        if parts.is_empty() {
            "no details".to_string()
        } else {
            parts.join(": ")
        }
    }
}

/// What replaces the API token in server text.
pub const REDACTED: &str = "[redacted]";

/// `text` with every occurrence of `secret` replaced by [`REDACTED`]. A proxy or a
/// misconfigured gateway may echo the request's `Authorization` header (`Bearer <token>` or
/// the bare token) in its error message; replacing the bare token covers both forms. The
/// client runs every piece of server text through this before it becomes an [`ApiError`],
/// so logs, the console, the savepoint and reports all get the scrubbed text.
pub fn scrub(text: &str, secret: &str) -> String {
    if secret.is_empty() || !text.contains(secret) {
        return text.to_string();
    }
    text.replace(secret, REDACTED)
}

/// Why a call to DevRev failed, after retries where retrying was allowed. `Clone`, so a
/// fatal error can leave a saga step and still be recorded there.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// DevRev answered with an error status.
    #[error("DevRev {endpoint} answered HTTP {status}: {}", body.describe())]
    Status {
        endpoint: String,
        status: u16,
        body: Box<ErrorBody>,
    },
    /// DevRev could not be reached (DNS, refused connection, TLS, timeouts) after retries.
    #[error("cannot reach DevRev for {endpoint} after {attempts} attempt(s): {reason}")]
    Unreachable {
        endpoint: String,
        attempts: u32,
        reason: String,
    },
    /// A write was sent but its answer was lost (timeout or dropped connection). The write
    /// may or may not have been applied; the caller must check before repeating it.
    #[error(
        "outcome unknown for {endpoint}: the request may have reached DevRev but the answer was lost ({reason}); check the state before repeating it"
    )]
    OutcomeUnknown { endpoint: String, reason: String },
    /// DevRev answered 2xx but with a body we could not understand.
    #[error("unexpected answer from DevRev {endpoint}: {reason}")]
    Decode { endpoint: String, reason: String },
    /// Downloading an attachment from a pre-signed URL failed.
    #[error("download of {what} failed: {reason}")]
    Download { what: String, reason: String },
    /// Writing a downloaded attachment to the local disk failed (a full disk, a lost
    /// permission): retrying the download cannot help, and the next pair would fail the same.
    #[error("cannot write {what}: {reason}")]
    LocalWrite { what: String, reason: String },
    /// DevRev answered a read of one contact with the record of another (its `id` is not the
    /// one asked; an API may resolve a merged-away id to its survivor). Never taken for the
    /// contact asked: a backup or a verdict built on it would be about someone else.
    #[error(
        "DevRev {endpoint} for {asked} answered another contact ({answered}); not taken for \
         the one asked"
    )]
    OtherContact {
        endpoint: String,
        asked: String,
        answered: String,
    },
    /// The run was asked to stop (Ctrl-C) while waiting.
    #[error("cancelled")]
    Cancelled,
}

impl ApiError {
    /// HTTP status if DevRev answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// DevRev's error `type`, e.g. `conflict`, `not_found`.
    pub fn kind(&self) -> Option<&str> {
        match self {
            ApiError::Status { body, .. } => body.kind.as_deref(),
            _ => None,
        }
    }

    /// The `Location` header of an error answer (301).
    pub fn location(&self) -> Option<&str> {
        match self {
            ApiError::Status { body, .. } => body.location.as_deref(),
            _ => None,
        }
    }

    /// The `Location` header as DevRev sent it (unscrubbed), for comparing the id in it;
    /// never for showing (use [`Self::location`]).
    pub fn location_as_sent(&self) -> Option<&str> {
        match self {
            ApiError::Status { body, .. } => body.location_raw.0.as_deref(),
            _ => None,
        }
    }

    pub fn reference_id(&self) -> Option<&str> {
        match self {
            ApiError::Status { body, .. } => body.reference_id.as_deref(),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }

    /// DevRev's own "this object does not exist": a 404 with type `not_found`. A 404 without
    /// a type is an unknown route (a wrong base URL, a misrouting proxy) and says nothing
    /// about the object.
    pub fn is_devrev_not_found(&self) -> bool {
        self.is_not_found() && self.kind() == Some("not_found")
    }

    /// A 404 without DevRev's error type: an unknown route, never evidence about an object.
    pub fn is_typeless_404(&self) -> bool {
        self.is_not_found() && self.kind().is_none()
    }

    /// The one rule every command uses to decide whether a failed call (after the client's
    /// retries) stops the whole command or only fails the pair or backup in hand.
    ///
    /// `Run`: the next call would fail the same way whatever it is about, so going on would
    /// only fail pair after pair (and spend the rate budget): DevRev unreachable, the token
    /// refused (401/403), the rate limit still answering 429 after the retries (the budget is
    /// per token), an unknown route (typeless 404: wrong base URL or a misrouting proxy), or
    /// the user asked to stop. Everything else, including a 5xx that outlived the retries, is
    /// about this object.
    pub fn scope(&self) -> Scope {
        match self {
            ApiError::Unreachable { .. } | ApiError::Cancelled => Scope::Run,
            ApiError::Status {
                status: 401 | 403 | 429,
                ..
            } => Scope::Run,
            e if e.is_typeless_404() => Scope::Run,
            _ => Scope::Pair,
        }
    }
}

/// What a failed call stops: see [`ApiError::scope`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The whole command stops (and resumes on the next run).
    Run,
    /// Only this pair (or backup) fails; the command goes on with the next.
    Pair,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `retry_after` is `int64`: a negative or fractional one still leaves the body readable.
    #[test]
    fn an_odd_retry_after_keeps_the_error_body() {
        for (raw, want) in [
            ("-3", Some(0)),
            ("1.5", Some(2)),
            ("\"x\"", None),
            ("7", Some(7)),
        ] {
            let text = format!(r#"{{"type":"too_many_requests","retry_after":{raw}}}"#);
            let b: ErrorBody = serde_json::from_str(&text).unwrap();
            assert_eq!(b.kind.as_deref(), Some("too_many_requests"));
            assert_eq!(b.retry_after, want, "{raw}");
        }
    }

    #[test]
    fn the_token_is_scrubbed_from_every_text_field_in_both_forms() {
        let t = "eyJhbGciOi.s3cr3t-tok";
        let echo = format!("denied (Authorization: Bearer {t}; token {t})");
        let body = ErrorBody {
            kind: Some(t.into()),
            message: Some(echo.clone()),
            detail: Some(format!("Authorization: {t}")),
            reference_id: Some(format!("ref-{t}")),
            field_name: Some(t.into()),
            retry_after: None,
            location: Some(format!("https://h/x?auth={t}")),
            location_raw: Unshown(Some(format!("https://h/x?auth={t}"))),
        }
        .scrubbed(t);
        let shown = ApiError::Status {
            endpoint: "works.list".into(),
            status: 400,
            body: Box::new(body.clone()),
        }
        .to_string();
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(!format!("{body:?}").contains("s3cr3t"), "{body:?}");
        assert!(shown.contains("Bearer [redacted]"), "{shown}");
        assert_eq!(scrub("nothing here", t), "nothing here");
        assert_eq!(scrub("x", ""), "x");
    }
}
