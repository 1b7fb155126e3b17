//! Value decoding: `data` (base64) and `stringData` values to text, the six keys as
//! found, and suggestions for keys that are near misses.

use super::*;

/// A decoded value and the field path it came from. `Debug` shows the path only.
#[derive(Clone)]
pub(crate) struct Field {
    pub(crate) path: String,
    pub(crate) value: String,
}

impl std::fmt::Debug for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Field")
            .field("path", &self.path)
            .field("value", &regcred_types::REDACTED)
            .finish()
    }
}

/// The six keys as found (effective values: `stringData` over `data`).
#[derive(Debug, Default)]
pub(crate) struct RawCredentials {
    pub(crate) server_address: Option<Field>,
    pub(crate) username: Option<Field>,
    pub(crate) password: Option<Field>,
    pub(crate) auth: Option<Field>,
    pub(crate) identity_token: Option<Field>,
    pub(crate) registry_token: Option<Field>,
}

impl RawCredentials {
    pub(super) fn slot(&mut self, key: &str) -> Option<&mut Option<Field>> {
        Some(match key {
            keys::SERVER_ADDRESS => &mut self.server_address,
            keys::USERNAME => &mut self.username,
            keys::PASSWORD => &mut self.password,
            keys::AUTH => &mut self.auth,
            keys::IDENTITY_TOKEN => &mut self.identity_token,
            keys::REGISTRY_TOKEN => &mut self.registry_token,
            _ => return None,
        })
    }
}

/// The key closest to `unknown`, if close enough to be a likely typo.
pub(super) fn suggest(unknown: &str) -> Option<&'static str> {
    if let Some(exact) = keys::ALL.iter().find(|k| k.eq_ignore_ascii_case(unknown)) {
        return Some(exact);
    }
    let lower = unknown.to_ascii_lowercase();
    keys::ALL
        .iter()
        .map(|k| (distance(&lower, &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over bytes (keys are ASCII; anything else is far anyway).
pub(super) fn distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() > 64 {
        return usize::MAX;
    }
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, &cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            current.push(
                (previous[j] + cost)
                    .min(previous[j + 1] + 1)
                    .min(current[j] + 1),
            );
        }
        previous = current;
    }
    previous[b.len()]
}

/// Where a value was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    Data,
    StringData,
}

impl Source {
    pub(super) fn path(self, key: &str) -> String {
        match self {
            Self::Data => format!("data[{key}]"),
            Self::StringData => format!("stringData[{key}]"),
        }
    }
}

/// What one entry of `data` or `stringData` holds, for [`decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Holds {
    /// One credential value: no control characters, at most
    /// [`PolicyConfig::value_limit`] bytes.
    Value,
    /// A whole document (a Docker config): newlines are fine, and the limit is the larger
    /// of the value and Secret limits.
    Document,
}

/// Decodes one entry of `data` or `stringData`, reporting why it cannot be used. Values
/// are never quoted in messages: they may be passwords.
pub(super) fn decode(
    source: Source,
    key: &str,
    value: &serde_json::Value,
    holds: Holds,
    config: &PolicyConfig,
    findings: &mut Findings,
) -> Option<String> {
    let path = source.path(key);
    let Some(text) = value.as_str() else {
        let hint = match holds {
            Holds::Value => "; quote it in YAML",
            Holds::Document => "",
        };
        findings.violation(
            &path,
            FieldErrorType::FieldValueTypeInvalid,
            format!("must be a string, not {}{hint}", json_type(value)),
        );
        return None;
    };
    let decoded = match source {
        Source::StringData => text.to_string(),
        Source::Data => {
            let decoded = STANDARD.decode(text).map(String::from_utf8);
            let problem = match (decoded, holds) {
                (Ok(Ok(decoded)), _) => Ok(decoded),
                (_, Holds::Document) => Err(
                    "is not base64 of UTF-8 JSON; put the JSON under stringData or encode it \
                     with base64 -w0"
                        .to_string(),
                ),
                (Err(_), Holds::Value) => Err(format!(
                    "is not valid base64: values under data must be base64-encoded \
                     (standard alphabet, padded); {}",
                    plain_hint(key)
                )),
                (Ok(Err(_)), Holds::Value) => Err(format!(
                    "decodes to bytes that are not UTF-8 text; if you wrote plain text \
                     here, it only happens to look like base64: {}",
                    plain_hint(key)
                )),
            };
            match problem {
                Ok(decoded) => decoded,
                Err(message) => {
                    findings.violation(&path, FieldErrorType::FieldValueInvalid, message);
                    return None;
                }
            }
        }
    };
    let limit = match holds {
        Holds::Value => config.value_limit(),
        Holds::Document => config.value_limit().max(config.secret_limit()),
    };
    if decoded.len() > limit {
        findings.violation(
            &path,
            FieldErrorType::FieldValueTooLong,
            format!(
                "is {} bytes long; the limit is {limit} bytes",
                decoded.len()
            ),
        );
        return None;
    }
    if holds == Holds::Document {
        return Some(decoded);
    }
    if let Some((at, c)) = decoded.char_indices().find(|(_, c)| c.is_control()) {
        let hint = if c == '\n' {
            " (a trailing newline usually comes from `echo` without `-n`; use printf %s)"
        } else {
            ""
        };
        findings.violation(
            &path,
            FieldErrorType::FieldValueInvalid,
            format!(
                "must not contain control characters: found U+{:04X} at byte {at}{hint}",
                c as u32
            ),
        );
        return None;
    }
    Some(decoded)
}

/// How to write `key` so that it decodes: plain text under `stringData`, or base64.
fn plain_hint(key: &str) -> String {
    format!(
        "put plain text under stringData instead (stringData[{key}]), or encode it: \
         printf %s 'VALUE' | base64 -w0"
    )
}

pub(super) fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a map",
    }
}
