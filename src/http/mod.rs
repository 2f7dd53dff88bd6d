//! Sending the key: the gateway's errors ([`GatewayError`]), the base URL rule, and the HTTP
//! integrations behind features: a reqwest middleware and client builder (`reqwest`), a tower
//! layer (`tower`) and an async-openai configuration (`async-openai`).
//!
//! Both HTTP integrations follow MegaLLM's documented error handling through the shared
//! [`retry`] policy:
//!
//! | status | what happens | error | remedy |
//! |---|---|---|---|
//! | 401 | the key is re-resolved once ([`KeyProvider::invalidate`](crate::KeyProvider::invalidate)); the request is retried once if the key changed | [`GatewayError::Unauthorized`] | check that the key is valid and has not expired |
//! | 403 | no retry | [`GatewayError::Forbidden`] | verify that the key has the required access |
//! | 429 | retried after `Retry-After` (seconds or HTTP date, capped) or a jittered backoff, a bounded number of times; the key is never reloaded | [`GatewayError::RateLimited`] | wait and retry |

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use http::Uri;

use crate::key::Fingerprint;

#[cfg(feature = "async-openai")]
#[cfg_attr(docsrs, doc(cfg(feature = "async-openai")))]
pub mod openai;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub mod reqwest;
#[cfg(any(feature = "reqwest", feature = "tower"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "reqwest", feature = "tower"))))]
pub mod retry;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod tower;

/// MegaLLM's remedy for 401 Unauthorized.
pub const REMEDY_UNAUTHORIZED: &str = "check that the API key is valid and has not expired";
/// MegaLLM's remedy for 403 Forbidden.
pub const REMEDY_FORBIDDEN: &str = "verify that the API key has the required access";
/// MegaLLM's remedy for 429 Too Many Requests.
pub const REMEDY_RATE_LIMITED: &str = "wait and retry";

/// The gateway rejected a request. Each variant carries MegaLLM's documented remedy in its
/// message, and names the key by source label and fingerprint, never by value.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GatewayError {
    /// 401 Unauthorized, after the key was re-resolved once.
    Unauthorized {
        /// Label of the source of the rejected key.
        source_label: String,
        /// Fingerprint of the rejected key.
        fingerprint: Fingerprint,
        /// Whether re-resolving produced a different key and the request was sent again with
        /// it, and that key was rejected too. `false` when the source still had the same key,
        /// or the request body could not be cloned for a retry.
        retried: bool,
    },
    /// 403 Forbidden. Not retried.
    Forbidden {
        /// Label of the source of the key.
        source_label: String,
        /// Fingerprint of the key.
        fingerprint: Fingerprint,
    },
    /// 429 Too Many Requests on every attempt.
    RateLimited {
        /// The wait requested by the last response, uncapped, when it carried
        /// `Retry-After`.
        retry_after: Option<Duration>,
        /// Number of requests sent, including the first.
        attempts: u32,
    },
}

impl GatewayError {
    /// Returns the HTTP status of the gateway's response.
    pub fn status(&self) -> http::StatusCode {
        match self {
            GatewayError::Unauthorized { .. } => http::StatusCode::UNAUTHORIZED,
            GatewayError::Forbidden { .. } => http::StatusCode::FORBIDDEN,
            GatewayError::RateLimited { .. } => http::StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// Returns MegaLLM's documented remedy for this answer.
    pub fn remedy(&self) -> &'static str {
        match self {
            GatewayError::Unauthorized { .. } => REMEDY_UNAUTHORIZED,
            GatewayError::Forbidden { .. } => REMEDY_FORBIDDEN,
            GatewayError::RateLimited { .. } => REMEDY_RATE_LIMITED,
        }
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayError::Unauthorized {
                source_label,
                fingerprint,
                retried,
            } => {
                write!(
                    f,
                    "MegaLLM answered 401 Unauthorized for the API key {fingerprint} from {source_label}"
                )?;
                if *retried {
                    f.write_str(
                        ", also after the key was re-resolved and the request retried once",
                    )?;
                }
                write!(f, "; {REMEDY_UNAUTHORIZED}")
            }
            GatewayError::Forbidden {
                source_label,
                fingerprint,
            } => write!(
                f,
                "MegaLLM answered 403 Forbidden for the API key {fingerprint} from {source_label}; {REMEDY_FORBIDDEN}"
            ),
            GatewayError::RateLimited {
                retry_after,
                attempts,
            } => {
                write!(
                    f,
                    "MegaLLM answered 429 Too Many Requests to all {attempts} attempts"
                )?;
                // A value too large for a u64 parses as u64::MAX seconds; print it as what it
                // means rather than as that number.
                const ONE_YEAR: u64 = 365 * 24 * 60 * 60;
                match retry_after {
                    Some(wait) if wait.as_secs() > ONE_YEAR => {
                        f.write_str(" (Retry-After: more than a year)")?
                    }
                    Some(wait) => write!(f, " (Retry-After: {} s)", wait.as_secs())?,
                    None => {}
                }
                write!(f, "; {REMEDY_RATE_LIMITED}")
            }
        }
    }
}

impl std::error::Error for GatewayError {}

/// An HTTP client could not be set up.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientError {
    /// The base URL is not acceptable. `origin` shows only scheme, host and port, so a token in
    /// the path or query is not repeated.
    InvalidBaseUrl {
        /// Scheme, host and port of the URL, or `(unparseable)`.
        origin: String,
        /// The problem and its fix.
        reason: &'static str,
    },
    /// The HTTP client library rejected its settings.
    Build(Box<dyn std::error::Error + Send + Sync>),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::InvalidBaseUrl { origin, reason } => {
                write!(f, "invalid MegaLLM base URL {origin}: {reason}")
            }
            ClientError::Build(_) => f.write_str("cannot build the HTTP client for MegaLLM"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Build(cause) => Some(&**cause as &(dyn std::error::Error + 'static)),
            ClientError::InvalidBaseUrl { .. } => None,
        }
    }
}

/// Checks that `url` may receive the key: `https`, or `http` to a loopback host
/// (`127.0.0.0/8`, `::1`, `localhost`) for local gateways and tests. The URL must have no user
/// information.
///
/// # Errors
///
/// [`ClientError::InvalidBaseUrl`] naming the URL's origin and the fix.
pub fn check_base_url(url: &str) -> Result<Uri, ClientError> {
    let invalid = |origin: String, reason| ClientError::InvalidBaseUrl { origin, reason };

    if url.chars().any(char::is_whitespace) {
        return Err(invalid(
            String::from("(unparseable)"),
            "the URL contains whitespace; remove spaces and line breaks around or inside it",
        ));
    }
    let uri: Uri = url.parse().map_err(|_| {
        invalid(
            String::from("(unparseable)"),
            "not an absolute URL; use https://host/path",
        )
    })?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(invalid(
            String::from("(unparseable)"),
            "not an absolute URL; use https://host/path",
        ));
    };
    let origin = match authority.port_u16() {
        Some(port) => format!("{scheme}://{}:{port}", authority.host()),
        None => format!("{scheme}://{}", authority.host()),
    };
    // Security: the user information part can hold a password, so it is never printed.
    if authority.as_str().contains('@') {
        return Err(invalid(
            origin,
            "user information in the URL is not allowed; remove the part before '@'",
        ));
    }

    match scheme.to_ascii_lowercase().as_str() {
        "https" => Ok(uri),
        "http" if is_loopback_host(authority.host()) => Ok(uri),
        "http" => Err(invalid(
            origin,
            "plain http is allowed only to a loopback host (127.0.0.0/8, ::1, localhost); use https",
        )),
        _ => Err(invalid(origin, "the scheme must be https")),
    }
}

/// Returns whether `host` (as found in a URL, IPv6 in brackets) is `localhost` or a loopback
/// address.
pub fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<IpAddr>()
        .is_ok_and(|address| address.is_loopback())
}

/// Scheme, host and port of a URI, compared to decide whether credentials may be sent.
#[cfg_attr(not(any(feature = "reqwest", feature = "tower")), allow(dead_code))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

#[cfg_attr(not(any(feature = "reqwest", feature = "tower")), allow(dead_code))]
impl Origin {
    /// Returns the origin of `uri`, or `None` for a relative URI.
    pub(crate) fn of(uri: &Uri) -> Option<Origin> {
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let authority = uri.authority()?;
        let port = authority.port_u16().or(match scheme.as_str() {
            "https" => Some(443),
            "http" => Some(80),
            _ => None,
        });
        Some(Origin {
            scheme,
            host: authority.host().to_ascii_lowercase(),
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_rule_accepts_https_and_loopback() {
        for url in [
            "https://ai.megallm.io/v1",
            "https://ai.megallm.io",
            "http://127.0.0.1:8080/v1",
            "http://127.10.0.3/v1",
            "http://[::1]:9000",
            "http://localhost:3000",
            "http://LOCALHOST",
        ] {
            assert!(check_base_url(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn base_url_rule_rejects_remote_http() {
        let cases = [
            ("http://ai.megallm.io/v1", "http://ai.megallm.io"),
            ("http://10.0.0.5:8080/v1", "http://10.0.0.5:8080"),
            ("http://128.0.0.1/v1", "http://128.0.0.1"),
            ("ftp://ai.megallm.io", "ftp://ai.megallm.io"),
        ];
        for (url, origin) in cases {
            let error = check_base_url(url).unwrap_err();
            let ClientError::InvalidBaseUrl { origin: shown, .. } = &error else {
                panic!("{url}: {error:?}");
            };
            assert_eq!(shown, origin, "{url}");
        }
    }

    #[test]
    fn base_url_error_hides_userinfo_and_query() {
        let error = check_base_url("https://user:hunter2@ai.megallm.io/v1?token=abc").unwrap_err();
        let text = error.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("user:"), "{text}");
        assert!(text.contains("remove the part before '@'"), "{text}");

        let error = check_base_url("http://example.com/v1?token=abc").unwrap_err();
        assert!(!error.to_string().contains("token"));

        let error = check_base_url("http://user:pw@127.0.0.1:37505/v1").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("invalid MegaLLM base URL http://127.0.0.1:37505:"),
            "{error}"
        );

        let error = check_base_url("https://ai.megallm.io/v1 ").unwrap_err();
        assert!(error.to_string().contains("contains whitespace"), "{error}");
    }

    #[test]
    fn relative_url_is_rejected() {
        let error = check_base_url("/v1/chat").unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid MegaLLM base URL (unparseable): not an absolute URL; use https://host/path"
        );
    }

    #[test]
    fn origin_uses_default_ports() {
        let a = Origin::of(&"https://AI.megallm.io/v1".parse().unwrap()).unwrap();
        let b = Origin::of(&"https://ai.megallm.io:443/x".parse().unwrap()).unwrap();
        let c = Origin::of(&"http://ai.megallm.io/x".parse().unwrap()).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn gateway_errors_carry_remedies() {
        let fingerprint = Fingerprint::of(b"sk-mega-TESTKEY0000000000");
        let unauthorized = GatewayError::Unauthorized {
            source_label: String::from("file:/run/secrets/megallm_api_key"),
            fingerprint: fingerprint.clone(),
            retried: false,
        };
        assert_eq!(
            unauthorized.to_string(),
            format!(
                "MegaLLM answered 401 Unauthorized for the API key {fingerprint} from \
                 file:/run/secrets/megallm_api_key; check that the API key is valid and has not expired"
            )
        );
        let forbidden = GatewayError::Forbidden {
            source_label: String::from("env:MEGALLM_API_KEY"),
            fingerprint,
        };
        assert!(forbidden.to_string().ends_with(REMEDY_FORBIDDEN));
        let limited = GatewayError::RateLimited {
            retry_after: Some(Duration::from_secs(3)),
            attempts: 4,
        };
        assert_eq!(
            limited.to_string(),
            "MegaLLM answered 429 Too Many Requests to all 4 attempts (Retry-After: 3 s); wait and retry"
        );
        let unbounded = GatewayError::RateLimited {
            retry_after: Some(Duration::from_secs(u64::MAX)),
            attempts: 4,
        };
        assert_eq!(
            unbounded.to_string(),
            "MegaLLM answered 429 Too Many Requests to all 4 attempts (Retry-After: more than a year); wait and retry"
        );
    }
}
