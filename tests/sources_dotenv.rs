//! DotenvSource and DotenvFile against real .env files in temporary directories.

mod common;

use common::sources::assert_error;

use std::error::Error as _;
use std::fs;
use std::path::{Path, PathBuf};

use common::{CANARY, assert_no_canary, capture_logs};
use megallm_auth::{
    ApiStyle, AuthHeaders, DotenvFile, DotenvSource, InvalidKey, KeyProblem, KeySource,
    SourceErrorKind, SourceKind,
};

/// Writes `content` to `.env` in a new temporary directory.
fn write_dotenv(content: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".env");
    fs::write(&path, content).unwrap();
    (dir, path)
}

fn label_of(path: &Path) -> String {
    format!("dotenv:{}", path.display())
}

#[tokio::test]
async fn crlf_dotenv_resolves_key() {
    let logs = capture_logs();
    let (_dir, path) = write_dotenv(
        b"MEGALLM_API_KEY=sk-mega-TESTKEY0000000000\r\nMEGALLM_BASE_URL=https://ai.megallm.io/v1\r\n",
    );
    let source = DotenvSource::new(&path);

    let resolved = source.resolve().await.unwrap();

    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert_eq!(resolved.label, label_of(&path));
    assert_eq!(resolved.kind, SourceKind::Dotenv);
    let headers = AuthHeaders::new(&resolved.key, ApiStyle::OpenAi).to_header_map();
    assert_eq!(
        headers
            .get(http::header::AUTHORIZATION)
            .unwrap()
            .to_str()
            .unwrap(),
        format!("Bearer {CANARY}")
    );
    let file = DotenvFile::load(&path).unwrap();
    assert_eq!(
        file.get("MEGALLM_BASE_URL"),
        Some("https://ai.megallm.io/v1")
    );
    assert_no_canary("DotenvFile Debug", &format!("{file:?}"));
    assert_no_canary("DotenvSource Debug", &format!("{source:?}"));
    logs.assert_clean();
}

#[test]
fn label_uses_path_as_given() {
    assert_eq!(DotenvSource::new(".env").label(), "dotenv:.env");
    assert_eq!(
        DotenvSource::new("config/app.env").label(),
        "dotenv:config/app.env"
    );
    assert_eq!(DotenvSource::new(".env").kind(), SourceKind::Dotenv);
}

#[tokio::test]
async fn export_prefixes_are_accepted() {
    let logs = capture_logs();
    let (_dir, path) = write_dotenv(
        b"export MEGALLM_API_KEY=\"sk-mega-TESTKEY0000000000\"\n\
          export   MEGALLM_BASE_URL=https://ai.megallm.io/v1\n\
          EXPORTER_TOKEN=unrelated\n",
    );

    let resolved = DotenvSource::new(&path).resolve().await.unwrap();
    assert_eq!(resolved.key.expose_secret(), CANARY);

    let file = DotenvFile::load(&path).unwrap();
    assert_eq!(
        file.get("MEGALLM_BASE_URL"),
        Some("https://ai.megallm.io/v1")
    );
    assert_eq!(file.get("EXPORTER_TOKEN"), Some("unrelated"));
    assert_eq!(file.get("ER_TOKEN"), None);
    assert_eq!(
        file.names().collect::<Vec<_>>(),
        ["MEGALLM_API_KEY", "MEGALLM_BASE_URL", "EXPORTER_TOKEN"]
    );
    logs.assert_clean();
}

#[tokio::test]
async fn dollar_in_key_is_misconfigured() {
    let logs = capture_logs();
    let cases: [(&[u8], &str); 4] = [
        (
            b"MEGALLM_API_KEY=\"sk-mega-TEST$KEY0000000000\"\n",
            "line 1",
        ),
        (b"MEGALLM_API_KEY=sk-mega-TEST$KEY0000000000\n", "line 1"),
        (
            b"# comment\nexport MEGALLM_API_KEY=\"sk-mega-TEST${KEY0000000000}\"\n",
            "line 2",
        ),
        (
            b"MEGALLM_BASE_URL=https://ai.megallm.io/v1\n\nMEGALLM_API_KEY=sk-mega-TEST$\n",
            "line 3",
        ),
    ];

    for (content, line) in cases {
        let (_dir, path) = write_dotenv(content);
        let error = DotenvSource::new(&path).resolve().await.unwrap_err();
        assert_error(
            &error,
            SourceErrorKind::Misconfigured,
            &label_of(&path),
            &[
                &format!("MEGALLM_API_KEY on {line}"),
                "`$`",
                "single quotes",
            ],
        );
    }
    logs.assert_clean();
}

#[tokio::test]
async fn single_quoted_dollar_is_literal() {
    let logs = capture_logs();
    let (_dir, path) = write_dotenv(b"MEGALLM_API_KEY='sk-mega-TEST$KEY0000000000'\n");

    let resolved = DotenvSource::new(&path).resolve().await.unwrap();

    assert_eq!(resolved.key.expose_secret(), "sk-mega-TEST$KEY0000000000");
    logs.assert_clean();
}

#[tokio::test]
async fn escaped_dollar_is_literal() {
    let logs = capture_logs();
    let (_dir, path) = write_dotenv(b"MEGALLM_API_KEY=\"sk-mega-TEST\\$KEY0000000000\"\n");

    let resolved = DotenvSource::new(&path).resolve().await.unwrap();

    assert_eq!(resolved.key.expose_secret(), "sk-mega-TEST$KEY0000000000");
    logs.assert_clean();
}

#[tokio::test]
async fn dollar_in_other_variable_is_substituted() {
    let logs = capture_logs();
    let (_dir, path) = write_dotenv(
        b"HOST=ai.megallm.io\nMEGALLM_BASE_URL=https://${HOST}/v1\nMEGALLM_API_KEY=sk-mega-TESTKEY0000000000\n",
    );

    let file = DotenvFile::load(&path).unwrap();
    assert_eq!(
        file.get("MEGALLM_BASE_URL"),
        Some("https://ai.megallm.io/v1")
    );
    let resolved = DotenvSource::new(&path).resolve().await.unwrap();
    assert_eq!(resolved.key.expose_secret(), CANARY);
    logs.assert_clean();
}

#[tokio::test]
async fn syntax_error_names_line_not_text() {
    let logs = capture_logs();
    let cases: [(&[u8], &str); 3] = [
        (b"MEGALLM_API_KEY=sk-mega-TEST KEY000000000\n", "line 1 of"),
        (
            b"A=1\n\nMEGALLM_API_KEY=sk-mega-TEST KEY000000000\r\nB=2\n",
            "line 3 of",
        ),
        // A key pasted without a name.
        (
            b"MEGALLM_BASE_URL=https://ai.megallm.io/v1\nsk-mega-TESTKEY0000000000\n",
            "line 2 of",
        ),
    ];

    for (content, line) in cases {
        let (_dir, path) = write_dotenv(content);
        let label = label_of(&path);
        let needles = [
            line,
            &path.display().to_string(),
            "not valid .env syntax",
            "quote",
        ];

        let error = DotenvSource::new(&path).resolve().await.unwrap_err();
        assert_error(&error, SourceErrorKind::Misconfigured, &label, &needles);

        let error = DotenvFile::load(&path).unwrap_err();
        assert_error(&error, SourceErrorKind::Misconfigured, &label, &needles);
    }
    logs.assert_clean();
}

#[tokio::test]
async fn unterminated_quote_names_start_line() {
    let logs = capture_logs();
    let (_dir, path) = write_dotenv(b"A=1\nMEGALLM_API_KEY=\"sk-mega-TESTKEY0000000000\nB=2\n");

    let error = DotenvSource::new(&path).resolve().await.unwrap_err();

    assert_error(
        &error,
        SourceErrorKind::Misconfigured,
        &label_of(&path),
        &["line 2 of", "(MEGALLM_API_KEY)"],
    );
    logs.assert_clean();
}

#[tokio::test]
async fn absent_or_empty_is_not_found() {
    let logs = capture_logs();
    let cases: [(&[u8], &str); 3] = [
        (
            b"MEGALLM_BASE_URL=https://ai.megallm.io/v1\n",
            "MEGALLM_API_KEY is not set in",
        ),
        (b"MEGALLM_API_KEY=\n", "MEGALLM_API_KEY is empty in"),
        (b"", "MEGALLM_API_KEY is not set in"),
    ];

    for (content, needle) in cases {
        let (_dir, path) = write_dotenv(content);
        let error = DotenvSource::new(&path).resolve().await.unwrap_err();
        assert_error(
            &error,
            SourceErrorKind::NotFound,
            &label_of(&path),
            &[needle],
        );
    }
    logs.assert_clean();
}

#[tokio::test]
async fn missing_file_is_not_found() {
    let logs = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".env");

    let error = DotenvSource::new(&path).resolve().await.unwrap_err();
    assert_error(
        &error,
        SourceErrorKind::NotFound,
        &label_of(&path),
        &["does not exist"],
    );

    let error = DotenvFile::load(&path).unwrap_err();
    assert_error(
        &error,
        SourceErrorKind::NotFound,
        &label_of(&path),
        &["does not exist"],
    );
    logs.assert_clean();
}

#[tokio::test]
async fn directory_is_misconfigured() {
    let logs = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".env");
    fs::create_dir(&path).unwrap();

    let error = DotenvSource::new(&path).resolve().await.unwrap_err();

    assert_error(
        &error,
        SourceErrorKind::Misconfigured,
        &label_of(&path),
        &["is a directory"],
    );
    logs.assert_clean();
}

#[tokio::test]
async fn blank_key_is_misconfigured() {
    let logs = capture_logs();
    let (_dir, path) = write_dotenv(b"MEGALLM_API_KEY=\"   \"\n");

    let error = DotenvSource::new(&path).resolve().await.unwrap_err();

    assert_error(
        &error,
        SourceErrorKind::Misconfigured,
        &label_of(&path),
        &["MEGALLM_API_KEY on line 1", "is blank"],
    );
    logs.assert_clean();
}

#[tokio::test]
async fn duplicate_key_is_misconfigured() {
    let logs = capture_logs();
    let (_dir, path) = write_dotenv(
        b"MEGALLM_API_KEY=sk-mega-TESTKEY0000000000\n# rotated\nMEGALLM_API_KEY=sk-mega-NEWKEY00000000000\n",
    );

    let error = DotenvSource::new(&path).resolve().await.unwrap_err();

    assert_error(
        &error,
        SourceErrorKind::Misconfigured,
        &label_of(&path),
        &["defined twice", "lines 1 and 3"],
    );
    logs.assert_clean();
}

#[tokio::test]
async fn malformed_key_names_line() {
    let logs = capture_logs();
    let (_dir, path) = write_dotenv(b"A=1\nMEGALLM_API_KEY='Bearer sk-mega-TESTKEY0000000000'\n");

    let error = DotenvSource::new(&path).resolve().await.unwrap_err();

    assert_error(
        &error,
        SourceErrorKind::InvalidKey,
        &label_of(&path),
        &["MEGALLM_API_KEY on line 2", "Bearer"],
    );
    let invalid = error
        .source()
        .and_then(|cause| cause.downcast_ref::<InvalidKey>());
    assert_eq!(
        invalid.map(|invalid| invalid.problem),
        Some(KeyProblem::BearerPrefix)
    );
    logs.assert_clean();
}

#[tokio::test]
async fn bom_is_stripped() {
    let logs = capture_logs();
    let (_dir, path) = write_dotenv(b"\xEF\xBB\xBFMEGALLM_API_KEY=sk-mega-TESTKEY0000000000\n");

    let resolved = DotenvSource::new(&path).resolve().await.unwrap();

    assert_eq!(resolved.key.expose_secret(), CANARY);
    logs.assert_clean();
}

#[tokio::test]
async fn not_utf8_names_line() {
    let logs = capture_logs();
    let (_dir, path) = write_dotenv(b"A=1\nMEGALLM_API_KEY=sk-mega-TEST\xffKEY0000000000\n");

    let error = DotenvSource::new(&path).resolve().await.unwrap_err();

    assert_error(
        &error,
        SourceErrorKind::Misconfigured,
        &label_of(&path),
        &["not valid UTF-8 (line 2)"],
    );
    logs.assert_clean();
}

#[tokio::test]
async fn custom_variable_is_read() {
    let logs = capture_logs();
    let (_dir, path) = write_dotenv(b"MEGALLM_API_KEY=\nLLM_KEY=sk-mega-TESTKEY0000000000\n");

    let resolved = DotenvSource::new(&path)
        .with_var("LLM_KEY")
        .resolve()
        .await
        .unwrap();

    assert_eq!(resolved.key.expose_secret(), CANARY);
    logs.assert_clean();
}

#[test]
fn process_environment_is_untouched() {
    let marker = "MEGALLM_DOTENV_MARKER_VAR";
    assert_eq!(std::env::var_os(marker), None);
    let (_dir, path) = write_dotenv(b"MEGALLM_DOTENV_MARKER_VAR=1\n");

    let file = DotenvFile::load(&path).unwrap();

    assert_eq!(file.get(marker), Some("1"));
    assert_eq!(std::env::var_os(marker), None);
}

#[test]
fn dotenv_file_debug_names_only() {
    let (_dir, path) = write_dotenv(
        b"MEGALLM_API_KEY=sk-mega-TESTKEY0000000000\nMEGALLM_BASE_URL=https://ai.megallm.io/v1\n",
    );

    let file = DotenvFile::load(&path).unwrap();
    let debug = format!("{file:?}");

    assert!(debug.contains("MEGALLM_API_KEY"), "{debug}");
    assert!(debug.contains("MEGALLM_BASE_URL"), "{debug}");
    assert!(!debug.contains("ai.megallm.io"), "{debug}");
    assert_no_canary("DotenvFile Debug", &debug);
    assert_no_canary("DotenvFile pretty Debug", &format!("{file:#?}"));
}
