//! `megallm-auth`: check a MegaLLM key setup without printing the key.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use megallm_auth::settings::{LoadOptions, Settings, SettingsError};
use megallm_auth::{ChainError, Environment, SourceErrorKind};
use serde_json::json;

/// Check how a service will load its MegaLLM API key.
#[derive(Debug, Parser)]
#[command(name = "megallm-auth", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load the settings, resolve the key through the configured sources and print the
    /// resolution report. The key itself is never printed.
    ///
    /// Exit status: 0 when a key was found, 1 when no source had one, 2 for invalid settings
    /// or a misconfigured source, 3 when a source failed otherwise (invalid key, access
    /// denied, backend unavailable).
    Doctor {
        /// Configuration file to read instead of MEGALLM_CONFIG or ./megallm.toml.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print the report as JSON on standard output.
        #[arg(long)]
        json: bool,
    },
}

const EXIT_NOT_FOUND: u8 = 1;
const EXIT_SETTINGS: u8 = 2;
const EXIT_SOURCE_FAILED: u8 = 3;

fn main() -> ExitCode {
    // Only this crate's warnings by default: the Vault client logs every 403 of the KV
    // version probe as an error, which is noise in a report that already explains it.
    let filter = match std::env::var("MEGALLM_LOG") {
        Err(_) => tracing_subscriber::EnvFilter::new("megallm_auth=warn"),
        Ok(directives) => {
            tracing_subscriber::EnvFilter::try_new(&directives).unwrap_or_else(|error| {
                eprintln!(
                    "megallm-auth: ignoring invalid MEGALLM_LOG ({error}); logging this crate's warnings only"
                );
                tracing_subscriber::EnvFilter::new("warn")
            })
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .init();

    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("megallm-auth: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };

    match cli.command {
        Command::Doctor { config, json } => runtime.block_on(doctor(config, json)),
    }
}

async fn doctor(config: Option<PathBuf>, json: bool) -> ExitCode {
    let environment = Environment::process();
    let options = LoadOptions {
        environment: environment.clone(),
        file: config,
        directory: None,
    };

    let settings = match Settings::load_with(&options).and_then(|settings| {
        let chain = settings.key_chain(&environment)?;
        Ok((settings, chain))
    }) {
        Ok(loaded) => loaded,
        Err(error) => return report_settings_error(&error, json),
    };
    let (settings, chain) = settings;

    match chain.resolve().await {
        Ok(resolution) => {
            let headers = settings.auth_headers(&resolution.resolved.key);
            if json {
                let output = json!({
                    "ok": headers.is_ok(),
                    "api_style": settings.api_style.to_string(),
                    "base_url": settings.base_url(),
                    "report": resolution.report,
                    "error": headers.as_ref().err().map(|error| json!({
                        "kind": "misconfigured",
                        "message": error.to_string(),
                    })),
                });
                println!("{output:#}");
            } else {
                print_settings(&settings);
                print!("{}", resolution.report);
                match &headers {
                    Ok(_) => println!(
                        "OK: requests will carry the {} header.",
                        settings.api_style.credential_header()
                    ),
                    Err(error) => println!("error: {error}"),
                }
            }
            match headers {
                Ok(_) => ExitCode::SUCCESS,
                Err(_) => ExitCode::from(EXIT_SETTINGS),
            }
        }
        Err(error) => report_chain_error(&settings, &error, json),
    }
}

fn print_settings(settings: &Settings) {
    println!("api style: {}", settings.api_style);
    println!("base url: {}", settings.base_url());
}

fn report_settings_error(error: &SettingsError, json: bool) -> ExitCode {
    if json {
        let output = json!({
            "ok": false,
            "report": null,
            "error": {
                "kind": "misconfigured",
                "setting": error.setting(),
                "origin": error.origin(),
                "message": error.to_string(),
            },
        });
        println!("{output:#}");
    } else {
        eprintln!("error: {error}");
        eprintln!(
            "what to do: fix the setting named above; docs/configuration.md lists every setting and layer."
        );
    }
    ExitCode::from(EXIT_SETTINGS)
}

fn report_chain_error(settings: &Settings, error: &ChainError, json: bool) -> ExitCode {
    let kind = error.kind();
    let remedy = remedy(kind);
    if json {
        let output = json!({
            "ok": false,
            "api_style": settings.api_style.to_string(),
            "base_url": settings.base_url(),
            "report": error.report(),
            "error": {
                "kind": kind,
                "message": error.to_string(),
                "remedy": remedy,
            },
        });
        println!("{output:#}");
    } else {
        print_settings(settings);
        print!("{}", error.report());
        eprintln!("error: {error}");
        eprintln!("what to do: {remedy}");
    }
    match kind {
        SourceErrorKind::NotFound => ExitCode::from(EXIT_NOT_FOUND),
        SourceErrorKind::Misconfigured => ExitCode::from(EXIT_SETTINGS),
        _ => ExitCode::from(EXIT_SOURCE_FAILED),
    }
}

fn remedy(kind: SourceErrorKind) -> &'static str {
    match kind {
        SourceErrorKind::NotFound => {
            "put the key where one of the sources above looks (each line says why it found none), or configure another source in megallm.toml (see docs/sources.md)"
        }
        SourceErrorKind::InvalidKey => {
            "fix the key where the failing source stores it (see docs/troubleshooting.md for each problem)"
        }
        SourceErrorKind::Misconfigured => "fix the source's configuration named in the error",
        SourceErrorKind::Denied => {
            "follow the failing source's message above: it names the permission, policy or credential to fix"
        }
        SourceErrorKind::Unavailable => "check that the backend is reachable, then retry",
        _ => "see docs/troubleshooting.md",
    }
}
