//! Path forms and the classification of 404 and 403 responses, against OpenBao.
#![cfg(feature = "vault")]

mod common;
mod vault_support;

use common::{CANARY, capture_logs};
use megallm_auth::{KeySource, KvVersion, SourceErrorKind, VaultSource};
use serde_json::json;
use vault_support::{Admin, assert_no_leak, environment, shared_server, unique};

/// Creates a KV v2 mount named `secret-...` with the canary at `megallm`.
async fn kv2_with_secret(admin: &Admin) -> String {
    let mount = unique("secret");
    admin.enable_kv(&mount, 2).await;
    admin
        .write(&mount, 2, "megallm", json!({"api_key": CANARY}))
        .await;
    mount
}

#[tokio::test]
async fn path_forms_resolve_same_secret() {
    let _logs = capture_logs();
    let admin = shared_server();
    let mount = kv2_with_secret(&admin).await;

    let forms = [
        "megallm".to_owned(),
        "data/megallm".to_owned(),
        format!("{mount}/data/megallm"),
        format!("/v1/{mount}/data/megallm"),
    ];
    for path in &forms {
        let source = VaultSource::builder(&mount, path)
            .environment(environment(
                &admin.address,
                &[("VAULT_TOKEN", &admin.token)],
            ))
            .build()
            .unwrap();
        assert_eq!(
            source.label(),
            format!("vault:{mount}/megallm#api_key"),
            "{path}"
        );
        let resolved = source.resolve().await.unwrap();
        assert_eq!(resolved.key.expose_secret(), CANARY, "{path}");
        assert_no_leak(None, &source, &[&admin.token]);
    }
}

#[tokio::test]
async fn ambiguous_path_is_rejected_with_hint() {
    let admin = shared_server();
    let cases = [
        ("secret/megallm", "write path = \"megallm\""),
        ("metadata/megallm", "write path = \"megallm\""),
        ("/v1/other/data/megallm", "another mount"),
    ];
    for (path, hint) in cases {
        let error = VaultSource::builder("secret", path)
            .environment(environment(&admin.address, &[]))
            .build()
            .unwrap_err();
        assert_eq!(error.kind(), SourceErrorKind::Misconfigured, "{path}");
        assert!(error.message().contains(hint), "{path}: {error}");
    }
}

#[tokio::test]
async fn missing_secret_is_not_found() {
    let _logs = capture_logs();
    let admin = shared_server();
    let mount = kv2_with_secret(&admin).await;

    let source = VaultSource::builder(&mount, "absent")
        .kv_version(KvVersion::V2)
        .environment(environment(
            &admin.address,
            &[("VAULT_TOKEN", &admin.token)],
        ))
        .build()
        .unwrap();
    let error = source.resolve().await.unwrap_err();

    assert_eq!(error.kind(), SourceErrorKind::NotFound);
    assert!(
        error
            .message()
            .contains(&format!("no secret at {mount}/data/absent")),
        "{error}"
    );
    assert!(error.message().contains("bao kv put"), "{error}");
    assert_no_leak(Some(&error), &source, &[&admin.token]);
}

#[tokio::test]
async fn missing_secret_when_required_is_misconfigured() {
    let _logs = capture_logs();
    let admin = shared_server();
    let mount = kv2_with_secret(&admin).await;

    let source = VaultSource::builder(&mount, "absent")
        .required(true)
        .environment(environment(
            &admin.address,
            &[("VAULT_TOKEN", &admin.token)],
        ))
        .build()
        .unwrap();
    let error = source.resolve().await.unwrap_err();

    assert_eq!(error.kind(), SourceErrorKind::Misconfigured);
    assert!(error.message().contains("required"), "{error}");
    assert_no_leak(Some(&error), &source, &[&admin.token]);
}

#[tokio::test]
async fn missing_mount_is_not_found_with_hint() {
    let _logs = capture_logs();
    let admin = shared_server();
    let mount = unique("nomount");

    for version in [None, Some(KvVersion::V1), Some(KvVersion::V2)] {
        let mut builder = VaultSource::builder(&mount, "megallm").environment(environment(
            &admin.address,
            &[("VAULT_TOKEN", &admin.token)],
        ));
        if let Some(version) = version {
            builder = builder.kv_version(version);
        }
        let source = builder.build().unwrap();
        let error = source.resolve().await.unwrap_err();

        assert_eq!(error.kind(), SourceErrorKind::NotFound, "{version:?}");
        assert!(
            error.message().contains(&format!("no mount {mount}/")),
            "{error}"
        );
        assert!(error.message().contains("bao secrets enable"), "{error}");
        assert_no_leak(Some(&error), &source, &[&admin.token]);
    }
}

#[tokio::test]
async fn kv_version_mismatch_has_hint() {
    let _logs = capture_logs();
    let admin = shared_server();
    let v2_mount = kv2_with_secret(&admin).await;
    let v1_mount = unique("kv1");
    admin.enable_kv(&v1_mount, 1).await;
    admin
        .write(&v1_mount, 1, "megallm", json!({"api_key": CANARY}))
        .await;

    let cases = [
        (
            &v2_mount,
            KvVersion::V1,
            "is KV v2 and the source is set to KV v1",
        ),
        (
            &v1_mount,
            KvVersion::V2,
            "is KV v1 and the source is set to KV v2",
        ),
    ];
    for (mount, configured, hint) in cases {
        let source = VaultSource::builder(mount, "megallm")
            .kv_version(configured)
            .environment(environment(
                &admin.address,
                &[("VAULT_TOKEN", &admin.token)],
            ))
            .build()
            .unwrap();
        let error = source.resolve().await.unwrap_err();

        assert_eq!(error.kind(), SourceErrorKind::NotFound, "{mount}");
        assert!(error.message().contains(hint), "{error}");
        assert!(error.message().contains("set kv_version"), "{error}");
        assert_no_leak(Some(&error), &source, &[&admin.token]);
    }
}

#[tokio::test]
async fn denied_read_has_kv2_policy_hint() {
    let logs = capture_logs();
    let admin = shared_server();
    let mount = kv2_with_secret(&admin).await;
    let policy = unique("wrong-path");
    // A common mistake: the KV v1 form of the path in a policy for a KV v2 mount.
    admin
        .policy(
            &policy,
            &format!("path \"{mount}/megallm\" {{ capabilities = [\"read\"] }}"),
        )
        .await;
    let token = admin.token(&[&policy], "1h", true).await;

    let source = VaultSource::builder(&mount, "megallm")
        .kv_version(KvVersion::V2)
        .environment(environment(&admin.address, &[("VAULT_TOKEN", &token)]))
        .build()
        .unwrap();
    let error = source.resolve().await.unwrap_err();

    assert_eq!(error.kind(), SourceErrorKind::Denied);
    let message = error.message();
    assert!(message.contains("permission denied"), "{message}");
    assert!(message.contains(&admin.address), "{message}");
    assert!(
        message.contains(&format!("mount {mount}, path megallm")),
        "{message}"
    );
    assert!(
        message.contains(&format!("path \"{mount}/data/megallm\"")),
        "{message}"
    );
    assert!(
        message.contains("KV v2 policies name the API path with data/"),
        "{message}"
    );
    assert_no_leak(Some(&error), &source, &[&token, &admin.token]);
    logs.assert_clean();
}

/// A token that may read the KV v2 data paths but not `sys/mounts` makes the source try both
/// layouts. A 404 in one and a 403 in the other is a missing secret, not a denied read.
#[tokio::test]
async fn missing_secret_with_narrow_policy() {
    let logs = capture_logs();
    let admin = shared_server();
    let mount = kv2_with_secret(&admin).await;
    let policy = unique("data-only");
    admin
        .policy(
            &policy,
            &format!("path \"{mount}/data/*\" {{ capabilities = [\"read\"] }}"),
        )
        .await;
    let token = admin.token(&[&policy], "1h", true).await;

    let source = VaultSource::builder(&mount, "nosuch")
        .environment(environment(&admin.address, &[("VAULT_TOKEN", &token)]))
        .build()
        .unwrap();
    let error = source.resolve().await.unwrap_err();

    assert_eq!(error.kind(), SourceErrorKind::NotFound);
    let message = error.message();
    assert!(
        message.contains(&format!("no secret at {mount}/data/nosuch (KV v2)")),
        "{message}"
    );
    assert!(message.contains("set kv_version = 2"), "{message}");
    assert_no_leak(Some(&error), &source, &[&token, &admin.token]);
    logs.assert_clean();
}

#[tokio::test]
async fn denied_read_has_kv1_policy_hint() {
    let _logs = capture_logs();
    let admin = shared_server();
    let mount = unique("kv1");
    admin.enable_kv(&mount, 1).await;
    admin
        .write(&mount, 1, "megallm", json!({"api_key": CANARY}))
        .await;
    let policy = unique("nothing");
    admin
        .policy(&policy, "path \"nothing/*\" { capabilities = [\"read\"] }")
        .await;
    let token = admin.token(&[&policy], "1h", true).await;

    let source = VaultSource::builder(&mount, "megallm")
        .kv_version(KvVersion::V1)
        .environment(environment(&admin.address, &[("VAULT_TOKEN", &token)]))
        .build()
        .unwrap();
    let error = source.resolve().await.unwrap_err();

    assert_eq!(error.kind(), SourceErrorKind::Denied);
    assert!(
        error
            .message()
            .contains(&format!("path \"{mount}/megallm\" {{ capabilities")),
        "{error}"
    );
    assert_no_leak(Some(&error), &source, &[&token, &admin.token]);
}

#[tokio::test]
async fn missing_token_is_misconfigured() {
    let admin = shared_server();
    let home = tempfile::tempdir().unwrap();
    let source = VaultSource::builder("secret", "megallm")
        .environment(environment(
            &admin.address,
            &[("HOME", home.path().to_str().unwrap())],
        ))
        .build()
        .unwrap();
    let error = source.resolve().await.unwrap_err();

    assert_eq!(error.kind(), SourceErrorKind::Misconfigured);
    assert!(error.message().contains("no Vault token"), "{error}");
    assert!(error.message().contains("VAULT_TOKEN"), "{error}");
}

#[tokio::test]
async fn token_file_in_home_is_used() {
    let _logs = capture_logs();
    let admin = shared_server();
    let mount = kv2_with_secret(&admin).await;
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join(".vault-token"),
        format!("{}\n", admin.token),
    )
    .unwrap();

    let source = VaultSource::builder(&mount, "megallm")
        .environment(environment(
            &admin.address,
            &[("HOME", home.path().to_str().unwrap())],
        ))
        .build()
        .unwrap();
    let resolved = source.resolve().await.unwrap();

    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert_no_leak(None, &source, &[&admin.token]);
}
