//! IPv4 and IPv6 literals: parsing and display with the same results as `std::net`'s
//! `FromStr` and `Display`, written out here because the standard library's versions
//! (a general parser and a padding-aware formatter) cost the policy module about 6 KB.
//! The tests compare both with `std::net` on every shape of input.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A cursor over the ASCII bytes of a literal.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl Cursor<'_> {
    /// Runs `inner`; when it fails, puts the cursor back where it was.
    fn attempt<T>(&mut self, inner: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
        let saved = self.rest;
        let result = inner(self);
        if result.is_none() {
            self.rest = saved;
        }
        result
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        let (&first, rest) = self.rest.split_first()?;
        (first == byte).then(|| self.rest = rest)
    }

    /// `sep` (unless this is the first item), then `inner`.
    fn item<T>(
        &mut self,
        sep: u8,
        first: bool,
        inner: impl FnOnce(&mut Self) -> Option<T>,
    ) -> Option<T> {
        self.attempt(|c| {
            if !first {
                c.eat(sep)?;
            }
            inner(c)
        })
    }

    /// At most `max_digits` digits of `radix` (10 or 16) whose value fits in `limit`;
    /// more than one digit with a leading `0` only where `zero_prefix` allows it.
    #[inline(never)]
    fn number(
        &mut self,
        radix: u32,
        max_digits: usize,
        limit: u32,
        zero_prefix: bool,
    ) -> Option<u32> {
        self.attempt(|c| {
            let leading_zero = c.rest.first() == Some(&b'0');
            let mut value = 0u32;
            let mut digits = 0;
            while let Some(digit) = c.rest.first().and_then(|&b| char::from(b).to_digit(radix)) {
                c.rest = &c.rest[1..];
                value = value * radix + digit;
                digits += 1;
                if digits > max_digits || value > limit {
                    return None;
                }
            }
            let ok = digits > 0 && (zero_prefix || !leading_zero || digits == 1);
            ok.then_some(value)
        })
    }

    fn ipv4(&mut self) -> Option<Ipv4Addr> {
        self.attempt(|c| {
            let mut octets = [0u8; 4];
            for (i, octet) in octets.iter_mut().enumerate() {
                *octet = c.item(b'.', i == 0, |c| c.number(10, 3, 255, false))? as u8;
            }
            Some(Ipv4Addr::from(octets))
        })
    }

    /// Fills `groups` from the front; returns how many it filled and whether the last
    /// two came from an embedded IPv4 address.
    fn groups(&mut self, groups: &mut [u16]) -> (usize, bool) {
        let limit = groups.len();
        for i in 0..limit {
            if i + 1 < limit
                && let Some(v4) = self.item(b':', i == 0, |c| c.ipv4())
            {
                let [a, b, c, d] = v4.octets();
                groups[i] = u16::from_be_bytes([a, b]);
                groups[i + 1] = u16::from_be_bytes([c, d]);
                return (i + 2, true);
            }
            match self.item(b':', i == 0, |c| c.number(16, 4, 0xffff, true)) {
                Some(group) => groups[i] = group as u16,
                None => return (i, false),
            }
        }
        (limit, false)
    }

    fn ipv6(&mut self) -> Option<Ipv6Addr> {
        self.attempt(|c| {
            let mut head = [0u16; 8];
            let (head_len, head_v4) = c.groups(&mut head);
            if head_len == 8 {
                return Some(Ipv6Addr::from(head));
            }
            if head_v4 {
                return None;
            }
            c.eat(b':')?;
            c.eat(b':')?;
            // `::` stands for at least one group of zeros.
            let mut tail = [0u16; 7];
            let (tail_len, _) = c.groups(&mut tail[..7 - head_len]);
            head[8 - tail_len..].copy_from_slice(&tail[..tail_len]);
            Some(Ipv6Addr::from(head))
        })
    }
}

/// Runs `read` over the whole of `text`.
fn whole<T>(text: &str, read: impl FnOnce(&mut Cursor<'_>) -> Option<T>) -> Option<T> {
    let mut cursor = Cursor {
        rest: text.as_bytes(),
    };
    read(&mut cursor).filter(|_| cursor.rest.is_empty())
}

/// `text.parse::<Ipv4Addr>().ok()`.
pub(crate) fn parse_ipv4(text: &str) -> Option<Ipv4Addr> {
    whole(text, |c| c.ipv4())
}

/// `text.parse::<Ipv6Addr>().ok()`.
pub(crate) fn parse_ipv6(text: &str) -> Option<Ipv6Addr> {
    whole(text, |c| c.ipv6())
}

/// Shows an address as `Display` for `Ipv4Addr` does (no width or precision).
pub(crate) struct ShowIpv4(pub(crate) Ipv4Addr);

impl fmt::Display for ShowIpv4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.0.octets();
        write!(f, "{a}.{b}.{c}.{d}")
    }
}

/// Shows an address as `Display` for `Ipv6Addr` does (no width or precision): IPv4-mapped
/// addresses as `::ffff:a.b.c.d`, otherwise the first longest run of two or more zero
/// groups as `::` and every group in lower-case hex without leading zeros.
pub(crate) struct ShowIpv6(pub(crate) Ipv6Addr);

impl fmt::Display for ShowIpv6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(v4) = self.0.to_ipv4_mapped() {
            return write!(f, "::ffff:{}", ShowIpv4(v4));
        }
        let groups = self.0.segments();
        let (mut best, mut best_len, mut run) = (0, 0, 0);
        for (i, &group) in groups.iter().enumerate() {
            run = if group == 0 { run + 1 } else { 0 };
            if run > best_len {
                best_len = run;
                best = i + 1 - run;
            }
        }
        // At most 8 groups of 4 digits and 7 separators ("::" replaces at least one).
        let mut text = [0u8; 39];
        let mut len = 0;
        for (i, &group) in groups.iter().enumerate() {
            if best_len > 1 && (best..best + best_len).contains(&i) {
                if i == best {
                    text[len..len + 2].copy_from_slice(b"::");
                    len += 2;
                }
                continue;
            }
            if i > 0 && !(best_len > 1 && i == best + best_len) {
                text[len] = b':';
                len += 1;
            }
            let digits = (16 - group.leading_zeros() as usize).div_ceil(4).max(1);
            for k in (0..digits).rev() {
                text[len] = b"0123456789abcdef"[usize::from(group >> (4 * k)) & 0xf];
                len += 1;
            }
        }
        f.write_str(std::str::from_utf8(&text[..len]).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift), so that failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn check(text: &str) {
        assert_eq!(parse_ipv4(text), text.parse::<Ipv4Addr>().ok(), "{text:?}");
        assert_eq!(parse_ipv6(text), text.parse::<Ipv6Addr>().ok(), "{text:?}");
    }

    #[test]
    fn parsing_agrees_with_std_on_chosen_literals() {
        for text in [
            "",
            ":",
            "::",
            ":::",
            "::1",
            "1::",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7:8:9",
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
            "1::8",
            "1:2:3:4:5:6::7:8",
            "1:::2",
            "::ffff:1.2.3.4",
            "::1.2.3.4",
            "1:2:3:4:5:6:1.2.3.4",
            "1:2:3:4:5:6:7:1.2.3.4",
            "1.2.3.4::",
            "1.2.3.4",
            "01.2.3.4",
            "0.0.0.0",
            "255.255.255.255",
            "256.1.1.1",
            "1.2.3",
            "1.2.3.4.5",
            "1..2.3",
            "1.2.3.4.",
            ".1.2.3.4",
            "1234.1.1.1",
            "00.1.1.1",
            "fe80::1%eth0",
            "FE80::ABCD",
            "12345::",
            "0000:0000::",
            "00000::",
            "::0:0:0:0",
            "1:2:3:4:5:6:7",
            "[::1]",
            " ::1",
            "::1 ",
            "1:2:3:4:5::1.2.3.4",
            "g::",
            "::-1",
            "+1.2.3.4",
            "1.2.3.04",
            "::ffff:01.2.3.4",
            "::1.2.3",
            "¹.2.3.4",
            "::١",
            "1::2:3:4:5:6:7",
            "1::2:3:4:5:6:7:8",
            "::1:2:3:4:5:6:7",
            "::1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7:8::",
            "::1.2.3.4:5",
            "1:2:3:4:5:1.2.3.4",
            "a:b:c:d:e:f:1.2.3.4",
        ] {
            check(text);
        }
    }

    #[test]
    fn parsing_agrees_with_std_on_random_literals() {
        let alphabet = b"0123456789abcdefABCDEFg:.::::..%";
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..300_000 {
            let len = rng.below(40);
            let text: String = (0..len)
                .map(|_| char::from(alphabet[rng.below(alphabet.len())]))
                .collect();
            check(&text);
        }
        // Near misses of real addresses: a displayed address with one byte changed.
        for _ in 0..100_000 {
            let mut text = random_ipv6(&mut rng).to_string().into_bytes();
            let at = rng.below(text.len());
            match rng.below(3) {
                0 => text[at] = alphabet[rng.below(alphabet.len())],
                1 => {
                    text.remove(at);
                }
                _ => text.insert(at, alphabet[rng.below(alphabet.len())]),
            }
            check(std::str::from_utf8(&text).unwrap());
        }
    }

    fn random_ipv6(rng: &mut Rng) -> Ipv6Addr {
        let mut groups = [0u16; 8];
        for group in &mut groups {
            *group = match rng.below(4) {
                0 | 1 => 0,
                2 => rng.next() as u16 & 0xf,
                _ => rng.next() as u16,
            };
        }
        if rng.below(8) == 0 {
            groups[..5].fill(0);
            groups[5] = 0xffff;
        }
        Ipv6Addr::from(groups)
    }

    #[test]
    fn display_agrees_with_std() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..200_000 {
            let ip = random_ipv6(&mut rng);
            assert_eq!(
                ShowIpv6(ip).to_string(),
                ip.to_string(),
                "{:?}",
                ip.segments()
            );
            assert_eq!(parse_ipv6(&ip.to_string()), Some(ip));
            let v4 = Ipv4Addr::from(rng.next() as u32);
            assert_eq!(ShowIpv4(v4).to_string(), v4.to_string());
        }
        for ip in [
            Ipv6Addr::UNSPECIFIED,
            Ipv6Addr::LOCALHOST,
            "::ffff:0.0.0.0".parse().unwrap(),
        ] {
            assert_eq!(ShowIpv6(ip).to_string(), ip.to_string());
        }
    }
}
