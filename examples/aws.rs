//! Resolves the MegaLLM API key from AWS Secrets Manager and prints where it came from, never
//! the key.
//!
//! ```sh
//! MEGALLM_AWS_SECRET_ID=prod/megallm MEGALLM_AWS_FIELD=api_key AWS_REGION=eu-west-1 \
//!     cargo run --example aws --features aws
//! ```
//!
//! Variables: `MEGALLM_AWS_SECRET_ID` (required), `MEGALLM_AWS_FIELD`,
//! `MEGALLM_AWS_VERSION_STAGE`, `MEGALLM_AWS_ENDPOINT_URL` (such as a local moto server),
//! `MEGALLM_AWS_REGION`. Credentials and the default region come from the AWS default chain.

use std::process::ExitCode;

use megallm_auth::{
    AwsSecretsManagerSettings, AwsSecretsManagerSource, KeyChain, KeyPolicy, SourceError,
};

fn optional_var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

fn settings_from_env() -> Result<AwsSecretsManagerSettings, String> {
    let Some(secret_id) = optional_var("MEGALLM_AWS_SECRET_ID") else {
        return Err(String::from(
            "set MEGALLM_AWS_SECRET_ID to the secret's name or ARN",
        ));
    };

    let mut settings = AwsSecretsManagerSettings::default();
    settings.secret_id = secret_id;
    settings.field = optional_var("MEGALLM_AWS_FIELD");
    settings.version_stage = optional_var("MEGALLM_AWS_VERSION_STAGE");
    settings.endpoint_url = optional_var("MEGALLM_AWS_ENDPOINT_URL");
    settings.region = optional_var("MEGALLM_AWS_REGION");
    Ok(settings)
}

fn build_source() -> Result<AwsSecretsManagerSource, String> {
    let settings = settings_from_env()?;
    AwsSecretsManagerSource::from_settings(&settings, KeyPolicy::Strict)
        .map_err(|error: SourceError| error.to_string())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let source = match build_source() {
        Ok(source) => source,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };

    let chain = KeyChain::new().with(source);
    match chain.resolve().await {
        Ok(resolution) => {
            print!("{}", resolution.report);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprint!("{}", error.report());
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
