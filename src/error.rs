//! [`Error`], the crate's top-level error, and [`ErrorKind`], its categories.

use crate::chain::ChainError;
use crate::headers::HeaderError;
use crate::http::{ClientError, GatewayError};
use crate::key::InvalidKey;
use crate::provider::RefreshError;
use crate::settings::SettingsError;
use crate::source::SourceErrorKind;

/// Category of an error of this crate, chosen by what the caller does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No source had a key: configure one.
    NotFound,
    /// A key was found but is malformed: fix it where it is stored.
    InvalidKey,
    /// The configuration is wrong: fix the setting or variable named in the message.
    Misconfigured,
    /// A backend refused access: fix permissions or policies.
    Denied,
    /// A backend is unreachable or failed transiently: retry later.
    Unavailable,
    /// The gateway rejected a request (401, 403 or 429): follow the remedy in the message.
    Gateway,
}

impl From<SourceErrorKind> for ErrorKind {
    fn from(kind: SourceErrorKind) -> ErrorKind {
        match kind {
            SourceErrorKind::NotFound => ErrorKind::NotFound,
            SourceErrorKind::InvalidKey => ErrorKind::InvalidKey,
            SourceErrorKind::Misconfigured => ErrorKind::Misconfigured,
            SourceErrorKind::Denied => ErrorKind::Denied,
            SourceErrorKind::Unavailable => ErrorKind::Unavailable,
        }
    }
}

/// Any error of this crate. Messages name sources, settings and files, never a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Resolving the key through the chain failed. Boxed because the report it carries
    /// would otherwise make every `Result<_, Error>` large.
    #[error(transparent)]
    Resolve(Box<ChainError>),
    /// A key failed the shape check.
    #[error(transparent)]
    InvalidKey(#[from] InvalidKey),
    /// The settings could not be loaded.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// A header could not be built.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// A [`KeyProvider`](crate::KeyProvider) has no key to serve.
    #[error(transparent)]
    Refresh(#[from] RefreshError),
    /// The gateway rejected a request with 401, 403 or 429.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// An HTTP client could not be set up: invalid base URL or client settings.
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl From<ChainError> for Error {
    fn from(error: ChainError) -> Error {
        Error::Resolve(Box::new(error))
    }
}

impl Error {
    /// Returns the category, chosen by what the caller does next.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Resolve(error) => error.kind().into(),
            Error::InvalidKey(_) => ErrorKind::InvalidKey,
            Error::Settings(_) => ErrorKind::Misconfigured,
            Error::Header(_) => ErrorKind::InvalidKey,
            Error::Refresh(error) => error.kind().into(),
            Error::Gateway(_) => ErrorKind::Gateway,
            Error::Client(_) => ErrorKind::Misconfigured,
        }
    }
}
