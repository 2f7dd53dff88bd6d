//! Namespaces against OpenBao 2.7, which supports them: the namespace from the environment
//! and from settings, a login in another namespace, and a 403 that names where it happened.
#![cfg(feature = "vault")]

mod common;
mod vault_support;

use common::{CANARY, capture_logs};
use megallm_auth::{KeySource, SecretRef, SourceErrorKind, VaultAuth, VaultSource};
use serde_json::json;
use vault_support::{Admin, assert_no_leak, environment, shared_server, unique};

/// Creates `<parent>/llm` with a KV v2 mount holding the canary. Returns (parent, namespace,
/// mount).
async fn namespaced_secret(admin: &Admin) -> (String, String, String) {
    let parent = unique("admin");
    admin
        .post(&format!("sys/namespaces/{parent}"), json!({}))
        .await;
    admin
        .in_namespace(&parent)
        .post("sys/namespaces/llm", json!({}))
        .await;
    let namespace = format!("{parent}/llm");
    let mount = unique("secret");
    let inside = admin.in_namespace(&namespace);
    inside.enable_kv(&mount, 2).await;
    inside
        .write(&mount, 2, "megallm", json!({"api_key": CANARY}))
        .await;
    (parent, namespace, mount)
}

#[tokio::test]
async fn namespace_from_environment_is_sent() {
    let _logs = capture_logs();
    let admin = shared_server();
    let (_, namespace, mount) = namespaced_secret(&admin).await;

    let source = VaultSource::builder(&mount, "megallm")
        .environment(environment(
            &admin.address,
            &[
                ("VAULT_TOKEN", &admin.token),
                ("VAULT_NAMESPACE", &namespace),
            ],
        ))
        .build()
        .unwrap();
    let resolved = source.resolve().await.unwrap();

    assert_eq!(source.namespace(), Some(namespace.as_str()));
    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert_no_leak(None, &source, &[&admin.token]);
}

#[tokio::test]
async fn namespace_from_settings_wins() {
    let _logs = capture_logs();
    let admin = shared_server();
    let (_, namespace, mount) = namespaced_secret(&admin).await;

    let source = VaultSource::builder(&mount, "megallm")
        .namespace(&namespace)
        .environment(environment(
            &admin.address,
            &[
                ("VAULT_TOKEN", &admin.token),
                ("VAULT_NAMESPACE", "elsewhere"),
            ],
        ))
        .build()
        .unwrap();
    let resolved = source.resolve().await.unwrap();

    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert_no_leak(None, &source, &[&admin.token]);
}

#[tokio::test]
async fn no_namespace_does_not_find_mount() {
    let _logs = capture_logs();
    let admin = shared_server();
    let (_, _, mount) = namespaced_secret(&admin).await;

    let source = VaultSource::builder(&mount, "megallm")
        .environment(environment(
            &admin.address,
            &[("VAULT_TOKEN", &admin.token)],
        ))
        .build()
        .unwrap();
    let error = source.resolve().await.unwrap_err();

    assert_eq!(error.kind(), SourceErrorKind::NotFound);
    assert!(error.message().contains("(no namespace)"), "{error}");
    assert!(
        error.message().contains("check the mount and namespace"),
        "{error}"
    );
    assert_no_leak(Some(&error), &source, &[&admin.token]);
}

#[tokio::test]
async fn login_uses_its_own_namespace() {
    let logs = capture_logs();
    let admin = shared_server();
    let (parent, namespace, mount) = namespaced_secret(&admin).await;
    let in_parent = admin.in_namespace(&parent);
    let policy = unique("reader");
    // A policy in the parent namespace names child paths relative to itself.
    in_parent
        .policy(
            &policy,
            &format!("path \"llm/{mount}/data/megallm\" {{ capabilities = [\"read\"] }}"),
        )
        .await;
    let auth_mount = unique("approle");
    let (role_id, secret_id) = in_parent
        .approle(&auth_mount, "megallm", json!({"token_policies": [policy]}))
        .await;

    let source = VaultSource::builder(&mount, "megallm")
        .namespace(&namespace)
        .login_namespace(&parent)
        .auth(
            VaultAuth::approle(&role_id, SecretRef::Env("APP_SECRET_ID".into()))
                .with_mount(&auth_mount),
        )
        .environment(environment(
            &admin.address,
            &[("APP_SECRET_ID", &secret_id)],
        ))
        .build()
        .unwrap();
    let resolved = source.resolve().await.unwrap();

    let contents = logs.contents();
    assert_eq!(source.login_namespace(), Some(parent.as_str()));
    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert!(
        contents.contains(&format!("namespace=\"{parent}\"")),
        "{contents}"
    );
    assert_no_leak(None, &source, &[&secret_id, &role_id, &admin.token]);
}

#[tokio::test]
async fn login_in_wrong_namespace_is_denied() {
    let _logs = capture_logs();
    let admin = shared_server();
    let (parent, namespace, mount) = namespaced_secret(&admin).await;
    let auth_mount = unique("approle");
    let (role_id, secret_id) = admin
        .in_namespace(&parent)
        .approle(&auth_mount, "megallm", json!({}))
        .await;

    // The AppRole mount lives in the parent namespace, but the login goes to the child.
    let source = VaultSource::builder(&mount, "megallm")
        .namespace(&namespace)
        .auth(
            VaultAuth::approle(&role_id, SecretRef::Env("APP_SECRET_ID".into()))
                .with_mount(&auth_mount),
        )
        .environment(environment(
            &admin.address,
            &[("APP_SECRET_ID", &secret_id)],
        ))
        .build()
        .unwrap();
    let error = source.resolve().await.unwrap_err();

    // Without a token, OpenBao responds 403 for a login path that does not exist.
    assert_eq!(error.kind(), SourceErrorKind::Denied);
    assert!(
        error.message().contains(&format!("namespace {namespace}")),
        "{error}"
    );
    assert!(
        error.message().contains("enabled in the login namespace"),
        "{error}"
    );
    assert_no_leak(Some(&error), &source, &[&secret_id, &role_id, &admin.token]);
}

#[tokio::test]
async fn denied_in_namespace_names_location() {
    let logs = capture_logs();
    let admin = shared_server();
    let (_, namespace, mount) = namespaced_secret(&admin).await;
    let inside = admin.in_namespace(&namespace);
    let policy = unique("nothing");
    inside
        .policy(&policy, "path \"nothing/*\" { capabilities = [\"read\"] }")
        .await;
    let token = inside.token(&[&policy], "1h", true).await;

    let source = VaultSource::builder(&mount, "megallm")
        .environment(environment(
            &admin.address,
            &[("VAULT_TOKEN", &token), ("VAULT_NAMESPACE", &namespace)],
        ))
        .build()
        .unwrap();
    let error = source.resolve().await.unwrap_err();

    assert_eq!(error.kind(), SourceErrorKind::Denied);
    let message = error.message();
    assert!(
        message.contains(&format!("Vault at {}", admin.address)),
        "{message}"
    );
    assert!(
        message.contains(&format!("namespace {namespace}")),
        "{message}"
    );
    assert!(
        message.contains(&format!("mount {mount}, path megallm")),
        "{message}"
    );
    assert!(
        message.contains(&format!("{mount}/data/megallm")),
        "{message}"
    );
    assert_no_leak(Some(&error), &source, &[&token, &admin.token]);
    logs.assert_clean();
}
