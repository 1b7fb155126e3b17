//! Certificate rotation without a restart: the first handshake after the files change
//! presents the new certificate; a pair that does not load keeps the old one in service.

use regcred_types::PolicyConfig;

use super::{Client, TestCert, TestServer, admission, client_config};

async fn presented(
    server: &TestServer,
    trust: &TestCert,
) -> rustls::pki_types::CertificateDer<'static> {
    let mut client = Client::connect(server.addr, client_config(&trust.der))
        .await
        .expect("handshake");
    let (status, _) = client.send("GET", "/healthz", Vec::new()).await.unwrap();
    assert_eq!(status, 200);
    client.peer_certificate
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_handshake_presents_the_rotated_certificate() {
    let server = TestServer::start(admission(PolicyConfig::default())).await;
    assert_eq!(presented(&server, &server.cert).await, server.cert.der);
    let cert_path = server.dir.path().join("tls.crt");
    let key_path = server.dir.path().join("tls.key");

    // As kubelet updates a mounted Secret: new files renamed into place.
    let second = TestCert::new("rotated");
    let staging = tempfile::tempdir_in(server.dir.path()).unwrap();
    let (new_cert, new_key) = second.write(staging.path());
    std::fs::rename(&new_key, &key_path).unwrap();
    std::fs::rename(&new_cert, &cert_path).unwrap();
    assert_eq!(presented(&server, &second).await, second.der);

    // A connection made before the rotation keeps working.
    let mut old = Client::connect(server.addr, client_config(&second.der))
        .await
        .unwrap();

    // Half a rotation (a new certificate, the old key) does not load: the previous pair
    // stays in service.
    let third = TestCert::new("third");
    std::fs::write(&cert_path, &third.cert_pem).unwrap();
    assert_eq!(presented(&server, &second).await, second.der);
    assert!(
        Client::connect(server.addr, client_config(&third.der))
            .await
            .is_err(),
        "a certificate without its key was served"
    );

    // The key arrives (written in place): the third pair is served.
    std::fs::write(&key_path, &third.key_pem).unwrap();
    assert_eq!(presented(&server, &third).await, third.der);
    let (status, _) = old.send("GET", "/readyz", Vec::new()).await.unwrap();
    assert_eq!(status, 200);
}
