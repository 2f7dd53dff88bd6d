//! [`VaultSettings`]: the serde form of a Vault source, as written in `megallm.toml`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, IgnoredAny, Visitor};
use serde::{Deserialize, Deserializer};

use super::auth::{SecretRef, VaultAuth};
use super::{DEFAULT_FIELD, KvVersion, VaultSource};
use crate::environment::Environment;
use crate::key::KeyPolicy;
use crate::source::SourceError;

/// Settings of one Vault source.
///
/// ```toml
/// [[megallm.sources]]
/// type = "vault"
/// address = "https://vault.example.com:8200"
/// mount = "secret"
/// path = "megallm"
/// field = "api_key"
/// auth = { method = "approle", role_id = "4f6c0f2e", secret_id_file = "/run/secrets/secret_id" }
/// ```
///
/// Unset values fall back to the environment (`VAULT_ADDR`, `VAULT_NAMESPACE`, ...). Tokens,
/// secret ids and JWTs are never written here: they come from files or environment variables.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct VaultSettings {
    /// Address, such as `https://vault.example.com:8200`. Default: `VAULT_ADDR`.
    #[serde(default)]
    pub address: Option<String>,
    /// Mount of the KV engine. Default: `secret`.
    #[serde(default = "default_mount")]
    pub mount: String,
    /// Path of the secret inside the mount, such as `megallm`.
    pub path: String,
    /// Field of the secret that contains the key. Default: `api_key`.
    #[serde(default = "default_field")]
    pub field: String,
    /// KV version, 1 or 2. Default: detected.
    #[serde(default, deserialize_with = "deserialize_kv_version")]
    pub kv_version: Option<KvVersion>,
    /// Namespace of the secret. Default: `VAULT_NAMESPACE`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Namespace of the login method. Default: the namespace of the secret.
    #[serde(default)]
    pub login_namespace: Option<String>,
    /// PEM file of CA certificates. Default: `VAULT_CACERT`.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// Directory of PEM CA certificates. Default: `VAULT_CAPATH`.
    #[serde(default)]
    pub ca_path: Option<PathBuf>,
    /// PEM client certificate for TLS client authentication. Default: `VAULT_CLIENT_CERT`.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of the client certificate. Default: `VAULT_CLIENT_KEY`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Timeout of each request, in seconds. Default: 10.
    #[serde(default, deserialize_with = "deserialize_seconds")]
    pub timeout_secs: Option<u64>,
    /// Makes a missing secret an error that stops the chain. Default: false.
    #[serde(default)]
    pub required: bool,
    /// Auth method. Default: a token from `VAULT_TOKEN` or `~/.vault-token`.
    #[serde(default)]
    pub auth: VaultAuthSettings,
}

/// Settings of the auth method, tagged by `method`.
///
/// Every secret is named by a file (`*_file`) or an environment variable (`*_env`). The inline
/// fields `token`, `secret_id` and `jwt` exist only to reject them with a clear message; their
/// values are discarded unread.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum VaultAuthSettings {
    /// A token from a file or variable; with neither, `VAULT_TOKEN` and then `~/.vault-token`.
    Token {
        /// File holding the token.
        #[serde(default)]
        token_file: Option<PathBuf>,
        /// Environment variable holding the token.
        #[serde(default)]
        token_env: Option<String>,
        /// Rejected: an inline token.
        #[serde(default)]
        token: Option<Rejected>,
    },
    /// AppRole login.
    Approle {
        /// Mount of the AppRole method. Default: `approle`.
        #[serde(default)]
        mount: Option<String>,
        /// Role id of the role.
        role_id: String,
        /// File holding the secret id.
        #[serde(default)]
        secret_id_file: Option<PathBuf>,
        /// Environment variable holding the secret id.
        #[serde(default)]
        secret_id_env: Option<String>,
        /// Rejected: an inline secret id.
        #[serde(default)]
        secret_id: Option<Rejected>,
    },
    /// Kubernetes login with the pod's service-account token.
    Kubernetes {
        /// Mount of the Kubernetes method. Default: `kubernetes`.
        #[serde(default)]
        mount: Option<String>,
        /// Vault role.
        role: String,
        /// Service-account token file. Default: the in-pod path.
        #[serde(default)]
        token_file: Option<PathBuf>,
        /// Rejected: an inline JWT.
        #[serde(default)]
        jwt: Option<Rejected>,
    },
    /// JWT login with a JWT from a file.
    Jwt {
        /// Mount of the JWT method. Default: `jwt`.
        #[serde(default)]
        mount: Option<String>,
        /// Vault role.
        role: String,
        /// File holding the JWT.
        token_file: PathBuf,
        /// Rejected: an inline JWT.
        #[serde(default)]
        jwt: Option<Rejected>,
    },
}

impl std::fmt::Debug for VaultAuthSettings {
    /// Prints every field but the role id, which Vault treats as sensitive.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VaultAuthSettings::Token {
                token_file,
                token_env,
                token,
            } => f
                .debug_struct("Token")
                .field("token_file", token_file)
                .field("token_env", token_env)
                .field("token", token)
                .finish(),
            VaultAuthSettings::Approle {
                mount,
                secret_id_file,
                secret_id_env,
                secret_id,
                ..
            } => f
                .debug_struct("Approle")
                .field("mount", mount)
                .field("role_id", &"[REDACTED]")
                .field("secret_id_file", secret_id_file)
                .field("secret_id_env", secret_id_env)
                .field("secret_id", secret_id)
                .finish(),
            VaultAuthSettings::Kubernetes {
                mount,
                role,
                token_file,
                jwt,
            } => f
                .debug_struct("Kubernetes")
                .field("mount", mount)
                .field("role", role)
                .field("token_file", token_file)
                .field("jwt", jwt)
                .finish(),
            VaultAuthSettings::Jwt {
                mount,
                role,
                token_file,
                jwt,
            } => f
                .debug_struct("Jwt")
                .field("mount", mount)
                .field("role", role)
                .field("token_file", token_file)
                .field("jwt", jwt)
                .finish(),
        }
    }
}

impl Default for VaultAuthSettings {
    fn default() -> VaultAuthSettings {
        VaultAuthSettings::Token {
            token_file: None,
            token_env: None,
            token: None,
        }
    }
}

/// A setting that must not be used; its value is discarded while parsing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejected;

impl<'de> Deserialize<'de> for Rejected {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Rejected, D::Error> {
        // Security: IgnoredAny skips the value without keeping or quoting it.
        IgnoredAny::deserialize(deserializer)?;
        Ok(Rejected)
    }
}

fn default_mount() -> String {
    "secret".to_owned()
}

fn default_field() -> String {
    DEFAULT_FIELD.to_owned()
}

/// Accepts `1`, `2`, `"1"`, `"2"`, `"v1"` and `"v2"`, because layered config from environment
/// variables delivers strings.
fn deserialize_kv_version<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<KvVersion>, D::Error> {
    struct KvVisitor;

    impl Visitor<'_> for KvVisitor {
        type Value = Option<KvVersion>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("KV version 1 or 2")
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
            match value {
                1 => Ok(Some(KvVersion::V1)),
                2 => Ok(Some(KvVersion::V2)),
                _ => Err(E::custom("kv_version must be 1 or 2")),
            }
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
            u64::try_from(value)
                .map_err(|_| E::custom("kv_version must be 1 or 2"))
                .and_then(|value| self.visit_u64(value))
        }

        fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
            match value.trim().trim_start_matches(['v', 'V']) {
                "1" => Ok(Some(KvVersion::V1)),
                "2" => Ok(Some(KvVersion::V2)),
                _ => Err(E::custom("kv_version must be 1 or 2")),
            }
        }
    }

    deserializer.deserialize_any(KvVisitor)
}

/// Accepts a whole number of seconds as a number or a string.
fn deserialize_seconds<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    struct SecondsVisitor;

    impl Visitor<'_> for SecondsVisitor {
        type Value = Option<u64>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a whole number of seconds")
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
            Ok(Some(value))
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
            u64::try_from(value)
                .map(Some)
                .map_err(|_| E::custom("timeout_secs must not be negative"))
        }

        fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
            value
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| E::custom("timeout_secs must be a whole number of seconds"))
        }
    }

    deserializer.deserialize_any(SecondsVisitor)
}

impl VaultSource {
    /// Builds a source from settings, reading `VAULT_*` variables from `environment`.
    ///
    /// # Errors
    ///
    /// [`SourceErrorKind::Misconfigured`](crate::SourceErrorKind::Misconfigured) for an inline
    /// token, secret id or JWT, an auth method with no place to read its secret, two places for
    /// one secret, and every error of [`VaultSourceBuilder::build`](super::VaultSourceBuilder::build).
    pub fn from_settings(
        settings: &VaultSettings,
        environment: &Environment,
        policy: KeyPolicy,
    ) -> Result<VaultSource, SourceError> {
        let label = format!(
            "vault:{}/{}#{}",
            settings.mount.trim().trim_matches('/'),
            settings.path.trim().trim_matches('/'),
            settings.field
        );
        let auth = auth_from_settings(&settings.auth)
            .map_err(|message| SourceError::misconfigured(&label, message))?;

        let mut builder = VaultSource::builder(&settings.mount, &settings.path)
            .field(&settings.field)
            .required(settings.required)
            .policy(policy)
            .auth(auth)
            .environment(environment.clone());
        if let Some(address) = &settings.address {
            builder = builder.address(address);
        }
        if let Some(version) = settings.kv_version {
            builder = builder.kv_version(version);
        }
        if let Some(namespace) = &settings.namespace {
            builder = builder.namespace(namespace);
        }
        if let Some(namespace) = &settings.login_namespace {
            builder = builder.login_namespace(namespace);
        }
        if let Some(path) = &settings.ca_cert {
            builder = builder.ca_file(path);
        }
        if let Some(path) = &settings.ca_path {
            builder = builder.ca_dir(path);
        }
        match (&settings.client_cert, &settings.client_key) {
            (Some(cert), Some(key)) => builder = builder.client_cert(cert, key),
            (None, None) => {}
            _ => {
                return Err(SourceError::misconfigured(
                    &label,
                    "set both client_cert and client_key, or neither",
                ));
            }
        }
        if let Some(seconds) = settings.timeout_secs {
            builder = builder.timeout(Duration::from_secs(seconds));
        }
        builder.build()
    }
}

fn auth_from_settings(settings: &VaultAuthSettings) -> Result<VaultAuth, String> {
    match settings {
        VaultAuthSettings::Token {
            token_file,
            token_env,
            token,
        } => {
            if token.is_some() {
                return Err(
                    "auth.token is not allowed in settings, because config files are \
                            often shared; set token_file or token_env instead"
                        .to_owned(),
                );
            }
            match (token_file, token_env) {
                (Some(_), Some(_)) => Err("set auth.token_file or auth.token_env, not both".into()),
                (Some(file), None) => Ok(VaultAuth::token_from(SecretRef::File(file.clone()))),
                (None, Some(name)) => Ok(VaultAuth::token_from(SecretRef::Env(name.clone()))),
                (None, None) => Ok(VaultAuth::token()),
            }
        }
        VaultAuthSettings::Approle {
            mount,
            role_id,
            secret_id_file,
            secret_id_env,
            secret_id,
        } => {
            if secret_id.is_some() {
                return Err(
                    "auth.secret_id is not allowed in settings, because config files \
                            are often shared; set secret_id_file or secret_id_env instead"
                        .to_owned(),
                );
            }
            if role_id.trim().is_empty() {
                return Err("auth.role_id is empty; set the AppRole role id".to_owned());
            }
            let secret = match (secret_id_file, secret_id_env) {
                (Some(file), None) => SecretRef::File(file.clone()),
                (None, Some(name)) => SecretRef::Env(name.clone()),
                (Some(_), Some(_)) => {
                    return Err("set auth.secret_id_file or auth.secret_id_env, not both".into());
                }
                (None, None) => {
                    return Err(
                        "AppRole login needs auth.secret_id_file or auth.secret_id_env".to_owned(),
                    );
                }
            };
            let auth = VaultAuth::approle(role_id.trim(), secret);
            Ok(with_optional_mount(auth, mount))
        }
        VaultAuthSettings::Kubernetes {
            mount,
            role,
            token_file,
            jwt,
        } => {
            if jwt.is_some() {
                return Err(
                    "auth.jwt is not allowed in settings; set token_file to the \
                            service-account token file"
                        .to_owned(),
                );
            }
            let mut auth = VaultAuth::kubernetes(non_empty_role(role)?);
            if let Some(path) = token_file {
                auth = auth.with_token_file(path);
            }
            Ok(with_optional_mount(auth, mount))
        }
        VaultAuthSettings::Jwt {
            mount,
            role,
            token_file,
            jwt,
        } => {
            if jwt.is_some() {
                return Err(
                    "auth.jwt is not allowed in settings; set token_file to the file \
                            that holds the JWT"
                        .to_owned(),
                );
            }
            let auth = VaultAuth::jwt(non_empty_role(role)?, token_file.clone());
            Ok(with_optional_mount(auth, mount))
        }
    }
}

fn non_empty_role(role: &str) -> Result<&str, String> {
    let role = role.trim();
    if role.is_empty() {
        Err("auth.role is empty; set the Vault role to log in as".to_owned())
    } else {
        Ok(role)
    }
}

fn with_optional_mount(auth: VaultAuth, mount: &Option<String>) -> VaultAuth {
    match mount {
        Some(mount) => auth.with_mount(mount.trim().trim_matches('/')),
        None => auth,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<VaultSettings, String> {
        // serde_json replaces the config crate here, because both drive the same Deserialize impl.
        serde_json::from_str(text).map_err(|error| error.to_string())
    }

    fn env() -> Environment {
        Environment::from_pairs([("VAULT_ADDR", "http://127.0.0.1:1")])
    }

    #[test]
    fn defaults_apply() {
        let settings = parse(r#"{"path": "megallm"}"#).unwrap();
        assert_eq!(settings.mount, "secret");
        assert_eq!(settings.field, "api_key");
        assert!(matches!(settings.auth, VaultAuthSettings::Token { .. }));
        let source = VaultSource::from_settings(&settings, &env(), KeyPolicy::Strict).unwrap();
        assert_eq!(
            crate::KeySource::label(&source),
            "vault:secret/megallm#api_key"
        );
    }

    #[test]
    fn approle_settings_build() {
        let settings = parse(
            r#"{"path": "megallm", "kv_version": "2", "timeout_secs": "5",
                "auth": {"method": "approle", "role_id": "r", "secret_id_env": "SECRET_ID"}}"#,
        )
        .unwrap();
        assert_eq!(settings.kv_version, Some(KvVersion::V2));
        assert_eq!(settings.timeout_secs, Some(5));
        VaultSource::from_settings(&settings, &env(), KeyPolicy::Strict).unwrap();
    }

    #[test]
    fn unknown_field_is_rejected() {
        let error = parse(r#"{"path": "megallm", "tokn_file": "/x"}"#).unwrap_err();
        assert!(error.contains("tokn_file"), "{error}");
    }

    #[test]
    fn inline_secrets_are_rejected() {
        let cases = [
            r#"{"method": "token", "token": "hvs.CANARY"}"#,
            r#"{"method": "approle", "role_id": "r", "secret_id": "CANARY"}"#,
            r#"{"method": "kubernetes", "role": "r", "jwt": "CANARY"}"#,
            r#"{"method": "jwt", "role": "r", "token_file": "/t", "jwt": "CANARY"}"#,
        ];
        for auth in cases {
            let settings = parse(&format!(r#"{{"path": "megallm", "auth": {auth}}}"#)).unwrap();
            let error = VaultSource::from_settings(&settings, &env(), KeyPolicy::Strict)
                .expect_err("inline secret is rejected");
            assert_eq!(error.kind(), crate::SourceErrorKind::Misconfigured);
            assert!(error.message().contains("not allowed"), "{error}");
            assert!(!error.to_string().contains("CANARY"), "{error}");
            assert!(!format!("{settings:?}").contains("CANARY"));
        }
    }

    #[test]
    fn approle_without_secret_id_is_rejected() {
        let settings =
            parse(r#"{"path": "megallm", "auth": {"method": "approle", "role_id": "r"}}"#).unwrap();
        let error = VaultSource::from_settings(&settings, &env(), KeyPolicy::Strict).unwrap_err();
        assert!(error.message().contains("secret_id_file"), "{error}");
    }

    #[test]
    fn bad_kv_version_is_rejected() {
        let error = parse(r#"{"path": "megallm", "kv_version": 3}"#).unwrap_err();
        assert!(error.contains("1 or 2"), "{error}");
    }

    #[test]
    fn kubernetes_defaults_token_path() {
        let settings =
            parse(r#"{"path": "megallm", "auth": {"method": "kubernetes", "role": "app"}}"#)
                .unwrap();
        let auth = auth_from_settings(&settings.auth).unwrap();
        assert_eq!(auth, VaultAuth::kubernetes("app"));
    }
}
