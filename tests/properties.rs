//! Property tests: key normalisation and header building on arbitrary input never panic, never
//! accept a malformed key, and never quote the key in an error.

use megallm_auth::{ApiKey, ApiStyle, AuthHeaders, Fingerprint, KeyPolicy};
use proptest::prelude::*;
use secrecy::SecretString;

const LABEL: &str = "test:property";

/// Text that people paste around or into a key: whitespace, line ends, quotes, a BOM, control
/// characters and non-ASCII look-alikes. None contains a character that a key may contain.
fn decoration() -> impl Strategy<Value = String> {
    let listed = prop_oneof![
        Just(" "),
        Just("\t"),
        Just("\n"),
        Just("\r"),
        Just("\r\n"),
        Just("\u{a0}"),
        Just("\u{2003}"),
        Just("\u{3000}"),
        Just("\u{85}"),
        Just("\""),
        Just("'"),
        Just("`"),
        Just("\u{201c}"),
        Just("\u{201d}"),
        Just("\u{feff}"),
        Just("\0"),
        Just("\u{7}"),
        Just("\u{1b}"),
        Just("\u{7f}"),
        Just("\u{9b}"),
        Just("é"),
        Just("\u{2014}"),
        Just("\u{1f511}"),
        Just("\u{200b}"),
    ]
    .prop_map(str::to_owned);
    let other = any::<char>()
        .prop_filter("not a character a key may contain", |character| {
            !character.is_ascii_graphic() || matches!(character, '"' | '\'' | '`')
        })
        .prop_map(String::from);
    prop_oneof![3 => listed, 1 => other]
}

fn decorations() -> impl Strategy<Value = String> {
    proptest::collection::vec(decoration(), 0..4).prop_map(|parts| parts.concat())
}

/// Decorations before a key, which may also contain a pasted `Bearer ` scheme. The scheme's
/// letters are key characters, so it is never put after or inside the key.
fn leading_decorations() -> impl Strategy<Value = String> {
    let scheme = prop_oneof![Just(""), Just("Bearer "), Just("bearer "), Just("BEARER ")];
    (decorations(), scheme, decorations())
        .prop_map(|(outer, scheme, inner)| format!("{outer}{scheme}{inner}"))
}

/// Generates a key body of 16 to 40 letters and digits.
fn key_body() -> impl Strategy<Value = String> {
    "[A-Za-z0-9]{16,40}"
}

/// Generates a valid key surrounded by decorations, sometimes with one more decoration
/// inside it, as the pair (key body, decorated text).
fn decorated_key() -> impl Strategy<Value = (String, String)> {
    (
        key_body(),
        leading_decorations(),
        decorations(),
        proptest::option::of((any::<prop::sample::Index>(), decoration())),
    )
        .prop_map(|(body, prefix, suffix, inside)| {
            let mut key = format!("sk-mega-{body}");
            if let Some((index, decoration)) = inside {
                let position = index.index(key.len() + 1);
                key.insert_str(position, &decoration);
            }
            let text = format!("{prefix}{key}{suffix}");
            (body, text)
        })
}

/// Fails when `text` contains any 6-character run of `body`.
fn check_no_run(what: &str, text: &str, body: &str) -> Result<(), TestCaseError> {
    for run in body.as_bytes().windows(6) {
        let run = std::str::from_utf8(run).expect("key bodies are ASCII");
        prop_assert!(
            !text.contains(run),
            "{} contains the key run {:?}: {}",
            what,
            run,
            text
        );
    }
    Ok(())
}

/// Checks the shape of an accepted key.
fn check_accepted(key: &ApiKey, policy: KeyPolicy) -> Result<(), TestCaseError> {
    let text = key.expose_secret();
    prop_assert!(!text.is_empty());
    prop_assert!(
        !text.chars().any(char::is_whitespace),
        "whitespace in {:?}",
        text
    );
    prop_assert!(
        !text.chars().any(char::is_control),
        "control character in {:?}",
        text
    );
    prop_assert!(
        !text.contains(['"', '\'', '`']),
        "quote character in {:?}",
        text
    );
    prop_assert!(text.is_ascii(), "non-ASCII character in {:?}", text);
    if policy == KeyPolicy::Strict {
        prop_assert!(text.starts_with("sk-mega-"), "no prefix on {:?}", text);
    }
    prop_assert_eq!(key.fingerprint(), &Fingerprint::of(text.as_bytes()));
    Ok(())
}

/// Returns true when HTTP allows `secret` as a header value and it is not empty, which is
/// exactly when `AuthHeaders::from_secret` must succeed. A credential may not contain spaces
/// or tabs either, because servers trim them from the ends of header values.
fn is_valid_header_value(secret: &[u8]) -> bool {
    !secret.is_empty() && !secret.iter().any(|&byte| byte <= b' ' || byte == 0x7f)
}

fn policies() -> impl Strategy<Value = KeyPolicy> {
    prop_oneof![
        Just(KeyPolicy::Strict),
        Just(KeyPolicy::Warn),
        Just(KeyPolicy::Off)
    ]
}

fn styles() -> impl Strategy<Value = ApiStyle> {
    prop_oneof![Just(ApiStyle::OpenAi), Just(ApiStyle::Anthropic)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..96),
        policy in policies(),
    ) {
        match ApiKey::from_bytes(&bytes, LABEL, policy) {
            Ok(key) => check_accepted(&key, policy)?,
            Err(error) => prop_assert_eq!(error.source_label.as_str(), LABEL),
        }
    }

    #[test]
    fn bytes_around_key_never_leak(
        body in key_body(),
        before in proptest::collection::vec(any::<u8>(), 0..8),
        after in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        let mut bytes = before;
        bytes.extend_from_slice(b"sk-mega-");
        bytes.extend_from_slice(body.as_bytes());
        bytes.extend_from_slice(&after);

        match ApiKey::from_bytes(&bytes, LABEL, KeyPolicy::Strict) {
            Ok(key) => check_accepted(&key, KeyPolicy::Strict)?,
            Err(error) => {
                check_no_run("error Display", &error.to_string(), &body)?;
                check_no_run("error Debug", &format!("{error:?}"), &body)?;
            }
        }
    }

    #[test]
    fn decorated_key_yields_key_or_error((body, text) in decorated_key()) {
        let key = format!("sk-mega-{body}");

        match ApiKey::from_bytes(text.as_bytes(), LABEL, KeyPolicy::Strict) {
            Ok(accepted) => {
                check_accepted(&accepted, KeyPolicy::Strict)?;
                // No decoration is a character a key may contain, so normalisation either
                // recovers the key exactly or rejects the text.
                prop_assert_eq!(accepted.expose_secret(), key.as_str());
                let debug = format!("{accepted:?}");
                prop_assert_eq!(debug.as_str(), "ApiKey([REDACTED])");
            }
            Err(error) => {
                prop_assert_eq!(error.source_label.as_str(), LABEL);
                check_no_run("error Display", &error.to_string(), &body)?;
                check_no_run("error Debug", &format!("{error:?}"), &body)?;
            }
        }
    }

    #[test]
    fn from_secret_arbitrary_never_panics(secret in any::<String>(), style in styles()) {
        let result = AuthHeaders::from_secret(&SecretString::from(secret.clone()), style);

        prop_assert_eq!(result.is_ok(), is_valid_header_value(secret.as_bytes()));
        if let Ok(headers) = result {
            for value in headers.to_header_map().values() {
                prop_assert!(!value.as_bytes().contains(&b'\r'));
                prop_assert!(!value.as_bytes().contains(&b'\n'));
            }
        }
    }

    #[test]
    fn from_secret_decorated_never_leaks((body, text) in decorated_key(), style in styles()) {
        let result = AuthHeaders::from_secret(&SecretString::from(text.clone()), style);

        prop_assert_eq!(result.is_ok(), is_valid_header_value(text.as_bytes()));
        match result {
            Ok(headers) => {
                let map = headers.to_header_map();
                for value in map.values() {
                    prop_assert!(!value.as_bytes().contains(&b'\r'));
                    prop_assert!(!value.as_bytes().contains(&b'\n'));
                }
                let credential = &map[style.credential_header()];
                prop_assert!(credential.is_sensitive());
                check_no_run("AuthHeaders Debug", &format!("{headers:?}"), &body)?;
                check_no_run("HeaderMap Debug", &format!("{map:?}"), &body)?;
            }
            Err(error) => {
                check_no_run("HeaderError Display", &error.to_string(), &body)?;
                check_no_run("HeaderError Debug", &format!("{error:?}"), &body)?;
            }
        }
    }

    #[test]
    fn valid_key_headers_round_trip(
        // Printable ASCII without space and the quote characters ", ' and `.
        body in "[!#-&(-_a-~]{1,64}",
        style in styles(),
    ) {
        let text = format!("sk-mega-{body}");
        let key = ApiKey::parse(&text, LABEL, KeyPolicy::Strict)
            .map_err(|error| TestCaseError::fail(error.to_string()))?;
        prop_assert_eq!(key.expose_secret(), text.as_str());

        let headers = AuthHeaders::new(&key, style);
        let map = headers.to_header_map();
        let credential = &map[style.credential_header()];

        let expected = match style {
            ApiStyle::OpenAi => format!("Bearer {text}"),
            ApiStyle::Anthropic => text.clone(),
        };
        prop_assert_eq!(credential.as_bytes(), expected.as_bytes());
        prop_assert!(credential.is_sensitive());
        prop_assert_eq!(map.len(), match style {
            ApiStyle::OpenAi => 1,
            ApiStyle::Anthropic => 2,
        });
        prop_assert_eq!(headers.fingerprint(), Some(key.fingerprint()));
    }
}
