//! An async-openai [`OpenAIConfig`] pointed at MegaLLM, so that code written for async-openai
//! switches with one line:
//!
//! ```no_run
//! # async fn run(provider: megallm_auth::KeyProvider) -> Result<(), megallm_auth::Error> {
//! let client = async_openai::Client::with_config(megallm_auth::http::openai::config(&provider).await?);
//! # let _ = client;
//! # Ok(())
//! # }
//! ```
//!
//! # Copies of the key
//!
//! `OpenAIConfig` keeps the key as its own `SecretString`, so building it copies the key once
//! into memory that secrecy wipes when the config drops. async-openai then builds the
//! `Authorization` value itself on every request with `format!("Bearer {key}")`: each request
//! leaves a plain `String` and a `HeaderValue` that is not marked sensitive, both freed without
//! being wiped. The prebuilt, zeroizing headers of [`KeySnapshot`](crate::KeySnapshot) are not
//! used on this path.
//!
//! The config contains the key that was current when it was built. After a rotation, build a new
//! config and client; the reqwest middleware and the tower layer pick up rotations by
//! themselves.

use async_openai::config::OpenAIConfig;

use super::check_base_url;
use crate::error::Error;
use crate::headers::{ApiStyle, X_DEBUG_AUTH};
use crate::provider::KeyProvider;

/// Returns an [`OpenAIConfig`] with the provider's current key and MegaLLM's OpenAI-compatible
/// base URL, `https://ai.megallm.io/v1`.
///
/// # Errors
///
/// As [`KeyProvider::current`].
pub async fn config(provider: &KeyProvider) -> Result<OpenAIConfig, Error> {
    config_with_base_url(provider, ApiStyle::OpenAi.default_base_url()).await
}

/// Returns an [`OpenAIConfig`] with the provider's current key and `base_url`.
///
/// async-openai always sends `Authorization: Bearer`, whatever the provider's style.
/// `X-Debug-Auth` is sent when the provider has it enabled.
///
/// # Errors
///
/// [`Error::Client`] when `base_url` is not https (or http to a loopback host), and the
/// errors of [`KeyProvider::current`].
pub async fn config_with_base_url(
    provider: &KeyProvider,
    base_url: &str,
) -> Result<OpenAIConfig, Error> {
    check_base_url(base_url)?;
    let snapshot = provider.current().await?;

    // Security: this copies the key into async-openai's SecretString; see the module docs.
    let mut config = OpenAIConfig::new()
        .with_api_base(base_url.trim_end_matches('/'))
        .with_api_key(snapshot.key().expose_secret())
        .with_org_id("")
        .with_project_id("");
    if snapshot
        .headers()
        .to_header_map()
        .contains_key(X_DEBUG_AUTH)
    {
        config = config
            .with_header(X_DEBUG_AUTH, "true")
            .expect("\"true\" is a valid header value");
    }
    Ok(config)
}
