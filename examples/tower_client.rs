//! Wraps a tower service in `MegaLlmAuthLayer` and sends an Anthropic-style message to a local
//! MockGateway. The inner service sends requests with reqwest; a hyper client works the same
//! way. Runs without network.
//!
//! `cargo run --example tower_client --features tower,testing`

use bytes::Bytes;
use megallm_auth::http::tower::{BoxError, MegaLlmAuthLayer};
use megallm_auth::testing::MockGateway;
use megallm_auth::{ApiStyle, KeyChain, KeyProvider, StaticSource};
use tower::{Layer, ServiceExt};

const KEY: &str = "sk-mega-TESTEXAMPLE0000000";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let gateway = MockGateway::builder().key(KEY).start().await?;

    let chain = KeyChain::new().with(StaticSource::new(KEY)?);
    let provider = KeyProvider::builder(chain)
        .style(ApiStyle::Anthropic)
        .build()?;
    let layer = MegaLlmAuthLayer::new(provider, &gateway.base_url())?;

    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let inner = tower::service_fn(move |request: http::Request<String>| {
        let client = client.clone();
        async move {
            let response = client.execute(reqwest::Request::try_from(request)?).await?;
            // The layer reads Retry-After and Location, so the headers must come along.
            let status = response.status();
            let headers = response.headers().clone();
            let body: Bytes = response.bytes().await?;
            let mut converted = http::Response::new(body);
            *converted.status_mut() = status;
            *converted.headers_mut() = headers;
            Ok::<_, BoxError>(converted)
        }
    });
    let service = layer.layer(inner);

    let request = http::Request::post(gateway.url("/v1/messages"))
        .header("content-type", "application/json")
        .body(String::from(
            r#"{"model": "claude-3-5-sonnet", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}"#,
        ))?;
    let response = service.oneshot(request).await?;
    println!("message: {}", response.status());

    let sent = &gateway.requests()[0];
    println!(
        "credential headers sent: {:?}",
        sent.credential_headers()
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>()
    );
    println!("anthropic-version: {:?}", sent.headers["anthropic-version"]);
    Ok(())
}
