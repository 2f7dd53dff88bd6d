//! A sealed server, a stopped server and a server that never responds are Unavailable. Each
//! test starts a private OpenBao server, so the shared one stays untouched.
#![cfg(feature = "vault")]

mod common;
mod vault_support;

use std::time::Duration;

use common::{CANARY, capture_logs};
use megallm_auth::{KeySource, SourceErrorKind, VaultSource};
use serde_json::json;
use vault_support::{PrivateServer, assert_no_leak, environment, unique};

#[tokio::test]
async fn sealed_server_is_unavailable() {
    let logs = capture_logs();
    let server = PrivateServer::start().await;
    let admin = &server.admin;
    let mount = unique("kv2");
    admin.enable_kv(&mount, 2).await;
    admin
        .write(&mount, 2, "megallm", json!({"api_key": CANARY}))
        .await;

    let source = VaultSource::builder(&mount, "megallm")
        .environment(environment(
            &admin.address,
            &[("VAULT_TOKEN", &admin.token)],
        ))
        .build()
        .unwrap();
    source.resolve().await.unwrap();
    server.seal().await;
    let error = source.resolve().await.unwrap_err();

    assert_eq!(error.kind(), SourceErrorKind::Unavailable);
    assert!(error.message().contains("Vault is sealed"), "{error}");
    assert!(error.message().contains(&admin.address), "{error}");
    assert_no_leak(Some(&error), &source, &[&admin.token]);
    logs.assert_clean();
}

#[tokio::test]
async fn sealed_server_fails_first_resolve() {
    let _logs = capture_logs();
    let server = PrivateServer::start().await;
    let admin = server.admin.clone();
    server.seal().await;

    let source = VaultSource::builder("secret", "megallm")
        .environment(environment(
            &admin.address,
            &[("VAULT_TOKEN", &admin.token)],
        ))
        .build()
        .unwrap();
    let error = source.resolve().await.unwrap_err();

    assert_eq!(error.kind(), SourceErrorKind::Unavailable);
    assert!(error.message().contains("sealed"), "{error}");
    assert_no_leak(Some(&error), &source, &[&admin.token]);
}

#[tokio::test]
async fn stopped_server_is_unavailable() {
    let logs = capture_logs();
    let mut server = PrivateServer::start().await;
    let admin = server.admin.clone();
    let mount = unique("kv2");
    admin.enable_kv(&mount, 2).await;
    admin
        .write(&mount, 2, "megallm", json!({"api_key": CANARY}))
        .await;

    let source = VaultSource::builder(&mount, "megallm")
        .environment(environment(
            &admin.address,
            &[("VAULT_TOKEN", &admin.token)],
        ))
        .build()
        .unwrap();
    source.resolve().await.unwrap();
    server.stop();
    let error = source.resolve().await.unwrap_err();

    assert_eq!(error.kind(), SourceErrorKind::Unavailable);
    assert!(error.message().contains("no connection"), "{error}");
    assert!(error.message().contains(&admin.address), "{error}");
    assert_no_leak(Some(&error), &source, &[&admin.token]);
    logs.assert_clean();
}

#[tokio::test]
async fn silent_server_times_out() {
    let _logs = capture_logs();
    // Accepts connections and never responds.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let accept = tokio::spawn(async move {
        let mut open_connections = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open_connections.push(stream);
        }
    });
    let token = "s.TESTTOKENNEVERSENTANYWHERE";

    let source = VaultSource::builder("secret", "megallm")
        .timeout(Duration::from_millis(500))
        .environment(environment(&address, &[("VAULT_TOKEN", token)]))
        .build()
        .unwrap();
    let error = source.resolve().await.unwrap_err();
    accept.abort();

    assert_eq!(error.kind(), SourceErrorKind::Unavailable);
    assert!(error.message().contains("timed out"), "{error}");
    assert_no_leak(Some(&error), &source, &[token]);
}

#[cfg(feature = "testing")]
#[tokio::test]
async fn server_error_is_unavailable() {
    let _logs = capture_logs();
    // A loopback server shaped like Vault that fails every request with 500.
    let app = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"errors": ["internal error"]})),
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let token = "s.TESTTOKENNEVERSENTANYWHERE";

    let source = VaultSource::builder("secret", "megallm")
        .environment(environment(&address, &[("VAULT_TOKEN", token)]))
        .build()
        .unwrap();
    let error = source.resolve().await.unwrap_err();
    server.abort();

    assert_eq!(error.kind(), SourceErrorKind::Unavailable);
    assert!(error.message().contains("HTTP 500"), "{error}");
    assert_no_leak(Some(&error), &source, &[token]);
}
