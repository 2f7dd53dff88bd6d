//! The token lifecycle and the KV read of [`VaultSource`]: login, lookup, renewal, one retry
//! after a 403, KV version detection and the classification of failures.

use std::time::{Duration, Instant};

use serde_json::Value;
use vaultrs::api::kv2::requests::ReadSecretRequest;
use zeroize::{Zeroize, Zeroizing};

use super::auth::{SecretReadError, VaultAuth};
use super::client::Client;
use super::failure::Failure;
use super::{KvVersion, VaultSource};
use crate::key::ApiKey;
use crate::source::{Resolved, SourceError, SourceErrorKind, SourceKind};

/// The state one source keeps between resolves.
pub(crate) struct Session {
    kv_client: Client,
    /// Client for the login namespace, when it differs from the secret's namespace.
    login_client: Option<Client>,
    token: Option<TokenState>,
    kv_version: Option<KvVersion>,
    mounts_checked: bool,
}

impl Session {
    pub(crate) fn new(
        kv_client: Client,
        login_client: Option<Client>,
        kv_version: Option<KvVersion>,
    ) -> Session {
        Session {
            kv_client,
            login_client,
            token: None,
            kv_version,
            mounts_checked: false,
        }
    }

    /// Returns the client for login, token lookup and renewal, because the token belongs to the
    /// login namespace.
    fn login_client(&self) -> &Client {
        self.login_client.as_ref().unwrap_or(&self.kv_client)
    }

    fn install(&mut self, state: TokenState) {
        self.kv_client.set_token(&state.value);
        if let Some(client) = &mut self.login_client {
            client.set_token(&state.value);
        }
        self.token = Some(state);
    }
}

/// The current token and when to renew it.
struct TokenState {
    value: Zeroizing<String>,
    /// Origin of a static token, such as `environment variable VAULT_TOKEN`.
    origin: String,
    renewable: bool,
    /// TTL when the token was issued, to notice a renewal capped by the max TTL.
    issued_ttl: Option<Duration>,
    renew_at: Option<Instant>,
}

/// The secret as read, before the field is taken out.
struct Fetched {
    data: Value,
    version: Option<u64>,
}

/// Failure of a read.
enum ReadError {
    /// Vault responded 403, because the token expired or the policy does not allow the read.
    Forbidden,
    /// Any other failure, already classified.
    Failed(SourceError),
}

impl From<SourceError> for ReadError {
    fn from(error: SourceError) -> ReadError {
        ReadError::Failed(error)
    }
}

/// Returns the point at two thirds of `ttl` from now.
fn renewal_point(ttl: Duration) -> Instant {
    Instant::now() + ttl * 2 / 3
}

impl VaultSource {
    /// Resolves the key: gets or renews the token, reads the secret, and after a 403 with a
    /// token that was not just obtained, gets a new token once and reads again.
    pub(super) async fn resolve_with(
        &self,
        session: &mut Session,
    ) -> Result<Resolved, SourceError> {
        let fresh = self.prepare_token(session).await?;

        match self.read_secret(session).await {
            Ok(resolved) => return Ok(resolved),
            Err(ReadError::Failed(error)) => return Err(error),
            Err(ReadError::Forbidden) => {}
        }

        if !fresh && self.replace_token_after_denial(session).await? {
            match self.read_secret(session).await {
                Ok(resolved) => return Ok(resolved),
                Err(ReadError::Failed(error)) => return Err(error),
                Err(ReadError::Forbidden) => {}
            }
        }
        Err(self.forbidden_error(session).await)
    }

    /// Makes sure a usable token is installed. Returns whether a new token was obtained.
    async fn prepare_token(&self, session: &mut Session) -> Result<bool, SourceError> {
        let Some(state) = &session.token else {
            self.obtain_token(session).await?;
            return Ok(true);
        };
        match state.renew_at {
            Some(at) if Instant::now() >= at => self.renew_token(session).await,
            _ => Ok(false),
        }
    }

    /// Logs in or reads the static token, then reads its TTL with `lookup-self`.
    async fn obtain_token(&self, session: &mut Session) -> Result<(), SourceError> {
        let (value, origin, login_lease) = if self.auth.is_login() {
            let (value, lease) = self.login(session).await?;
            (value, self.auth.describe(), Some(lease))
        } else {
            let (value, origin) = self.read_static_token().await?;
            (value, origin, None)
        };
        session.install(TokenState {
            value,
            origin,
            renewable: false,
            issued_ttl: None,
            renew_at: None,
        });

        let lookup = vaultrs::token::lookup_self(session.login_client().vault()).await;
        let (ttl, renewable) = match lookup {
            Ok(mut info) => {
                // Security: the lookup response repeats the token in `id`.
                info.id.zeroize();
                (info.ttl, info.renewable.unwrap_or(false))
            }
            Err(error) => {
                let failure = Failure::from_client_error(&error);
                if failure.is_transient() {
                    return Err(self.request_error(&failure, "looking up the token"));
                }
                tracing::debug!(
                    source = %self.label,
                    failure = %failure.describe(),
                    "token lookup-self failed; the token's TTL is unknown"
                );
                login_lease.unwrap_or((0, false))
            }
        };

        let ttl = (ttl > 0).then(|| Duration::from_secs(ttl));
        let Some(state) = session.token.as_mut() else {
            return Ok(());
        };
        state.renewable = renewable;
        state.issued_ttl = ttl;
        state.renew_at = ttl
            .filter(|_| renewable || self.auth.is_login())
            .map(renewal_point);
        tracing::debug!(
            source = %self.label,
            ttl_secs = ttl.map(|ttl| ttl.as_secs()),
            renewable,
            "Vault token ready"
        );
        Ok(())
    }

    /// Renews the token at two thirds of its TTL. A login method logs in again when the token
    /// is not renewable, the renewal fails, or the max TTL cuts the renewed TTL below half the
    /// issued TTL. Returns whether a new token was obtained.
    async fn renew_token(&self, session: &mut Session) -> Result<bool, SourceError> {
        let renewable = session.token.as_ref().is_some_and(|state| state.renewable);
        if renewable {
            match vaultrs::token::renew_self(session.login_client().vault(), None).await {
                Ok(mut info) => {
                    // Security: the renewal response repeats the token.
                    info.client_token.zeroize();
                    let ttl = Duration::from_secs(info.lease_duration);
                    let Some(state) = session.token.as_mut() else {
                        return Ok(false);
                    };
                    let capped = state.issued_ttl.is_some_and(|issued| ttl < issued / 2);
                    if !(capped && self.auth.is_login()) {
                        state.renew_at = (!ttl.is_zero()).then(|| renewal_point(ttl));
                        tracing::debug!(
                            source = %self.label,
                            ttl_secs = ttl.as_secs(),
                            "renewed the Vault token"
                        );
                        return Ok(false);
                    }
                    tracing::debug!(
                        source = %self.label,
                        ttl_secs = ttl.as_secs(),
                        "the token's max TTL is near; logging in again"
                    );
                }
                Err(error) => {
                    let failure = Failure::from_client_error(&error);
                    if failure.is_transient() {
                        return Err(self.request_error(&failure, "renewing the token"));
                    }
                    tracing::debug!(
                        source = %self.label,
                        failure = %failure.describe(),
                        "Vault token renewal failed"
                    );
                }
            }
        }

        if self.auth.is_login() {
            self.obtain_token(session).await?;
            return Ok(true);
        }
        if let Some(state) = session.token.as_mut() {
            state.renew_at = None;
        }
        Ok(false)
    }

    /// Replaces the token after a 403 with a token that was not just obtained. A login method
    /// logs in again. A static token is read again from its source and replaced if it changed.
    /// Returns whether the token was replaced.
    async fn replace_token_after_denial(&self, session: &mut Session) -> Result<bool, SourceError> {
        if self.auth.is_login() {
            tracing::info!(
                source = %self.label,
                "Vault denied the read; the token may have expired, logging in again"
            );
            self.obtain_token(session).await?;
            return Ok(true);
        }

        let (value, origin) = self.read_static_token().await?;
        let changed = session
            .token
            .as_ref()
            .is_none_or(|state| state.value.as_str() != value.as_str());
        if !changed {
            return Ok(false);
        }
        tracing::info!(
            source = %self.label,
            token_source = %origin,
            "the Vault token changed at its source; retrying with the new token"
        );
        drop(value);
        self.obtain_token(session).await?;
        Ok(true)
    }

    /// Classifies a 403 that remains: an expired or revoked static token, or a policy that does
    /// not allow the read.
    async fn forbidden_error(&self, session: &mut Session) -> SourceError {
        if !self.auth.is_login() {
            let lookup = vaultrs::token::lookup_self(session.login_client().vault()).await;
            let token_rejected = match lookup {
                Ok(mut info) => {
                    info.id.zeroize();
                    false
                }
                Err(error) => Failure::from_client_error(&error).is_forbidden(),
            };
            if token_rejected {
                let origin = session
                    .token
                    .as_ref()
                    .map_or_else(|| self.auth.describe(), |state| state.origin.clone());
                return SourceError::denied(
                    &self.label,
                    format!(
                        "{} rejected the token from {origin}: it has expired or was revoked \
                         (auth/token/lookup-self was denied too); get a new token, such as \
                         with `bao login` or `vault login`, or use a login method (AppRole, \
                         Kubernetes, JWT) so the source can log in again",
                        self.location()
                    ),
                );
            }
        }

        let policy = match session.kv_version.or(self.kv_configured) {
            Some(KvVersion::V2) => format!(
                "path \"{}\" {{ capabilities = [\"read\"] }}; KV v2 policies name the API path \
                 with data/, not {}/{}",
                KvVersion::V2.api_path(&self.mount, &self.path),
                self.mount,
                self.path
            ),
            Some(KvVersion::V1) => format!(
                "path \"{}\" {{ capabilities = [\"read\"] }}; if the mount is KV v2, set \
                 kv_version = 2 and grant \"{}\" instead",
                KvVersion::V1.api_path(&self.mount, &self.path),
                KvVersion::V2.api_path(&self.mount, &self.path)
            ),
            None => format!(
                "path \"{}\" {{ capabilities = [\"read\"] }} for KV v2 (or \"{}\" for KV v1)",
                KvVersion::V2.api_path(&self.mount, &self.path),
                KvVersion::V1.api_path(&self.mount, &self.path)
            ),
        };
        SourceError::denied(
            &self.label,
            format!(
                "permission denied reading mount {}, path {} from {} with the {}; the token's \
                 policy needs {policy}. Vault also answers 403 for a mount or path outside the \
                 token's policy, so check mount and path first",
                self.mount,
                self.path,
                self.location(),
                self.auth.describe()
            ),
        )
    }

    /// Logs in with the configured method. Returns the token and the lease (TTL, renewable)
    /// from the login response.
    async fn login(
        &self,
        session: &Session,
    ) -> Result<(Zeroizing<String>, (u64, bool)), SourceError> {
        let client = session.login_client().vault();
        let result = match &self.auth {
            VaultAuth::AppRole {
                mount,
                role_id,
                secret_id,
            } => {
                let secret = self.read_login_secret(
                    secret_id.read(&self.environment).await,
                    &secret_id.describe(),
                )?;
                vaultrs::auth::approle::login(client, mount, role_id, &secret).await
            }
            VaultAuth::Kubernetes {
                mount,
                role,
                token_file,
            } => {
                let location = format!("file {}", token_file.display());
                let jwt = super::auth::SecretRef::File(token_file.clone())
                    .read(&self.environment)
                    .await;
                let jwt = self.read_login_secret(jwt, &location)?;
                vaultrs::auth::kubernetes::login(client, mount, role, &jwt).await
            }
            VaultAuth::Jwt {
                mount,
                role,
                token_file,
            } => {
                let location = format!("file {}", token_file.display());
                let jwt = super::auth::SecretRef::File(token_file.clone())
                    .read(&self.environment)
                    .await;
                let jwt = self.read_login_secret(jwt, &location)?;
                vaultrs::auth::oidc::login(client, mount, &jwt, Some(role.clone())).await
            }
            VaultAuth::Token { .. } => {
                return Err(SourceError::misconfigured(
                    &self.label,
                    "a static Vault token cannot log in; this is a bug in megallm-auth",
                ));
            }
        };

        match result {
            Ok(mut info) => {
                let token = Zeroizing::new(std::mem::take(&mut info.client_token));
                tracing::info!(
                    source = %self.label,
                    method = %self.auth.describe(),
                    namespace = self.login_namespace.as_deref().unwrap_or(""),
                    "logged in to Vault"
                );
                Ok((token, (info.lease_duration, info.renewable)))
            }
            Err(error) => Err(self.login_error(&Failure::from_client_error(&error))),
        }
    }

    fn read_login_secret(
        &self,
        read: Result<Option<Zeroizing<String>>, SecretReadError>,
        location: &str,
    ) -> Result<Zeroizing<String>, SourceError> {
        match read {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(SourceError::misconfigured(
                &self.label,
                format!(
                    "the {} needs a credential, but {location} is missing or empty",
                    self.auth.describe()
                ),
            )),
            Err(SecretReadError::PermissionDenied(message)) => {
                Err(SourceError::denied(&self.label, message))
            }
            Err(SecretReadError::Invalid(message)) => {
                Err(SourceError::misconfigured(&self.label, message))
            }
        }
    }

    fn login_error(&self, failure: &Failure) -> SourceError {
        let location = match &self.login_namespace {
            Some(namespace) => format!("Vault at {}, namespace {namespace}", self.address),
            None => format!("Vault at {} (no namespace)", self.address),
        };
        let method = self.auth.describe();
        if failure.is_transient() {
            return SourceError::unavailable(
                &self.label,
                format!("{method} failed at {location}: {}", failure.describe()),
            );
        }
        match failure {
            Failure::Status { no_route: true, .. } | Failure::Status { code: 404, .. } => {
                SourceError::misconfigured(
                    &self.label,
                    format!(
                        "{location} has no such auth method for the {method}; enable it or fix \
                         the auth mount and login namespace"
                    ),
                )
            }
            Failure::Status { code, .. } if (400..500).contains(code) => SourceError::denied(
                &self.label,
                format!(
                    "{location} rejected the {method} (HTTP {code}); check the role, {}, and \
                     that the auth method is enabled in the login namespace",
                    self.auth.credential_location()
                ),
            ),
            _ => SourceError::misconfigured(
                &self.label,
                format!("{method} failed at {location}: {}", failure.describe()),
            ),
        }
    }

    /// Reads the static token from the first location that has one.
    async fn read_static_token(&self) -> Result<(Zeroizing<String>, String), SourceError> {
        for candidate in self.auth.token_candidates(&self.environment) {
            match candidate.read(&self.environment).await {
                Ok(Some(value)) => return Ok((value, candidate.describe())),
                Ok(None) => {}
                Err(SecretReadError::PermissionDenied(message)) => {
                    return Err(SourceError::denied(&self.label, message));
                }
                Err(SecretReadError::Invalid(message)) => {
                    return Err(SourceError::misconfigured(&self.label, message));
                }
            }
        }
        Err(SourceError::misconfigured(
            &self.label,
            format!(
                "no Vault token: the {} is missing or empty; set VAULT_TOKEN, write the token \
                 file, or configure a login method (AppRole, Kubernetes, JWT)",
                self.auth.describe()
            ),
        ))
    }

    /// Reads the secret with the known, configured, detected or probed KV version.
    async fn read_secret(&self, session: &mut Session) -> Result<Resolved, ReadError> {
        let version = match session.kv_version {
            Some(version) => Some(version),
            None => self.detect_version(session).await?,
        };

        let Some(version) = version else {
            return self.probe_versions(session).await;
        };
        match self.fetch(session, version).await {
            Ok(fetched) => self.take_key(fetched),
            Err(failure) if failure.is_forbidden() => Err(ReadError::Forbidden),
            Err(failure) if failure.is_not_found() || failure == Failure::Empty => {
                Err(self.not_found(session, version, &failure).await.into())
            }
            Err(failure) => Err(self.request_error(&failure, "reading the secret").into()),
        }
    }

    /// Reads the mount's KV version from `sys/mounts`. Returns `None` when the token may not
    /// read it.
    async fn detect_version(&self, session: &mut Session) -> Result<Option<KvVersion>, ReadError> {
        if session.mounts_checked {
            return Ok(None);
        }
        session.mounts_checked = true;

        let mounts = match vaultrs::sys::mount::list(session.kv_client.vault()).await {
            Ok(mounts) => mounts,
            Err(error) => {
                let failure = Failure::from_client_error(&error);
                if failure.is_transient() {
                    return Err(self.request_error(&failure, "listing mounts").into());
                }
                tracing::debug!(
                    source = %self.label,
                    failure = %failure.describe(),
                    "cannot read sys/mounts; trying KV v2, then v1"
                );
                return Ok(None);
            }
        };

        let Some(mount) = mounts.get(&format!("{}/", self.mount)) else {
            return Err(self
                .missing(format!(
                    "no mount {}/ in {}; check the mount and namespace, or enable it with \
                     `bao secrets enable -path={} kv-v2`",
                    self.mount,
                    self.location(),
                    self.mount
                ))
                .into());
        };
        if mount.mount_type != "kv" && mount.mount_type != "generic" {
            return Err(SourceError::misconfigured(
                &self.label,
                format!(
                    "the mount {}/ in {} is a {} engine, not a KV secrets engine",
                    self.mount,
                    self.location(),
                    mount.mount_type
                ),
            )
            .into());
        }

        let is_v2 = mount
            .options
            .as_ref()
            .and_then(|options| options.get("version"))
            .is_some_and(|version| version == "2");
        let version = if is_v2 { KvVersion::V2 } else { KvVersion::V1 };
        tracing::debug!(source = %self.label, kv_version = %version, "detected the KV version");
        session.kv_version = Some(version);
        Ok(Some(version))
    }

    /// Tries KV v2, then KV v1, and remembers the version that returned the secret.
    async fn probe_versions(&self, session: &mut Session) -> Result<Resolved, ReadError> {
        let v2 = self.fetch(session, KvVersion::V2).await;
        let v2_failure = match v2 {
            Ok(fetched) => {
                session.kv_version = Some(KvVersion::V2);
                return self.take_key(fetched);
            }
            Err(failure) if failure.is_transient() => {
                return Err(self.request_error(&failure, "reading the secret").into());
            }
            Err(failure) => failure,
        };

        let v1_failure = match self.fetch(session, KvVersion::V1).await {
            Ok(fetched) => {
                session.kv_version = Some(KvVersion::V1);
                return self.take_key(fetched);
            }
            Err(failure) if failure.is_transient() => {
                return Err(self.request_error(&failure, "reading the secret").into());
            }
            Err(failure) => failure,
        };

        if v2_failure.is_forbidden() && v1_failure.is_forbidden() {
            return Err(ReadError::Forbidden);
        }
        // One layout returned 404 and the other 403. The token may read where the secret
        // would be in one layout, and it is not there. Reporting "denied" would point at a
        // policy that is already right.
        if v2_failure.is_forbidden() || v1_failure.is_forbidden() {
            let (missing, denied) = if v2_failure.is_forbidden() {
                (KvVersion::V1, KvVersion::V2)
            } else {
                (KvVersion::V2, KvVersion::V1)
            };
            return Err(self
                .missing(format!(
                    "no secret at {} (KV v{missing}) in {}, and the token may not read {} (KV \
                     v{denied}); check the path, and set kv_version = {missing} to skip the \
                     other layout",
                    missing.api_path(&self.mount, &self.path),
                    self.location(),
                    denied.api_path(&self.mount, &self.path),
                ))
                .into());
        }
        let no_route = matches!(v2_failure, Failure::Status { no_route: true, .. });
        let message = if no_route {
            self.no_mount_message()
        } else {
            format!(
                "no secret at {} (KV v2) or {} (KV v1) in {}; write it with `bao kv put \
                 -mount={} {} {}=...`",
                KvVersion::V2.api_path(&self.mount, &self.path),
                KvVersion::V1.api_path(&self.mount, &self.path),
                self.location(),
                self.mount,
                self.path,
                self.field
            )
        };
        Err(self.missing(message).into())
    }

    /// Classifies a 404: no mount, a KV version mismatch, or no secret.
    async fn not_found(
        &self,
        session: &Session,
        version: KvVersion,
        failure: &Failure,
    ) -> SourceError {
        if matches!(failure, Failure::Status { no_route: true, .. }) {
            return self.missing(self.no_mount_message());
        }

        if self.kv_configured == Some(version) {
            let other = version.other();
            if let Ok(mut fetched) = self.fetch(session, other).await {
                wipe(&mut fetched.data);
                return self.missing(format!(
                    "no secret at {} in {}, but the mount {}/ is KV v{other} and the source is \
                     set to KV v{version}; set kv_version = {other}, or leave it unset to detect \
                     it",
                    version.api_path(&self.mount, &self.path),
                    self.location(),
                    self.mount
                ));
            }
        }

        let deleted = if version == KvVersion::V2 {
            " (or its latest version is deleted)"
        } else {
            ""
        };
        self.missing(format!(
            "no secret at {}{deleted} in {}; write it with `bao kv put -mount={} {} {}=...`",
            version.api_path(&self.mount, &self.path),
            self.location(),
            self.mount,
            self.path,
            self.field
        ))
    }

    fn no_mount_message(&self) -> String {
        format!(
            "no mount {}/ in {}; check the mount and namespace, or enable it with `bao secrets \
             enable -path={} kv-v2`",
            self.mount,
            self.location(),
            self.mount
        )
    }

    /// Builds the error for a missing secret: not found, or misconfigured when the source is
    /// required.
    fn missing(&self, message: String) -> SourceError {
        if self.required {
            SourceError::new(
                SourceErrorKind::Misconfigured,
                &self.label,
                format!("{message} (the source is required)"),
            )
        } else {
            SourceError::not_found(&self.label, message)
        }
    }

    fn request_error(&self, failure: &Failure, action: &str) -> SourceError {
        let message = format!(
            "{action} failed at {}: {}",
            self.location(),
            failure.describe()
        );
        if failure.is_transient() {
            SourceError::unavailable(&self.label, message)
        } else {
            SourceError::misconfigured(&self.label, message)
        }
    }

    async fn fetch(&self, session: &Session, version: KvVersion) -> Result<Fetched, Failure> {
        let client = session.kv_client.vault();
        match version {
            KvVersion::V2 => {
                let endpoint = ReadSecretRequest::builder()
                    .mount(self.mount.as_str())
                    .path(self.path.as_str())
                    .build()
                    .map_err(|_| Failure::Unexpected)?;
                let response = vaultrs::api::exec_with_result(client, endpoint)
                    .await
                    .map_err(|error| Failure::from_client_error(&error))?;
                Ok(Fetched {
                    data: response.data,
                    version: Some(response.metadata.version),
                })
            }
            KvVersion::V1 => {
                let response = vaultrs::kv1::get_raw(client, &self.mount, &self.path)
                    .await
                    .map_err(|error| Failure::from_client_error(&error))?;
                Ok(Fetched {
                    data: response.data,
                    version: None,
                })
            }
        }
    }

    /// Takes the field out of the secret, wipes the rest, and checks the key.
    fn take_key(&self, fetched: Fetched) -> Result<Resolved, ReadError> {
        let Fetched { mut data, version } = fetched;
        let value = take_field(&mut data, &self.field);
        wipe(&mut data);

        let value = value.map_err(|problem| SourceError::misconfigured(&self.label, problem))?;
        let key = ApiKey::parse(&value, &self.label, self.policy).map_err(SourceError::from)?;
        drop(value);

        tracing::debug!(
            source = %self.label,
            fingerprint = %key.fingerprint(),
            version,
            "read the key from Vault"
        );
        let resolved = Resolved::new(key, &self.label, SourceKind::Vault);
        Ok(match version {
            Some(version) => resolved.with_version(version.to_string()),
            None => resolved,
        })
    }
}

/// Removes `field` from the secret's data. The error names the fields present, never a value.
fn take_field(data: &mut Value, field: &str) -> Result<Zeroizing<String>, String> {
    let Value::Object(map) = data else {
        return Err("the secret's data is not a JSON object".to_owned());
    };
    match map.remove(field) {
        Some(Value::String(value)) => Ok(Zeroizing::new(value)),
        Some(mut other) => {
            let kind = match &other {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::Array(_) => "an array",
                Value::Object(_) => "an object",
                Value::String(_) => "a string",
            };
            wipe(&mut other);
            Err(format!(
                "the secret's field {field:?} is {kind}; it must be a string"
            ))
        }
        None => {
            let mut names = map
                .keys()
                .take(20)
                .map(|name| format!("{name:?}"))
                .collect::<Vec<_>>();
            names.sort();
            let present = if names.is_empty() {
                "the secret has no fields".to_owned()
            } else {
                format!("fields present: {}", names.join(", "))
            };
            Err(format!(
                "the secret has no field {field:?} ({present}); set field to the one that holds \
                 the key"
            ))
        }
    }
}

/// Wipes every string in a JSON value.
fn wipe(value: &mut Value) {
    match value {
        Value::String(text) => text.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(wipe),
        Value::Object(map) => map.values_mut().for_each(wipe),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_field_returns_string() {
        let mut data = serde_json::json!({"api_key": "sk-mega-TESTUNIT", "other": "x"});
        let value = take_field(&mut data, "api_key").unwrap();
        assert_eq!(value.as_str(), "sk-mega-TESTUNIT");
    }

    #[test]
    fn take_field_lists_names_not_values() {
        let mut data = serde_json::json!({"key": "sk-mega-TESTUNIT", "note": "n"});
        let message = take_field(&mut data, "api_key").unwrap_err();
        assert!(message.contains("\"key\", \"note\""), "{message}");
        assert!(!message.contains("sk-mega"), "{message}");
    }

    #[test]
    fn take_field_rejects_non_string() {
        let mut data = serde_json::json!({"api_key": 42});
        let message = take_field(&mut data, "api_key").unwrap_err();
        assert!(message.contains("a number"), "{message}");
    }

    #[test]
    fn wipe_clears_nested_strings() {
        let mut data = serde_json::json!({"a": ["secret"], "b": {"c": "secret"}});
        wipe(&mut data);
        assert_eq!(data, serde_json::json!({"a": [""], "b": {"c": ""}}));
    }
}
