//! KV v1 and v2 reads against OpenBao: field selection, versions and KV version detection.
#![cfg(feature = "vault")]

mod common;
mod vault_support;

use common::{CANARY, CANARY_ROTATED, capture_logs};
use megallm_auth::{KeyPolicy, KeySource, KvVersion, SourceErrorKind, SourceKind, VaultSource};
use serde_json::json;
use vault_support::{assert_no_leak, environment, shared_server, unique};

#[tokio::test]
async fn kv2_read_returns_key_and_version() {
    let _logs = capture_logs();
    let admin = shared_server();
    let mount = unique("kv2");
    admin.enable_kv(&mount, 2).await;
    admin
        .write(&mount, 2, "megallm", json!({"api_key": CANARY}))
        .await;

    let source = VaultSource::builder(&mount, "megallm")
        .kv_version(KvVersion::V2)
        .environment(environment(
            &admin.address,
            &[("VAULT_TOKEN", &admin.token)],
        ))
        .build()
        .unwrap();
    let resolved = source.resolve().await.unwrap();

    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert_eq!(resolved.label, format!("vault:{mount}/megallm#api_key"));
    assert_eq!(resolved.kind, SourceKind::Vault);
    assert_eq!(resolved.version.as_deref(), Some("1"));
    assert_eq!(source.kind(), SourceKind::Vault);
    assert_no_leak(None, &source, &[&admin.token]);
}

#[tokio::test]
async fn kv2_rotation_changes_version() {
    let _logs = capture_logs();
    let admin = shared_server();
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
    let first = source.resolve().await.unwrap();

    let written = admin
        .write(&mount, 2, "megallm", json!({"api_key": CANARY_ROTATED}))
        .await;
    let second = source.resolve().await.unwrap();

    assert_eq!(first.version.as_deref(), Some("1"));
    assert_eq!(written, Some(2));
    assert_eq!(second.version.as_deref(), Some("2"));
    assert_eq!(second.key.expose_secret(), CANARY_ROTATED);
    assert_ne!(first.key.fingerprint(), second.key.fingerprint());
    assert_no_leak(None, &source, &[&admin.token]);
}

#[tokio::test]
async fn kv1_read_has_no_version() {
    let _logs = capture_logs();
    let admin = shared_server();
    let mount = unique("kv1");
    admin.enable_kv(&mount, 1).await;
    admin
        .write(&mount, 1, "team/megallm", json!({"api_key": CANARY}))
        .await;

    let source = VaultSource::builder(&mount, "team/megallm")
        .kv_version(KvVersion::V1)
        .environment(environment(
            &admin.address,
            &[("VAULT_TOKEN", &admin.token)],
        ))
        .build()
        .unwrap();
    let resolved = source.resolve().await.unwrap();

    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert_eq!(resolved.version, None);
    assert_no_leak(None, &source, &[&admin.token]);
}

#[tokio::test]
async fn field_selects_other_field() {
    let _logs = capture_logs();
    let admin = shared_server();
    let mount = unique("kv2");
    admin.enable_kv(&mount, 2).await;
    admin
        .write(
            &mount,
            2,
            "megallm",
            json!({"api_key": CANARY_ROTATED, "staging_key": CANARY}),
        )
        .await;

    let source = VaultSource::builder(&mount, "megallm")
        .field("staging_key")
        .environment(environment(
            &admin.address,
            &[("VAULT_TOKEN", &admin.token)],
        ))
        .build()
        .unwrap();
    let resolved = source.resolve().await.unwrap();

    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert_eq!(resolved.label, format!("vault:{mount}/megallm#staging_key"));
    assert_no_leak(None, &source, &[&admin.token]);
}

#[tokio::test]
async fn missing_field_lists_field_names() {
    let logs = capture_logs();
    let admin = shared_server();
    let mount = unique("kv2");
    admin.enable_kv(&mount, 2).await;
    admin
        .write(
            &mount,
            2,
            "megallm",
            json!({"key": CANARY, "owner": "team-a"}),
        )
        .await;

    let source = VaultSource::builder(&mount, "megallm")
        .environment(environment(
            &admin.address,
            &[("VAULT_TOKEN", &admin.token)],
        ))
        .build()
        .unwrap();
    let error = source.resolve().await.unwrap_err();

    assert_eq!(error.kind(), SourceErrorKind::Misconfigured);
    assert!(error.message().contains("no field \"api_key\""), "{error}");
    assert!(error.message().contains("\"key\", \"owner\""), "{error}");
    assert!(!error.to_string().contains("team-a"), "{error}");
    assert_no_leak(Some(&error), &source, &[&admin.token]);
    logs.assert_clean();
}

#[tokio::test]
async fn malformed_key_is_invalid() {
    let _logs = capture_logs();
    let admin = shared_server();
    let mount = unique("kv2");
    admin.enable_kv(&mount, 2).await;
    admin
        .write(
            &mount,
            2,
            "megallm",
            json!({"api_key": format!("Bearer {CANARY}")}),
        )
        .await;

    let source = VaultSource::builder(&mount, "megallm")
        .environment(environment(
            &admin.address,
            &[("VAULT_TOKEN", &admin.token)],
        ))
        .build()
        .unwrap();
    let error = source.resolve().await.unwrap_err();

    assert_eq!(error.kind(), SourceErrorKind::InvalidKey);
    assert_eq!(error.label(), format!("vault:{mount}/megallm#api_key"));
    assert_no_leak(Some(&error), &source, &[&admin.token]);
}

#[tokio::test]
async fn detection_reads_sys_mounts() {
    let logs = capture_logs();
    let admin = shared_server();
    let v1_mount = unique("kv1");
    let v2_mount = unique("kv2");
    admin.enable_kv(&v1_mount, 1).await;
    admin.enable_kv(&v2_mount, 2).await;
    admin
        .write(&v1_mount, 1, "megallm", json!({"api_key": CANARY}))
        .await;
    admin
        .write(&v2_mount, 2, "megallm", json!({"api_key": CANARY}))
        .await;

    for (mount, version) in [(&v1_mount, None), (&v2_mount, Some("1"))] {
        let source = VaultSource::builder(mount, "megallm")
            .environment(environment(
                &admin.address,
                &[("VAULT_TOKEN", &admin.token)],
            ))
            .build()
            .unwrap();
        let resolved = source.resolve().await.unwrap();
        assert_eq!(resolved.key.expose_secret(), CANARY, "{mount}");
        assert_eq!(resolved.version.as_deref(), version, "{mount}");
        assert_no_leak(None, &source, &[&admin.token]);
    }
    let contents = logs.contents();
    assert!(contents.contains("kv_version=1"), "{contents}");
    assert!(contents.contains("kv_version=2"), "{contents}");
}

#[tokio::test]
async fn detection_probes_without_sys_mounts() {
    let logs = capture_logs();
    let admin = shared_server();
    let v1_mount = unique("kv1");
    let v2_mount = unique("kv2");
    admin.enable_kv(&v1_mount, 1).await;
    admin.enable_kv(&v2_mount, 2).await;
    admin
        .write(&v1_mount, 1, "megallm", json!({"api_key": CANARY}))
        .await;
    admin
        .write(&v2_mount, 2, "megallm", json!({"api_key": CANARY}))
        .await;
    let policy = unique("read-only");
    admin
        .policy(
            &policy,
            &format!(
                "path \"{v1_mount}/megallm\" {{ capabilities = [\"read\"] }}\n\
                 path \"{v2_mount}/data/megallm\" {{ capabilities = [\"read\"] }}"
            ),
        )
        .await;
    let token = admin.token(&[&policy], "1h", true).await;

    for (mount, version) in [(&v1_mount, None), (&v2_mount, Some("1"))] {
        let source = VaultSource::builder(mount, "megallm")
            .environment(environment(&admin.address, &[("VAULT_TOKEN", &token)]))
            .build()
            .unwrap();
        let first = source.resolve().await.unwrap();
        let second = source.resolve().await.unwrap();
        assert_eq!(first.key.expose_secret(), CANARY, "{mount}");
        assert_eq!(first.version.as_deref(), version, "{mount}");
        assert_eq!(second.version.as_deref(), version, "{mount}");
        assert_no_leak(None, &source, &[&token, &admin.token]);
    }
    let contents = logs.contents();
    assert!(contents.contains("cannot read sys/mounts"), "{contents}");
}

#[tokio::test]
async fn key_policy_applies_to_prefix() {
    let _logs = capture_logs();
    let admin = shared_server();
    let mount = unique("kv2");
    admin.enable_kv(&mount, 2).await;
    let unprefixed = "TESTKEY0000000000";
    admin
        .write(&mount, 2, "megallm", json!({"api_key": unprefixed}))
        .await;

    let build = |policy| {
        VaultSource::builder(&mount, "megallm")
            .policy(policy)
            .environment(environment(
                &admin.address,
                &[("VAULT_TOKEN", &admin.token)],
            ))
            .build()
            .unwrap()
    };
    let strict = build(KeyPolicy::Strict);
    let error = strict.resolve().await.unwrap_err();
    let off = build(KeyPolicy::Off);
    let resolved = off.resolve().await.unwrap();

    assert_eq!(error.kind(), SourceErrorKind::InvalidKey);
    assert_eq!(resolved.key.expose_secret(), unprefixed);
    assert_no_leak(Some(&error), &strict, &[&admin.token]);
    assert_no_leak(None, &off, &[&admin.token]);
}
