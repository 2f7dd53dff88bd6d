//! The AWS Secrets Manager source against moto, and against a loopback stub for the responses
//! that moto does not produce (access denied, KMS failures, throttling, 5xx, a version with no
//! value).
//!
//! Run through `scripts/test`, which starts moto and exports `MEGALLM_TEST_MOTO_ENDPOINT`,
//! static test credentials, `AWS_REGION` and `AWS_EC2_METADATA_DISABLED=true`.
#![cfg(feature = "aws")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::moto::{
    REGION, SecretValue, create_secret, moto_endpoint, put_secret_value, require_offline_aws,
    unique_name,
};
use common::{CANARY, CANARY_ROTATED, LogCapture, assert_no_canary, capture_logs};
use megallm_auth::{
    AwsSecretsManagerSettings, AwsSecretsManagerSource, KeyChain, KeyPolicy, KeySource, Outcome,
    Resolved, SourceError, SourceErrorKind, SourceKind, StaticSource,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Text a stub puts in its error bodies; no error of ours may repeat it.
const BODY_MARKER: &str = "stub-response-body-text";

fn moto_source(name: &str) -> megallm_auth::AwsSecretsManagerSourceBuilder {
    AwsSecretsManagerSource::builder(name)
        .region(REGION)
        .endpoint_url(moto_endpoint())
        .max_attempts(1)
        .operation_timeout(Duration::from_secs(10))
}

fn assert_resolved_clean(logs: &LogCapture, resolved: &Resolved) {
    assert_no_canary("Resolved Debug", &format!("{resolved:?}"));
    logs.assert_clean();
}

fn assert_error_clean(logs: &LogCapture, error: &SourceError) {
    assert_no_canary("error Display", &error.to_string());
    assert_no_canary("error Debug", &format!("{error:?}"));
    assert!(
        !error.to_string().contains(BODY_MARKER),
        "error repeats a response body: {error}"
    );
    logs.assert_clean();
}

async fn resolve_ok(source: &AwsSecretsManagerSource) -> Resolved {
    source
        .resolve()
        .await
        .unwrap_or_else(|error| panic!("resolve failed: {error}"))
}

async fn resolve_err(source: &AwsSecretsManagerSource) -> SourceError {
    match source.resolve().await {
        Ok(resolved) => panic!("expected an error, got a key from {}", resolved.label),
        Err(error) => error,
    }
}

#[tokio::test]
async fn plain_secret_string_gives_key() {
    let logs = capture_logs();
    let name = unique_name("plain");
    let version = create_secret(&name, SecretValue::Text(CANARY)).await;

    let source = moto_source(&name).build().unwrap();
    let resolved = resolve_ok(&source).await;

    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert_eq!(resolved.label, format!("aws-sm:{name}"));
    assert_eq!(resolved.kind, SourceKind::AwsSecretsManager);
    assert_eq!(resolved.version.as_deref(), Some(version.as_str()));
    assert!(!version.is_empty());
    assert_no_canary("source Debug", &format!("{source:?}"));
    assert!(
        logs.contents().contains("GetSecretValue"),
        "the log capture missed the SDK's events, so the leak check would prove nothing"
    );
    assert_resolved_clean(&logs, &resolved);
}

#[tokio::test]
async fn json_single_field_gives_key() {
    let logs = capture_logs();
    let name = unique_name("single-field");
    let body = format!("{{\"MEGALLM_API_KEY\":\"{CANARY}\"}}");
    create_secret(&name, SecretValue::Text(&body)).await;

    let unnamed = moto_source(&name).build().unwrap();
    let resolved = resolve_ok(&unnamed).await;
    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert_eq!(resolved.label, format!("aws-sm:{name}"));

    let named = moto_source(&name).field("MEGALLM_API_KEY").build().unwrap();
    let resolved = resolve_ok(&named).await;
    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert_eq!(resolved.label, format!("aws-sm:{name}#MEGALLM_API_KEY"));
    assert_resolved_clean(&logs, &resolved);
}

#[tokio::test]
async fn json_named_field_gives_key() {
    let logs = capture_logs();
    let name = unique_name("named-field");
    let body = format!("{{\"api_key\":\"{CANARY}\",\"owner\":\"team-x\"}}");
    create_secret(&name, SecretValue::Text(&body)).await;

    let source = moto_source(&name).field("api_key").build().unwrap();
    let resolved = resolve_ok(&source).await;

    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert_eq!(resolved.label, format!("aws-sm:{name}#api_key"));
    assert_resolved_clean(&logs, &resolved);
}

#[tokio::test]
async fn json_several_fields_lists_names() {
    let logs = capture_logs();
    let name = unique_name("several-fields");
    let body = format!("{{\"api_key\":\"{CANARY}\",\"owner\":\"team-x\"}}");
    create_secret(&name, SecretValue::Text(&body)).await;

    let source = moto_source(&name).build().unwrap();
    let error = resolve_err(&source).await;

    assert_eq!(error.kind(), SourceErrorKind::Misconfigured);
    assert_eq!(
        error.message(),
        format!(
            "secret `{name}` (stage AWSCURRENT, region us-east-1) is a JSON object with several \
             fields (`api_key`, `owner`); set `field` to the one that contains the key"
        )
    );
    assert!(!error.to_string().contains("team-x"), "{error}");
    assert_error_clean(&logs, &error);
}

#[tokio::test]
async fn json_string_is_unwrapped() {
    let logs = capture_logs();
    let name = unique_name("json-string");
    let body = format!("\"{CANARY}\"");
    create_secret(&name, SecretValue::Text(&body)).await;

    let source = moto_source(&name).build().unwrap();
    let resolved = resolve_ok(&source).await;

    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert_resolved_clean(&logs, &resolved);
}

#[tokio::test]
async fn malformed_json_hides_serde_text() {
    let logs = capture_logs();
    let name = unique_name("malformed-json");
    let body = format!("{{\"api_key\": \"{CANARY}\", owner}}");
    create_secret(&name, SecretValue::Text(&body)).await;

    let source = moto_source(&name).build().unwrap();
    let error = resolve_err(&source).await;

    assert_eq!(error.kind(), SourceErrorKind::InvalidKey);
    assert!(
        error.message().contains("has a syntax error at line 1"),
        "{error}"
    );
    assert_error_clean(&logs, &error);
}

#[tokio::test]
async fn binary_secret_gives_key() {
    let logs = capture_logs();
    let name = unique_name("binary");
    let bytes = format!("{CANARY}\n").into_bytes();
    let version = create_secret(&name, SecretValue::Binary(&bytes)).await;

    let source = moto_source(&name).build().unwrap();
    let resolved = resolve_ok(&source).await;

    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert_eq!(resolved.version.as_deref(), Some(version.as_str()));
    assert_resolved_clean(&logs, &resolved);
}

#[tokio::test]
async fn invalid_key_names_source() {
    let logs = capture_logs();
    let name = unique_name("invalid-key");
    create_secret(&name, SecretValue::Text("Bearer sk-mega-TESTKEY0000000000")).await;

    let source = moto_source(&name).build().unwrap();
    let error = resolve_err(&source).await;

    assert_eq!(error.kind(), SourceErrorKind::InvalidKey);
    assert_eq!(error.label(), format!("aws-sm:{name}"));
    assert!(error.message().contains("`Bearer `"), "{error}");
    assert_error_clean(&logs, &error);
}

#[tokio::test]
async fn missing_secret_passes_to_next() {
    let logs = capture_logs();
    let name = unique_name("missing");
    let aws = moto_source(&name).build().unwrap();
    let chain = KeyChain::new()
        .with(aws)
        .with(StaticSource::with_label("test:next", CANARY_ROTATED).unwrap());

    let resolution = chain.resolve().await.expect("the next source has the key");

    assert_eq!(resolution.resolved.label, "test:next");
    assert_eq!(resolution.resolved.key.expose_secret(), CANARY_ROTATED);
    let first = &resolution.report.attempts[0];
    assert_eq!(first.label, format!("aws-sm:{name}"));
    assert_eq!(first.outcome, Outcome::NotFound);
    let reason = first.reason.as_deref().unwrap();
    assert!(
        reason.contains(&format!(
            "secret `{name}` (stage AWSCURRENT, region us-east-1) not found (ResourceNotFoundException)"
        )),
        "{reason}"
    );
    assert_no_canary("report", &resolution.report.to_string());
    assert_resolved_clean(&logs, &resolution.resolved);
}

#[tokio::test]
async fn secret_without_value_is_not_found() {
    let logs = capture_logs();
    let name = unique_name("no-value");
    create_secret(&name, SecretValue::Nothing).await;

    let source = moto_source(&name).build().unwrap();
    let error = resolve_err(&source).await;

    assert_eq!(error.kind(), SourceErrorKind::NotFound);
    assert!(
        error.message().contains(&format!("secret `{name}`")),
        "{error}"
    );
    assert_error_clean(&logs, &error);
}

#[tokio::test]
async fn missing_required_secret_stops_chain() {
    let logs = capture_logs();
    let name = unique_name("required");
    let mut settings = AwsSecretsManagerSettings::default();
    settings.secret_id = name.clone();
    settings.region = Some(String::from(REGION));
    settings.endpoint_url = Some(moto_endpoint());
    settings.required = true;
    let aws = AwsSecretsManagerSource::from_settings(&settings, KeyPolicy::Strict).unwrap();
    let chain = KeyChain::new()
        .with(aws)
        .with(StaticSource::with_label("test:next", CANARY_ROTATED).unwrap());

    let error = chain
        .resolve()
        .await
        .expect_err("a required secret stops the chain");

    assert_eq!(error.kind(), SourceErrorKind::Misconfigured);
    assert_eq!(error.report().attempts.len(), 1);
    let failure = error.failure().unwrap();
    assert!(failure.message().contains("not found"), "{failure}");
    assert!(
        failure.message().contains("the source is required"),
        "{failure}"
    );
    assert_error_clean(&logs, failure);
}

#[tokio::test]
async fn rotation_moves_previous_stage() {
    let logs = capture_logs();
    let name = unique_name("rotation");
    let first_version = create_secret(&name, SecretValue::Text(CANARY)).await;
    let second_version = put_secret_value(&name, CANARY_ROTATED).await;
    assert_ne!(first_version, second_version);

    let current = moto_source(&name).build().unwrap();
    let resolved = resolve_ok(&current).await;
    assert_eq!(resolved.key.expose_secret(), CANARY_ROTATED);
    assert_eq!(resolved.version.as_deref(), Some(second_version.as_str()));

    let previous = moto_source(&name)
        .version_stage("AWSPREVIOUS")
        .build()
        .unwrap();
    let resolved = resolve_ok(&previous).await;
    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert_eq!(resolved.version.as_deref(), Some(first_version.as_str()));
    assert_resolved_clean(&logs, &resolved);
}

#[tokio::test]
async fn version_id_selects_version() {
    let logs = capture_logs();
    let name = unique_name("version-id");
    let first_version = create_secret(&name, SecretValue::Text(CANARY)).await;
    put_secret_value(&name, CANARY_ROTATED).await;

    let pinned = moto_source(&name)
        .version_id(&first_version)
        .build()
        .unwrap();
    let resolved = resolve_ok(&pinned).await;
    assert_eq!(resolved.key.expose_secret(), CANARY);
    assert_eq!(resolved.version.as_deref(), Some(first_version.as_str()));

    let unknown_id = "00000000-0000-4000-8000-000000000000";
    let unknown = moto_source(&name).version_id(unknown_id).build().unwrap();
    let error = resolve_err(&unknown).await;
    assert_eq!(error.kind(), SourceErrorKind::NotFound);
    assert!(
        error
            .message()
            .contains(&format!("(version id {unknown_id}, region us-east-1)")),
        "{error}"
    );
    assert_error_clean(&logs, &error);
}

#[tokio::test]
async fn stopped_server_is_unavailable() {
    let logs = capture_logs();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    require_offline_aws();

    let source = AwsSecretsManagerSource::builder("megallm-test/stopped")
        .region(REGION)
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .connect_timeout(Duration::from_millis(500))
        .operation_timeout(Duration::from_secs(3))
        .max_attempts(2)
        .build()
        .unwrap();
    let started = Instant::now();
    let error = resolve_err(&source).await;
    let elapsed = started.elapsed();

    assert_eq!(error.kind(), SourceErrorKind::Unavailable, "{error}");
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
    assert!(
        error.message().contains(&format!(
            "could not reach Secrets Manager at http://127.0.0.1:{port} for secret `megallm-test/stopped` (stage AWSCURRENT, region us-east-1)"
        )),
        "{error}"
    );
    assert!(error.message().contains("connection refused"), "{error}");
    assert_error_clean(&logs, &error);
}

/// Clears the AWS credential variables of this process. nextest runs each test in its own
/// process, so the change reaches no other test.
#[test]
fn no_credentials_is_not_found() {
    let endpoint = moto_endpoint();
    assert_eq!(
        std::env::var("NEXTEST_EXECUTION_MODE").as_deref(),
        Ok("process-per-test"),
        "this test clears AWS variables of its process; run it with cargo nextest (scripts/test)"
    );
    let empty_dir = tempfile::tempdir().unwrap();
    let empty_config = empty_dir.path().join("config");
    let empty_credentials = empty_dir.path().join("credentials");
    std::fs::write(&empty_config, b"").unwrap();
    std::fs::write(&empty_credentials, b"").unwrap();
    // SAFETY: the test harness runs this test alone in its process (checked above) and no
    // runtime or other thread has started yet.
    unsafe {
        for name in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_ROLE_ARN",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        ] {
            std::env::remove_var(name);
        }
        std::env::set_var("AWS_CONFIG_FILE", &empty_config);
        std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", &empty_credentials);
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let logs = capture_logs();
        let name = unique_name("no-credentials");
        create_secret(&name, SecretValue::Text(CANARY)).await;

        let optional = AwsSecretsManagerSource::builder(&name)
            .region(REGION)
            .endpoint_url(&endpoint)
            .build()
            .unwrap();
        let chain = KeyChain::new()
            .with(optional)
            .with(StaticSource::with_label("test:next", CANARY_ROTATED).unwrap());
        let resolution = chain.resolve().await.expect("the chain moves on");
        assert_eq!(resolution.resolved.label, "test:next");
        let attempt = &resolution.report.attempts[0];
        assert_eq!(attempt.outcome, Outcome::NotFound);
        let reason = attempt.reason.as_deref().unwrap();
        assert!(
            reason.starts_with(&format!(
                "no AWS credentials found to read secret `{name}` (stage AWSCURRENT, region us-east-1); AWS tried "
            )),
            "{reason}"
        );
        for provider in [
            "Environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
            "Profile (the shared config and credentials files)",
            "WebIdentityToken",
            "EcsContainer",
            "Ec2InstanceMetadata (EC2 instance metadata)",
        ] {
            assert!(reason.contains(provider), "{provider} missing from: {reason}");
        }

        let required = AwsSecretsManagerSource::builder(&name)
            .region(REGION)
            .endpoint_url(&endpoint)
            .required(true)
            .build()
            .unwrap();
        let error = resolve_err(&required).await;
        assert_eq!(error.kind(), SourceErrorKind::Misconfigured);
        assert!(error.message().contains("no AWS credentials found"), "{error}");
        assert_error_clean(&logs, &error);
    });
}

#[tokio::test]
async fn earlier_source_keeps_sdk_idle() {
    let logs = capture_logs();
    require_offline_aws();
    let stub = Stub::start(StubReply::success_without_value()).await;
    let aws = AwsSecretsManagerSource::builder("megallm-test/lazy")
        .region(REGION)
        .endpoint_url(&stub.endpoint)
        .build()
        .unwrap();
    let probe = aws.clone();
    let chain = KeyChain::new()
        .with(StaticSource::new(CANARY).unwrap())
        .with(aws);

    let resolution = chain.resolve().await.unwrap();

    assert_eq!(resolution.resolved.label, "static");
    assert_eq!(resolution.report.attempts.len(), 1);
    assert!(!probe.sdk_started(), "the SDK client was built");
    assert_eq!(stub.requests(), 0);
    assert!(
        !logs.contents().contains("aws_config"),
        "aws-config logged, so it was started"
    );

    // Control: resolving the source itself does start the SDK and reach the endpoint.
    let _ = probe.resolve().await;
    assert!(probe.sdk_started());
    assert_eq!(stub.requests(), 1);
    assert!(
        logs.contents().contains("aws_config"),
        "aws-config logged nothing when started, so the idle check above proves nothing"
    );
    assert_resolved_clean(&logs, &resolution.resolved);
}

#[tokio::test]
async fn version_without_value_is_invalid() {
    let logs = capture_logs();
    let stub = Stub::start(StubReply::success_without_value()).await;
    let source = stub_source(&stub, "megallm-test/empty", 1);

    let error = resolve_err(&source).await;

    assert_eq!(error.kind(), SourceErrorKind::InvalidKey);
    assert_eq!(
        error.message(),
        "secret `megallm-test/empty` (stage AWSCURRENT, region us-east-1) has neither \
         SecretString nor SecretBinary; store the key as the secret's SecretString"
    );
    assert_error_clean(&logs, &error);
}

#[tokio::test]
async fn access_denied_is_denied() {
    let logs = capture_logs();
    let stub = Stub::start(StubReply::error(400, "AccessDeniedException")).await;
    let source = stub_source(&stub, "megallm-test/denied", 3);

    let error = resolve_err(&source).await;

    assert_eq!(error.kind(), SourceErrorKind::Denied);
    assert!(
        error.message().contains("secretsmanager:GetSecretValue"),
        "{error}"
    );
    assert!(
        error.message().contains("secret `megallm-test/denied`"),
        "{error}"
    );
    assert_eq!(stub.requests(), 1, "access denied is not retried");
    assert_error_clean(&logs, &error);
}

#[tokio::test]
async fn kms_decrypt_failure_is_denied() {
    let logs = capture_logs();
    let stub = Stub::start(StubReply::error(400, "DecryptionFailure")).await;
    let source = stub_source(&stub, "megallm-test/kms", 3);

    let error = resolve_err(&source).await;

    assert_eq!(error.kind(), SourceErrorKind::Denied);
    assert!(error.message().contains("kms:Decrypt"), "{error}");
    assert!(error.message().contains("(DecryptionFailure)"), "{error}");
    assert_error_clean(&logs, &error);
}

#[tokio::test]
async fn throttling_is_unavailable_after_retries() {
    let logs = capture_logs();
    let stub = Stub::start(StubReply::error(400, "ThrottlingException")).await;
    let source = stub_source(&stub, "megallm-test/throttled", 2);

    let error = resolve_err(&source).await;

    assert_eq!(error.kind(), SourceErrorKind::Unavailable);
    assert!(error.message().contains("(ThrottlingException)"), "{error}");
    assert_eq!(stub.requests(), 2, "the SDK retries throttling");
    assert_error_clean(&logs, &error);
}

#[tokio::test]
async fn server_error_is_unavailable() {
    let logs = capture_logs();
    let stub = Stub::start(StubReply::error(500, "InternalServiceError")).await;
    let source = stub_source(&stub, "megallm-test/5xx", 2);

    let error = resolve_err(&source).await;

    assert_eq!(error.kind(), SourceErrorKind::Unavailable);
    assert!(
        error.message().contains("(InternalServiceError)"),
        "{error}"
    );
    assert_eq!(stub.requests(), 2, "the SDK retries 5xx");
    assert_error_clean(&logs, &error);
}

fn stub_source(stub: &Stub, secret_id: &str, attempts: u32) -> AwsSecretsManagerSource {
    require_offline_aws();
    AwsSecretsManagerSource::builder(secret_id)
        .region(REGION)
        .endpoint_url(&stub.endpoint)
        .max_attempts(attempts)
        .operation_timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// One canned HTTP response in the AWS JSON 1.1 protocol.
#[derive(Clone)]
struct StubReply {
    status: u16,
    error_type: Option<&'static str>,
    body: String,
}

impl StubReply {
    fn success_without_value() -> StubReply {
        StubReply {
            status: 200,
            error_type: None,
            body: String::from(
                r#"{"ARN":"arn:aws:secretsmanager:us-east-1:123456789012:secret:megallm-test/empty-AbCdEf","Name":"megallm-test/empty","VersionId":"v-stub","VersionStages":["AWSCURRENT"]}"#,
            ),
        }
    }

    fn error(status: u16, error_type: &'static str) -> StubReply {
        StubReply {
            status,
            error_type: Some(error_type),
            body: format!(r#"{{"__type":"{error_type}","message":"{BODY_MARKER}"}}"#),
        }
    }
}

/// A loopback HTTP server that sends one fixed response to every request and counts requests.
struct Stub {
    endpoint: String,
    requests: Arc<AtomicUsize>,
}

impl Stub {
    async fn start(reply: StubReply) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(answer(stream, reply.clone(), Arc::clone(&counter)));
            }
        });
        Stub { endpoint, requests }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Reads requests on one connection and sends `reply` to each.
async fn answer(mut stream: tokio::net::TcpStream, reply: StubReply, counter: Arc<AtomicUsize>) {
    let mut buffer = Vec::new();
    loop {
        let Some(header_end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") else {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buffer[..header_end]).to_ascii_lowercase();
        let body_length = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|value| value.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while buffer.len() < header_end + 4 + body_length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            }
        }
        buffer.drain(..header_end + 4 + body_length);
        counter.fetch_add(1, Ordering::SeqCst);

        let reason = match reply.status {
            200 => "OK",
            400 => "Bad Request",
            _ => "Internal Server Error",
        };
        let error_header = reply
            .error_type
            .map(|error_type| format!("x-amzn-ErrorType: {error_type}\r\n"))
            .unwrap_or_default();
        let response = format!(
            "HTTP/1.1 {} {reason}\r\ncontent-type: application/x-amz-json-1.1\r\nx-amzn-RequestId: stub-request\r\n{error_header}content-length: {}\r\n\r\n{}",
            reply.status,
            reply.body.len(),
            reply.body
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}
