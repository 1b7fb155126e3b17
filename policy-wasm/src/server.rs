//! `serverAddress`: parsing, the registry key it stands for, and matching against images.

use regcred_types::redact::find;

use crate::host::{DOCKER_HUB, Host, ServerAddressError, err, parse_host, parse_port};
use crate::reference::ImageRef;
use crate::{glob, ip};

/// The scheme written in front of a server address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `http://`: credentials travel in the clear.
    Http,
    /// `https://`.
    Https,
}

/// A parsed `serverAddress`: `[https://|http://]HOST[:PORT][/PATH]`.
///
/// Docker Hub's spellings become [`DOCKER_HUB`]; a path that is only `/v1/` or `/v2/`
/// (the registry API version, as in `https://index.docker.io/v1/`) is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddress {
    /// The scheme, when written.
    pub scheme: Option<Scheme>,
    /// The host.
    pub host: Host,
    /// The port, when written.
    pub port: Option<u16>,
    /// Path prefix segments (repository namespace), possibly empty.
    pub path: Vec<String>,
}

impl ServerAddress {
    /// Parses a server address (see the type's docs).
    ///
    /// # Errors
    ///
    /// A message saying which part is wrong (scheme, user info, query, host, port, path).
    pub fn parse(text: &str) -> Result<Self, ServerAddressError> {
        if text.is_empty() {
            return err("must not be empty");
        }
        // First, so that no other message quotes a part of a password.
        if text.contains('@') {
            return err(
                "must not contain user info ('USER:PASSWORD@'): put credentials in their own keys",
            );
        }
        if let Some(c) = text.chars().find(|c| c.is_whitespace()) {
            return err(format!("must not contain white space ({:?})", c));
        }
        let lower = text.to_ascii_lowercase();
        let (scheme, rest) = if lower.starts_with("https://") {
            (Some(Scheme::Https), &text["https://".len()..])
        } else if lower.starts_with("http://") {
            (Some(Scheme::Http), &text["http://".len()..])
        } else if let Some(at) = find(text, "://") {
            return err(format!(
                "scheme {:?} is not supported: write https://, http:// or no scheme",
                &text[..at]
            ));
        } else {
            (None, text)
        };
        if rest.contains('#') {
            return err("must not contain a fragment ('#')");
        }
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash + 1..]),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return err("has no host");
        }
        // `?` is a glob in the host; anywhere else it could only start a URL query.
        let (host, port) =
            parse_authority(authority).map_err(|e| match authority.contains('?') {
                true => ServerAddressError(format!(
                    "{e} ('?' in the host is a one-character glob; a query is not allowed)"
                )),
                false => e,
            })?;
        if path.contains('?') {
            return err("must not contain a query ('?')");
        }
        let path = parse_path(path)?;
        Ok(Self {
            scheme,
            host,
            port,
            path,
        })
    }

    /// True for every spelling of Docker Hub.
    pub fn is_docker_hub(&self) -> bool {
        self.port.is_none() && self.host == Host::Dns(DOCKER_HUB.into())
    }

    /// True when a host label holds a glob.
    pub fn has_glob(&self) -> bool {
        matches!(&self.host, Host::Dns(name) if glob::has_glob(name))
    }

    /// `HOST[:PORT]`.
    pub fn host_port(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.to_string(),
        }
    }

    /// The registry key: `HOST[:PORT][/PATH]`, the form candidates report as `matched`.
    pub fn key(&self) -> String {
        let mut key = self.host_port();
        for segment in &self.path {
            key.push('/');
            key.push_str(segment);
        }
        key
    }

    /// Does this address cover `image`? Ports equal, the same number of host labels with
    /// each label glob-matching, and the path prefix matching whole segments.
    pub fn matches(&self, image: &ImageRef) -> bool {
        self.covers(&image.host, image.port, &image.path)
    }

    /// Is this address inside `allowed` (a pattern from `allowedRegistries`)? True when
    /// every host, port and path this address covers is one `allowed` covers.
    pub fn is_within(&self, allowed: &ServerAddress) -> bool {
        self.containment(allowed) == Containment::Within
    }

    /// Is every image this address matches also matched by `allowed`? Ports equal,
    /// `allowed`'s path a prefix of this one's (whole segments), the same number of host
    /// labels, and each host label's glob contained in `allowed`'s: `y[a-w].corp` is
    /// within `y[!x].corp`, `y*.corp` is not (it matches `yx.corp`).
    pub(crate) fn containment(&self, allowed: &ServerAddress) -> Containment {
        let outside = self.port != allowed.port
            || allowed.path.len() > self.path.len()
            || allowed.path.iter().zip(&self.path).any(|(a, b)| a != b);
        if outside {
            return Containment::Outside;
        }
        let (Host::Dns(pattern), Host::Dns(name)) = (&allowed.host, &self.host) else {
            return match allowed.host == self.host {
                true => Containment::Within,
                false => Containment::Outside,
            };
        };
        let (outer, inner): (Vec<&str>, Vec<&str>) =
            (pattern.split('.').collect(), name.split('.').collect());
        if outer.len() != inner.len() {
            return Containment::Outside;
        }
        let mut answer = Containment::Within;
        for (outer, inner) in outer.iter().zip(&inner) {
            let label = match glob::has_glob(inner) {
                false => Some(glob::matches(outer, inner)),
                true => glob::contains(outer, inner),
            };
            match label {
                Some(true) => {}
                Some(false) => return Containment::Outside,
                None => answer = Containment::Undecided,
            }
        }
        answer
    }

    /// Does this address, as a pattern, cover `host`, `port` and `path`?
    fn covers(&self, host: &Host, port: Option<u16>, path: &[String]) -> bool {
        let host_matches = match (&self.host, host) {
            (Host::Dns(pattern), Host::Dns(name)) => labels_match(pattern, name),
            (a, b) => a == b,
        };
        self.port == port
            && host_matches
            && self.path.len() <= path.len()
            && self.path.iter().zip(path).all(|(a, b)| a == b)
    }

    /// `https://HOST[:PORT]` of the registry containerd contacts for `image`, the only
    /// `server_address` form containerd accepts.
    pub fn containerd_server_address(image: &ImageRef) -> String {
        format!("https://{}", image.registry_host_port())
    }
}

/// `text` with anything that may be user info (`USER:PASSWORD@`) replaced by `***@`,
/// for messages: everything after the scheme up to the last `@` goes, so a password
/// holding `/`, `?`, `#` or `@` goes with it.
pub(crate) fn without_user_info(text: &str) -> String {
    let Some(at) = text.rfind('@') else {
        return text.to_string();
    };
    let start = find(text, "://").map_or(0, |i| i + "://".len());
    let start = if start > at { 0 } else { start };
    format!("{}***{}", &text[..start], &text[at..])
}

/// How kubelet's reading of a Docker config key (as a URL: `https://` is put in front
/// and Go's `net/url` parses it) differs from regcred's, when it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KubeletReading {
    /// kubelet takes a `?` for the start of a URL query and uses the entry for the host
    /// before it: credentials meant for a glob would go to another registry.
    OtherHost(String),
    /// kubelet cannot parse the key (Go rejects `[` outside an IPv6 literal) and ignores
    /// the entry, which regcred matches as a glob.
    Ignored,
}

/// What kubelet makes of the Docker config key `key`, when not what regcred makes of it.
pub(crate) fn kubelet_reading(key: &str) -> Option<KubeletReading> {
    let lower = key.to_ascii_lowercase();
    let rest = ["https://", "http://"]
        .iter()
        .find_map(|scheme| lower.strip_prefix(scheme))
        .unwrap_or(&lower);
    let authority = rest.split('/').next().unwrap_or_default();
    if let Some(query) = authority.find('?') {
        return Some(KubeletReading::OtherHost(authority[..query].to_string()));
    }
    let ipv6 = authority.starts_with('[')
        && authority
            .find(']')
            .is_some_and(|close| ip::parse_ipv6(&authority[1..close]).is_some());
    (authority.contains('[') && !ipv6).then_some(KubeletReading::Ignored)
}

/// Whether a Secret's address lies inside an `allowedRegistries` pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Containment {
    /// Every image it matches, the pattern matches.
    Within,
    /// Some image it matches, the pattern does not (or the ports or paths differ).
    Outside,
    /// Its globs are too intricate to decide against the pattern's within the bounded
    /// search: treated as outside.
    Undecided,
}

fn labels_match(pattern: &str, name: &str) -> bool {
    let pattern_labels: Vec<&str> = pattern.split('.').collect();
    let name_labels: Vec<&str> = name.split('.').collect();
    pattern_labels.len() == name_labels.len()
        && pattern_labels
            .iter()
            .zip(&name_labels)
            .all(|(p, n)| glob::matches(p, n))
}

fn parse_authority(authority: &str) -> Result<(Host, Option<u16>), ServerAddressError> {
    // `[` opens an IPv6 literal, or a glob class when what it encloses has no ':' (an
    // IPv6 address always has one, a host label never).
    let ipv6 = authority
        .strip_prefix('[')
        .filter(|inner| match inner.find(']') {
            Some(close) => inner[..close].contains(':'),
            None => inner.contains(':'),
        });
    let (host_text, port_text) = if let Some(inner) = ipv6 {
        let Some(close) = inner.find(']') else {
            return err("has a '[' with no ']' around an IPv6 address");
        };
        let after = &inner[close + 1..];
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return err("has text after the IPv6 address that is not ':PORT'"),
            },
        };
        let ip = ip::parse_ipv6(&inner[..close]).ok_or_else(|| {
            ServerAddressError(format!("{:?} is not an IPv6 address", &inner[..close]))
        })?;
        return Ok((Host::Ipv6(ip), port.map(parse_port).transpose()?));
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host_text.contains(':') {
        return err("has more than one ':'; write IPv6 addresses in brackets ([::1]:5000)");
    }
    let port = port_text.map(parse_port).transpose()?;
    Ok((parse_host(host_text)?, port))
}

fn parse_path(path: &str) -> Result<Vec<String>, ServerAddressError> {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    // `https://index.docker.io/v1/` names the registry API, not a repository; kubelet
    // strips a leading `/v1/` or `/v2/` even when more follows, but `v2` is also a valid
    // repository namespace, so only a path that is nothing but the version is dropped
    // (and a key always parses back to itself).
    if trimmed == "v1" || trimmed == "v2" {
        return Ok(Vec::new());
    }
    let segments: Vec<&str> = trimmed.split('/').collect();
    segments
        .into_iter()
        .map(|segment| {
            if segment.is_empty() {
                return err("path has an empty segment ('//')");
            }
            if !segment
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
            {
                return err(format!(
                    "path segment {segment:?} is not a repository name component (lower-case letters, digits, '.', '_', '-')"
                ));
            }
            Ok(segment.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::bare_host("registry.example.com", "registry.example.com")]
    #[case::upper_case_host("Registry.Example.COM", "registry.example.com")]
    #[case::https_port_path("https://r.example:5000/team/app", "r.example:5000/team/app")]
    #[case::http("http://127.0.0.1:5000", "127.0.0.1:5000")]
    #[case::bare_ip_port("127.0.0.1:5000", "127.0.0.1:5000")]
    #[case::ipv6("https://[::1]:5000", "[::1]:5000")]
    #[case::glob("*.gcr.io", "*.gcr.io")]
    #[case::class_glob("eu-[a-z]*.r.example", "eu-[a-z]*.r.example")]
    #[case::docker_hub_v1("https://index.docker.io/v1/", "docker.io")]
    #[case::docker_io("docker.io", "docker.io")]
    #[case::registry_1("registry-1.docker.io", "docker.io")]
    #[case::v2_alone("https://r.example/v2/", "r.example")]
    #[case::v2_namespace_kept("https://r.example/v2/team", "r.example/v2/team")]
    #[case::v1_twice("r.example/v1/v1", "r.example/v1/v1")]
    #[case::trailing_slash("r.example/team/", "r.example/team")]
    fn parses_keys(#[case] input: &str, #[case] key: &str) {
        assert_eq!(ServerAddress::parse(input).unwrap().key(), key);
    }

    #[rstest]
    #[case::empty("", "empty")]
    #[case::ftp("ftp://r.example", "scheme")]
    #[case::user_info("https://me@r.example", "user info")]
    #[case::query("r.example?x=1", "query")]
    #[case::fragment("r.example#x", "fragment")]
    #[case::port_zero("r.example:0", "port")]
    #[case::port_big("r.example:65536", "port")]
    #[case::port_text("r.example:http", "port")]
    #[case::bad_ipv4("300.1.1.1", "IPv4")]
    #[case::bad_char("r_x.example", "contains")]
    #[case::empty_label("r..example", "empty label")]
    #[case::leading_dash("-r.example", "'-'")]
    #[case::unclosed_class("r[a.example", "'['")]
    #[case::upper_path("r.example/Team", "path segment")]
    #[case::double_slash("r.example/a//b", "empty segment")]
    #[case::space("r.example /x", "white space")]
    #[case::bare_ipv6("::1", "IPv6")]
    fn rejects(#[case] input: &str, #[case] fragment: &str) {
        let error = ServerAddress::parse(input).unwrap_err();
        assert!(error.0.contains(fragment), "{input}: {error}");
    }

    #[rstest]
    #[case::same_host("r.example", "r.example/app", true)]
    #[case::other_host("r.example", "s.example/app", false)]
    #[case::port_must_match("r.example:5000", "r.example/app", false)]
    #[case::port_equal("r.example:5000", "r.example:5000/app", true)]
    #[case::glob_label("*.r.example", "eu.r.example/app", true)]
    #[case::glob_label_count("*.r.example", "a.eu.r.example/app", false)]
    #[case::path_prefix("r.example/team", "r.example/team/app", true)]
    #[case::path_is_segment_aware("r.example/team", "r.example/team2/app", false)]
    #[case::path_longer_than_image("r.example/team/app/x", "r.example/team/app", false)]
    #[case::docker_hub_library("https://index.docker.io/v1/", "nginx", true)]
    #[case::docker_hub_user("docker.io/me", "me/app", true)]
    #[case::ipv4("127.0.0.1:5000", "127.0.0.1:5000/app", true)]
    fn matches_images(#[case] server: &str, #[case] image: &str, #[case] expected: bool) {
        let server = ServerAddress::parse(server).unwrap();
        let image = ImageRef::parse(image).unwrap();
        assert_eq!(server.matches(&image), expected);
    }

    #[rstest]
    #[case::glob_allows("*.corp.example", "r.corp.example", true)]
    #[case::glob_other("*.corp.example", "r.evil.example", false)]
    #[case::path_scoped("ghcr.io/my-org", "ghcr.io/my-org/team", true)]
    #[case::path_scoped_other("ghcr.io/my-org", "ghcr.io/other", false)]
    #[case::path_scoped_wider("ghcr.io/my-org", "ghcr.io", false)]
    #[case::wider_glob_not_within("a*.corp.example", "*.corp.example", false)]
    #[case::port("r.example:5000", "r.example", false)]
    #[case::star_not_within_negated_class("y[!x].corp.example", "y*.corp.example", false)]
    #[case::negated_class_within_itself("y[!x].corp.example", "y[!x].corp.example", true)]
    #[case::class_within_star("*.corp.example", "y[!x].corp.example", true)]
    #[case::narrower_class_within("r[a-f].corp.example", "r[b-c].corp.example", true)]
    #[case::wider_class_not_within("r[b-c].corp.example", "r[a-f].corp.example", false)]
    #[case::star_within_star_prefix("eu-*.corp.example", "eu-west-*.corp.example", true)]
    #[case::question_within_star("r*.corp.example", "r?.corp.example", true)]
    #[case::star_not_within_question("r?.corp.example", "r*.corp.example", false)]
    #[case::class_covers_alphabet("[!x]*", "[a-w]*", true)]
    fn allowed_registries(#[case] allowed: &str, #[case] server: &str, #[case] expected: bool) {
        let allowed = ServerAddress::parse(allowed).unwrap();
        let server = ServerAddress::parse(server).unwrap();
        assert_eq!(server.is_within(&allowed), expected);
    }

    /// Every host `server` (a Secret's address) covers is covered by `allowed` when
    /// `is_within` says so, over every host of up to three characters per label.
    #[test]
    fn containment_is_sound_on_sampled_hosts() {
        let labels = [
            "*", "y*", "y[!x]", "[!x]y", "[a-y]", "[x-z]*", "?", "??", "y?", "*y", "y", "x",
            "[xy]", "[!a-w]", "-*", "*-", "[0-9]*", "a[!-]b", "[a-z0-9]",
        ];
        let alphabet: Vec<char> = ('a'..='z').chain('0'..='9').chain(['-']).collect();
        let mut hosts: Vec<String> = alphabet.iter().map(|c| c.to_string()).collect();
        for a in ['x', 'y', 'a', '-', '5'] {
            for b in ['x', 'y', 'b', '-', '0'] {
                hosts.push(format!("{a}{b}"));
                hosts.push(format!("{a}{b}y"));
                hosts.push(format!("{a}-{b}"));
            }
        }
        for outer in labels {
            for inner in labels {
                let allowed = ServerAddress::parse(&format!("{outer}.corp.example")).unwrap();
                let server = ServerAddress::parse(&format!("{inner}.corp.example")).unwrap();
                let within = server.is_within(&allowed);
                let mut escapes = None;
                for host in &hosts {
                    // A label neither starts nor ends with '-'.
                    let Ok(image) = ImageRef::parse(&format!("{host}.corp.example/app")) else {
                        continue;
                    };
                    if server.matches(&image) && !allowed.matches(&image) {
                        escapes = Some(host.clone());
                        break;
                    }
                }
                if within {
                    assert_eq!(
                        escapes, None,
                        "{inner} within {outer}, but matches {escapes:?}"
                    );
                }
                if escapes.is_some() {
                    assert!(!within, "{inner} reported within {outer}");
                }
            }
        }
    }

    #[rstest]
    #[case::question("r?.example", "r1.example/app", true)]
    #[case::question_one_character("r?.example", "r12.example/app", false)]
    #[case::leading_class("[ab]x.corp.example", "bx.corp.example/app", true)]
    #[case::leading_class_miss("[ab]x.corp.example", "cx.corp.example/app", false)]
    #[case::leading_class_port("[ab]x.corp.example:5000", "ax.corp.example:5000/app", true)]
    fn documented_globs_can_be_written(
        #[case] server: &str,
        #[case] image: &str,
        #[case] expected: bool,
    ) {
        let server = ServerAddress::parse(server).unwrap();
        assert!(server.has_glob());
        assert_eq!(server.matches(&ImageRef::parse(image).unwrap()), expected);
    }

    #[test]
    fn user_info_is_refused_before_anything_quotes_it() {
        for text in [
            "https://robot:CANARY-1@r.example.com",
            "robot:CANARY-1@r.example.com:5000/team",
            "https://robot:CANARY/1@r.example.com",
            "ftp://robot:CANARY-1@r.example.com",
            "robot:CANARY@1@r.example.com",
        ] {
            let error = ServerAddress::parse(text).unwrap_err();
            assert!(error.0.contains("user info"), "{text}: {error}");
            assert!(!error.0.contains("CANARY"), "{text}: {error}");
            assert!(!without_user_info(text).contains("CANARY"), "{text}");
        }
        assert_eq!(
            without_user_info("https://robot:pw@r.example.com/team"),
            "https://***@r.example.com/team"
        );
        assert_eq!(without_user_info("r.example.com"), "r.example.com");
    }
}
