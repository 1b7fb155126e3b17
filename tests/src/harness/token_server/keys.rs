//! The RSA key the tokens are signed with, its self-signed certificate, and its
//! libtrust key ID.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest as _, Sha256};

use super::KeyReference;

/// The RSA key and certificate the tokens are signed with.
pub(super) struct SigningKeyPair {
    pub(super) private_pkcs1_der: Vec<u8>,
    pub(super) certificate_der: Vec<u8>,
    pub(super) certificate_pem: String,
    pub(super) key_id: String,
}

impl SigningKeyPair {
    pub(super) fn generate() -> Self {
        use rsa::pkcs1::{EncodeRsaPrivateKey as _, EncodeRsaPublicKey as _};
        use rsa::pkcs8::EncodePublicKey as _;

        let private = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).expect("RSA key");
        let public = private.to_public_key();
        let signer = CertificateSigner {
            public_pkcs1_der: public.to_pkcs1_der().expect("PKCS#1 public key").into_vec(),
            key: &private,
        };
        let mut params = rcgen::CertificateParams::new(vec!["regcred-e2e-token-issuer".to_owned()])
            .expect("certificate parameters");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "regcred e2e token issuer");
        // rcgen picks a serial itself only with its own crypto backend, which is off here.
        let mut serial = [0u8; 16];
        getrandom::fill(&mut serial).expect("random bytes");
        serial[0] &= 0x7f; // a positive DER INTEGER
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let certificate = params
            .self_signed(&signer)
            .expect("self-signed certificate");
        let spki = public.to_public_key_der().expect("SubjectPublicKeyInfo");
        Self {
            private_pkcs1_der: private
                .to_pkcs1_der()
                .expect("PKCS#1 private key")
                .as_bytes()
                .to_vec(),
            certificate_der: certificate.der().to_vec(),
            certificate_pem: certificate.pem(),
            key_id: libtrust_key_id(spki.as_bytes()),
        }
    }

    pub(super) fn jwt_header(&self, key_reference: KeyReference) -> jsonwebtoken::Header {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        match key_reference {
            KeyReference::X5c => header.x5c = Some(vec![STANDARD.encode(&self.certificate_der)]),
            KeyReference::Kid => header.kid = Some(self.key_id.clone()),
        }
        header
    }
}

/// Signs the certificate with the `rsa` crate's key (rcgen's own backends are off).
pub(super) struct CertificateSigner<'a> {
    public_pkcs1_der: Vec<u8>,
    pub(super) key: &'a rsa::PrivateKey,
}

impl rcgen::PublicKeyData for CertificateSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.public_pkcs1_der
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

impl rcgen::SigningKey for CertificateSigner<'_> {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.key
            .pkcs1v15_sign::<Sha256>(message)
            .map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

/// libtrust's key ID, which distribution matches a JWT `kid` against: the SHA-256 of the
/// public key's SubjectPublicKeyInfo DER, first 30 bytes, base32, in groups of 4 joined
/// by `:`.
pub fn libtrust_key_id(spki_der: &[u8]) -> String {
    let digest = Sha256::digest(spki_der);
    let encoded = data_encoding::BASE32.encode(&digest[..30]);
    encoded
        .as_bytes()
        .chunks(4)
        .map(|group| std::str::from_utf8(group).expect("base32 is ASCII"))
        .collect::<Vec<_>>()
        .join(":")
}
