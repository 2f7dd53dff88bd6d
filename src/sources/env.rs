//! [`EnvSource`] (the key in an environment variable) and [`EnvFileSource`] (the key in a file
//! that an environment variable names, as `MEGALLM_API_KEY_FILE` does).

use std::path::Path;

use async_trait::async_trait;
use zeroize::Zeroizing;

use crate::environment::Environment;
use crate::key::{ApiKey, KeyPolicy};
use crate::source::{KeySource, Resolved, SourceError, SourceErrorKind, SourceKind};
use crate::sources::read::{DEFAULT_MAX_SECRET_FILE_SIZE, read_bounded};

/// Suffix of a variable that names a file containing the value of the variable without it.
const FILE_SUFFIX: &str = "_FILE";

/// Reads the key from an environment variable, such as `MEGALLM_API_KEY`.
///
/// # Source details
///
/// - **Label:** `env:<VAR>`, such as `env:MEGALLM_API_KEY`.
/// - **Not found:** the variable is unset or set to the empty string.
/// - **Errors:**
///   - misconfigured: the variable contains only whitespace, or `<VAR>_FILE` is set as well;
///   - misconfigured: the value is not valid Unicode, and the message names the variable only;
///   - invalid key: the value is not a valid key.
///
/// A value wrapped in one matched pair of quotes, as when a `.env`-style line is pasted into a
/// deployment manifest, has the quotes stripped with a warning that names the source.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use megallm_auth::{EnvSource, Environment, KeySource};
///
/// let environment = Environment::from_pairs([("MEGALLM_API_KEY", "sk-mega-DOCEXAMPLE0000")]);
/// let source = EnvSource::new("MEGALLM_API_KEY").with_environment(environment);
/// let resolved = source.resolve().await.unwrap();
/// assert_eq!(resolved.label, "env:MEGALLM_API_KEY");
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct EnvSource {
    var: String,
    file_var: String,
    label: String,
    environment: Environment,
    policy: KeyPolicy,
}

impl EnvSource {
    /// Creates a source that reads the variable `var` from the process environment.
    pub fn new(var: impl Into<String>) -> EnvSource {
        let var = var.into();
        EnvSource {
            file_var: format!("{var}{FILE_SUFFIX}"),
            label: format!("env:{var}"),
            var,
            environment: Environment::process(),
            policy: KeyPolicy::default(),
        }
    }

    /// Reads variables from `environment` instead of the process environment.
    #[must_use]
    pub fn with_environment(mut self, environment: Environment) -> EnvSource {
        self.environment = environment;
        self
    }

    /// Sets how strictly the `sk-mega-` prefix is enforced.
    #[must_use]
    pub fn with_policy(mut self, policy: KeyPolicy) -> EnvSource {
        self.policy = policy;
        self
    }

    /// Returns the name of the variable.
    pub fn var(&self) -> &str {
        &self.var
    }
}

#[async_trait]
impl KeySource for EnvSource {
    fn label(&self) -> &str {
        &self.label
    }

    fn kind(&self) -> SourceKind {
        SourceKind::Env
    }

    async fn resolve(&self) -> Result<Resolved, SourceError> {
        let value = read_non_empty_var(&self.environment, &self.var, &self.label)?;

        if is_set(&self.environment, &self.file_var) {
            return Err(conflict(&self.label, &self.var, &self.file_var));
        }
        if value.trim().is_empty() {
            return Err(SourceError::misconfigured(
                &self.label,
                format!(
                    "{} is blank (it contains only whitespace); set it to the key or unset it",
                    self.var
                ),
            ));
        }

        let key = ApiKey::parse(&value, &self.label, self.policy)
            .map_err(|invalid| SourceError::from(invalid.clone()).with_cause(invalid))?;
        Ok(Resolved::new(key, &self.label, SourceKind::Env))
    }
}

/// Reads the key from the file that an environment variable names, such as
/// `MEGALLM_API_KEY_FILE=/run/secrets/megallm_api_key`.
///
/// # Source details
///
/// - **Label:** `env-file:<VAR>`, such as `env-file:MEGALLM_API_KEY_FILE`.
/// - **Not found:** the variable is unset or set to the empty string.
/// - **Errors** (every file error names the variable and the path):
///   - misconfigured: the variable contains only whitespace or is not valid Unicode, or the
///     key variable (the name without `_FILE`) is set as well;
///   - misconfigured: the named file does not exist, is a directory or exceeds the size limit;
///   - denied: the OS denies access;
///   - unavailable: any other I/O failure;
///   - invalid key: the content is not a valid key.
///
/// A missing file is a configuration error, not "not found": the variable names where the key
/// is, so falling back to another source would hide the broken setting. The file is read like
/// a [`SecretFileSource`](crate::SecretFileSource): through symlinks at every resolution, into
/// zeroizing memory, with the same default size limit.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use megallm_auth::{EnvFileSource, Environment, KeySource};
///
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("api_key");
/// std::fs::write(&path, "sk-mega-DOCEXAMPLE0000\n").unwrap();
/// let environment =
///     Environment::from_pairs([("MEGALLM_API_KEY_FILE", path.to_str().unwrap())]);
///
/// let source = EnvFileSource::new("MEGALLM_API_KEY_FILE").with_environment(environment);
/// let resolved = source.resolve().await.unwrap();
/// assert_eq!(resolved.label, "env-file:MEGALLM_API_KEY_FILE");
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct EnvFileSource {
    var: String,
    key_var: Option<String>,
    label: String,
    environment: Environment,
    policy: KeyPolicy,
    max_size: u64,
}

impl EnvFileSource {
    /// Creates a source that reads the file named by the variable `var` in the process
    /// environment. When `var` ends in `_FILE`, the variable without that suffix must not be
    /// set as well.
    pub fn new(var: impl Into<String>) -> EnvFileSource {
        let var = var.into();
        EnvFileSource {
            key_var: var.strip_suffix(FILE_SUFFIX).map(str::to_owned),
            label: format!("env-file:{var}"),
            var,
            environment: Environment::process(),
            policy: KeyPolicy::default(),
            max_size: DEFAULT_MAX_SECRET_FILE_SIZE,
        }
    }

    /// Reads variables from `environment` instead of the process environment.
    #[must_use]
    pub fn with_environment(mut self, environment: Environment) -> EnvFileSource {
        self.environment = environment;
        self
    }

    /// Sets how strictly the `sk-mega-` prefix is enforced.
    #[must_use]
    pub fn with_policy(mut self, policy: KeyPolicy) -> EnvFileSource {
        self.policy = policy;
        self
    }

    /// Sets the size limit of the file in bytes. A larger file is a configuration error.
    #[must_use]
    pub fn with_max_size(mut self, max_size: u64) -> EnvFileSource {
        self.max_size = max_size;
        self
    }

    /// Returns the name of the variable.
    pub fn var(&self) -> &str {
        &self.var
    }
}

#[async_trait]
impl KeySource for EnvFileSource {
    fn label(&self) -> &str {
        &self.label
    }

    fn kind(&self) -> SourceKind {
        SourceKind::EnvFile
    }

    async fn resolve(&self) -> Result<Resolved, SourceError> {
        let value = read_non_empty_var(&self.environment, &self.var, &self.label)?;

        if let Some(key_var) = &self.key_var
            && is_set(&self.environment, key_var)
        {
            return Err(conflict(&self.label, key_var, &self.var));
        }
        if value.trim().is_empty() {
            return Err(SourceError::misconfigured(
                &self.label,
                format!(
                    "{} is blank (it contains only whitespace); set it to the path of the key file or unset it",
                    self.var
                ),
            ));
        }

        let path = Path::new(value.as_str());
        let description = format!("the file {} named by {}", path.display(), self.var);
        let content = read_bounded(path, self.max_size).map_err(|error| {
            error.into_source_error(&self.label, &description, SourceErrorKind::Misconfigured)
        })?;

        let key = ApiKey::from_bytes(&content, &self.label, self.policy).map_err(|invalid| {
            let message = format!(
                "{description}: {}; {}",
                invalid.problem,
                invalid.problem.remedy()
            );
            SourceError::new(SourceErrorKind::InvalidKey, &self.label, message).with_cause(invalid)
        })?;
        Ok(Resolved::new(key, &self.label, SourceKind::EnvFile))
    }
}

/// Reads `name` from `environment`, turning a value that is not Unicode into a configuration
/// error that names the variable only.
fn read_var(
    environment: &Environment,
    name: &str,
    label: &str,
) -> Result<Option<Zeroizing<String>>, SourceError> {
    // Security: NotUnicode carries the variable name only, never the value.
    environment.var(name).map_err(|not_unicode| {
        SourceError::misconfigured(
            label,
            format!(
                "{name} is set to bytes that are not valid Unicode; set it to plain ASCII text"
            ),
        )
        .with_cause(not_unicode)
    })
}

/// Returns the value of `name`. An unset or empty variable is "not found", so a chain moves on.
fn read_non_empty_var(
    environment: &Environment,
    name: &str,
    label: &str,
) -> Result<Zeroizing<String>, SourceError> {
    let value = read_var(environment, name, label)?
        .ok_or_else(|| SourceError::not_found(label, format!("{name} is not set")))?;
    if value.is_empty() {
        return Err(SourceError::not_found(
            label,
            format!("{name} is set but empty"),
        ));
    }
    Ok(value)
}

/// Returns whether `name` is set to a non-empty value. A value that is not Unicode counts as
/// set. Empty counts as unset, as in the official Docker images' `_FILE` convention.
fn is_set(environment: &Environment, name: &str) -> bool {
    match environment.var(name) {
        Ok(Some(value)) => !value.is_empty(),
        Ok(None) => false,
        Err(_) => true,
    }
}

fn conflict(label: &str, key_var: &str, file_var: &str) -> SourceError {
    SourceError::misconfigured(
        label,
        format!("both {key_var} and {file_var} are set; set only one of {key_var} and {file_var}"),
    )
}
