//! Built headers on real requests: one credential header per request, redacted Debug and logs,
//! and typed errors for raw secrets.
#![cfg(feature = "testing")]

mod common;

use common::{CANARY, assert_no_canary, capture_logs};
use megallm_auth::testing::{MockGateway, RecordedRequest};
use megallm_auth::{ApiKey, ApiStyle, AuthHeaders, HeaderError, KeyPolicy};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use secrecy::SecretString;
use serde_json::json;

const OTHER_KEY: &str = "sk-mega-OTHERKEY000000000";

fn canary_key() -> ApiKey {
    ApiKey::parse(CANARY, "test:headers", KeyPolicy::Strict).expect("the canary is a valid key")
}

async fn start_gateway() -> MockGateway {
    MockGateway::builder()
        .key(CANARY)
        .start()
        .await
        .expect("the mock gateway starts on 127.0.0.1")
}

fn endpoint(gateway: &MockGateway, style: ApiStyle) -> String {
    match style {
        ApiStyle::OpenAi => format!("{}/chat/completions", gateway.openai_base_url()),
        ApiStyle::Anthropic => format!("{}/v1/messages", gateway.base_url()),
    }
}

/// Asserts that `request` carries exactly one credential header, named `expected_name` in any
/// case, with the value `expected_value`.
#[track_caller]
fn assert_one_credential(request: &RecordedRequest, expected_name: &str, expected_value: &str) {
    let credential_names: Vec<&str> = request
        .headers
        .keys()
        .map(|name| name.as_str())
        .filter(|name| {
            name.eq_ignore_ascii_case("authorization") || name.eq_ignore_ascii_case("x-api-key")
        })
        .collect();
    assert_eq!(
        credential_names.len(),
        1,
        "credential headers: {credential_names:?}"
    );
    assert!(
        credential_names[0].eq_ignore_ascii_case(expected_name),
        "expected {expected_name}, got {}",
        credential_names[0]
    );

    let credentials = request.credential_headers();
    assert_eq!(credentials.len(), 1, "values of the credential header");
    assert_eq!(credentials[0].1.as_bytes(), expected_value.as_bytes());
}

#[tokio::test]
async fn openai_apply_replaces_x_api_key() {
    let logs = capture_logs();
    let gateway = start_gateway().await;
    let client = reqwest::Client::new();
    let headers = AuthHeaders::new(&canary_key(), ApiStyle::OpenAi);

    let mut request = client
        .post(endpoint(&gateway, ApiStyle::OpenAi))
        .header("X-API-Key", OTHER_KEY)
        .json(&json!({"model": "gpt-4"}))
        .build()
        .unwrap();
    headers.apply(request.headers_mut());
    let response = client.execute(request).await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let recorded = gateway.requests();
    assert_eq!(recorded.len(), 1);
    assert_one_credential(&recorded[0], "authorization", &format!("Bearer {CANARY}"));
    logs.assert_clean();
}

#[tokio::test]
async fn anthropic_apply_replaces_authorization() {
    let logs = capture_logs();
    let gateway = start_gateway().await;
    let client = reqwest::Client::new();
    let headers = AuthHeaders::new(&canary_key(), ApiStyle::Anthropic);

    let mut request = client
        .post(endpoint(&gateway, ApiStyle::Anthropic))
        .header("authorization", format!("Bearer {OTHER_KEY}"))
        .json(&json!({"model": "claude-3.5-sonnet"}))
        .build()
        .unwrap();
    headers.apply(request.headers_mut());
    let response = client.execute(request).await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let recorded = gateway.requests();
    assert_one_credential(&recorded[0], "x-api-key", CANARY);
    assert_eq!(recorded[0].headers["anthropic-version"], "2023-06-01");
    logs.assert_clean();
}

#[tokio::test]
async fn apply_removes_every_credential_spelling() {
    let gateway = start_gateway().await;
    let client = reqwest::Client::new();

    for style in [ApiStyle::OpenAi, ApiStyle::Anthropic] {
        gateway.clear_requests();
        let mut request = client
            .post(endpoint(&gateway, style))
            .header("AUTHORIZATION", format!("Bearer {OTHER_KEY}"))
            .header("Authorization", "Basic dXNlcjpwYXNz")
            .header("X-Api-Key", OTHER_KEY)
            .header("x-API-key", OTHER_KEY)
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": "gpt-4"}))
            .build()
            .unwrap();
        AuthHeaders::new(&canary_key(), style).apply(request.headers_mut());
        let response = client.execute(request).await.unwrap();

        assert_eq!(response.status(), StatusCode::OK, "style {style}");
        let recorded = gateway.requests();
        match style {
            ApiStyle::OpenAi => {
                assert_one_credential(&recorded[0], "authorization", &format!("Bearer {CANARY}"))
            }
            ApiStyle::Anthropic => assert_one_credential(&recorded[0], "x-api-key", CANARY),
        }
    }
}

#[tokio::test]
async fn apply_keeps_existing_anthropic_version() {
    let gateway = start_gateway().await;
    let client = reqwest::Client::new();

    let mut request = client
        .post(endpoint(&gateway, ApiStyle::Anthropic))
        .header("anthropic-version", "2024-01-01")
        .json(&json!({"model": "claude-3.5-sonnet"}))
        .build()
        .unwrap();
    AuthHeaders::new(&canary_key(), ApiStyle::Anthropic).apply(request.headers_mut());
    client.execute(request).await.unwrap();

    let recorded = gateway.requests();
    let versions: Vec<_> = recorded[0]
        .headers
        .get_all("anthropic-version")
        .iter()
        .collect();
    assert_eq!(versions, ["2024-01-01"]);
}

#[tokio::test]
async fn debug_auth_fingerprint_matches_headers() {
    let gateway = start_gateway().await;
    let client = reqwest::Client::new();
    let headers = AuthHeaders::new(&canary_key(), ApiStyle::OpenAi).with_debug_auth(true);

    let mut request = client
        .post(endpoint(&gateway, ApiStyle::OpenAi))
        .json(&json!({"model": "gpt-4"}))
        .build()
        .unwrap();
    headers.apply(request.headers_mut());
    let response = client.execute(request).await.unwrap();

    let text = response.text().await.unwrap();
    assert_no_canary("response body", &text);
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        body["debug_auth"]["fingerprint"],
        headers.fingerprint().unwrap().as_str()
    );
    assert_eq!(body["debug_auth"]["credential_header"], "authorization");
}

#[cfg(feature = "reqwest")]
mod apply_to_request {
    use super::*;

    #[tokio::test]
    async fn fresh_builder_gets_one_credential() {
        let logs = capture_logs();
        let gateway = start_gateway().await;
        let client = reqwest::Client::new();

        for style in [ApiStyle::OpenAi, ApiStyle::Anthropic] {
            gateway.clear_requests();
            let request = client
                .post(endpoint(&gateway, style))
                .json(&json!({"model": "gpt-4"}));
            let response = AuthHeaders::new(&canary_key(), style)
                .apply_to_request(request)
                .send()
                .await
                .unwrap();

            assert_eq!(response.status(), StatusCode::OK, "style {style}");
            let recorded = gateway.requests();
            match style {
                ApiStyle::OpenAi => assert_one_credential(
                    &recorded[0],
                    "authorization",
                    &format!("Bearer {CANARY}"),
                ),
                ApiStyle::Anthropic => assert_one_credential(&recorded[0], "x-api-key", CANARY),
            }
        }
        logs.assert_clean();
    }

    #[tokio::test]
    async fn builder_with_other_style_gets_one_credential() {
        let logs = capture_logs();
        let gateway = start_gateway().await;
        let client = reqwest::Client::new();

        let openai = client
            .post(endpoint(&gateway, ApiStyle::OpenAi))
            .header("X-API-Key", OTHER_KEY)
            .json(&json!({"model": "gpt-4"}));
        let openai = AuthHeaders::new(&canary_key(), ApiStyle::OpenAi)
            .apply_to_request(openai)
            .send()
            .await
            .unwrap();
        let anthropic = client
            .post(endpoint(&gateway, ApiStyle::Anthropic))
            .header("Authorization", format!("Bearer {OTHER_KEY}"))
            .json(&json!({"model": "claude-3.5-sonnet"}));
        let anthropic = AuthHeaders::new(&canary_key(), ApiStyle::Anthropic)
            .apply_to_request(anthropic)
            .send()
            .await
            .unwrap();

        assert_eq!(openai.status(), StatusCode::OK);
        assert_eq!(anthropic.status(), StatusCode::OK);
        let recorded = gateway.requests();
        assert_eq!(recorded.len(), 2);
        assert_one_credential(&recorded[0], "authorization", &format!("Bearer {CANARY}"));
        assert_one_credential(&recorded[1], "x-api-key", CANARY);
        logs.assert_clean();
    }

    #[tokio::test]
    async fn failed_builder_keeps_its_error() {
        let client = reqwest::Client::new();
        let broken = client
            .post("http://127.0.0.1:1/")
            .header("bad header", "value");

        let error = AuthHeaders::new(&canary_key(), ApiStyle::OpenAi)
            .apply_to_request(broken)
            .send()
            .await
            .unwrap_err();

        assert!(error.is_builder(), "{error}");
        assert_no_canary("reqwest error", &format!("{error} {error:?}"));
    }
}

#[test]
fn traced_headers_print_sensitive() {
    let logs = capture_logs();
    let key = canary_key();

    let openai = AuthHeaders::new(&key, ApiStyle::OpenAi);
    let anthropic = AuthHeaders::new(&key, ApiStyle::Anthropic).with_debug_auth(true);
    let mut applied = HeaderMap::new();
    applied.insert("content-type", "application/json".parse().unwrap());
    openai.apply(&mut applied);
    let openai_map = openai.to_header_map();
    let anthropic_map = anthropic.to_header_map();
    tracing::debug!(headers = ?applied, "applied OpenAI headers");
    tracing::debug!(headers = ?openai_map, "built OpenAI headers");
    tracing::debug!(headers = ?anthropic_map, "built Anthropic headers");
    tracing::debug!(?openai, ?anthropic, "auth headers");

    let contents = logs.contents();
    assert!(
        contents.contains(r#""authorization": Sensitive"#),
        "{contents}"
    );
    assert!(contents.contains(r#""x-api-key": Sensitive"#), "{contents}");
    assert!(
        contents.contains(r#""content-type": "application/json""#),
        "{contents}"
    );
    assert!(
        contents.contains(r#"credential: "[REDACTED]""#),
        "{contents}"
    );
    assert!(contents.contains(key.fingerprint().as_str()), "{contents}");
    assert!(!contents.contains("sk-mega-"), "{contents}");
    logs.assert_clean();
}

#[test]
fn traced_reqwest_request_prints_sensitive() {
    let logs = capture_logs();
    let client = reqwest::Client::new();
    let mut request = client
        .post("http://127.0.0.1:1/v1/chat/completions")
        .build()
        .unwrap();

    AuthHeaders::new(&canary_key(), ApiStyle::OpenAi).apply(request.headers_mut());
    tracing::debug!(?request, "outgoing request");

    let contents = logs.contents();
    assert!(
        contents.contains(r#""authorization": Sensitive"#),
        "{contents}"
    );
    logs.assert_clean();
}

#[derive(Debug)]
#[allow(dead_code)]
struct ServiceConfig {
    name: String,
    api_key: ApiKey,
}

#[test]
fn user_struct_debug_redacts_key() {
    let config = ServiceConfig {
        name: "billing".to_owned(),
        api_key: canary_key(),
    };

    let compact = format!("{config:?}");
    let pretty = format!("{config:#?}");

    assert_eq!(
        compact,
        r#"ServiceConfig { name: "billing", api_key: ApiKey([REDACTED]) }"#
    );
    assert_eq!(
        pretty,
        "ServiceConfig {\n    name: \"billing\",\n    api_key: ApiKey([REDACTED]),\n}"
    );
    assert!(!compact.contains("sk-mega"), "no prefix: {compact}");
    assert!(
        !compact.contains(&CANARY.len().to_string()),
        "no length: {compact}"
    );
    assert_no_canary("user struct Debug", &compact);
    assert_no_canary("user struct pretty Debug", &pretty);
}

#[test]
fn raw_secret_newline_is_typed_error() {
    let logs = capture_logs();
    let secret = SecretString::from(format!("{CANARY}\n"));

    for (style, header) in [
        (ApiStyle::OpenAi, "authorization"),
        (ApiStyle::Anthropic, "x-api-key"),
    ] {
        let error = AuthHeaders::from_secret(&secret, style).unwrap_err();

        assert_eq!(
            error,
            HeaderError::ForbiddenByte {
                header,
                position: CANARY.len(),
            }
        );
        let display = error.to_string();
        assert!(display.contains(header), "{display}");
        assert_no_canary("HeaderError Display", &display);
        assert_no_canary("HeaderError Debug", &format!("{error:?}"));
        tracing::warn!(%error, "header build failed");
    }
    logs.assert_clean();
}
