//! Container images made by the tests, without network: one gzip tar layer holding a small
//! file, an OCI config and an OCI manifest, pushed through the registry's HTTP API.

use std::io::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest as _, Sha256};

/// OCI media type of a gzip tar layer.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI media type of an image config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// OCI media type of an image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// A single-layer OCI image for this machine's platform.
#[derive(Debug, Clone)]
pub struct TestImage {
    layer: Vec<u8>,
    layer_digest: String,
    config: Vec<u8>,
    config_digest: String,
    manifest: Vec<u8>,
    manifest_digest: String,
}

impl TestImage {
    /// An image whose only file, `/regcred-e2e.txt`, holds `content`. Different contents
    /// give different digests, so tests do not share blobs.
    pub fn new(content: &str) -> Self {
        Self::assemble(layer_tar(content.as_bytes()), &["/regcred-e2e.txt"])
    }

    /// An image that really runs: its layer holds `files` (path inside the image, content,
    /// mode; parent directories are added) and `symlinks` (path, target), and its config
    /// starts `cmd`. The kit builds its images from busybox-static with this.
    pub fn runnable(files: &[(&str, &[u8], u32)], symlinks: &[(&str, &str)], cmd: &[&str]) -> Self {
        Self::assemble(layer_tar_with(files, symlinks), cmd)
    }

    fn assemble(tar: Vec<u8>, cmd: &[&str]) -> Self {
        let diff_id = sha256_digest(&tar);
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(&tar).expect("gzip in memory");
        let layer = gzip.finish().expect("gzip in memory");
        let layer_digest = sha256_digest(&layer);

        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": oci_architecture(),
            "os": "linux",
            "config": {"Cmd": cmd},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }))
        .expect("config JSON");
        let config_digest = sha256_digest(&config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": layer_digest, "size": layer.len()}],
        }))
        .expect("manifest JSON");
        let manifest_digest = sha256_digest(&manifest);
        Self {
            layer,
            layer_digest,
            config,
            config_digest,
            manifest,
            manifest_digest,
        }
    }

    /// `sha256:…` of the manifest (what `repo@digest` references name).
    pub fn manifest_digest(&self) -> &str {
        &self.manifest_digest
    }

    /// `sha256:…` of the config: the image ID containerd's CRI reports.
    pub fn config_digest(&self) -> &str {
        &self.config_digest
    }

    /// `sha256:…` of the compressed layer.
    pub fn layer_digest(&self) -> &str {
        &self.layer_digest
    }

    /// Writes the image as an OCI image layout archive (`oci-layout`, `index.json`,
    /// `blobs/sha256/…`) whose index names it `name` (annotations
    /// `io.containerd.image.name` and `org.opencontainers.image.ref.name`), for
    /// `ctr images import`.
    pub fn oci_archive(&self, name: &str) -> Vec<u8> {
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": MANIFEST_MEDIA_TYPE,
                "digest": self.manifest_digest,
                "size": self.manifest.len(),
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": name.rsplit_once(':').map_or(name, |(_, tag)| tag),
                },
            }],
        }))
        .expect("index JSON");
        let mut builder = tar::Builder::new(Vec::new());
        let mut entries: Vec<(String, &[u8])> = vec![
            (
                "oci-layout".to_owned(),
                br#"{"imageLayoutVersion":"1.0.0"}"#,
            ),
            ("index.json".to_owned(), &index),
        ];
        for (digest, blob) in [
            (&self.layer_digest, &self.layer),
            (&self.config_digest, &self.config),
            (&self.manifest_digest, &self.manifest),
        ] {
            let hex = digest.trim_start_matches("sha256:");
            entries.push((format!("blobs/sha256/{hex}"), blob));
        }
        for (path, content) in entries {
            let mut header = tar::Header::new_ustar();
            header.set_path(&path).expect("tar path");
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_cksum();
            builder.append(&header, content).expect("tar in memory");
        }
        builder.into_inner().expect("tar in memory")
    }

    /// Pushes the layer, the config and the manifest as `REPO:TAG` to the registry at
    /// `registry_url` (`http://127.0.0.1:PORT`), answering its 401 challenges (Basic, or
    /// Bearer through the token server in the challenge) with `credentials`.
    ///
    /// # Errors
    ///
    /// [`PushError`] naming the step and the HTTP status; it never holds the credentials.
    pub async fn push(
        &self,
        registry_url: &str,
        repository: &str,
        tag: &str,
        credentials: Option<(&str, &str)>,
    ) -> Result<(), PushError> {
        let base = Url::parse(registry_url)
            .map_err(|e| PushError::new("parsing the registry URL", e.to_string()))?;
        let mut session = RegistrySession {
            http: reqwest::Client::new(),
            credentials: credentials.map(|(u, p)| (u.to_owned(), SecretString::from(p))),
            authorization: None,
        };
        for (blob, digest) in [
            (&self.layer, &self.layer_digest),
            (&self.config, &self.config_digest),
        ] {
            session.upload_blob(&base, repository, blob, digest).await?;
        }
        let url = join(&base, &format!("/v2/{repository}/manifests/{tag}"))?;
        let response = session
            .send(
                Method::PUT,
                url,
                Some((&self.manifest, MANIFEST_MEDIA_TYPE)),
            )
            .await?;
        expect_status(response, StatusCode::CREATED, "putting the manifest").await?;
        Ok(())
    }
}

/// Why a push failed. Holds no credentials.
#[derive(Debug)]
pub struct PushError {
    /// What the push was doing.
    pub step: &'static str,
    /// What went wrong (HTTP status and body, or the client error).
    pub detail: String,
}

impl PushError {
    fn new(step: &'static str, detail: String) -> Self {
        Self { step, detail }
    }
}

impl std::fmt::Display for PushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "push failed {}: {}", self.step, self.detail)
    }
}

impl std::error::Error for PushError {}

/// An HTTP client that answers registry challenges once and keeps the answer.
struct RegistrySession {
    http: reqwest::Client,
    credentials: Option<(String, SecretString)>,
    authorization: Option<HeaderValue>,
}

impl RegistrySession {
    async fn upload_blob(
        &mut self,
        base: &Url,
        repository: &str,
        blob: &[u8],
        digest: &str,
    ) -> Result<(), PushError> {
        let start = join(base, &format!("/v2/{repository}/blobs/uploads/"))?;
        let response = self.send(Method::POST, start, None).await?;
        let response =
            expect_status(response, StatusCode::ACCEPTED, "starting a blob upload").await?;
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| PushError::new("starting a blob upload", "no Location header".into()))?;
        let mut upload = base
            .join(location)
            .map_err(|e| PushError::new("reading the upload Location", e.to_string()))?;
        upload.query_pairs_mut().append_pair("digest", digest);
        let response = self
            .send(
                Method::PUT,
                upload,
                Some((blob, "application/octet-stream")),
            )
            .await?;
        expect_status(response, StatusCode::CREATED, "finishing a blob upload").await?;
        Ok(())
    }

    /// Sends a request; on a 401 answers the challenge and sends it once more.
    async fn send(
        &mut self,
        method: Method,
        url: Url,
        body: Option<(&[u8], &str)>,
    ) -> Result<reqwest::Response, PushError> {
        for attempt in 0..2 {
            let mut request = self.http.request(method.clone(), url.clone());
            if let Some(authorization) = &self.authorization {
                request = request.header(AUTHORIZATION, authorization.clone());
            }
            if let Some((bytes, content_type)) = body {
                request = request
                    .header(CONTENT_TYPE, content_type)
                    .body(bytes.to_vec());
            } else {
                request = request.header(reqwest::header::CONTENT_LENGTH, "0");
            }
            let response = request
                .send()
                .await
                .map_err(|e| PushError::new("sending a request", e.without_url().to_string()))?;
            if response.status() == StatusCode::UNAUTHORIZED && attempt == 0 {
                let challenge = response
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                self.authorization = Some(self.answer_challenge(&challenge).await?);
                continue;
            }
            return Ok(response);
        }
        Err(PushError::new(
            "authenticating",
            "401 Unauthorized after answering the challenge".into(),
        ))
    }

    async fn answer_challenge(&self, challenge: &str) -> Result<HeaderValue, PushError> {
        let step = "answering the registry's 401 challenge";
        let Some((user, password)) = &self.credentials else {
            return Err(PushError::new(
                step,
                "401 Unauthorized and no credentials to push with".into(),
            ));
        };
        let basic = format!(
            "Basic {}",
            STANDARD.encode(format!("{user}:{}", password.expose_secret()))
        );
        let (scheme, params) = parse_challenge(challenge);
        let value = if scheme.eq_ignore_ascii_case("basic") {
            basic
        } else if scheme.eq_ignore_ascii_case("bearer") {
            let realm = params
                .iter()
                .find(|(k, _)| k == "realm")
                .map(|(_, v)| v.as_str())
                .ok_or_else(|| PushError::new(step, "Bearer challenge without realm".into()))?;
            let mut url = Url::parse(realm).map_err(|e| PushError::new(step, e.to_string()))?;
            for (key, value) in &params {
                if key == "service" || key == "scope" {
                    url.query_pairs_mut().append_pair(key, value);
                }
            }
            let response = self
                .http
                .get(url)
                .header(AUTHORIZATION, &basic)
                .send()
                .await
                .map_err(|e| PushError::new(step, e.without_url().to_string()))?;
            let response = expect_status(response, StatusCode::OK, step).await?;
            let bytes = response
                .bytes()
                .await
                .map_err(|e| PushError::new(step, e.to_string()))?;
            let body: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| PushError::new(step, e.to_string()))?;
            let token = body
                .get("token")
                .or_else(|| body.get("access_token"))
                .and_then(|t| t.as_str())
                .ok_or_else(|| PushError::new(step, "token response without a token".into()))?;
            format!("Bearer {token}")
        } else {
            return Err(PushError::new(
                step,
                format!("unknown challenge scheme {scheme:?}"),
            ));
        };
        let mut header =
            HeaderValue::from_str(&value).map_err(|e| PushError::new(step, e.to_string()))?;
        header.set_sensitive(true);
        Ok(header)
    }
}

/// Splits `Scheme k1="v1",k2=v2` into the scheme and its parameters; quoted values may
/// hold commas (`scope="repository:x:pull,push"`).
pub fn parse_challenge(challenge: &str) -> (String, Vec<(String, String)>) {
    let challenge = challenge.trim();
    let (scheme, mut rest) = challenge.split_once(' ').unwrap_or((challenge, ""));
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end.min(quoted.len())..])
        } else {
            let (value, remaining) = after.split_once(',').unwrap_or((after, ""));
            (value.trim().to_owned(), remaining)
        };
        params.push((key.trim().to_ascii_lowercase(), value));
        rest = remaining;
    }
    (scheme.to_owned(), params)
}

async fn expect_status(
    response: reqwest::Response,
    expected: StatusCode,
    step: &'static str,
) -> Result<reqwest::Response, PushError> {
    if response.status() == expected {
        return Ok(response);
    }
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    Err(PushError::new(
        step,
        format!("HTTP {status}: {}", body.trim()),
    ))
}

fn join(base: &Url, path: &str) -> Result<Url, PushError> {
    base.join(path)
        .map_err(|e| PushError::new("building a registry URL", e.to_string()))
}

/// `sha256:` and the hex SHA-256 of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!(
        "sha256:{}",
        data_encoding::HEXLOWER.encode(&Sha256::digest(bytes))
    )
}

/// The OCI architecture name of this machine.
pub fn oci_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// A tar with one regular file, `regcred-e2e.txt`, with fixed metadata.
fn layer_tar(content: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_path("regcred-e2e.txt").expect("tar path");
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_cksum();
    builder.append(&header, content).expect("tar in memory");
    builder.into_inner().expect("tar in memory")
}

/// A layer with these files and symlinks, and every parent directory they need.
fn layer_tar_with(files: &[(&str, &[u8], u32)], symlinks: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for path in files
        .iter()
        .map(|f| f.0)
        .chain(symlinks.iter().map(|l| l.0))
    {
        let mut parent = std::path::Path::new(path.trim_start_matches('/')).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(dir.to_owned());
            parent = dir.parent();
        }
    }
    let header = |kind: tar::EntryType, mode: u32, size: usize| {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_size(size as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header
    };
    for dir in dirs {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        builder
            .append_data(&mut h, &dir, std::io::empty())
            .expect("tar in memory");
    }
    for (path, content, mode) in files {
        let mut h = header(tar::EntryType::Regular, *mode, content.len());
        builder
            .append_data(&mut h, path.trim_start_matches('/'), *content)
            .expect("tar in memory");
    }
    for (path, target) in symlinks {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        builder
            .append_link(&mut h, path.trim_start_matches('/'), target)
            .expect("tar in memory");
    }
    builder.into_inner().expect("tar in memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_parameters_keep_commas_inside_quotes() {
        let (scheme, params) = parse_challenge(
            r#"Bearer realm="http://127.0.0.1:1/token",service="svc",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(scheme, "Bearer");
        assert_eq!(
            params,
            [
                ("realm".to_owned(), "http://127.0.0.1:1/token".to_owned()),
                ("service".to_owned(), "svc".to_owned()),
                ("scope".to_owned(), "repository:a/b:pull,push".to_owned()),
            ]
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="r""#).1,
            [("realm".to_owned(), "r".to_owned())]
        );
    }

    #[test]
    fn images_with_different_contents_have_different_digests() {
        let a = TestImage::new("a");
        let b = TestImage::new("b");
        assert_ne!(a.manifest_digest(), b.manifest_digest());
        assert_eq!(
            a.manifest_digest(),
            TestImage::new("a").manifest_digest(),
            "deterministic"
        );
        assert!(a.config_digest().starts_with("sha256:") && a.config_digest().len() == 71);
    }
}
