//! Turns a `GetSecretValue` output into an [`ApiKey`]: plain text, a JSON object with the key in
//! one field, or a JSON string.

use std::collections::BTreeMap;
use std::fmt;

use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueOutput;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use zeroize::Zeroizing;

use super::Context;
use crate::key::ApiKey;
use crate::source::{SourceError, SourceErrorKind};

/// Reads the key from `SecretString`, or from `SecretBinary` when there is no string.
///
/// NOTE: the SDK keeps its own copies of the response (the HTTP body buffer and the parsed
/// `String`). This function moves the parsed value into zeroizing memory, but the SDK's body
/// buffer is freed without being wiped.
pub(super) fn key_from_output(
    mut output: GetSecretValueOutput,
    context: &Context<'_>,
) -> Result<ApiKey, SourceError> {
    let secret_string = output.secret_string.take().map(Zeroizing::new);
    let secret_binary = output
        .secret_binary
        .take()
        .map(|blob| Zeroizing::new(blob.into_inner()));

    if let Some(text) = secret_string {
        return key_from_text(&text, context);
    }
    if let Some(bytes) = secret_binary {
        // Security: only the fact that the bytes are not UTF-8 is reported, never the bytes.
        return match std::str::from_utf8(&bytes) {
            Ok(text) => key_from_text(text, context),
            Err(_) => Err(not_utf8(context)),
        };
    }

    Err(SourceError::new(
        SourceErrorKind::InvalidKey,
        context.label,
        format!(
            "{} has neither SecretString nor SecretBinary; store the key as the secret's SecretString",
            context.secret()
        ),
    ))
}

fn not_utf8(context: &Context<'_>) -> SourceError {
    SourceError::new(
        SourceErrorKind::InvalidKey,
        context.label,
        format!(
            "SecretBinary of {} is not UTF-8 text; store the key as SecretString or as UTF-8 bytes",
            context.secret()
        ),
    )
}

/// Interprets the secret's text: a JSON object when it starts with `{`, a JSON string when it
/// starts with `"`, the key itself otherwise.
fn key_from_text(text: &str, context: &Context<'_>) -> Result<ApiKey, SourceError> {
    let trimmed = text.trim_start_matches('\u{feff}').trim();

    if trimmed.starts_with('{') {
        let fields = parse_object(trimmed, context)?;
        return key_from_object(fields, context);
    }

    if let Some(field) = context.field {
        return Err(SourceError::misconfigured(
            context.label,
            format!(
                "field `{field}` is set, but {} is not a JSON object; remove `field` or store {{\"{field}\": \"<key>\"}}",
                context.secret()
            ),
        ));
    }

    if trimmed.starts_with('"') {
        // Security: serde's error is dropped. A value that is not a valid JSON string goes to
        // ApiKey::parse as it is, which strips or rejects the quotes with its own message.
        if let Ok(unwrapped) = serde_json::from_str::<SecretText>(trimmed) {
            tracing::debug!(
                source = context.label,
                "unwrapped a JSON string secret value"
            );
            return Ok(ApiKey::parse(&unwrapped.0, context.label, context.policy)?);
        }
    }

    Ok(ApiKey::parse(text, context.label, context.policy)?)
}

fn parse_object(
    text: &str,
    context: &Context<'_>,
) -> Result<BTreeMap<String, FieldValue>, SourceError> {
    // Security: serde_json's message can quote the value, so only its position and category
    // are reported.
    serde_json::from_str::<BTreeMap<String, FieldValue>>(text).map_err(|error| {
        let problem = match error.classify() {
            serde_json::error::Category::Eof => "ends early",
            serde_json::error::Category::Syntax => "has a syntax error",
            _ => "is not an object of fields",
        };
        SourceError::new(
            SourceErrorKind::InvalidKey,
            context.label,
            format!(
                "{} starts with `{{` but its JSON {problem} at line {} column {}; store valid JSON or the key alone",
                context.secret(),
                error.line(),
                error.column()
            ),
        )
    })
}

fn key_from_object(
    mut fields: BTreeMap<String, FieldValue>,
    context: &Context<'_>,
) -> Result<ApiKey, SourceError> {
    let (name, value) = match context.field {
        Some(field) => match fields.remove_entry(field) {
            Some(entry) => entry,
            None => {
                return Err(SourceError::misconfigured(
                    context.label,
                    format!(
                        "{} has no field `{field}`; its fields are {}; set `field` to the one that contains the key",
                        context.secret(),
                        list_names(&fields)
                    ),
                ));
            }
        },
        None if fields.len() == 1 => fields.pop_first().expect("one field"),
        None if fields.is_empty() => {
            return Err(SourceError::new(
                SourceErrorKind::InvalidKey,
                context.label,
                format!(
                    "{} is an empty JSON object; store the key in it",
                    context.secret()
                ),
            ));
        }
        None => {
            return Err(SourceError::misconfigured(
                context.label,
                format!(
                    "{} is a JSON object with several fields ({}); set `field` to the one that contains the key",
                    context.secret(),
                    list_names(&fields)
                ),
            ));
        }
    };

    match value {
        FieldValue::Text(text) => Ok(ApiKey::parse(&text, context.label, context.policy)?),
        FieldValue::Other => Err(SourceError::new(
            SourceErrorKind::InvalidKey,
            context.label,
            format!(
                "field `{name}` of {} is not a JSON string; store the key as a string",
                context.secret()
            ),
        )),
    }
}

fn list_names(fields: &BTreeMap<String, FieldValue>) -> String {
    let names: Vec<String> = fields.keys().map(|name| format!("`{name}`")).collect();
    if names.is_empty() {
        String::from("none")
    } else {
        names.join(", ")
    }
}

/// A JSON string read straight into zeroizing memory.
struct SecretText(Zeroizing<String>);

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match FieldValue::deserialize(deserializer)? {
            FieldValue::Text(text) => Ok(SecretText(text)),
            FieldValue::Other => Err(de::Error::custom("not a string")),
        }
    }
}

/// One field of a JSON secret. Strings go straight into zeroizing memory; other values are
/// skipped without being kept.
///
/// NOTE: serde_json unescapes a string with escape sequences in its own scratch buffer, which
/// is freed without being wiped.
enum FieldValue {
    Text(Zeroizing<String>),
    Other,
}

impl<'de> Deserialize<'de> for FieldValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldValueVisitor)
    }
}

struct FieldValueVisitor;

impl<'de> Visitor<'de> for FieldValueVisitor {
    type Value = FieldValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<FieldValue, E> {
        Ok(FieldValue::Text(Zeroizing::new(text.to_owned())))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<FieldValue, E> {
        Ok(FieldValue::Text(Zeroizing::new(text)))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<FieldValue, E> {
        Ok(FieldValue::Other)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<FieldValue, E> {
        Ok(FieldValue::Other)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<FieldValue, E> {
        Ok(FieldValue::Other)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<FieldValue, E> {
        Ok(FieldValue::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<FieldValue, E> {
        Ok(FieldValue::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<FieldValue, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(FieldValue::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FieldValue, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(FieldValue::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::super::SecretVersion;
    use super::*;
    use crate::key::KeyPolicy;
    use aws_sdk_secretsmanager::primitives::Blob;

    const KEY: &str = "sk-mega-TESTKEY0000000000";

    fn context<'a>(version: &'a SecretVersion, field: Option<&'a str>) -> Context<'a> {
        Context {
            label: "aws-sm:unit",
            secret_id: "unit/secret",
            endpoint_url: None,
            region: "us-east-1",
            version,
            field,
            required: false,
            policy: KeyPolicy::Strict,
        }
    }

    fn resolve_text(text: &str, field: Option<&str>) -> Result<ApiKey, SourceError> {
        let version = SecretVersion::Stage(String::from("AWSCURRENT"));
        let output = GetSecretValueOutput::builder()
            .secret_string(text)
            .version_id("v-1")
            .build();
        key_from_output(output, &context(&version, field))
    }

    fn assert_clean(error: &SourceError) {
        for text in [error.to_string(), format!("{error:?}")] {
            assert!(!text.contains("TESTKEY"), "{text}");
            assert!(!text.contains("team-x"), "{text}");
        }
    }

    #[test]
    fn value_formats_give_key() {
        let cases = [
            (KEY.to_owned(), None),
            (format!("{{\"MEGALLM_API_KEY\":\"{KEY}\"}}"), None),
            (
                format!("{{\"MEGALLM_API_KEY\":\"{KEY}\"}}"),
                Some("MEGALLM_API_KEY"),
            ),
            (
                format!("{{\"api_key\":\"{KEY}\",\"owner\":\"team-x\"}}"),
                Some("api_key"),
            ),
            (
                format!("{{\"api_key\":\"{KEY}\",\"ttl\":3600,\"tags\":[1,{{}}]}}"),
                Some("api_key"),
            ),
            (format!("\"{KEY}\""), None),
            (format!("  \"{KEY}\"\n"), None),
            (String::from("\"sk-mega-\\u0054ESTKEY0000000000\""), None),
            (
                String::from("{\"k\":\"sk-mega-\\u0054ESTKEY0000000000\"}"),
                None,
            ),
        ];
        for (text, field) in cases {
            let key = resolve_text(&text, field).unwrap_or_else(|error| panic!("{error}"));
            assert_eq!(key.expose_secret(), KEY);
        }
    }

    #[test]
    fn several_fields_list_names_only() {
        let text = format!("{{\"api_key\":\"{KEY}\",\"owner\":\"team-x\"}}");
        let error = resolve_text(&text, None).unwrap_err();
        assert_eq!(error.kind(), SourceErrorKind::Misconfigured);
        assert_eq!(
            error.message(),
            "secret `unit/secret` (stage AWSCURRENT, region us-east-1) is a JSON object with \
             several fields (`api_key`, `owner`); set `field` to the one that contains the key"
        );
        assert_clean(&error);
    }

    #[test]
    fn missing_field_lists_names_only() {
        let text = format!("{{\"api_key\":\"{KEY}\",\"owner\":\"team-x\"}}");
        let error = resolve_text(&text, Some("token")).unwrap_err();
        assert_eq!(error.kind(), SourceErrorKind::Misconfigured);
        assert!(error.message().contains("has no field `token`"), "{error}");
        assert!(error.message().contains("`api_key`, `owner`"), "{error}");
        assert_clean(&error);
    }

    #[test]
    fn malformed_values_are_invalid() {
        let cases = [
            (format!("{{\"api_key\": \"{KEY}\""), "ends early"),
            (format!("{{\"api_key\" \"{KEY}\"}}"), "syntax error"),
            (String::from("{\"api_key\": 12}"), "not a JSON string"),
            (String::from("{}"), "empty JSON object"),
        ];
        for (text, expected) in cases {
            let error = resolve_text(&text, None).unwrap_err();
            assert_eq!(error.kind(), SourceErrorKind::InvalidKey, "{text}");
            assert!(error.message().contains(expected), "{text}: {error}");
            assert_clean(&error);
        }
    }

    #[test]
    fn field_on_plain_text_is_misconfigured() {
        let error = resolve_text(KEY, Some("api_key")).unwrap_err();
        assert_eq!(error.kind(), SourceErrorKind::Misconfigured);
        assert!(error.message().contains("is not a JSON object"), "{error}");
        assert_clean(&error);
    }

    #[test]
    fn bad_key_shape_names_label() {
        let error = resolve_text("{\"k\":\"sk-mega-TEST KEY000000000\"}", None).unwrap_err();
        assert_eq!(error.kind(), SourceErrorKind::InvalidKey);
        assert_eq!(error.label(), "aws-sm:unit");
        assert_clean(&error);
    }

    #[test]
    fn binary_value_gives_key() {
        let version = SecretVersion::Stage(String::from("AWSCURRENT"));
        let output = GetSecretValueOutput::builder()
            .secret_binary(Blob::new(format!("{KEY}\n")))
            .build();
        let key = key_from_output(output, &context(&version, None)).unwrap();
        assert_eq!(key.expose_secret(), KEY);
    }

    #[test]
    fn binary_not_utf8_is_invalid() {
        let version = SecretVersion::Stage(String::from("AWSCURRENT"));
        let output = GetSecretValueOutput::builder()
            .secret_binary(Blob::new(vec![0xff, 0xfe, b's', b'k']))
            .build();
        let error = key_from_output(output, &context(&version, None)).unwrap_err();
        assert_eq!(error.kind(), SourceErrorKind::InvalidKey);
        assert!(error.message().contains("UTF-8"), "{error}");
    }

    #[test]
    fn neither_value_names_secret_and_stage() {
        let version = SecretVersion::Stage(String::from("AWSPREVIOUS"));
        let output = GetSecretValueOutput::builder().version_id("v-1").build();
        let error = key_from_output(output, &context(&version, None)).unwrap_err();
        assert_eq!(error.kind(), SourceErrorKind::InvalidKey);
        assert_eq!(
            error.message(),
            "secret `unit/secret` (stage AWSPREVIOUS, region us-east-1) has neither \
             SecretString nor SecretBinary; store the key as the secret's SecretString"
        );
    }
}
