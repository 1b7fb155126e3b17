//! A string that holds a password or token.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The text printed in place of a secret value by `Debug`, `Display` and [`SecretValue::redacted`].
pub const REDACTED: &str = "<redacted>";

/// A password or token.
///
/// `Debug` and `Display` print [`REDACTED`], never the value, so a `SecretValue` can sit in
/// any struct that is logged or put into an error. The memory is wiped on drop
/// (`secrecy`). The value is only reachable through [`SecretValue::expose`], and it is
/// serialized as the plain string, because serializing is how it reaches the container
/// runtime; use [`SecretValue::redacted`] to build output for people.
///
/// ```
/// use regcred_types::SecretValue;
/// let password = SecretValue::from("hunter2");
/// assert_eq!(format!("{password:?}"), "SecretValue(<redacted>)");
/// assert_eq!(password.to_string(), "<redacted>");
/// assert_eq!(password.expose(), "hunter2");
/// ```
#[derive(Clone)]
pub struct SecretValue(SecretString);

impl SecretValue {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// The value itself. Call it only where the value must leave the process (the CRI
    /// request, a manifest the user asked for).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// True when the value is the empty string (proto3's "unset").
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }

    /// The length of the value in bytes.
    pub fn len(&self) -> usize {
        self.expose().len()
    }

    /// A value that prints as [`REDACTED`] everywhere, serialization included; empty stays empty.
    pub fn redacted(&self) -> Self {
        if self.is_empty() {
            self.clone()
        } else {
            Self::new(REDACTED)
        }
    }
}

impl Default for SecretValue {
    fn default() -> Self {
        Self::new(String::new())
    }
}

impl From<String> for SecretValue {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<&str> for SecretValue {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl PartialEq for SecretValue {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for SecretValue {}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue({REDACTED})")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for SecretValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.expose())
    }
}

impl<'de> Deserialize<'de> for SecretValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}

impl JsonSchema for SecretValue {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("SecretValue")
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({ "type": "string", "writeOnly": true })
    }
}
