//! [`ApiKey`]: the MegaLLM API key in zeroizing memory, with its normalisation and shape check.

use std::fmt;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Prefix of every MegaLLM API key.
pub const KEY_PREFIX: &str = "sk-mega-";

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Key prefixes of other vendors, with the vendor's name for the error message.
const FOREIGN_PREFIXES: &[(&str, &str)] = &[
    ("sk-ant-", "Anthropic"),
    ("sk-proj-", "OpenAI (project key)"),
    ("sk-svcacct-", "OpenAI (service account key)"),
    ("sk-admin-", "OpenAI (admin key)"),
    ("sk-or-", "OpenRouter"),
    ("gsk_", "Groq"),
    ("xai-", "xAI"),
    ("AIza", "Google"),
];

/// Policy for keys that lack the `sk-mega-` prefix.
///
/// Every other shape rule (no inner whitespace, no control characters, no quotes, no `Bearer `
/// prefix, no other vendor's key) applies under every policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyPolicy {
    /// A key without the `sk-mega-` prefix is rejected.
    #[default]
    Strict,
    /// A key without the `sk-mega-` prefix is accepted with a warning in the log.
    Warn,
    /// The prefix is not checked.
    Off,
}

/// Problem with a key's shape. The variants never carry any character of the key.
///
/// Positions count characters from 0; messages count from 1, as editors do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyProblem {
    /// Nothing is left after trimming whitespace and quotes.
    Empty,
    /// The bytes are not valid UTF-8.
    NotUtf8,
    /// The key starts with `Bearer `, as when a whole header value is pasted.
    BearerPrefix,
    /// Whitespace inside the key, at this character position (0-based).
    InnerWhitespace {
        /// Character position of the first whitespace.
        position: usize,
    },
    /// A control character (such as CR, LF or NUL) inside the key.
    ControlCharacter {
        /// Character position of the first control character.
        position: usize,
    },
    /// A quote character that is not part of one matched surrounding pair.
    StrayQuote {
        /// Character position of the first quote.
        position: usize,
    },
    /// A character outside printable ASCII, such as a typographic dash or quote.
    NonAscii {
        /// Character position of the first such character.
        position: usize,
    },
    /// The key belongs to another vendor.
    ForeignKey {
        /// The vendor whose key prefix was found.
        vendor: &'static str,
    },
    /// The key does not start with `sk-mega-` (policy `strict`).
    MissingPrefix,
    /// The key is the `sk-mega-` prefix and nothing after it.
    PrefixOnly,
}

impl KeyProblem {
    /// Returns what to do about the problem, as a sentence for error messages.
    pub fn remedy(&self) -> &'static str {
        match self {
            KeyProblem::Empty => "store the key itself in this source",
            KeyProblem::NotUtf8 => {
                "save the file as UTF-8 text (a UTF-16 editor encoding is a common cause)"
            }
            KeyProblem::BearerPrefix => {
                "store only the key; the library adds the `Bearer ` prefix itself"
            }
            KeyProblem::InnerWhitespace { .. } => {
                "remove the whitespace; a key split across lines or quoted with spaces is a common cause"
            }
            KeyProblem::ControlCharacter { .. } => {
                "remove the control character; a CR or LF inside a multi-line value is a common cause"
            }
            KeyProblem::StrayQuote { .. } => {
                "remove the quote characters, or quote the whole value with one matched pair"
            }
            KeyProblem::NonAscii { .. } => {
                "retype the key; copying it through a word processor can replace dashes and quotes"
            }
            KeyProblem::ForeignKey { .. } => {
                "use a MegaLLM key (it starts with `sk-mega-`) from the MegaLLM dashboard"
            }
            KeyProblem::MissingPrefix => {
                "use a MegaLLM key (it starts with `sk-mega-`), or set key_policy = \"warn\" or \"off\" for a gateway that issues other keys"
            }
            KeyProblem::PrefixOnly => "copy the whole key, not just its `sk-mega-` prefix",
        }
    }
}

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyProblem::Empty => f.write_str("the key is empty"),
            KeyProblem::NotUtf8 => f.write_str("the key is not valid UTF-8"),
            KeyProblem::BearerPrefix => f.write_str("the key starts with `Bearer `"),
            KeyProblem::InnerWhitespace { position } => {
                write!(
                    f,
                    "the key contains whitespace at character {}",
                    position + 1
                )
            }
            KeyProblem::ControlCharacter { position } => {
                write!(
                    f,
                    "the key contains a control character at character {}",
                    position + 1
                )
            }
            KeyProblem::StrayQuote { position } => {
                write!(
                    f,
                    "the key contains a stray quote character at character {}",
                    position + 1
                )
            }
            KeyProblem::NonAscii { position } => {
                write!(
                    f,
                    "the key contains a non-ASCII character at character {}",
                    position + 1
                )
            }
            KeyProblem::ForeignKey { vendor } => {
                write!(
                    f,
                    "the key looks like a key from {vendor}, not a MegaLLM key"
                )
            }
            KeyProblem::MissingPrefix => f.write_str("the key does not start with `sk-mega-`"),
            KeyProblem::PrefixOnly => f.write_str("the key has nothing after `sk-mega-`"),
        }
    }
}

/// A key that failed normalisation or the shape check. It names the source, never the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid MegaLLM API key from {source_label}: {problem}; {}", problem.remedy())]
pub struct InvalidKey {
    /// Label of the source the key came from, such as `env:MEGALLM_API_KEY`.
    pub source_label: String,
    /// The problem found.
    pub problem: KeyProblem,
}

/// Short, non-reversible identifier of a key: `sha256:` and the first 8 hex digits of the
/// SHA-256 of the key. Logs, reports and errors use it to tell keys apart.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// Computes the fingerprint of `secret`.
    pub fn of(secret: &[u8]) -> Fingerprint {
        let digest = Sha256::digest(secret);
        let mut text = String::with_capacity(15);
        text.push_str("sha256:");
        for byte in &digest[..4] {
            text.push_str(&format!("{byte:02x}"));
        }
        Fingerprint(text)
    }

    /// Returns the fingerprint as text, such as `sha256:1a2b3c4d`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.0)
    }
}

/// A MegaLLM API key, normalised and shape-checked, held in zeroizing memory.
///
/// Cloning is cheap and shares one allocation, which is wiped when the last clone drops.
/// `Debug` prints `ApiKey([REDACTED])` and nothing else. There is deliberately no `Display`
/// and no `Serialize`: the only way to the characters is [`ApiKey::expose_secret`].
///
/// ```compile_fail
/// fn needs_serialize<T: serde::Serialize>() {}
/// needs_serialize::<megallm_auth::ApiKey>();
/// ```
///
/// ```compile_fail
/// let key = megallm_auth::ApiKey::parse("sk-mega-TEST0000", "doc", Default::default()).unwrap();
/// println!("{key}");
/// ```
#[derive(Clone)]
pub struct ApiKey {
    inner: Arc<Inner>,
}

struct Inner {
    secret: SecretString,
    fingerprint: Fingerprint,
}

impl ApiKey {
    /// Normalises and checks `raw`, a key as read from the source named by `source_label`.
    ///
    /// Normalisation runs in this order:
    /// 1. strip a UTF-8 byte order mark;
    /// 2. trim surrounding whitespace, including CR and LF;
    /// 3. strip one matched pair of surrounding `"` or `'` quotes, with a warning naming the
    ///    source.
    ///
    /// The shape check then rejects the problems in [`KeyProblem`].
    ///
    /// # Errors
    ///
    /// [`InvalidKey`] naming `source_label` and the problem, never the value.
    pub fn parse(raw: &str, source_label: &str, policy: KeyPolicy) -> Result<ApiKey, InvalidKey> {
        Self::from_bytes(raw.as_bytes(), source_label, policy)
    }

    /// Like [`ApiKey::parse`], for raw bytes such as a file's contents.
    ///
    /// # Errors
    ///
    /// [`InvalidKey`] with [`KeyProblem::NotUtf8`] for bytes that are not UTF-8, and the
    /// problems of [`ApiKey::parse`].
    pub fn from_bytes(
        raw: &[u8],
        source_label: &str,
        policy: KeyPolicy,
    ) -> Result<ApiKey, InvalidKey> {
        let invalid = |problem| InvalidKey {
            source_label: source_label.to_owned(),
            problem,
        };

        let without_bom = raw.strip_prefix(UTF8_BOM).unwrap_or(raw);
        // Security: the error from from_utf8 carries no bytes of the input.
        let text = std::str::from_utf8(without_bom).map_err(|_| invalid(KeyProblem::NotUtf8))?;

        let key = normalise(text, source_label);
        check_shape(key, policy, source_label).map_err(invalid)?;

        Ok(ApiKey::from_checked(key))
    }

    fn from_checked(key: &str) -> ApiKey {
        let fingerprint = Fingerprint::of(key.as_bytes());
        ApiKey {
            inner: Arc::new(Inner {
                secret: SecretString::from(key),
                fingerprint,
            }),
        }
    }

    /// Returns the key's characters. Every use is a place where the key can leak: send it
    /// only in a request header.
    pub fn expose_secret(&self) -> &str {
        self.inner.secret.expose_secret()
    }

    /// Returns the key's fingerprint.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.inner.fingerprint
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([REDACTED])")
    }
}

impl PartialEq for ApiKey {
    /// Compares by fingerprint and then by value, so two keys from different sources with the
    /// same characters are equal.
    fn eq(&self, other: &ApiKey) -> bool {
        self.fingerprint() == other.fingerprint() && self.expose_secret() == other.expose_secret()
    }
}

impl Eq for ApiKey {}

/// Strips a surrounding whitespace and one matched pair of quotes. Returns a slice of `text`,
/// so no copy of the key is made.
fn normalise<'a>(text: &'a str, source_label: &str) -> &'a str {
    let trimmed = text.trim();
    match strip_matched_quotes(trimmed) {
        Some(inner) => {
            tracing::warn!(
                source = source_label,
                "stripped one pair of quotes around the MegaLLM API key; remove them where the key is stored"
            );
            inner.trim()
        }
        None => trimmed,
    }
}

fn strip_matched_quotes(text: &str) -> Option<&str> {
    ['"', '\''].into_iter().find_map(|quote| {
        let inner = text.strip_prefix(quote)?.strip_suffix(quote)?;
        Some(inner)
    })
}

fn check_shape(key: &str, policy: KeyPolicy, source_label: &str) -> Result<(), KeyProblem> {
    if key.is_empty() {
        return Err(KeyProblem::Empty);
    }
    if key
        .get(..7)
        .is_some_and(|start| start.eq_ignore_ascii_case("bearer "))
    {
        return Err(KeyProblem::BearerPrefix);
    }

    for (position, character) in key.chars().enumerate() {
        if character.is_control() {
            return Err(KeyProblem::ControlCharacter { position });
        }
        if character.is_whitespace() {
            return Err(KeyProblem::InnerWhitespace { position });
        }
        if matches!(character, '"' | '\'' | '`') {
            return Err(KeyProblem::StrayQuote { position });
        }
        if !character.is_ascii() {
            return Err(KeyProblem::NonAscii { position });
        }
    }

    if let Some((_, vendor)) = FOREIGN_PREFIXES
        .iter()
        .find(|(prefix, _)| key.starts_with(prefix))
    {
        return Err(KeyProblem::ForeignKey { vendor });
    }

    if key == KEY_PREFIX {
        return Err(KeyProblem::PrefixOnly);
    }
    if !key.starts_with(KEY_PREFIX) {
        match policy {
            KeyPolicy::Strict => return Err(KeyProblem::MissingPrefix),
            KeyPolicy::Warn => tracing::warn!(
                source = source_label,
                "the MegaLLM API key does not start with `sk-mega-`; accepted because key_policy is \"warn\""
            ),
            KeyPolicy::Off => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-mega-TESTKEY0000000000";

    fn parse(raw: &str) -> Result<ApiKey, InvalidKey> {
        ApiKey::parse(raw, "test:unit", KeyPolicy::Strict)
    }

    fn problem(raw: &str) -> KeyProblem {
        parse(raw).expect_err("expected an invalid key").problem
    }

    #[test]
    fn normalisation_strips_surroundings() {
        let cases = [
            "sk-mega-TESTKEY0000000000",
            "sk-mega-TESTKEY0000000000\n",
            "sk-mega-TESTKEY0000000000\n\n",
            "sk-mega-TESTKEY0000000000\r\n",
            "sk-mega-TESTKEY0000000000\r",
            "  sk-mega-TESTKEY0000000000\t",
            "\"sk-mega-TESTKEY0000000000\"",
            "'sk-mega-TESTKEY0000000000'\n",
            "\u{feff}sk-mega-TESTKEY0000000000",
        ];
        for raw in cases {
            let key = parse(raw).unwrap_or_else(|error| panic!("{raw:?}: {error}"));
            assert_eq!(key.expose_secret(), KEY, "input {raw:?}");
        }
    }

    #[test]
    fn shape_problems_are_classified() {
        assert_eq!(problem(""), KeyProblem::Empty);
        assert_eq!(problem(" \r\n"), KeyProblem::Empty);
        assert_eq!(problem("\"\""), KeyProblem::Empty);
        assert_eq!(problem("Bearer sk-mega-TESTKEY0"), KeyProblem::BearerPrefix);
        assert_eq!(problem("bearer sk-mega-TESTKEY0"), KeyProblem::BearerPrefix);
        assert_eq!(
            problem("sk-mega-TEST KEY000000000"),
            KeyProblem::InnerWhitespace { position: 12 }
        );
        assert_eq!(
            problem("sk-mega-TEST\nKEY000000000"),
            KeyProblem::ControlCharacter { position: 12 }
        );
        assert_eq!(
            problem("\"sk-mega-TESTKEY0000000000"),
            KeyProblem::StrayQuote { position: 0 }
        );
        assert_eq!(
            problem("sk-mega-TEST\u{2013}KEY"),
            KeyProblem::NonAscii { position: 12 }
        );
        assert_eq!(
            problem("sk-ant-TESTKEY0000000000"),
            KeyProblem::ForeignKey {
                vendor: "Anthropic"
            }
        );
        assert_eq!(problem("TESTKEY0000000000"), KeyProblem::MissingPrefix);
        assert_eq!(problem("sk-mega-"), KeyProblem::PrefixOnly);
    }

    #[test]
    fn policy_controls_prefix_check() {
        let warn = ApiKey::parse("TESTKEY0000000000", "test:unit", KeyPolicy::Warn).unwrap();
        assert_eq!(warn.expose_secret(), "TESTKEY0000000000");
        let off = ApiKey::parse("TESTKEY0000000000", "test:unit", KeyPolicy::Off).unwrap();
        assert_eq!(off.expose_secret(), "TESTKEY0000000000");
        let foreign = ApiKey::parse("sk-proj-TESTKEY00", "test:unit", KeyPolicy::Off);
        assert!(matches!(
            foreign.unwrap_err().problem,
            KeyProblem::ForeignKey { .. }
        ));
    }

    #[test]
    fn invalid_utf8_is_typed_error() {
        let error = ApiKey::from_bytes(b"sk-mega-\xff\xfe", "file:/x", KeyPolicy::Strict)
            .expect_err("invalid UTF-8 must fail");
        assert_eq!(error.problem, KeyProblem::NotUtf8);
        assert_eq!(error.source_label, "file:/x");
    }

    #[test]
    fn debug_is_fixed_redaction() {
        let key = parse(KEY).unwrap();
        assert_eq!(format!("{key:?}"), "ApiKey([REDACTED])");
        assert_eq!(format!("{key:#?}"), "ApiKey([REDACTED])");
    }

    #[test]
    fn fingerprint_is_sha256_prefix() {
        let key = parse(KEY).unwrap();
        let digest = Sha256::digest(KEY.as_bytes());
        let expected: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(key.fingerprint().as_str(), format!("sha256:{expected}"));
        assert_eq!(key.fingerprint().as_str().len(), 15);
    }

    #[test]
    fn error_names_source_not_value() {
        let error = parse("sk-mega-TEST KEY000000000").unwrap_err();
        let text = error.to_string();
        assert!(text.contains("test:unit"), "{text}");
        assert!(!text.contains("TEST"), "{text}");
        assert!(!format!("{error:?}").contains("TEST"));
    }
}
