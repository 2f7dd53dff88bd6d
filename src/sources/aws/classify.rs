//! Sorts AWS SDK errors into [`SourceErrorKind`]s, with messages that name the secret, region
//! and version but never quote a response body.
//!
//! Security: no SDK error is attached as a cause. The `Debug` output of `SdkError` contains the
//! raw HTTP response, and error messages come from the response body.

use std::error::Error as StdError;

use aws_config::meta::ProviderChainError;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;

use super::Context;
use crate::source::{SourceError, SourceErrorKind};

/// Error codes that mean AWS rejected the credentials themselves.
const CREDENTIAL_CODES: &[&str] = &[
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "IncompleteSignature",
    "InvalidClientTokenId",
    "ExpiredTokenException",
    "MissingAuthenticationToken",
    "SignatureDoesNotMatch",
];

/// Error codes that mean too many requests; the SDK has already retried them.
const THROTTLING_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
];

/// Providers of aws-config's default credential chain, by the names aws-config gives them, with
/// the settings each one reads.
const CREDENTIAL_PROVIDERS: &[(&str, &str)] = &[
    ("Environment", "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
    ("Profile", "the shared config and credentials files"),
    (
        "WebIdentityToken",
        "AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN",
    ),
    ("EcsContainer", "the ECS container credentials endpoint"),
    ("Ec2InstanceMetadata", "EC2 instance metadata"),
];

/// Classifies a failed `GetSecretValue` call.
pub(super) fn sdk_error(
    error: SdkError<GetSecretValueError>,
    context: &Context<'_>,
) -> SourceError {
    if let Some(credentials) = find_source::<CredentialsError>(&error) {
        return credentials_error(credentials, context);
    }

    match &error {
        SdkError::ServiceError(service) => service_error(
            service.err(),
            Some(service.raw().status().as_u16()),
            context,
        ),
        SdkError::TimeoutError(_) => SourceError::unavailable(
            context.label,
            format!(
                "reading {} timed out; check the network path to Secrets Manager or raise operation_timeout_ms",
                context.secret()
            ),
        ),
        SdkError::DispatchFailure(failure) if failure.is_user() => SourceError::misconfigured(
            context.label,
            format!(
                "the request for {} could not be sent; check endpoint_url and region",
                context.secret()
            ),
        ),
        SdkError::DispatchFailure(failure) => {
            let cause = if failure.is_timeout() {
                String::from("the connection timed out")
            } else if let Some(io) = find_source::<std::io::Error>(&error) {
                format!("connection failed: {}", io.kind())
            } else {
                String::from("connection failed")
            };
            let endpoint = context
                .endpoint_url
                .map(|url| format!(" at {url}"))
                .unwrap_or_default();
            SourceError::unavailable(
                context.label,
                format!(
                    "could not reach Secrets Manager{endpoint} for {} ({cause}) after the SDK's retries; check endpoint_url, the network and proxies",
                    context.secret()
                ),
            )
        }
        SdkError::ResponseError(response) => SourceError::unavailable(
            context.label,
            format!(
                "Secrets Manager sent a response for {} that could not be read (HTTP {}); retry later",
                context.secret(),
                response.raw().status().as_u16()
            ),
        ),
        SdkError::ConstructionFailure(_) => SourceError::misconfigured(
            context.label,
            format!(
                "the request for {} could not be built; check secret_id, region and endpoint_url",
                context.secret()
            ),
        ),
        _ => SourceError::unavailable(
            context.label,
            format!("reading {} failed; retry later", context.secret()),
        ),
    }
}

/// Classifies an error that Secrets Manager returned, by its modelled variant, then by its
/// error code, then by its HTTP status.
pub(super) fn service_error(
    error: &GetSecretValueError,
    status: Option<u16>,
    context: &Context<'_>,
) -> SourceError {
    let secret = context.secret();
    let code = error.code().filter(|code| is_plain_code(code));

    match error {
        GetSecretValueError::ResourceNotFoundException(_) => {
            let message = format!(
                "{secret} not found (ResourceNotFoundException); check the secret id, the region and that the version exists"
            );
            not_found_unless_required(context, message)
        }
        GetSecretValueError::DecryptionFailure(_) => SourceError::denied(
            context.label,
            format!(
                "KMS could not decrypt {secret} (DecryptionFailure); grant kms:Decrypt on the secret's KMS key to this role"
            ),
        ),
        GetSecretValueError::InternalServiceError(_) => SourceError::unavailable(
            context.label,
            format!(
                "Secrets Manager failed while reading {secret} (InternalServiceError) after the SDK's retries; retry later"
            ),
        ),
        GetSecretValueError::InvalidParameterException(_) => SourceError::misconfigured(
            context.label,
            format!(
                "Secrets Manager rejected a parameter for {secret} (InvalidParameterException); check secret_id, version_stage and version_id"
            ),
        ),
        GetSecretValueError::InvalidRequestException(_) => SourceError::misconfigured(
            context.label,
            format!(
                "Secrets Manager rejected the request for {secret} (InvalidRequestException); a secret scheduled for deletion is a common cause"
            ),
        ),
        _ => match code {
            Some("AccessDeniedException") => SourceError::denied(
                context.label,
                format!(
                    "access denied to {secret} (AccessDeniedException); allow secretsmanager:GetSecretValue on the secret's ARN, and kms:Decrypt on its KMS key when it is customer managed"
                ),
            ),
            Some(code) if code.starts_with("KMS") => SourceError::denied(
                context.label,
                format!(
                    "KMS refused to decrypt {secret} ({code}); grant kms:Decrypt on the secret's KMS key and check that the key is enabled"
                ),
            ),
            Some(code) if CREDENTIAL_CODES.contains(&code) => SourceError::denied(
                context.label,
                format!(
                    "AWS rejected the credentials while reading {secret} ({code}); check the credentials the AWS chain found, their expiry and the system clock"
                ),
            ),
            Some(code) if THROTTLING_CODES.contains(&code) => SourceError::unavailable(
                context.label,
                format!(
                    "Secrets Manager throttled the requests for {secret} ({code}) after the SDK's retries; retry later or cache the key"
                ),
            ),
            _ if status.is_some_and(|status| status >= 500) => SourceError::unavailable(
                context.label,
                format!(
                    "Secrets Manager failed while reading {secret} ({}) after the SDK's retries; retry later",
                    describe_failure(code, status)
                ),
            ),
            _ => SourceError::misconfigured(
                context.label,
                format!(
                    "Secrets Manager rejected the request for {secret} ({}); check the source settings",
                    describe_failure(code, status)
                ),
            ),
        },
    }
}

fn credentials_error(error: &CredentialsError, context: &Context<'_>) -> SourceError {
    let secret = context.secret();
    match error {
        CredentialsError::CredentialsNotLoaded(_) => {
            let tried = find_source::<ProviderChainError<CredentialsError>>(error)
                .map(|chain| {
                    chain
                        .attempts()
                        .iter()
                        .map(|attempt| describe_provider(attempt.name()))
                        .collect::<Vec<_>>()
                })
                .filter(|tried| !tried.is_empty())
                .unwrap_or_else(|| {
                    CREDENTIAL_PROVIDERS
                        .iter()
                        .map(|(name, _)| describe_provider(name))
                        .collect()
                });
            let message = format!(
                "no AWS credentials found to read {secret}; AWS tried {}; configure one of them",
                tried.join(", ")
            );
            not_found_unless_required(context, message)
        }
        CredentialsError::ProviderTimedOut(_) => SourceError::unavailable(
            context.label,
            format!("loading AWS credentials to read {secret} timed out; retry later"),
        ),
        CredentialsError::InvalidConfiguration(_) => SourceError::misconfigured(
            context.label,
            format!(
                "the AWS credential configuration is invalid, so {secret} cannot be read; check the AWS profile and AWS_* variables"
            ),
        ),
        _ => SourceError::unavailable(
            context.label,
            format!(
                "the AWS credential provider failed, so {secret} cannot be read; retry later, or run with RUST_LOG=aws_config=debug to see the provider's error"
            ),
        ),
    }
}

/// Keeps "not found" for a chain to move on, unless the source is required.
fn not_found_unless_required(context: &Context<'_>, message: String) -> SourceError {
    if context.required {
        SourceError::new(
            SourceErrorKind::Misconfigured,
            context.label,
            format!("{message}; the source is required, so the chain stops here"),
        )
    } else {
        SourceError::not_found(context.label, message)
    }
}

fn describe_provider(name: &str) -> String {
    match CREDENTIAL_PROVIDERS
        .iter()
        .find(|(known, _)| *known == name)
    {
        Some((_, reads)) => format!("{name} ({reads})"),
        None => name.to_owned(),
    }
}

fn describe_failure(code: Option<&str>, status: Option<u16>) -> String {
    match (code, status) {
        (Some(code), Some(status)) => format!("{code}, HTTP {status}"),
        (Some(code), None) => code.to_owned(),
        (None, Some(status)) => format!("HTTP {status}"),
        (None, None) => String::from("no error code"),
    }
}

/// Accepts error codes made of ASCII letters and digits only, so a code can never carry a key
/// (keys contain `-`) or other text from a response body.
fn is_plain_code(code: &str) -> bool {
    !code.is_empty() && code.len() <= 64 && code.bytes().all(|byte| byte.is_ascii_alphanumeric())
}

/// Returns the first error of type `T` in the source chain of `error`, `error` included.
fn find_source<'a, T: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<T>() {
            return Some(found);
        }
        current = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::SecretVersion;
    use super::*;
    use crate::key::KeyPolicy;
    use aws_sdk_secretsmanager::error::{ConnectorError, ErrorMetadata};
    use aws_sdk_secretsmanager::types::error::{
        DecryptionFailure, InternalServiceError, InvalidRequestException, ResourceNotFoundException,
    };

    /// A message an SDK error could carry from a response body; it must never be forwarded.
    const BODY_TEXT: &str = "sk-mega-TESTKEY0000000000 echoed by the server";

    fn context(version: &SecretVersion, required: bool) -> Context<'_> {
        Context {
            label: "aws-sm:unit/secret",
            secret_id: "unit/secret",
            endpoint_url: None,
            region: "eu-west-1",
            version,
            field: None,
            required,
            policy: KeyPolicy::Strict,
        }
    }

    fn generic(code: &str) -> GetSecretValueError {
        GetSecretValueError::generic(
            ErrorMetadata::builder()
                .code(code)
                .message(BODY_TEXT)
                .build(),
        )
    }

    fn classify(error: &GetSecretValueError, status: u16, required: bool) -> SourceError {
        let version = SecretVersion::Stage(String::from("AWSCURRENT"));
        let classified = service_error(error, Some(status), &context(&version, required));
        for text in [classified.to_string(), format!("{classified:?}")] {
            assert!(!text.contains("TESTKEY"), "{text}");
            assert!(!text.contains("echoed"), "{text}");
        }
        assert!(
            classified.message().contains("secret `unit/secret`"),
            "{classified}"
        );
        assert!(
            classified.message().contains("stage AWSCURRENT"),
            "{classified}"
        );
        assert!(
            classified.message().contains("region eu-west-1"),
            "{classified}"
        );
        classified
    }

    #[test]
    fn service_errors_are_classified() {
        let not_found = GetSecretValueError::ResourceNotFoundException(
            ResourceNotFoundException::builder()
                .message(BODY_TEXT)
                .build(),
        );
        let decryption = GetSecretValueError::DecryptionFailure(
            DecryptionFailure::builder().message(BODY_TEXT).build(),
        );
        let internal = GetSecretValueError::InternalServiceError(
            InternalServiceError::builder().message(BODY_TEXT).build(),
        );
        let invalid_request = GetSecretValueError::InvalidRequestException(
            InvalidRequestException::builder()
                .message(BODY_TEXT)
                .build(),
        );
        let cases = [
            (not_found, 400, SourceErrorKind::NotFound),
            (decryption, 400, SourceErrorKind::Denied),
            (internal, 500, SourceErrorKind::Unavailable),
            (invalid_request, 400, SourceErrorKind::Misconfigured),
            (
                generic("AccessDeniedException"),
                400,
                SourceErrorKind::Denied,
            ),
            (
                generic("KMSAccessDeniedException"),
                400,
                SourceErrorKind::Denied,
            ),
            (
                generic("UnrecognizedClientException"),
                400,
                SourceErrorKind::Denied,
            ),
            (
                generic("ExpiredTokenException"),
                400,
                SourceErrorKind::Denied,
            ),
            (
                generic("ThrottlingException"),
                400,
                SourceErrorKind::Unavailable,
            ),
            (
                generic("ServiceUnavailable"),
                503,
                SourceErrorKind::Unavailable,
            ),
            (generic("SomethingNew"), 400, SourceErrorKind::Misconfigured),
        ];
        for (error, status, expected) in cases {
            let classified = classify(&error, status, false);
            assert_eq!(classified.kind(), expected, "{classified}");
        }
    }

    #[test]
    fn access_denied_names_iam_actions() {
        let classified = classify(&generic("AccessDeniedException"), 400, false);
        assert!(
            classified
                .message()
                .contains("secretsmanager:GetSecretValue")
        );
        assert!(classified.message().contains("kms:Decrypt"));
    }

    #[test]
    fn required_turns_not_found_hard() {
        let not_found = GetSecretValueError::ResourceNotFoundException(
            ResourceNotFoundException::builder().build(),
        );
        let classified = classify(&not_found, 400, true);
        assert_eq!(classified.kind(), SourceErrorKind::Misconfigured);
        assert!(
            classified
                .message()
                .ends_with("the source is required, so the chain stops here")
        );
    }

    #[test]
    fn odd_error_code_not_echoed() {
        let classified = classify(&generic("sk-mega-TESTKEY0000000000"), 400, false);
        assert_eq!(classified.kind(), SourceErrorKind::Misconfigured);
        assert!(classified.message().contains("(HTTP 400)"), "{classified}");
    }

    #[test]
    fn transport_errors_are_unavailable() {
        let version = SecretVersion::Stage(String::from("AWSCURRENT"));
        let context = context(&version, false);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let cases: [SdkError<GetSecretValueError>; 3] = [
            SdkError::timeout_error(BODY_TEXT),
            SdkError::dispatch_failure(ConnectorError::io(Box::new(refused))),
            SdkError::dispatch_failure(ConnectorError::timeout(BODY_TEXT.into())),
        ];
        for error in cases {
            let classified = sdk_error(error, &context);
            assert_eq!(
                classified.kind(),
                SourceErrorKind::Unavailable,
                "{classified}"
            );
            assert!(!classified.to_string().contains("TESTKEY"), "{classified}");
        }
    }

    #[test]
    fn refused_connection_names_io_kind() {
        let version = SecretVersion::Stage(String::from("AWSCURRENT"));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let error = SdkError::dispatch_failure(ConnectorError::io(Box::new(refused)));
        let classified = sdk_error(error, &context(&version, false));
        assert!(
            classified
                .message()
                .contains("connection failed: connection refused"),
            "{classified}"
        );
    }

    #[test]
    fn credentials_not_loaded_is_not_found() {
        let version = SecretVersion::Stage(String::from("AWSCURRENT"));
        let missing = CredentialsError::not_loaded("no providers");
        let error = SdkError::dispatch_failure(ConnectorError::other(Box::new(missing), None));
        let classified = sdk_error(error, &context(&version, false));
        assert_eq!(classified.kind(), SourceErrorKind::NotFound);
        assert!(
            classified.message().contains("no AWS credentials found"),
            "{classified}"
        );
        assert!(
            classified.message().contains("Ec2InstanceMetadata"),
            "{classified}"
        );
    }

    #[test]
    fn credentials_timeout_is_unavailable() {
        let version = SecretVersion::Stage(String::from("AWSCURRENT"));
        let slow = CredentialsError::provider_timed_out(std::time::Duration::from_secs(5));
        let error = SdkError::dispatch_failure(ConnectorError::other(Box::new(slow), None));
        let classified = sdk_error(error, &context(&version, false));
        assert_eq!(classified.kind(), SourceErrorKind::Unavailable);
    }
}
