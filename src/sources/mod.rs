//! The built-in key sources, one file per backend, and the default chain.

use std::path::Path;

use crate::chain::KeyChain;
use crate::environment::Environment;
use crate::key::KeyPolicy;

#[cfg(feature = "aws")]
#[cfg_attr(docsrs, doc(cfg(feature = "aws")))]
pub mod aws;
#[cfg(feature = "dotenv")]
mod dotenv;
#[cfg(feature = "env")]
mod env;
#[cfg(any(feature = "env", feature = "dotenv", feature = "secret-file"))]
mod read;
#[cfg(feature = "secret-file")]
mod secret_file;
#[cfg(feature = "vault")]
#[cfg_attr(docsrs, doc(cfg(feature = "vault")))]
pub mod vault;

#[cfg(feature = "dotenv")]
pub use dotenv::{DotenvFile, DotenvSource};
#[cfg(feature = "env")]
pub use env::{EnvFileSource, EnvSource};
#[cfg(any(feature = "env", feature = "secret-file"))]
pub use read::DEFAULT_MAX_SECRET_FILE_SIZE;
#[cfg(feature = "secret-file")]
pub use secret_file::SecretFileSource;

/// The guide in docs/sources.md, compiled as doctests so that its examples keep building.
#[cfg(all(doctest, feature = "env", feature = "dotenv", feature = "secret-file"))]
#[doc = include_str!("../../docs/sources.md")]
pub struct SourcesGuide;

/// Variable that contains the key in the default chain.
pub const DEFAULT_KEY_VAR: &str = "MEGALLM_API_KEY";
/// Variable that names a key file in the default chain.
pub const DEFAULT_KEY_FILE_VAR: &str = "MEGALLM_API_KEY_FILE";
/// Name of the Docker secret in the default chain.
pub const DEFAULT_DOCKER_SECRET: &str = "megallm_api_key";

/// Directory where Docker mounts secrets inside a container.
#[cfg(not(windows))]
const DOCKER_SECRETS_DIR: &str = "/run/secrets";
/// Directory where Docker mounts secrets inside a Windows container.
#[cfg(windows)]
const DOCKER_SECRETS_DIR: &str = r"C:\ProgramData\Docker\secrets";

/// Returns the directory where Docker mounts secrets on this platform: `/run/secrets`, or
/// `C:\ProgramData\Docker\secrets` on Windows.
pub fn docker_secrets_dir() -> &'static Path {
    Path::new(DOCKER_SECRETS_DIR)
}

/// Builds the chain used when nothing is configured, in this order:
///
/// 1. `env:MEGALLM_API_KEY`, the variable itself;
/// 2. `env-file:MEGALLM_API_KEY_FILE`, the file that variable names;
/// 3. `dotenv:.env`, `MEGALLM_API_KEY` in `.env` in the working directory;
/// 4. `file:/run/secrets/megallm_api_key`, the Docker secret `megallm_api_key`
///    (`C:\ProgramData\Docker\secrets\megallm_api_key` on Windows).
///
/// A source whose cargo feature (`env`, `dotenv`, `secret-file`) is off is left out. The first
/// source with a key wins; a source that fails for any reason other than "not found" stops
/// the chain.
///
/// ```
/// use megallm_auth::{Environment, KeyPolicy, default_chain};
///
/// let chain = default_chain(&Environment::process(), KeyPolicy::Strict);
/// # #[cfg(all(feature = "env", feature = "dotenv", feature = "secret-file", unix))]
/// assert_eq!(
///     chain.labels(),
///     [
///         "env:MEGALLM_API_KEY",
///         "env-file:MEGALLM_API_KEY_FILE",
///         "dotenv:.env",
///         "file:/run/secrets/megallm_api_key",
///     ]
/// );
/// ```
pub fn default_chain(environment: &Environment, policy: KeyPolicy) -> KeyChain {
    default_chain_in(environment, policy, Path::new(".env"), docker_secrets_dir())
}

/// Builds the default chain with the `.env` file at `dotenv_path` and the Docker secret in
/// `secrets_dir`, so tests and unusual layouts can point it elsewhere. The order is that of
/// [`default_chain`].
#[cfg_attr(
    not(any(feature = "env", feature = "dotenv", feature = "secret-file")),
    allow(unused_mut)
)]
pub fn default_chain_in(
    #[cfg_attr(not(feature = "env"), allow(unused_variables))] environment: &Environment,
    #[cfg_attr(
        not(any(feature = "env", feature = "dotenv", feature = "secret-file")),
        allow(unused_variables)
    )]
    policy: KeyPolicy,
    #[cfg_attr(not(feature = "dotenv"), allow(unused_variables))] dotenv_path: &Path,
    #[cfg_attr(not(feature = "secret-file"), allow(unused_variables))] secrets_dir: &Path,
) -> KeyChain {
    let mut chain = KeyChain::new();

    #[cfg(feature = "env")]
    {
        chain = chain
            .with(
                EnvSource::new(DEFAULT_KEY_VAR)
                    .with_environment(environment.clone())
                    .with_policy(policy),
            )
            .with(
                EnvFileSource::new(DEFAULT_KEY_FILE_VAR)
                    .with_environment(environment.clone())
                    .with_policy(policy),
            );
    }

    #[cfg(feature = "dotenv")]
    {
        chain = chain.with(
            DotenvSource::new(dotenv_path)
                .with_var(DEFAULT_KEY_VAR)
                .with_policy(policy),
        );
    }

    #[cfg(feature = "secret-file")]
    {
        chain = chain.with(
            SecretFileSource::new(secrets_dir.join(DEFAULT_DOCKER_SECRET)).with_policy(policy),
        );
    }

    chain
}
