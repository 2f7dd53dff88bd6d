//! The [`KeySource`] trait, what a source returns ([`Resolved`]) and how it fails
//! ([`SourceError`]).

use std::error::Error as StdError;
use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;
use serde::Serialize;

use crate::key::{ApiKey, InvalidKey};

/// A place a MegaLLM API key can come from.
///
/// The trait is object safe: a [`KeyChain`](crate::KeyChain) stores `Box<dyn KeySource>`.
///
/// # Implementing a source
///
/// ```
/// use async_trait::async_trait;
/// use megallm_auth::{ApiKey, KeyPolicy, KeySource, Resolved, SourceError, SourceKind};
///
/// #[derive(Debug)]
/// struct FromCommandLine(Option<String>);
///
/// #[async_trait]
/// impl KeySource for FromCommandLine {
///     fn label(&self) -> &str {
///         "args:--api-key"
///     }
///
///     async fn resolve(&self) -> Result<Resolved, SourceError> {
///         let Some(raw) = &self.0 else {
///             return Err(SourceError::not_found(self.label(), "--api-key was not given"));
///         };
///         let key = ApiKey::parse(raw, self.label(), KeyPolicy::Strict)?;
///         Ok(Resolved::new(key, self.label(), SourceKind::Static))
///     }
/// }
/// ```
#[async_trait]
pub trait KeySource: Send + Sync + fmt::Debug {
    /// Returns the stable label used in errors, logs and reports, written as the user would
    /// find the key: `env:MEGALLM_API_KEY`, `file:/run/secrets/megallm_api_key`, `dotenv:.env`.
    fn label(&self) -> &str;

    /// Returns the kind of backend. Caches use it to pick a refresh interval.
    fn kind(&self) -> SourceKind {
        SourceKind::Static
    }

    /// Looks the key up.
    ///
    /// # Errors
    ///
    /// [`SourceError`] with [`SourceErrorKind::NotFound`] when this source has no key, so a
    /// chain moves on; any other kind stops the chain.
    async fn resolve(&self) -> Result<Resolved, SourceError>;

    /// Returns the files this source reads, so a [`KeyProvider`](crate::KeyProvider) can watch
    /// their directories and re-resolve as soon as one changes. Sources that read no file
    /// return nothing, which is the default.
    fn watch_paths(&self) -> Vec<PathBuf> {
        Vec::new()
    }
}

#[async_trait]
impl<S: KeySource + ?Sized> KeySource for Box<S> {
    fn label(&self) -> &str {
        (**self).label()
    }

    fn kind(&self) -> SourceKind {
        (**self).kind()
    }

    async fn resolve(&self) -> Result<Resolved, SourceError> {
        (**self).resolve().await
    }

    fn watch_paths(&self) -> Vec<PathBuf> {
        (**self).watch_paths()
    }
}

/// The kind of backend a source reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SourceKind {
    /// An environment variable.
    Env,
    /// A file named by an environment variable, such as `MEGALLM_API_KEY_FILE`.
    EnvFile,
    /// A .env file.
    Dotenv,
    /// A secret file, such as a Docker or Kubernetes secret.
    SecretFile,
    /// AWS Secrets Manager.
    AwsSecretsManager,
    /// HashiCorp Vault or OpenBao.
    Vault,
    /// A key fixed in code, for tests and examples.
    Static,
}

impl SourceKind {
    /// Returns whether the backend is remote (AWS, Vault).
    pub fn is_remote(self) -> bool {
        matches!(self, SourceKind::AwsSecretsManager | SourceKind::Vault)
    }
}

/// A key found by a source, with where it came from.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Resolved {
    /// The key.
    pub key: ApiKey,
    /// Label of the source that found it.
    pub label: String,
    /// Kind of that source.
    pub kind: SourceKind,
    /// Version of the secret when the backend has one (AWS VersionId, Vault KV v2 version).
    pub version: Option<String>,
}

impl Resolved {
    /// Creates a result without a version.
    pub fn new(key: ApiKey, label: impl Into<String>, kind: SourceKind) -> Resolved {
        Resolved {
            key,
            label: label.into(),
            kind,
            version: None,
        }
    }

    /// Sets the backend's version of the secret.
    #[must_use]
    pub fn with_version(mut self, version: impl Into<String>) -> Resolved {
        self.version = Some(version.into());
        self
    }
}

/// Category of a source failure, chosen by what the caller does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SourceErrorKind {
    /// This source has no key; a chain tries the next source.
    NotFound,
    /// A key is present but malformed.
    InvalidKey,
    /// The source is configured wrongly (conflicting variables, bad path, bad setting).
    Misconfigured,
    /// The backend refused access (file permissions, IAM, Vault policy).
    Denied,
    /// The backend could not be reached or failed transiently; retrying later may work.
    Unavailable,
}

impl fmt::Display for SourceErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceErrorKind::NotFound => "not found",
            SourceErrorKind::InvalidKey => "invalid key",
            SourceErrorKind::Misconfigured => "misconfigured",
            SourceErrorKind::Denied => "denied",
            SourceErrorKind::Unavailable => "unavailable",
        })
    }
}

/// Failure of a source to return a key. The message names the source's location (variable, path, secret
/// id), never a key, token or response body.
#[derive(Debug)]
pub struct SourceError {
    kind: SourceErrorKind,
    label: String,
    message: String,
    cause: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl SourceError {
    /// Creates an error of `kind` for the source labelled `label`.
    pub fn new(
        kind: SourceErrorKind,
        label: impl Into<String>,
        message: impl Into<String>,
    ) -> SourceError {
        SourceError {
            kind,
            label: label.into(),
            message: message.into(),
            cause: None,
        }
    }

    /// Creates a [`SourceErrorKind::NotFound`] error.
    pub fn not_found(label: impl Into<String>, message: impl Into<String>) -> SourceError {
        SourceError::new(SourceErrorKind::NotFound, label, message)
    }

    /// Creates a [`SourceErrorKind::Misconfigured`] error.
    pub fn misconfigured(label: impl Into<String>, message: impl Into<String>) -> SourceError {
        SourceError::new(SourceErrorKind::Misconfigured, label, message)
    }

    /// Creates a [`SourceErrorKind::Denied`] error.
    pub fn denied(label: impl Into<String>, message: impl Into<String>) -> SourceError {
        SourceError::new(SourceErrorKind::Denied, label, message)
    }

    /// Creates a [`SourceErrorKind::Unavailable`] error.
    pub fn unavailable(label: impl Into<String>, message: impl Into<String>) -> SourceError {
        SourceError::new(SourceErrorKind::Unavailable, label, message)
    }

    /// Attaches the underlying error. Attach only errors whose text cannot contain a secret
    /// (an `std::io::Error` from the OS is fine; a parser error that quotes its input is not).
    #[must_use]
    pub fn with_cause(mut self, cause: impl StdError + Send + Sync + 'static) -> SourceError {
        self.cause = Some(Box::new(cause));
        self
    }

    /// Returns the category.
    pub fn kind(&self) -> SourceErrorKind {
        self.kind
    }

    /// Returns the label of the source that failed.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Returns the message without the label.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Returns whether a chain should move on to the next source.
    pub fn is_not_found(&self) -> bool {
        self.kind == SourceErrorKind::NotFound
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.label, self.message)
    }
}

impl StdError for SourceError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.cause
            .as_deref()
            .map(|cause| cause as &(dyn StdError + 'static))
    }
}

impl From<InvalidKey> for SourceError {
    fn from(error: InvalidKey) -> SourceError {
        SourceError {
            kind: SourceErrorKind::InvalidKey,
            label: error.source_label.clone(),
            message: format!("{}; {}", error.problem, error.problem.remedy()),
            cause: None,
        }
    }
}

/// A source that returns a key fixed in code, for tests and examples.
///
/// ```
/// # tokio_test_block_on(async {
/// use megallm_auth::{KeySource, StaticSource};
///
/// let source = StaticSource::new("sk-mega-TESTDOC00000000").unwrap();
/// let resolved = source.resolve().await.unwrap();
/// assert_eq!(resolved.label, "static");
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct StaticSource {
    label: String,
    key: Option<ApiKey>,
}

impl StaticSource {
    /// Creates a source labelled `static` that always returns `key`.
    ///
    /// # Errors
    ///
    /// [`InvalidKey`] when `key` fails the strict shape check.
    pub fn new(key: &str) -> Result<StaticSource, InvalidKey> {
        StaticSource::with_label("static", key)
    }

    /// Creates a source with a custom label that always returns `key`.
    ///
    /// # Errors
    ///
    /// [`InvalidKey`] when `key` fails the strict shape check.
    pub fn with_label(label: &str, key: &str) -> Result<StaticSource, InvalidKey> {
        let key = ApiKey::parse(key, label, crate::KeyPolicy::Strict)?;
        Ok(StaticSource {
            label: label.to_owned(),
            key: Some(key),
        })
    }

    /// Creates a source that never has a key, for testing chains.
    pub fn empty(label: &str) -> StaticSource {
        StaticSource {
            label: label.to_owned(),
            key: None,
        }
    }
}

#[async_trait]
impl KeySource for StaticSource {
    fn label(&self) -> &str {
        &self.label
    }

    async fn resolve(&self) -> Result<Resolved, SourceError> {
        match &self.key {
            Some(key) => Ok(Resolved::new(key.clone(), &self.label, SourceKind::Static)),
            None => Err(SourceError::not_found(&self.label, "no key configured")),
        }
    }
}
