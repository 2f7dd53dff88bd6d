//! A vaultrs client that wipes its copies of the token.

use std::path::PathBuf;
use std::time::Duration;

use vaultrs::client::{Client as _, Identity, VaultClient, VaultClientSettingsBuilder};
use zeroize::{Zeroize, Zeroizing};

/// Connection settings shared by the clients of one source.
#[derive(Clone)]
pub(crate) struct Connection {
    /// Address, such as `https://vault.example.com:8200`, already validated.
    pub address: String,
    /// PEM files with CA certificates (the CA file and every file of the CA directory).
    pub ca_files: Vec<PathBuf>,
    /// Client certificate and key, concatenated PEM, read once when the source is built.
    pub identity: Option<Identity>,
    /// Timeout of each request.
    pub timeout: Duration,
}

/// A vaultrs client for one namespace.
///
/// Security: vaultrs keeps the token as a plain `String` in `VaultClientSettings` and in its
/// middleware, and both types print it in their derived `Debug`. This wrapper never formats
/// them, and wipes both copies when the token is replaced and when it is dropped.
pub(crate) struct Client {
    inner: VaultClient,
}

impl Client {
    /// Builds a client without a token that sends `namespace` as `X-Vault-Namespace`.
    ///
    /// Explicit values for every setting keep vaultrs from reading `VAULT_*` variables of
    /// the process environment behind the source's [`Environment`](crate::Environment).
    pub(crate) fn new(connection: &Connection, namespace: Option<&str>) -> Result<Client, String> {
        let ca_files = connection
            .ca_files
            .iter()
            .map(|path| path.to_string_lossy().into_owned())
            .collect::<Vec<_>>();

        let settings = VaultClientSettingsBuilder::default()
            .address(&connection.address)
            .token("")
            .ca_certs(ca_files)
            .identity(connection.identity.clone())
            .timeout(Some(connection.timeout))
            .verify(true)
            .namespace(namespace.map(str::to_owned))
            .build()
            .map_err(|_| format!("invalid Vault address {}", connection.address))?;

        let inner = VaultClient::new(settings).map_err(|error| match error {
            vaultrs::error::ClientError::FileReadError { path, source } => {
                format!("failed to read the CA certificate file {path}: {source}")
            }
            vaultrs::error::ClientError::ParseCertificateError { path, .. } => {
                format!("the CA certificate file {path} does not hold PEM certificates")
            }
            _ => "failed to build the HTTP client for Vault".to_owned(),
        })?;
        Ok(Client { inner })
    }

    /// Returns the vaultrs client for API calls.
    pub(crate) fn vault(&self) -> &VaultClient {
        &self.inner
    }

    /// Replaces the token, wiping the previous copies.
    pub(crate) fn set_token(&mut self, token: &Zeroizing<String>) {
        self.wipe_token();
        self.inner.set_token(token.as_str());
    }

    fn wipe_token(&mut self) {
        self.inner.settings.token.zeroize();
        self.inner.middle.token.zeroize();
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.wipe_token();
    }
}
