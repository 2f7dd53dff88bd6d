//! The tower layer against MockGateway, over a reqwest-backed inner service, and the
//! async-openai configuration.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{CANARY, CANARY_ROTATED, assert_no_canary};
use megallm_auth::http::GatewayError;
use megallm_auth::http::retry::RetryPolicy;
use megallm_auth::http::tower::{BoxError, CloneBody, MegaLlmAuthLayer};
use megallm_auth::testing::{MockGateway, ScriptedResponse};
use megallm_auth::{ApiStyle, Error, ErrorKind, Fingerprint, KeyChain, KeyProvider, StaticSource};
use tower::{Layer, Service, ServiceExt};

/// A body that refuses to be cloned, like a stream.
struct OneShot(String);

impl From<OneShot> for reqwest::Body {
    fn from(body: OneShot) -> reqwest::Body {
        body.0.into()
    }
}

impl CloneBody for OneShot {
    fn clone_body(&self) -> Option<OneShot> {
        None
    }
}

/// An inner service that sends `http` requests with reqwest and returns the body as bytes.
fn reqwest_service<B: Into<reqwest::Body> + Send + 'static>()
-> impl Service<http::Request<B>, Response = http::Response<Bytes>, Error = BoxError, Future = impl Send>
+ Clone
+ Send
+ 'static {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    tower::service_fn(move |request: http::Request<B>| {
        let client = client.clone();
        async move {
            let request = reqwest::Request::try_from(request)?;
            let response = client.execute(request).await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            let mut converted = http::Response::new(body);
            *converted.status_mut() = status;
            *converted.headers_mut() = headers;
            Ok::<_, BoxError>(converted)
        }
    })
}

fn provider(key: &str, style: ApiStyle) -> KeyProvider {
    KeyProvider::builder(KeyChain::new().with(StaticSource::new(key).unwrap()))
        .style(style)
        .build()
        .unwrap()
}

fn chat_request<B>(gateway: &MockGateway, body: B) -> http::Request<B> {
    http::Request::post(gateway.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-api-key", "sk-mega-OTHERKEY000000000")
        .body(body)
        .unwrap()
}

const CHAT_BODY: &str = r#"{"model": "gpt-4", "messages": []}"#;

fn gateway_error(error: &BoxError) -> &GatewayError {
    match error.downcast_ref::<Error>() {
        Some(Error::Gateway(gateway)) => gateway,
        other => panic!("expected a gateway error, got {other:?}"),
    }
}

#[tokio::test]
async fn layer_sends_one_credential() {
    let gateway = MockGateway::builder().key(CANARY).start().await.unwrap();
    let layer = MegaLlmAuthLayer::new(
        provider(CANARY, ApiStyle::OpenAi),
        &gateway.openai_base_url(),
    )
    .unwrap();
    let service = layer.layer(reqwest_service::<String>());

    let response = service
        .oneshot(chat_request(&gateway, CHAT_BODY.to_owned()))
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    let credentials = gateway.requests()[0].credential_headers();
    assert_eq!(credentials.len(), 1);
    assert_eq!(credentials[0].0, "authorization");
    assert_eq!(
        credentials[0].1.as_bytes(),
        format!("Bearer {CANARY}").as_bytes()
    );
}

#[tokio::test]
async fn layer_retries_rate_limit() {
    let gateway = MockGateway::builder().key(CANARY).start().await.unwrap();
    gateway.push_response(ScriptedResponse::rate_limited(Some("3")));
    let waits = Arc::new(Mutex::new(Vec::new()));
    let recorder = waits.clone();
    let policy = RetryPolicy::new().with_sleep(Arc::new(move |wait| {
        recorder.lock().unwrap().push(wait);
        Box::pin(async {})
    }));
    let layer = MegaLlmAuthLayer::with_policy(
        provider(CANARY, ApiStyle::OpenAi),
        &gateway.openai_base_url(),
        policy,
    )
    .unwrap();
    let service = layer.layer(reqwest_service::<String>());

    let response = service
        .oneshot(chat_request(&gateway, CHAT_BODY.to_owned()))
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(*waits.lock().unwrap(), vec![Duration::from_secs(3)]);
    assert_eq!(gateway.request_count(), 2);
}

#[tokio::test]
async fn uncloneable_body_is_not_retried() {
    let gateway = MockGateway::builder().key(CANARY).start().await.unwrap();
    gateway.push_response(ScriptedResponse::rate_limited(Some("1")));
    let layer = MegaLlmAuthLayer::new(
        provider(CANARY, ApiStyle::OpenAi),
        &gateway.openai_base_url(),
    )
    .unwrap();
    let service = layer.layer(reqwest_service::<OneShot>());

    let error = service
        .oneshot(chat_request(&gateway, OneShot(CHAT_BODY.to_owned())))
        .await
        .unwrap_err();

    assert_eq!(
        gateway_error(&error),
        &GatewayError::RateLimited {
            retry_after: Some(Duration::from_secs(1)),
            attempts: 1
        }
    );
    assert_eq!(gateway.request_count(), 1);
}

#[tokio::test]
async fn layer_unauthorized_names_source() {
    let gateway = MockGateway::builder()
        .key(CANARY_ROTATED)
        .start()
        .await
        .unwrap();
    let layer = MegaLlmAuthLayer::new(
        provider(CANARY, ApiStyle::OpenAi),
        &gateway.openai_base_url(),
    )
    .unwrap();
    let service = layer.layer(reqwest_service::<String>());

    let error = service
        .oneshot(chat_request(&gateway, CHAT_BODY.to_owned()))
        .await
        .unwrap_err();

    assert_eq!(
        gateway_error(&error),
        &GatewayError::Unauthorized {
            source_label: String::from("static"),
            fingerprint: Fingerprint::of(CANARY.as_bytes()),
            retried: false,
        }
    );
    assert_eq!(gateway.request_count(), 1);
    assert_no_canary("error Display", &error.to_string());
}

#[tokio::test]
async fn layer_forbidden_has_remedy() {
    let gateway = MockGateway::builder()
        .key_with_models(CANARY, &["gpt-3.5-turbo"])
        .start()
        .await
        .unwrap();
    let layer = MegaLlmAuthLayer::new(
        provider(CANARY, ApiStyle::OpenAi),
        &gateway.openai_base_url(),
    )
    .unwrap();
    let service = layer.layer(reqwest_service::<String>());

    let error = service
        .oneshot(chat_request(&gateway, CHAT_BODY.to_owned()))
        .await
        .unwrap_err();

    assert!(matches!(
        gateway_error(&error),
        GatewayError::Forbidden { .. }
    ));
    assert!(
        error
            .to_string()
            .ends_with("verify that the API key has the required access")
    );
    assert_eq!(gateway.request_count(), 1);
}

#[tokio::test]
async fn other_origin_gets_no_credentials() {
    let gateway = MockGateway::builder().key(CANARY).start().await.unwrap();
    let elsewhere = MockGateway::builder().key(CANARY).start().await.unwrap();
    let layer =
        MegaLlmAuthLayer::new(provider(CANARY, ApiStyle::Anthropic), &gateway.base_url()).unwrap();
    let service = layer.layer(reqwest_service::<String>());

    let response = service
        .oneshot(chat_request(&elsewhere, CHAT_BODY.to_owned()))
        .await
        .unwrap();

    assert_eq!(response.status(), 401);
    assert!(elsewhere.requests()[0].credential_headers().is_empty());
    assert_eq!(gateway.request_count(), 0);
}

#[test]
fn layer_rejects_remote_http() {
    let error = MegaLlmAuthLayer::new(
        provider(CANARY, ApiStyle::OpenAi),
        "http://ai.megallm.io/v1",
    )
    .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Misconfigured);
}

#[tokio::test]
async fn openai_config_points_at_gateway() {
    use async_openai::config::Config;

    let gateway = MockGateway::builder().key(CANARY).start().await.unwrap();
    let provider = KeyProvider::builder(KeyChain::new().with(StaticSource::new(CANARY).unwrap()))
        .debug_auth(true)
        .build()
        .unwrap();

    let config =
        megallm_auth::http::openai::config_with_base_url(&provider, &gateway.openai_base_url())
            .await
            .unwrap();

    assert_eq!(config.api_base(), gateway.openai_base_url());
    assert_eq!(
        config.url("/chat/completions"),
        gateway.url("/v1/chat/completions")
    );
    let headers = config.headers();
    assert_eq!(
        headers["authorization"].as_bytes(),
        format!("Bearer {CANARY}").as_bytes()
    );
    assert_eq!(headers["x-debug-auth"], "true");
    assert!(!headers.contains_key("openai-organization"));

    let default = megallm_auth::http::openai::config(&provider).await.unwrap();
    assert_eq!(default.api_base(), "https://ai.megallm.io/v1");
}
