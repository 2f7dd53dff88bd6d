//! [`MockGateway`]: a real HTTP server on 127.0.0.1 that responds like MegaLLM, for tests.
//!
//! The mock serves MegaLLM's two APIs on one port:
//!
//! | request | credential | success body |
//! |---|---|---|
//! | `POST /v1/chat/completions` | `Authorization: Bearer <key>` | OpenAI chat completion |
//! | `POST /v1/messages` | `x-api-key: <key>` and `anthropic-version` | Anthropic message |
//!
//! Each request is checked in this order, and the first failure decides the response:
//!
//! 1. A [`ScriptedResponse`] queued with [`MockGateway::push_response`] is served as it is.
//! 2. An unknown path gets 404, a known path with another method 405.
//! 3. A missing, unknown or revoked key gets 401 (MegaLLM: "Check if your API key is valid and
//!    not expired"). More than one value of the credential header gets 400.
//! 4. `/v1/messages` without `anthropic-version` gets 400.
//! 5. A body that is not a JSON object with a string `model` gets 400.
//! 6. A key without access to the model gets 403 (MegaLLM: "Verify API key has required
//!    access").
//! 7. Otherwise 200 with a fixed completion that echoes the model.
//!
//! Error bodies have the shape of the path's API: `{"type": "error", "error": {"type",
//! "message"}}` on `/v1/messages` and `{"error": {"message", "type", "param", "code"}}` on
//! every other path.
//!
//! MegaLLM's documentation says both APIs accept `Authorization: Bearer` and `x-api-key`. The
//! mock is stricter on purpose: each path reads only its own style's header and ignores the
//! other, so a client that sends the wrong style gets 401 in tests instead of passing by luck.
//!
//! With `X-Debug-Auth: true`, every body the two endpoints send, except a scripted one, gets a
//! `debug_auth` object. It names the header that carried the key, the key's [`Fingerprint`] and
//! the key's status (`valid`, `unknown`, `revoked`, `missing` or `duplicated`). It also lists
//! the credential headers of the other style that were ignored, and it never contains the key.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use megallm_auth::testing::{MockGateway, ScriptedResponse};
//!
//! let gateway = MockGateway::builder()
//!     .key("sk-mega-TESTKEY0000000000")
//!     .key_with_models("sk-mega-TESTLIMITED000000", &["gpt-4"])
//!     .start()
//!     .await?;
//! gateway.push_response(ScriptedResponse::rate_limited(Some("3")));
//!
//! // Point a client at gateway.openai_base_url() or gateway.base_url(), then assert on
//! // gateway.requests().
//! assert_eq!(gateway.request_count(), 0);
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::header::{
    AUTHORIZATION, CONTENT_TYPE, COOKIE, HeaderMap, HeaderName, HeaderValue, LOCATION,
    PROXY_AUTHORIZATION, RETRY_AFTER,
};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::headers::{ANTHROPIC_VERSION, X_API_KEY, X_DEBUG_AUTH};
use crate::key::Fingerprint;

const CHAT_COMPLETIONS_PATH: &str = "/v1/chat/completions";
const MESSAGES_PATH: &str = "/v1/messages";

/// Maximum request body the mock reads, in bytes. Larger bodies get 413.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Assistant text of every successful response.
const ANSWER_TEXT: &str = "Hello from the MegaLLM mock gateway.";

/// The mock stores each key only as its SHA-256 digest, so neither the mock nor its Debug
/// output contains the key's characters.
type KeyDigest = [u8; 32];

fn digest_of(key: &[u8]) -> KeyDigest {
    Sha256::digest(key).into()
}

/// Access of one key: the models it may use and its revocation flag.
#[derive(Clone, Debug)]
struct KeyAccess {
    /// `None` means every model.
    models: Option<BTreeSet<String>>,
    revoked: bool,
}

/// Builder of a [`MockGateway`], from [`MockGateway::builder`].
#[derive(Default)]
pub struct MockGatewayBuilder {
    keys: HashMap<KeyDigest, KeyAccess>,
}

impl MockGatewayBuilder {
    /// Accepts `key` for every model.
    #[must_use]
    pub fn key(mut self, key: &str) -> MockGatewayBuilder {
        self.keys.insert(
            digest_of(key.as_bytes()),
            KeyAccess {
                models: None,
                revoked: false,
            },
        );
        self
    }

    /// Accepts `key` for `models` only. A request for any other model gets 403.
    #[must_use]
    pub fn key_with_models(mut self, key: &str, models: &[&str]) -> MockGatewayBuilder {
        let models = models.iter().map(|model| (*model).to_owned()).collect();
        self.keys.insert(
            digest_of(key.as_bytes()),
            KeyAccess {
                models: Some(models),
                revoked: false,
            },
        );
        self
    }

    /// Binds 127.0.0.1 on a free port and starts serving on the current Tokio runtime.
    ///
    /// # Errors
    ///
    /// The [`io::Error`] of binding the listener or reading its address.
    pub async fn start(self) -> io::Result<MockGateway> {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;

        let shared = Arc::new(Shared {
            keys: Mutex::new(self.keys),
            scripted: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
            sequence: AtomicU64::new(0),
        });
        let router = Router::new()
            .fallback(handle_request)
            .with_state(Arc::clone(&shared));

        // Dropping the sender also resolves the receiver, so dropping the gateway stops it.
        let (stop_sender, stop_receiver) = oneshot::channel::<()>();
        let server = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = stop_receiver.await;
        });
        let task = tokio::spawn(async move { server.await });

        Ok(MockGateway {
            addr,
            shared,
            stop_sender: Some(stop_sender),
            task: Some(task),
        })
    }
}

impl fmt::Debug for MockGatewayBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockGatewayBuilder")
            .field("keys", &self.keys.len())
            .finish()
    }
}

struct Shared {
    keys: Mutex<HashMap<KeyDigest, KeyAccess>>,
    scripted: Mutex<VecDeque<ScriptedResponse>>,
    requests: Mutex<Vec<RecordedRequest>>,
    sequence: AtomicU64,
}

/// Locks `mutex`, taking the data even when a panicking test thread poisoned it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A MegaLLM-like HTTP server on 127.0.0.1 for tests. See the [module docs](self) for its endpoints
/// and responses.
///
/// Every method that changes keys or the response queue works while requests are in flight.
/// The server stops when the gateway is dropped or on [`MockGateway::shutdown`].
pub struct MockGateway {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop_sender: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl MockGateway {
    /// Starts building a gateway that accepts no key yet.
    pub fn builder() -> MockGatewayBuilder {
        MockGatewayBuilder::default()
    }

    /// Returns the address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns the Anthropic-style base URL, `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Returns the OpenAI-style base URL, `http://127.0.0.1:PORT/v1`.
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Returns the URL of `path` on this server, such as `url("/v1/messages")`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Accepts `key`: a revoked key gets its access back with its former model list, and a
    /// new key gets access to every model.
    pub fn allow_key(&self, key: &str) {
        lock(&self.shared.keys)
            .entry(digest_of(key.as_bytes()))
            .and_modify(|access| access.revoked = false)
            .or_insert(KeyAccess {
                models: None,
                revoked: false,
            });
    }

    /// Revokes `key`: requests with it get 401 until [`MockGateway::allow_key`].
    pub fn revoke_key(&self, key: &str) {
        lock(&self.shared.keys)
            .entry(digest_of(key.as_bytes()))
            .and_modify(|access| access.revoked = true)
            .or_insert(KeyAccess {
                models: None,
                revoked: true,
            });
    }

    /// Queues `response`. Queued responses are served in order, one per request on any path,
    /// before any other handling.
    pub fn push_response(&self, response: ScriptedResponse) {
        lock(&self.shared.scripted).push_back(response);
    }

    /// Returns how many queued responses have not been served yet.
    pub fn pending_responses(&self) -> usize {
        lock(&self.shared.scripted).len()
    }

    /// Returns a copy of every request received since the start or the last
    /// [`MockGateway::clear_requests`], oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Returns how many requests were received since the start or the last
    /// [`MockGateway::clear_requests`].
    pub fn request_count(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Stops accepting connections and waits until open connections have finished.
    ///
    /// # Errors
    ///
    /// An [`io::Error`] when the server task panicked or was cancelled.
    pub async fn shutdown(mut self) -> io::Result<()> {
        drop(self.stop_sender.take());
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for MockGateway {
    fn drop(&mut self) {
        // Dropping the sender starts the graceful shutdown. The task finishes on its own once
        // open connections close.
        drop(self.stop_sender.take());
    }
}

impl fmt::Debug for MockGateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockGateway")
            .field("addr", &self.addr)
            .field("keys", &lock(&self.shared.keys).len())
            .field("pending_responses", &self.pending_responses())
            .field("requests", &self.request_count())
            .finish()
    }
}

/// A response queued with [`MockGateway::push_response`] and served instead of the normal
/// handling of the next request.
#[derive(Clone, Debug)]
pub struct ScriptedResponse {
    /// Status code.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// Body. `None` means the error body of the request path's API style for a 4xx or 5xx
    /// status, and an empty body otherwise.
    pub body: Option<Bytes>,
}

impl ScriptedResponse {
    /// Creates a response with `status`, no headers and the default body.
    pub fn new(status: StatusCode) -> ScriptedResponse {
        ScriptedResponse {
            status,
            headers: HeaderMap::new(),
            body: None,
        }
    }

    /// Adds a header, keeping any earlier value of the same name.
    #[must_use]
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> ScriptedResponse {
        self.headers.append(name, value);
        self
    }

    /// Sets the body, sent exactly as given.
    #[must_use]
    pub fn with_body(mut self, body: impl Into<Bytes>) -> ScriptedResponse {
        self.body = Some(body.into());
        self
    }

    /// Creates a 429 with `Retry-After: retry_after` when given, such as `"3"` (seconds) or
    /// `"Wed, 21 Oct 2015 07:28:00 GMT"` (an HTTP date). The value is sent as it is, so a
    /// malformed value can be scripted too.
    ///
    /// # Panics
    ///
    /// When `retry_after` contains a byte that HTTP forbids in a header value, such as CR or LF.
    pub fn rate_limited(retry_after: Option<&str>) -> ScriptedResponse {
        let response = ScriptedResponse::new(StatusCode::TOO_MANY_REQUESTS);
        match retry_after {
            Some(value) => response.with_header(RETRY_AFTER, scripted_value("Retry-After", value)),
            None => response,
        }
    }

    /// Creates a 429 with `Retry-After` set to the HTTP date of `until`, such as
    /// `Wed, 21 Oct 2015 07:28:05 GMT`. HTTP dates have whole seconds, so sub-second parts of
    /// `until` are dropped.
    pub fn rate_limited_until(until: SystemTime) -> ScriptedResponse {
        let date = httpdate::fmt_http_date(until);
        ScriptedResponse::rate_limited(Some(&date))
    }

    /// Creates a 302 Found that points at `location`. Clients that follow it turn a POST into
    /// a GET, so use [`ScriptedResponse::temporary_redirect`] to keep the method and body.
    ///
    /// # Panics
    ///
    /// When `location` contains a byte that HTTP forbids in a header value, such as CR or LF.
    pub fn redirect(location: &str) -> ScriptedResponse {
        ScriptedResponse::new(StatusCode::FOUND)
            .with_header(LOCATION, scripted_value("Location", location))
    }

    /// Creates a 307 Temporary Redirect that points at `location`.
    ///
    /// # Panics
    ///
    /// When `location` contains a byte that HTTP forbids in a header value, such as CR or LF.
    pub fn temporary_redirect(location: &str) -> ScriptedResponse {
        ScriptedResponse::new(StatusCode::TEMPORARY_REDIRECT)
            .with_header(LOCATION, scripted_value("Location", location))
    }
}

/// Converts a value written by a test into a header value, panicking with the header's name
/// because a malformed scripted header is a bug in the test.
fn scripted_value(header: &str, value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| {
        panic!("the scripted {header} value contains a byte that HTTP forbids in a header value")
    })
}

/// One request as the mock received it.
///
/// The `authorization`, `proxy-authorization`, `x-api-key` and `cookie` values are marked
/// sensitive, so `Debug` of the request or of its header map prints `Sensitive` for them.
/// `Debug` prints the body's length, not its bytes.
///
/// NOTE: the recorded values are plain copies in ordinary memory, not wiped on drop, because
/// the mock is only for tests with test keys.
#[derive(Clone)]
pub struct RecordedRequest {
    /// Request method.
    pub method: Method,
    /// Path, without the query.
    pub path: String,
    /// Query string without the `?`, when the URL had one.
    pub query: Option<String>,
    /// Headers as received. Names are lowercase, as `http` stores them.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Bytes,
}

impl RecordedRequest {
    /// Returns every `authorization` and `x-api-key` value with its header name, in the order
    /// received. A client that sends exactly one credential returns one entry.
    pub fn credential_headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        let mut found = Vec::new();
        for name in [AUTHORIZATION, X_API_KEY] {
            for value in self.headers.get_all(&name) {
                found.push((name.clone(), value.clone()));
            }
        }
        found
    }

    /// Parses the body as JSON, or returns `None` when it is not JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

impl fmt::Debug for RecordedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordedRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("headers", &self.headers)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// Copies `headers`, marking every credential value sensitive.
fn record_headers(headers: &HeaderMap) -> HeaderMap {
    let mut recorded = headers.clone();
    for (name, value) in recorded.iter_mut() {
        if is_credential_header(name) {
            value.set_sensitive(true);
        }
    }
    recorded
}

fn is_credential_header(name: &HeaderName) -> bool {
    name == AUTHORIZATION || name == PROXY_AUTHORIZATION || name == X_API_KEY || name == COOKIE
}

/// API style of a request path, which decides the shape of error bodies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    OpenAi,
    Anthropic,
}

impl Style {
    fn of_path(path: &str) -> Style {
        if path == MESSAGES_PATH {
            Style::Anthropic
        } else {
            Style::OpenAi
        }
    }
}

async fn handle_request(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();

    let response = respond(&shared, request).await;

    tracing::debug!(
        %method,
        path,
        status = response.status().as_u16(),
        "the MegaLLM mock gateway sent a response"
    );
    response
}

/// Records `request` and builds the response in the order given in the module docs.
async fn respond(shared: &Shared, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let style = Style::of_path(&path);

    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            let message =
                format!("the request body could not be read or exceeds {MAX_BODY_BYTES} bytes");
            return error_response(
                style,
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                &message,
                None,
            );
        }
    };

    let recorded = RecordedRequest {
        method: parts.method.clone(),
        path: path.clone(),
        query: parts.uri.query().map(str::to_owned),
        headers: record_headers(&parts.headers),
        body: body.clone(),
    };
    lock(&shared.requests).push(recorded);

    let scripted = lock(&shared.scripted).pop_front();
    if let Some(scripted) = scripted {
        return scripted_response(style, scripted);
    }

    match (path.as_str(), parts.method == Method::POST) {
        (CHAT_COMPLETIONS_PATH, true) => handle_api(shared, Style::OpenAi, &parts.headers, &body),
        (MESSAGES_PATH, true) => handle_api(shared, Style::Anthropic, &parts.headers, &body),
        (CHAT_COMPLETIONS_PATH | MESSAGES_PATH, false) => error_response(
            style,
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method not allowed, use POST",
            None,
        ),
        _ => error_response(
            style,
            StatusCode::NOT_FOUND,
            "not_found_error",
            "no such endpoint on the MegaLLM mock gateway",
            None,
        ),
    }
}

fn scripted_response(style: Style, scripted: ScriptedResponse) -> Response {
    let mut response = match scripted.body {
        Some(body) => Response::new(Body::from(body)),
        None if scripted.status.is_client_error() || scripted.status.is_server_error() => {
            let (kind, message) = default_error(scripted.status);
            error_response(style, scripted.status, kind, message, None)
        }
        None => Response::new(Body::empty()),
    };
    *response.status_mut() = scripted.status;

    let mut previous: Option<HeaderName> = None;
    for (name, value) in scripted.headers {
        // HeaderMap's owning iterator yields a name only with the first of its values.
        let name = match name {
            Some(name) => {
                response.headers_mut().remove(&name);
                previous = Some(name.clone());
                name
            }
            None => match &previous {
                Some(name) => name.clone(),
                None => continue,
            },
        };
        response.headers_mut().append(name, value);
    }
    response
}

fn default_error(status: StatusCode) -> (&'static str, &'static str) {
    match status {
        StatusCode::UNAUTHORIZED => ("authentication_error", UNAUTHORIZED_MESSAGE),
        StatusCode::FORBIDDEN => ("permission_error", FORBIDDEN_MESSAGE),
        StatusCode::TOO_MANY_REQUESTS => ("rate_limit_error", "Rate limited: wait and retry"),
        status if status.is_server_error() => ("api_error", "the gateway failed; retry later"),
        _ => ("invalid_request_error", "the request was rejected"),
    }
}

const UNAUTHORIZED_MESSAGE: &str = "Unauthorized: check if your API key is valid and not expired";
const FORBIDDEN_MESSAGE: &str = "Forbidden: verify API key has required access";

/// Result of checking the credential of one request.
struct CredentialCheck {
    header: Option<HeaderName>,
    fingerprint: Option<Fingerprint>,
    status: KeyStatus,
    ignored_headers: Vec<HeaderName>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyStatus {
    Missing,
    Duplicated,
    Unknown,
    Revoked,
    Valid,
}

impl KeyStatus {
    fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Missing => "missing",
            KeyStatus::Duplicated => "duplicated",
            KeyStatus::Unknown => "unknown",
            KeyStatus::Revoked => "revoked",
            KeyStatus::Valid => "valid",
        }
    }
}

impl CredentialCheck {
    fn to_json(&self) -> Value {
        let ignored: Vec<&str> = self
            .ignored_headers
            .iter()
            .map(HeaderName::as_str)
            .collect();
        json!({
            "credential_header": self.header.as_ref().map(HeaderName::as_str),
            "fingerprint": self.fingerprint.as_ref().map(Fingerprint::as_str),
            "key_status": self.status.as_str(),
            "ignored_headers": ignored,
        })
    }
}

/// Finds the key in the style's own credential header and looks it up.
fn check_credential(
    shared: &Shared,
    style: Style,
    headers: &HeaderMap,
) -> (CredentialCheck, Option<KeyAccess>) {
    let (header, other) = match style {
        Style::OpenAi => (AUTHORIZATION, X_API_KEY),
        Style::Anthropic => (X_API_KEY, AUTHORIZATION),
    };
    let ignored_headers = if headers.contains_key(&other) {
        vec![other]
    } else {
        Vec::new()
    };
    let mut check = CredentialCheck {
        header: None,
        fingerprint: None,
        status: KeyStatus::Missing,
        ignored_headers,
    };

    let mut values = headers.get_all(&header).iter();
    let Some(value) = values.next() else {
        return (check, None);
    };
    check.header = Some(header);
    if values.next().is_some() {
        check.status = KeyStatus::Duplicated;
        return (check, None);
    }

    let key = match style {
        Style::OpenAi => strip_bearer(value.as_bytes()),
        Style::Anthropic => Some(value.as_bytes()),
    };
    let Some(key) = key.filter(|key| !key.is_empty()) else {
        return (check, None);
    };
    check.fingerprint = Some(Fingerprint::of(key));

    let access = lock(&shared.keys).get(&digest_of(key)).cloned();
    check.status = match &access {
        None => KeyStatus::Unknown,
        Some(access) if access.revoked => KeyStatus::Revoked,
        Some(_) => KeyStatus::Valid,
    };
    let access = access.filter(|_| check.status == KeyStatus::Valid);
    (check, access)
}

/// Returns the token after a `Bearer ` scheme, which HTTP compares case-insensitively.
fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    let (scheme, token) = value.split_at_checked(SCHEME.len())?;
    scheme.eq_ignore_ascii_case(SCHEME).then_some(token)
}

fn handle_api(shared: &Shared, style: Style, headers: &HeaderMap, body: &[u8]) -> Response {
    let debug = wants_debug(headers);
    let (check, access) = check_credential(shared, style, headers);
    let debug_json = debug.then(|| check.to_json());

    let Some(access) = access else {
        if check.status == KeyStatus::Duplicated {
            let message = format!(
                "the request has more than one {} header. Send exactly one.",
                style_header(style)
            );
            return error_response(
                style,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &message,
                debug_json,
            );
        }
        return error_response(
            style,
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            UNAUTHORIZED_MESSAGE,
            debug_json,
        );
    };

    let has_version = headers
        .get(ANTHROPIC_VERSION)
        .is_some_and(|version| !version.is_empty());
    if style == Style::Anthropic && !has_version {
        return error_response(
            style,
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "anthropic-version: header is required",
            debug_json,
        );
    }

    let Some(model) = model_of(body) else {
        return error_response(
            style,
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "the body must be a JSON object with a string `model` field",
            debug_json,
        );
    };

    if access
        .models
        .as_ref()
        .is_some_and(|models| !models.contains(&model))
    {
        return error_response(
            style,
            StatusCode::FORBIDDEN,
            "permission_error",
            FORBIDDEN_MESSAGE,
            debug_json,
        );
    }

    let sequence = shared.sequence.fetch_add(1, Ordering::Relaxed) + 1;
    let mut completion = match style {
        Style::OpenAi => openai_completion(sequence, &model),
        Style::Anthropic => anthropic_message(sequence, &model),
    };
    if let (Some(debug_json), Some(object)) = (debug_json, completion.as_object_mut()) {
        object.insert("debug_auth".to_owned(), debug_json);
    }
    json_response(StatusCode::OK, &completion)
}

fn style_header(style: Style) -> &'static str {
    match style {
        Style::OpenAi => "authorization",
        Style::Anthropic => "x-api-key",
    }
}

fn wants_debug(headers: &HeaderMap) -> bool {
    headers
        .get(X_DEBUG_AUTH)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"true"))
}

fn model_of(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value.get("model")?.as_str().map(str::to_owned)
}

fn openai_completion(sequence: u64, model: &str) -> Value {
    json!({
        "id": format!("chatcmpl-mock-{sequence}"),
        "object": "chat.completion",
        "created": unix_time(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": ANSWER_TEXT},
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18},
    })
}

fn anthropic_message(sequence: u64, model: &str) -> Value {
    json!({
        "id": format!("msg_mock_{sequence}"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": ANSWER_TEXT}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 8},
    })
}

fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

fn error_response(
    style: Style,
    status: StatusCode,
    kind: &str,
    message: &str,
    debug_auth: Option<Value>,
) -> Response {
    let mut body = match style {
        Style::OpenAi => json!({
            "error": {"message": message, "type": kind, "param": null, "code": null},
        }),
        Style::Anthropic => json!({
            "type": "error",
            "error": {"type": kind, "message": message},
        }),
    };
    if let (Some(debug_auth), Some(object)) = (debug_auth, body.as_object_mut()) {
        object.insert("debug_auth".to_owned(), debug_auth);
    }
    json_response(status, &body)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
