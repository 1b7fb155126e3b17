//! The certificates themselves: the Secret's contents parsed, the plan (keep, or renew
//! the CA, the serving pair or both), and new CAs and serving pairs made with rcgen.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use super::{BACKDATE, CA_CRT, CA_KEY, ManagedTlsConfig, ManagedTlsError, TLS_CRT, TLS_KEY};

/// What the Secret holds, parsed.
pub(super) struct Stored {
    pub(super) cert_pem: String,
    pub(super) key_pem: String,
    pub(super) ca_pem: String,
    pub(super) ca_key_pem: String,
    pub(super) leaf_not_after: i64,
    pub(super) leaf_dns_names: Vec<String>,
    /// The bundle's CAs, the current (signing) one first.
    pub(super) cas: Vec<StoredCa>,
    /// Whether the current CA's key fits its certificate and signed the leaf.
    pub(super) leaf_signed_by_current: bool,
    pub(super) ca_key_fits: bool,
}

pub(super) struct StoredCa {
    pub(super) der: Vec<u8>,
    pub(super) not_after: i64,
}

impl Stored {
    /// `Ok(None)` when the Secret holds none of the keys yet (as the chart makes it).
    pub(super) fn from_secret(secret: &Secret) -> Result<Option<Self>, String> {
        let data = secret.data.clone().unwrap_or_default();
        let text = |key: &str| -> Result<Option<String>, String> {
            data.get(key)
                .map(|value| {
                    String::from_utf8(value.0.clone()).map_err(|_| format!("{key} is not text"))
                })
                .transpose()
        };
        let (Some(cert_pem), Some(key_pem), Some(ca_pem), Some(ca_key_pem)) =
            (text(TLS_CRT)?, text(TLS_KEY)?, text(CA_CRT)?, text(CA_KEY)?)
        else {
            return Ok(None);
        };
        Self::parse(cert_pem, key_pem, ca_pem, ca_key_pem).map(Some)
    }

    pub(super) fn parse(
        cert_pem: String,
        key_pem: String,
        ca_pem: String,
        ca_key_pem: String,
    ) -> Result<Self, String> {
        let leaf_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| "tls.crt is not a PEM certificate".to_owned())?;
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der)
            .map_err(|_| "tls.crt does not parse".to_owned())?;
        let leaf_dns_names = leaf
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        x509_parser::extensions::GeneralName::DNSName(dns) => {
                            Some((*dns).to_owned())
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let cas: Vec<StoredCa> = CertificateDer::pem_slice_iter(ca_pem.as_bytes())
            .map(|der| {
                let der = der.map_err(|_| "ca.crt is not a PEM bundle".to_owned())?;
                let (_, ca) = x509_parser::parse_x509_certificate(&der)
                    .map_err(|_| "ca.crt does not parse".to_owned())?;
                Ok(StoredCa {
                    not_after: ca.validity().not_after.timestamp(),
                    der: der.as_ref().to_vec(),
                })
            })
            .collect::<Result<_, String>>()?;
        let first = cas
            .first()
            .ok_or_else(|| "ca.crt holds no certificate".to_owned())?;
        let (_, current_ca) = x509_parser::parse_x509_certificate(&first.der)
            .map_err(|_| "ca.crt does not parse".to_owned())?;
        let ca_key =
            KeyPair::from_pem(&ca_key_pem).map_err(|_| "ca.key does not parse".to_owned())?;
        let ca_key_fits = {
            use rcgen::PublicKeyData as _;
            current_ca.public_key().subject_public_key.data.as_ref() == ca_key.der_bytes()
        };
        let leaf_signed_by_current = leaf.verify_signature(Some(current_ca.public_key())).is_ok();
        Ok(Self {
            leaf_not_after: leaf.validity().not_after.timestamp(),
            leaf_dns_names,
            leaf_signed_by_current,
            ca_key_fits,
            cas,
            cert_pem,
            key_pem,
            ca_pem,
            ca_key_pem,
        })
    }

    pub(super) fn data(&self) -> BTreeMap<String, ByteString> {
        [
            (TLS_CRT, &self.cert_pem),
            (TLS_KEY, &self.key_pem),
            (CA_CRT, &self.ca_pem),
            (CA_KEY, &self.ca_key_pem),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), ByteString(value.as_bytes().to_vec())))
        .collect()
    }
}

pub(super) enum Plan {
    Keep,
    Write { stored: Stored, why: &'static str },
}

pub(super) fn unix(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

pub(super) fn secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

/// What to do with what is stored at `now` (see the module's documentation).
pub(super) fn plan(
    stored: Option<&Stored>,
    now: SystemTime,
    config: &ManagedTlsConfig,
) -> Result<Plan, ManagedTlsError> {
    let now_unix = unix(now);
    let Some(stored) = stored else {
        let ca = new_ca(now, config.ca_validity)?;
        let stored = issue(
            &ca.cert_pem,
            &ca.key_pem,
            std::slice::from_ref(&ca.cert_pem),
            now,
            config,
        )?;
        return Ok(Plan::Write {
            stored,
            why: "none stored",
        });
    };
    let mut why = None;
    // The bundle: CAs still valid, the current one first.
    let mut bundle: Vec<String> = stored
        .cas
        .iter()
        .filter(|ca| ca.not_after > now_unix)
        .map(|ca| pem_of(&ca.der))
        .collect();
    if bundle.len() != stored.cas.len() {
        why = Some("an expired CA left the bundle");
    }
    let current = &stored.cas[0];
    let ca_renew =
        !stored.ca_key_fits || current.not_after - now_unix < secs(config.ca_validity) / 3;
    let (ca_pem, ca_key_pem) = if ca_renew {
        let ca = new_ca(now, config.ca_validity)?;
        bundle.insert(0, ca.cert_pem.clone());
        why = Some("the CA nears its end");
        (ca.cert_pem, ca.key_pem)
    } else {
        (pem_of(&current.der), stored.ca_key_pem.clone())
    };
    let mut want: Vec<&String> = config.dns_names.iter().collect();
    want.sort();
    want.dedup();
    let mut have: Vec<&String> = stored.leaf_dns_names.iter().collect();
    have.sort();
    have.dedup();
    let leaf_renew = if ca_renew || !stored.leaf_signed_by_current {
        Some("a new CA")
    } else if stored.leaf_not_after - now_unix < secs(config.cert_validity) / 3 {
        Some("the serving certificate nears its end")
    } else if want != have {
        Some("the DNS names changed")
    } else {
        None
    };
    if let Some(reason) = leaf_renew {
        let stored = issue(&ca_pem, &ca_key_pem, &bundle, now, config)?;
        return Ok(Plan::Write {
            stored,
            why: why.filter(|_| ca_renew).unwrap_or(reason),
        });
    }
    match why {
        None => Ok(Plan::Keep),
        Some(why) => {
            let renewed = Stored::parse(
                stored.cert_pem.clone(),
                stored.key_pem.clone(),
                bundle.concat(),
                stored.ca_key_pem.clone(),
            )
            .map_err(|reason| ManagedTlsError::Unusable {
                what: config.secret_ref(),
                reason,
            })?;
            Ok(Plan::Write {
                stored: renewed,
                why,
            })
        }
    }
}

/// A certificate as PEM, with the LF line endings rcgen writes.
pub(super) fn pem_of(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

pub(super) struct NewCa {
    pub(super) cert_pem: String,
    pub(super) key_pem: String,
}

pub(super) fn generate_error(err: rcgen::Error) -> ManagedTlsError {
    ManagedTlsError::Generate(err.to_string())
}

pub(super) fn validity(params: &mut CertificateParams, now: SystemTime, life: Duration) {
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + life).into();
}

pub(super) fn new_ca(now: SystemTime, life: Duration) -> Result<NewCa, ManagedTlsError> {
    let key = KeyPair::generate().map_err(generate_error)?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    // The time in the name tells CAs of successive renewals apart in a bundle.
    name.push(
        DnType::CommonName,
        format!("regcred webhook CA {}", unix(now)),
    );
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, now, life);
    let cert = params.self_signed(&key).map_err(generate_error)?;
    Ok(NewCa {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A serving pair signed by the CA, stored with `bundle`.
pub(super) fn issue(
    ca_pem: &str,
    ca_key_pem: &str,
    bundle: &[String],
    now: SystemTime,
    config: &ManagedTlsConfig,
) -> Result<Stored, ManagedTlsError> {
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(generate_error)?;
    let issuer = Issuer::from_ca_cert_pem(ca_pem, ca_key).map_err(generate_error)?;
    let key = KeyPair::generate().map_err(generate_error)?;
    let mut params = CertificateParams::new(config.dns_names.clone()).map_err(generate_error)?;
    let mut name = DistinguishedName::new();
    name.push(
        DnType::CommonName,
        config.dns_names.first().cloned().unwrap_or_default(),
    );
    params.distinguished_name = name;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, now, config.cert_validity);
    let cert = params.signed_by(&key, &issuer).map_err(generate_error)?;
    Stored::parse(
        cert.pem(),
        key.serialize_pem(),
        bundle.concat(),
        ca_key_pem.to_owned(),
    )
    .map_err(|reason| ManagedTlsError::Unusable {
        what: config.secret_ref(),
        reason,
    })
}
