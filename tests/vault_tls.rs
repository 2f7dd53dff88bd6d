//! TLS to an OpenBao dev server with a generated CA: the CA from a file, a directory or
//! `VAULT_CACERT`, and an untrusted certificate.
#![cfg(feature = "vault")]

mod common;
mod vault_support;

use common::{CANARY, capture_logs};
use megallm_auth::{KeySource, SourceErrorKind, VaultSource};
use serde_json::json;
use vault_support::{PrivateServer, assert_no_leak, environment, unique};

/// Starts a TLS server with the canary at `<mount>/megallm`. Returns the server, its cert directory
/// and the mount.
async fn tls_server() -> (PrivateServer, tempfile::TempDir, String) {
    let cert_dir = tempfile::tempdir().unwrap();
    let server = PrivateServer::start_tls(cert_dir.path()).await;
    let mount = unique("kv2");
    server.admin.enable_kv(&mount, 2).await;
    server
        .admin
        .write(&mount, 2, "megallm", json!({"api_key": CANARY}))
        .await;
    (server, cert_dir, mount)
}

#[tokio::test]
async fn ca_file_is_trusted() {
    let _logs = capture_logs();
    let (server, cert_dir, mount) = tls_server().await;
    let admin = &server.admin;

    let source = VaultSource::builder(&mount, "megallm")
        .ca_file(cert_dir.path().join("vault-ca.pem"))
        .environment(environment(
            &admin.address,
            &[("VAULT_TOKEN", &admin.token)],
        ))
        .build()
        .unwrap();
    let resolved = source.resolve().await.unwrap();

    assert!(admin.address.starts_with("https://"));
    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert_no_leak(None, &source, &[&admin.token]);
}

#[tokio::test]
async fn ca_dir_is_trusted() {
    let _logs = capture_logs();
    let (server, cert_dir, mount) = tls_server().await;
    let admin = &server.admin;
    let ca_dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        cert_dir.path().join("vault-ca.pem"),
        ca_dir.path().join("ca.pem"),
    )
    .unwrap();

    let source = VaultSource::builder(&mount, "megallm")
        .environment(environment(
            &admin.address,
            &[
                ("VAULT_TOKEN", &admin.token),
                ("VAULT_CAPATH", ca_dir.path().to_str().unwrap()),
            ],
        ))
        .build()
        .unwrap();
    let resolved = source.resolve().await.unwrap();

    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert_no_leak(None, &source, &[&admin.token]);
}

#[tokio::test]
async fn vault_cacert_is_trusted() {
    let _logs = capture_logs();
    let (server, cert_dir, mount) = tls_server().await;
    let admin = &server.admin;
    let ca_file = cert_dir.path().join("vault-ca.pem");

    let source = VaultSource::builder(&mount, "megallm")
        .environment(environment(
            &admin.address,
            &[
                ("VAULT_TOKEN", &admin.token),
                ("VAULT_CACERT", ca_file.to_str().unwrap()),
            ],
        ))
        .build()
        .unwrap();
    let resolved = source.resolve().await.unwrap();

    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert_no_leak(None, &source, &[&admin.token]);
}

#[tokio::test]
async fn untrusted_certificate_is_unavailable() {
    let _logs = capture_logs();
    let (server, _cert_dir, mount) = tls_server().await;
    let admin = &server.admin;

    let source = VaultSource::builder(&mount, "megallm")
        .environment(environment(
            &admin.address,
            &[("VAULT_TOKEN", &admin.token)],
        ))
        .build()
        .unwrap();
    let error = source.resolve().await.unwrap_err();

    assert_eq!(error.kind(), SourceErrorKind::Unavailable);
    assert!(error.message().contains("certificate"), "{error}");
    assert_no_leak(Some(&error), &source, &[&admin.token]);
}

#[tokio::test]
async fn non_pem_ca_file_is_misconfigured() {
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, "not a certificate").unwrap();

    let error = VaultSource::builder("secret", "megallm")
        .ca_file(&ca_file)
        .environment(environment("https://127.0.0.1:1", &[]))
        .build()
        .unwrap_err();

    assert_eq!(error.kind(), SourceErrorKind::Misconfigured);
    assert!(
        error.message().contains("does not hold PEM certificates"),
        "{error}"
    );
}

#[tokio::test]
async fn client_cert_is_loaded() {
    let _logs = capture_logs();
    let (server, cert_dir, mount) = tls_server().await;
    let admin = &server.admin;

    // The dev server does not require client certificates, so this checks that the PEM pair
    // loads and the handshake still succeeds with it.
    let source = VaultSource::builder(&mount, "megallm")
        .ca_file(cert_dir.path().join("vault-ca.pem"))
        .client_cert(
            cert_dir.path().join("vault-cert.pem"),
            cert_dir.path().join("vault-key.pem"),
        )
        .environment(environment(
            &admin.address,
            &[("VAULT_TOKEN", &admin.token)],
        ))
        .build()
        .unwrap();
    let resolved = source.resolve().await.unwrap();

    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert_no_leak(None, &source, &[&admin.token]);
}

#[test]
fn non_pem_client_key_is_misconfigured() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, "not a certificate").unwrap();
    std::fs::write(&key, "not a key").unwrap();

    let error = VaultSource::builder("secret", "megallm")
        .client_cert(&cert, &key)
        .environment(environment("https://127.0.0.1:1", &[]))
        .build()
        .unwrap_err();

    assert_eq!(error.kind(), SourceErrorKind::Misconfigured);
    assert!(
        error
            .message()
            .contains("not a PEM certificate and private key"),
        "{error}"
    );
    assert!(!error.to_string().contains("not a key"), "{error}");
}
