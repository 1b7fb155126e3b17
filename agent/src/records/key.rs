//! The node's HMAC key and the credential hashes made with it.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};

use super::{KEY_BYTES, RecordsError};

/// The credential fields a record's hash is made of (the `AuthConfig` the runtime got).
///
/// Its `Debug` shows the username and server address and only whether each secret field
/// is set: the values are what the records exist not to keep.
#[derive(Clone, Copy)]
pub struct CredentialFields<'a> {
    /// `username`.
    pub username: &'a str,
    /// `password`.
    pub password: &'a str,
    /// `auth`.
    pub auth: &'a str,
    /// `server_address`.
    pub server_address: &'a str,
    /// `identity_token`.
    pub identity_token: &'a str,
    /// `registry_token`.
    pub registry_token: &'a str,
}

impl std::fmt::Debug for CredentialFields<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |value: &str| if value.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("CredentialFields")
            .field("username", &self.username)
            .field("password", &shown(self.password))
            .field("auth", &shown(self.auth))
            .field("server_address", &self.server_address)
            .field("identity_token", &shown(self.identity_token))
            .field("registry_token", &shown(self.registry_token))
            .finish()
    }
}

impl<'a> From<&'a regcred_types::AuthConfig> for CredentialFields<'a> {
    fn from(a: &'a regcred_types::AuthConfig) -> Self {
        Self {
            username: &a.username,
            password: a.password.expose(),
            auth: a.auth.expose(),
            server_address: &a.server_address,
            identity_token: a.identity_token.expose(),
            registry_token: a.registry_token.expose(),
        }
    }
}

impl<'a> From<&'a regcred_cri_api::runtime::v1::AuthConfig> for CredentialFields<'a> {
    fn from(a: &'a regcred_cri_api::runtime::v1::AuthConfig) -> Self {
        Self {
            username: &a.username,
            password: &a.password,
            auth: &a.auth,
            server_address: &a.server_address,
            identity_token: &a.identity_token,
            registry_token: &a.registry_token,
        }
    }
}

/// The HMAC key of the credential hashes; its `Debug` shows nothing of it.
pub(super) struct HashKey(pub(super) [u8; KEY_BYTES]);

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashKey(<redacted>)")
    }
}

impl HashKey {
    /// A new random key (the OS's random source; without it, the time and PID hashed,
    /// which still keeps hashes from being compared across nodes).
    pub(super) fn random() -> Self {
        let mut key = [0u8; KEY_BYTES];
        if getrandom::fill(&mut key).is_err() {
            let seed = format!("{:?}{}", SystemTime::now(), std::process::id());
            key.copy_from_slice(&Sha256::digest(seed.as_bytes()));
        }
        Self(key)
    }

    /// The key in `path`, or a new one written there (mode 0600; its directory created).
    pub(super) fn load_or_create(path: &Path) -> Result<Self, RecordsError> {
        let io = |source| RecordsError::Io {
            path: path.to_owned(),
            source,
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                let key: [u8; KEY_BYTES] =
                    bytes
                        .try_into()
                        .map_err(|bytes: Vec<u8>| RecordsError::Invalid {
                            path: path.to_owned(),
                            reason: format!(
                                "a records key is {KEY_BYTES} bytes, this file has {}",
                                bytes.len()
                            ),
                        })?;
                Ok(Self(key))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                let key = Self::random();
                let dir = path.parent().unwrap_or(Path::new("."));
                let mut temporary = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt as _;
                    temporary
                        .as_file()
                        .set_permissions(std::fs::Permissions::from_mode(0o600))
                        .map_err(io)?;
                }
                temporary.write_all(&key.0).map_err(io)?;
                temporary.as_file().sync_all().map_err(io)?;
                // Never over a key another process wrote meanwhile.
                temporary
                    .persist_noclobber(path)
                    .map_err(|err| io(err.error))?;
                Ok(key)
            }
            Err(source) => Err(io(source)),
        }
    }

    /// The keyed hash of `credential` (HMAC-SHA256 under this key), as records hold it.
    pub(super) fn hash(&self, credential: CredentialFields<'_>) -> String {
        use hmac::{KeyInit as _, Mac as _};
        let mut digest = hmac::Hmac::<Sha256>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        for field in [
            credential.username,
            credential.password,
            credential.auth,
            credential.server_address,
            credential.identity_token,
            credential.registry_token,
        ] {
            // Length-prefixed, so that no two different credentials hash alike.
            digest.update(&(field.len() as u64).to_be_bytes());
            digest.update(field.as_bytes());
        }
        format!("hmac-sha256:{}", hex(&digest.finalize().into_bytes()))
    }
}

/// The key file for the records directory `dir` by default: `DIR.key` beside it.
pub fn default_key_file(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_owned();
    name.push(".key");
    dir.with_file_name(name)
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
