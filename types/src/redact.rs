//! The one redactor of serde error text: every message that may carry input (a JSON or
//! YAML parse of a Secret, a policy request) goes through [`serde_message`] before it
//! reaches a person.

/// `message` (a serde error's text) without the input values serde quotes: `invalid
/// type: string "hunter2", expected u16` becomes `invalid type: string, expected u16`;
/// the same for `integer `N`` and `floating point `N`` (YAML turns `password: 1234` into
/// a number). Field and variant names in backticks stay: they are keys, not values.
///
/// ```
/// let err = serde_json::from_str::<u16>(r#""hunter2""#).unwrap_err();
/// let shown = regcred_types::redact::serde_message(&err.to_string());
/// assert_eq!(shown, "invalid type: string, expected u16 at line 1 column 9");
/// ```
pub fn serde_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    loop {
        let next = [
            ("string \"", '"'),
            ("integer `", '`'),
            ("floating point `", '`'),
        ]
        .into_iter()
        .filter_map(|(opener, close)| find(rest, opener).map(|at| (at, opener, close)))
        .min_by_key(|(at, _, _)| *at);
        let Some((at, opener, close)) = next else {
            break;
        };
        // Keep the word (`string`), drop the space, the quotes and what they hold.
        out.push_str(&rest[..at + opener.len() - 2]);
        let after = &rest[at + opener.len()..];
        // serde escapes quotes inside with Debug formatting, so the first unescaped
        // closing quote ends the value.
        let mut end = after.len();
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                c if c == close && !escaped => {
                    end = i + c.len_utf8();
                    break;
                }
                _ => escaped = false,
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// `haystack.find(needle)` as a byte search: the same index (a UTF-8 needle can only
/// match at a character boundary), without `core`'s two-way string searcher, which cost
/// the policy module ~2.6 KB. The redactor's and the policy's one string search.
///
/// ```
/// use regcred_types::redact::find;
/// assert_eq!(find("https://user@r.example", "://"), Some(5));
/// assert_eq!(find("r.example", "@"), None);
/// ```
pub fn find(haystack: &str, needle: &str) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|window| window == needle.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::{find, serde_message};

    #[test]
    fn find_is_str_find() {
        let pieces = [
            "", ":", "/", "://", "é", "ü:", "h", "https", "::", "/:/", "ö/",
        ];
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let haystack = format!("{a}{b}{c}{b}");
                    for needle in pieces {
                        assert_eq!(
                            find(&haystack, needle),
                            haystack.find(needle),
                            "{haystack:?} {needle:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn quoted_values_go_names_stay() {
        for (message, shown) in [
            (
                r#"invalid type: string "CANARY \"x\" y", expected a map at line 1"#,
                "invalid type: string, expected a map at line 1",
            ),
            (
                "invalid type: integer `1234`, expected a string",
                "invalid type: integer, expected a string",
            ),
            (
                "invalid type: floating point `1.5`, expected a string",
                "invalid type: floating point, expected a string",
            ),
            (
                "unknown field `sekret`, expected `secret`",
                "unknown field `sekret`, expected `secret`",
            ),
            (
                r#"invalid value: string "a", expected x; string "b""#,
                "invalid value: string, expected x; string",
            ),
            (r#"string "unterminated"#, "string"),
        ] {
            assert_eq!(serde_message(message), shown, "{message}");
        }
    }
}
