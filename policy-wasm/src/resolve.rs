//! Resolution: which credentials to try for an image, in which order, as which
//! `AuthConfig`.

use regcred_types::{
    AuthConfig, Candidate, PolicyConfig, RegistryCredentials, Resolution, RuntimeProfile,
    SecretManifest, SecretValue,
};

use crate::reference::{ImageRef, ImageRefError};
use crate::server::ServerAddress;
use crate::validate::{ValidCredentials, check};

/// Resolves the candidates for `image` from `secrets` (in imagePullSecrets order).
///
/// Secrets of the three credential types are read; invalid secrets and entries are
/// skipped with a warning naming them and their first violation. Candidates are ordered
/// most specific first (exact host before glob, longer path prefix first), then by input
/// order; a candidate identical to an earlier one is dropped.
///
/// # Errors
///
/// [`ImageRefError`] when `image` is not a valid reference.
pub fn resolve(
    image: &str,
    secrets: &[SecretManifest],
    runtime: RuntimeProfile,
    config: &PolicyConfig,
) -> Result<Resolution, ImageRefError> {
    let image = ImageRef::parse(image)?;
    let mut warnings = Vec::new();
    let mut matching: Vec<(String, ValidCredentials)> = Vec::new();
    for secret in secrets {
        let checked = check(secret, config);
        let name = &checked.report.secret;
        for violation in &checked.report.violations {
            warnings.push(format!(
                "secret {name}: skipped {}: {violation}",
                violation_scope(&violation.field)
            ));
        }
        for valid in checked.credentials {
            if valid.server.matches(&image) {
                matching.push((name.clone(), valid));
            }
        }
    }
    // Stable: input order survives within equal specificity.
    matching.sort_by_key(|(_, valid)| {
        (
            valid.server.has_glob(),
            std::cmp::Reverse(valid.server.path.len()),
        )
    });

    let mut candidates: Vec<Candidate> = Vec::new();
    for (secret, valid) in matching {
        let auth_config = map(&valid.credentials, &image, runtime);
        if auth_config.has_no_credentials() {
            warnings.push(format!(
                "secret {secret}: credentials for {} hold only tokens, which {runtime} ignores; not a candidate",
                valid.server.key()
            ));
            continue;
        }
        if candidates.iter().any(|c| c.auth_config == auth_config) {
            continue;
        }
        candidates.push(Candidate {
            secret,
            matched: valid.server.key(),
            auth_config,
        });
    }
    Ok(Resolution {
        candidates,
        warnings,
    })
}

fn violation_scope(field: &str) -> &'static str {
    if regcred_types::redact::find(field, ".auths[").is_some()
        || field.starts_with("data[.dockercfg][")
    {
        "an entry"
    } else {
        "the secret"
    }
}

/// Maps decoded credentials onto the `AuthConfig` for `runtime`, for a pull of `image`.
///
/// - `containerd`: `serverAddress` is `https://HOST[:PORT]` of the registry contacted
///   (containerd drops credentials otherwise); every other field as in the secret.
/// - `cri-o`: `username`, `password`, `auth` as in the secret, `serverAddress` the
///   registry `HOST[:PORT]`; tokens left out (CRI-O ignores them).
/// - `passthrough`: every field exactly as in the secret.
pub fn map(
    credentials: &RegistryCredentials,
    image: &ImageRef,
    runtime: RuntimeProfile,
) -> AuthConfig {
    let secret = |value: &Option<SecretValue>| value.clone().unwrap_or_default();
    let mut config = AuthConfig {
        username: credentials.username.clone().unwrap_or_default(),
        password: secret(&credentials.password),
        auth: secret(&credentials.auth),
        server_address: credentials.server_address.clone(),
        identity_token: secret(&credentials.identity_token),
        registry_token: secret(&credentials.registry_token),
    };
    match runtime {
        RuntimeProfile::Containerd => {
            config.server_address = ServerAddress::containerd_server_address(image);
        }
        RuntimeProfile::CriO => {
            config.server_address = image.registry_host_port();
            config.identity_token = SecretValue::default();
            config.registry_token = SecretValue::default();
        }
        RuntimeProfile::Passthrough => {}
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde_json::json;

    fn regcred(name: &str, server: &str, user: &str) -> SecretManifest {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "apps"},
            "type": "kubernetes.io/regcredentials",
            "stringData": {"serverAddress": server, "username": user, "password": "p"},
        }))
        .unwrap()
    }

    fn docker(name: &str, auths: serde_json::Value) -> SecretManifest {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "apps"},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": STANDARD.encode(json!({"auths": auths}).to_string())},
        }))
        .unwrap()
    }

    fn order(image: &str, secrets: &[SecretManifest]) -> Vec<String> {
        resolve(
            image,
            secrets,
            RuntimeProfile::Containerd,
            &PolicyConfig::default(),
        )
        .unwrap()
        .candidates
        .iter()
        .map(|c| format!("{} {}", c.secret, c.matched))
        .collect()
    }

    #[test]
    fn most_specific_first_then_input_order() {
        let secrets = [
            regcred("glob", "*.r.example", "a"),
            regcred("host", "eu.r.example", "b"),
            regcred("team", "eu.r.example/team", "c"),
            regcred("host2", "https://eu.r.example", "d"),
            regcred("other", "s.example", "e"),
        ];
        assert_eq!(
            order("eu.r.example/team/app:1", &secrets),
            vec![
                "apps/team eu.r.example/team",
                "apps/host eu.r.example",
                "apps/host2 eu.r.example",
                "apps/glob *.r.example",
            ]
        );
    }

    #[test]
    fn path_prefixes_match_whole_segments() {
        let secrets = [regcred("team", "r.example/team", "a")];
        assert!(order("r.example/team2/app", &secrets).is_empty());
        assert_eq!(order("r.example/team/app", &secrets).len(), 1);
    }

    #[test]
    fn identical_candidates_come_once() {
        let secrets = [
            regcred("one", "r.example", "a"),
            regcred("two", "https://r.example/", "a"),
        ];
        assert_eq!(order("r.example/app", &secrets), vec!["apps/one r.example"]);
    }

    #[test]
    fn containerd_gets_an_https_url_of_the_contacted_host() {
        let secrets = [
            regcred("hub", "https://index.docker.io/v1/", "a"),
            regcred("local", "127.0.0.1:5000", "b"),
        ];
        let hub = resolve(
            "nginx",
            &secrets,
            RuntimeProfile::Containerd,
            &PolicyConfig::default(),
        )
        .unwrap();
        assert_eq!(
            hub.candidates[0].auth_config.server_address,
            "https://registry-1.docker.io"
        );
        let local = resolve(
            "127.0.0.1:5000/app",
            &secrets,
            RuntimeProfile::Containerd,
            &PolicyConfig::default(),
        )
        .unwrap();
        assert_eq!(
            local.candidates[0].auth_config.server_address,
            "https://127.0.0.1:5000"
        );
        let passthrough = resolve(
            "127.0.0.1:5000/app",
            &secrets,
            RuntimeProfile::Passthrough,
            &PolicyConfig::default(),
        )
        .unwrap();
        assert_eq!(
            passthrough.candidates[0].auth_config.server_address,
            "127.0.0.1:5000"
        );
    }

    #[test]
    fn docker_entries_keep_their_tokens_and_bad_entries_are_skipped_with_a_warning() {
        let secrets = [docker(
            "dj",
            json!({
                "r.example": {"identitytoken": "refresh", "registrytoken": "bearer"},
                "bad..example": {"auth": STANDARD.encode("u:p")},
            }),
        )];
        let resolution = resolve(
            "r.example/app",
            &secrets,
            RuntimeProfile::Containerd,
            &PolicyConfig::default(),
        )
        .unwrap();
        let config = &resolution.candidates[0].auth_config;
        assert_eq!(config.identity_token.expose(), "refresh");
        assert_eq!(config.registry_token.expose(), "bearer");
        assert_eq!(resolution.warnings.len(), 1, "{:?}", resolution.warnings);
        assert!(
            resolution.warnings[0].contains("apps/dj")
                && resolution.warnings[0].contains("bad..example")
        );
    }

    #[test]
    fn cri_o_drops_token_only_candidates() {
        let secrets = [docker(
            "dj",
            json!({"r.example": {"identitytoken": "refresh"}}),
        )];
        let resolution = resolve(
            "r.example/app",
            &secrets,
            RuntimeProfile::CriO,
            &PolicyConfig::default(),
        )
        .unwrap();
        assert!(resolution.candidates.is_empty());
        assert!(
            resolution.warnings[0].contains("cri-o"),
            "{:?}",
            resolution.warnings
        );
    }

    #[test]
    fn invalid_secrets_are_skipped_with_a_warning_naming_them() {
        let secrets = [
            regcred("broken", "r.example", "u:x"),
            regcred("good", "r.example", "u"),
        ];
        let resolution = resolve(
            "r.example/app",
            &secrets,
            RuntimeProfile::Containerd,
            &PolicyConfig::default(),
        )
        .unwrap();
        assert_eq!(resolution.candidates.len(), 1);
        assert!(
            resolution.warnings[0]
                .starts_with("secret apps/broken: skipped the secret: stringData[username]"),
            "{:?}",
            resolution.warnings
        );
    }

    #[test]
    fn user_info_never_reaches_warnings() {
        let canary = "CANARY-77ab";
        let secrets = [
            regcred("inline", &format!("https://robot:{canary}@r.example"), "u"),
            docker(
                "dj",
                json!({format!("https://robot:{canary}@r.example"): {"auth": STANDARD.encode("u:p")}}),
            ),
        ];
        let resolution = resolve(
            "r.example/app",
            &secrets,
            RuntimeProfile::Containerd,
            &PolicyConfig::default(),
        )
        .unwrap();
        assert!(resolution.candidates.is_empty());
        assert_eq!(resolution.warnings.len(), 2, "{:?}", resolution.warnings);
        for warning in &resolution.warnings {
            assert!(!warning.contains(canary), "{warning}");
            assert!(warning.contains("user info"), "{warning}");
        }
    }

    #[test]
    fn malformed_images_are_errors() {
        assert!(
            resolve(
                "R.example/App",
                &[],
                RuntimeProfile::Containerd,
                &PolicyConfig::default()
            )
            .is_err()
        );
    }
}
