//! The rules on the Secret object itself: its top-level fields and `metadata`.

use super::*;

/// The fields of a Secret object.
pub(super) const SECRET_FIELDS: [&str; 7] = [
    "apiVersion",
    "kind",
    "metadata",
    "type",
    "data",
    "stringData",
    "immutable",
];

pub(super) fn check_top_level(secret: &SecretManifest, findings: &mut Findings) {
    for field in secret.unknown_fields.keys() {
        let hint = SECRET_FIELDS
            .iter()
            .find(|known| known.eq_ignore_ascii_case(field))
            .map(|known| format!("did you mean {known:?}? "))
            .unwrap_or_default();
        findings.violation(
            field,
            FieldErrorType::FieldValueNotSupported,
            format!(
                "a Secret has no field {field:?}; {hint}its fields are {}",
                SECRET_FIELDS.join(", ")
            ),
        );
    }
}

pub(super) fn is_dns1123_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= 63
        && ok(bytes[0])
        && ok(bytes[bytes.len() - 1])
        && bytes.iter().all(|&b| ok(b) || b == b'-')
}

pub(super) fn is_dns1123_subdomain(text: &str) -> bool {
    text.len() <= 253 && text.split('.').all(is_dns1123_label)
}

pub(super) fn check_metadata(secret: &SecretManifest, findings: &mut Findings) {
    let metadata = &secret.metadata;
    match metadata.name.as_deref() {
        Some(name) if !name.is_empty() => {
            if !is_dns1123_subdomain(name) {
                findings.violation(
                    "metadata.name",
                    FieldErrorType::FieldValueInvalid,
                    format!(
                        "{name:?} is not a DNS-1123 subdomain: at most 253 lower-case letters, \
                         digits, '-' and '.', starting and ending with a letter or digit"
                    ),
                );
            }
        }
        _ if metadata
            .generate_name
            .as_deref()
            .is_some_and(|g| !g.is_empty()) => {}
        _ => findings.violation(
            "metadata.name",
            FieldErrorType::FieldValueRequired,
            "name or generateName is required",
        ),
    }
    if let Some(namespace) = metadata.namespace.as_deref()
        && !is_dns1123_label(namespace)
    {
        findings.violation(
            "metadata.namespace",
            FieldErrorType::FieldValueInvalid,
            format!(
                "{namespace:?} is not a DNS-1123 label: at most 63 lower-case letters, \
                 digits and '-', starting and ending with a letter or digit"
            ),
        );
    }
}
