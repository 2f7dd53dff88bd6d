//! Translation of vaultrs errors into what went wrong, without any text that could carry a
//! token or secret data.
//!
//! Security: vaultrs and rustify errors can contain a whole response body (`content`) or a JSON
//! parser message that quotes a value. They are reduced here to a status code, a few flags and
//! the connection error of the operating system or TLS library, and then dropped. They are
//! never formatted with `Debug` or attached as a cause.

use std::error::Error as StdError;

use vaultrs::error::ClientError;

/// Failure of one request to Vault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Vault responded with an HTTP error status.
    Status {
        /// The HTTP status code.
        code: u16,
        /// Vault reported that it is sealed.
        sealed: bool,
        /// Vault has no route for the path: no such mount, auth method or namespace.
        no_route: bool,
    },
    /// No answer: connection refused, DNS, TLS or a timeout.
    Transport {
        /// The request timed out.
        timed_out: bool,
        /// The innermost cause from the operating system or the TLS library.
        detail: String,
    },
    /// Vault responded 2xx without the expected data.
    Empty,
    /// The response could not be parsed.
    Unexpected,
}

impl Failure {
    /// Reduces a vaultrs error to a [`Failure`].
    pub(crate) fn from_client_error(error: &ClientError) -> Failure {
        match error {
            ClientError::APIError { code, errors } => Failure::Status {
                code: *code,
                sealed: errors.iter().any(|e| e.contains("sealed")),
                no_route: errors.iter().any(|e| e.contains("no handler for route")),
            },
            ClientError::RestClientError { source } => from_rest_error(source),
            ClientError::ResponseEmptyError | ClientError::ResponseDataEmptyError => Failure::Empty,
            _ => Failure::Unexpected,
        }
    }

    /// Returns whether Vault responded 403.
    pub(crate) fn is_forbidden(&self) -> bool {
        matches!(self, Failure::Status { code: 403, .. })
    }

    /// Returns whether Vault responded 404.
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, Failure::Status { code: 404, .. })
    }

    /// Returns whether retrying later may work: sealed, 429, 5xx, no connection.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            Failure::Status { code, sealed, .. } => *sealed || *code == 429 || *code >= 500,
            Failure::Transport { .. } => true,
            Failure::Empty | Failure::Unexpected => false,
        }
    }

    /// Describes the failure in a few words, such as `HTTP 503 (sealed)`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Failure::Status { sealed: true, .. } => {
                "Vault is sealed; unseal it or wait for the cluster to elect an active node"
                    .to_owned()
            }
            Failure::Status { code, .. } => format!("Vault responded with HTTP {code}"),
            Failure::Transport {
                timed_out: true, ..
            } => "the request timed out".to_owned(),
            Failure::Transport { detail, .. } => format!("no connection ({detail})"),
            Failure::Empty => "Vault responded without data".to_owned(),
            Failure::Unexpected => "Vault's response could not be parsed".to_owned(),
        }
    }
}

fn from_rest_error(error: &rustify::errors::ClientError) -> Failure {
    use rustify::errors::ClientError as RestError;

    match error {
        RestError::ServerResponseError { code, .. } => Failure::Status {
            code: *code,
            sealed: false,
            no_route: false,
        },
        RestError::RequestError { source, .. } => {
            let mut timed_out = false;
            let mut detail = String::from("request failed");
            for cause in source.chain() {
                if let Some(http_error) = cause.downcast_ref::<reqwest::Error>() {
                    timed_out |= http_error.is_timeout();
                }
                detail = innermost(cause);
            }
            Failure::Transport { timed_out, detail }
        }
        _ => Failure::Unexpected,
    }
}

/// Returns the text of the innermost cause, such as `Connection refused (os error 111)`.
/// The innermost cause comes from the operating system or rustls and contains no request data.
fn innermost(error: &(dyn StdError + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_api_error_is_transient() {
        let error = ClientError::APIError {
            code: 503,
            errors: vec!["Vault is sealed".into()],
        };
        let failure = Failure::from_client_error(&error);
        assert!(failure.is_transient());
        assert!(failure.describe().contains("sealed"));
    }

    #[test]
    fn missing_route_is_flagged() {
        let error = ClientError::APIError {
            code: 404,
            errors: vec!["no handler for route \"x/data/y\". route entry not found.".into()],
        };
        assert_eq!(
            Failure::from_client_error(&error),
            Failure::Status {
                code: 404,
                sealed: false,
                no_route: true
            }
        );
    }

    #[test]
    fn response_body_is_dropped() {
        let error = ClientError::RestClientError {
            source: rustify::errors::ClientError::ServerResponseError {
                code: 404,
                content: Some("{\"data\":{\"api_key\":\"sk-mega-TESTKEY0000000000\"}}".into()),
            },
        };
        let failure = Failure::from_client_error(&error);
        assert!(!format!("{failure:?}").contains("sk-mega"));
        assert!(failure.is_not_found());
    }
}
