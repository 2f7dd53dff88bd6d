//! The reqwest middleware against MockGateway: 401, 403 and 429 handling, redirects, the base
//! URL rule and rotation while requests are in flight.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::{CANARY, CANARY_ROTATED, assert_no_canary, capture_logs};
use megallm_auth::http::GatewayError;
use megallm_auth::http::reqwest::{MegaLlmClient, megallm_error};
use megallm_auth::http::retry::RetryPolicy;
use megallm_auth::testing::{MockGateway, ScriptedResponse};
use megallm_auth::{
    ApiStyle, Environment, Error, ErrorKind, Fingerprint, KeyChain, KeyProvider, SecretFileSource,
    SourceKind, StaticSource, WatchMode,
};
use serde_json::json;

fn fingerprint(key: &str) -> Fingerprint {
    Fingerprint::of(key.as_bytes())
}

/// Builds a retry policy whose waits are recorded and take no time.
fn recording_policy() -> (RetryPolicy, Arc<Mutex<Vec<Duration>>>) {
    let waits = Arc::new(Mutex::new(Vec::new()));
    let recorder = waits.clone();
    let policy = RetryPolicy::new().with_sleep(Arc::new(move |wait| {
        recorder.lock().unwrap().push(wait);
        Box::pin(async {})
    }));
    (policy, waits)
}

/// Replaces the file's contents atomically, as a secret manager would.
fn replace_file(path: &Path, contents: &str) {
    let staging = path.with_extension("tmp");
    std::fs::write(&staging, contents).unwrap();
    std::fs::rename(&staging, path).unwrap();
}

async fn chat(client: &MegaLlmClient) -> Result<reqwest::Response, reqwest_middleware::Error> {
    client
        .post("chat/completions")
        .json(&json!({"model": "gpt-4", "messages": []}))
        .send()
        .await
}

fn gateway_error(error: &reqwest_middleware::Error) -> &GatewayError {
    match megallm_error(error) {
        Some(Error::Gateway(gateway)) => gateway,
        other => panic!("expected a gateway error, got {other:?} from {error:?}"),
    }
}

fn credentials_of(gateway: &MockGateway) -> Vec<Vec<String>> {
    gateway
        .requests()
        .iter()
        .map(|request| {
            request
                .credential_headers()
                .iter()
                .map(|(_, value)| String::from_utf8(value.as_bytes().to_vec()).unwrap())
                .collect()
        })
        .collect()
}

fn static_provider(key: &str, style: ApiStyle) -> KeyProvider {
    KeyProvider::builder(KeyChain::new().with(StaticSource::new(key).unwrap()))
        .style(style)
        .build()
        .unwrap()
}

#[tokio::test]
async fn unauthorized_reresolves_and_retries_once() {
    let logs = capture_logs();
    let gateway = MockGateway::builder().key(CANARY).start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api_key");
    std::fs::write(&path, format!("{CANARY}\n")).unwrap();
    let provider = KeyProvider::builder(KeyChain::new().with(SecretFileSource::new(&path)))
        .refresh_interval(SourceKind::SecretFile, Duration::from_secs(3600))
        .watch(WatchMode::Off)
        .build()
        .unwrap();
    let client = MegaLlmClient::builder(provider)
        .base_url(gateway.openai_base_url())
        .build()
        .unwrap();
    assert_eq!(chat(&client).await.unwrap().status(), 200);

    replace_file(&path, &format!("{CANARY_ROTATED}\n"));
    gateway.revoke_key(CANARY);
    gateway.allow_key(CANARY_ROTATED);
    let response = chat(&client).await.unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(
        credentials_of(&gateway),
        vec![
            vec![format!("Bearer {CANARY}")],
            vec![format!("Bearer {CANARY}")],
            vec![format!("Bearer {CANARY_ROTATED}")],
        ]
    );
    logs.assert_clean();
}

#[tokio::test]
async fn unauthorized_same_key_names_source() {
    let logs = capture_logs();
    let gateway = MockGateway::builder().key(CANARY).start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api_key");
    std::fs::write(&path, format!("{CANARY}\n")).unwrap();
    let provider = KeyProvider::builder(KeyChain::new().with(SecretFileSource::new(&path)))
        .watch(WatchMode::Off)
        .build()
        .unwrap();
    let client = MegaLlmClient::builder(provider)
        .base_url(gateway.openai_base_url())
        .build()
        .unwrap();
    assert_eq!(chat(&client).await.unwrap().status(), 200);
    gateway.revoke_key(CANARY);

    let error = chat(&client).await.unwrap_err();

    let label = format!("file:{}", path.display());
    assert_eq!(
        gateway_error(&error),
        &GatewayError::Unauthorized {
            source_label: label.clone(),
            fingerprint: fingerprint(CANARY),
            retried: false,
        }
    );
    assert_eq!(megallm_error(&error).unwrap().kind(), ErrorKind::Gateway);
    assert_eq!(
        gateway.request_count(),
        2,
        "one success, one 401, no retry loop"
    );
    let text = megallm_error(&error).unwrap().to_string();
    assert!(text.contains(&label), "{text}");
    assert!(text.contains(fingerprint(CANARY).as_str()), "{text}");
    assert!(
        text.contains("check that the API key is valid and has not expired"),
        "{text}"
    );
    assert_no_canary("error Display", &text);
    assert_no_canary("error Debug", &format!("{error:?}"));
    logs.assert_clean();
}

#[tokio::test]
async fn forbidden_is_not_retried() {
    let gateway = MockGateway::builder()
        .key_with_models(CANARY, &["gpt-3.5-turbo"])
        .start()
        .await
        .unwrap();
    let client = MegaLlmClient::builder(static_provider(CANARY, ApiStyle::OpenAi))
        .base_url(gateway.openai_base_url())
        .build()
        .unwrap();

    let error = chat(&client).await.unwrap_err();

    assert_eq!(
        gateway_error(&error),
        &GatewayError::Forbidden {
            source_label: String::from("static"),
            fingerprint: fingerprint(CANARY),
        }
    );
    assert!(
        error
            .to_string()
            .ends_with("verify that the API key has the required access"),
        "{error}"
    );
    assert_eq!(gateway.request_count(), 1);
}

#[tokio::test]
async fn rate_limit_honours_both_forms() {
    let gateway = MockGateway::builder().key(CANARY).start().await.unwrap();
    gateway.push_response(ScriptedResponse::rate_limited(Some("3")));
    gateway.push_response(ScriptedResponse::rate_limited_until(
        SystemTime::now() + Duration::from_secs(5),
    ));
    let (policy, waits) = recording_policy();
    let client = MegaLlmClient::builder(static_provider(CANARY, ApiStyle::OpenAi))
        .base_url(gateway.openai_base_url())
        .retry_policy(policy)
        .build()
        .unwrap();

    let response = chat(&client).await.unwrap();

    assert_eq!(response.status(), 200);
    let waits = waits.lock().unwrap().clone();
    assert_eq!(waits.len(), 2);
    assert_eq!(waits[0], Duration::from_secs(3));
    // An HTTP date has whole seconds, so "5 s ahead" is between 4 and 5 s away.
    assert!(waits[1] > Duration::from_secs(3), "{:?}", waits[1]);
    assert!(waits[1] <= Duration::from_secs(5), "{:?}", waits[1]);
    assert_eq!(
        credentials_of(&gateway),
        vec![vec![format!("Bearer {CANARY}")]; 3],
        "a 429 never changes the key"
    );
}

#[tokio::test]
async fn rate_limit_without_header_backs_off() {
    let gateway = MockGateway::builder().key(CANARY).start().await.unwrap();
    for _ in 0..4 {
        gateway.push_response(ScriptedResponse::rate_limited(None));
    }
    let (policy, waits) = recording_policy();
    let policy = policy.backoff(Duration::from_millis(100), Duration::from_secs(1));
    let client = MegaLlmClient::builder(static_provider(CANARY, ApiStyle::OpenAi))
        .base_url(gateway.openai_base_url())
        .retry_policy(policy)
        .build()
        .unwrap();

    let error = chat(&client).await.unwrap_err();

    assert_eq!(
        gateway_error(&error),
        &GatewayError::RateLimited {
            retry_after: None,
            attempts: 4
        }
    );
    assert!(error.to_string().ends_with("wait and retry"), "{error}");
    let waits = waits.lock().unwrap().clone();
    assert_eq!(waits.len(), 3);
    for (retry, wait) in waits.iter().enumerate() {
        let full = Duration::from_millis(100 << retry);
        assert!(*wait >= full / 2, "retry {retry}: {wait:?}");
        assert!(*wait <= full, "retry {retry}: {wait:?}");
    }
    assert_eq!(gateway.request_count(), 4);
}

#[tokio::test]
async fn rate_limit_wait_is_capped() {
    let gateway = MockGateway::builder().key(CANARY).start().await.unwrap();
    for _ in 0..4 {
        gateway.push_response(ScriptedResponse::rate_limited(Some("999999")));
    }
    let (policy, waits) = recording_policy();
    let policy = policy.max_retry_after(Duration::from_secs(20));
    let client = MegaLlmClient::builder(static_provider(CANARY, ApiStyle::OpenAi))
        .base_url(gateway.openai_base_url())
        .retry_policy(policy)
        .build()
        .unwrap();

    let error = chat(&client).await.unwrap_err();

    assert_eq!(
        gateway_error(&error),
        &GatewayError::RateLimited {
            retry_after: Some(Duration::from_secs(999_999)),
            attempts: 4
        }
    );
    assert_eq!(*waits.lock().unwrap(), vec![Duration::from_secs(20); 3]);
}

#[tokio::test]
async fn unauthorized_is_not_retried_like_rate_limit() {
    let gateway = MockGateway::builder()
        .key(CANARY_ROTATED)
        .start()
        .await
        .unwrap();
    let (policy, waits) = recording_policy();
    let client = MegaLlmClient::builder(static_provider(CANARY, ApiStyle::OpenAi))
        .base_url(gateway.openai_base_url())
        .retry_policy(policy)
        .build()
        .unwrap();

    let error = chat(&client).await.unwrap_err();

    assert!(matches!(
        gateway_error(&error),
        GatewayError::Unauthorized { retried: false, .. }
    ));
    assert_eq!(gateway.request_count(), 1);
    assert!(waits.lock().unwrap().is_empty());
}

#[tokio::test]
async fn cross_origin_redirect_drops_credentials() {
    for style in [ApiStyle::OpenAi, ApiStyle::Anthropic] {
        let gateway = MockGateway::builder().key(CANARY).start().await.unwrap();
        let elsewhere = MockGateway::builder().key(CANARY).start().await.unwrap();
        gateway.push_response(ScriptedResponse::redirect(&elsewhere.url("/v1/models")));
        let client = MegaLlmClient::builder(static_provider(CANARY, style).clone())
            .base_url(gateway.base_url())
            .build()
            .unwrap();

        let response = client.get("v1/models").send().await.unwrap();

        // The mock has no /v1/models, so the other server returns 404.
        assert_eq!(
            response.status(),
            404,
            "{style}: the request reached the other server"
        );
        assert_eq!(gateway.request_count(), 1);
        let arrived = elsewhere.requests();
        assert_eq!(arrived.len(), 1, "{style}: the redirect was followed");
        assert!(arrived[0].credential_headers().is_empty(), "{style}");
        assert!(!arrived[0].headers.contains_key("x-debug-auth"), "{style}");
        assert!(
            !arrived[0].headers.contains_key("anthropic-version"),
            "{style}"
        );
    }
}

#[tokio::test]
async fn same_origin_redirect_keeps_credentials() {
    let gateway = MockGateway::builder().key(CANARY).start().await.unwrap();
    gateway.push_response(ScriptedResponse::temporary_redirect(
        &gateway.url("/v1/chat/completions"),
    ));
    let client = MegaLlmClient::builder(static_provider(CANARY, ApiStyle::OpenAi))
        .base_url(gateway.base_url())
        .build()
        .unwrap();

    let response = client
        .post("v1/chat/completions")
        .json(&json!({"model": "gpt-4", "messages": []}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(
        credentials_of(&gateway),
        vec![vec![format!("Bearer {CANARY}")]; 2]
    );
}

#[test]
fn plain_http_to_remote_host_is_rejected() {
    for url in [
        "http://ai.megallm.io/v1",
        "http://192.0.2.10:8080/v1",
        "ftp://ai.megallm.io",
    ] {
        let error = MegaLlmClient::builder(static_provider(CANARY, ApiStyle::OpenAi))
            .base_url(url)
            .build()
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Misconfigured, "{url}");
        assert!(
            error.to_string().contains("invalid MegaLLM base URL"),
            "{url}: {error}"
        );
    }
    for url in [
        "https://ai.megallm.io/v1",
        "http://127.0.0.1:9/v1",
        "http://[::1]:9",
        "http://localhost:9",
    ] {
        assert!(
            MegaLlmClient::builder(static_provider(CANARY, ApiStyle::OpenAi))
                .base_url(url)
                .build()
                .is_ok(),
            "{url}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_in_flight_sends_whole_keys() {
    let gateway = MockGateway::builder()
        .key(CANARY)
        .key(CANARY_ROTATED)
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api_key");
    std::fs::write(&path, format!("{CANARY}\n")).unwrap();
    let provider = KeyProvider::builder(KeyChain::new().with(SecretFileSource::new(&path)))
        .build()
        .unwrap();
    let client = MegaLlmClient::builder(provider.clone())
        .base_url(gateway.openai_base_url())
        .build()
        .unwrap();
    provider.current().await.unwrap();

    let requests: Vec<_> = (0..200)
        .map(|index| {
            let client = client.clone();
            let path = path.clone();
            tokio::spawn(async move {
                if index == 50 {
                    replace_file(&path, &format!("{CANARY_ROTATED}\n"));
                }
                chat(&client).await.map(|response| response.status())
            })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap().unwrap(), 200);
    }

    let allowed = [
        format!("Bearer {CANARY}"),
        format!("Bearer {CANARY_ROTATED}"),
    ];
    let sent = credentials_of(&gateway);
    assert_eq!(sent.len(), 200);
    for credentials in sent {
        assert_eq!(credentials.len(), 1, "exactly one credential header");
        assert!(
            allowed.contains(&credentials[0]),
            "a mixed or empty key was sent"
        );
    }
}

#[tokio::test]
async fn client_from_settings_sends_key() {
    let gateway = MockGateway::builder().key(CANARY).start().await.unwrap();
    let mut settings = megallm_auth::settings::Settings::default();
    settings.base_url = Some(gateway.openai_base_url());
    settings.debug_auth = true;
    let environment = Environment::from_pairs([("MEGALLM_API_KEY", CANARY)]);

    let client = MegaLlmClient::from_settings(&settings, &environment).unwrap();
    let response = chat(&client).await.unwrap();

    assert_eq!(response.status(), 200);
    let request = &gateway.requests()[0];
    assert_eq!(
        request.headers["authorization"].as_bytes(),
        format!("Bearer {CANARY}").as_bytes()
    );
    assert_eq!(request.headers["x-debug-auth"], "true");
}
