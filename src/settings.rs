//! [`Settings`]: the `[megallm]` configuration section, loaded in layers through the `config`
//! crate.
//!
//! Layers, lowest first:
//! 1. built-in defaults;
//! 2. `megallm.toml` in the working directory, or the file named by `MEGALLM_CONFIG`;
//! 3. environment variables `MEGALLM__<FIELD>`, with `__` between levels, such as
//!    `MEGALLM__API_STYLE=anthropic` or `MEGALLM__SOURCES__0__PATH=/run/secrets/key`.
//!
//! Errors from `config`, `toml` and `serde` can quote the offending text, which may be a key
//! pasted into the wrong place. They are translated into [`SettingsError`], which names the
//! setting and where it came from but never the value.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::chain::KeyChain;
use crate::environment::Environment;
use crate::headers::{ApiStyle, AuthHeaders, DEFAULT_ANTHROPIC_VERSION, HeaderError};
use crate::key::{ApiKey, KEY_PREFIX, KeyPolicy};
use crate::source::KeySource;

/// Name of the configuration file looked for in the working directory.
pub const CONFIG_FILE_NAME: &str = "megallm.toml";
/// Environment variable that names the configuration file.
pub const CONFIG_FILE_VAR: &str = "MEGALLM_CONFIG";
/// Prefix of the environment overrides, including the separator.
pub const ENV_PREFIX: &str = "MEGALLM__";
/// Name of the configuration section.
pub const SECTION: &str = "megallm";

const DEFAULT_TIMEOUT_SECS: u64 = 60;
const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 10;

/// Field names that would hold a key inline. Keys come from sources, never from settings.
const INLINE_KEY_FIELDS: &[&str] = &["api_key", "key", "megallm_api_key", "token", "secret"];

/// The `[megallm]` section: which API to call, how, and where the key comes from.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Settings {
    /// API style: `openai` (default) or `anthropic`.
    #[serde(default)]
    pub api_style: ApiStyle,
    /// Base URL of the API. Defaults to the style's MegaLLM URL. Must be https, except on
    /// loopback.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Sends `X-Debug-Auth: true`, which requests authentication debugging from the gateway.
    #[serde(default)]
    pub debug_auth: bool,
    /// The `anthropic-version` header sent in Anthropic style.
    #[serde(default = "default_anthropic_version")]
    pub anthropic_version: String,
    /// Policy for keys that lack the `sk-mega-` prefix.
    #[serde(default)]
    pub key_policy: KeyPolicy,
    /// Request timeout in seconds.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Connect timeout in seconds.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Key sources in order. Empty means the default chain.
    ///
    /// The loader reads each entry by its `type`, so that values from environment overrides,
    /// which are strings, convert to the entry's numbers and booleans.
    #[serde(skip)]
    pub sources: Vec<SourceSettings>,
    /// Layer that chose each source, for the resolution report. The loader fills it.
    #[serde(skip)]
    pub sources_configured_by: Vec<String>,
}

fn default_anthropic_version() -> String {
    DEFAULT_ANTHROPIC_VERSION.to_owned()
}

fn default_timeout_secs() -> u64 {
    DEFAULT_TIMEOUT_SECS
}

fn default_connect_timeout_secs() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_SECS
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            api_style: ApiStyle::default(),
            base_url: None,
            debug_auth: false,
            anthropic_version: default_anthropic_version(),
            key_policy: KeyPolicy::default(),
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            connect_timeout_secs: DEFAULT_CONNECT_TIMEOUT_SECS,
            sources: Vec::new(),
            sources_configured_by: Vec::new(),
        }
    }
}

/// One key source in the `sources` list, selected by its `type` field.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum SourceSettings {
    /// An environment variable (`type = "env"`).
    Env {
        /// Variable name; default `MEGALLM_API_KEY`.
        var: String,
    },
    /// A file named by an environment variable (`type = "env_file"`).
    EnvFile {
        /// Variable name; default `MEGALLM_API_KEY_FILE`.
        var: String,
    },
    /// A .env file (`type = "dotenv"`).
    Dotenv {
        /// Path of the file; default `.env`.
        path: PathBuf,
        /// Variable name inside the file; default `MEGALLM_API_KEY`.
        var: String,
    },
    /// AWS Secrets Manager (`type = "aws_secrets_manager"`, feature `aws`).
    #[cfg(feature = "aws")]
    AwsSecretsManager(crate::sources::aws::AwsSecretsManagerSettings),
    /// HashiCorp Vault or OpenBao (`type = "vault"`, feature `vault`).
    #[cfg(feature = "vault")]
    Vault(crate::sources::vault::VaultSettings),
    /// A secret file such as a Docker or Kubernetes secret (`type = "secret_file"`).
    SecretFile {
        /// Path of the file.
        path: PathBuf,
        /// Maximum file size in bytes.
        max_size: Option<u64>,
    },
}

/// Fields of `type = "env"` and `type = "env_file"`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VarFields {
    var: Option<String>,
}

/// Fields of `type = "dotenv"`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DotenvFields {
    #[serde(default = "default_dotenv_path")]
    path: PathBuf,
    #[serde(default = "default_key_var")]
    var: String,
}

/// Fields of `type = "secret_file"`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretFileFields {
    path: PathBuf,
    #[serde(default)]
    max_size: Option<u64>,
}

fn default_key_var() -> String {
    String::from("MEGALLM_API_KEY")
}

fn default_key_file_var() -> String {
    String::from("MEGALLM_API_KEY_FILE")
}

fn default_dotenv_path() -> PathBuf {
    PathBuf::from(".env")
}

/// Source types and the crate feature each needs.
const SOURCE_TYPES: &[(&str, &str)] = &[
    ("env", "env"),
    ("env_file", "env"),
    ("dotenv", "dotenv"),
    ("secret_file", "secret-file"),
    ("aws_secrets_manager", "aws"),
    ("vault", "vault"),
];

fn source_type_enabled(source_type: &str) -> bool {
    match source_type {
        "env" | "env_file" => cfg!(feature = "env"),
        "dotenv" => cfg!(feature = "dotenv"),
        "secret_file" => cfg!(feature = "secret-file"),
        "aws_secrets_manager" => cfg!(feature = "aws"),
        "vault" => cfg!(feature = "vault"),
        _ => false,
    }
}

/// Locations to load settings from. The default reads the process environment and the
/// working directory.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Environment for `MEGALLM_CONFIG` and the `MEGALLM__*` overrides.
    pub environment: Environment,
    /// Configuration file to read instead of `MEGALLM_CONFIG` or `./megallm.toml`. It must
    /// exist.
    pub file: Option<PathBuf>,
    /// Directory in which `megallm.toml` is looked for; default the working directory.
    pub directory: Option<PathBuf>,
}

/// A setting that could not be loaded. It names the setting and where it came from (file or
/// environment variable), never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    setting: Option<String>,
    origin: Option<String>,
    message: String,
}

impl SettingsError {
    fn new(setting: Option<String>, origin: Option<String>, message: impl Into<String>) -> Self {
        SettingsError {
            setting,
            origin,
            message: message.into(),
        }
    }

    /// Returns the setting's path, such as `megallm.timeout_secs`, when one is to blame.
    pub fn setting(&self) -> Option<&str> {
        self.setting.as_deref()
    }

    /// Returns where the value came from, such as `file megallm.toml` or `environment
    /// variable MEGALLM__TIMEOUT_SECS`.
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// Returns what is wrong and how to fix it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid MegaLLM settings")?;
        if let Some(setting) = &self.setting {
            write!(f, ": setting {setting}")?;
        }
        if let Some(origin) = &self.origin {
            write!(f, " (from {origin})")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for SettingsError {}

impl Settings {
    /// Loads the settings from the process environment and the working directory.
    ///
    /// # Errors
    ///
    /// [`SettingsError`] when the file is unreadable or not TOML, a value has the wrong type,
    /// a field is unknown, a key is written inline, or the base URL is not allowed.
    pub fn load() -> Result<Settings, SettingsError> {
        Settings::load_with(&LoadOptions::default())
    }

    /// Loads the settings with an injected environment and file location.
    ///
    /// # Errors
    ///
    /// As [`Settings::load`].
    pub fn load_with(options: &LoadOptions) -> Result<Settings, SettingsError> {
        let file = config_file(options)?;
        let mut builder = config::Config::builder();

        let file_has_sources = match &file {
            Some(file) => {
                let text = read_config_file(&file.path, &file.origin)?;
                let table = parse_toml(&text, &file.origin)?;
                let has_sources = table
                    .get(SECTION)
                    .and_then(|section| section.get("sources"))
                    .is_some();
                builder = builder.add_source(config::File::from_str(
                    text.as_str(),
                    config::FileFormat::Toml,
                ));
                has_sources
            }
            None => false,
        };

        let overrides = EnvOverrides::collect(&options.environment)?;
        builder = overrides.apply(builder)?;

        let config = builder.build().map_err(|error| {
            translate_config_error(&error, file.as_ref().map(|f| f.origin.as_str()), &overrides)
        })?;

        let file_origin = file.as_ref().map(|f| f.origin.clone());
        let mut settings =
            deserialize_section(&config, SECTION, file_origin.as_deref(), &overrides)?;

        settings.sources_configured_by = (0..settings.sources.len())
            .map(|index| match overrides.source_origin(index) {
                Some(origin) => origin,
                None if file_has_sources => file_origin.clone().unwrap_or_default(),
                None => String::from("defaults"),
            })
            .collect();
        settings.validate(SECTION, |setting| {
            origin_of(setting, file_origin.as_deref(), &overrides)
        })?;
        Ok(settings)
    }

    /// Reads the section named `section` from an application's own configuration.
    ///
    /// # Errors
    ///
    /// As [`Settings::load`], with the setting named but without a file or variable.
    pub fn from_config(config: &config::Config, section: &str) -> Result<Settings, SettingsError> {
        let mut settings = deserialize_section(config, section, None, &EnvOverrides::default())?;
        settings.sources_configured_by =
            vec![String::from("application configuration"); settings.sources.len()];
        settings.validate(section, |_| None)?;
        Ok(settings)
    }

    /// Returns the base URL: the configured one, or the style's MegaLLM URL.
    pub fn base_url(&self) -> &str {
        self.base_url
            .as_deref()
            .unwrap_or_else(|| self.api_style.default_base_url())
    }

    /// Returns the request timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// Returns the connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    /// Builds the key chain: the configured sources in order, or the default chain when none
    /// are configured. Sources read `environment`.
    ///
    /// # Errors
    ///
    /// [`SettingsError`] when a source's settings are invalid, such as a Vault source without
    /// a path.
    pub fn key_chain(&self, environment: &Environment) -> Result<KeyChain, SettingsError> {
        if self.sources.is_empty() {
            return Ok(crate::sources::default_chain(environment, self.key_policy)
                .configured_by("defaults (no sources configured)"));
        }

        let mut chain = KeyChain::new();
        for (index, source) in self.sources.iter().enumerate() {
            chain.push(self.build_source(index, source, environment)?);
        }
        Ok(chain.configured_by(self.describe_source_origins()))
    }

    /// Builds the request headers for `key` with this style, `debug_auth` and
    /// `anthropic_version`.
    ///
    /// # Errors
    ///
    /// [`HeaderError`] when `anthropic_version` contains a byte that is not allowed in a header.
    pub fn auth_headers(&self, key: &ApiKey) -> Result<AuthHeaders, HeaderError> {
        Ok(AuthHeaders::new(key, self.api_style)
            .with_anthropic_version(&self.anthropic_version)?
            .with_debug_auth(self.debug_auth))
    }

    fn describe_source_origins(&self) -> String {
        let origins: BTreeSet<&str> = self
            .sources_configured_by
            .iter()
            .map(String::as_str)
            .collect();
        if origins.len() <= 1 {
            return origins.into_iter().next().unwrap_or("defaults").to_owned();
        }
        self.sources_configured_by
            .iter()
            .enumerate()
            .map(|(index, origin)| format!("sources[{index}] from {origin}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn build_source(
        &self,
        index: usize,
        source: &SourceSettings,
        environment: &Environment,
    ) -> Result<Box<dyn KeySource>, SettingsError> {
        let policy = self.key_policy;
        let setting = format!("{SECTION}.sources[{index}]");
        let origin = self.sources_configured_by.get(index).cloned();
        let source_error = |error: crate::SourceError| {
            SettingsError::new(
                Some(setting.clone()),
                origin.clone(),
                error.message().to_owned(),
            )
        };

        let built: Option<Box<dyn KeySource>> = match source {
            #[cfg(feature = "env")]
            SourceSettings::Env { var } => Some(Box::new(
                crate::sources::EnvSource::new(var.clone())
                    .with_environment(environment.clone())
                    .with_policy(policy),
            )),
            #[cfg(feature = "env")]
            SourceSettings::EnvFile { var } => Some(Box::new(
                crate::sources::EnvFileSource::new(var.clone())
                    .with_environment(environment.clone())
                    .with_policy(policy),
            )),
            #[cfg(feature = "dotenv")]
            SourceSettings::Dotenv { path, var } => Some(Box::new(
                crate::sources::DotenvSource::new(path.clone())
                    .with_var(var.clone())
                    .with_policy(policy),
            )),
            #[cfg(feature = "secret-file")]
            SourceSettings::SecretFile { path, max_size } => {
                let mut file =
                    crate::sources::SecretFileSource::new(path.clone()).with_policy(policy);
                if let Some(max_size) = max_size {
                    file = file.with_max_size(*max_size);
                }
                Some(Box::new(file))
            }
            #[cfg(feature = "aws")]
            SourceSettings::AwsSecretsManager(aws) => Some(Box::new(
                crate::sources::aws::AwsSecretsManagerSource::from_settings(aws, policy)
                    .map_err(source_error)?,
            )),
            #[cfg(feature = "vault")]
            SourceSettings::Vault(vault) => Some(Box::new(
                crate::sources::vault::VaultSource::from_settings(vault, environment, policy)
                    .map_err(source_error)?,
            )),
            #[allow(unreachable_patterns)]
            _ => {
                let _ = (&source_error, environment, policy);
                None
            }
        };
        built.ok_or_else(|| {
            SettingsError::new(
                Some(setting.clone()),
                origin.clone(),
                "this source type is disabled; enable its crate feature",
            )
        })
    }

    /// Checks the values that their types alone do not constrain. `origin_of` names where a
    /// setting came from.
    fn validate(
        &self,
        section: &str,
        origin_of: impl Fn(&str) -> Option<String>,
    ) -> Result<(), SettingsError> {
        let invalid = |field: &str, message: &str| {
            let setting = format!("{section}.{field}");
            SettingsError::new(Some(setting.clone()), origin_of(&setting), message)
        };

        if let Some(base_url) = &self.base_url {
            crate::http::check_base_url(base_url).map_err(|error| match error {
                crate::http::ClientError::InvalidBaseUrl { reason, .. } => {
                    invalid("base_url", reason)
                }
                _ => invalid("base_url", "is not a valid base URL"),
            })?;
        }
        if self.timeout_secs == 0 {
            return Err(invalid("timeout_secs", "must be at least 1 second"));
        }
        if self.connect_timeout_secs == 0 {
            return Err(invalid("connect_timeout_secs", "must be at least 1 second"));
        }
        let version = self.anthropic_version.as_bytes();
        if version.is_empty() || !version.iter().all(|byte| byte.is_ascii_graphic()) {
            return Err(invalid(
                "anthropic_version",
                "must be a version such as 2023-06-01, without spaces or control characters",
            ));
        }
        Ok(())
    }
}

struct ConfigFile {
    path: PathBuf,
    origin: String,
}

fn config_file(options: &LoadOptions) -> Result<Option<ConfigFile>, SettingsError> {
    if let Some(path) = &options.file {
        return Ok(Some(ConfigFile {
            path: path.clone(),
            origin: format!("file {}", path.display()),
        }));
    }

    let named = options.environment.var(CONFIG_FILE_VAR).map_err(|error| {
        SettingsError::new(
            None,
            Some(format!("environment variable {}", error.name)),
            "is not valid Unicode",
        )
    })?;
    if let Some(named) = named.filter(|value| !value.is_empty()) {
        let path = PathBuf::from(named.as_str());
        return Ok(Some(ConfigFile {
            origin: format!("file {} (named by {CONFIG_FILE_VAR})", path.display()),
            path,
        }));
    }

    let directory = options.directory.clone().unwrap_or_default();
    let path = directory.join(CONFIG_FILE_NAME);
    if path.is_file() {
        return Ok(Some(ConfigFile {
            origin: format!("file {}", path.display()),
            path,
        }));
    }
    Ok(None)
}

fn read_config_file(path: &Path, origin: &str) -> Result<Zeroizing<String>, SettingsError> {
    std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|error| {
            let hint = match error.kind() {
                std::io::ErrorKind::NotFound => {
                    "the file does not exist; create it or fix the path"
                }
                std::io::ErrorKind::PermissionDenied => {
                    "permission denied; make the file readable by this process"
                }
                std::io::ErrorKind::InvalidData => "the file is not UTF-8 text",
                _ => "the file could not be read",
            };
            SettingsError::new(None, Some(origin.to_owned()), hint)
        })
}

/// Parses TOML only to check its syntax and find the `sources` table. The parser's own
/// message quotes the offending line, so only its line number is kept.
fn parse_toml(text: &str, origin: &str) -> Result<toml::Table, SettingsError> {
    text.parse::<toml::Table>().map_err(|error| {
        // Security: toml's Display prints the offending line, which may hold a key.
        let line = error
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        let message = match line {
            Some(line) => format!(
                "the file is not valid TOML at line {line}; check quoting and brackets there"
            ),
            None => String::from("the file is not valid TOML"),
        };
        SettingsError::new(None, Some(origin.to_owned()), message)
    })
}

/// The `MEGALLM__*` environment overrides, as config paths, with the variable behind each.
#[derive(Default)]
struct EnvOverrides {
    /// Leaf settings: config path to (variable, value).
    leaves: BTreeMap<String, (String, Zeroizing<String>)>,
    /// Whole source entries that the environment replaces, by index: field to value.
    sources: BTreeMap<usize, BTreeMap<String, (String, Zeroizing<String>)>>,
}

impl EnvOverrides {
    fn collect(environment: &Environment) -> Result<EnvOverrides, SettingsError> {
        let mut overrides = EnvOverrides::default();
        for (var, value) in environment.vars_with_prefix(ENV_PREFIX) {
            let parts: Vec<String> = var[ENV_PREFIX.len()..]
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect();
            if parts.iter().any(String::is_empty) {
                return Err(SettingsError::new(
                    None,
                    Some(format!("environment variable {var}")),
                    "has an empty name part; separate levels with exactly two underscores",
                ));
            }

            match parts.as_slice() {
                [sources, index, field @ ..] if sources == "sources" && !field.is_empty() => {
                    let index: usize = index.parse().map_err(|_| {
                        SettingsError::new(
                            None,
                            Some(format!("environment variable {var}")),
                            "the part after SOURCES must be the source's index, such as MEGALLM__SOURCES__0__PATH",
                        )
                    })?;
                    overrides
                        .sources
                        .entry(index)
                        .or_default()
                        .insert(field.join("."), (var.clone(), value));
                }
                _ => {
                    let path = format!("{SECTION}.{}", parts.join("."));
                    overrides.leaves.insert(path, (var.clone(), value));
                }
            }
        }
        Ok(overrides)
    }

    fn apply(
        &self,
        mut builder: config::ConfigBuilder<config::builder::DefaultState>,
    ) -> Result<config::ConfigBuilder<config::builder::DefaultState>, SettingsError> {
        for (path, (var, value)) in &self.leaves {
            builder = builder
                .set_override(path.as_str(), value.as_str())
                .map_err(|_| invalid_override_name(var))?;
        }

        // Entries with a `type` are replaced whole in `replace_sources`, after the merge.
        for (index, fields) in &self.sources {
            if fields.contains_key("type") {
                continue;
            }
            for (field, (var, value)) in fields {
                builder = builder
                    .set_override(
                        format!("{SECTION}.sources[{index}].{field}"),
                        value.as_str(),
                    )
                    .map_err(|_| invalid_override_name(var))?;
            }
        }
        Ok(builder)
    }

    /// Replaces each source entry whose `type` the environment sets. A new `type` makes the
    /// file's other fields for that entry meaningless, so the entry is not merged.
    fn replace_sources(&self, section: &mut config::Value) {
        let config::ValueKind::Table(table) = &mut section.kind else {
            return;
        };
        let sources = table
            .entry(String::from("sources"))
            .or_insert_with(|| config::Value::new(None, config::ValueKind::Array(Vec::new())));
        if !matches!(sources.kind, config::ValueKind::Array(_)) {
            sources.kind = config::ValueKind::Array(Vec::new());
        }
        let config::ValueKind::Array(items) = &mut sources.kind else {
            return;
        };
        for (index, fields) in &self.sources {
            let Some((type_var, _)) = fields.get("type") else {
                continue;
            };
            let origin = format!("environment variable {type_var}");
            let mut entry = config::Map::new();
            for (field, (_, value)) in fields {
                insert_nested(&mut entry, field, value, &origin);
            }
            while items.len() <= *index {
                items.push(config::Value::new(None, config::ValueKind::Nil));
            }
            items[*index] = config::Value::new(Some(&origin), config::ValueKind::Table(entry));
        }
    }

    /// Returns the variable behind the config path `path`, if the environment set it.
    fn variable_for(&self, path: &str) -> Option<&str> {
        if let Some((var, _)) = self.leaves.get(path) {
            return Some(var);
        }
        let rest = path.strip_prefix(&format!("{SECTION}.sources["))?;
        let (index, field) = rest.split_once(']')?;
        let fields = self.sources.get(&index.parse().ok()?)?;
        let field = field.trim_start_matches('.');
        fields
            .get(field)
            .or_else(|| fields.get("type"))
            .or_else(|| fields.values().next())
            .map(|(var, _)| var.as_str())
    }

    fn source_origin(&self, index: usize) -> Option<String> {
        self.sources
            .get(&index)
            .map(|_| format!("environment variables {ENV_PREFIX}SOURCES__{index}__*"))
    }
}

/// Inserts `value` at the dotted `path` (such as `auth.method`) into `table`, creating the
/// tables on the way.
fn insert_nested(
    table: &mut config::Map<String, config::Value>,
    path: &str,
    value: &str,
    origin: &str,
) {
    let origin = origin.to_owned();
    match path.split_once('.') {
        None => {
            let leaf =
                config::Value::new(Some(&origin), config::ValueKind::String(value.to_owned()));
            table.insert(path.to_owned(), leaf);
        }
        Some((head, rest)) => {
            let child = table.entry(head.to_owned()).or_insert_with(|| {
                config::Value::new(Some(&origin), config::ValueKind::Table(config::Map::new()))
            });
            if !matches!(child.kind, config::ValueKind::Table(_)) {
                child.kind = config::ValueKind::Table(config::Map::new());
            }
            if let config::ValueKind::Table(child_table) = &mut child.kind {
                insert_nested(child_table, rest, value, &origin);
            }
        }
    }
}

fn invalid_override_name(var: &str) -> SettingsError {
    SettingsError::new(
        None,
        Some(format!("environment variable {var}")),
        "is not a valid setting name; use MEGALLM__<FIELD> with __ between levels",
    )
}

fn origin_of(setting: &str, file_origin: Option<&str>, overrides: &EnvOverrides) -> Option<String> {
    match overrides.variable_for(setting) {
        Some(var) => Some(format!("environment variable {var}")),
        None => file_origin.map(str::to_owned),
    }
}

/// Translates a `config` error into ours, keeping the key and dropping anything that may
/// quote the value.
fn translate_config_error(
    error: &config::ConfigError,
    file_origin: Option<&str>,
    overrides: &EnvOverrides,
) -> SettingsError {
    // Security: ConfigError's Display includes the unexpected value; only structured fields
    // that name keys and types are used here.
    match error {
        config::ConfigError::Type { key, expected, .. } => SettingsError::new(
            key.clone(),
            key.as_deref()
                .and_then(|key| origin_of(key, file_origin, overrides)),
            format!("expected {expected}"),
        ),
        config::ConfigError::At { error, key, .. } => {
            let mut inner = translate_config_error(error, file_origin, overrides);
            if inner.setting.is_none() {
                inner.setting = key.clone();
            }
            inner
        }
        config::ConfigError::NotFound(key) => SettingsError::new(
            Some(key.clone()),
            file_origin.map(str::to_owned),
            "is missing",
        ),
        config::ConfigError::FileParse { .. } => SettingsError::new(
            None,
            file_origin.map(str::to_owned),
            "the file is not valid TOML",
        ),
        _ => SettingsError::new(
            None,
            file_origin.map(str::to_owned),
            "the configuration could not be merged; check the file and the MEGALLM__ variables",
        ),
    }
}

fn deserialize_section(
    config: &config::Config,
    section: &str,
    file_origin: Option<&str>,
    overrides: &EnvOverrides,
) -> Result<Settings, SettingsError> {
    let mut value = match config.get::<config::Value>(section) {
        Ok(value) => value,
        Err(config::ConfigError::NotFound(_)) if overrides.sources.is_empty() => {
            return Ok(Settings::default());
        }
        Err(config::ConfigError::NotFound(_)) => {
            config::Value::new(None, config::ValueKind::Table(config::Map::new()))
        }
        Err(error) => return Err(translate_config_error(&error, file_origin, overrides)),
    };
    overrides.replace_sources(&mut value);

    reject_inline_keys(&value, section, file_origin, overrides)?;
    check_source_types(&value, section, file_origin, overrides)?;

    // The sources are read one by one below, by their `type`.
    let source_items = match &mut value.kind {
        config::ValueKind::Table(table) => match table.remove("sources").map(|v| v.kind) {
            Some(config::ValueKind::Array(items)) => items,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };

    let describe = |prefix: &str, error: serde_path_to_error::Error<config::ConfigError>| {
        let path = error.path().to_string();
        let setting = if path == "." || path.is_empty() {
            prefix.to_owned()
        } else {
            format!("{prefix}.{path}")
        };
        let origin = origin_of(&setting, file_origin, overrides);
        // Security: the inner serde or config message can quote the value; only the path
        // and our own description of the expected value are shown.
        let message = describe_expected(&setting, error.inner());
        SettingsError::new(Some(setting), origin, message)
    };

    let mut settings: Settings =
        serde_path_to_error::deserialize(value).map_err(|error| describe(section, error))?;
    for (index, item) in source_items.into_iter().enumerate() {
        let prefix = format!("{section}.sources[{index}]");
        let source = deserialize_source(item)
            .map_err(|error| describe(&prefix, error))?
            .ok_or_else(|| {
                SettingsError::new(
                    Some(format!("{prefix}.type")),
                    origin_of(&format!("{prefix}.type"), file_origin, overrides),
                    "is not a source type this build supports; check the type and the crate features",
                )
            })?;
        settings.sources.push(source);
    }
    Ok(settings)
}

/// Fills in `method = "token"` in a Vault entry's `auth` table that names no method, so that
/// `MEGALLM__SOURCES__0__AUTH__TOKEN_ENV=...` alone selects the documented default method.
#[cfg(feature = "vault")]
fn default_vault_auth_method(mut entry: config::Value) -> config::Value {
    if let config::ValueKind::Table(fields) = &mut entry.kind
        && let Some(auth) = fields.get_mut("auth")
        && let config::ValueKind::Table(auth_fields) = &mut auth.kind
        && !auth_fields.contains_key("method")
    {
        auth_fields.insert(
            String::from("method"),
            config::Value::new(None, config::ValueKind::String(String::from("token"))),
        );
    }
    entry
}

/// Reads one `sources` entry by its `type`. Returns `None` for a type that this build does
/// not know, which `check_source_types` has normally rejected already.
fn deserialize_source(
    item: config::Value,
) -> Result<Option<SourceSettings>, serde_path_to_error::Error<config::ConfigError>> {
    let mut fields = match item.kind {
        config::ValueKind::Table(fields) => fields,
        _ => config::Map::new(),
    };
    let source_type = fields
        .remove("type")
        .and_then(|value| value.into_string().ok())
        .unwrap_or_default();
    let rest = config::Value::new(None, config::ValueKind::Table(fields));

    let source = match source_type.as_str() {
        "env" => SourceSettings::Env {
            var: serde_path_to_error::deserialize::<_, VarFields>(rest)?
                .var
                .unwrap_or_else(default_key_var),
        },
        "env_file" => SourceSettings::EnvFile {
            var: serde_path_to_error::deserialize::<_, VarFields>(rest)?
                .var
                .unwrap_or_else(default_key_file_var),
        },
        "dotenv" => {
            let fields: DotenvFields = serde_path_to_error::deserialize(rest)?;
            SourceSettings::Dotenv {
                path: fields.path,
                var: fields.var,
            }
        }
        #[cfg(feature = "vault")]
        "vault" => SourceSettings::Vault(serde_path_to_error::deserialize(
            default_vault_auth_method(rest),
        )?),
        #[cfg(feature = "aws")]
        "aws_secrets_manager" => {
            SourceSettings::AwsSecretsManager(serde_path_to_error::deserialize(rest)?)
        }
        "secret_file" => {
            let fields: SecretFileFields = serde_path_to_error::deserialize(rest)?;
            SourceSettings::SecretFile {
                path: fields.path,
                max_size: fields.max_size,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(source))
}

/// Describes what a setting takes, from its path and the kind of serde failure.
fn describe_expected(path: &str, error: &config::ConfigError) -> String {
    let inner_text = error.to_string();
    if inner_text.contains("unknown field") {
        let guide = if path.contains(".sources[") {
            "the source's guide (docs/sources.md, docs/aws.md or docs/vault.md)"
        } else {
            "docs/configuration.md"
        };
        return format!("is not a known setting; check the spelling against {guide}");
    }
    // serde writes "missing field `path`", and config writes "missing configuration field
    // \"sources[0]path\"". Both name a field of our own structs, never a value.
    if inner_text.contains("missing field") || inner_text.contains("missing configuration field") {
        let field = inner_text
            .rsplit(['`', '"', ']', '.'])
            .find(|part| !part.is_empty())
            .filter(|field| field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or("a required field");
        return format!("is missing the field `{field}`");
    }
    let last = path.rsplit('.').next().unwrap_or(path);
    let expected = match last {
        "api_style" => "`openai` or `anthropic`",
        "key_policy" => "`strict`, `warn` or `off`",
        "debug_auth" | "required" => "`true` or `false`",
        "kv_version" => "1 or 2",
        "method" | "auth" => {
            "a table with method = \"token\", \"approle\", \"kubernetes\" or \"jwt\""
        }
        "max_attempts" => "a whole number of attempts, at least 1",
        "timeout_secs" | "connect_timeout_secs" => "a whole number of seconds",
        "max_size" => "a whole number of bytes",
        name if name.ends_with("_ms") => "a whole number of milliseconds",
        name if name.ends_with("_secs") => "a whole number of seconds",
        _ => "a value of the documented type",
    };
    format!("invalid value; expected {expected}")
}

fn reject_inline_keys(
    value: &config::Value,
    section: &str,
    file_origin: Option<&str>,
    overrides: &EnvOverrides,
) -> Result<(), SettingsError> {
    let mut found = None;
    find_inline_key(value, section, &mut found);
    match found {
        Some(setting) => Err(SettingsError::new(
            Some(setting.clone()),
            origin_of(&setting, file_origin, overrides),
            "looks like an API key written into the configuration; keys come from sources: put it in MEGALLM_API_KEY, a secret file or a secret manager, and remove it here",
        )),
        None => Ok(()),
    }
}

fn find_inline_key(value: &config::Value, path: &str, found: &mut Option<String>) {
    if found.is_some() {
        return;
    }
    match &value.kind {
        config::ValueKind::Table(table) => {
            for (name, child) in table {
                let child_path = format!("{path}.{name}");
                let is_string = matches!(child.kind, config::ValueKind::String(_));
                if is_string
                    && INLINE_KEY_FIELDS.contains(&name.as_str())
                    && !path.contains("sources")
                {
                    *found = Some(child_path);
                    return;
                }
                find_inline_key(child, &child_path, found);
            }
        }
        config::ValueKind::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                find_inline_key(child, &format!("{path}[{index}]"), found);
            }
        }
        // Security: a key can hide inside another value, such as a URL's user information or
        // query string, so any occurrence of the prefix counts.
        config::ValueKind::String(text) if text.contains(KEY_PREFIX) => {
            *found = Some(path.to_owned());
        }
        _ => {}
    }
}

fn check_source_types(
    value: &config::Value,
    section: &str,
    file_origin: Option<&str>,
    overrides: &EnvOverrides,
) -> Result<(), SettingsError> {
    let config::ValueKind::Table(table) = &value.kind else {
        return Ok(());
    };
    let Some(config::ValueKind::Array(items)) = table.get("sources").map(|v| &v.kind) else {
        return Ok(());
    };
    for (index, item) in items.iter().enumerate() {
        let setting = format!("{section}.sources[{index}].type");
        let origin = origin_of(&setting, file_origin, overrides);
        let config::ValueKind::Table(fields) = &item.kind else {
            return Err(SettingsError::new(
                Some(format!("{section}.sources[{index}]")),
                origin,
                "must be a table with a `type` field",
            ));
        };
        let Some(source_type) = fields
            .get("type")
            .and_then(|v| v.clone().into_string().ok())
        else {
            return Err(SettingsError::new(
                Some(setting),
                origin,
                "is missing; name the source type, such as \"env\" or \"secret_file\"",
            ));
        };
        match SOURCE_TYPES.iter().find(|(name, _)| *name == source_type) {
            None => {
                let names: Vec<&str> = SOURCE_TYPES.iter().map(|(name, _)| *name).collect();
                return Err(SettingsError::new(
                    Some(setting),
                    origin,
                    format!(
                        "is not a known source type; use one of {}",
                        names.join(", ")
                    ),
                ));
            }
            Some((name, feature)) if !source_type_enabled(name) => {
                return Err(SettingsError::new(
                    Some(setting),
                    origin,
                    format!(
                        "source type \"{name}\" needs the crate feature `{feature}`; enable it in Cargo.toml"
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}
