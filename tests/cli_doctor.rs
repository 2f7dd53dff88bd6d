//! `megallm-auth doctor`, run as a real process in a temporary working directory.

mod common;
#[cfg(feature = "vault")]
mod vault_support;

use std::path::Path;
use std::process::{Command, Output};

use common::{CANARY, assert_no_canary};

/// Runs `megallm-auth doctor ARGS` in `directory` with only `vars` in its environment.
fn doctor(directory: &Path, vars: &[(&str, &str)], args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_megallm-auth"))
        .arg("doctor")
        .args(args)
        .current_dir(directory)
        .env_clear()
        .envs(vars.iter().copied())
        .output()
        .expect("the megallm-auth binary runs");
    assert_no_canary("doctor stdout", &String::from_utf8_lossy(&output.stdout));
    assert_no_canary("doctor stderr", &String::from_utf8_lossy(&output.stderr));
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn fingerprint(key: &str) -> String {
    megallm_auth::Fingerprint::of(key.as_bytes()).to_string()
}

#[test]
fn doctor_resolves_env_variable() {
    let directory = tempfile::tempdir().unwrap();

    let output = doctor(directory.path(), &[("MEGALLM_API_KEY", CANARY)], &[]);

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("1. env:MEGALLM_API_KEY -> found"), "{text}");
    assert!(
        text.contains(&format!(
            "key: {} from env:MEGALLM_API_KEY",
            fingerprint(CANARY)
        )),
        "{text}"
    );
    assert!(text.contains("sources configured by: defaults"), "{text}");
    assert!(
        text.contains("OK: requests will carry the authorization header."),
        "{text}"
    );
}

#[test]
fn doctor_resolves_env_file_variable() {
    let directory = tempfile::tempdir().unwrap();
    let key_file = directory.path().join("key.txt");
    std::fs::write(&key_file, format!("{CANARY}\n")).unwrap();

    let output = doctor(
        directory.path(),
        &[("MEGALLM_API_KEY_FILE", key_file.to_str().unwrap())],
        &[],
    );

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("2. env-file:MEGALLM_API_KEY_FILE -> found"),
        "{text}"
    );
}

#[test]
fn doctor_resolves_dotenv_file() {
    let directory = tempfile::tempdir().unwrap();
    std::fs::write(
        directory.path().join(".env"),
        format!("MEGALLM_API_KEY={CANARY}\n"),
    )
    .unwrap();

    let output = doctor(directory.path(), &[], &[]);

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("3. dotenv:.env -> found"), "{text}");
    assert!(
        text.contains(&format!("key: {} from dotenv:.env", fingerprint(CANARY))),
        "{text}"
    );
}

#[test]
fn doctor_resolves_configured_secret_file() {
    let directory = tempfile::tempdir().unwrap();
    let secret = directory.path().join("megallm_api_key");
    std::fs::write(&secret, format!("{CANARY}\r\n")).unwrap();
    let config = directory.path().join("custom.toml");
    std::fs::write(
        &config,
        format!(
            "[megallm]\napi_style = \"anthropic\"\n\n[[megallm.sources]]\ntype = \"secret_file\"\npath = \"{}\"\n",
            secret.display()
        ),
    )
    .unwrap();

    let output = doctor(
        directory.path(),
        &[],
        &["--config", config.to_str().unwrap()],
    );

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("api style: anthropic"), "{text}");
    assert!(text.contains("base url: https://ai.megallm.io\n"), "{text}");
    assert!(
        text.contains(&format!("1. file:{} -> found", secret.display())),
        "{text}"
    );
    assert!(
        text.contains("OK: requests will carry the x-api-key header."),
        "{text}"
    );
}

#[test]
fn doctor_json_report() {
    let directory = tempfile::tempdir().unwrap();

    let output = doctor(
        directory.path(),
        &[("MEGALLM_API_KEY", CANARY)],
        &["--json"],
    );

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["ok"], true);
    assert_eq!(json["api_style"], "openai");
    assert_eq!(json["base_url"], "https://ai.megallm.io/v1");
    assert_eq!(
        json["report"]["attempts"][0]["label"],
        "env:MEGALLM_API_KEY"
    );
    assert_eq!(json["report"]["attempts"][0]["outcome"]["status"], "found");
    assert_eq!(json["report"]["winner"]["fingerprint"], fingerprint(CANARY));
    assert!(json["error"].is_null());
}

#[test]
fn doctor_explains_missing_key() {
    let directory = tempfile::tempdir().unwrap();
    let secrets = directory.path().join("no-secrets-here");

    let output = doctor(
        directory.path(),
        &[],
        &[
            "--config",
            write_default_sources(directory.path(), &secrets)
                .to_str()
                .unwrap(),
        ],
    );

    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(
        text.contains("1. env:MEGALLM_API_KEY -> not found"),
        "{text}"
    );
    assert!(text.contains("key: none"), "{text}");
    let errors = stderr(&output);
    assert!(
        errors.contains("error: no MegaLLM API key found; tried env:MEGALLM_API_KEY"),
        "{errors}"
    );
    assert!(
        errors.contains("what to do: put the key where one of the sources above looks"),
        "{errors}"
    );
}

/// Writes a config listing the env, .env and secret-file sources, with the secret file under
/// `secrets`, so the test does not depend on this machine's /run/secrets.
fn write_default_sources(directory: &Path, secrets: &Path) -> std::path::PathBuf {
    let config = directory.join("sources.toml");
    std::fs::write(
        &config,
        format!(
            "[[megallm.sources]]\ntype = \"env\"\n\n[[megallm.sources]]\ntype = \"dotenv\"\n\n[[megallm.sources]]\ntype = \"secret_file\"\npath = \"{}\"\n",
            secrets.join("megallm_api_key").display()
        ),
    )
    .unwrap();
    config
}

#[test]
fn doctor_json_missing_key() {
    let directory = tempfile::tempdir().unwrap();
    let secrets = directory.path().join("no-secrets-here");
    let config = write_default_sources(directory.path(), &secrets);

    let output = doctor(
        directory.path(),
        &[],
        &["--json", "--config", config.to_str().unwrap()],
    );

    assert_eq!(output.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["error"]["kind"], "not_found");
    assert_eq!(json["report"]["attempts"].as_array().unwrap().len(), 3);
    assert!(json["report"]["winner"].is_null());
}

#[test]
fn doctor_reports_invalid_key() {
    let directory = tempfile::tempdir().unwrap();

    let output = doctor(
        directory.path(),
        &[("MEGALLM_API_KEY", "sk-mega-TEST KEY000000000")],
        &[],
    );

    assert_eq!(output.status.code(), Some(3));
    let text = stdout(&output);
    assert!(
        text.contains("1. env:MEGALLM_API_KEY -> failed (invalid key)"),
        "{text}"
    );
    let errors = stderr(&output);
    assert!(errors.contains("whitespace at character 13"), "{errors}");
}

#[test]
fn doctor_reports_settings_error() {
    let directory = tempfile::tempdir().unwrap();

    let output = doctor(directory.path(), &[("MEGALLM__TIMEOUT_SECS", CANARY)], &[]);

    assert_eq!(output.status.code(), Some(2));
    let errors = stderr(&output);
    assert!(
        errors.contains(
            "setting megallm.timeout_secs (from environment variable MEGALLM__TIMEOUT_SECS)"
        ),
        "{errors}"
    );
}

/// AWS variables that `scripts/test` exports, passed through to the child process.
#[cfg(feature = "aws")]
fn aws_test_vars() -> Vec<(&'static str, String)> {
    [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
    ]
    .into_iter()
    .map(|name| {
        let value = std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set; run the suite with scripts/test, which exports test credentials"
            )
        });
        (name, value)
    })
    .chain([("AWS_EC2_METADATA_DISABLED", String::from("true"))])
    .collect()
}

#[cfg(feature = "aws")]
#[tokio::test]
async fn doctor_resolves_aws_secret() {
    use common::moto::{SecretValue, create_secret, moto_endpoint, unique_name};

    let directory = tempfile::tempdir().unwrap();
    let name = unique_name("doctor");
    let version = create_secret(&name, SecretValue::Text(CANARY)).await;
    let config = directory.path().join("megallm.toml");
    std::fs::write(
        &config,
        format!(
            "[[megallm.sources]]\ntype = \"aws_secrets_manager\"\nsecret_id = \"{name}\"\nendpoint_url = \"{}\"\n",
            moto_endpoint()
        ),
    )
    .unwrap();
    let vars = aws_test_vars();
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let output = doctor(directory.path(), &vars, &[]);

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains(&format!("1. aws-sm:{name} -> found")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "key: {} from aws-sm:{name} (version {version})",
            fingerprint(CANARY)
        )),
        "{text}"
    );
}

#[cfg(feature = "aws")]
#[test]
fn doctor_explains_missing_aws_secret() {
    let directory = tempfile::tempdir().unwrap();
    let config = directory.path().join("megallm.toml");
    std::fs::write(
        &config,
        format!(
            "[[megallm.sources]]\ntype = \"aws_secrets_manager\"\nsecret_id = \"megallm-test/does-not-exist\"\nendpoint_url = \"{}\"\nrequired = true\n",
            common::moto::moto_endpoint()
        ),
    )
    .unwrap();
    let vars = aws_test_vars();
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let output = doctor(directory.path(), &vars, &[]);

    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("1. aws-sm:megallm-test/does-not-exist -> failed (misconfigured)"),
        "{text}"
    );
}

#[cfg(feature = "vault")]
#[tokio::test]
async fn doctor_resolves_vault_secret() {
    let admin = vault_support::shared_server();
    let mount = vault_support::unique("doctor");
    admin.enable_kv(&mount, 2).await;
    let version = admin
        .write(&mount, 2, "megallm", serde_json::json!({"api_key": CANARY}))
        .await
        .expect("KV v2 returns a version");
    admin
        .policy(
            &mount,
            &format!("path \"{mount}/data/megallm\" {{ capabilities = [\"read\"] }}"),
        )
        .await;
    let token = admin.token(&[&mount], "10m", true).await;

    let directory = tempfile::tempdir().unwrap();
    let token_file = directory.path().join("vault-token");
    std::fs::write(&token_file, &token).unwrap();
    let config = directory.path().join("megallm.toml");
    std::fs::write(
        &config,
        format!(
            "[[megallm.sources]]\ntype = \"vault\"\naddress = \"{}\"\nmount = \"{mount}\"\npath = \"megallm\"\n",
            admin.address
        ),
    )
    .unwrap();

    // Without kv_version the source probes sys/mounts, which this token may not read. The
    // Vault client logs that 403 as an error; doctor keeps such noise out of its report.
    // The token file comes in through a nested environment override of the auth table.
    let output = doctor(
        directory.path(),
        &[
            ("MEGALLM__SOURCES__0__AUTH__METHOD", "token"),
            (
                "MEGALLM__SOURCES__0__AUTH__TOKEN_FILE",
                token_file.to_str().unwrap(),
            ),
        ],
        &[],
    );

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    let label = format!("vault:{mount}/megallm#api_key");
    assert!(text.contains(&format!("1. {label} -> found")), "{text}");
    assert!(
        text.contains(&format!(
            "key: {} from {label} (version {version})",
            fingerprint(CANARY)
        )),
        "{text}"
    );
    assert!(!text.contains(&token), "doctor printed the Vault token");
    assert!(
        !stderr(&output).contains(&token),
        "doctor logged the Vault token"
    );
}

#[cfg(feature = "vault")]
#[tokio::test]
async fn doctor_explains_vault_denied() {
    let admin = vault_support::shared_server();
    let mount = vault_support::unique("doctor-denied");
    admin.enable_kv(&mount, 2).await;
    let token = admin.token(&["default"], "10m", true).await;

    let directory = tempfile::tempdir().unwrap();
    let config = directory.path().join("megallm.toml");
    std::fs::write(
        &config,
        format!(
            "[[megallm.sources]]\ntype = \"vault\"\naddress = \"{}\"\nmount = \"{mount}\"\npath = \"megallm\"\nkv_version = 2\nauth = {{ method = \"token\", token_env = \"SERVICE_VAULT_TOKEN\" }}\n",
            admin.address
        ),
    )
    .unwrap();

    let output = doctor(
        directory.path(),
        &[("SERVICE_VAULT_TOKEN", token.as_str())],
        &[],
    );

    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains(&format!(
            "1. vault:{mount}/megallm#api_key -> failed (denied)"
        )),
        "{text}"
    );
    assert!(
        stderr(&output).contains(&format!("{mount}/data/megallm")),
        "{}",
        stderr(&output)
    );
    assert!(!text.contains(&token), "doctor printed the Vault token");
    assert!(
        !stderr(&output).contains(&token),
        "doctor logged the Vault token"
    );
}
