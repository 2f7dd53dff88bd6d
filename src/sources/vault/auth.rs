//! Vault authentication for [`VaultSource`](super::VaultSource): a static token, or a login
//! with AppRole, Kubernetes or JWT.

use std::fmt;
use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt;
use zeroize::Zeroizing;

use crate::environment::Environment;

/// Default path of the Kubernetes service-account token inside a pod.
pub const KUBERNETES_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// Largest token, secret id or JWT file that is read, in bytes.
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// Location of a secret used to authenticate to Vault (a token, an AppRole secret id, a JWT). Secrets are never written inline in code or settings.
///
/// `Debug` prints the file path or the variable name, never the value.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretRef {
    /// A file, read again at every login, so a rotated file is picked up.
    File(PathBuf),
    /// An environment variable, read through the source's [`Environment`].
    Env(String),
}

impl SecretRef {
    /// Describes the location for messages, such as `file /run/secrets/secret_id`.
    pub(crate) fn describe(&self) -> String {
        match self {
            SecretRef::File(path) => format!("file {}", path.display()),
            SecretRef::Env(name) => format!("environment variable {name}"),
        }
    }

    /// Reads the secret and trims surrounding whitespace.
    ///
    /// Returns `Ok(None)` when the variable is unset or empty, or the file does not exist, and
    /// an error message naming the location (never the value) for other failures.
    pub(crate) async fn read(
        &self,
        environment: &Environment,
    ) -> Result<Option<Zeroizing<String>>, SecretReadError> {
        match self {
            SecretRef::Env(name) => {
                let value = environment.var(name).map_err(|_| {
                    SecretReadError::Invalid(format!(
                        "environment variable {name} is not valid Unicode"
                    ))
                })?;
                Ok(value.and_then(trimmed))
            }
            SecretRef::File(path) => read_secret_file(path).await,
        }
    }
}

/// Failure to read a secret. Messages name the location only.
#[derive(Debug)]
pub(crate) enum SecretReadError {
    /// The file exists but may not be read.
    PermissionDenied(String),
    /// The file or variable contains something unusable, or reading failed.
    Invalid(String),
}

async fn read_secret_file(path: &Path) -> Result<Option<Zeroizing<String>>, SecretReadError> {
    let shown = path.display();
    let file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(SecretReadError::PermissionDenied(format!(
                "permission denied reading {shown}; let the service's user read it"
            )));
        }
        Err(error) => {
            return Err(SecretReadError::Invalid(format!(
                "failed to open {shown}: {error}"
            )));
        }
    };

    let mut bytes = Zeroizing::new(Vec::new());
    let read = file
        .take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .await;
    if let Err(error) = read {
        return Err(SecretReadError::Invalid(format!(
            "failed to read {shown}: {error}"
        )));
    }
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(SecretReadError::Invalid(format!(
            "{shown} is larger than {MAX_SECRET_FILE_BYTES} bytes; it should hold one token"
        )));
    }

    // Security: from_utf8 takes the buffer without copying it; on failure the buffer comes
    // back inside the error and is wiped here.
    let text = match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(text) => Zeroizing::new(text),
        Err(error) => {
            let _wiped = Zeroizing::new(error.into_bytes());
            return Err(SecretReadError::Invalid(format!(
                "{shown} is not valid UTF-8"
            )));
        }
    };
    Ok(trimmed(text))
}

/// Returns the trimmed value, or `None` when nothing is left.
fn trimmed(value: Zeroizing<String>) -> Option<Zeroizing<String>> {
    let inner = value.trim();
    if inner.is_empty() {
        None
    } else if inner.len() == value.len() {
        Some(value)
    } else {
        Some(Zeroizing::new(inner.to_owned()))
    }
}

/// Auth method of the source.
///
/// `Debug` prints the method, mount, role and the locations of secrets. It never prints a
/// token, a secret id, a JWT or the AppRole role id.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VaultAuth {
    /// A token that is already issued.
    Token {
        /// Location of the token. `None` reads `VAULT_TOKEN`, then `~/.vault-token`.
        token: Option<SecretRef>,
    },
    /// AppRole login at `auth/<mount>/login`.
    AppRole {
        /// Mount of the AppRole method, `approle` by default.
        mount: String,
        /// Role id of the role.
        role_id: String,
        /// Location of the secret id.
        secret_id: SecretRef,
    },
    /// Kubernetes login at `auth/<mount>/login` with the pod's service-account token.
    Kubernetes {
        /// Mount of the Kubernetes method, `kubernetes` by default.
        mount: String,
        /// Vault role bound to the service account.
        role: String,
        /// Service-account token file, [`KUBERNETES_TOKEN_PATH`] by default.
        token_file: PathBuf,
    },
    /// JWT login at `auth/<mount>/login` with a JWT read from a file.
    Jwt {
        /// Mount of the JWT method, `jwt` by default.
        mount: String,
        /// Vault role to log in as.
        role: String,
        /// File holding the JWT.
        token_file: PathBuf,
    },
}

impl Default for VaultAuth {
    fn default() -> VaultAuth {
        VaultAuth::token()
    }
}

impl VaultAuth {
    /// Creates a token auth that reads `VAULT_TOKEN`, or else `~/.vault-token`.
    pub fn token() -> VaultAuth {
        VaultAuth::Token { token: None }
    }

    /// Creates a token auth that reads `token`, a file or an environment variable.
    pub fn token_from(token: SecretRef) -> VaultAuth {
        VaultAuth::Token { token: Some(token) }
    }

    /// Creates an AppRole login at the `approle` mount.
    pub fn approle(role_id: impl Into<String>, secret_id: SecretRef) -> VaultAuth {
        VaultAuth::AppRole {
            mount: "approle".to_owned(),
            role_id: role_id.into(),
            secret_id,
        }
    }

    /// Creates a Kubernetes login at the `kubernetes` mount with the token at
    /// [`KUBERNETES_TOKEN_PATH`].
    pub fn kubernetes(role: impl Into<String>) -> VaultAuth {
        VaultAuth::Kubernetes {
            mount: "kubernetes".to_owned(),
            role: role.into(),
            token_file: PathBuf::from(KUBERNETES_TOKEN_PATH),
        }
    }

    /// Creates a JWT login at the `jwt` mount with the JWT in `token_file`.
    pub fn jwt(role: impl Into<String>, token_file: impl Into<PathBuf>) -> VaultAuth {
        VaultAuth::Jwt {
            mount: "jwt".to_owned(),
            role: role.into(),
            token_file: token_file.into(),
        }
    }

    /// Sets the mount of a login method. A token has no mount and is returned unchanged.
    #[must_use]
    pub fn with_mount(mut self, new_mount: impl Into<String>) -> VaultAuth {
        match &mut self {
            VaultAuth::Token { .. } => {}
            VaultAuth::AppRole { mount, .. }
            | VaultAuth::Kubernetes { mount, .. }
            | VaultAuth::Jwt { mount, .. } => *mount = new_mount.into(),
        }
        self
    }

    /// Sets the file a Kubernetes or JWT login reads its token from. Other methods are
    /// returned unchanged.
    #[must_use]
    pub fn with_token_file(mut self, path: impl Into<PathBuf>) -> VaultAuth {
        match &mut self {
            VaultAuth::Kubernetes { token_file, .. } | VaultAuth::Jwt { token_file, .. } => {
                *token_file = path.into();
            }
            VaultAuth::Token { .. } | VaultAuth::AppRole { .. } => {}
        }
        self
    }

    /// Returns whether the source logs in (and can log in again when its token expires).
    pub(crate) fn is_login(&self) -> bool {
        !matches!(self, VaultAuth::Token { .. })
    }

    /// Names the method for messages and logs, such as `AppRole login at auth/approle`.
    pub(crate) fn describe(&self) -> String {
        match self {
            VaultAuth::Token { token: None } => "token from VAULT_TOKEN or ~/.vault-token".into(),
            VaultAuth::Token { token: Some(from) } => format!("token from {}", from.describe()),
            VaultAuth::AppRole { mount, .. } => format!("AppRole login at auth/{mount}"),
            VaultAuth::Kubernetes { mount, role, .. } => {
                format!("Kubernetes login at auth/{mount} as role {role}")
            }
            VaultAuth::Jwt { mount, role, .. } => {
                format!("JWT login at auth/{mount} as role {role}")
            }
        }
    }

    /// Returns where the login secret (secret id or JWT) is read from, for messages.
    pub(crate) fn credential_location(&self) -> String {
        match self {
            VaultAuth::Token { .. } => self.describe(),
            VaultAuth::AppRole { secret_id, .. } => {
                format!("the secret id in {}", secret_id.describe())
            }
            VaultAuth::Kubernetes { token_file, .. } => {
                format!("the service-account token in {}", token_file.display())
            }
            VaultAuth::Jwt { token_file, .. } => format!("the JWT in {}", token_file.display()),
        }
    }

    /// Returns the token locations to try in order, for [`VaultAuth::Token`].
    pub(crate) fn token_candidates(&self, environment: &Environment) -> Vec<SecretRef> {
        match self {
            VaultAuth::Token { token: Some(from) } => vec![from.clone()],
            VaultAuth::Token { token: None } => {
                let mut candidates = vec![SecretRef::Env("VAULT_TOKEN".to_owned())];
                if let Some(home) = home_dir(environment) {
                    candidates.push(SecretRef::File(home.join(".vault-token")));
                }
                candidates
            }
            _ => Vec::new(),
        }
    }
}

impl fmt::Debug for VaultAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VaultAuth::Token { token } => f.debug_struct("Token").field("token", token).finish(),
            VaultAuth::AppRole {
                mount, secret_id, ..
            } => f
                .debug_struct("AppRole")
                .field("mount", mount)
                .field("role_id", &"[REDACTED]")
                .field("secret_id", secret_id)
                .finish(),
            VaultAuth::Kubernetes {
                mount,
                role,
                token_file,
            } => f
                .debug_struct("Kubernetes")
                .field("mount", mount)
                .field("role", role)
                .field("token_file", token_file)
                .finish(),
            VaultAuth::Jwt {
                mount,
                role,
                token_file,
            } => f
                .debug_struct("Jwt")
                .field("mount", mount)
                .field("role", role)
                .field("token_file", token_file)
                .finish(),
        }
    }
}

/// Returns the home directory from `HOME` (or `USERPROFILE` on Windows), for `~/.vault-token`.
fn home_dir(environment: &Environment) -> Option<PathBuf> {
    let names: &[&str] = if cfg!(windows) {
        &["USERPROFILE", "HOME"]
    } else {
        &["HOME"]
    };
    names.iter().find_map(|name| {
        let value = environment.var(name).ok().flatten()?;
        (!value.is_empty()).then(|| PathBuf::from(value.as_str()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_role_id() {
        let auth = VaultAuth::approle("role-id-CANARY", SecretRef::Env("SECRET_ID".into()));
        let text = format!("{auth:?}");
        assert!(!text.contains("CANARY"), "{text}");
        assert!(text.contains("SECRET_ID"), "{text}");
    }

    #[test]
    fn default_token_candidates_use_home() {
        let environment = Environment::from_pairs([("HOME", "/home/app")]);
        let candidates = VaultAuth::token().token_candidates(&environment);
        assert_eq!(
            candidates,
            vec![
                SecretRef::Env("VAULT_TOKEN".into()),
                SecretRef::File(PathBuf::from("/home/app/.vault-token")),
            ]
        );
    }

    #[test]
    fn with_mount_changes_login_mount() {
        let auth = VaultAuth::kubernetes("app").with_mount("k8s-prod");
        assert!(matches!(auth, VaultAuth::Kubernetes { ref mount, .. } if mount == "k8s-prod"));
    }

    #[tokio::test]
    async fn secret_file_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  s.abc\n").unwrap();
        let value = SecretRef::File(path)
            .read(&Environment::default())
            .await
            .unwrap();
        assert_eq!(value.as_deref().map(String::as_str), Some("s.abc"));
    }

    #[tokio::test]
    async fn missing_secret_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let value = SecretRef::File(dir.path().join("absent"))
            .read(&Environment::default())
            .await
            .unwrap();
        assert!(value.is_none());
    }

    #[tokio::test]
    async fn oversized_secret_file_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, vec![b'a'; 70_000]).unwrap();
        let error = SecretRef::File(path)
            .read(&Environment::default())
            .await
            .unwrap_err();
        assert!(matches!(error, SecretReadError::Invalid(ref m) if m.contains("larger than")));
    }

    #[tokio::test]
    async fn empty_env_secret_is_none() {
        let environment = Environment::from_pairs([("SECRET_ID", "  ")]);
        let value = SecretRef::Env("SECRET_ID".into())
            .read(&environment)
            .await
            .unwrap();
        assert!(value.is_none());
    }
}
