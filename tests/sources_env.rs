//! EnvSource and EnvFileSource with injected environments and real files.

mod common;

use common::sources::{assert_error, bearer};

use std::error::Error as _;
use std::fs;

use common::{CANARY, assert_no_canary, capture_logs};
use megallm_auth::{
    EnvFileSource, EnvSource, Environment, InvalidKey, KeyProblem, KeySource, SourceErrorKind,
    SourceKind,
};

const KEY_VAR: &str = "MEGALLM_API_KEY";
const FILE_VAR: &str = "MEGALLM_API_KEY_FILE";

fn env_source(pairs: &[(&str, &str)]) -> EnvSource {
    EnvSource::new(KEY_VAR).with_environment(Environment::from_pairs(pairs.iter().copied()))
}

fn env_file_source(pairs: &[(&str, &str)]) -> EnvFileSource {
    EnvFileSource::new(FILE_VAR).with_environment(Environment::from_pairs(pairs.iter().copied()))
}

#[tokio::test]
async fn env_value_resolves_key() {
    let logs = capture_logs();
    let source = env_source(&[(KEY_VAR, CANARY)]);

    let resolved = source.resolve().await.unwrap();

    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert_eq!(resolved.label, "env:MEGALLM_API_KEY");
    assert_eq!(resolved.kind, SourceKind::Env);
    assert_eq!(source.kind(), SourceKind::Env);
    assert_eq!(bearer(&resolved.key), format!("Bearer {CANARY}"));
    assert_no_canary("source Debug", &format!("{source:?}"));
    assert_no_canary("resolved Debug", &format!("{resolved:?}"));
    logs.assert_clean();
}

#[tokio::test]
async fn quoted_env_value_strips_with_warning() {
    let logs = capture_logs();
    let quoted = format!("\"{CANARY}\"");
    assert_eq!(quoted.len(), 27);

    let resolved = env_source(&[(KEY_VAR, &quoted)]).resolve().await.unwrap();

    assert_eq!(resolved.key.expose_secret(), CANARY);
    let captured = logs.contents();
    assert!(captured.contains("WARN"), "{captured}");
    assert!(captured.contains("env:MEGALLM_API_KEY"), "{captured}");
    assert!(captured.contains("quotes"), "{captured}");
    logs.assert_clean();
}

#[tokio::test]
async fn unset_and_empty_are_not_found() {
    let logs = capture_logs();

    let unset = env_source(&[]).resolve().await.unwrap_err();
    assert_error(
        &unset,
        SourceErrorKind::NotFound,
        "env:MEGALLM_API_KEY",
        &["MEGALLM_API_KEY is not set"],
    );

    let empty = env_source(&[(KEY_VAR, "")]).resolve().await.unwrap_err();
    assert_error(
        &empty,
        SourceErrorKind::NotFound,
        "env:MEGALLM_API_KEY",
        &["set but empty"],
    );
    logs.assert_clean();
}

#[tokio::test]
async fn blank_env_var_is_misconfigured() {
    let logs = capture_logs();
    for blank in ["   ", "\t", " \r\n"] {
        let error = env_source(&[(KEY_VAR, blank)]).resolve().await.unwrap_err();
        assert_error(
            &error,
            SourceErrorKind::Misconfigured,
            "env:MEGALLM_API_KEY",
            &["MEGALLM_API_KEY is blank"],
        );
    }
    logs.assert_clean();
}

#[tokio::test]
async fn both_variables_set_is_misconfigured() {
    let logs = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    fs::write(&path, format!("{CANARY}\n")).unwrap();
    let pairs = [(KEY_VAR, CANARY), (FILE_VAR, path.to_str().unwrap())];
    let expected = "set only one of MEGALLM_API_KEY and MEGALLM_API_KEY_FILE";

    let from_env = env_source(&pairs).resolve().await.unwrap_err();
    assert_error(
        &from_env,
        SourceErrorKind::Misconfigured,
        "env:MEGALLM_API_KEY",
        &[expected],
    );

    let from_file = env_file_source(&pairs).resolve().await.unwrap_err();
    assert_error(
        &from_file,
        SourceErrorKind::Misconfigured,
        "env-file:MEGALLM_API_KEY_FILE",
        &[expected],
    );
    logs.assert_clean();
}

#[tokio::test]
async fn empty_partner_variable_does_not_conflict() {
    let logs = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    fs::write(&path, format!("{CANARY}\n")).unwrap();

    let from_env = env_source(&[(KEY_VAR, CANARY), (FILE_VAR, "")])
        .resolve()
        .await
        .unwrap();
    assert_eq!(from_env.key.expose_secret(), CANARY);

    let from_file = env_file_source(&[(KEY_VAR, ""), (FILE_VAR, path.to_str().unwrap())])
        .resolve()
        .await
        .unwrap();
    assert_eq!(from_file.key.expose_secret(), CANARY);
    logs.assert_clean();
}

#[tokio::test]
async fn malformed_env_key_names_variable() {
    let logs = capture_logs();
    let cases = [
        ("Bearer sk-mega-TESTKEY0000000000", KeyProblem::BearerPrefix),
        (
            "sk-mega-TEST KEY000000000",
            KeyProblem::InnerWhitespace { position: 12 },
        ),
        (
            "sk-mega-TESTKEY0000000000\nx",
            KeyProblem::ControlCharacter { position: 25 },
        ),
    ];

    for (value, problem) in cases {
        let error = env_source(&[(KEY_VAR, value)]).resolve().await.unwrap_err();
        assert_error(
            &error,
            SourceErrorKind::InvalidKey,
            "env:MEGALLM_API_KEY",
            &[],
        );
        let invalid = error
            .source()
            .and_then(|cause| cause.downcast_ref::<InvalidKey>());
        assert_eq!(invalid.map(|invalid| invalid.problem), Some(problem));
    }
    logs.assert_clean();
}

// The only way to get a value that is not Unicode is the process environment. nextest runs
// each test in its own process, and the variable name is used by no other test.
#[cfg(unix)]
#[tokio::test]
async fn not_unicode_value_names_variable_only() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    let logs = capture_logs();
    let name = "MEGALLM_NON_UNICODE_VAR";
    let value = OsStr::from_bytes(b"sk-mega-TEST\xffKEY0000000000");
    // SAFETY: no other thread of this test process reads or writes the environment here.
    unsafe { std::env::set_var(name, value) };

    let error = EnvSource::new(name).resolve().await.unwrap_err();
    assert_error(
        &error,
        SourceErrorKind::Misconfigured,
        "env:MEGALLM_NON_UNICODE_VAR",
        &["MEGALLM_NON_UNICODE_VAR is set to bytes that are not valid Unicode"],
    );

    let file_name = "MEGALLM_NON_UNICODE_PATH";
    // SAFETY: as above.
    unsafe { std::env::set_var(file_name, value) };
    let error = EnvFileSource::new(file_name).resolve().await.unwrap_err();
    assert_error(
        &error,
        SourceErrorKind::Misconfigured,
        "env-file:MEGALLM_NON_UNICODE_PATH",
        &["not valid Unicode"],
    );
    logs.assert_clean();
}

#[tokio::test]
async fn env_file_resolves_key() {
    let logs = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let contents: [&[u8]; 3] = [
        b"sk-mega-TESTKEY0000000000\n",
        b"sk-mega-TESTKEY0000000000\n\n",
        b"sk-mega-TESTKEY0000000000\r\n",
    ];

    for (index, content) in contents.iter().enumerate() {
        let path = dir.path().join(format!("key{index}"));
        fs::write(&path, content).unwrap();
        let source = env_file_source(&[(FILE_VAR, path.to_str().unwrap())]);

        let resolved = source.resolve().await.unwrap();

        assert_eq!(resolved.key.expose_secret(), CANARY, "content {index}");
        assert_eq!(resolved.label, "env-file:MEGALLM_API_KEY_FILE");
        assert_eq!(resolved.kind, SourceKind::EnvFile);
        assert_eq!(bearer(&resolved.key), format!("Bearer {CANARY}"));
    }
    logs.assert_clean();
}

#[tokio::test]
async fn env_file_unset_is_not_found() {
    let logs = capture_logs();
    let label = "env-file:MEGALLM_API_KEY_FILE";

    let unset = env_file_source(&[]).resolve().await.unwrap_err();
    assert_error(
        &unset,
        SourceErrorKind::NotFound,
        label,
        &["MEGALLM_API_KEY_FILE is not set"],
    );

    let empty = env_file_source(&[(FILE_VAR, "")])
        .resolve()
        .await
        .unwrap_err();
    assert_error(&empty, SourceErrorKind::NotFound, label, &["set but empty"]);

    let blank = env_file_source(&[(FILE_VAR, "  ")])
        .resolve()
        .await
        .unwrap_err();
    assert_error(
        &blank,
        SourceErrorKind::Misconfigured,
        label,
        &["MEGALLM_API_KEY_FILE is blank"],
    );
    logs.assert_clean();
}

#[tokio::test]
async fn env_file_errors_name_variable_and_path() {
    let logs = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let label = "env-file:MEGALLM_API_KEY_FILE";

    let missing = dir.path().join("absent");
    let error = env_file_source(&[(FILE_VAR, missing.to_str().unwrap())])
        .resolve()
        .await
        .unwrap_err();
    let named = format!(
        "the file {} named by MEGALLM_API_KEY_FILE",
        missing.display()
    );
    assert_error(
        &error,
        SourceErrorKind::Misconfigured,
        label,
        &[&named, "does not exist"],
    );

    let directory = dir.path().join("dir");
    fs::create_dir(&directory).unwrap();
    let error = env_file_source(&[(FILE_VAR, directory.to_str().unwrap())])
        .resolve()
        .await
        .unwrap_err();
    let named = format!(
        "the file {} named by MEGALLM_API_KEY_FILE",
        directory.display()
    );
    assert_error(
        &error,
        SourceErrorKind::Misconfigured,
        label,
        &[&named, "is a directory"],
    );

    let large = dir.path().join("large");
    fs::write(&large, format!("{CANARY}\n")).unwrap();
    let error = env_file_source(&[(FILE_VAR, large.to_str().unwrap())])
        .with_max_size(10)
        .resolve()
        .await
        .unwrap_err();
    let named = format!("the file {} named by MEGALLM_API_KEY_FILE", large.display());
    assert_error(
        &error,
        SourceErrorKind::Misconfigured,
        label,
        &[&named, "limit of 10 bytes"],
    );

    let malformed = dir.path().join("malformed");
    fs::write(&malformed, b"sk-mega-TEST KEY000000000\n").unwrap();
    let error = env_file_source(&[(FILE_VAR, malformed.to_str().unwrap())])
        .resolve()
        .await
        .unwrap_err();
    let named = format!(
        "the file {} named by MEGALLM_API_KEY_FILE",
        malformed.display()
    );
    assert_error(
        &error,
        SourceErrorKind::InvalidKey,
        label,
        &[&named, "whitespace"],
    );
    logs.assert_clean();
}

#[tokio::test]
async fn env_file_without_suffix_has_no_partner() {
    let logs = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    fs::write(&path, format!("{CANARY}\n")).unwrap();
    let environment =
        Environment::from_pairs([("KEY_PATH", path.to_str().unwrap()), ("KEY", CANARY)]);

    let resolved = EnvFileSource::new("KEY_PATH")
        .with_environment(environment)
        .resolve()
        .await
        .unwrap();

    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert_eq!(resolved.label, "env-file:KEY_PATH");
    logs.assert_clean();
}

#[test]
fn env_source_debug_names_only() {
    let source = env_source(&[(KEY_VAR, CANARY)]);
    let debug = format!("{source:?}");
    assert!(debug.contains("MEGALLM_API_KEY"), "{debug}");
    assert_no_canary("EnvSource Debug", &debug);

    let file_source = env_file_source(&[(FILE_VAR, "/run/secrets/x"), (KEY_VAR, CANARY)]);
    assert_no_canary("EnvFileSource Debug", &format!("{file_source:?}"));
}
