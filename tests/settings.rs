//! Layered settings: defaults, megallm.toml, MEGALLM__* overrides, and translated errors.

mod common;

use std::path::Path;

use common::{CANARY, assert_no_canary, capture_logs};
use megallm_auth::settings::{LoadOptions, Settings, SettingsError, SourceSettings};
use megallm_auth::{ApiStyle, Environment, KeyPolicy};

fn load(directory: &Path, vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    Settings::load_with(&LoadOptions {
        environment: Environment::from_pairs(vars.iter().copied()),
        file: None,
        directory: Some(directory.to_path_buf()),
    })
}

fn write_config(directory: &Path, text: &str) {
    std::fs::write(directory.join("megallm.toml"), text).unwrap();
}

#[track_caller]
fn assert_error_clean(error: &SettingsError) {
    assert_no_canary("settings error Display", &error.to_string());
    assert_no_canary("settings error Debug", &format!("{error:?}"));
}

#[test]
fn defaults_without_file_or_env() {
    let directory = tempfile::tempdir().unwrap();

    let settings = load(directory.path(), &[]).unwrap();

    assert_eq!(settings.api_style, ApiStyle::OpenAi);
    assert_eq!(settings.base_url(), "https://ai.megallm.io/v1");
    assert!(!settings.debug_auth);
    assert_eq!(settings.anthropic_version, "2023-06-01");
    assert_eq!(settings.key_policy, KeyPolicy::Strict);
    assert_eq!(settings.timeout_secs, 60);
    assert_eq!(settings.connect_timeout_secs, 10);
    assert!(settings.sources.is_empty());
}

#[test]
fn file_layer_sets_every_field() {
    let directory = tempfile::tempdir().unwrap();
    write_config(
        directory.path(),
        r#"
[megallm]
api_style = "anthropic"
base_url = "https://gateway.example.test"
debug_auth = true
anthropic_version = "2024-01-01"
key_policy = "warn"
timeout_secs = 15
connect_timeout_secs = 3

[[megallm.sources]]
type = "env"
var = "TEAM_MEGALLM_KEY"

[[megallm.sources]]
type = "secret_file"
path = "/run/secrets/megallm_api_key"
max_size = 2048
"#,
    );

    let settings = load(directory.path(), &[]).unwrap();

    assert_eq!(settings.api_style, ApiStyle::Anthropic);
    assert_eq!(settings.base_url(), "https://gateway.example.test");
    assert!(settings.debug_auth);
    assert_eq!(settings.anthropic_version, "2024-01-01");
    assert_eq!(settings.key_policy, KeyPolicy::Warn);
    assert_eq!(settings.timeout_secs, 15);
    assert_eq!(settings.connect_timeout_secs, 3);
    assert_eq!(
        settings.sources,
        vec![
            SourceSettings::Env {
                var: String::from("TEAM_MEGALLM_KEY")
            },
            SourceSettings::SecretFile {
                path: "/run/secrets/megallm_api_key".into(),
                max_size: Some(2048)
            },
        ]
    );
    let file_origin = format!("file {}", directory.path().join("megallm.toml").display());
    assert_eq!(
        settings.sources_configured_by,
        vec![file_origin.clone(), file_origin]
    );
}

#[test]
fn environment_overrides_file_scalars() {
    let directory = tempfile::tempdir().unwrap();
    write_config(
        directory.path(),
        "[megallm]\napi_style = \"openai\"\ntimeout_secs = 15\n",
    );

    let settings = load(
        directory.path(),
        &[
            ("MEGALLM__API_STYLE", "anthropic"),
            ("MEGALLM__TIMEOUT_SECS", "42"),
            ("MEGALLM__DEBUG_AUTH", "true"),
        ],
    )
    .unwrap();

    assert_eq!(settings.api_style, ApiStyle::Anthropic);
    assert_eq!(settings.timeout_secs, 42);
    assert!(settings.debug_auth);
}

#[test]
fn config_file_named_by_variable() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("elsewhere.toml");
    std::fs::write(&path, "[megallm]\nkey_policy = \"off\"\n").unwrap();

    let settings = load(
        Path::new("/nonexistent-megallm-dir"),
        &[("MEGALLM_CONFIG", path.to_str().unwrap())],
    )
    .unwrap();

    assert_eq!(settings.key_policy, KeyPolicy::Off);
}

#[test]
fn missing_named_config_file_is_error() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("missing.toml");

    let error = load(
        directory.path(),
        &[("MEGALLM_CONFIG", path.to_str().unwrap())],
    )
    .unwrap_err();

    assert_eq!(error.setting(), None);
    assert_eq!(
        error.origin(),
        Some(format!("file {} (named by MEGALLM_CONFIG)", path.display()).as_str())
    );
    assert!(error.message().contains("does not exist"), "{error}");
}

/// The source layer that decides is reported (case C10).
#[test]
fn environment_source_override_wins() {
    let logs = capture_logs();
    let directory = tempfile::tempdir().unwrap();
    let key_file = directory.path().join("api_key");
    std::fs::write(&key_file, format!("{CANARY}\n")).unwrap();
    write_config(
        directory.path(),
        "[[megallm.sources]]\ntype = \"env\"\nvar = \"FILE_LAYER_KEY\"\n",
    );
    let vars = [
        ("FILE_LAYER_KEY", "sk-mega-FILELAYER0000000"),
        ("MEGALLM__SOURCES__0__TYPE", "secret_file"),
        ("MEGALLM__SOURCES__0__PATH", key_file.to_str().unwrap()),
    ];

    let settings = load(directory.path(), &vars).unwrap();

    assert_eq!(
        settings.sources,
        vec![SourceSettings::SecretFile {
            path: key_file.clone(),
            max_size: None
        }]
    );
    assert_eq!(
        settings.sources_configured_by,
        vec![String::from("environment variables MEGALLM__SOURCES__0__*")]
    );

    let environment = Environment::from_pairs(vars);
    let chain = settings.key_chain(&environment).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let resolution = runtime.block_on(chain.resolve()).unwrap();

    assert_eq!(resolution.resolved.key.expose_secret(), CANARY);
    assert_eq!(
        resolution.resolved.label,
        format!("file:{}", key_file.display())
    );
    assert_eq!(
        resolution.report.configured_by.as_deref(),
        Some("environment variables MEGALLM__SOURCES__0__*")
    );
    assert!(
        resolution
            .report
            .to_string()
            .contains("sources configured by: environment variables MEGALLM__SOURCES__0__*")
    );
    assert_no_canary("report", &resolution.report.to_string());
    assert_no_canary("report JSON", &resolution.report.to_json());
    logs.assert_clean();
}

#[test]
fn environment_field_merges_into_file_source() {
    let directory = tempfile::tempdir().unwrap();
    write_config(
        directory.path(),
        "[[megallm.sources]]\ntype = \"env\"\nvar = \"FILE_LAYER_KEY\"\n",
    );

    let settings = load(
        directory.path(),
        &[("MEGALLM__SOURCES__0__VAR", "ENV_LAYER_KEY")],
    )
    .unwrap();

    assert_eq!(
        settings.sources,
        vec![SourceSettings::Env {
            var: String::from("ENV_LAYER_KEY")
        }]
    );
}

/// A key pasted into a numeric setting is named, never quoted (case C2).
#[test]
fn key_in_numeric_env_setting() {
    let directory = tempfile::tempdir().unwrap();

    let error = load(directory.path(), &[("MEGALLM__TIMEOUT_SECS", CANARY)]).unwrap_err();

    assert_eq!(error.setting(), Some("megallm.timeout_secs"));
    assert_eq!(
        error.origin(),
        Some("environment variable MEGALLM__TIMEOUT_SECS")
    );
    assert!(error.message().contains("looks like an API key"), "{error}");
    assert_error_clean(&error);
}

#[test]
fn non_numeric_env_setting_is_named() {
    let directory = tempfile::tempdir().unwrap();

    let error = load(directory.path(), &[("MEGALLM__TIMEOUT_SECS", "soon-ish")]).unwrap_err();

    assert_eq!(error.setting(), Some("megallm.timeout_secs"));
    assert_eq!(
        error.origin(),
        Some("environment variable MEGALLM__TIMEOUT_SECS")
    );
    assert_eq!(
        error.message(),
        "invalid value; expected a whole number of seconds"
    );
    assert!(!error.to_string().contains("soon-ish"), "{error}");
}

#[test]
fn inline_key_in_file_rejected() {
    let directory = tempfile::tempdir().unwrap();
    write_config(
        directory.path(),
        &format!("[megallm]\napi_key = \"{CANARY}\"\n"),
    );

    let error = load(directory.path(), &[]).unwrap_err();

    assert_eq!(error.setting(), Some("megallm.api_key"));
    assert_eq!(
        error.origin(),
        Some(format!("file {}", directory.path().join("megallm.toml").display()).as_str())
    );
    assert!(
        error.message().contains("keys come from sources"),
        "{error}"
    );
    assert_error_clean(&error);
}

#[test]
fn key_in_string_setting_rejected() {
    let directory = tempfile::tempdir().unwrap();
    write_config(
        directory.path(),
        &format!("[[megallm.sources]]\ntype = \"env\"\nvar = \"{CANARY}\"\n"),
    );

    let error = load(directory.path(), &[]).unwrap_err();

    assert_eq!(error.setting(), Some("megallm.sources[0].var"));
    assert_error_clean(&error);
}

#[test]
fn invalid_toml_names_line_only() {
    let directory = tempfile::tempdir().unwrap();
    write_config(
        directory.path(),
        &format!("[megallm]\napi_style = \"openai\"\nbase_url = {CANARY}\n"),
    );

    let error = load(directory.path(), &[]).unwrap_err();

    assert_eq!(
        error.message(),
        "the file is not valid TOML at line 3; check quoting and brackets there"
    );
    assert_error_clean(&error);
}

#[test]
fn bad_enum_value_lists_choices() {
    let directory = tempfile::tempdir().unwrap();
    write_config(directory.path(), "[megallm]\napi_style = \"opanai\"\n");

    let error = load(directory.path(), &[]).unwrap_err();

    assert_eq!(error.setting(), Some("megallm.api_style"));
    assert_eq!(
        error.message(),
        "invalid value; expected `openai` or `anthropic`"
    );
    assert!(!error.to_string().contains("opanai"), "{error}");
}

#[test]
fn unknown_setting_is_rejected() {
    let directory = tempfile::tempdir().unwrap();
    write_config(directory.path(), "[megallm]\ntimeout_seconds = 5\n");

    let error = load(directory.path(), &[]).unwrap_err();

    assert_eq!(error.setting(), Some("megallm.timeout_seconds"));
    assert!(error.message().contains("not a known setting"), "{error}");
}

#[test]
fn unknown_source_type_lists_types() {
    let directory = tempfile::tempdir().unwrap();
    write_config(directory.path(), "[[megallm.sources]]\ntype = \"ssm\"\n");

    let error = load(directory.path(), &[]).unwrap_err();

    assert_eq!(error.setting(), Some("megallm.sources[0].type"));
    assert_eq!(
        error.message(),
        "is not a known source type; use one of env, env_file, dotenv, secret_file, aws_secrets_manager, vault"
    );
}

#[test]
fn source_missing_required_field() {
    let directory = tempfile::tempdir().unwrap();
    write_config(
        directory.path(),
        "[[megallm.sources]]\ntype = \"secret_file\"\n",
    );

    let error = load(directory.path(), &[]).unwrap_err();

    assert_eq!(error.setting(), Some("megallm.sources[0]"));
    assert_eq!(error.message(), "is missing the field `path`");
}

#[test]
fn plain_http_base_url_rejected() {
    let directory = tempfile::tempdir().unwrap();

    let error = load(
        directory.path(),
        &[("MEGALLM__BASE_URL", "http://gateway.example.test/v1")],
    )
    .unwrap_err();

    assert_eq!(error.setting(), Some("megallm.base_url"));
    assert!(
        error
            .message()
            .starts_with("plain http is allowed only to a loopback host"),
        "{error}"
    );

    for loopback in [
        "http://127.0.0.1:8080/v1",
        "http://localhost:9/v1",
        "http://[::1]:8080",
    ] {
        let settings = load(directory.path(), &[("MEGALLM__BASE_URL", loopback)]).unwrap();
        assert_eq!(settings.base_url(), loopback);
    }
}

#[test]
fn embedded_section_from_app_config() {
    let config = config::Config::builder()
        .add_source(config::File::from_str(
            "[service]\nname = \"x\"\n[llm]\napi_style = \"anthropic\"\n",
            config::FileFormat::Toml,
        ))
        .build()
        .unwrap();

    let settings = Settings::from_config(&config, "llm").unwrap();

    assert_eq!(settings.api_style, ApiStyle::Anthropic);
    assert_eq!(settings.base_url(), "https://ai.megallm.io");
}

#[test]
fn default_chain_when_no_sources() {
    let directory = tempfile::tempdir().unwrap();
    let settings = load(directory.path(), &[]).unwrap();

    let chain = settings
        .key_chain(&Environment::from_pairs([("MEGALLM_API_KEY", CANARY)]))
        .unwrap();

    assert_eq!(
        chain.labels()[..2],
        ["env:MEGALLM_API_KEY", "env-file:MEGALLM_API_KEY_FILE"]
    );
}

#[cfg(feature = "aws")]
#[test]
fn aws_source_settings_and_overrides() {
    let directory = tempfile::tempdir().unwrap();
    write_config(
        directory.path(),
        r#"
[[megallm.sources]]
type = "aws_secrets_manager"
secret_id = "prod/megallm"
field = "api_key"
region = "eu-west-1"
connect_timeout_ms = 1000
"#,
    );

    let settings = load(
        directory.path(),
        &[("MEGALLM__SOURCES__0__CONNECT_TIMEOUT_MS", "250")],
    )
    .unwrap();

    let SourceSettings::AwsSecretsManager(aws) = &settings.sources[0] else {
        panic!("expected an AWS source, got {:?}", settings.sources[0]);
    };
    assert_eq!(aws.secret_id, "prod/megallm");
    assert_eq!(aws.field.as_deref(), Some("api_key"));
    assert_eq!(aws.region.as_deref(), Some("eu-west-1"));
    assert_eq!(aws.connect_timeout_ms, Some(250));

    let chain = settings
        .key_chain(&Environment::from_pairs::<_, &str, &str>([]))
        .unwrap();
    assert_eq!(chain.labels(), ["aws-sm:prod/megallm#api_key"]);
}

#[cfg(feature = "aws")]
#[test]
fn aws_source_conflict_names_setting() {
    let directory = tempfile::tempdir().unwrap();
    write_config(
        directory.path(),
        "[[megallm.sources]]\ntype = \"aws_secrets_manager\"\nsecret_id = \"prod/megallm\"\nversion_stage = \"AWSCURRENT\"\nversion_id = \"v1\"\n",
    );
    let settings = load(directory.path(), &[]).unwrap();

    let error = settings
        .key_chain(&Environment::from_pairs::<_, &str, &str>([]))
        .unwrap_err();

    assert_eq!(error.setting(), Some("megallm.sources[0]"));
    assert!(error.message().contains("version_stage"), "{error}");
}

#[test]
fn key_inside_base_url_rejected() {
    let directory = tempfile::tempdir().unwrap();

    for url in [
        format!("https://{CANARY}@gateway.example.test/v1"),
        format!("http://127.0.0.1:1/v1?key={CANARY}"),
    ] {
        let error = load(directory.path(), &[("MEGALLM__BASE_URL", url.as_str())]).unwrap_err();

        assert_eq!(error.setting(), Some("megallm.base_url"));
        assert_eq!(
            error.origin(),
            Some("environment variable MEGALLM__BASE_URL")
        );
        assert!(error.message().contains("looks like an API key"), "{error}");
        assert_error_clean(&error);
    }
}

#[test]
fn base_url_user_info_rejected() {
    let directory = tempfile::tempdir().unwrap();

    let error = load(
        directory.path(),
        &[(
            "MEGALLM__BASE_URL",
            "https://admin:hunter2@gateway.example.test/v1",
        )],
    )
    .unwrap_err();

    assert_eq!(error.setting(), Some("megallm.base_url"));
    assert_eq!(
        error.origin(),
        Some("environment variable MEGALLM__BASE_URL")
    );
    assert!(error.message().contains("user information"), "{error}");
    assert!(!error.to_string().contains("hunter2"), "{error}");
}

#[test]
fn zero_timeouts_name_their_file() {
    let directory = tempfile::tempdir().unwrap();
    let file_origin = format!("file {}", directory.path().join("megallm.toml").display());

    for field in ["timeout_secs", "connect_timeout_secs"] {
        write_config(directory.path(), &format!("[megallm]\n{field} = 0\n"));

        let error = load(directory.path(), &[]).unwrap_err();

        assert_eq!(error.setting(), Some(format!("megallm.{field}").as_str()));
        assert_eq!(error.origin(), Some(file_origin.as_str()));
        assert_eq!(error.message(), "must be at least 1 second");
    }
}

#[test]
fn control_byte_in_anthropic_version() {
    let directory = tempfile::tempdir().unwrap();
    write_config(
        directory.path(),
        "[megallm]\nanthropic_version = \"2023-06-01\\u0007\"\n",
    );

    let error = load(directory.path(), &[]).unwrap_err();

    assert_eq!(error.setting(), Some("megallm.anthropic_version"));
    assert!(
        error
            .message()
            .starts_with("must be a version such as 2023-06-01"),
        "{error}"
    );
}

#[test]
fn source_field_without_type_names_variable() {
    let directory = tempfile::tempdir().unwrap();

    let error = load(
        directory.path(),
        &[("MEGALLM__SOURCES__0__VAR", "OTHER_KEY")],
    )
    .unwrap_err();

    assert_eq!(error.setting(), Some("megallm.sources[0].type"));
    assert_eq!(
        error.origin(),
        Some("environment variable MEGALLM__SOURCES__0__VAR")
    );
}

#[cfg(feature = "vault")]
#[test]
fn vault_source_from_settings() {
    let directory = tempfile::tempdir().unwrap();
    write_config(
        directory.path(),
        "[[megallm.sources]]\ntype = \"vault\"\naddress = \"https://vault.example.test:8200\"\nmount = \"secret\"\npath = \"megallm\"\n",
    );

    let settings = load(
        directory.path(),
        &[
            ("MEGALLM__SOURCES__0__AUTH__METHOD", "approle"),
            ("MEGALLM__SOURCES__0__AUTH__ROLE_ID", "service-role"),
            (
                "MEGALLM__SOURCES__0__AUTH__SECRET_ID_ENV",
                "SERVICE_SECRET_ID",
            ),
        ],
    )
    .unwrap();

    let SourceSettings::Vault(vault) = &settings.sources[0] else {
        panic!("expected a Vault source, got {:?}", settings.sources[0]);
    };
    assert_eq!(vault.mount, "secret");
    let printed = format!("{settings:?}");
    assert!(!printed.contains("service-role"), "{printed}");
    assert!(printed.contains("role_id: \"[REDACTED]\""), "{printed}");
    let chain = settings
        .key_chain(&Environment::from_pairs::<_, &str, &str>([]))
        .unwrap();
    assert_eq!(chain.labels(), ["vault:secret/megallm#api_key"]);
}

#[cfg(feature = "vault")]
#[test]
fn vault_kv_version_lists_choices() {
    let directory = tempfile::tempdir().unwrap();
    write_config(
        directory.path(),
        "[[megallm.sources]]\ntype = \"vault\"\nmount = \"secret\"\npath = \"megallm\"\nkv_version = 3\n",
    );

    let error = load(directory.path(), &[]).unwrap_err();

    assert_eq!(error.setting(), Some("megallm.sources[0].kv_version"));
    assert_eq!(error.message(), "invalid value; expected 1 or 2");
}

#[test]
fn unknown_source_field_points_to_guides() {
    let directory = tempfile::tempdir().unwrap();
    write_config(
        directory.path(),
        "[[megallm.sources]]\ntype = \"secret_file\"\npath = \"/run/secrets/key\"\nmaxsize = 10\n",
    );

    let error = load(directory.path(), &[]).unwrap_err();

    assert_eq!(error.setting(), Some("megallm.sources[0].maxsize"));
    assert!(error.message().contains("docs/sources.md"), "{error}");
}

#[cfg(feature = "vault")]
#[test]
fn vault_auth_without_method_is_token() {
    let directory = tempfile::tempdir().unwrap();

    let settings = load(
        directory.path(),
        &[
            ("MEGALLM__SOURCES__0__TYPE", "vault"),
            ("MEGALLM__SOURCES__0__MOUNT", "secret"),
            ("MEGALLM__SOURCES__0__PATH", "megallm"),
            (
                "MEGALLM__SOURCES__0__AUTH__TOKEN_ENV",
                "SERVICE_VAULT_TOKEN",
            ),
        ],
    )
    .unwrap();

    let SourceSettings::Vault(vault) = &settings.sources[0] else {
        panic!("expected a Vault source, got {:?}", settings.sources[0]);
    };
    assert!(
        matches!(
            &vault.auth,
            megallm_auth::sources::vault::VaultAuthSettings::Token { token_env: Some(name), .. }
                if name == "SERVICE_VAULT_TOKEN"
        ),
        "{:?}",
        vault.auth
    );
}
