//! Checks shared by the tests of the environment, .env and secret-file sources.

use std::error::Error as _;

use megallm_auth::{ApiKey, ApiStyle, AuthHeaders, SourceError, SourceErrorKind};

use super::assert_no_canary;

/// Returns the `Authorization` value that OpenAI-style headers carry for `key`.
pub fn bearer(key: &ApiKey) -> String {
    let headers = AuthHeaders::new(key, ApiStyle::OpenAi).to_header_map();
    let value = headers
        .get(http::header::AUTHORIZATION)
        .expect("authorization header");
    value.to_str().expect("ASCII header value").to_owned()
}

/// Checks the error's kind and label, that its message contains each of `needles`, and that
/// neither its Display, its Debug nor any error in its source chain contains a canary.
#[track_caller]
pub fn assert_error(error: &SourceError, kind: SourceErrorKind, label: &str, needles: &[&str]) {
    let display = error.to_string();
    assert_eq!(error.kind(), kind, "{display}");
    assert_eq!(error.label(), label);
    for needle in needles {
        assert!(display.contains(needle), "{display:?} lacks {needle:?}");
    }
    assert_no_canary("error Display", &display);
    assert_no_canary("error Debug", &format!("{error:?}"));
    let mut cause = error.source();
    while let Some(inner) = cause {
        assert_no_canary("error source Display", &inner.to_string());
        assert_no_canary("error source Debug", &format!("{inner:?}"));
        cause = inner.source();
    }
}
