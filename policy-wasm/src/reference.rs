//! Image references, parsed with the Docker reference grammar.

use std::fmt;

use crate::host::{DOCKER_HUB, DOCKER_HUB_REGISTRY, Host, parse_host, parse_port};

/// The longest repository name (domain and path) Docker accepts.
const NAME_MAX: usize = 255;

/// A parsed image reference such as `r.example:5000/team/app:1.0@sha256:...`.
///
/// The domain is only the first component when it contains `.` or `:` or is
/// `localhost`; otherwise the image is on Docker Hub (`docker.io`), where one-component
/// names get `library/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The registry host, lower-cased (`docker.io` for Docker Hub).
    pub host: Host,
    /// The registry port, when written.
    pub port: Option<u16>,
    /// Repository path components.
    pub path: Vec<String>,
    /// The tag, when written.
    pub tag: Option<String>,
    /// The digest, when written.
    pub digest: Option<String>,
}

/// Why an image reference is malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRefError {
    /// The reference as given.
    pub image: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ImageRefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid image reference {:?}: {}",
            self.image, self.reason
        )
    }
}

impl std::error::Error for ImageRefError {}

impl ImageRef {
    /// Parses a reference.
    ///
    /// # Errors
    ///
    /// [`ImageRefError`] saying which part breaks the grammar.
    pub fn parse(image: &str) -> Result<Self, ImageRefError> {
        let fail = |reason: String| ImageRefError {
            image: image.chars().take(300).collect(),
            reason,
        };
        if image.is_empty() {
            return Err(fail("is empty".into()));
        }
        let (rest, digest) = match image.split_once('@') {
            Some((rest, digest)) => {
                check_digest(digest).map_err(fail)?;
                (rest, Some(digest.to_string()))
            }
            None => (image, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(colon) if !rest[colon..].contains('/') => {
                let tag = &rest[colon + 1..];
                check_tag(tag).map_err(fail)?;
                (&rest[..colon], Some(tag.to_string()))
            }
            _ => (rest, None),
        };
        if name.is_empty() {
            return Err(fail("has no repository name".into()));
        }
        let (domain, remainder) = match name.split_once('/') {
            Some((first, remainder)) if first.contains(['.', ':']) || first == "localhost" => {
                (first, remainder)
            }
            _ => (DOCKER_HUB, name),
        };
        let (host, port) = parse_domain(domain).map_err(fail)?;
        let mut path: Vec<String> = Vec::new();
        for component in remainder.split('/') {
            check_component(component).map_err(fail)?;
            path.push(component.to_string());
        }
        if host == Host::Dns(DOCKER_HUB.into()) && port.is_none() && path.len() == 1 {
            path.insert(0, "library".into());
        }
        let parsed = Self {
            host,
            port,
            path,
            tag,
            digest,
        };
        // Docker measures the normalized name (docker.io/library/... included).
        let length = parsed.name().len();
        if length > NAME_MAX {
            return Err(fail(format!(
                "the normalized repository name has {length} characters, more than {NAME_MAX}"
            )));
        }
        Ok(parsed)
    }

    /// `HOST[:PORT]` as written in the reference (`docker.io` for Docker Hub).
    pub fn domain(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.to_string(),
        }
    }

    /// `HOST[:PORT]` of the registry the runtime contacts (`registry-1.docker.io` for
    /// Docker Hub).
    pub fn registry_host_port(&self) -> String {
        if self.is_docker_hub() {
            DOCKER_HUB_REGISTRY.into()
        } else {
            self.domain()
        }
    }

    /// True for Docker Hub images.
    pub fn is_docker_hub(&self) -> bool {
        self.port.is_none() && self.host == Host::Dns(DOCKER_HUB.into())
    }

    /// The normalized repository name without tag or digest (`docker.io/library/nginx`).
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain(), self.path.join("/"))
    }
}

fn parse_domain(domain: &str) -> Result<(Host, Option<u16>), String> {
    let (host_text, port) = if domain.starts_with('[') {
        match domain.find(']') {
            Some(close) => {
                let port = match &domain[close + 1..] {
                    "" => None,
                    rest => match rest.strip_prefix(':') {
                        Some(port) => Some(port),
                        None => return Err(format!("domain {domain:?} is malformed")),
                    },
                };
                (&domain[..=close], port)
            }
            None => return Err(format!("domain {domain:?} has a '[' with no ']'")),
        }
    } else {
        match domain.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain, None),
        }
    };
    let port = port.map(|p| parse_port(p).map_err(|e| e.0)).transpose()?;
    let host = if let Some(inner) = host_text.strip_prefix('[') {
        let inner = inner.trim_end_matches(']');
        Host::Ipv6(
            crate::ip::parse_ipv6(inner)
                .ok_or_else(|| format!("{inner:?} is not an IPv6 address"))?,
        )
    } else {
        if host_text.contains(['*', '?', '[', ']', '^', '!']) {
            return Err(format!("domain {domain:?} contains a glob character"));
        }
        parse_host(host_text).map_err(|e| format!("domain {domain:?}: {}", e.0))?
    };
    Ok((host, port))
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn check_component(component: &str) -> Result<(), String> {
    if component.is_empty() {
        return Err("has an empty path component ('//' or a trailing '/')".into());
    }
    if component.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "repository name component {component:?} must be lower-case"
        ));
    }
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bad = || {
        Err(format!(
            "repository name component {component:?} must be lower-case letters and digits, separated by '.', '_', '__' or dashes"
        ))
    };
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return bad();
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return bad();
        }
    }
    Ok(())
}

/// `[\w][\w.-]{0,127}`
fn check_tag(tag: &str) -> Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    let first_ok = chars.next().is_some_and(word);
    if !first_ok || tag.len() > 128 || !chars.all(|c| word(c) || c == '.' || c == '-') {
        return Err(format!(
            "tag {tag:?} must be 1 to 128 of letters, digits, '_', '.', '-', not starting with '.' or '-'"
        ));
    }
    Ok(())
}

/// `ALGORITHM:HEX` with at least 32 hex digits.
fn check_digest(digest: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "digest {digest:?} must look like sha256:<64 hex digits>"
        ))
    };
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return bad();
    };
    let algorithm_ok = algorithm
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && algorithm
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '_' | '-'));
    if !algorithm_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return bad();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::official("nginx", "docker.io/library/nginx", "registry-1.docker.io")]
    #[case::official_tag("nginx:1.27", "docker.io/library/nginx", "registry-1.docker.io")]
    #[case::user("me/app", "docker.io/me/app", "registry-1.docker.io")]
    #[case::explicit_hub("docker.io/nginx", "docker.io/library/nginx", "registry-1.docker.io")]
    #[case::index_alias("index.docker.io/me/app", "docker.io/me/app", "registry-1.docker.io")]
    #[case::host_port(
        "127.0.0.1:5000/team/app:v1",
        "127.0.0.1:5000/team/app",
        "127.0.0.1:5000"
    )]
    #[case::localhost("localhost/app", "localhost/app", "localhost")]
    #[case::localhost_port("localhost:5000/app", "localhost:5000/app", "localhost:5000")]
    #[case::upper_domain("Quay.IO/org/app", "quay.io/org/app", "quay.io")]
    #[case::ipv6("[::1]:5000/app", "[::1]:5000/app", "[::1]:5000")]
    #[case::digest(
        "ghcr.io/o/a@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "ghcr.io/o/a",
        "ghcr.io"
    )]
    #[case::separators("r.io/a__b/c-d--e/f.g_h", "r.io/a__b/c-d--e/f.g_h", "r.io")]
    fn parses(#[case] image: &str, #[case] name: &str, #[case] registry: &str) {
        let parsed = ImageRef::parse(image).unwrap();
        assert_eq!(parsed.name(), name);
        assert_eq!(parsed.registry_host_port(), registry);
    }

    #[rstest]
    #[case::empty("", "empty")]
    #[case::upper_repo("r.io/Team/app", "lower-case")]
    #[case::upper_hub("Nginx", "lower-case")]
    #[case::bad_tag("nginx:-x", "tag")]
    #[case::bad_digest("nginx@sha256:xyz", "digest")]
    #[case::double_slash("r.io//app", "empty path")]
    #[case::trailing_slash("r.io/app/", "empty path")]
    #[case::bad_separator("r.io/a..b", "separated")]
    #[case::port_zero("r.io:0/app", "port")]
    #[case::glob_domain("*.r.io/app", "glob")]
    #[case::space("r.io/my app", "must be")]
    #[case::too_long_once_normalized(&"a".repeat(240), "normalized")]
    fn rejects(#[case] image: &str, #[case] fragment: &str) {
        let error = ImageRef::parse(image).unwrap_err();
        assert!(error.to_string().contains(fragment), "{image}: {error}");
    }

    #[test]
    fn tag_and_digest_are_kept_but_do_not_change_the_name() {
        let parsed =
            ImageRef::parse("r.io:5000/app:v1@sha256:0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(parsed.tag.as_deref(), Some("v1"));
        assert!(parsed.digest.is_some());
        assert_eq!(parsed.name(), "r.io:5000/app");
    }
}
