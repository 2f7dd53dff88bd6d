//! [`VaultSource`]: the key from a KV secret in HashiCorp Vault or OpenBao.
//!
//! ```no_run
//! # async fn run() -> Result<(), megallm_auth::SourceError> {
//! use megallm_auth::KeySource;
//! use megallm_auth::sources::vault::{SecretRef, VaultAuth, VaultSource};
//!
//! let source = VaultSource::builder("secret", "megallm")
//!     .address("https://vault.example.com:8200")
//!     .auth(VaultAuth::approle(
//!         "4f6c0f2e-role-id",
//!         SecretRef::File("/run/secrets/vault_secret_id".into()),
//!     ))
//!     .build()?;
//! let resolved = source.resolve().await?;
//! println!("key {} from {}", resolved.key.fingerprint(), resolved.label);
//! # Ok(())
//! # }
//! ```
//!
//! # Source details
//!
//! - Label: `vault:<mount>/<path>#<field>`, such as `vault:secret/megallm#api_key`.
//! - Reads: KV v1 `GET /v1/<mount>/<path>` or KV v2 `GET /v1/<mount>/data/<path>`. The KV
//!   version is configured, implied by a `data/` path, read from `sys/mounts` when the token may
//!   read it, or else found by trying v2 and then v1.
//! - Environment: `VAULT_ADDR`, `VAULT_NAMESPACE`, `VAULT_CACERT`, `VAULT_CAPATH`,
//!   `VAULT_CLIENT_CERT`, `VAULT_CLIENT_KEY`, and for the default token `VAULT_TOKEN` and
//!   `~/.vault-token`. Configured values win over the environment.
//! - Not found (the chain moves on): no secret, no mount, or a KV version mismatch, each with a
//!   hint, unless the source is `required`. A secret without the field is misconfigured.
//! - Denied: Vault responded 403. The message names address, namespace, mount and path and the
//!   policy path to grant.
//! - Unavailable: sealed, HTTP 429 or 5xx, connection failure or timeout.
//! - Token lifecycle: the TTL is read with `auth/token/lookup-self` after login. A renewable
//!   token is renewed at two thirds of its TTL on the next resolve. After a 403, a login method
//!   logs in once more and retries.

mod auth;
mod client;
mod failure;
mod path;
mod session;
mod settings;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use crate::environment::Environment;
use crate::key::KeyPolicy;
use crate::source::{KeySource, Resolved, SourceError, SourceKind};

pub use auth::{KUBERNETES_TOKEN_PATH, SecretRef, VaultAuth};
pub use settings::{VaultAuthSettings, VaultSettings};

use client::{Client, Connection};
use session::Session;

/// Field of the secret that contains the key when none is configured.
pub const DEFAULT_FIELD: &str = "api_key";

/// Timeout of each request to Vault when none is configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Version of a KV secrets engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KvVersion {
    /// KV version 1: secrets at `<mount>/<path>`, no versions.
    V1,
    /// KV version 2: secrets at `<mount>/data/<path>`, versioned.
    V2,
}

impl KvVersion {
    fn other(self) -> KvVersion {
        match self {
            KvVersion::V1 => KvVersion::V2,
            KvVersion::V2 => KvVersion::V1,
        }
    }

    /// Returns the API path of `path` in `mount` for this version.
    fn api_path(self, mount: &str, path: &str) -> String {
        match self {
            KvVersion::V1 => format!("{mount}/{path}"),
            KvVersion::V2 => format!("{mount}/data/{path}"),
        }
    }
}

impl fmt::Display for KvVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KvVersion::V1 => "1",
            KvVersion::V2 => "2",
        })
    }
}

/// A key source that reads one field of a KV secret in Vault or OpenBao.
///
/// Build it with [`VaultSource::builder`] or [`VaultSource::from_settings`]. One source keeps
/// one Vault token and reuses it across resolves; concurrent resolves wait for each other.
pub struct VaultSource {
    label: String,
    mount: String,
    path: String,
    field: String,
    kv_configured: Option<KvVersion>,
    address: String,
    namespace: Option<String>,
    login_namespace: Option<String>,
    required: bool,
    policy: KeyPolicy,
    auth: VaultAuth,
    environment: Environment,
    session: Mutex<Session>,
}

impl VaultSource {
    /// Starts a builder for the secret at `path` in the KV mount `mount`.
    pub fn builder(mount: impl Into<String>, path: impl Into<String>) -> VaultSourceBuilder {
        VaultSourceBuilder {
            mount: mount.into(),
            path: path.into(),
            field: DEFAULT_FIELD.to_owned(),
            address: None,
            kv_version: None,
            namespace: None,
            login_namespace: None,
            ca_file: None,
            ca_dir: None,
            client_cert: None,
            timeout: DEFAULT_TIMEOUT,
            required: false,
            policy: KeyPolicy::default(),
            auth: VaultAuth::default(),
            environment: Environment::process(),
        }
    }

    /// Returns the Vault address the source talks to.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Returns the namespace sent with reads, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// Returns the namespace sent with the login, if any.
    pub fn login_namespace(&self) -> Option<&str> {
        self.login_namespace.as_deref()
    }

    /// Describes where the request went, for messages: address and namespace.
    fn location(&self) -> String {
        match &self.namespace {
            Some(namespace) => format!("Vault at {}, namespace {namespace}", self.address),
            None => format!("Vault at {} (no namespace)", self.address),
        }
    }
}

impl fmt::Debug for VaultSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultSource")
            .field("label", &self.label)
            .field("address", &self.address)
            .field("namespace", &self.namespace)
            .field("login_namespace", &self.login_namespace)
            .field("mount", &self.mount)
            .field("path", &self.path)
            .field("field", &self.field)
            .field("kv_version", &self.kv_configured)
            .field("required", &self.required)
            .field("policy", &self.policy)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl KeySource for VaultSource {
    fn label(&self) -> &str {
        &self.label
    }

    fn kind(&self) -> SourceKind {
        SourceKind::Vault
    }

    async fn resolve(&self) -> Result<Resolved, SourceError> {
        let mut session = self.session.lock().await;
        self.resolve_with(&mut session).await
    }
}

/// Builder of a [`VaultSource`].
///
/// Values set here win over the environment (`VAULT_ADDR`, `VAULT_NAMESPACE`, ...), which is
/// read from the process unless [`VaultSourceBuilder::environment`] injects another.
#[derive(Debug)]
#[must_use]
pub struct VaultSourceBuilder {
    mount: String,
    path: String,
    field: String,
    address: Option<String>,
    kv_version: Option<KvVersion>,
    namespace: Option<String>,
    login_namespace: Option<String>,
    ca_file: Option<PathBuf>,
    ca_dir: Option<PathBuf>,
    client_cert: Option<(PathBuf, PathBuf)>,
    timeout: Duration,
    required: bool,
    policy: KeyPolicy,
    auth: VaultAuth,
    environment: Environment,
}

impl VaultSourceBuilder {
    /// Sets the address, such as `https://vault.example.com:8200`. Default: `VAULT_ADDR`.
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = Some(address.into());
        self
    }

    /// Sets the field of the secret that contains the key. Default: `api_key`.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = field.into();
        self
    }

    /// Sets the KV version. Default: detected.
    pub fn kv_version(mut self, version: KvVersion) -> Self {
        self.kv_version = Some(version);
        self
    }

    /// Sets the namespace of the secret. Default: `VAULT_NAMESPACE`.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Sets the namespace of the login method. Default: the namespace of the secret.
    pub fn login_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.login_namespace = Some(namespace.into());
        self
    }

    /// Sets a PEM file of CA certificates to trust. Default: `VAULT_CACERT`.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Sets a directory of PEM CA certificates to trust. Default: `VAULT_CAPATH`.
    pub fn ca_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_dir = Some(path.into());
        self
    }

    /// Sets a client certificate and its private key, both PEM files, for TLS client
    /// authentication. Default: `VAULT_CLIENT_CERT` and `VAULT_CLIENT_KEY`.
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_cert = Some((cert.into(), key.into()));
        self
    }

    /// Sets the timeout of each request. Default: [`DEFAULT_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Makes a missing secret an error that stops the chain instead of "not found".
    pub fn required(mut self, required: bool) -> Self {
        self.required = required;
        self
    }

    /// Sets how strictly the `sk-mega-` prefix is checked. Default: strict.
    pub fn policy(mut self, policy: KeyPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets how the source authenticates. Default: [`VaultAuth::token`].
    pub fn auth(mut self, auth: VaultAuth) -> Self {
        self.auth = auth;
        self
    }

    /// Sets where `VAULT_*` variables, `HOME` and token variables are read. Default: the
    /// process environment.
    pub fn environment(mut self, environment: Environment) -> Self {
        self.environment = environment;
        self
    }

    /// Validates the settings, reads the TLS files and builds the source. No request is sent
    /// until the first resolve.
    ///
    /// # Errors
    ///
    /// [`SourceErrorKind::Misconfigured`](crate::SourceErrorKind::Misconfigured) for a missing
    /// or invalid address, an invalid mount, path or field, an unreadable CA or client
    /// certificate file, or a zero timeout.
    pub fn build(self) -> Result<VaultSource, SourceError> {
        let raw_label = format!(
            "vault:{}/{}#{}",
            self.mount.trim().trim_matches('/'),
            self.path.trim().trim_matches('/'),
            self.field
        );
        let misconfigured = |message: String| SourceError::misconfigured(&raw_label, message);

        let secret =
            path::normalise(&self.mount, &self.path, self.kv_version).map_err(&misconfigured)?;
        if self.field.trim().is_empty() {
            return Err(misconfigured(
                "the Vault field is empty; set field, such as field = \"api_key\"".into(),
            ));
        }
        if self.timeout.is_zero() {
            return Err(misconfigured("the Vault request timeout is zero".into()));
        }
        let label = format!("vault:{}/{}#{}", secret.mount, secret.path, self.field);
        let misconfigured = |message: String| SourceError::misconfigured(&label, message);

        let env = EnvReader {
            environment: &self.environment,
        };
        let address = match self.address {
            Some(address) => address,
            None => env
                .var("VAULT_ADDR")
                .map_err(&misconfigured)?
                .ok_or_else(|| {
                    misconfigured(
                        "no Vault address: set VAULT_ADDR or the address setting, such as \
                     https://vault.example.com:8200"
                            .into(),
                    )
                })?,
        };
        let address = check_address(&address).map_err(&misconfigured)?;

        let namespace = match self.namespace {
            Some(namespace) => clean_namespace(&namespace),
            None => env
                .var("VAULT_NAMESPACE")
                .map_err(&misconfigured)?
                .and_then(|namespace| clean_namespace(&namespace)),
        };
        let login_namespace = match self.login_namespace {
            Some(namespace) => clean_namespace(&namespace),
            None => namespace.clone(),
        };

        if let Some(skip) = env.var("VAULT_SKIP_VERIFY").map_err(&misconfigured)?
            && !matches!(skip.to_ascii_lowercase().as_str(), "" | "0" | "f" | "false")
        {
            tracing::warn!(
                source = %label,
                "VAULT_SKIP_VERIFY is set but ignored: TLS certificates are always verified; \
                 set VAULT_CACERT or ca_cert to trust a private CA"
            );
        }

        let ca_files = ca_files(&env, self.ca_file, self.ca_dir).map_err(&misconfigured)?;
        let identity = identity(&env, self.client_cert).map_err(&misconfigured)?;
        let connection = Connection {
            address: address.clone(),
            ca_files,
            identity,
            timeout: self.timeout,
        };

        let kv_client = Client::new(&connection, namespace.as_deref()).map_err(&misconfigured)?;
        let login_client = if self.auth.is_login() && login_namespace != namespace {
            Some(Client::new(&connection, login_namespace.as_deref()).map_err(&misconfigured)?)
        } else {
            None
        };

        let kv_configured = self.kv_version.or(secret.implied_version);
        Ok(VaultSource {
            label,
            mount: secret.mount,
            path: secret.path,
            field: self.field,
            kv_configured,
            address,
            namespace,
            login_namespace,
            required: self.required,
            policy: self.policy,
            auth: self.auth,
            environment: self.environment,
            session: Mutex::new(Session::new(kv_client, login_client, kv_configured)),
        })
    }
}

/// Reads variables, treating an empty value as unset.
struct EnvReader<'a> {
    environment: &'a Environment,
}

impl EnvReader<'_> {
    fn var(&self, name: &str) -> Result<Option<String>, String> {
        let value = self
            .environment
            .var(name)
            .map_err(|error| error.to_string())?;
        Ok(value
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty()))
    }
}

/// Checks that `address` is an http or https URL without credentials, query or fragment.
fn check_address(address: &str) -> Result<String, String> {
    let trimmed = address.trim();
    // Security: a URL that fails to parse may hold credentials, so it is not echoed.
    let url = url::Url::parse(trimmed).map_err(|_| {
        "the Vault address is not a valid URL; write it like https://vault.example.com:8200"
            .to_owned()
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "the Vault address contains a user name or password; remove them and use an auth \
             method"
                .to_owned(),
        );
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "the Vault address {trimmed} uses the scheme {}; use https:// (or http:// for a \
             local dev server)",
            url.scheme()
        ));
    }
    if url.host_str().is_none() || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "the Vault address {trimmed} needs a host and no query or fragment"
        ));
    }

    let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    if url.scheme() == "http" && !loopback {
        tracing::warn!(
            address = trimmed,
            "the Vault address uses http:// on a non-loopback host, so the Vault token \
             travels unencrypted; use https://"
        );
    }
    Ok(trimmed.trim_end_matches('/').to_owned())
}

/// Trims slashes; an empty namespace or `root` means none.
fn clean_namespace(namespace: &str) -> Option<String> {
    let cleaned = namespace.trim().trim_matches('/');
    (!cleaned.is_empty() && cleaned != "root").then(|| cleaned.to_owned())
}

/// Lists the CA file and the regular files of the CA directory.
fn ca_files(
    env: &EnvReader<'_>,
    ca_file: Option<PathBuf>,
    ca_dir: Option<PathBuf>,
) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();

    let ca_file = match ca_file {
        Some(path) => Some(path),
        None => env.var("VAULT_CACERT")?.map(PathBuf::from),
    };
    if let Some(path) = ca_file {
        if !path.is_file() {
            return Err(format!(
                "the CA certificate file {} does not exist or is not a file",
                path.display()
            ));
        }
        if !holds_pem_certificate(&path)? {
            return Err(format!(
                "the CA certificate file {} does not hold PEM certificates",
                path.display()
            ));
        }
        files.push(path);
    }

    let ca_dir = match ca_dir {
        Some(path) => Some(path),
        None => env.var("VAULT_CAPATH")?.map(PathBuf::from),
    };
    if let Some(dir) = ca_dir {
        let entries = std::fs::read_dir(&dir).map_err(|error| {
            format!("failed to list the CA directory {}: {error}", dir.display())
        })?;
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_file() && holds_pem_certificate(&path)? {
                found.push(path);
            }
        }
        if found.is_empty() {
            return Err(format!(
                "the CA directory {} holds no PEM certificate files",
                dir.display()
            ));
        }
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

/// Returns whether the file contains at least one PEM certificate.
fn holds_pem_certificate(path: &std::path::Path) -> Result<bool, String> {
    let contents = std::fs::read(path)
        .map_err(|error| format!("failed to read {}: {error}", path.display()))?;
    let marker = b"-----BEGIN CERTIFICATE-----";
    Ok(contents
        .windows(marker.len())
        .any(|window| window == marker))
}

/// Reads the client certificate and key into one TLS identity.
fn identity(
    env: &EnvReader<'_>,
    configured: Option<(PathBuf, PathBuf)>,
) -> Result<Option<vaultrs::client::Identity>, String> {
    let (cert, key) = match configured {
        Some(pair) => pair,
        None => match (env.var("VAULT_CLIENT_CERT")?, env.var("VAULT_CLIENT_KEY")?) {
            (Some(cert), Some(key)) => (PathBuf::from(cert), PathBuf::from(key)),
            (None, None) => return Ok(None),
            _ => {
                return Err(
                    "set both VAULT_CLIENT_CERT and VAULT_CLIENT_KEY, or neither".to_owned(),
                );
            }
        },
    };

    let read = |path: &PathBuf| {
        std::fs::read(path)
            .map(Zeroizing::new)
            .map_err(|error| format!("failed to read {}: {error}", path.display()))
    };
    let mut pem = read(&cert)?;
    pem.push(b'\n');
    pem.extend_from_slice(&read(&key)?);

    // Security: the buffer contains the private key and is wiped on drop. reqwest's error is
    // replaced because it may describe the input.
    vaultrs::client::Identity::from_pem(&pem)
        .map(Some)
        .map_err(|_| {
            format!(
                "the client certificate {} and key {} are not a PEM certificate and private key",
                cert.display(),
                key.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder() -> VaultSourceBuilder {
        VaultSource::builder("secret", "megallm").environment(Environment::from_pairs([(
            "VAULT_ADDR",
            "http://127.0.0.1:1",
        )]))
    }

    #[test]
    fn label_uses_normalised_path() {
        let source = builder().build().unwrap();
        assert_eq!(source.label(), "vault:secret/megallm#api_key");
        let source = VaultSource::builder("secret", "/v1/secret/data/megallm")
            .environment(Environment::from_pairs([(
                "VAULT_ADDR",
                "http://127.0.0.1:1",
            )]))
            .field("key")
            .build()
            .unwrap();
        assert_eq!(source.label(), "vault:secret/megallm#key");
        assert_eq!(source.kv_configured, Some(KvVersion::V2));
    }

    #[test]
    fn missing_address_is_misconfigured() {
        let error = VaultSource::builder("secret", "megallm")
            .environment(Environment::from_pairs::<_, String, String>([]))
            .build()
            .unwrap_err();
        assert_eq!(error.kind(), crate::SourceErrorKind::Misconfigured);
        assert!(error.message().contains("VAULT_ADDR"), "{error}");
    }

    #[test]
    fn address_with_password_is_not_echoed() {
        let error = builder()
            .address("https://user:hunter2@vault.example.com")
            .build()
            .unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
        assert!(error.message().contains("user name or password"), "{error}");
    }

    #[test]
    fn invalid_addresses_are_rejected() {
        for address in [
            "vault.example.com",
            "ftp://vault.example.com",
            "http://h/?q=1",
            "::",
        ] {
            let error = builder().address(address).build().unwrap_err();
            assert_eq!(
                error.kind(),
                crate::SourceErrorKind::Misconfigured,
                "{address}"
            );
        }
    }

    #[test]
    fn namespace_comes_from_environment() {
        let source = VaultSource::builder("secret", "megallm")
            .environment(Environment::from_pairs([
                ("VAULT_ADDR", "http://127.0.0.1:1"),
                ("VAULT_NAMESPACE", "/admin/llm/"),
            ]))
            .build()
            .unwrap();
        assert_eq!(source.namespace(), Some("admin/llm"));
        assert_eq!(source.login_namespace(), Some("admin/llm"));
    }

    #[test]
    fn configured_namespace_wins() {
        let source = VaultSource::builder("secret", "megallm")
            .environment(Environment::from_pairs([
                ("VAULT_ADDR", "http://127.0.0.1:1"),
                ("VAULT_NAMESPACE", "env-ns"),
            ]))
            .namespace("config-ns")
            .login_namespace("root")
            .build()
            .unwrap();
        assert_eq!(source.namespace(), Some("config-ns"));
        assert_eq!(source.login_namespace(), None);
    }

    #[test]
    fn missing_ca_file_is_misconfigured() {
        let error = builder()
            .ca_file("/nonexistent/ca.pem")
            .build()
            .unwrap_err();
        assert!(error.message().contains("/nonexistent/ca.pem"), "{error}");
    }

    #[test]
    fn half_client_cert_env_is_misconfigured() {
        let error = VaultSource::builder("secret", "megallm")
            .environment(Environment::from_pairs([
                ("VAULT_ADDR", "http://127.0.0.1:1"),
                ("VAULT_CLIENT_CERT", "/tmp/cert.pem"),
            ]))
            .build()
            .unwrap_err();
        assert!(error.message().contains("VAULT_CLIENT_KEY"), "{error}");
    }

    #[test]
    fn empty_field_is_misconfigured() {
        let error = builder().field(" ").build().unwrap_err();
        assert!(error.message().contains("field is empty"), "{error}");
    }

    #[test]
    fn zero_timeout_is_misconfigured() {
        let error = builder().timeout(Duration::ZERO).build().unwrap_err();
        assert!(error.message().contains("timeout"), "{error}");
    }
}
