//! Reads the MegaLLM API key from Vault or OpenBao and prints where it came from.
//!
//! ```sh
//! export VAULT_ADDR=http://127.0.0.1:8200 VAULT_TOKEN=...
//! bao kv put -mount=secret megallm api_key=sk-mega-...
//! cargo run --example vault --features vault -- secret megallm
//! ```
//!
//! With `VAULT_ROLE_ID` and `VAULT_SECRET_ID_FILE` set, the example logs in with AppRole
//! instead of using a token. It prints the key's fingerprint, never the key.

use megallm_auth::{KeySource, SecretRef, VaultAuth, VaultSource};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // SourceError's Display names the source and the fix, never the key or a token.
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), megallm_auth::SourceError> {
    let mut args = std::env::args().skip(1);
    let mount = args.next().unwrap_or_else(|| "secret".to_owned());
    let path = args.next().unwrap_or_else(|| "megallm".to_owned());

    let mut builder = VaultSource::builder(mount, path);
    if let (Ok(role_id), Ok(secret_id_file)) = (
        std::env::var("VAULT_ROLE_ID"),
        std::env::var("VAULT_SECRET_ID_FILE"),
    ) {
        builder = builder.auth(VaultAuth::approle(
            role_id,
            SecretRef::File(secret_id_file.into()),
        ));
    }
    let source = builder.build()?;

    let resolved = source.resolve().await?;
    println!(
        "{}: key {} (secret version {})",
        resolved.label,
        resolved.key.fingerprint(),
        resolved.version.as_deref().unwrap_or("unversioned")
    );
    Ok(())
}
