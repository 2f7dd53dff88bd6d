//! A tower [`Layer`] that authenticates every request with the key of a [`KeyProvider`] and
//! handles 401, 403 and 429 as MegaLLM documents (see the [`http`](crate::http) module).
//!
//! ```
//! # fn main() -> Result<(), megallm_auth::Error> {
//! use megallm_auth::http::tower::MegaLlmAuthLayer;
//! use megallm_auth::{KeyChain, KeyProvider, StaticSource};
//! use tower::Layer;
//!
//! let chain = KeyChain::new().with(StaticSource::new("sk-mega-TESTDOC00000000").unwrap());
//! let provider = KeyProvider::builder(chain).build()?;
//! let layer = MegaLlmAuthLayer::new(provider, "https://ai.megallm.io/v1")?;
//! # let inner = tower::service_fn(|_: http::Request<String>| async {
//! #     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
//! # });
//! let service = layer.layer(inner);
//! # let _ = service;
//! # Ok(())
//! # }
//! ```
//!
//! The service's error is [`BoxError`]; errors of this crate downcast to [`Error`]. Requests
//! are retried only when their body implements [`CloneBody`] and returns a clone. The layer
//! does not follow redirects: it adds credentials only to requests for the base URL's origin
//! (and to requests with a relative URI), so a redirect follower placed inside it can never send
//! the key elsewhere.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use tower::{Layer, Service};

use super::retry::RetryPolicy;
use super::{GatewayError, Origin, check_base_url};
use crate::error::Error;
use crate::headers::{X_API_KEY, X_DEBUG_AUTH};
use crate::provider::{KeyProvider, KeySnapshot};

/// The error type of tower services: any error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body that may be cloned to send a request again.
///
/// Return `None` for a body that cannot be replayed, such as a stream: the request is then not
/// retried and the caller gets the gateway's error instead.
pub trait CloneBody: Sized {
    /// Returns a copy of the body, or `None` when it cannot be copied.
    fn clone_body(&self) -> Option<Self>;
}

macro_rules! clone_body_by_clone {
    ($($body:ty),* $(,)?) => {
        $(impl CloneBody for $body {
            fn clone_body(&self) -> Option<Self> {
                Some(self.clone())
            }
        })*
    };
}

clone_body_by_clone!((), String, Vec<u8>, Bytes, &'static str, &'static [u8]);

impl<D: bytes::Buf + Clone> CloneBody for http_body_util::Full<D> {
    fn clone_body(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl<D> CloneBody for http_body_util::Empty<D> {
    fn clone_body(&self) -> Option<Self> {
        Some(http_body_util::Empty::new())
    }
}

/// Applies [`MegaLlmAuthService`] to a service.
#[derive(Clone, Debug)]
pub struct MegaLlmAuthLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    provider: KeyProvider,
    origin: Origin,
    policy: RetryPolicy,
}

impl MegaLlmAuthLayer {
    /// Creates the layer for requests to `base_url`'s origin.
    ///
    /// # Errors
    ///
    /// [`Error::Client`] when `base_url` is not https (or http to a loopback host).
    pub fn new(provider: KeyProvider, base_url: &str) -> Result<MegaLlmAuthLayer, Error> {
        MegaLlmAuthLayer::with_policy(provider, base_url, RetryPolicy::default())
    }

    /// Creates the layer with a 429 retry policy.
    ///
    /// # Errors
    ///
    /// [`Error::Client`] when `base_url` is not https (or http to a loopback host).
    pub fn with_policy(
        provider: KeyProvider,
        base_url: &str,
        policy: RetryPolicy,
    ) -> Result<MegaLlmAuthLayer, Error> {
        let uri = check_base_url(base_url)?;
        let origin = Origin::of(&uri).expect("check_base_url accepts only absolute URLs");
        Ok(MegaLlmAuthLayer {
            shared: Arc::new(Shared {
                provider,
                origin,
                policy,
            }),
        })
    }
}

impl<S> Layer<S> for MegaLlmAuthLayer {
    type Service = MegaLlmAuthService<S>;

    fn layer(&self, inner: S) -> MegaLlmAuthService<S> {
        MegaLlmAuthService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// Adds the provider's current headers to each request to the gateway and handles the
/// gateway's 401, 403 and 429 responses.
#[derive(Clone, Debug)]
pub struct MegaLlmAuthService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, B, ResBody> Service<Request<B>> for MegaLlmAuthService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: CloneBody + Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResBody>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The service that was polled ready handles the first attempt; its clone waits for
        // the next call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(send_with_key(inner, shared, request))
    }
}

fn clone_request<B: CloneBody>(request: &Request<B>) -> Option<Request<B>> {
    let body = request.body().clone_body()?;
    let mut copy = Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    *copy.extensions_mut() = request.extensions().clone();
    Some(copy)
}

async fn send_with_key<S, B, ResBody>(
    mut inner: S,
    shared: Arc<Shared>,
    request: Request<B>,
) -> Result<Response<ResBody>, BoxError>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Send,
    S::Error: Into<BoxError>,
    B: CloneBody,
{
    let to_gateway = Origin::of(request.uri()).is_none_or(|origin| origin == shared.origin);
    if !to_gateway {
        // Security: credentials go only to the gateway's origin.
        let mut request = request;
        request.headers_mut().remove(http::header::AUTHORIZATION);
        request.headers_mut().remove(X_API_KEY);
        request.headers_mut().remove(X_DEBUG_AUTH);
        return inner.call(request).await.map_err(Into::into);
    }

    let mut request = request;
    let mut snapshot: Arc<KeySnapshot> = shared.provider.current().await?;
    let mut unauthorized_retried = false;
    let mut rate_limit_retries = 0u32;
    let mut first = true;

    loop {
        snapshot.apply(request.headers_mut());
        let spare = clone_request(&request);
        if !first {
            std::future::poll_fn(|cx| inner.poll_ready(cx))
                .await
                .map_err(Into::into)?;
        }
        first = false;
        let response = inner.call(request).await.map_err(Into::into)?;

        match response.status() {
            StatusCode::UNAUTHORIZED => {
                let unauthorized = |retried| GatewayError::Unauthorized {
                    source_label: snapshot.label().to_owned(),
                    fingerprint: snapshot.fingerprint().clone(),
                    retried,
                };
                if unauthorized_retried {
                    return Err(Error::from(unauthorized(true)).into());
                }
                let Some(spare) = spare else {
                    tracing::warn!(
                        fingerprint = %snapshot.fingerprint(),
                        "401 from MegaLLM; the request body cannot be cloned, so it is not retried"
                    );
                    return Err(Error::from(unauthorized(false)).into());
                };
                match shared.provider.invalidate(snapshot.fingerprint()).await {
                    Ok(fresh) if fresh.fingerprint() != snapshot.fingerprint() => {
                        tracing::info!(
                            old_fingerprint = %snapshot.fingerprint(),
                            new_fingerprint = %fresh.fingerprint(),
                            "401 from MegaLLM; retrying once with the re-resolved key"
                        );
                        snapshot = fresh;
                        unauthorized_retried = true;
                        request = spare;
                    }
                    Ok(_) => return Err(Error::from(unauthorized(false)).into()),
                    Err(error) => {
                        tracing::warn!(error = %error, "re-resolving the MegaLLM API key after a 401 failed");
                        return Err(Error::from(unauthorized(false)).into());
                    }
                }
            }
            StatusCode::FORBIDDEN => {
                return Err(Error::from(GatewayError::Forbidden {
                    source_label: snapshot.label().to_owned(),
                    fingerprint: snapshot.fingerprint().clone(),
                })
                .into());
            }
            StatusCode::TOO_MANY_REQUESTS => {
                let (delay, next) = shared
                    .policy
                    .after_rate_limit(response.headers(), rate_limit_retries, spare)
                    .map_err(|error| BoxError::from(Error::from(error)))?;
                drop(response);
                shared.policy.sleep(delay).await;
                rate_limit_retries += 1;
                request = next;
            }
            _ => return Ok(response),
        }
    }
}
