//! A reqwest-middleware [`Middleware`] that authenticates every request with the key of a
//! [`KeyProvider`], and [`MegaLlmClient`], a ready client with it.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use megallm_auth::http::reqwest::MegaLlmClient;
//! use megallm_auth::{KeyChain, KeyProvider, StaticSource};
//!
//! let chain = KeyChain::new().with(StaticSource::new("sk-mega-TESTDOC00000000")?);
//! let provider = KeyProvider::builder(chain).build()?;
//! let client = MegaLlmClient::builder(provider)
//!     .timeout(std::time::Duration::from_secs(60))
//!     .build()?;
//! let response = client.get("models").send().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Redirects: the middleware follows them itself, so that it decides which headers go where.
//! Give it a client built with `redirect(reqwest::redirect::Policy::none())`, as
//! [`MegaLlmClient`] does: reqwest's own redirect handling drops `Authorization` on a
//! cross-origin redirect but forwards `x-api-key`.

use std::time::Duration;

use ::reqwest::header::{
    AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, LOCATION,
    PROXY_AUTHORIZATION, TRANSFER_ENCODING,
};
use ::reqwest::{Method, Request, Response, StatusCode, Url};
use async_trait::async_trait;
use http::Extensions;
use reqwest_middleware::{ClientWithMiddleware, Middleware, Next, RequestBuilder};

use super::retry::RetryPolicy;
use super::{GatewayError, Origin, check_base_url};
use crate::environment::Environment;
use crate::error::Error;
use crate::headers::{ANTHROPIC_VERSION, X_API_KEY, X_DEBUG_AUTH};
use crate::provider::{KeyProvider, KeySnapshot};
use crate::settings::Settings;

/// Default number of redirects followed for one request.
pub const DEFAULT_MAX_REDIRECTS: usize = 10;

/// Adds the provider's current headers to every request to the gateway's origin and handles
/// 401, 403 and 429 as MegaLLM documents (see the [`http`](crate::http) module).
///
/// Requests to any other origin, including redirect targets, leave without credential headers.
/// Errors reach the caller as [`reqwest_middleware::Error::Middleware`] wrapping an
/// [`Error`]; [`megallm_error`] extracts it.
#[derive(Clone, Debug)]
pub struct MegaLlmAuth {
    provider: KeyProvider,
    origin: Origin,
    policy: RetryPolicy,
    max_redirects: usize,
}

impl MegaLlmAuth {
    /// Creates the middleware for requests to `base_url`'s origin.
    ///
    /// # Errors
    ///
    /// [`Error::Client`] when `base_url` is not https (or http to a loopback host).
    pub fn new(provider: KeyProvider, base_url: &str) -> Result<MegaLlmAuth, Error> {
        let uri = check_base_url(base_url)?;
        let origin = Origin::of(&uri).expect("check_base_url accepts only absolute URLs");
        Ok(MegaLlmAuth {
            provider,
            origin,
            policy: RetryPolicy::default(),
            max_redirects: DEFAULT_MAX_REDIRECTS,
        })
    }

    /// Sets the 429 retry policy.
    #[must_use]
    pub fn retry_policy(mut self, policy: RetryPolicy) -> MegaLlmAuth {
        self.policy = policy;
        self
    }

    /// Sets the number of redirects followed for one request; zero returns every redirect to
    /// the caller.
    #[must_use]
    pub fn max_redirects(mut self, redirects: usize) -> MegaLlmAuth {
        self.max_redirects = redirects;
        self
    }

    fn is_gateway(&self, url: &Url) -> bool {
        url.as_str()
            .parse::<http::Uri>()
            .ok()
            .and_then(|uri| Origin::of(&uri))
            .is_some_and(|origin| origin == self.origin)
    }
}

/// Returns the crate's error inside a middleware error, when there is one.
pub fn megallm_error(error: &reqwest_middleware::Error) -> Option<&Error> {
    match error {
        reqwest_middleware::Error::Middleware(inner) => inner.downcast_ref::<Error>(),
        _ => None,
    }
}

fn fail(error: impl Into<Error>) -> reqwest_middleware::Error {
    reqwest_middleware::Error::middleware(error.into())
}

/// Removes every header that authenticates a request.
fn strip_credentials(headers: &mut http::HeaderMap) {
    for name in [
        AUTHORIZATION,
        X_API_KEY,
        X_DEBUG_AUTH,
        PROXY_AUTHORIZATION,
        COOKIE,
    ] {
        headers.remove(name);
    }
    headers.remove(ANTHROPIC_VERSION);
}

#[async_trait]
impl Middleware for MegaLlmAuth {
    async fn handle(
        &self,
        request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let mut request = request;
        let mut snapshot: Option<std::sync::Arc<KeySnapshot>> = None;
        let mut unauthorized_retried = false;
        let mut rate_limit_retries = 0u32;
        let mut redirects = 0usize;

        loop {
            let to_gateway = self.is_gateway(request.url());
            if to_gateway {
                let current = match &snapshot {
                    Some(current) => current.clone(),
                    None => self.provider.current().await.map_err(fail)?,
                };
                current.apply(request.headers_mut());
                snapshot = Some(current);
            } else {
                // Security: credentials go only to the gateway's origin.
                strip_credentials(request.headers_mut());
            }

            let spare = request.try_clone();
            let url = request.url().clone();
            let method = request.method().clone();
            let response = next.clone().run(request, extensions).await?;
            let status = response.status();

            if status.is_redirection()
                && let Some(location) = response.headers().get(LOCATION)
            {
                if redirects >= self.max_redirects {
                    return Ok(response);
                }
                let Some(target) = location.to_str().ok().and_then(|text| url.join(text).ok())
                else {
                    return Ok(response);
                };
                let Some(follow) = redirect_request(status, &method, target, spare) else {
                    return Ok(response);
                };
                redirects += 1;
                tracing::debug!(
                    status = status.as_u16(),
                    same_origin = self.is_gateway(follow.url()),
                    "following a redirect from the MegaLLM gateway"
                );
                request = follow;
                continue;
            }

            let Some(current) = snapshot.clone().filter(|_| to_gateway) else {
                return Ok(response);
            };

            match status {
                StatusCode::UNAUTHORIZED => {
                    let unauthorized = |retried| GatewayError::Unauthorized {
                        source_label: current.label().to_owned(),
                        fingerprint: current.fingerprint().clone(),
                        retried,
                    };
                    if unauthorized_retried {
                        return Err(fail(unauthorized(true)));
                    }
                    let Some(spare) = spare else {
                        tracing::warn!(
                            fingerprint = %current.fingerprint(),
                            "401 from MegaLLM; the request body cannot be cloned, so it is not retried"
                        );
                        return Err(fail(unauthorized(false)));
                    };
                    match self.provider.invalidate(current.fingerprint()).await {
                        Ok(fresh) if fresh.fingerprint() != current.fingerprint() => {
                            tracing::info!(
                                old_fingerprint = %current.fingerprint(),
                                new_fingerprint = %fresh.fingerprint(),
                                "401 from MegaLLM; retrying once with the re-resolved key"
                            );
                            snapshot = Some(fresh);
                            unauthorized_retried = true;
                            request = spare;
                        }
                        Ok(_) => return Err(fail(unauthorized(false))),
                        Err(error) => {
                            tracing::warn!(error = %error, "re-resolving the MegaLLM API key after a 401 failed");
                            return Err(fail(unauthorized(false)));
                        }
                    }
                }
                StatusCode::FORBIDDEN => {
                    return Err(fail(GatewayError::Forbidden {
                        source_label: current.label().to_owned(),
                        fingerprint: current.fingerprint().clone(),
                    }));
                }
                StatusCode::TOO_MANY_REQUESTS => {
                    let (delay, next) = self
                        .policy
                        .after_rate_limit(response.headers(), rate_limit_retries, spare)
                        .map_err(fail)?;
                    drop(response);
                    self.policy.sleep(delay).await;
                    rate_limit_retries += 1;
                    request = next;
                }
                _ => return Ok(response),
            }
        }
    }
}

/// Builds the request that follows a redirect, or `None` when it cannot be followed (a body
/// that cannot be cloned for a 307 or 308).
fn redirect_request(
    status: StatusCode,
    method: &Method,
    target: Url,
    spare: Option<Request>,
) -> Option<Request> {
    let spare = spare?;
    let becomes_get = status == StatusCode::SEE_OTHER
        || (matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
            && *method == Method::POST);

    if becomes_get {
        let mut follow = Request::new(Method::GET, target);
        *follow.headers_mut() = spare.headers().clone();
        for name in [
            CONTENT_TYPE,
            CONTENT_LENGTH,
            CONTENT_ENCODING,
            TRANSFER_ENCODING,
        ] {
            follow.headers_mut().remove(name);
        }
        *follow.timeout_mut() = spare.timeout().copied();
        return Some(follow);
    }

    let mut follow = spare;
    *follow.url_mut() = target;
    Some(follow)
}

/// A reqwest client with [`MegaLlmAuth`], bound to one base URL.
#[derive(Clone, Debug)]
pub struct MegaLlmClient {
    client: ClientWithMiddleware,
    base_url: Url,
    provider: KeyProvider,
}

/// Builds a [`MegaLlmClient`]. Created by [`MegaLlmClient::builder`].
#[derive(Debug)]
pub struct MegaLlmClientBuilder {
    provider: KeyProvider,
    base_url: Option<String>,
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    policy: RetryPolicy,
    max_redirects: usize,
}

impl MegaLlmClient {
    /// Starts building a client that authenticates with `provider`.
    pub fn builder(provider: KeyProvider) -> MegaLlmClientBuilder {
        MegaLlmClientBuilder {
            provider,
            base_url: None,
            timeout: None,
            connect_timeout: None,
            policy: RetryPolicy::default(),
            max_redirects: DEFAULT_MAX_REDIRECTS,
        }
    }

    /// Builds a client from `settings`: their key chain (sources read `environment`), API
    /// style, `debug_auth`, `anthropic_version`, base URL and timeouts.
    ///
    /// # Errors
    ///
    /// [`Error::Settings`] for invalid source settings, and the errors of
    /// [`MegaLlmClientBuilder::build`].
    pub fn from_settings(
        settings: &Settings,
        environment: &Environment,
    ) -> Result<MegaLlmClient, Error> {
        let provider = KeyProvider::builder_from_settings(settings, environment)?.build()?;
        MegaLlmClient::builder(provider)
            .base_url(settings.base_url())
            .timeout(settings.timeout())
            .connect_timeout(settings.connect_timeout())
            .build()
    }

    /// Returns the client with the middleware, for requests to any path.
    pub fn client(&self) -> &ClientWithMiddleware {
        &self.client
    }

    /// Returns the base URL.
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// Returns the key provider.
    pub fn provider(&self) -> &KeyProvider {
        &self.provider
    }

    /// Returns `path` appended to the base URL: `chat/completions` under
    /// `https://ai.megallm.io/v1` is `https://ai.megallm.io/v1/chat/completions`.
    pub fn url(&self, path: &str) -> Url {
        let mut url = self.base_url.clone();
        let joined = format!(
            "{}/{}",
            url.path().trim_end_matches('/'),
            path.trim_start_matches('/')
        );
        url.set_path(&joined);
        url
    }

    /// Starts a GET request to `path` under the base URL.
    pub fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(self.url(path))
    }

    /// Starts a POST request to `path` under the base URL.
    pub fn post(&self, path: &str) -> RequestBuilder {
        self.client.post(self.url(path))
    }
}

impl MegaLlmClientBuilder {
    /// Sets the base URL. Default: the provider's style's default, `https://ai.megallm.io/v1`
    /// for OpenAI style and `https://ai.megallm.io` for Anthropic style.
    #[must_use]
    pub fn base_url(mut self, url: impl Into<String>) -> MegaLlmClientBuilder {
        self.base_url = Some(url.into());
        self
    }

    /// Sets the total timeout of each request, retries excluded. Default: none.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> MegaLlmClientBuilder {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the connect timeout. Default: none.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> MegaLlmClientBuilder {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Sets the 429 retry policy.
    #[must_use]
    pub fn retry_policy(mut self, policy: RetryPolicy) -> MegaLlmClientBuilder {
        self.policy = policy;
        self
    }

    /// Sets the number of redirects followed for one request.
    #[must_use]
    pub fn max_redirects(mut self, redirects: usize) -> MegaLlmClientBuilder {
        self.max_redirects = redirects;
        self
    }

    /// Builds the client. Redirects are followed by the middleware, not by reqwest.
    ///
    /// # Errors
    ///
    /// [`Error::Client`] when the base URL is not https (or http to a loopback host), or when
    /// reqwest rejects its settings.
    pub fn build(self) -> Result<MegaLlmClient, Error> {
        let base_url = self
            .base_url
            .unwrap_or_else(|| self.provider.style().default_base_url().to_owned());
        let middleware = MegaLlmAuth::new(self.provider.clone(), &base_url)?
            .retry_policy(self.policy)
            .max_redirects(self.max_redirects);
        let parsed = Url::parse(&base_url).map_err(|_| super::ClientError::InvalidBaseUrl {
            origin: String::from("(unparseable)"),
            reason: "not an absolute URL; use https://host/path",
        })?;

        let mut builder =
            ::reqwest::Client::builder().redirect(::reqwest::redirect::Policy::none());
        if let Some(timeout) = self.timeout {
            builder = builder.timeout(timeout);
        }
        if let Some(timeout) = self.connect_timeout {
            builder = builder.connect_timeout(timeout);
        }
        let client = builder
            .build()
            .map_err(|error| super::ClientError::Build(Box::new(error)))?;

        Ok(MegaLlmClient {
            client: reqwest_middleware::ClientBuilder::new(client)
                .with(middleware)
                .build(),
            base_url: parsed,
            provider: self.provider,
        })
    }
}
