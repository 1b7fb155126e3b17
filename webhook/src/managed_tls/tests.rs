//! Tests of the managed certificate (`managed_tls/`): the plan, the Secret, the loop.

use super::pki::*;
use super::*;

fn config() -> ManagedTlsConfig {
    ManagedTlsConfig {
        ca_validity: Duration::from_secs(3000),
        cert_validity: Duration::from_secs(300),
        ..ManagedTlsConfig::new(
            "regcred-system",
            "regcred-webhook-tls",
            vec!["regcred-webhook.regcred-system.svc".into()],
            "regcred-webhook",
        )
    }
}

fn written(plan: Plan) -> (Stored, &'static str) {
    match plan {
        Plan::Write { stored, why } => (stored, why),
        Plan::Keep => panic!("kept"),
    }
}

#[test]
fn a_fresh_pair_is_signed_by_its_ca_and_names_the_service() {
    let now = SystemTime::now();
    let (stored, why) = written(plan(None, now, &config()).unwrap());
    assert_eq!(why, "none stored");
    assert!(stored.leaf_signed_by_current && stored.ca_key_fits);
    assert_eq!(stored.leaf_dns_names, config().dns_names);
    assert_eq!(stored.cas.len(), 1);
    // Read back as a Secret holds it, it is kept.
    let secret = Secret {
        data: Some(stored.data()),
        ..Default::default()
    };
    let again = Stored::from_secret(&secret).unwrap().unwrap();
    assert!(matches!(
        plan(Some(&again), now, &config()).unwrap(),
        Plan::Keep
    ));
    // rustls takes the pair.
    let provider = rustls::crypto::ring::default_provider();
    let leaf = CertificateDer::from_pem_slice(stored.cert_pem.as_bytes()).unwrap();
    let key = PrivateKeyDer::from_pem_slice(stored.key_pem.as_bytes()).unwrap();
    CertifiedKey::from_der(vec![leaf], key, &provider).unwrap();
}

#[test]
fn the_serving_pair_is_renewed_at_two_thirds_of_its_life_by_the_same_ca() {
    let now = SystemTime::now();
    let (first, _) = written(plan(None, now, &config()).unwrap());
    let later = now + Duration::from_secs(199);
    assert!(matches!(
        plan(Some(&first), later, &config()).unwrap(),
        Plan::Keep
    ));
    let later = now + Duration::from_secs(201);
    let (second, why) = written(plan(Some(&first), later, &config()).unwrap());
    assert_eq!(why, "the serving certificate nears its end");
    assert_eq!(second.ca_pem, first.ca_pem, "same CA");
    assert_ne!(second.cert_pem, first.cert_pem);
    assert_ne!(second.key_pem, first.key_pem, "a new key");
    assert!(second.leaf_signed_by_current);
}

#[test]
fn a_new_ca_joins_the_bundle_and_the_old_one_leaves_only_when_expired() {
    let config = ManagedTlsConfig {
        cert_validity: Duration::from_secs(2000),
        ..config()
    };
    let now = SystemTime::now();
    let (first, _) = written(plan(None, now, &config).unwrap());
    let later = now + Duration::from_secs(2001);
    let (second, why) = written(plan(Some(&first), later, &config).unwrap());
    assert_eq!(why, "the CA nears its end");
    assert_eq!(second.cas.len(), 2, "new and old CA trusted");
    assert!(
        second.ca_pem.ends_with(&first.ca_pem),
        "the old CA stays, after the new"
    );
    assert!(second.leaf_signed_by_current);
    // Past the old CA's end it leaves the bundle; the pair and the new CA stay.
    let much_later = now + Duration::from_secs(3001);
    let (third, why) = written(plan(Some(&second), much_later, &config).unwrap());
    assert_eq!(why, "an expired CA left the bundle");
    assert_eq!(third.cas.len(), 1);
    assert_eq!(third.cert_pem, second.cert_pem);
    assert!(second.ca_pem.starts_with(&third.ca_pem));
}

#[test]
fn other_dns_names_or_a_foreign_pair_get_a_new_pair() {
    let now = SystemTime::now();
    let (first, _) = written(plan(None, now, &config()).unwrap());
    let mut other = config();
    other
        .dns_names
        .push("regcred-webhook.regcred-system.svc.cluster.local".into());
    let (second, why) = written(plan(Some(&first), now, &other).unwrap());
    assert_eq!(why, "the DNS names changed");
    assert_eq!(second.leaf_dns_names.len(), 2);
    // A pair from another CA (someone wrote the Secret by hand) is replaced.
    let (foreign, _) = written(plan(None, now, &config()).unwrap());
    let mixed = Stored::parse(
        foreign.cert_pem.clone(),
        foreign.key_pem.clone(),
        first.ca_pem.clone(),
        first.ca_key_pem.clone(),
    )
    .unwrap();
    assert!(!mixed.leaf_signed_by_current);
    let (_, why) = written(plan(Some(&mixed), now, &config()).unwrap());
    assert_eq!(why, "a new CA");
}

/// A CA carried over into a renewed bundle is written as rcgen wrote it.
#[test]
fn a_bundles_ca_is_written_again_byte_for_byte() {
    let ca = new_ca(SystemTime::now(), Duration::from_secs(3000)).unwrap();
    let der = CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap();
    assert_eq!(pem_of(&der), ca.cert_pem);
}

#[test]
fn a_half_written_secret_is_unusable_and_named_without_its_data() {
    let secret = Secret {
        data: Some(BTreeMap::from([
            (TLS_CRT.to_owned(), ByteString(b"not a cert".to_vec())),
            (
                TLS_KEY.to_owned(),
                ByteString(b"canary-key-material".to_vec()),
            ),
            (CA_CRT.to_owned(), ByteString(b"x".to_vec())),
            (CA_KEY.to_owned(), ByteString(b"y".to_vec())),
        ])),
        ..Default::default()
    };
    let err = Stored::from_secret(&secret).err().unwrap();
    assert_eq!(err, "tls.crt is not a PEM certificate");
    // An empty Secret (as the chart makes it) is "nothing stored yet".
    assert!(Stored::from_secret(&Secret::default()).unwrap().is_none());
}
