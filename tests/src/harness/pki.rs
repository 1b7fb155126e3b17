//! The test tree's one certificate authority and kubeconfig writer.
//!
//! The kit (`regcred-kit`, behind `scripts/cluster`), the Rust harness's [`KubeApi`] and
//! the Go cluster tests (through `regcred-kit cert`) all make their certificates and
//! kubeconfigs here: ECDSA P-256 keys (PKCS#8 PEM), certificates signed by an
//! [`Authority`] that is either new or read back from its two PEM files.
//!
//! [`KubeApi`]: super::KubeApi

use std::path::Path;

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A TLS client (extended key usage `clientAuth`).
    Client,
    /// A TLS server (`serverAuth`), which may also be used as a client.
    Server,
}

/// A leaf certificate to issue: its subject and names.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// The subject's common name (the user, for a Kubernetes client).
    pub common_name: String,
    /// The subject's organization (the group, for a Kubernetes client).
    pub organization: Option<String>,
    /// Subject alternative names: IP addresses or DNS names.
    pub names: Vec<String>,
    /// Client or server.
    pub usage: Usage,
    /// Valid from a minute ago for this long; `None`: until 2036.
    pub valid_for: Option<std::time::Duration>,
}

impl Leaf {
    /// A client certificate for `common_name` in `organization`.
    pub fn client(common_name: &str, organization: Option<&str>) -> Self {
        Self {
            common_name: common_name.to_owned(),
            organization: organization.map(str::to_owned),
            names: Vec::new(),
            usage: Usage::Client,
            valid_for: None,
        }
    }

    /// A serving certificate for `names` (IP addresses or DNS names).
    pub fn server(common_name: &str, names: &[&str]) -> Self {
        Self {
            common_name: common_name.to_owned(),
            organization: None,
            names: names.iter().map(|name| (*name).to_owned()).collect(),
            usage: Usage::Server,
            valid_for: None,
        }
    }
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct Pair {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pair").finish_non_exhaustive()
    }
}

impl Pair {
    /// Writes `NAME.crt` (mode 0644) and `NAME.key` (mode 0600) into `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> Result<(), String> {
        let cert = dir.join(format!("{name}.crt"));
        std::fs::write(&cert, &self.cert_pem)
            .map_err(|e| format!("writing {}: {e}", cert.display()))?;
        write_private(&dir.join(format!("{name}.key")), &self.key_pem)
    }
}

/// A certificate authority: its certificate and the key that signs with it.
pub struct Authority {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

impl Authority {
    /// A new self-signed CA named `common_name`, valid until 2036.
    pub fn generate(common_name: &str) -> Result<Self, String> {
        Self::generate_for(common_name, None)
    }

    /// A new self-signed CA named `common_name`, valid from a minute ago for `valid_for`
    /// (`None`: until 2036).
    pub fn generate_for(
        common_name: &str,
        valid_for: Option<std::time::Duration>,
    ) -> Result<Self, String> {
        let key = rcgen::KeyPair::generate().map_err(|e| format!("a CA key: {e}"))?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(|e| format!("the CA's parameters: {e}"))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, valid_for);
        let cert_pem = params
            .self_signed(&key)
            .map_err(|e| format!("the CA's certificate: {e}"))?
            .pem();
        Ok(Self {
            issuer: rcgen::Issuer::new(params, key),
            cert_pem,
        })
    }

    /// Reads a CA from its certificate and key files (PEM).
    pub fn load(cert: &Path, key: &Path) -> Result<Self, String> {
        let cert_pem = std::fs::read_to_string(cert)
            .map_err(|e| format!("reading the CA certificate {}: {e}", cert.display()))?;
        let key_pem = std::fs::read_to_string(key)
            .map_err(|e| format!("reading the CA key {}: {e}", key.display()))?;
        let key = rcgen::KeyPair::from_pem(&key_pem)
            .map_err(|e| format!("the CA key {}: {e}", key.display()))?;
        let issuer = rcgen::Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| format!("the CA certificate {}: {e}", cert.display()))?;
        Ok(Self { issuer, cert_pem })
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Writes `ca.crt` and `ca.key` (mode 0600) into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), String> {
        Pair {
            cert_pem: self.cert_pem.clone(),
            key_pem: self.issuer.key().serialize_pem(),
        }
        .write(dir, "ca")
    }

    /// Issues `leaf` with a new key.
    pub fn issue(&self, leaf: &Leaf) -> Result<Pair, String> {
        let what = &leaf.common_name;
        let key = rcgen::KeyPair::generate().map_err(|e| format!("a key for {what}: {e}"))?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(|e| format!("parameters for {what}: {e}"))?;
        for name in &leaf.names {
            params.subject_alt_names.push(match name.parse() {
                Ok(ip) => rcgen::SanType::IpAddress(ip),
                Err(_) => rcgen::SanType::DnsName(
                    name.clone()
                        .try_into()
                        .map_err(|e| format!("the name {name:?} of {what}: {e}"))?,
                ),
            });
        }
        if let Some(organization) = &leaf.organization {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, organization.as_str());
        }
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, what.as_str());
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = match leaf.usage {
            Usage::Client => vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth],
            Usage::Server => vec![
                rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        set_validity(&mut params, leaf.valid_for);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| format!("signing the certificate of {what}: {e}"))?;
        Ok(Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The longest validity a certificate is given: 100 years.
const MAX_VALIDITY: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 24 * 3600);

/// Valid from a minute ago for `valid_for` (at most [`MAX_VALIDITY`]), or (`None`)
/// until 2036.
fn set_validity(params: &mut rcgen::CertificateParams, valid_for: Option<std::time::Duration>) {
    let now = std::time::SystemTime::now();
    params.not_before = now
        .checked_sub(std::time::Duration::from_secs(60))
        .unwrap_or(now)
        .into();
    match valid_for {
        Some(life) => {
            params.not_after = now
                .checked_add(life.min(MAX_VALIDITY))
                .unwrap_or(now)
                .into();
        }
        None => params.not_after = rcgen::date_time_ymd(2036, 1, 1),
    }
}

/// A new signing key for service account tokens: (private PKCS#8 PEM, public PEM).
pub fn signing_key() -> Result<(String, String), String> {
    let key = rcgen::KeyPair::generate().map_err(|e| format!("a signing key: {e}"))?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}

/// How a kubeconfig names its cluster's CA.
#[derive(Debug, Clone, Copy)]
pub enum CaRef<'a> {
    /// A file the reader opens.
    File(&'a Path),
    /// The certificate inline (PEM).
    Pem(&'a str),
}

/// How a kubeconfig's user proves who it is.
#[derive(Clone, Copy)]
pub enum Credential<'a> {
    /// A bearer token (inline).
    Token(&'a str),
    /// A client certificate and key, as files the reader opens.
    Files {
        /// The certificate file.
        cert: &'a Path,
        /// The key file.
        key: &'a Path,
    },
}

impl std::fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Token(_) => f.write_str("Token(..)"),
            Self::Files { cert, key } => f
                .debug_struct("Files")
                .field("cert", cert)
                .field("key", key)
                .finish(),
        }
    }
}

/// A kubeconfig with one cluster (`cluster`, at `server`), one user and its context.
pub fn kubeconfig(
    cluster: &str,
    server: &str,
    ca: CaRef<'_>,
    user: &str,
    credential: Credential<'_>,
) -> String {
    use base64::Engine as _;
    let ca = match ca {
        CaRef::File(path) => format!("certificate-authority: {}", path.display()),
        CaRef::Pem(pem) => format!(
            "certificate-authority-data: {}",
            base64::engine::general_purpose::STANDARD.encode(pem)
        ),
    };
    let credential = match credential {
        Credential::Token(token) => format!("token: {token}"),
        Credential::Files { cert, key } => format!(
            "client-certificate: {}\n    client-key: {}",
            cert.display(),
            key.display()
        ),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    \
         server: {server}\n    {ca}\n\
         users:\n- name: {user}\n  user:\n    {credential}\n\
         contexts:\n- name: {user}@{cluster}\n  context:\n    cluster: {cluster}\n    user: {user}\n\
         current-context: {user}@{cluster}\n"
    )
}

/// Writes a file only its owner may read (keys, tokens, kubeconfigs): written to a
/// temporary name beside it with mode 0600, then renamed over `path`. Missing parent
/// directories are made.
pub fn write_private(path: &Path, contents: &str) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut file| file.write_all(contents.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path));
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("writing {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loaded_authority_signs_what_the_written_one_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::generate("unit CA").unwrap();
        ca.write(dir.path()).unwrap();
        let again =
            Authority::load(&dir.path().join("ca.crt"), &dir.path().join("ca.key")).unwrap();
        assert_eq!(again.cert_pem(), ca.cert_pem());
        let pair = again
            .issue(&Leaf::server("webhook", &["127.0.0.1", "webhook.ns.svc"]))
            .unwrap();
        // The leaf names the CA as its issuer (that TLS peers trusting ca.crt accept it is
        // shown by the real programs of the kit and KubeApi).
        let (leaf_der, root_der) = (pem_contents(&pair.cert_pem), pem_contents(ca.cert_pem()));
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();
        let (_, root) = x509_parser::parse_x509_certificate(&root_der).unwrap();
        assert_eq!(leaf.issuer(), root.subject());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("ca.key"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    fn pem_contents(pem: &str) -> Vec<u8> {
        use base64::Engine as _;
        let body: String = pem
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    }

    #[test]
    fn a_kubeconfig_never_prints_its_token_in_debug() {
        let canary = "canary-token-5f3a";
        let text = format!("{:?}", Credential::Token(canary));
        assert!(!text.contains(canary), "{text}");
        let config = kubeconfig(
            "kit",
            "https://127.0.0.1:1",
            CaRef::File(Path::new("/ca.crt")),
            "u",
            Credential::Token(canary),
        );
        assert!(config.contains(&format!("token: {canary}")), "{config}");
        assert!(
            config.contains("certificate-authority: /ca.crt"),
            "{config}"
        );
    }
}
