//! [`SecretFileSource`]: a key in a file, such as a Docker or Kubernetes secret mount.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::key::{ApiKey, KeyPolicy};
use crate::source::{KeySource, Resolved, SourceError, SourceErrorKind, SourceKind};
use crate::sources::docker_secrets_dir;
use crate::sources::read::{DEFAULT_MAX_SECRET_FILE_SIZE, read_bounded};

/// Reads the key from a file, such as `/run/secrets/megallm_api_key`.
///
/// # Source details
///
/// - **Label:** `file:<path>`, such as `file:/run/secrets/megallm_api_key`.
/// - **Not found:** the file, or a directory above it, does not exist, or the path is a
///   symlink whose target does not exist.
/// - **Errors** (every message names the path):
///   - misconfigured: the path is a directory, a parent in it is a file, or the file exceeds
///     the size limit;
///   - denied: the OS denies access, with a hint about the owner and mode of mounted secrets;
///   - unavailable: any other I/O failure;
///   - invalid key: the content is not a valid key, including a file that is not UTF-8.
///
/// The file is opened by path at every resolution, following symlinks afresh, so a Kubernetes
/// secret update (which swaps the `..data` symlink) is picked up on the next read. The content
/// is read into zeroizing memory, at most [`DEFAULT_MAX_SECRET_FILE_SIZE`] bytes unless changed
/// with [`SecretFileSource::with_max_size`]. A BOM, surrounding whitespace (including CR and
/// LF) and one matched pair of quotes are stripped, as [`ApiKey::parse`] describes.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use megallm_auth::{KeySource, SecretFileSource};
///
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("megallm_api_key");
/// std::fs::write(&path, "sk-mega-DOCEXAMPLE0000\n").unwrap();
///
/// let source = SecretFileSource::new(&path);
/// let resolved = source.resolve().await.unwrap();
/// assert_eq!(resolved.key.expose_secret(), "sk-mega-DOCEXAMPLE0000");
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct SecretFileSource {
    path: PathBuf,
    label: String,
    policy: KeyPolicy,
    max_size: u64,
}

impl SecretFileSource {
    /// Creates a source that reads the key from `path`.
    pub fn new(path: impl Into<PathBuf>) -> SecretFileSource {
        let path = path.into();
        let label = format!("file:{}", path.display());
        SecretFileSource {
            path,
            label,
            policy: KeyPolicy::default(),
            max_size: DEFAULT_MAX_SECRET_FILE_SIZE,
        }
    }

    /// Creates a source for the Docker secret `name`: `/run/secrets/<name>`, or
    /// `C:\ProgramData\Docker\secrets\<name>` on Windows.
    pub fn docker(name: &str) -> SecretFileSource {
        SecretFileSource::new(docker_secrets_dir().join(name))
    }

    /// Sets how strictly the `sk-mega-` prefix is enforced.
    #[must_use]
    pub fn with_policy(mut self, policy: KeyPolicy) -> SecretFileSource {
        self.policy = policy;
        self
    }

    /// Sets the size limit in bytes. A larger file is a configuration error.
    #[must_use]
    pub fn with_max_size(mut self, max_size: u64) -> SecretFileSource {
        self.max_size = max_size;
        self
    }

    /// Returns the path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl KeySource for SecretFileSource {
    fn label(&self) -> &str {
        &self.label
    }

    fn kind(&self) -> SourceKind {
        SourceKind::SecretFile
    }

    fn watch_paths(&self) -> Vec<PathBuf> {
        vec![self.path.clone()]
    }

    async fn resolve(&self) -> Result<Resolved, SourceError> {
        let description = format!("secret file {}", self.path.display());
        let content = read_bounded(&self.path, self.max_size).map_err(|error| {
            error.into_source_error(&self.label, &description, SourceErrorKind::NotFound)
        })?;

        let key = ApiKey::from_bytes(&content, &self.label, self.policy)
            .map_err(|invalid| SourceError::from(invalid.clone()).with_cause(invalid))?;

        Ok(Resolved::new(key, &self.label, SourceKind::SecretFile))
    }
}
