//! [`ApiStyle`] and [`AuthHeaders`]: the request headers for MegaLLM's two APIs.

use std::fmt;

use bytes::Bytes;
use http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::key::{ApiKey, Fingerprint};

/// `x-api-key`, the credential header of the Anthropic-compatible API.
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
/// `anthropic-version`, required by the Anthropic-compatible API.
pub const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
/// `x-debug-auth`, which requests authentication debugging from the gateway.
pub const X_DEBUG_AUTH: HeaderName = HeaderName::from_static("x-debug-auth");
/// The `anthropic-version` sent unless configured otherwise.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// MegaLLM API that a request targets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiStyle {
    /// The OpenAI-compatible API at `https://ai.megallm.io/v1`: `Authorization: Bearer <key>`.
    #[default]
    #[serde(rename = "openai")]
    OpenAi,
    /// The Anthropic-compatible API at `https://ai.megallm.io`: `x-api-key: <key>` and
    /// `anthropic-version`.
    Anthropic,
}

impl ApiStyle {
    /// Returns the name of the credential header for this style.
    pub fn credential_header(self) -> HeaderName {
        match self {
            ApiStyle::OpenAi => AUTHORIZATION,
            ApiStyle::Anthropic => X_API_KEY,
        }
    }

    /// Returns the default base URL of this style's API.
    pub fn default_base_url(self) -> &'static str {
        match self {
            ApiStyle::OpenAi => "https://ai.megallm.io/v1",
            ApiStyle::Anthropic => "https://ai.megallm.io",
        }
    }
}

impl fmt::Display for ApiStyle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ApiStyle::OpenAi => "openai",
            ApiStyle::Anthropic => "anthropic",
        })
    }
}

/// A header value that could not be built. It names the header, never the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The value contains a byte that HTTP forbids in a header (CR, LF, NUL or another control
    /// character), at this byte position.
    #[error(
        "cannot build the {header} header: the value contains a forbidden byte (CR, LF or another control character) at byte {position}; remove it where the value is stored"
    )]
    ForbiddenByte {
        /// Name of the header.
        header: &'static str,
        /// Byte position of the first forbidden byte.
        position: usize,
    },
    /// The credential contains a space or tab, at this byte position. HTTP allows them,
    /// but servers trim them from the ends of a header value, so the key that arrives would
    /// differ from the one sent.
    #[error(
        "cannot build the {header} header: the key contains whitespace at byte {position}; normalise the key with ApiKey::parse first"
    )]
    Whitespace {
        /// Name of the header.
        header: &'static str,
        /// Byte position of the first space or tab.
        position: usize,
    },
    /// The value is empty.
    #[error("cannot build the {header} header: the value is empty")]
    Empty {
        /// Name of the header.
        header: &'static str,
    },
}

/// The headers that authenticate one API style with one key, built once and applied to any
/// number of requests.
///
/// The credential value is marked sensitive, so `http`'s `Debug` prints `Sensitive`, and its
/// bytes live in zeroizing memory that is wiped when the last clone of the value drops.
/// `apply` replaces any credential header of its style and removes the other style's, so
/// exactly one credential header leaves.
#[derive(Clone)]
pub struct AuthHeaders {
    style: ApiStyle,
    credential: HeaderValue,
    anthropic_version: HeaderValue,
    debug_auth: bool,
    fingerprint: Option<Fingerprint>,
}

impl AuthHeaders {
    /// Builds the headers for `key` in `style`, with the default `anthropic-version` and
    /// without `X-Debug-Auth`.
    pub fn new(key: &ApiKey, style: ApiStyle) -> AuthHeaders {
        let credential = credential_value(key.expose_secret().as_bytes(), style)
            .expect("ApiKey's shape check admits only printable ASCII");
        AuthHeaders {
            style,
            credential,
            anthropic_version: HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION),
            debug_auth: false,
            fingerprint: Some(key.fingerprint().clone()),
        }
    }

    /// Builds the headers from a secret that has not been through [`ApiKey::parse`].
    ///
    /// Nothing is trimmed or normalised: a trailing newline is an error, not silently removed.
    ///
    /// # Errors
    ///
    /// [`HeaderError`] naming the header when the secret is empty, or contains a space, a tab
    /// or a byte that is not allowed in a header value.
    pub fn from_secret(secret: &SecretString, style: ApiStyle) -> Result<AuthHeaders, HeaderError> {
        let credential = credential_value(secret.expose_secret().as_bytes(), style)?;
        Ok(AuthHeaders {
            style,
            credential,
            anthropic_version: HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION),
            debug_auth: false,
            fingerprint: Some(Fingerprint::of(secret.expose_secret().as_bytes())),
        })
    }

    /// Sets the `anthropic-version` sent in Anthropic style.
    ///
    /// # Errors
    ///
    /// [`HeaderError`] when `version` is empty or contains a forbidden byte.
    pub fn with_anthropic_version(mut self, version: &str) -> Result<AuthHeaders, HeaderError> {
        const HEADER: &str = "anthropic-version";
        if version.is_empty() {
            return Err(HeaderError::Empty { header: HEADER });
        }
        check_bytes(version.as_bytes(), HEADER)?;
        self.anthropic_version =
            HeaderValue::from_str(version).map_err(|_| HeaderError::ForbiddenByte {
                header: HEADER,
                position: 0,
            })?;
        Ok(self)
    }

    /// Sends `X-Debug-Auth: true`, which requests authentication debugging from the gateway.
    #[must_use]
    pub fn with_debug_auth(mut self, enabled: bool) -> AuthHeaders {
        self.debug_auth = enabled;
        self
    }

    /// Returns the API style.
    pub fn style(&self) -> ApiStyle {
        self.style
    }

    /// Returns the fingerprint of the key in these headers.
    pub fn fingerprint(&self) -> Option<&Fingerprint> {
        self.fingerprint.as_ref()
    }

    /// Writes the headers into `headers`.
    ///
    /// Exactly one credential header leaves: inserting replaces every value of this style's
    /// header, and the other style's header is removed, whatever the case of either name. In
    /// Anthropic style `anthropic-version` is set unless the request already carries one.
    /// `X-Debug-Auth: true` is added when enabled; a request's own `X-Debug-Auth` is kept.
    #[inline]
    pub fn apply(&self, headers: &mut HeaderMap) {
        let (credential_header, other_header) = match self.style {
            ApiStyle::OpenAi => (AUTHORIZATION, X_API_KEY),
            ApiStyle::Anthropic => (X_API_KEY, AUTHORIZATION),
        };
        headers.insert(credential_header, self.credential.clone());
        // With only the credential in the map there is nothing else to remove, which saves a
        // lookup on every request that starts with empty headers.
        if headers.len() > 1 {
            headers.remove(other_header);
        }

        if self.style == ApiStyle::Anthropic && !headers.contains_key(ANTHROPIC_VERSION) {
            headers.insert(ANTHROPIC_VERSION, self.anthropic_version.clone());
        }
        if self.debug_auth {
            headers.insert(X_DEBUG_AUTH, HeaderValue::from_static("true"));
        }
    }

    /// Returns the headers as a new map.
    pub fn to_header_map(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        self.apply(&mut headers);
        headers
    }

    /// Applies the headers to a reqwest request, removing any credential header it already
    /// carries as [`AuthHeaders::apply`] does.
    ///
    /// NOTE: a builder whose body is a stream cannot be taken apart and rebuilt, so for it the
    /// headers are only added, and a credential header of the other style set earlier stays.
    /// For such a request, build it and call [`AuthHeaders::apply`] on
    /// `request.headers_mut()`.
    #[cfg(feature = "reqwest")]
    pub fn apply_to_request(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        // try_clone returns None for a stream body and for a builder that already failed, and
        // the original builder is kept for those so that its error still reaches send().
        if let Some((client, Ok(mut built))) = request.try_clone().map(|copy| copy.build_split()) {
            self.apply(built.headers_mut());
            return reqwest::RequestBuilder::from_parts(client, built);
        }
        request.headers(self.to_header_map())
    }
}

impl fmt::Debug for AuthHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthHeaders")
            .field("style", &self.style)
            .field("credential_header", &self.style.credential_header())
            .field("credential", &"[REDACTED]")
            .field("fingerprint", &self.fingerprint)
            .field("debug_auth", &self.debug_auth)
            .finish()
    }
}

/// Builds the sensitive credential value over zeroizing memory, without `format!`.
fn credential_value(secret: &[u8], style: ApiStyle) -> Result<HeaderValue, HeaderError> {
    let header = match style {
        ApiStyle::OpenAi => "authorization",
        ApiStyle::Anthropic => "x-api-key",
    };
    if secret.is_empty() {
        return Err(HeaderError::Empty { header });
    }
    check_bytes(secret, header)?;
    if let Some(position) = secret
        .iter()
        .position(|&byte| byte == b' ' || byte == b'\t')
    {
        return Err(HeaderError::Whitespace { header, position });
    }

    let prefix: &[u8] = match style {
        ApiStyle::OpenAi => b"Bearer ",
        ApiStyle::Anthropic => b"",
    };
    let mut buffer = Zeroizing::new(Vec::with_capacity(prefix.len() + secret.len()));
    buffer.extend_from_slice(prefix);
    buffer.extend_from_slice(secret);

    // Security: from_maybe_shared keeps this Bytes as the value's storage without copying, so
    // the only copy of the header bytes is the zeroizing buffer, wiped when the last clone of
    // the HeaderValue drops.
    let mut value = HeaderValue::from_maybe_shared(Bytes::from_owner(buffer)).map_err(|_| {
        HeaderError::ForbiddenByte {
            header,
            position: 0,
        }
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Rejects bytes that HTTP forbids in a header value: control characters other than tab,
/// and DEL.
fn check_bytes(value: &[u8], header: &'static str) -> Result<(), HeaderError> {
    match value
        .iter()
        .position(|&byte| (byte < 0x20 && byte != b'\t') || byte == 0x7f)
    {
        Some(position) => Err(HeaderError::ForbiddenByte { header, position }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyPolicy;

    const KEY: &str = "sk-mega-TESTKEY0000000000";

    fn key() -> ApiKey {
        ApiKey::parse(KEY, "test:unit", KeyPolicy::Strict).unwrap()
    }

    #[test]
    fn openai_style_sets_bearer() {
        let headers = AuthHeaders::new(&key(), ApiStyle::OpenAi).to_header_map();

        assert_eq!(
            headers.get(AUTHORIZATION).unwrap().as_bytes(),
            b"Bearer sk-mega-TESTKEY0000000000"
        );
        assert!(headers.get(AUTHORIZATION).unwrap().is_sensitive());
        assert!(!headers.contains_key(X_API_KEY));
        assert!(!headers.contains_key(ANTHROPIC_VERSION));
        assert!(!headers.contains_key(X_DEBUG_AUTH));
    }

    #[test]
    fn anthropic_style_sets_key_and_version() {
        let headers = AuthHeaders::new(&key(), ApiStyle::Anthropic).to_header_map();

        assert_eq!(headers.get(X_API_KEY).unwrap().as_bytes(), KEY.as_bytes());
        assert!(headers.get(X_API_KEY).unwrap().is_sensitive());
        assert_eq!(headers.get(ANTHROPIC_VERSION).unwrap(), "2023-06-01");
        assert!(!headers.contains_key(AUTHORIZATION));
    }

    #[test]
    fn debug_auth_only_when_enabled() {
        let on = AuthHeaders::new(&key(), ApiStyle::OpenAi)
            .with_debug_auth(true)
            .to_header_map();
        assert_eq!(on.get(X_DEBUG_AUTH).unwrap(), "true");

        let off = AuthHeaders::new(&key(), ApiStyle::OpenAi).to_header_map();
        assert!(!off.contains_key(X_DEBUG_AUTH));
    }

    #[test]
    fn custom_anthropic_version_is_sent() {
        let headers = AuthHeaders::new(&key(), ApiStyle::Anthropic)
            .with_anthropic_version("2024-01-01")
            .unwrap()
            .to_header_map();
        assert_eq!(headers.get(ANTHROPIC_VERSION).unwrap(), "2024-01-01");

        let error = AuthHeaders::new(&key(), ApiStyle::Anthropic)
            .with_anthropic_version("2024\r\n")
            .unwrap_err();
        assert_eq!(
            error,
            HeaderError::ForbiddenByte {
                header: "anthropic-version",
                position: 4
            }
        );
    }

    #[test]
    fn raw_secret_with_newline_is_typed_error() {
        let secret = SecretString::from("sk-mega-TESTKEY0000000000\n");

        let error = AuthHeaders::from_secret(&secret, ApiStyle::OpenAi).unwrap_err();

        assert_eq!(
            error,
            HeaderError::ForbiddenByte {
                header: "authorization",
                position: 25
            }
        );
        assert!(!error.to_string().contains("TESTKEY"));
    }

    #[test]
    fn raw_secret_with_tab_is_typed_error() {
        let secret = SecretString::from("sk-mega-TESTKEY0000000000\t");

        let error = AuthHeaders::from_secret(&secret, ApiStyle::Anthropic).unwrap_err();

        assert_eq!(
            error,
            HeaderError::Whitespace {
                header: "x-api-key",
                position: 25
            }
        );
    }

    #[test]
    fn debug_output_is_redacted() {
        let headers = AuthHeaders::new(&key(), ApiStyle::OpenAi);
        let text = format!("{headers:?} {:?}", headers.to_header_map());
        assert!(!text.contains("TESTKEY"), "{text}");
        assert!(text.contains("Sensitive"), "{text}");
    }
}
