//! KeyProvider over the remote sources: a rotation in moto or OpenBao reaches callers through
//! the refresh interval and through `invalidate`, with the backend's version.
#![cfg(all(feature = "aws", feature = "vault"))]

mod common;
mod vault_support;

use std::time::{Duration, Instant};

use common::moto::{
    REGION, SecretValue, create_secret, moto_endpoint, put_secret_value, unique_name,
};
use common::{CANARY, CANARY_ROTATED, assert_no_canary, capture_logs};
use megallm_auth::{
    AwsSecretsManagerSource, KeyChain, KeyProvider, KeySnapshot, SourceKind, VaultAuth, VaultSource,
};
use serde_json::json;
use std::sync::Arc;

/// Calls `current()` until it returns `expected` or five seconds pass.
async fn wait_for_key(provider: &KeyProvider, expected: &str) -> Arc<KeySnapshot> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let snapshot = provider.current().await.expect("the provider serves a key");
        if snapshot.key().expose_secret() == expected {
            return snapshot;
        }
        assert!(
            Instant::now() < deadline,
            "the provider still serves {} after 5 s",
            snapshot.fingerprint()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn aws_chain(name: &str) -> KeyChain {
    KeyChain::new().with(
        AwsSecretsManagerSource::builder(name)
            .region(REGION)
            .endpoint_url(moto_endpoint())
            .max_attempts(1)
            .build()
            .unwrap(),
    )
}

#[tokio::test]
async fn aws_rotation_reaches_provider() {
    let logs = capture_logs();
    let name = unique_name("provider-refresh");
    let first_version = create_secret(&name, SecretValue::Text(CANARY)).await;
    let provider = KeyProvider::builder(aws_chain(&name))
        .refresh_interval(SourceKind::AwsSecretsManager, Duration::from_millis(200))
        .build()
        .unwrap();

    let before = provider.current().await.unwrap();
    assert_eq!(before.key().expose_secret(), CANARY);
    assert_eq!(before.version(), Some(first_version.as_str()));

    let second_version = put_secret_value(&name, CANARY_ROTATED).await;
    let after = wait_for_key(&provider, CANARY_ROTATED).await;

    assert_eq!(after.version(), Some(second_version.as_str()));
    assert_eq!(after.label(), format!("aws-sm:{name}"));
    assert_no_canary("snapshot Debug", &format!("{after:?}"));
    logs.assert_clean();
}

#[tokio::test]
async fn aws_invalidate_picks_new_version() {
    let logs = capture_logs();
    let name = unique_name("provider-invalidate");
    create_secret(&name, SecretValue::Text(CANARY)).await;
    // A long interval, so only the invalidation can bring the new key.
    let provider = KeyProvider::builder(aws_chain(&name))
        .refresh_interval(SourceKind::AwsSecretsManager, Duration::from_secs(3600))
        .build()
        .unwrap();
    let before = provider.current().await.unwrap();

    let second_version = put_secret_value(&name, CANARY_ROTATED).await;
    let unchanged = provider.current().await.unwrap();
    assert_eq!(unchanged.fingerprint(), before.fingerprint());

    let after = provider.invalidate(before.fingerprint()).await.unwrap();

    assert_eq!(after.key().expose_secret(), CANARY_ROTATED);
    assert_eq!(after.version(), Some(second_version.as_str()));
    logs.assert_clean();
}

#[tokio::test]
async fn vault_rotation_reaches_provider() {
    let logs = capture_logs();
    let admin = vault_support::shared_server();
    let mount = vault_support::unique("provider");
    admin.enable_kv(&mount, 2).await;
    admin
        .write(&mount, 2, "megallm", json!({"api_key": CANARY}))
        .await;
    admin
        .policy(
            &mount,
            &format!("path \"{mount}/data/megallm\" {{ capabilities = [\"read\"] }}"),
        )
        .await;
    let token = admin.token(&[&mount], "10m", true).await;
    let environment = vault_support::environment(&admin.address, &[("VAULT_TOKEN", &token)]);
    let source = VaultSource::builder(&mount, "megallm")
        .environment(environment)
        .auth(VaultAuth::token())
        .build()
        .unwrap();
    let provider = KeyProvider::builder(KeyChain::new().with(source))
        .refresh_interval(SourceKind::Vault, Duration::from_millis(200))
        .build()
        .unwrap();

    let before = provider.current().await.unwrap();
    assert_eq!(before.key().expose_secret(), CANARY);
    assert_eq!(before.version(), Some("1"));

    admin
        .write(&mount, 2, "megallm", json!({"api_key": CANARY_ROTATED}))
        .await;
    let after = wait_for_key(&provider, CANARY_ROTATED).await;

    assert_eq!(after.version(), Some("2"));
    assert_eq!(after.label(), format!("vault:{mount}/megallm#api_key"));
    logs.assert_clean();
}
