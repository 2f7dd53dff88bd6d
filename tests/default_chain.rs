//! The default chain, pointed at temporary directories with `default_chain_in`.

mod common;

use std::error::Error as _;
use std::fs;
use std::path::PathBuf;

use common::{CANARY, CANARY_ROTATED, assert_no_canary, capture_logs};
use megallm_auth::{
    ChainError, Environment, KeyChain, KeyPolicy, Outcome, SourceErrorKind, default_chain,
    default_chain_in,
};

/// A working directory with a `.env` path and a secrets directory, both initially empty.
struct Layout {
    dir: tempfile::TempDir,
}

impl Layout {
    fn new() -> Layout {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("secrets")).unwrap();
        Layout { dir }
    }

    fn dotenv(&self) -> PathBuf {
        self.dir.path().join(".env")
    }

    fn secrets(&self) -> PathBuf {
        self.dir.path().join("secrets")
    }

    fn secret_file(&self) -> PathBuf {
        self.secrets().join("megallm_api_key")
    }

    fn chain(&self, pairs: &[(&str, &str)]) -> KeyChain {
        let environment = Environment::from_pairs(pairs.iter().copied());
        default_chain_in(
            &environment,
            KeyPolicy::Strict,
            &self.dotenv(),
            &self.secrets(),
        )
    }
}

/// Checks that no output of a chain error contains a canary.
#[track_caller]
fn assert_clean_chain_error(error: &ChainError) {
    assert_no_canary("chain error Display", &error.to_string());
    assert_no_canary("chain error Debug", &format!("{error:?}"));
    assert_no_canary("report Display", &error.report().to_string());
    assert_no_canary("report JSON", &error.report().to_json());
    let mut cause = error.source();
    while let Some(inner) = cause {
        assert_no_canary("chain error source", &inner.to_string());
        cause = inner.source();
    }
}

fn outcomes(report: &megallm_auth::ResolutionReport) -> Vec<(String, Outcome)> {
    report
        .attempts
        .iter()
        .map(|attempt| (attempt.label.clone(), attempt.outcome))
        .collect()
}

#[cfg(unix)]
#[test]
fn default_chain_order_and_labels() {
    let chain = default_chain(
        &Environment::from_pairs::<_, String, String>([]),
        KeyPolicy::Strict,
    );
    assert_eq!(
        chain.labels(),
        [
            "env:MEGALLM_API_KEY",
            "env-file:MEGALLM_API_KEY_FILE",
            "dotenv:.env",
            "file:/run/secrets/megallm_api_key",
        ]
    );
}

#[tokio::test]
async fn empty_env_falls_through_to_docker_secret() {
    let logs = capture_logs();
    let layout = Layout::new();
    fs::write(layout.secret_file(), format!("{CANARY}\n")).unwrap();
    let chain = layout.chain(&[("MEGALLM_API_KEY", "")]);

    let resolution = chain.resolve().await.unwrap();

    assert_eq!(resolution.resolved.key.expose_secret(), CANARY);
    let secret_label = format!("file:{}", layout.secret_file().display());
    assert_eq!(resolution.resolved.label, secret_label);
    assert_eq!(
        outcomes(&resolution.report),
        [
            ("env:MEGALLM_API_KEY".to_owned(), Outcome::NotFound),
            (
                "env-file:MEGALLM_API_KEY_FILE".to_owned(),
                Outcome::NotFound
            ),
            (
                format!("dotenv:{}", layout.dotenv().display()),
                Outcome::NotFound
            ),
            (secret_label, Outcome::Found),
        ]
    );
    assert_no_canary("report", &resolution.report.to_string());
    assert_no_canary("resolution Debug", &format!("{resolution:?}"));
    logs.assert_clean();
}

#[tokio::test]
async fn blank_env_stops_chain_as_misconfigured() {
    let logs = capture_logs();
    let layout = Layout::new();
    let chain = layout.chain(&[("MEGALLM_API_KEY", "   ")]);

    let error = chain.resolve().await.unwrap_err();

    assert_eq!(error.kind(), SourceErrorKind::Misconfigured);
    let failure = error.failure().expect("a hard failure");
    assert_eq!(failure.label(), "env:MEGALLM_API_KEY");
    assert!(
        failure.message().contains("MEGALLM_API_KEY is blank"),
        "{failure}"
    );
    assert_eq!(error.report().attempts.len(), 1);
    assert_clean_chain_error(&error);
    logs.assert_clean();
}

#[tokio::test]
async fn key_file_variable_resolves_in_chain() {
    let logs = capture_logs();
    let layout = Layout::new();
    let path = layout.dir.path().join("mounted_key");
    fs::write(&path, b"sk-mega-TESTKEY0000000000\n\n").unwrap();
    // A Docker secret holding another key must not be reached.
    fs::write(layout.secret_file(), format!("{CANARY_ROTATED}\n")).unwrap();
    let chain = layout.chain(&[("MEGALLM_API_KEY_FILE", path.to_str().unwrap())]);

    let resolution = chain.resolve().await.unwrap();

    assert_eq!(resolution.resolved.key.expose_secret(), CANARY);
    assert_eq!(resolution.resolved.label, "env-file:MEGALLM_API_KEY_FILE");
    logs.assert_clean();
}

#[tokio::test]
async fn env_wins_over_later_sources() {
    let logs = capture_logs();
    let layout = Layout::new();
    fs::write(
        layout.dotenv(),
        format!("MEGALLM_API_KEY={CANARY_ROTATED}\n"),
    )
    .unwrap();
    fs::write(layout.secret_file(), format!("{CANARY_ROTATED}\n")).unwrap();
    let chain = layout.chain(&[("MEGALLM_API_KEY", CANARY)]);

    let resolution = chain.resolve().await.unwrap();

    assert_eq!(resolution.resolved.key.expose_secret(), CANARY);
    assert_eq!(resolution.resolved.label, "env:MEGALLM_API_KEY");
    logs.assert_clean();
}

#[tokio::test]
async fn dotenv_wins_over_docker_secret() {
    let logs = capture_logs();
    let layout = Layout::new();
    fs::write(layout.dotenv(), format!("MEGALLM_API_KEY={CANARY}\n")).unwrap();
    fs::write(layout.secret_file(), format!("{CANARY_ROTATED}\n")).unwrap();
    let chain = layout.chain(&[]);

    let resolution = chain.resolve().await.unwrap();

    assert_eq!(resolution.resolved.key.expose_secret(), CANARY);
    assert_eq!(
        resolution.resolved.label,
        format!("dotenv:{}", layout.dotenv().display())
    );
    logs.assert_clean();
}

#[tokio::test]
async fn both_variables_stop_chain() {
    let logs = capture_logs();
    let layout = Layout::new();
    let path = layout.dir.path().join("mounted_key");
    fs::write(&path, format!("{CANARY}\n")).unwrap();
    let chain = layout.chain(&[
        ("MEGALLM_API_KEY", CANARY),
        ("MEGALLM_API_KEY_FILE", path.to_str().unwrap()),
    ]);

    let error = chain.resolve().await.unwrap_err();

    assert_eq!(error.kind(), SourceErrorKind::Misconfigured);
    assert!(
        error
            .to_string()
            .contains("set only one of MEGALLM_API_KEY and MEGALLM_API_KEY_FILE"),
        "{error}"
    );
    assert_clean_chain_error(&error);
    logs.assert_clean();
}

#[tokio::test]
async fn missing_key_file_stops_chain() {
    let logs = capture_logs();
    let layout = Layout::new();
    fs::write(layout.secret_file(), format!("{CANARY}\n")).unwrap();
    let missing = layout.dir.path().join("absent");
    let chain = layout.chain(&[("MEGALLM_API_KEY_FILE", missing.to_str().unwrap())]);

    let error = chain.resolve().await.unwrap_err();

    assert_eq!(error.kind(), SourceErrorKind::Misconfigured);
    let failure = error.failure().expect("a hard failure");
    assert_eq!(failure.label(), "env-file:MEGALLM_API_KEY_FILE");
    assert!(
        failure.message().contains(&missing.display().to_string()),
        "{failure}"
    );
    assert_clean_chain_error(&error);
    logs.assert_clean();
}

#[tokio::test]
async fn nothing_configured_lists_every_source() {
    let logs = capture_logs();
    let layout = Layout::new();
    let chain = layout.chain(&[]);

    let error = chain.resolve().await.unwrap_err();

    assert_eq!(error.kind(), SourceErrorKind::NotFound);
    assert!(error.failure().is_none());
    let text = error.to_string();
    for label in chain.labels() {
        assert!(text.contains(label), "{text:?} lacks {label:?}");
    }
    assert_eq!(error.report().attempts.len(), 4);
    assert_clean_chain_error(&error);
    logs.assert_clean();
}

#[tokio::test]
async fn policy_reaches_every_source() {
    let logs = capture_logs();
    let layout = Layout::new();
    fs::write(layout.secret_file(), b"gateway-issued-1234\n").unwrap();
    let environment = Environment::from_pairs::<_, String, String>([]);

    let strict = default_chain_in(
        &environment,
        KeyPolicy::Strict,
        &layout.dotenv(),
        &layout.secrets(),
    );
    let error = strict.resolve().await.unwrap_err();
    assert_eq!(error.kind(), SourceErrorKind::InvalidKey);

    let off = default_chain_in(
        &environment,
        KeyPolicy::Off,
        &layout.dotenv(),
        &layout.secrets(),
    );
    let resolution = off.resolve().await.unwrap();
    assert_eq!(
        resolution.resolved.key.expose_secret(),
        "gateway-issued-1234"
    );
    logs.assert_clean();
}

#[test]
fn chain_debug_has_no_values() {
    let layout = Layout::new();
    let chain = layout.chain(&[("MEGALLM_API_KEY", CANARY)]);
    let debug = format!("{chain:?}");
    assert!(debug.contains("MEGALLM_API_KEY"), "{debug}");
    assert_no_canary("chain Debug", &debug);
}
