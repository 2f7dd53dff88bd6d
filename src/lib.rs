//! Load a MegaLLM API key safely and turn it into request headers.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod chain;
mod environment;
mod error;
mod headers;
pub mod http;
mod key;
mod provider;
mod source;
pub mod sources;
mod watch;

pub use chain::{Attempt, ChainError, KeyChain, Outcome, Resolution, ResolutionReport, Winner};
pub use environment::{Environment, NotUnicode};
pub use error::{Error, ErrorKind};
pub use headers::{
    ANTHROPIC_VERSION, ApiStyle, AuthHeaders, DEFAULT_ANTHROPIC_VERSION, HeaderError, X_API_KEY,
    X_DEBUG_AUTH,
};
pub use key::{ApiKey, Fingerprint, InvalidKey, KEY_PREFIX, KeyPolicy, KeyProblem};
pub use source::{KeySource, Resolved, SourceError, SourceErrorKind, SourceKind, StaticSource};
pub use provider::{
    DEFAULT_FILE_REFRESH, DEFAULT_LOCAL_REFRESH, DEFAULT_REMOTE_REFRESH, DEFAULT_RETRY_DELAY,
    DEFAULT_STALE_GRACE, KeyProvider, KeyProviderBuilder, KeySnapshot, RefreshError,
};
pub use watch::WatchMode;
