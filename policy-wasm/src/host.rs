//! The registry host grammar that server addresses and image references share: a host
//! (DNS name with glob labels, IPv4, bracketed IPv6), a port, and Docker Hub's
//! spellings. A leaf: [`crate::server`] and [`crate::reference`] both build on it, and it
//! names neither.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::{glob, ip};

/// Docker Hub's canonical registry name, as image references spell it.
pub const DOCKER_HUB: &str = "docker.io";
/// The host containerd contacts for Docker Hub.
pub const DOCKER_HUB_REGISTRY: &str = "registry-1.docker.io";
/// Every spelling that means Docker Hub.
const DOCKER_HUB_ALIASES: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];

/// The host part of a server address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A DNS name, lower-cased; labels may hold `*`, `?` and `[...]` globs.
    Dns(String),
    /// An IPv4 address.
    Ipv4(Ipv4Addr),
    /// An IPv6 address (written in brackets).
    Ipv6(Ipv6Addr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dns(name) => f.write_str(name),
            Self::Ipv4(ip) => write!(f, "{}", ip::ShowIpv4(*ip)),
            Self::Ipv6(ip) => write!(f, "[{}]", ip::ShowIpv6(*ip)),
        }
    }
}

/// Why a `serverAddress` is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddressError(pub String);

impl fmt::Display for ServerAddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) fn err<T>(message: impl Into<String>) -> Result<T, ServerAddressError> {
    Err(ServerAddressError(message.into()))
}

pub(crate) fn parse_port(text: &str) -> Result<u16, ServerAddressError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || text.len() > 5 {
        return err(format!("port {text:?} is not a number from 1 to 65535"));
    }
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => err(format!("port {text:?} is not a number from 1 to 65535")),
    }
}

pub(crate) fn parse_host(text: &str) -> Result<Host, ServerAddressError> {
    if text.is_empty() {
        return err("has no host");
    }
    if text.len() > 253 {
        return err("host name is longer than 253 characters");
    }
    let looks_numeric = text
        .split('.')
        .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()));
    if looks_numeric {
        return ip::parse_ipv4(text)
            .map(Host::Ipv4)
            .ok_or_else(|| ServerAddressError(format!("{text:?} is not an IPv4 address")));
    }
    let lower = text.to_ascii_lowercase();
    for label in lower.split('.') {
        if label.is_empty() {
            return err(format!("host {lower:?} has an empty label"));
        }
        if label.len() > 63 {
            return err(format!("host label {label:?} is longer than 63 characters"));
        }
        if let Some(c) = label.chars().find(|c| {
            !(c.is_ascii_alphanumeric() || matches!(c, '-' | '*' | '?' | '[' | ']' | '^' | '!'))
        }) {
            return err(format!(
                "host {lower:?} contains {c:?}; a host label holds letters, digits, '-' and the globs '*', '?', '[...]'"
            ));
        }
        if !glob::has_glob(label) && (label.starts_with('-') || label.ends_with('-')) {
            return err(format!(
                "host label {label:?} must not start or end with '-'"
            ));
        }
        if label.contains(['^', '!']) && !label.contains('[') {
            return err(format!(
                "host label {label:?} uses '^' or '!' outside a '[...]' class"
            ));
        }
        glob::check(label).map_err(|m| ServerAddressError(format!("host label {label:?} {m}")))?;
    }
    if DOCKER_HUB_ALIASES.contains(&lower.as_str()) {
        return Ok(Host::Dns(DOCKER_HUB.into()));
    }
    Ok(Host::Dns(lower))
}
