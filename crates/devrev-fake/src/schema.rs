//! The fake org's custom-field schema and the value rules `rev-users.update` enforces on
//! contacts' own data (devrev-api.md §4.3): phone numbers in E.164, and every custom field
//! defined by one of the contact's tenant schema fragments, sent with a `custom_schema_spec`
//! ("each custom field in the request must have the corresponding schema specified; omission
//! results in a Bad Request error").

use serde_json::Value;

/// The fields each tenant fragment of the fake org defines, by the fragment's DON tail.
/// `tenant_fragment/3` is the contact fragment every generated contact has (Plug's
/// `user_traits` land in it); `tenant_fragment/9` belongs to a retired CRM import that only
/// some contacts still carry.
pub const FRAGMENTS: &[(&str, &[&str])] = &[
    (
        "tenant_fragment/3",
        &[
            "tnt__plan",
            "tnt__app_user_id",
            "tnt__signup_source",
            "tnt__company",
        ],
    ),
    ("tenant_fragment/9", &["tnt__legacy_crm_id"]),
];

/// True when one of `fragments` (DONs) defines `field`.
pub fn defined(fragments: &[String], field: &str) -> bool {
    fragments.iter().any(|f| {
        FRAGMENTS
            .iter()
            .any(|(tail, fields)| f.ends_with(tail) && fields.contains(&field))
    })
}

/// The E.164 rule: `+`, a non-zero digit, at most 15 digits in all, nothing else.
pub fn is_e164(n: &str) -> bool {
    let Some(digits) = n.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len())
        && digits.chars().all(|c| c.is_ascii_digit())
        && !digits.starts_with('0')
}

/// The contact's fragment DONs.
pub fn fragments_of(user: &Value) -> Vec<String> {
    user["custom_schema_fragments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164() {
        assert!(is_e164("+14155550100"));
        assert!(!is_e164("4155550100"));
        assert!(!is_e164("+1 415 555 0100"));
        assert!(!is_e164("+0123"));
        assert!(!is_e164("+1234567890123456"));
    }

    #[test]
    fn fragments_define_fields() {
        let f = vec!["don:core:dvrv-us-1:devo/x:tenant_fragment/3".to_string()];
        assert!(defined(&f, "tnt__plan"));
        assert!(!defined(&f, "tnt__legacy_crm_id"));
    }
}
