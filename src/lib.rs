//! Load a MegaLLM API key safely and turn it into request headers.
//!
//! MegaLLM's OpenAI-compatible API (`https://ai.megallm.io/v1`) takes
//! `Authorization: Bearer <key>`; its Anthropic-compatible API (`https://ai.megallm.io`) takes
//! `x-api-key: <key>` and `anthropic-version`. This crate finds the key in the places services
//! keep it, checks its shape before any request, keeps it in zeroizing memory, and builds those
//! headers.
//!
//! # Quick start
//!
//! ```no_run
//! use megallm_auth::settings::Settings;
//! use megallm_auth::Environment;
//!
//! # async fn run() -> Result<(), megallm_auth::Error> {
//! // defaults < ./megallm.toml (or $MEGALLM_CONFIG) < MEGALLM__* variables
//! let settings = Settings::load()?;
//! let chain = settings.key_chain(&Environment::process())?;
//!
//! let resolution = chain.resolve().await?;
//! println!("{}", resolution.report); // labels, outcomes and the fingerprint, never the key
//!
//! let headers = settings.auth_headers(&resolution.resolved.key)?;
//! let mut request_headers = http::HeaderMap::new();
//! headers.apply(&mut request_headers);
//! # Ok(()) }
//! ```
//!
//! `examples/quickstart.rs` runs the same steps end to end against a local mock gateway.
//!
//! # Resolution order
//!
//! With no `sources` configured, [`sources::default_chain`] tries, in order:
//!
//! 1. the environment variable `MEGALLM_API_KEY`;
//! 2. the file named by `MEGALLM_API_KEY_FILE` (setting both variables is an error);
//! 3. `MEGALLM_API_KEY` in `./.env`, read without touching the process environment;
//! 4. the Docker secret `megallm_api_key` (`/run/secrets/` on Linux,
//!    `C:\ProgramData\Docker\secrets\` on Windows).
//!
//! The first source that has a key wins. A source that has none ("not found") passes to the
//! next. Any other failure (a malformed key, permission denied, an unreachable backend, a
//! configuration error) stops the chain, because falling back to another key would hide a
//! broken setup. An environment variable set to the empty string counts as not found.
//!
//! # Live keys and HTTP clients
//!
//! [`KeyProvider`] caches the resolved key with its prebuilt headers and refreshes it in the
//! background. It follows rotations of secret files, including Kubernetes' `..data` symlink
//! swap. Through transient failures it serves the last good key for a bounded grace, and it
//! re-resolves once when the gateway rejects a key. With feature `reqwest`,
//! [`http::reqwest::MegaLlmClient`] puts the provider's headers on every request and handles
//! MegaLLM's 401, 403 and 429 responses. Feature `tower` offers the same as a layer. See
//! `docs/rotation.md` and `docs/http.md`.
//!
//! # Features
//!
//! | feature | default | adds |
//! |---|---|---|
//! | `env` | yes | [`sources::EnvSource`], [`sources::EnvFileSource`] |
//! | `dotenv` | yes | [`sources::DotenvSource`] (dotenvy) |
//! | `secret-file` | yes | [`sources::SecretFileSource`] for Docker and Kubernetes secrets |
//! | `aws` | no | AWS Secrets Manager source (aws-sdk-secretsmanager) |
//! | `vault` | no | HashiCorp Vault / OpenBao source (vaultrs) |
//! | `reqwest` | no | `AuthHeaders::apply_to_request` and the reqwest middleware |
//! | `tower` | no | the tower layer |
//! | `async-openai` | no | an `OpenAIConfig` pointed at MegaLLM |
//! | `testing` | no | `testing::MockGateway`, a local HTTP server that behaves like MegaLLM |
//! | `cli` | no | the `megallm-auth` binary (`megallm-auth doctor`) |
//!
//! # Guarantees
//!
//! - The key is held in a [`secrecy::SecretString`] and zeroed when the last [`ApiKey`] clone
//!   drops. Buffers that held it on the way (file contents, parsed .env values) are
//!   [`zeroize::Zeroizing`].
//! - `ApiKey`'s `Debug` prints `ApiKey([REDACTED])`. It has no `Display` and no `Serialize`.
//! - Before anything else sees a key, it is normalised (byte order mark, surrounding
//!   whitespace and one pair of quotes removed) and shape-checked; a bad key is an
//!   [`InvalidKey`] error that names the source and never the value.
//! - Credential header values are marked sensitive and live in zeroizing memory.
//! - Errors, logs and reports name sources (variable, path, secret id) and show keys only as
//!   a [`Fingerprint`] (`sha256:` and 8 hex digits).
//!
//! # Non-goals
//!
//! - No `mlock`: the key's pages can be swapped to disk.
//! - Copies outside this crate are not wiped: the process environment still holds an
//!   environment variable's value, the OS page cache holds file contents, and HTTP clients
//!   may copy header values into their own buffers.
//! - No key issuance or revocation: keys are created in the MegaLLM dashboard.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod chain;
mod environment;
mod error;
mod headers;
pub mod http;
mod key;
mod provider;
pub mod settings;
mod source;
pub mod sources;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
mod watch;

/// The guides in docs/ and the README, compiled as doctests so that their examples keep
/// building.
#[cfg(all(
    doctest,
    feature = "reqwest",
    feature = "tower",
    feature = "async-openai",
    feature = "secret-file"
))]
#[doc = include_str!("../README.md")]
#[doc = include_str!("../docs/getting-started.md")]
#[doc = include_str!("../docs/configuration.md")]
#[doc = include_str!("../docs/troubleshooting.md")]
#[doc = include_str!("../docs/rotation.md")]
#[doc = include_str!("../docs/http.md")]
pub struct Guides;

pub use chain::{Attempt, ChainError, KeyChain, Outcome, Resolution, ResolutionReport, Winner};
pub use environment::{Environment, NotUnicode};
pub use error::{Error, ErrorKind};
pub use headers::{
    ANTHROPIC_VERSION, ApiStyle, AuthHeaders, DEFAULT_ANTHROPIC_VERSION, HeaderError, X_API_KEY,
    X_DEBUG_AUTH,
};
pub use key::{ApiKey, Fingerprint, InvalidKey, KEY_PREFIX, KeyPolicy, KeyProblem};
pub use provider::{
    DEFAULT_FILE_REFRESH, DEFAULT_LOCAL_REFRESH, DEFAULT_REMOTE_REFRESH, DEFAULT_RETRY_DELAY,
    DEFAULT_STALE_GRACE, KeyProvider, KeyProviderBuilder, KeySnapshot, RefreshError,
};
pub use source::{KeySource, Resolved, SourceError, SourceErrorKind, SourceKind, StaticSource};
#[cfg(any(feature = "env", feature = "secret-file"))]
pub use sources::DEFAULT_MAX_SECRET_FILE_SIZE;
#[cfg(feature = "secret-file")]
pub use sources::SecretFileSource;
#[cfg(feature = "aws")]
pub use sources::aws::{
    AwsSecretsManagerSettings, AwsSecretsManagerSource, AwsSecretsManagerSourceBuilder,
};
#[cfg(feature = "vault")]
pub use sources::vault::{KvVersion, SecretRef, VaultAuth, VaultSettings, VaultSource};
#[cfg(feature = "dotenv")]
pub use sources::{DotenvFile, DotenvSource};
#[cfg(feature = "env")]
pub use sources::{EnvFileSource, EnvSource};
pub use sources::{default_chain, default_chain_in};
pub use watch::WatchMode;
