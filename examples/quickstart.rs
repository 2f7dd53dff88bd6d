//! Load layered settings, resolve a key, and call a local mock of MegaLLM in both API styles.
//!
//! Run it from the repository root:
//!
//! ```text
//! cargo run --example quickstart --features testing,reqwest
//! ```
//!
//! It reads `examples/quickstart/megallm.toml` and `examples/quickstart/.env`, starts a
//! `MockGateway` on 127.0.0.1, and needs no network.

use std::error::Error;
use std::path::Path;

use megallm_auth::settings::{LoadOptions, Settings};
use megallm_auth::testing::MockGateway;
use megallm_auth::{ApiStyle, AuthHeaders, Environment};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    // The settings and the .env file sit next to each other; relative paths in the settings
    // resolve from the working directory.
    let example_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart");
    std::env::set_current_dir(&example_dir)?;

    let environment = Environment::process();
    let mut settings = Settings::load_with(&LoadOptions {
        environment: environment.clone(),
        ..LoadOptions::default()
    })?;
    let chain = settings.key_chain(&environment)?;
    let resolution = chain.resolve().await?;
    println!("Resolution report:\n{}", resolution.report);

    // The mock gateway accepts the demo key. A real service keeps the configured base URL.
    let key = resolution.resolved.key;
    let gateway = MockGateway::builder()
        .key(key.expose_secret())
        .start()
        .await?;
    settings.base_url = Some(gateway.openai_base_url());
    let client = reqwest::Client::new();

    let openai_headers = settings.auth_headers(&key)?;
    let chat: Value = client
        .post(format!("{}/chat/completions", settings.base_url()))
        .headers(openai_headers.to_header_map())
        .json(&json!({
            "model": "gpt-4",
            "messages": [{"role": "user", "content": "Hello!"}],
        }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    println!("OpenAI style, POST /v1/chat/completions:\n{chat:#}\n");

    let anthropic_headers = AuthHeaders::new(&key, ApiStyle::Anthropic)
        .with_anthropic_version(&settings.anthropic_version)?
        .with_debug_auth(settings.debug_auth);
    let message: Value = client
        .post(format!("{}/v1/messages", gateway.base_url()))
        .headers(anthropic_headers.to_header_map())
        .json(&json!({
            "model": "claude-3.5-sonnet",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": "Hello!"}],
        }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    println!("Anthropic style, POST /v1/messages:\n{message:#}");

    Ok(())
}
