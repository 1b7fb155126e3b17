//! Glob matching inside one host label: `*`, `?` and `[...]` classes, as kubelet and Go's
//! `path.Match` understand them. A label never contains `.`, so `*` cannot cross labels.

/// True when `pattern` contains a glob character.
pub(crate) fn has_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// Checks that `pattern` is a well-formed label glob: classes closed and non-empty.
pub(crate) fn check(pattern: &str) -> Result<(), String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '[' {
            match class_end(&chars, i) {
                Some(end) => i = end,
                None => return Err("has a '[' with no matching ']'".into()),
            }
        } else if chars[i] == ']' {
            return Err("has a ']' with no matching '['".into());
        }
        i += 1;
    }
    Ok(())
}

/// Index of the `]` closing the class that opens at `start`.
fn class_end(chars: &[char], start: usize) -> Option<usize> {
    let mut i = start + 1;
    if matches!(chars.get(i), Some('^' | '!')) {
        i += 1;
    }
    // A class needs at least one member.
    let first = i;
    while i < chars.len() {
        if chars[i] == ']' && i > first {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Does the class opening at `start` (closing at `end`) contain `c`?
fn class_matches(chars: &[char], start: usize, end: usize, c: char) -> bool {
    let mut i = start + 1;
    let negated = matches!(chars.get(i), Some('^' | '!'));
    if negated {
        i += 1;
    }
    let mut found = false;
    while i < end {
        let low = chars[i];
        if i + 2 < end && chars[i + 1] == '-' {
            let high = chars[i + 2];
            found |= low <= c && c <= high;
            i += 3;
        } else {
            found |= low == c;
            i += 1;
        }
    }
    found != negated
}

/// Matches `text` against the label glob `pattern`. A malformed pattern matches nothing.
/// Runs in O(len(pattern) * len(text)) at worst (one backtrack point, the last `*`).
pub(crate) fn matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        let step = match p.get(pi) {
            Some('*') => {
                backtrack = Some((pi, ti));
                pi += 1;
                continue;
            }
            Some('?') => Some(pi + 1),
            Some('[') => match class_end(&p, pi) {
                Some(end) if class_matches(&p, pi, end, t[ti]) => Some(end + 1),
                Some(_) => None,
                None => return false,
            },
            Some(&c) if c == t[ti] => Some(pi + 1),
            _ => None,
        };
        match (step, backtrack) {
            (Some(next), _) => {
                pi = next;
                ti += 1;
            }
            (None, Some((star, star_text))) => {
                pi = star + 1;
                ti = star_text + 1;
                backtrack = Some((star, star_text + 1));
            }
            (None, None) => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::literal("registry", "registry", true)]
    #[case::literal_differs("registry", "registri", false)]
    #[case::star_all("*", "anything", true)]
    #[case::star_empty("*", "", true)]
    #[case::star_prefix("eu-*", "eu-west", true)]
    #[case::star_prefix_miss("eu-*", "us-west", false)]
    #[case::star_middle("a*z", "abcz", true)]
    #[case::star_backtrack("*ab", "aab", true)]
    #[case::two_stars("*-*-1", "eu-west-1", true)]
    #[case::question("r?", "r1", true)]
    #[case::question_needs_one("r?", "r", false)]
    #[case::class("r[0-9]", "r7", true)]
    #[case::class_miss("r[0-9]", "rx", false)]
    #[case::class_negated("r[^0-9]", "rx", true)]
    #[case::class_bang("r[!0-9]", "r1", false)]
    #[case::class_list("[abc]", "b", true)]
    #[case::malformed_class("r[0-9", "r1", false)]
    fn label_globs(#[case] pattern: &str, #[case] text: &str, #[case] expected: bool) {
        assert_eq!(matches(pattern, text), expected, "{pattern} vs {text}");
    }

    #[rstest]
    #[case::ok("eu-[a-z]*", true)]
    #[case::unclosed("eu-[a-z", false)]
    #[case::stray_close("eu]", false)]
    #[case::empty_class("[]", false)]
    fn checks_patterns(#[case] pattern: &str, #[case] ok: bool) {
        assert_eq!(check(pattern).is_ok(), ok);
    }

    #[test]
    fn long_star_patterns_stay_fast() {
        let text = "a".repeat(63);
        assert!(!matches("*a*a*a*a*a*a*a*a*b", &text));
    }
}
