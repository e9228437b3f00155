//! Lenient serde models of the DevRev objects this tool touches.
//!
//! DevRev's responses carry more fields than its public spec declares and the set drifts, so
//! every model ignores what it does not know *but keeps it* in `extra`: a backup written from
//! these types holds everything the API returned, not only the fields we model.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A reference to a user embedded in other objects (`reported_by[]`, `members[]`, ...).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct UserSummary {
    pub id: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A contact (`rev_user`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RevUser {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_verified: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_identity: Option<UserSummary>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl RevUser {
    /// A contact is active unless DevRev says otherwise (a missing state counts as active,
    /// which is what real responses for ordinary contacts look like).
    pub fn is_active(&self) -> bool {
        self.state.as_deref().is_none_or(|s| s == "active")
    }

    /// The fields a decision about this contact needs (the verified rule, the carry-over,
    /// the backup a restore recreates it from) that this answer does not carry.
    ///
    /// Only DevRev's beta schema declares them (devrev-api.md §1), so an answer by the public
    /// schema leaves them out: such a field is *unknown*, never empty. Reading it as "no
    /// custom fields" would plan a carry-over without them and lose them with the secondary,
    /// and reading a missing `is_verified` as "unverified" would pass a merge DevRev refuses.
    pub fn unknown_fields(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.is_verified.is_none() {
            out.push("is_verified");
        }
        for k in ["custom_fields", "tags"] {
            if self.extra.get(k).is_none_or(Value::is_null) {
                out.push(k);
            }
        }
        out
    }

    /// The lists a carry-over or its undo edits (`custom_fields`, `tags`) that the answer does
    /// not carry: unknown, so what the survivor holds cannot be told from what was carried.
    pub fn unknown_lists(&self) -> Vec<&'static str> {
        let mut out = self.unknown_fields();
        out.retain(|f| *f != "is_verified");
        out
    }

    /// The contact's account (`rev_org.id`), when DevRev says: contacts of two accounts are
    /// two customers, never duplicates of each other.
    pub fn account(&self) -> Option<&str> {
        self.extra
            .get("rev_org")
            .and_then(|o| o.get("id"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }
}

/// An attachment reference embedded in a ticket or a timeline entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ArtifactSummary {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileInfo>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An artifact's `file`. DevRev's spec types `size` as `int32`, so a negative (or any other
/// odd) size is spec-valid: it is read as *unknown*, never as a decode error that would fail
/// the whole listing it came in, and the odd value is kept in `odd_size` so messages can
/// name it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(from = "RawFileInfo")]
pub struct FileInfo {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub mime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The size in bytes, when DevRev declared a usable one (a whole number, not negative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// A declared `size` that is no byte count (`-1`, `2.5`, `"big"`), as DevRev sent it.
    #[serde(skip)]
    pub odd_size: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// [`FileInfo`] as it arrives: `size` any JSON value.
#[derive(Deserialize)]
struct RawFileInfo {
    #[serde(rename = "type", default)]
    mime: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    size: Option<Value>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

impl From<RawFileInfo> for FileInfo {
    fn from(r: RawFileInfo) -> Self {
        let (size, odd_size) = match r.size {
            None | Some(Value::Null) => (None, None),
            Some(v) => match v.as_u64() {
                Some(n) => (Some(n), None),
                None => (None, Some(v.to_string())),
            },
        };
        FileInfo {
            mime: r.mime,
            name: r.name,
            size,
            odd_size,
            extra: r.extra,
        }
    }
}

/// A work item; this tool only asks for tickets.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Work {
    pub id: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default)]
    pub reported_by: Vec<UserSummary>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactSummary>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Work {
    /// A name for folders and messages: the display id when DevRev sent one.
    pub fn label(&self) -> &str {
        self.display_id.as_deref().unwrap_or(&self.id)
    }
}

/// One entry of an object's timeline. Comments and change events are mixed; every type is
/// kept as returned.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TimelineEntry {
    #[serde(default)]
    pub id: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactSummary>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A conversation (chat/Plug thread).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Conversation {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_id: Option<String>,
    #[serde(default)]
    pub members: Vec<UserSummary>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Conversation {
    pub fn label(&self) -> &str {
        self.display_id.as_deref().unwrap_or(&self.id)
    }
}

/// Full artifact metadata from `artifacts.get`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Artifact {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileInfo>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `artifacts.locate`: a short-lived download URL. The URL is a credential (its signature
/// lets anyone fetch the file), so `Debug` never prints it; nothing should log or store it.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Located {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

impl std::fmt::Debug for Located {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Located")
            .field("url", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// `auth-tokens.info`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TokenInfo {
    #[serde(default)]
    pub organization: Organization,
    #[serde(default)]
    pub user: UserSummary,
    #[serde(default)]
    pub token: TokenMeta,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Organization {
    #[serde(default)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TokenMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<i64>,
}

/// `dev-users.self`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DevUser {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let raw = json!({
            "id": "don:identity:dvrv-us-1:devo/abc:revu/X1",
            "display_id": "REVU-X1",
            "state": "active",
            "custom_fields": {"tnt__a": 1},
            "tags": [{"tag": {"id": "t"}}]
        });
        let user: RevUser = serde_json::from_value(raw.clone()).unwrap();
        assert!(user.is_active());
        assert_eq!(serde_json::to_value(&user).unwrap(), raw);
    }

    #[test]
    fn located_debug_hides_the_signed_url() {
        let l = Located {
            url: "https://files.example/a?X-Amz-Signature=s3cr3t".into(),
            expires_at: None,
        };
        assert!(!format!("{l:?}").contains("s3cr3t"));
    }

    /// `file.size` is `int32` in the spec: a negative or fractional one is an unknown size,
    /// never a decode error for the ticket (or the whole listing) it came in.
    #[test]
    fn an_odd_file_size_is_unknown_not_an_error() {
        for (raw, odd) in [
            (json!(-5), "-5"),
            (json!(2.5), "2.5"),
            (json!("big"), "\"big\""),
        ] {
            let w: Work = serde_json::from_value(json!({
                "id": "t", "artifacts": [{"id": "a", "file": {"name": "x", "size": raw}}]
            }))
            .unwrap();
            let f = w.artifacts[0].file.as_ref().unwrap();
            assert_eq!((f.size, f.odd_size.as_deref()), (None, Some(odd)));
        }
        let f: FileInfo = serde_json::from_value(json!({"size": 3})).unwrap();
        assert_eq!((f.size, f.odd_size), (Some(3), None));
    }

    #[test]
    fn work_without_reported_by_parses() {
        let w: Work = serde_json::from_value(json!({"id": "t", "title": "x"})).unwrap();
        assert!(w.reported_by.is_empty());
        assert_eq!(w.label(), "t");
    }
}
