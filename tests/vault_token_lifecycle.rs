//! AppRole login, token renewal, login again after expiry or revocation, and static tokens
//! that expire or change, against OpenBao.
#![cfg(feature = "vault")]

mod common;
mod vault_support;

use std::time::Duration;

use common::{CANARY, capture_logs};
use megallm_auth::{KeySource, SecretRef, SourceErrorKind, VaultAuth, VaultSource};
use serde_json::{Value, json};
use vault_support::{Admin, assert_no_leak, environment, shared_server, unique};

/// Creates a KV v2 mount with the canary and a policy that may read it. Returns (mount, policy).
async fn readable_secret(admin: &Admin) -> (String, String) {
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
    (mount, policy)
}

/// Creates an AppRole mount and role with `policy` and the given TTL options.
async fn approle(admin: &Admin, policy: &str, options: Value) -> (String, String, String) {
    let mount = unique("approle");
    let mut role = json!({"token_policies": [policy]});
    role.as_object_mut()
        .unwrap()
        .extend(options.as_object().unwrap().clone());
    let (role_id, secret_id) = admin.approle(&mount, "megallm", role).await;
    (mount, role_id, secret_id)
}

/// Builds a source that reads `megallm` from `mount` after an AppRole login at `auth_mount`,
/// with the secret id taken from the variable `APP_SECRET_ID`, set to `secret_id`.
fn approle_source(
    admin: &Admin,
    mount: &str,
    auth_mount: &str,
    role_id: &str,
    secret_id: &str,
) -> VaultSource {
    VaultSource::builder(mount, "megallm")
        .auth(
            VaultAuth::approle(role_id, SecretRef::Env("APP_SECRET_ID".into()))
                .with_mount(auth_mount),
        )
        .environment(environment(&admin.address, &[("APP_SECRET_ID", secret_id)]))
        .build()
        .unwrap()
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[tokio::test]
async fn approle_secret_id_from_file() {
    let logs = capture_logs();
    let admin = shared_server();
    let (mount, policy) = readable_secret(&admin).await;
    let (auth_mount, role_id, secret_id) = approle(&admin, &policy, json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret_id");
    std::fs::write(&secret_file, format!("{secret_id}\n")).unwrap();

    let source = VaultSource::builder(&mount, "megallm")
        .auth(VaultAuth::approle(&role_id, SecretRef::File(secret_file)).with_mount(&auth_mount))
        .environment(environment(&admin.address, &[]))
        .build()
        .unwrap();
    let resolved = source.resolve().await.unwrap();

    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert_eq!(count(&logs.contents(), "logged in to Vault"), 1);
    assert_no_leak(None, &source, &[&secret_id, &role_id, &admin.token]);
}

#[tokio::test]
async fn approle_secret_id_from_env() {
    let _logs = capture_logs();
    let admin = shared_server();
    let (mount, policy) = readable_secret(&admin).await;
    let (auth_mount, role_id, secret_id) = approle(&admin, &policy, json!({})).await;

    let source = approle_source(&admin, &mount, &auth_mount, &role_id, &secret_id);
    let resolved = source.resolve().await.unwrap();

    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert_no_leak(None, &source, &[&secret_id, &role_id, &admin.token]);
}

#[tokio::test]
async fn approle_wrong_secret_id_is_denied() {
    let _logs = capture_logs();
    let admin = shared_server();
    let (mount, policy) = readable_secret(&admin).await;
    let (auth_mount, role_id, _) = approle(&admin, &policy, json!({})).await;
    let wrong = "00000000-1111-2222-3333-444444444444";

    let source = approle_source(&admin, &mount, &auth_mount, &role_id, wrong);
    let error = source.resolve().await.unwrap_err();

    assert_eq!(error.kind(), SourceErrorKind::Denied);
    assert!(
        error.message().contains("rejected the AppRole login"),
        "{error}"
    );
    assert!(
        error
            .message()
            .contains("environment variable APP_SECRET_ID"),
        "{error}"
    );
    assert_no_leak(Some(&error), &source, &[wrong, &role_id, &admin.token]);
}

#[tokio::test]
async fn approle_missing_secret_id_is_misconfigured() {
    let admin = shared_server();
    let source = VaultSource::builder("secret", "megallm")
        .auth(VaultAuth::approle(
            "role",
            SecretRef::Env("APP_SECRET_ID".into()),
        ))
        .environment(environment(&admin.address, &[]))
        .build()
        .unwrap();
    let error = source.resolve().await.unwrap_err();

    assert_eq!(error.kind(), SourceErrorKind::Misconfigured);
    assert!(
        error
            .message()
            .contains("environment variable APP_SECRET_ID is missing"),
        "{error}"
    );
}

#[tokio::test]
async fn approle_token_is_renewed() {
    let logs = capture_logs();
    let admin = shared_server();
    let (mount, policy) = readable_secret(&admin).await;
    let (auth_mount, role_id, secret_id) = approle(
        &admin,
        &policy,
        json!({"token_ttl": "3s", "token_max_ttl": "60s"}),
    )
    .await;

    let source = approle_source(&admin, &mount, &auth_mount, &role_id, &secret_id);
    source.resolve().await.unwrap();
    // Past two thirds of the 3 s TTL, before it ends.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let resolved = source.resolve().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let after_expiry_of_first_ttl = source.resolve().await.unwrap();

    let contents = logs.contents();
    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert_eq!(after_expiry_of_first_ttl.key.expose_secret(), CANARY);
    assert!(
        count(&contents, "renewed the Vault token") >= 2,
        "{contents}"
    );
    assert_eq!(count(&contents, "logged in to Vault"), 1, "{contents}");
    assert_no_leak(None, &source, &[&secret_id, &role_id, &admin.token]);
}

#[tokio::test]
async fn approle_logs_in_again_after_max_ttl() {
    let logs = capture_logs();
    let admin = shared_server();
    let (mount, policy) = readable_secret(&admin).await;
    let (auth_mount, role_id, secret_id) = approle(
        &admin,
        &policy,
        json!({"token_ttl": "3s", "token_max_ttl": "3s"}),
    )
    .await;

    let source = approle_source(&admin, &mount, &auth_mount, &role_id, &secret_id);
    source.resolve().await.unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let resolved = source.resolve().await.unwrap();

    let contents = logs.contents();
    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert_eq!(count(&contents, "logged in to Vault"), 2, "{contents}");
    assert_no_leak(None, &source, &[&secret_id, &role_id, &admin.token]);
}

#[tokio::test]
async fn approle_logs_in_again_after_revocation() {
    let logs = capture_logs();
    let admin = shared_server();
    let (mount, policy) = readable_secret(&admin).await;
    let (auth_mount, role_id, secret_id) = approle(&admin, &policy, json!({})).await;

    let source = approle_source(&admin, &mount, &auth_mount, &role_id, &secret_id);
    source.resolve().await.unwrap();
    admin
        .post(
            &format!("sys/leases/revoke-prefix/auth/{auth_mount}/login"),
            json!({"sync": true}),
        )
        .await;
    let resolved = source.resolve().await.unwrap();

    let contents = logs.contents();
    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert!(contents.contains("logging in again"), "{contents}");
    assert_eq!(count(&contents, "logged in to Vault"), 2, "{contents}");
    assert_no_leak(None, &source, &[&secret_id, &role_id, &admin.token]);
}

#[tokio::test]
async fn static_token_is_renewed() {
    let logs = capture_logs();
    let admin = shared_server();
    let (mount, policy) = readable_secret(&admin).await;
    let token = admin.token(&[&policy], "3s", true).await;

    let source = VaultSource::builder(&mount, "megallm")
        .environment(environment(&admin.address, &[("VAULT_TOKEN", &token)]))
        .build()
        .unwrap();
    source.resolve().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2300)).await;
    source.resolve().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let resolved = source.resolve().await.unwrap();

    let contents = logs.contents();
    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert!(contents.contains("renewed the Vault token"), "{contents}");
    assert_no_leak(None, &source, &[&token, &admin.token]);
}

#[tokio::test]
async fn expired_static_token_has_own_error() {
    let logs = capture_logs();
    let admin = shared_server();
    let (mount, policy) = readable_secret(&admin).await;
    let token = admin.token(&[&policy], "2s", false).await;

    let source = VaultSource::builder(&mount, "megallm")
        .environment(environment(&admin.address, &[("VAULT_TOKEN", &token)]))
        .build()
        .unwrap();
    source.resolve().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let error = source.resolve().await.unwrap_err();

    assert_eq!(error.kind(), SourceErrorKind::Denied);
    assert!(
        error.message().contains("expired or was revoked"),
        "{error}"
    );
    assert!(
        error.message().contains("environment variable VAULT_TOKEN"),
        "{error}"
    );
    assert!(error.message().contains(&admin.address), "{error}");
    assert_no_leak(Some(&error), &source, &[&token, &admin.token]);
    logs.assert_clean();
}

#[tokio::test]
async fn revoked_static_token_fails_first_resolve() {
    let _logs = capture_logs();
    let admin = shared_server();
    let (mount, policy) = readable_secret(&admin).await;
    let token = admin.token(&[&policy], "1h", true).await;
    admin
        .post("auth/token/revoke", json!({"token": token}))
        .await;

    let source = VaultSource::builder(&mount, "megallm")
        .environment(environment(&admin.address, &[("VAULT_TOKEN", &token)]))
        .build()
        .unwrap();
    let error = source.resolve().await.unwrap_err();

    assert_eq!(error.kind(), SourceErrorKind::Denied);
    assert!(
        error.message().contains("expired or was revoked"),
        "{error}"
    );
    assert_no_leak(Some(&error), &source, &[&token, &admin.token]);
}

#[tokio::test]
async fn changed_token_file_is_picked_up() {
    let logs = capture_logs();
    let admin = shared_server();
    let (mount, policy) = readable_secret(&admin).await;
    let first = admin.token(&[&policy], "1h", true).await;
    let second = admin.token(&[&policy], "1h", true).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &first).unwrap();

    let source = VaultSource::builder(&mount, "megallm")
        .auth(VaultAuth::token_from(SecretRef::File(token_file.clone())))
        .environment(environment(&admin.address, &[]))
        .build()
        .unwrap();
    source.resolve().await.unwrap();
    // A Vault agent rewrites its sink file with a new token and the old one is revoked.
    admin
        .post("auth/token/revoke", json!({"token": first}))
        .await;
    std::fs::write(&token_file, &second).unwrap();
    let resolved = source.resolve().await.unwrap();

    let contents = logs.contents();
    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert!(
        contents.contains("the Vault token changed at its source"),
        "{contents}"
    );
    assert_no_leak(None, &source, &[&first, &second, &admin.token]);
}
