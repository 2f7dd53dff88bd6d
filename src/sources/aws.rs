//! [`AwsSecretsManagerSource`]: reads the key from an AWS Secrets Manager secret.
//!
//! # Source details
//!
//! - **Label**: `aws-sm:<secret id>`, plus `#<field>` when a JSON field is named, such as
//!   `aws-sm:prod/megallm#api_key`.
//! - **Kind**: [`SourceKind::AwsSecretsManager`].
//! - **Reads**: `GetSecretValue` for the secret id or ARN, at version stage `AWSCURRENT` unless
//!   another stage or a version id is set.
//! - **Values**: a plain `SecretString`, a JSON object (the named field, or its only field), or
//!   a JSON string, which is unwrapped. A UTF-8 `SecretBinary` is read the same way.
//! - **Credentials and region**: aws-config's default chain (environment, shared config and
//!   credentials files, web identity token, ECS container credentials, EC2 instance metadata).
//!   The SDK client is built on the first [`resolve`](KeySource::resolve), so a chain whose
//!   earlier source has the key never starts the SDK or probes instance metadata.
//! - **Not found**: a missing secret, version or stage, and missing AWS credentials, are
//!   [`SourceErrorKind::NotFound`](crate::SourceErrorKind::NotFound), so a chain moves on. With
//!   `required` set they are [`SourceErrorKind::Misconfigured`](crate::SourceErrorKind::Misconfigured)
//!   and stop the chain.
//! - **Version**: the secret's `VersionId` is stored in [`Resolved::version`].
//!
//! ```no_run
//! # async fn example() -> Result<(), megallm_auth::SourceError> {
//! use megallm_auth::{AwsSecretsManagerSource, KeyPolicy, KeySource};
//!
//! let source = AwsSecretsManagerSource::builder("prod/megallm")
//!     .field("api_key")
//!     .region("eu-west-1")
//!     .build()?;
//! assert_eq!(source.label(), "aws-sm:prod/megallm#api_key");
//!
//! let resolved = source.resolve().await?;
//! println!("key {} version {:?}", resolved.key.fingerprint(), resolved.version);
//! # Ok(())
//! # }
//! ```

mod classify;
mod value;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use serde::Deserialize;
use tokio::sync::OnceCell;

use crate::key::KeyPolicy;
use crate::source::{KeySource, Resolved, SourceError, SourceKind};

/// Version stage read when neither a stage nor a version id is set.
pub const DEFAULT_VERSION_STAGE: &str = "AWSCURRENT";
/// Default limit on opening a connection to Secrets Manager.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default limit on one `GetSecretValue` call, retries included.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Default number of attempts per call, the first one included (the SDK's standard mode).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// Settings of an AWS Secrets Manager source, as written in `megallm.toml` under
/// `type = "aws_secrets_manager"`.
///
/// ```toml
/// [[megallm.sources]]
/// type = "aws_secrets_manager"
/// secret_id = "prod/megallm"
/// field = "api_key"
/// region = "eu-west-1"
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AwsSecretsManagerSettings {
    /// Name or ARN of the secret.
    pub secret_id: String,
    /// JSON field that contains the key, when the secret is a JSON object.
    pub field: Option<String>,
    /// Version stage to read; `AWSCURRENT` when neither this nor `version_id` is set.
    pub version_stage: Option<String>,
    /// Version id to read, instead of a stage.
    pub version_id: Option<String>,
    /// AWS region; the default chain (`AWS_REGION`, profile) when unset.
    pub region: Option<String>,
    /// Named profile of the shared AWS config files; `AWS_PROFILE` or `default` when unset.
    pub profile: Option<String>,
    /// Endpoint override, such as a VPC endpoint or a local emulator. Plain `http` is accepted
    /// for loopback addresses only.
    pub endpoint_url: Option<String>,
    /// Limit on opening a connection, in milliseconds (default 3000).
    pub connect_timeout_ms: Option<u64>,
    /// Limit on one call including its retries, in milliseconds (default 10000).
    pub operation_timeout_ms: Option<u64>,
    /// Attempts per call, the first one included (default 3; 1 disables retries).
    pub max_attempts: Option<u32>,
    /// Whether a missing secret or missing AWS credentials stop the chain instead of passing to
    /// the next source.
    #[serde(default)]
    pub required: bool,
}

/// Version of the secret to read: a version stage or a version id.
#[derive(Clone, Debug, PartialEq, Eq)]
enum SecretVersion {
    Stage(String),
    Id(String),
}

impl fmt::Display for SecretVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretVersion::Stage(stage) => write!(f, "stage {stage}"),
            SecretVersion::Id(id) => write!(f, "version id {id}"),
        }
    }
}

/// A key source that reads an AWS Secrets Manager secret.
///
/// Build one with [`AwsSecretsManagerSource::builder`] or
/// [`AwsSecretsManagerSource::from_settings`]. Clones share the lazily built SDK client.
/// See the [module documentation](self) for the source details.
#[derive(Clone)]
pub struct AwsSecretsManagerSource {
    inner: Arc<Inner>,
}

struct Inner {
    label: String,
    secret_id: String,
    field: Option<String>,
    version: SecretVersion,
    region: Option<String>,
    profile: Option<String>,
    endpoint_url: Option<String>,
    connect_timeout: Duration,
    operation_timeout: Duration,
    max_attempts: u32,
    required: bool,
    policy: KeyPolicy,
    client: OnceCell<SdkClient>,
}

/// The SDK client and the region it resolved, built on first use.
struct SdkClient {
    client: aws_sdk_secretsmanager::Client,
    region: String,
}

/// Builder of an [`AwsSecretsManagerSource`]; every setting is checked in
/// [`build`](AwsSecretsManagerSourceBuilder::build).
#[derive(Clone, Debug)]
pub struct AwsSecretsManagerSourceBuilder {
    secret_id: String,
    field: Option<String>,
    version_stage: Option<String>,
    version_id: Option<String>,
    region: Option<String>,
    profile: Option<String>,
    endpoint_url: Option<String>,
    connect_timeout: Duration,
    operation_timeout: Duration,
    max_attempts: u32,
    required: bool,
    policy: KeyPolicy,
}

impl AwsSecretsManagerSource {
    /// Starts a builder for the secret with this name or ARN.
    pub fn builder(secret_id: impl Into<String>) -> AwsSecretsManagerSourceBuilder {
        AwsSecretsManagerSourceBuilder {
            secret_id: secret_id.into(),
            field: None,
            version_stage: None,
            version_id: None,
            region: None,
            profile: None,
            endpoint_url: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            required: false,
            policy: KeyPolicy::default(),
        }
    }

    /// Creates a source from its settings, checking the key shape with `policy`.
    ///
    /// # Errors
    ///
    /// [`SourceErrorKind::Misconfigured`](crate::SourceErrorKind::Misconfigured) when a setting
    /// is empty, when both `version_stage` and `version_id` are set, when a timeout or
    /// `max_attempts` is zero, or when the endpoint is not an `https` URL (`http` is accepted
    /// on a loopback address).
    pub fn from_settings(
        settings: &AwsSecretsManagerSettings,
        policy: KeyPolicy,
    ) -> Result<AwsSecretsManagerSource, SourceError> {
        let mut builder = AwsSecretsManagerSource::builder(settings.secret_id.clone())
            .required(settings.required)
            .key_policy(policy);
        builder.field = settings.field.clone();
        builder.version_stage = settings.version_stage.clone();
        builder.version_id = settings.version_id.clone();
        builder.region = settings.region.clone();
        builder.profile = settings.profile.clone();
        builder.endpoint_url = settings.endpoint_url.clone();
        if let Some(millis) = settings.connect_timeout_ms {
            builder.connect_timeout = Duration::from_millis(millis);
        }
        if let Some(millis) = settings.operation_timeout_ms {
            builder.operation_timeout = Duration::from_millis(millis);
        }
        if let Some(attempts) = settings.max_attempts {
            builder.max_attempts = attempts;
        }
        builder.build()
    }

    /// Returns the secret's name or ARN.
    pub fn secret_id(&self) -> &str {
        &self.inner.secret_id
    }

    /// Returns whether the AWS SDK client has been built, which happens on the first
    /// [`resolve`](KeySource::resolve). Until then no AWS configuration was loaded and no
    /// credential source, instance metadata included, was asked.
    pub fn sdk_started(&self) -> bool {
        self.inner.client.initialized()
    }

    /// Loads the AWS configuration through the default chain and builds the client, once.
    async fn sdk_client(&self) -> Result<&SdkClient, SourceError> {
        self.inner
            .client
            .get_or_try_init(|| self.inner.build_client())
            .await
    }
}

impl Inner {
    async fn build_client(&self) -> Result<SdkClient, SourceError> {
        tracing::debug!(
            source = %self.label,
            region = self.region.as_deref().unwrap_or("(default chain)"),
            endpoint_url = self.endpoint_url.as_deref().unwrap_or("(default)"),
            "loading AWS configuration for Secrets Manager"
        );

        let timeouts = TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_timeout(self.operation_timeout)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .timeout_config(timeouts)
            .retry_config(RetryConfig::standard().with_max_attempts(self.max_attempts));
        if let Some(region) = &self.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(profile) = &self.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(endpoint) = &self.endpoint_url {
            loader = loader.endpoint_url(endpoint);
        }
        let config = loader.load().await;

        let Some(region) = config.region().map(|region| region.as_ref().to_owned()) else {
            return Err(SourceError::misconfigured(
                &self.label,
                format!(
                    "no AWS region for secret `{}`; set `region` in the source settings, \
                     AWS_REGION, or `region` in the AWS profile",
                    self.secret_id
                ),
            ));
        };
        Ok(SdkClient {
            client: aws_sdk_secretsmanager::Client::new(&config),
            region,
        })
    }
}

impl AwsSecretsManagerSourceBuilder {
    /// Sets the JSON field that contains the key, for a secret stored as a JSON object.
    #[must_use]
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Reads this version stage instead of `AWSCURRENT`, such as `AWSPREVIOUS`.
    #[must_use]
    pub fn version_stage(mut self, stage: impl Into<String>) -> Self {
        self.version_stage = Some(stage.into());
        self
    }

    /// Reads this version id instead of a version stage.
    #[must_use]
    pub fn version_id(mut self, version_id: impl Into<String>) -> Self {
        self.version_id = Some(version_id.into());
        self
    }

    /// Sets the AWS region instead of taking it from the default chain.
    #[must_use]
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sets the named profile of the shared AWS config files.
    #[must_use]
    pub fn profile(mut self, profile: impl Into<String>) -> Self {
        self.profile = Some(profile.into());
        self
    }

    /// Sends requests to this endpoint, such as a VPC endpoint or a local emulator.
    #[must_use]
    pub fn endpoint_url(mut self, endpoint_url: impl Into<String>) -> Self {
        self.endpoint_url = Some(endpoint_url.into());
        self
    }

    /// Sets the limit on opening a connection.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the limit on one `GetSecretValue` call, retries included.
    #[must_use]
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// Sets the attempts per call, the first one included; 1 disables retries.
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Makes a missing secret or missing AWS credentials stop the chain
    /// ([`SourceErrorKind::Misconfigured`](crate::SourceErrorKind::Misconfigured)) instead of
    /// passing to the next source.
    #[must_use]
    pub fn required(mut self, required: bool) -> Self {
        self.required = required;
        self
    }

    /// Sets how strictly the `sk-mega-` prefix is checked.
    #[must_use]
    pub fn key_policy(mut self, policy: KeyPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Checks the settings and creates the source. Nothing is loaded or contacted yet.
    ///
    /// # Errors
    ///
    /// [`SourceErrorKind::Misconfigured`](crate::SourceErrorKind::Misconfigured), as listed on
    /// [`AwsSecretsManagerSource::from_settings`].
    pub fn build(self) -> Result<AwsSecretsManagerSource, SourceError> {
        let label = match &self.field {
            Some(field) => format!("aws-sm:{}#{field}", self.secret_id),
            None => format!("aws-sm:{}", self.secret_id),
        };
        let misconfigured = |message: String| SourceError::misconfigured(&label, message);

        if self.secret_id.trim().is_empty() {
            return Err(misconfigured(String::from(
                "secret_id is empty; set it to the secret's name or ARN",
            )));
        }
        check_not_blank(&label, "field", self.field.as_deref())?;
        check_not_blank(&label, "version_stage", self.version_stage.as_deref())?;
        check_not_blank(&label, "version_id", self.version_id.as_deref())?;
        check_not_blank(&label, "region", self.region.as_deref())?;
        check_not_blank(&label, "profile", self.profile.as_deref())?;

        let version = match (self.version_stage, self.version_id) {
            (Some(_), Some(_)) => {
                return Err(misconfigured(String::from(
                    "both version_stage and version_id are set; set only one of them",
                )));
            }
            (None, Some(id)) => SecretVersion::Id(id),
            (Some(stage), None) => SecretVersion::Stage(stage),
            (None, None) => SecretVersion::Stage(String::from(DEFAULT_VERSION_STAGE)),
        };

        if let Some(endpoint) = &self.endpoint_url {
            check_endpoint(&label, endpoint)?;
        }
        if self.connect_timeout.is_zero() {
            return Err(misconfigured(String::from(
                "connect_timeout_ms is 0; set a positive number of milliseconds",
            )));
        }
        if self.operation_timeout.is_zero() {
            return Err(misconfigured(String::from(
                "operation_timeout_ms is 0; set a positive number of milliseconds",
            )));
        }
        if self.max_attempts == 0 {
            return Err(misconfigured(String::from(
                "max_attempts is 0; set 1 for no retries, or more",
            )));
        }

        Ok(AwsSecretsManagerSource {
            inner: Arc::new(Inner {
                label,
                secret_id: self.secret_id,
                field: self.field,
                version,
                region: self.region,
                profile: self.profile,
                endpoint_url: self.endpoint_url,
                connect_timeout: self.connect_timeout,
                operation_timeout: self.operation_timeout,
                max_attempts: self.max_attempts,
                required: self.required,
                policy: self.policy,
                client: OnceCell::new(),
            }),
        })
    }
}

fn check_not_blank(label: &str, setting: &str, value: Option<&str>) -> Result<(), SourceError> {
    match value {
        Some(value) if value.trim().is_empty() => Err(SourceError::misconfigured(
            label,
            format!("{setting} is empty; remove it or give it a value"),
        )),
        _ => Ok(()),
    }
}

/// Accepts `https` URLs, and `http` URLs whose host is a loopback address, because the secret
/// comes back in the response body.
fn check_endpoint(label: &str, endpoint: &str) -> Result<(), SourceError> {
    let invalid = |reason: &str| {
        SourceError::misconfigured(label, format!("endpoint_url is invalid: {reason}"))
    };

    // Security: the http::Uri parse error is dropped, and the URL is echoed only after the
    // check below ensures that it carries no user name or password.
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|_| invalid("it is not a URL; write it as https://host[:port]"))?;
    let Some(authority) = uri.authority() else {
        return Err(invalid("it has no host; write it as https://host[:port]"));
    };
    if authority.as_str().contains('@') {
        return Err(invalid(
            "it contains a user name or password; credentials come from the AWS credential chain",
        ));
    }

    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if is_loopback(authority.host()) => Ok(()),
        Some("http") => Err(invalid(&format!(
            "plain http to {endpoint} would carry the secret unencrypted; use https, or http only on a loopback address"
        ))),
        _ => Err(invalid("the scheme must be https")),
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

/// Secret, region and version of one resolution, named in its messages.
struct Context<'a> {
    label: &'a str,
    secret_id: &'a str,
    /// The endpoint override, when one is set; it was checked to carry no user information.
    endpoint_url: Option<&'a str>,
    region: &'a str,
    version: &'a SecretVersion,
    field: Option<&'a str>,
    required: bool,
    policy: KeyPolicy,
}

impl Context<'_> {
    /// Describes the secret for messages, such as "secret `prod/megallm` (stage AWSCURRENT,
    /// region us-east-1)".
    fn secret(&self) -> String {
        format!(
            "secret `{}` ({}, region {})",
            self.secret_id, self.version, self.region
        )
    }
}

#[async_trait]
impl KeySource for AwsSecretsManagerSource {
    fn label(&self) -> &str {
        &self.inner.label
    }

    fn kind(&self) -> SourceKind {
        SourceKind::AwsSecretsManager
    }

    async fn resolve(&self) -> Result<Resolved, SourceError> {
        let sdk = self.sdk_client().await?;
        let inner = &*self.inner;
        let context = Context {
            label: &inner.label,
            secret_id: &inner.secret_id,
            endpoint_url: inner.endpoint_url.as_deref(),
            region: &sdk.region,
            version: &inner.version,
            field: inner.field.as_deref(),
            required: inner.required,
            policy: inner.policy,
        };

        tracing::debug!(
            source = %inner.label,
            region = %sdk.region,
            version = %inner.version,
            "requesting the secret value from Secrets Manager"
        );
        let request = sdk.client.get_secret_value().secret_id(&inner.secret_id);
        let request = match &inner.version {
            SecretVersion::Stage(stage) => request.version_stage(stage),
            SecretVersion::Id(id) => request.version_id(id),
        };
        let output = request
            .send()
            .await
            .map_err(|error| classify::sdk_error(error, &context))?;

        let version_id = output.version_id.clone();
        let key = value::key_from_output(output, &context)?;

        let resolved = Resolved::new(key, &inner.label, SourceKind::AwsSecretsManager);
        Ok(match version_id {
            Some(version_id) => resolved.with_version(version_id),
            None => resolved,
        })
    }
}

impl fmt::Debug for AwsSecretsManagerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("AwsSecretsManagerSource")
            .field("label", &inner.label)
            .field("secret_id", &inner.secret_id)
            .field("field", &inner.field)
            .field("version", &inner.version)
            .field("region", &inner.region)
            .field("profile", &inner.profile)
            .field("endpoint_url", &inner.endpoint_url)
            .field("connect_timeout", &inner.connect_timeout)
            .field("operation_timeout", &inner.operation_timeout)
            .field("max_attempts", &inner.max_attempts)
            .field("required", &inner.required)
            .field("policy", &inner.policy)
            .field("sdk_started", &self.sdk_started())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceErrorKind;

    fn settings(secret_id: &str) -> AwsSecretsManagerSettings {
        AwsSecretsManagerSettings {
            secret_id: secret_id.to_owned(),
            ..AwsSecretsManagerSettings::default()
        }
    }

    fn misconfigured_message(settings: &AwsSecretsManagerSettings) -> String {
        let error = AwsSecretsManagerSource::from_settings(settings, KeyPolicy::Strict)
            .expect_err("settings must be rejected");
        assert_eq!(error.kind(), SourceErrorKind::Misconfigured, "{error}");
        error.to_string()
    }

    #[test]
    fn label_names_secret_and_field() {
        let plain = AwsSecretsManagerSource::builder("prod/megallm")
            .build()
            .unwrap();
        assert_eq!(plain.label(), "aws-sm:prod/megallm");
        assert_eq!(plain.kind(), SourceKind::AwsSecretsManager);

        let with_field = AwsSecretsManagerSource::builder("prod/megallm")
            .field("api_key")
            .build()
            .unwrap();
        assert_eq!(with_field.label(), "aws-sm:prod/megallm#api_key");
    }

    #[test]
    fn settings_deserialize_every_option() {
        let toml = r#"
            secret_id = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/megallm-AbCdEf"
            field = "api_key"
            version_id = "v-1"
            region = "eu-west-1"
            profile = "ops"
            endpoint_url = "https://secretsmanager.eu-west-1.amazonaws.com"
            connect_timeout_ms = 500
            operation_timeout_ms = 2000
            max_attempts = 1
            required = true
        "#;
        let parsed: AwsSecretsManagerSettings = config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap();

        assert_eq!(parsed.field.as_deref(), Some("api_key"));
        assert_eq!(parsed.version_id.as_deref(), Some("v-1"));
        assert_eq!(parsed.version_stage, None);
        assert_eq!(parsed.connect_timeout_ms, Some(500));
        assert_eq!(parsed.operation_timeout_ms, Some(2000));
        assert_eq!(parsed.max_attempts, Some(1));
        assert!(parsed.required);

        let source = AwsSecretsManagerSource::from_settings(&parsed, KeyPolicy::Strict).unwrap();
        assert_eq!(source.inner.version, SecretVersion::Id(String::from("v-1")));
        assert_eq!(source.inner.connect_timeout, Duration::from_millis(500));
        assert!(!source.sdk_started());
    }

    #[test]
    fn settings_reject_unknown_field() {
        let result: Result<AwsSecretsManagerSettings, _> = config::Config::builder()
            .add_source(config::File::from_str(
                "secret_id = \"prod/megallm\"\nsecret_name = \"x\"",
                config::FileFormat::Toml,
            ))
            .build()
            .unwrap()
            .try_deserialize();
        let error = result.expect_err("an unknown setting must be rejected");
        assert!(error.to_string().contains("secret_name"), "{error}");
    }

    #[test]
    fn settings_work_in_tagged_enum() {
        #[derive(Debug, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        enum SourceSettings {
            AwsSecretsManager(AwsSecretsManagerSettings),
        }

        let toml = "type = \"aws_secrets_manager\"\nsecret_id = \"prod/megallm\"";
        let parsed: SourceSettings = config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()
            .unwrap()
            .try_deserialize()
            .unwrap();

        let SourceSettings::AwsSecretsManager(settings) = parsed;
        assert_eq!(settings.secret_id, "prod/megallm");
        assert!(!settings.required);
    }

    #[test]
    fn default_version_is_awscurrent() {
        let source =
            AwsSecretsManagerSource::from_settings(&settings("s"), KeyPolicy::Strict).unwrap();
        assert_eq!(
            source.inner.version,
            SecretVersion::Stage(String::from("AWSCURRENT"))
        );
        assert_eq!(source.inner.operation_timeout, DEFAULT_OPERATION_TIMEOUT);
        assert_eq!(source.inner.max_attempts, DEFAULT_MAX_ATTEMPTS);
    }

    #[test]
    fn stage_and_version_id_conflict() {
        let mut both = settings("prod/megallm");
        both.version_stage = Some(String::from("AWSPREVIOUS"));
        both.version_id = Some(String::from("v-1"));
        let message = misconfigured_message(&both);
        assert_eq!(
            message,
            "aws-sm:prod/megallm: both version_stage and version_id are set; set only one of them"
        );
    }

    #[test]
    fn blank_settings_are_rejected() {
        assert!(misconfigured_message(&settings("  ")).contains("secret_id is empty"));

        let mut blank_field = settings("s");
        blank_field.field = Some(String::new());
        assert!(misconfigured_message(&blank_field).contains("field is empty"));

        let mut blank_region = settings("s");
        blank_region.region = Some(String::from(" "));
        assert!(misconfigured_message(&blank_region).contains("region is empty"));

        let mut zero_timeout = settings("s");
        zero_timeout.operation_timeout_ms = Some(0);
        assert!(misconfigured_message(&zero_timeout).contains("operation_timeout_ms is 0"));

        let mut zero_connect = settings("s");
        zero_connect.connect_timeout_ms = Some(0);
        assert!(misconfigured_message(&zero_connect).contains("connect_timeout_ms is 0"));

        let mut zero_attempts = settings("s");
        zero_attempts.max_attempts = Some(0);
        assert!(misconfigured_message(&zero_attempts).contains("max_attempts is 0"));
    }

    #[test]
    fn endpoint_rules() {
        let accepted = [
            "https://secretsmanager.us-east-1.amazonaws.com",
            "https://vpce-1.secretsmanager.us-east-1.vpce.amazonaws.com:443",
            "http://127.0.0.1:5000",
            "http://localhost:4566",
            "http://[::1]:5000",
        ];
        for endpoint in accepted {
            let mut with_endpoint = settings("s");
            with_endpoint.endpoint_url = Some(endpoint.to_owned());
            let result = AwsSecretsManagerSource::from_settings(&with_endpoint, KeyPolicy::Strict);
            assert!(result.is_ok(), "{endpoint}: {:?}", result.err());
        }

        let rejected = [
            ("http://10.0.0.5:4566", "plain http"),
            ("ftp://127.0.0.1", "scheme must be https"),
            ("not a url", "not a URL"),
            ("/relative", "no host"),
            ("https://user:pw@host", "user name or password"),
        ];
        for (endpoint, expected) in rejected {
            let mut with_endpoint = settings("s");
            with_endpoint.endpoint_url = Some(endpoint.to_owned());
            let message = misconfigured_message(&with_endpoint);
            assert!(message.contains(expected), "{endpoint}: {message}");
        }
    }

    #[test]
    fn endpoint_error_hides_credentials() {
        let mut with_endpoint = settings("s");
        with_endpoint.endpoint_url = Some(String::from("https://user:hunter2@host"));
        let message = misconfigured_message(&with_endpoint);
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn debug_names_settings_only() {
        let source = AwsSecretsManagerSource::builder("prod/megallm")
            .field("api_key")
            .region("eu-west-1")
            .build()
            .unwrap();
        let debug = format!("{source:?}");
        assert!(debug.contains("aws-sm:prod/megallm#api_key"), "{debug}");
        assert!(debug.contains("sdk_started: false"), "{debug}");
    }
}
