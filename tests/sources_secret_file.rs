//! SecretFileSource against real files, directories and symlinks in temporary directories.

mod common;

use common::sources::{assert_error, bearer};

use std::error::Error as _;
use std::fs;
use std::path::Path;

use common::{CANARY, CANARY_ROTATED, assert_no_canary, capture_logs};
use megallm_auth::{
    DEFAULT_MAX_SECRET_FILE_SIZE, InvalidKey, KeyProblem, KeySource, SecretFileSource,
    SourceErrorKind, SourceKind,
};

fn label_of(path: &Path) -> String {
    format!("file:{}", path.display())
}

#[tokio::test]
async fn line_endings_resolve_to_key() {
    let logs = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let contents: [&[u8]; 5] = [
        b"sk-mega-TESTKEY0000000000\n",
        b"sk-mega-TESTKEY0000000000\n\n",
        b"sk-mega-TESTKEY0000000000\r\n",
        b"sk-mega-TESTKEY0000000000\r",
        b"\xEF\xBB\xBFsk-mega-TESTKEY0000000000\n",
    ];

    for (index, content) in contents.iter().enumerate() {
        let path = dir.path().join(format!("secret{index}"));
        fs::write(&path, content).unwrap();
        let source = SecretFileSource::new(&path);

        let resolved = source.resolve().await.unwrap();
        assert_eq!(resolved.key.expose_secret(), CANARY, "content {index}");
        assert_eq!(resolved.label, label_of(&path));
        assert_eq!(resolved.kind, SourceKind::SecretFile);
        assert_eq!(bearer(&resolved.key), format!("Bearer {CANARY}"));
        assert_no_canary("source Debug", &format!("{source:?}"));
        assert_no_canary("resolved Debug", &format!("{resolved:?}"));
    }
    logs.assert_clean();
}

#[tokio::test]
async fn quoted_file_strips_with_warning() {
    let logs = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quoted");
    fs::write(&path, b"'sk-mega-TESTKEY0000000000'\n").unwrap();

    let resolved = SecretFileSource::new(&path).resolve().await.unwrap();

    assert_eq!(resolved.key.expose_secret(), CANARY);
    let captured = logs.contents();
    assert!(captured.contains("WARN"), "{captured}");
    assert!(captured.contains(&label_of(&path)), "{captured}");
    assert!(captured.contains("quotes"), "{captured}");
    logs.assert_clean();
}

#[cfg(unix)]
#[tokio::test]
async fn symlink_swap_returns_new_key() {
    let logs = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first");
    let second = dir.path().join("second");
    fs::write(&first, format!("{CANARY}\n")).unwrap();
    fs::write(&second, format!("{CANARY_ROTATED}\n")).unwrap();
    let link = dir.path().join("current");
    std::os::unix::fs::symlink(&first, &link).unwrap();
    let source = SecretFileSource::new(&link);

    let before = source.resolve().await.unwrap();
    assert_eq!(before.key.expose_secret(), CANARY);

    // Repoint atomically, the way a deployment tool does: a new link renamed over the old.
    let staging = dir.path().join("current.tmp");
    std::os::unix::fs::symlink(&second, &staging).unwrap();
    fs::rename(&staging, &link).unwrap();
    let after = source.resolve().await.unwrap();
    assert_eq!(after.key.expose_secret(), CANARY_ROTATED);

    // And back, so a cached first read cannot explain the result.
    fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&first, &link).unwrap();
    let again = source.resolve().await.unwrap();
    assert_eq!(again.key.expose_secret(), CANARY);
    logs.assert_clean();
}

#[cfg(unix)]
#[tokio::test]
async fn kubernetes_layout_resolves_and_rotates() {
    let logs = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();

    // The layout kubelet writes for a secret volume: a timestamped directory, `..data`
    // pointing at it, and each key a symlink through `..data`.
    let old_version = root.join("..2025_01_01.1");
    fs::create_dir(&old_version).unwrap();
    fs::write(old_version.join("api_key"), format!("{CANARY}\n")).unwrap();
    std::os::unix::fs::symlink("..2025_01_01.1", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/api_key", root.join("api_key")).unwrap();
    let source = SecretFileSource::new(root.join("api_key"));

    let before = source.resolve().await.unwrap();
    assert_eq!(before.key.expose_secret(), CANARY);

    // Rotation: new directory, `..data_tmp` pointing at it, renamed over `..data`, old removed.
    let new_version = root.join("..2025_01_02.2");
    fs::create_dir(&new_version).unwrap();
    fs::write(new_version.join("api_key"), format!("{CANARY_ROTATED}\n")).unwrap();
    std::os::unix::fs::symlink("..2025_01_02.2", root.join("..data_tmp")).unwrap();
    fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    fs::remove_dir_all(&old_version).unwrap();

    let after = source.resolve().await.unwrap();
    assert_eq!(after.key.expose_secret(), CANARY_ROTATED);
    assert_eq!(after.label, label_of(&root.join("api_key")));
    logs.assert_clean();
}

#[tokio::test]
async fn missing_file_is_not_found() {
    let logs = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent");
    let label = label_of(&path);

    let error = SecretFileSource::new(&path).resolve().await.unwrap_err();

    assert_error(
        &error,
        SourceErrorKind::NotFound,
        &label,
        &["does not exist", &path.display().to_string()],
    );
    logs.assert_clean();
}

#[tokio::test]
async fn missing_parent_is_not_found() {
    let logs = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("megallm_api_key");
    let label = label_of(&path);

    let error = SecretFileSource::new(&path).resolve().await.unwrap_err();

    assert_error(
        &error,
        SourceErrorKind::NotFound,
        &label,
        &["does not exist"],
    );
    logs.assert_clean();
}

#[cfg(unix)]
#[tokio::test]
async fn dangling_symlink_is_not_found() {
    let logs = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(dir.path().join("gone"), &link).unwrap();

    let error = SecretFileSource::new(&link).resolve().await.unwrap_err();

    assert_error(
        &error,
        SourceErrorKind::NotFound,
        &label_of(&link),
        &["does not exist"],
    );
    logs.assert_clean();
}

#[tokio::test]
async fn file_as_parent_is_misconfigured() {
    let logs = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    fs::write(&file, b"x").unwrap();
    let path = file.join("megallm_api_key");

    let error = SecretFileSource::new(&path).resolve().await.unwrap_err();

    assert_error(
        &error,
        SourceErrorKind::Misconfigured,
        &label_of(&path),
        &["not a directory"],
    );
    logs.assert_clean();
}

#[tokio::test]
async fn directory_is_misconfigured() {
    let logs = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("megallm_api_key");
    fs::create_dir(&path).unwrap();

    let error = SecretFileSource::new(&path).resolve().await.unwrap_err();

    assert_error(
        &error,
        SourceErrorKind::Misconfigured,
        &label_of(&path),
        &["is a directory", &path.display().to_string()],
    );
    logs.assert_clean();
}

#[tokio::test]
async fn oversized_file_names_limit() {
    let logs = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("large");
    let mut content = format!("{CANARY}\n").into_bytes();
    content.resize(DEFAULT_MAX_SECRET_FILE_SIZE as usize + 1, b'\n');
    fs::write(&path, &content).unwrap();

    let error = SecretFileSource::new(&path).resolve().await.unwrap_err();
    assert_error(
        &error,
        SourceErrorKind::Misconfigured,
        &label_of(&path),
        &["limit of 4096 bytes"],
    );

    // Exactly at the limit is accepted: trailing newlines are trimmed.
    content.truncate(DEFAULT_MAX_SECRET_FILE_SIZE as usize);
    fs::write(&path, &content).unwrap();
    let resolved = SecretFileSource::new(&path).resolve().await.unwrap();
    assert_eq!(resolved.key.expose_secret(), CANARY);

    // A custom limit applies.
    let error = SecretFileSource::new(&path)
        .with_max_size(16)
        .resolve()
        .await
        .unwrap_err();
    assert_error(
        &error,
        SourceErrorKind::Misconfigured,
        &label_of(&path),
        &["limit of 16 bytes"],
    );
    logs.assert_clean();
}

#[tokio::test]
async fn utf16_file_is_not_utf8() {
    let logs = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("utf16");
    // UTF-16LE with BOM, as some Windows editors save it.
    let mut content = vec![0xFF, 0xFE];
    for unit in format!("{CANARY}\r\n").encode_utf16() {
        content.extend_from_slice(&unit.to_le_bytes());
    }
    fs::write(&path, &content).unwrap();
    let label = label_of(&path);

    let error = SecretFileSource::new(&path).resolve().await.unwrap_err();

    assert_error(
        &error,
        SourceErrorKind::InvalidKey,
        &label,
        &["not valid UTF-8", "UTF-8 text"],
    );
    let invalid = error
        .source()
        .and_then(|cause| cause.downcast_ref::<InvalidKey>())
        .expect("the cause is the InvalidKey");
    assert_eq!(invalid.problem, KeyProblem::NotUtf8);
    assert_eq!(invalid.source_label, label);
    logs.assert_clean();
}

#[tokio::test]
async fn malformed_key_names_path_only() {
    let logs = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[u8], KeyProblem); 3] = [
        (
            b"sk-mega-TEST KEY000000000\n",
            KeyProblem::InnerWhitespace { position: 12 },
        ),
        (b"", KeyProblem::Empty),
        (
            b"Bearer sk-mega-TESTKEY0000000000\n",
            KeyProblem::BearerPrefix,
        ),
    ];

    for (index, (content, problem)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("bad{index}"));
        fs::write(&path, content).unwrap();

        let error = SecretFileSource::new(&path).resolve().await.unwrap_err();

        assert_error(&error, SourceErrorKind::InvalidKey, &label_of(&path), &[]);
        let invalid = error
            .source()
            .and_then(|cause| cause.downcast_ref::<InvalidKey>());
        assert_eq!(
            invalid.map(|invalid| invalid.problem),
            Some(problem),
            "case {index}"
        );
    }
    logs.assert_clean();
}

#[tokio::test]
async fn policy_applies_to_file_key() {
    let logs = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway");
    fs::write(&path, b"gateway-issued-1234\n").unwrap();

    let strict = SecretFileSource::new(&path).resolve().await.unwrap_err();
    assert_eq!(strict.kind(), SourceErrorKind::InvalidKey);

    let off = SecretFileSource::new(&path)
        .with_policy(megallm_auth::KeyPolicy::Off)
        .resolve()
        .await
        .unwrap();
    assert_eq!(off.key.expose_secret(), "gateway-issued-1234");
    logs.assert_clean();
}

#[cfg(unix)]
#[test]
fn docker_secret_path_and_label() {
    let source = SecretFileSource::docker("megallm_api_key");
    assert_eq!(source.path(), Path::new("/run/secrets/megallm_api_key"));
    assert_eq!(source.label(), "file:/run/secrets/megallm_api_key");
    assert_eq!(source.kind(), SourceKind::SecretFile);
}
