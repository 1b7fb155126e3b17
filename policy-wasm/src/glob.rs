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

/// The characters a host label of an image reference can hold (lower-cased).
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-";

/// How many (inner, outer) state pairs [`contains`] explores before giving up.
const CONTAINMENT_BUDGET: usize = 4096;

/// One step of a label glob: `*`, or one character out of a set (a bit per
/// [`ALPHABET`] character).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Star,
    One(u64),
}

/// The state pairs [`contains`] has reached: an insert-only hash set, never iterated (so
/// its order cannot show). `std`'s `HashSet` cost the policy module about 4 KB of code
/// (SipHash of `u128`s, hashbrown's growth); this one is linear probing over a table that
/// doubles at half full, with a multiplicative hash.
#[derive(Debug, Default)]
struct Visited {
    slots: Vec<Option<(u128, u128)>>,
    len: usize,
}

impl Visited {
    /// Where `key` is, or the free slot where it would go. The table must not be empty.
    fn slot(&self, key: (u128, u128)) -> usize {
        let mask = self.slots.len() - 1;
        let folded = key.0 ^ key.1.rotate_left(61);
        let mixed = ((folded as u64) ^ ((folded >> 64) as u64)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut at = (mixed >> 40) as usize & mask;
        while let Some(found) = self.slots[at] {
            if found == key {
                break;
            }
            at = (at + 1) & mask;
        }
        at
    }

    fn contains(&self, key: &(u128, u128)) -> bool {
        !self.slots.is_empty() && self.slots[self.slot(*key)].is_some()
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Adds `key`, which the set does not hold yet.
    fn insert(&mut self, key: (u128, u128)) {
        if (self.len + 1) * 2 > self.slots.len() {
            let grown = vec![None; (self.slots.len() * 2).max(64)];
            let old = std::mem::replace(&mut self.slots, grown);
            for kept in old.into_iter().flatten() {
                let at = self.slot(kept);
                self.slots[at] = Some(kept);
            }
        }
        let at = self.slot(key);
        self.slots[at] = Some(key);
        self.len += 1;
    }
}

/// The pattern as tokens; `None` when malformed or longer than a label can be.
fn tokens(pattern: &str) -> Option<Vec<Token>> {
    let chars: Vec<char> = pattern.chars().collect();
    let mask = |accepts: &dyn Fn(char) -> bool| {
        ALPHABET
            .iter()
            .enumerate()
            .filter(|(_, b)| accepts(char::from(**b)))
            .fold(0u64, |m, (i, _)| m | 1 << i)
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let token = match chars[i] {
            '*' => Token::Star,
            '?' => Token::One(mask(&|_| true)),
            '[' => {
                let end = class_end(&chars, i)?;
                let token = Token::One(mask(&|c| class_matches(&chars, i, end, c)));
                i = end;
                token
            }
            c => Token::One(mask(&|a| a == c)),
        };
        // `**` is `*`.
        if !(token == Token::Star && out.last() == Some(&Token::Star)) {
            out.push(token);
        }
        i += 1;
    }
    (out.len() < 128).then_some(out)
}

/// The states (positions in `tokens`) reachable from `states` without reading: a `*`
/// may match nothing.
fn closure(tokens: &[Token], mut states: u128) -> u128 {
    for (i, token) in tokens.iter().enumerate() {
        if *token == Token::Star && states & (1 << i) != 0 {
            states |= 1 << (i + 1);
        }
    }
    states
}

/// The states after reading the [`ALPHABET`] character with index `c`.
fn step(tokens: &[Token], states: u128, c: usize) -> u128 {
    let mut next = 0u128;
    for (i, token) in tokens.iter().enumerate() {
        if states & (1 << i) == 0 {
            continue;
        }
        match token {
            Token::Star => next |= 1 << i,
            Token::One(set) if set & (1 << c) != 0 => next |= 1 << (i + 1),
            Token::One(_) => {}
        }
    }
    closure(tokens, next)
}

/// Does every label `inner` matches also match `outer`? Both are label globs; labels are
/// made of [`ALPHABET`]. `Some(answer)` when decided, `None` when a pattern is
/// malformed or the question is too costly to settle (a bounded search, so that no
/// pattern pair can make validation slow).
///
/// Reads both patterns as automata and walks every pair of state sets the same text
/// reaches in both: `inner` is within `outer` unless some text ends accepted by `inner`
/// and not by `outer`.
pub(crate) fn contains(outer: &str, inner: &str) -> Option<bool> {
    let same = outer == inner;
    let (outer, inner) = (tokens(outer)?, tokens(inner)?);
    if same {
        return Some(true);
    }
    let accepts = |tokens: &[Token], states: u128| states & (1 << tokens.len()) != 0;
    // Characters no token tells apart behave alike: one of each kind is enough.
    let mut kinds: Vec<usize> = Vec::new();
    let mut seen: Vec<Vec<bool>> = Vec::new();
    for c in 0..ALPHABET.len() {
        let signature: Vec<bool> = outer
            .iter()
            .chain(&inner)
            .map(|t| matches!(t, Token::One(set) if set & (1 << c) != 0))
            .collect();
        if !seen.contains(&signature) {
            seen.push(signature);
            kinds.push(c);
        }
    }
    let start = (closure(&inner, 1), closure(&outer, 1));
    let mut visited = Visited::default();
    visited.insert(start);
    let mut pending = vec![start];
    while let Some((inner_states, outer_states)) = pending.pop() {
        if accepts(&inner, inner_states) && !accepts(&outer, outer_states) {
            return Some(false);
        }
        for &c in &kinds {
            let next = (step(&inner, inner_states, c), step(&outer, outer_states, c));
            // No text continues in `inner` from here: nothing to disprove.
            if next.0 == 0 || visited.contains(&next) {
                continue;
            }
            if visited.len() >= CONTAINMENT_BUDGET {
                return None;
            }
            visited.insert(next);
            pending.push(next);
        }
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visited_is_a_set() {
        let mut visited = Visited::default();
        let mut reference = std::collections::HashSet::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Few distinct keys, so that most are seen again.
            let key = (u128::from(x % 3000) << 70, u128::from(x % 7));
            assert_eq!(visited.contains(&key), reference.contains(&key), "{key:?}");
            if !reference.contains(&key) {
                visited.insert(key);
                reference.insert(key);
            }
            assert_eq!(visited.len(), reference.len());
        }
        assert!(reference.len() > 5000, "{}", reference.len());
    }
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

    #[rstest]
    #[case::same("y[!x]", "y[!x]", Some(true))]
    #[case::star_escapes_class("y[!x]", "y*", Some(false))]
    #[case::literal_in_class("y[!x]", "ya", Some(true))]
    #[case::excluded_literal("y[!x]", "yx", Some(false))]
    #[case::question_is_any("?", "[a-z0-9-]", Some(true))]
    #[case::class_is_not_any("[a-z]", "?", Some(false))]
    #[case::stars("a*b*c", "a*bb*c", Some(true))]
    #[case::stars_not("a*bb*c", "a*b*c", Some(false))]
    #[case::empty_label_in_star("*", "", Some(true))]
    #[case::malformed("[a", "a", None)]
    fn containment(#[case] outer: &str, #[case] inner: &str, #[case] expected: Option<bool>) {
        assert_eq!(contains(outer, inner), expected, "{inner} within {outer}");
    }

    #[test]
    fn costly_containment_gives_up() {
        // "the 14th character from the end is an a": 2^13 state sets in `outer`.
        let outer = format!("*a{}", "?".repeat(13));
        let inner = format!("*a{}[a-z]", "?".repeat(12));
        assert_eq!(contains(&outer, &inner), None);
        // The same shape, small enough, is decided.
        let outer = format!("*a{}", "?".repeat(5));
        let inner = format!("*a{}[a-z]", "?".repeat(4));
        assert_eq!(contains(&outer, &inner), Some(true));
        assert_eq!(contains(&inner, &outer), Some(false));
    }

    #[test]
    fn long_star_patterns_stay_fast() {
        let text = "a".repeat(63);
        assert!(!matches("*a*a*a*a*a*a*a*a*b", &text));
    }
}
