//! `VaultSettings` read from TOML through the config crate, then resolved against OpenBao.
#![cfg(feature = "vault")]

mod common;
mod vault_support;

use common::{CANARY, capture_logs};
use config::{Config, File, FileFormat};
use megallm_auth::{KeyPolicy, KeySource, SourceErrorKind, VaultSettings, VaultSource};
use serde_json::json;
use vault_support::{assert_no_leak, environment, shared_server, unique};

fn settings_from_toml(text: &str) -> VaultSettings {
    Config::builder()
        .add_source(File::from_str(text, FileFormat::Toml))
        .build()
        .unwrap()
        .try_deserialize()
        .unwrap()
}

#[tokio::test]
async fn toml_approle_settings_resolve() {
    let _logs = capture_logs();
    let admin = shared_server();
    let mount = unique("kv2");
    admin.enable_kv(&mount, 2).await;
    admin
        .write(&mount, 2, "megallm", json!({"api_key": CANARY}))
        .await;
    let policy = unique("reader");
    admin
        .policy(
            &policy,
            &format!("path \"{mount}/data/megallm\" {{ capabilities = [\"read\"] }}"),
        )
        .await;
    let auth_mount = unique("approle");
    let (role_id, secret_id) = admin
        .approle(&auth_mount, "megallm", json!({"token_policies": [policy]}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret_id");
    std::fs::write(&secret_file, &secret_id).unwrap();

    let settings = settings_from_toml(&format!(
        r#"
        address = "{address}"
        mount = "{mount}"
        path = "data/megallm"
        kv_version = 2
        timeout_secs = 5
        required = true
        auth = {{ method = "approle", mount = "{auth_mount}", role_id = "{role_id}", secret_id_file = "{secret_file}" }}
        "#,
        address = admin.address,
        secret_file = secret_file.display(),
    ));
    let source = VaultSource::from_settings(
        &settings,
        &environment("http://127.0.0.1:1", &[]),
        KeyPolicy::Strict,
    )
    .unwrap();
    let resolved = source.resolve().await.unwrap();

    assert_eq!(source.address(), admin.address);
    assert_eq!(resolved.label, format!("vault:{mount}/megallm#api_key"));
    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert_no_leak(None, &source, &[&secret_id, &role_id, &admin.token]);
}

#[test]
fn toml_inline_token_is_rejected() {
    let settings = settings_from_toml(
        r#"
        path = "megallm"
        auth = { method = "token", token = "s.TESTINLINETOKEN0000000000" }
        "#,
    );
    let error = VaultSource::from_settings(
        &settings,
        &environment("http://127.0.0.1:1", &[]),
        KeyPolicy::Strict,
    )
    .unwrap_err();

    assert_eq!(error.kind(), SourceErrorKind::Misconfigured);
    assert!(
        error.message().contains("token_file or token_env"),
        "{error}"
    );
    assert!(!error.to_string().contains("TESTINLINE"), "{error}");
    assert!(!format!("{settings:?}").contains("TESTINLINE"));
}

#[test]
fn toml_unknown_setting_is_rejected() {
    let result = Config::builder()
        .add_source(File::from_str(
            r#"
            path = "megallm"
            namespce = "admin"
            "#,
            FileFormat::Toml,
        ))
        .build()
        .unwrap()
        .try_deserialize::<VaultSettings>();

    let error = result.unwrap_err().to_string();
    assert!(error.contains("namespce"), "{error}");
}
