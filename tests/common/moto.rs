//! Setup helpers for tests against moto, the AWS emulator that `scripts/test` starts.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_secretsmanager::primitives::Blob;
use tracing::instrument::WithSubscriber;

/// Region every moto test uses.
pub const REGION: &str = "us-east-1";

/// Panics unless `AWS_EC2_METADATA_DISABLED=true`, as `scripts/test` sets it. Without it, the
/// SDK's default credential chain would ask the instance metadata service when a test has no
/// static credentials.
pub fn require_offline_aws() {
    let metadata_disabled =
        std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|value| value == "true");
    assert!(
        metadata_disabled,
        "AWS_EC2_METADATA_DISABLED=true is not set; run the suite with scripts/test, which sets it so that no test reaches instance metadata"
    );
}

pub fn moto_endpoint() -> String {
    require_offline_aws();
    match std::env::var("MEGALLM_TEST_MOTO_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => endpoint,
        _ => panic!(
            "MEGALLM_TEST_MOTO_ENDPOINT is not set; run the suite with scripts/test, which starts moto and exports it"
        ),
    }
}

/// Returns a secret name that no other test, run or process uses.
pub fn unique_name(case: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("megallm-test/{case}-{}-{nanos}-{count}", std::process::id())
}

/// Builds a Secrets Manager client for setting up moto. Its fixed test credentials keep it
/// working in a test that cleared the AWS variables.
pub fn admin_client() -> aws_sdk_secretsmanager::Client {
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "megallm-tests",
        ))
        .endpoint_url(moto_endpoint())
        .build();
    aws_sdk_secretsmanager::Client::from_conf(config)
}

/// Creates a secret in moto and returns its VersionId.
///
/// The SDK's own TRACE log prints request bodies, which here contain the canary, so setup runs
/// without a subscriber. Only the source under test is captured.
pub async fn create_secret(name: &str, value: SecretValue<'_>) -> String {
    let request = admin_client().create_secret().name(name);
    let request = match value {
        SecretValue::Text(text) => request.secret_string(text),
        SecretValue::Binary(bytes) => request.secret_binary(Blob::new(bytes)),
        SecretValue::Nothing => request,
    };
    let output = request
        .send()
        .with_subscriber(tracing::subscriber::NoSubscriber::default())
        .await
        .expect("moto creates the secret");
    output.version_id.unwrap_or_default()
}

/// Stores a new value, which moto stages as AWSCURRENT, and returns its VersionId.
pub async fn put_secret_value(name: &str, text: &str) -> String {
    admin_client()
        .put_secret_value()
        .secret_id(name)
        .secret_string(text)
        .send()
        .with_subscriber(tracing::subscriber::NoSubscriber::default())
        .await
        .expect("moto stores the new value")
        .version_id
        .expect("moto returns a VersionId")
}

/// Value of a secret created in moto.
pub enum SecretValue<'a> {
    /// A SecretString.
    Text(&'a str),
    /// A SecretBinary.
    Binary(&'a [u8]),
    /// Neither field.
    Nothing,
}
