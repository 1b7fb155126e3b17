//! The webhook's own certificate (`regcred webhook --tls-secret`): a CA and a serving
//! certificate kept in one Secret, renewed before they expire, and the CA bundle kept
//! current in the ValidatingWebhookConfiguration, so that an install needs neither
//! cert-manager nor openssl.
//!
//! Every replica runs the same loop (at start, then every `check_interval`):
//!
//! 1. Read the Secret. Plan: keep it, or write a renewed one ([`plan`]): a new CA when
//!    the current one has less than a third of its life left (the old CA stays in the
//!    bundle until it expires, so pairs it signed stay trusted), a new serving pair when
//!    that has less than a third of its life left, names other DNS names, or was not
//!    signed by the current CA. Writes carry the `resourceVersion` read: of replicas
//!    racing, one wins and the others read again.
//! 2. Make every webhook of the configuration trust the Secret's bundle (`caBundle`).
//! 3. Serve the Secret's pair: only after step 2, so a pair is never served before the
//!    API server trusts its issuer.
//!
//! Keys are never logged, and errors name objects, never their data.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::metrics::WebhookMetrics;

mod pki;

use pki::{Plan, Stored, plan};

/// The Secret's keys: the serving pair as a `kubernetes.io/tls` Secret has it, the CA
/// bundle, and the current CA's key.
const TLS_CRT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
const CA_CRT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";

/// The default lives: five years for the CA, ninety days for the serving pair.
pub const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(5 * 365 * 24 * 3600);
/// See [`DEFAULT_CA_VALIDITY`].
pub const DEFAULT_CERT_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// How often each replica checks the Secret and the configuration.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// How long a replica waits after changing the `caBundle` before serving a pair signed
/// by the new CA: the API server sees configuration changes through a watch.
const PROPAGATION: Duration = Duration::from_secs(3);
/// How often a replica looks for a configuration that does not exist yet.
const WAITING_INTERVAL: Duration = Duration::from_secs(2);
/// Certificates start this much before they are made (clocks of other machines).
const BACKDATE: Duration = Duration::from_secs(3600);

/// Where the certificate lives and what it must name.
#[derive(Debug, Clone)]
pub struct ManagedTlsConfig {
    /// The Secret's namespace.
    pub namespace: String,
    /// The Secret's name (created if missing).
    pub secret_name: String,
    /// The serving certificate's DNS names (the Service's names).
    pub dns_names: Vec<String>,
    /// The ValidatingWebhookConfiguration whose every webhook gets the CA bundle.
    pub webhook_configuration: String,
    /// The CA's life.
    pub ca_validity: Duration,
    /// The serving certificate's life.
    pub cert_validity: Duration,
    /// How often the Secret and the configuration are checked.
    pub check_interval: Duration,
}

impl ManagedTlsConfig {
    /// A configuration with the default lives and interval.
    pub fn new(
        namespace: impl Into<String>,
        secret_name: impl Into<String>,
        dns_names: Vec<String>,
        webhook_configuration: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            secret_name: secret_name.into(),
            dns_names,
            webhook_configuration: webhook_configuration.into(),
            ca_validity: DEFAULT_CA_VALIDITY,
            cert_validity: DEFAULT_CERT_VALIDITY,
            check_interval: DEFAULT_CHECK_INTERVAL,
        }
    }

    fn secret_ref(&self) -> String {
        format!("Secret {}/{}", self.namespace, self.secret_name)
    }
}

/// Why the certificate could not be made, stored or served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagedTlsError {
    /// The API refused or failed a call.
    #[error("{what}: {source}")]
    Api {
        /// Which call, on which object.
        what: String,
        /// The client's error.
        source: Box<kube::Error>,
    },
    /// Another replica wrote first; read again.
    #[error("{0} changed while it was being renewed")]
    Conflict(String),
    /// Making a key or a certificate failed.
    #[error("cannot make a certificate: {0}")]
    Generate(String),
    /// The stored pair does not load.
    #[error("{what}: {reason}")]
    Unusable {
        /// The object.
        what: String,
        /// Why (never the data).
        reason: String,
    },
}

impl ManagedTlsError {
    /// A refusal that waiting does not cure: RBAC, or a wrong name.
    fn is_permanent(&self) -> bool {
        matches!(self, Self::Api { source, .. }
            if matches!(source.as_ref(), kube::Error::Api(status) if status.code == 401 || status.code == 403))
    }
}

/// The webhook's own certificate: serves the current pair to rustls and renews it in the
/// background (see the module's documentation).
#[derive(Clone)]
pub struct ManagedCertificate {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ManagedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedCertificate")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

struct Shared {
    config: ManagedTlsConfig,
    client: kube::Client,
    provider: Arc<CryptoProvider>,
    current: RwLock<Option<Served>>,
    metrics: OnceLock<WebhookMetrics>,
    /// Set once "the configuration does not exist (yet)" was logged.
    waiting_logged: AtomicBool,
}

#[derive(Clone)]
struct Served {
    key: Arc<CertifiedKey>,
    leaf_der: Vec<u8>,
    /// The ends of the pair and of the CA signing new ones (Unix seconds), for the
    /// expiry gauges.
    leaf_not_after: i64,
    ca_not_after: Option<i64>,
}

impl ManagedCertificate {
    /// Makes or reads the certificate and serves it: returns once a pair is ready.
    /// Passing failures (the API away, a lost race) are logged and tried again, at most
    /// every 30 s; a refusal by RBAC is returned, as no retry cures it.
    ///
    /// # Errors
    ///
    /// [`ManagedTlsError`] when the API refuses the webhook's identity.
    pub async fn start(
        client: kube::Client,
        config: ManagedTlsConfig,
    ) -> Result<Self, ManagedTlsError> {
        let shared = Arc::new(Shared {
            config,
            client,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            current: RwLock::new(None),
            metrics: OnceLock::new(),
            waiting_logged: AtomicBool::new(false),
        });
        let mut delay = Duration::from_secs(1);
        loop {
            match shared.reconcile().await {
                Ok(()) => break,
                Err(err) if err.is_permanent() => return Err(err),
                Err(ManagedTlsError::Conflict(what)) => {
                    tracing::info!(object = %what, "another replica renewed it first; reading again");
                }
                Err(err) => {
                    tracing::warn!(error = %err, retry_in_seconds = delay.as_secs(), "cannot get the serving certificate yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
        Ok(Self { shared })
    }

    /// Records the expiry gauges in `metrics` and starts the renewal loop on the current
    /// tokio runtime.
    pub(crate) fn run(&self, metrics: WebhookMetrics) {
        let _ = self.shared.metrics.set(metrics);
        self.shared.record_expiry();
        let shared = self.shared.clone();
        tokio::spawn(async move {
            loop {
                // Until the configuration exists (`helm install` creates it after the
                // Deployment), every 2 s: its caBundle is what makes the API server's
                // calls work at all.
                let interval = if shared.waiting_logged.load(Ordering::Relaxed) {
                    WAITING_INTERVAL.min(shared.config.check_interval)
                } else {
                    shared.config.check_interval
                };
                tokio::time::sleep(interval).await;
                match shared.reconcile().await {
                    Ok(()) => {}
                    Err(ManagedTlsError::Conflict(what)) => {
                        tracing::info!(object = %what, "another replica renewed it first; reading again");
                        if let Err(err) = shared.reconcile().await {
                            tracing::warn!(error = %err, "cannot check the serving certificate; serving the current one");
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot check the serving certificate; serving the current one");
                    }
                }
            }
        });
    }

    pub(crate) fn resolver(&self) -> Arc<dyn ResolvesServerCert> {
        self.shared.clone()
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedCertificate")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Shared {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|served| served.key.clone())
    }
}

impl Shared {
    async fn reconcile(&self) -> Result<(), ManagedTlsError> {
        let config = &self.config;
        let what = config.secret_ref();
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &config.namespace);
        let existing = secrets
            .get_opt(&config.secret_name)
            .await
            .map_err(|source| ManagedTlsError::Api {
                what: format!("cannot read {what}"),
                source: Box::new(source),
            })?;
        let stored = existing.as_ref().and_then(|secret| {
            match Stored::from_secret(secret) {
                Ok(stored) => stored,
                Err(reason) => {
                    tracing::warn!(secret = %what, %reason, "the stored certificate is unusable; making a new one");
                    None
                }
            }
        });
        let stored = match plan(stored.as_ref(), SystemTime::now(), config)? {
            Plan::Keep => stored.unwrap_or_else(|| unreachable!("plan keeps only what exists")),
            Plan::Write {
                stored: renewed,
                why,
            } => {
                self.write(&secrets, existing, &renewed).await?;
                tracing::info!(secret = %what, reason = why, "renewed the webhook's certificate");
                renewed
            }
        };
        if self.ensure_ca_bundle(&stored.ca_pem).await? {
            tokio::time::sleep(PROPAGATION).await;
        }
        self.serve(&stored)
    }

    async fn write(
        &self,
        secrets: &Api<Secret>,
        existing: Option<Secret>,
        stored: &Stored,
    ) -> Result<(), ManagedTlsError> {
        let what = self.config.secret_ref();
        let data = stored.data();
        let result = match existing {
            Some(mut secret) => {
                // The type stays what it is (it cannot change): the chart makes the
                // Secret Opaque and empty, so that `helm uninstall` removes it.
                secret.data = Some(data);
                secret.string_data = None;
                secrets
                    .replace(&self.config.secret_name, &PostParams::default(), &secret)
                    .await
            }
            None => {
                let secret = Secret {
                    metadata: kube::api::ObjectMeta {
                        name: Some(self.config.secret_name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        labels: Some(BTreeMap::from([(
                            "app.kubernetes.io/managed-by".to_owned(),
                            "regcred-webhook".to_owned(),
                        )])),
                        ..Default::default()
                    },
                    // Opaque, as the chart makes it: a Secret's type cannot change, and
                    // a later `helm upgrade` of a chart that owns one would fail.
                    type_: Some("Opaque".to_owned()),
                    data: Some(data),
                    ..Default::default()
                };
                secrets.create(&PostParams::default(), &secret).await
            }
        };
        match result {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                Err(ManagedTlsError::Conflict(what))
            }
            Err(source) => Err(ManagedTlsError::Api {
                what: format!("cannot write {what}"),
                source: Box::new(source),
            }),
        }
    }

    /// Puts `bundle` into every webhook of the configuration that lacks it; true when
    /// it changed anything. A missing configuration is waited for (`helm install`
    /// creates it after the Deployment).
    async fn ensure_ca_bundle(&self, bundle: &str) -> Result<bool, ManagedTlsError> {
        let name = &self.config.webhook_configuration;
        let what = format!("ValidatingWebhookConfiguration {name}");
        let configurations: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
        let Some(configuration) =
            configurations
                .get_opt(name)
                .await
                .map_err(|source| ManagedTlsError::Api {
                    what: format!("cannot read {what}"),
                    source: Box::new(source),
                })?
        else {
            if !self.waiting_logged.swap(true, Ordering::Relaxed) {
                tracing::info!(configuration = %name, "the webhook configuration does not exist yet; its caBundle is set when it does");
            }
            return Ok(false);
        };
        self.waiting_logged.store(false, Ordering::Relaxed);
        let stale: Vec<String> = configuration
            .webhooks
            .unwrap_or_default()
            .into_iter()
            .filter(|webhook| {
                webhook
                    .client_config
                    .ca_bundle
                    .as_ref()
                    .map(|b| b.0.as_slice())
                    != Some(bundle.as_bytes())
            })
            .map(|webhook| webhook.name)
            .collect();
        if stale.is_empty() {
            return Ok(false);
        }
        let encoded = ByteString(bundle.as_bytes().to_vec());
        let patch = serde_json::json!({
            "webhooks": stale
                .iter()
                .map(|name| serde_json::json!({"name": name, "clientConfig": {"caBundle": encoded}}))
                .collect::<Vec<_>>()
        });
        configurations
            .patch(name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .map_err(|source| ManagedTlsError::Api {
                what: format!("cannot set the caBundle of {what}"),
                source: Box::new(source),
            })?;
        tracing::info!(configuration = %name, webhooks = stale.len(), "set the webhook configuration's caBundle");
        Ok(true)
    }

    fn serve(&self, stored: &Stored) -> Result<(), ManagedTlsError> {
        let unusable = |reason: String| ManagedTlsError::Unusable {
            what: self.config.secret_ref(),
            reason,
        };
        let leaf = CertificateDer::from_pem_slice(stored.cert_pem.as_bytes())
            .map_err(|_| unusable("tls.crt is not a PEM certificate".into()))?;
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if current
                .as_ref()
                .is_some_and(|c| c.leaf_der == leaf.as_ref())
            {
                return Ok(());
            }
        }
        let key = PrivateKeyDer::from_pem_slice(stored.key_pem.as_bytes())
            .map_err(|_| unusable("tls.key is not a PEM private key".into()))?;
        let leaf_der = leaf.as_ref().to_vec();
        let key = CertifiedKey::from_der(vec![leaf], key, &self.provider)
            .map_err(|err| unusable(format!("tls.key does not fit tls.crt: {err}")))?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Served {
            key: Arc::new(key),
            leaf_der,
            leaf_not_after: stored.leaf_not_after,
            ca_not_after: stored.cas.first().map(|ca| ca.not_after),
        });
        tracing::info!(
            secret = %self.config.secret_ref(),
            not_after = stored.leaf_not_after,
            "serving the webhook's certificate"
        );
        self.record_expiry();
        Ok(())
    }

    /// The expiry gauges of the pair in service (none before [`ManagedCertificate::run`]
    /// hands over the metrics, which then records them).
    fn record_expiry(&self) {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        if let (Some(served), Some(metrics)) = (current.as_ref(), self.metrics.get()) {
            metrics.certificate_expiry("serving", served.leaf_not_after);
            if let Some(ca) = served.ca_not_after {
                metrics.certificate_expiry("ca", ca);
            }
        }
    }
}

#[cfg(test)]
mod tests;
