//! Sends a chat completion through `MegaLlmClient` to a local MockGateway, then shows a 429
//! being retried and a 401 turned into an error with MegaLLM's remedy. Runs without network.
//!
//! `cargo run --example reqwest_client --features reqwest,testing`

use std::time::Duration;

use megallm_auth::http::reqwest::{MegaLlmClient, megallm_error};
use megallm_auth::testing::{MockGateway, ScriptedResponse};
use megallm_auth::{KeyChain, KeyProvider, StaticSource};

const KEY: &str = "sk-mega-TESTEXAMPLE0000000";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let gateway = MockGateway::builder().key(KEY).start().await?;

    let chain = KeyChain::new().with(StaticSource::new(KEY)?);
    let provider = KeyProvider::builder(chain).build()?;
    let client = MegaLlmClient::builder(provider.clone())
        .base_url(gateway.openai_base_url())
        .timeout(Duration::from_secs(10))
        .build()?;
    let body = r#"{"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}"#;

    let response = client.post("chat/completions").body(body).send().await?;
    println!("chat completion: {}", response.status());

    gateway.push_response(ScriptedResponse::rate_limited(Some("1")));
    let response = client.post("chat/completions").body(body).send().await?;
    println!("after one 429 and a 1 s wait: {}", response.status());

    gateway.revoke_key(KEY);
    match client.post("chat/completions").body(body).send().await {
        Ok(response) => println!("unexpected: {}", response.status()),
        Err(error) => match megallm_error(&error) {
            Some(megallm) => println!("revoked key: {megallm}"),
            None => return Err(error.into()),
        },
    }

    let snapshot = provider.current().await?;
    println!(
        "key in use: {} from {}",
        snapshot.fingerprint(),
        snapshot.label()
    );
    println!("requests the gateway saw: {}", gateway.request_count());
    Ok(())
}
