//! MockGateway round trips with a real reqwest client over 127.0.0.1.
#![cfg(feature = "testing")]

mod common;

use std::time::{Duration, SystemTime};

use common::{CANARY, CANARY_ROTATED, assert_no_canary, capture_logs};
use megallm_auth::Fingerprint;
use megallm_auth::testing::{MockGateway, ScriptedResponse};
use reqwest::StatusCode;
use reqwest::header::{HeaderName, HeaderValue, LOCATION, RETRY_AFTER};
use serde_json::{Value, json};

const LIMITED_KEY: &str = "sk-mega-TESTLIMITED000000";
const UNKNOWN_KEY: &str = "sk-mega-TESTUNKNOWN000000";

async fn start_gateway() -> MockGateway {
    MockGateway::builder()
        .key(CANARY)
        .key_with_models(LIMITED_KEY, &["gpt-4"])
        .start()
        .await
        .expect("the mock gateway starts on 127.0.0.1")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a plain HTTP client builds")
}

/// Sends an OpenAI-style chat completion with `Authorization: Bearer <key>` when `key` is given.
async fn post_openai(gateway: &MockGateway, key: Option<&str>, model: &str) -> reqwest::Response {
    let mut request = client()
        .post(format!("{}/chat/completions", gateway.openai_base_url()))
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "Hello"}]}));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.expect("the mock gateway responds")
}

/// Sends an Anthropic-style message with `x-api-key` and `anthropic-version` when given.
async fn post_anthropic(
    gateway: &MockGateway,
    key: Option<&str>,
    version: Option<&str>,
    model: &str,
) -> reqwest::Response {
    let mut request = client()
        .post(format!("{}/v1/messages", gateway.base_url()))
        .json(&json!({
            "model": model,
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "Hello"}],
        }));
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    if let Some(version) = version {
        request = request.header("anthropic-version", version);
    }
    request.send().await.expect("the mock gateway responds")
}

async fn json_body(response: reqwest::Response) -> Value {
    let text = response.text().await.expect("the body is readable");
    assert_no_canary("response body", &text);
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("the body is JSON: {text}"))
}

#[tokio::test]
async fn openai_style_returns_completion() {
    let logs = capture_logs();
    let gateway = start_gateway().await;

    let response = post_openai(&gateway, Some(CANARY), "gpt-4").await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = json_body(response).await;
    assert_eq!(body["id"], "chatcmpl-mock-1");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-4");
    assert_eq!(body["choices"][0]["index"], 0);
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from the MegaLLM mock gateway."
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["total_tokens"], 18);
    assert!(body["created"].as_u64().is_some_and(|created| created > 0));
    assert!(body.get("debug_auth").is_none());
    logs.assert_clean();
}

#[tokio::test]
async fn anthropic_style_returns_message() {
    let logs = capture_logs();
    let gateway = start_gateway().await;

    let response = post_anthropic(
        &gateway,
        Some(CANARY),
        Some("2023-06-01"),
        "claude-3.5-sonnet",
    )
    .await;

    assert_eq!(response.status(), StatusCode::OK);
    let body = json_body(response).await;
    assert_eq!(body["id"], "msg_mock_1");
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], "claude-3.5-sonnet");
    assert_eq!(body["content"][0]["type"], "text");
    assert_eq!(
        body["content"][0]["text"],
        "Hello from the MegaLLM mock gateway."
    );
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["usage"]["output_tokens"], 8);
    logs.assert_clean();
}

#[tokio::test]
async fn unknown_key_gets_401() {
    let logs = capture_logs();
    let gateway = start_gateway().await;

    let openai = post_openai(&gateway, Some(UNKNOWN_KEY), "gpt-4").await;
    assert_eq!(openai.status(), StatusCode::UNAUTHORIZED);
    let body = json_body(openai).await;
    assert_eq!(body["error"]["type"], "authentication_error");
    assert_eq!(
        body["error"]["message"],
        "Unauthorized: check if your API key is valid and not expired"
    );

    let anthropic = post_anthropic(
        &gateway,
        Some(UNKNOWN_KEY),
        Some("2023-06-01"),
        "claude-3.5-sonnet",
    )
    .await;
    assert_eq!(anthropic.status(), StatusCode::UNAUTHORIZED);
    let body = json_body(anthropic).await;
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");
    assert_eq!(
        body["error"]["message"],
        "Unauthorized: check if your API key is valid and not expired"
    );
    logs.assert_clean();
}

#[tokio::test]
async fn missing_key_gets_401() {
    let gateway = start_gateway().await;

    let openai = post_openai(&gateway, None, "gpt-4").await;
    let anthropic = post_anthropic(&gateway, None, Some("2023-06-01"), "claude-3.5-sonnet").await;

    assert_eq!(openai.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anthropic.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn other_style_header_gets_401() {
    let logs = capture_logs();
    let gateway = start_gateway().await;

    let openai_with_x_api_key = client()
        .post(gateway.url("/v1/chat/completions"))
        .header("x-api-key", CANARY)
        .header("x-debug-auth", "true")
        .json(&json!({"model": "gpt-4"}))
        .send()
        .await
        .unwrap();
    let anthropic_with_bearer = client()
        .post(gateway.url("/v1/messages"))
        .bearer_auth(CANARY)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-3.5-sonnet"}))
        .send()
        .await
        .unwrap();

    assert_eq!(openai_with_x_api_key.status(), StatusCode::UNAUTHORIZED);
    let body = json_body(openai_with_x_api_key).await;
    assert_eq!(body["debug_auth"]["key_status"], "missing");
    assert_eq!(body["debug_auth"]["credential_header"], Value::Null);
    assert_eq!(body["debug_auth"]["ignored_headers"], json!(["x-api-key"]));
    assert_eq!(anthropic_with_bearer.status(), StatusCode::UNAUTHORIZED);
    logs.assert_clean();
}

#[tokio::test]
async fn bearer_scheme_is_case_insensitive() {
    let gateway = start_gateway().await;

    let response = client()
        .post(gateway.url("/v1/chat/completions"))
        .header("authorization", format!("bearer {CANARY}"))
        .json(&json!({"model": "gpt-4"}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn duplicate_credential_header_gets_400() {
    let gateway = start_gateway().await;

    let response = client()
        .post(gateway.url("/v1/messages"))
        .header("x-api-key", CANARY)
        .header("x-api-key", CANARY)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-3.5-sonnet"}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = json_body(response).await;
    assert_eq!(
        body["error"]["message"],
        "the request has more than one x-api-key header. Send exactly one."
    );
}

#[tokio::test]
async fn model_without_access_gets_403() {
    let logs = capture_logs();
    let gateway = start_gateway().await;

    let allowed = post_openai(&gateway, Some(LIMITED_KEY), "gpt-4").await;
    let forbidden = post_openai(&gateway, Some(LIMITED_KEY), "claude-3.5-sonnet").await;
    let forbidden_anthropic = post_anthropic(
        &gateway,
        Some(LIMITED_KEY),
        Some("2023-06-01"),
        "claude-3.5-sonnet",
    )
    .await;

    assert_eq!(allowed.status(), StatusCode::OK);
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    let body = json_body(forbidden).await;
    assert_eq!(body["error"]["type"], "permission_error");
    assert_eq!(
        body["error"]["message"],
        "Forbidden: verify API key has required access"
    );
    assert_eq!(forbidden_anthropic.status(), StatusCode::FORBIDDEN);
    logs.assert_clean();
}

#[tokio::test]
async fn scripted_429_sends_retry_after_seconds() {
    let gateway = start_gateway().await;
    gateway.push_response(ScriptedResponse::rate_limited(Some("3")));

    let limited = post_openai(&gateway, Some(CANARY), "gpt-4").await;
    let after = post_openai(&gateway, Some(CANARY), "gpt-4").await;

    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()[RETRY_AFTER], "3");
    let body = json_body(limited).await;
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(after.status(), StatusCode::OK);
    assert_eq!(gateway.pending_responses(), 0);
    assert_eq!(gateway.request_count(), 2);
}

#[tokio::test]
async fn scripted_429_sends_retry_after_date() {
    let gateway = start_gateway().await;
    let until = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_485);
    gateway.push_response(ScriptedResponse::rate_limited_until(until));
    gateway.push_response(ScriptedResponse::rate_limited(Some(
        "Wed, 21 Oct 2015 07:28:00 GMT",
    )));
    gateway.push_response(ScriptedResponse::rate_limited(None));

    let first = post_anthropic(
        &gateway,
        Some(CANARY),
        Some("2023-06-01"),
        "claude-3.5-sonnet",
    )
    .await;
    let second = post_openai(&gateway, Some(CANARY), "gpt-4").await;
    let third = post_openai(&gateway, Some(CANARY), "gpt-4").await;

    assert_eq!(first.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        first.headers()[RETRY_AFTER],
        "Wed, 21 Oct 2015 07:28:05 GMT"
    );
    let body = json_body(first).await;
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(
        second.headers()[RETRY_AFTER],
        "Wed, 21 Oct 2015 07:28:00 GMT"
    );
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(third.headers().get(RETRY_AFTER).is_none());
}

#[tokio::test]
async fn scripted_response_keeps_headers_and_body() {
    let gateway = start_gateway().await;
    let custom = HeaderName::from_static("x-request-id");
    gateway.push_response(
        ScriptedResponse::new(StatusCode::SERVICE_UNAVAILABLE)
            .with_header(custom.clone(), HeaderValue::from_static("one"))
            .with_header(custom.clone(), HeaderValue::from_static("two"))
            .with_body("overloaded"),
    );

    let response = post_openai(&gateway, Some(CANARY), "gpt-4").await;

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let values: Vec<_> = response
        .headers()
        .get_all(&custom)
        .iter()
        .cloned()
        .collect();
    assert_eq!(values, ["one", "two"]);
    assert_eq!(response.text().await.unwrap(), "overloaded");
}

#[tokio::test]
async fn scripted_redirect_sends_location() {
    let gateway = start_gateway().await;
    gateway.push_response(ScriptedResponse::redirect("http://127.0.0.1:9/elsewhere"));
    gateway.push_response(ScriptedResponse::temporary_redirect("/v1/elsewhere"));

    let found = post_openai(&gateway, Some(CANARY), "gpt-4").await;
    let temporary = post_openai(&gateway, Some(CANARY), "gpt-4").await;

    assert_eq!(found.status(), StatusCode::FOUND);
    assert_eq!(found.headers()[LOCATION], "http://127.0.0.1:9/elsewhere");
    assert_eq!(found.content_length(), Some(0));
    assert_eq!(temporary.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(temporary.headers()[LOCATION], "/v1/elsewhere");
}

#[tokio::test]
async fn debug_auth_reports_fingerprint() {
    let logs = capture_logs();
    let gateway = start_gateway().await;
    let expected = Fingerprint::of(CANARY.as_bytes());

    let openai = client()
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(CANARY)
        .header("x-debug-auth", "true")
        .json(&json!({"model": "gpt-4"}))
        .send()
        .await
        .unwrap();
    let anthropic = client()
        .post(gateway.url("/v1/messages"))
        .header("x-api-key", CANARY)
        .header("anthropic-version", "2023-06-01")
        .header("X-Debug-Auth", "TRUE")
        .json(&json!({"model": "claude-3.5-sonnet"}))
        .send()
        .await
        .unwrap();

    assert_eq!(openai.status(), StatusCode::OK);
    let body = json_body(openai).await;
    assert_eq!(
        body["debug_auth"],
        json!({
            "credential_header": "authorization",
            "fingerprint": expected.as_str(),
            "key_status": "valid",
            "ignored_headers": [],
        })
    );
    assert_eq!(anthropic.status(), StatusCode::OK);
    let body = json_body(anthropic).await;
    assert_eq!(body["debug_auth"]["credential_header"], "x-api-key");
    assert_eq!(body["debug_auth"]["fingerprint"], expected.as_str());
    logs.assert_clean();
}

#[tokio::test]
async fn debug_auth_on_401_names_unknown_key() {
    let gateway = start_gateway().await;

    let response = client()
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(UNKNOWN_KEY)
        .header("x-debug-auth", "true")
        .json(&json!({"model": "gpt-4"}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let text = response.text().await.unwrap();
    assert!(!text.contains(UNKNOWN_KEY), "{text}");
    assert!(!text.contains("UNKNOWN"), "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["debug_auth"]["key_status"], "unknown");
    assert_eq!(
        body["debug_auth"]["fingerprint"],
        Fingerprint::of(UNKNOWN_KEY.as_bytes()).as_str()
    );
}

#[tokio::test]
async fn missing_anthropic_version_gets_400() {
    let gateway = start_gateway().await;

    let response = post_anthropic(&gateway, Some(CANARY), None, "claude-3.5-sonnet").await;

    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = json_body(response).await;
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(
        body["error"]["message"],
        "anthropic-version: header is required"
    );
}

#[tokio::test]
async fn body_without_model_gets_400() {
    let gateway = start_gateway().await;

    let response = client()
        .post(gateway.url("/v1/chat/completions"))
        .bearer_auth(CANARY)
        .body("not json")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = json_body(response).await;
    assert_eq!(
        body["error"]["message"],
        "the body must be a JSON object with a string `model` field"
    );
}

#[tokio::test]
async fn revoked_key_gets_401_until_allowed() {
    let logs = capture_logs();
    let gateway = start_gateway().await;

    gateway.revoke_key(CANARY);
    let revoked = post_openai(&gateway, Some(CANARY), "gpt-4").await;
    gateway.allow_key(CANARY);
    let allowed = post_openai(&gateway, Some(CANARY), "gpt-4").await;

    assert_eq!(revoked.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(allowed.status(), StatusCode::OK);
    logs.assert_clean();
}

#[tokio::test]
async fn rotation_swaps_accepted_key() {
    let gateway = start_gateway().await;

    gateway.allow_key(CANARY_ROTATED);
    gateway.revoke_key(CANARY);

    assert_eq!(
        post_openai(&gateway, Some(CANARY), "gpt-4").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post_openai(&gateway, Some(CANARY_ROTATED), "gpt-4")
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn allowing_revoked_key_keeps_models() {
    let gateway = start_gateway().await;

    gateway.revoke_key(LIMITED_KEY);
    gateway.allow_key(LIMITED_KEY);

    assert_eq!(
        post_openai(&gateway, Some(LIMITED_KEY), "gpt-4")
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        post_openai(&gateway, Some(LIMITED_KEY), "claude-3.5-sonnet")
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn unknown_path_gets_404_and_get_405() {
    let gateway = start_gateway().await;

    let missing = client()
        .get(gateway.url("/v1/models"))
        .send()
        .await
        .unwrap();
    let wrong_method = client()
        .get(gateway.url("/v1/chat/completions"))
        .send()
        .await
        .unwrap();

    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(gateway.request_count(), 2);
}

#[tokio::test]
async fn requests_are_recorded() {
    let logs = capture_logs();
    let gateway = start_gateway().await;

    post_openai(&gateway, Some(CANARY), "gpt-4").await;
    client()
        .get(gateway.url("/v1/models?limit=2"))
        .send()
        .await
        .unwrap();

    let requests = gateway.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(gateway.request_count(), 2);

    let first = &requests[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/v1/chat/completions");
    assert_eq!(first.query, None);
    assert_eq!(first.json().unwrap()["model"], "gpt-4");
    let authorization = first.headers.get("authorization").unwrap();
    assert_eq!(authorization, format!("Bearer {CANARY}").as_str());
    assert!(authorization.is_sensitive());
    assert_eq!(first.credential_headers().len(), 1);

    let second = &requests[1];
    assert_eq!(second.method, "GET");
    assert_eq!(second.path, "/v1/models");
    assert_eq!(second.query.as_deref(), Some("limit=2"));
    assert!(second.body.is_empty());
    assert!(second.credential_headers().is_empty());

    let debug = format!("{first:?}");
    assert_no_canary("RecordedRequest Debug", &debug);
    assert!(debug.contains(r#""authorization": Sensitive"#), "{debug}");
    logs.assert_clean();

    gateway.clear_requests();
    assert_eq!(gateway.request_count(), 0);
    assert!(gateway.requests().is_empty());
}

#[tokio::test]
async fn gateway_debug_hides_keys() {
    let gateway = start_gateway().await;

    let debug = format!("{gateway:?} {:?}", MockGateway::builder().key(CANARY));

    assert_no_canary("MockGateway Debug", &debug);
    assert!(debug.contains("keys: 2"), "{debug}");
    assert!(debug.contains("keys: 1"), "{debug}");
}

#[tokio::test]
async fn base_urls_point_at_loopback() {
    let gateway = start_gateway().await;
    let port = gateway.addr().port();

    assert!(gateway.addr().ip().is_loopback());
    assert_eq!(gateway.base_url(), format!("http://127.0.0.1:{port}"));
    assert_eq!(
        gateway.openai_base_url(),
        format!("http://127.0.0.1:{port}/v1")
    );
    assert_eq!(
        gateway.url("/v1/messages"),
        format!("http://127.0.0.1:{port}/v1/messages")
    );
}

#[tokio::test]
async fn shutdown_closes_the_port() {
    let gateway = start_gateway().await;
    let url = gateway.url("/v1/chat/completions");
    post_openai(&gateway, Some(CANARY), "gpt-4").await;

    gateway.shutdown().await.expect("the server stops cleanly");

    let error = client().post(&url).send().await.unwrap_err();
    assert!(error.is_connect(), "{error}");
}

#[tokio::test]
async fn drop_closes_the_port() {
    let gateway = start_gateway().await;
    let addr = gateway.addr();

    drop(gateway);

    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        refused,
        "the port {addr} still accepts connections after drop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_all_recorded() {
    let gateway = std::sync::Arc::new(start_gateway().await);

    let mut tasks = Vec::new();
    for _ in 0..16 {
        let shared = std::sync::Arc::clone(&gateway);
        tasks.push(tokio::spawn(async move {
            post_openai(&shared, Some(CANARY), "gpt-4").await.status()
        }));
        gateway.push_response(ScriptedResponse::rate_limited(Some("1")));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }

    assert_eq!(gateway.request_count(), 16);
    let limited = statuses
        .iter()
        .filter(|status| **status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    let ok = statuses
        .iter()
        .filter(|status| **status == StatusCode::OK)
        .count();
    assert_eq!(limited + ok, 16);
    assert_eq!(limited, 16 - gateway.pending_responses());
}
