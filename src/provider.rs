//! [`KeyProvider`]: the resolved key cached as a [`KeySnapshot`], refreshed in the background,
//! kept through transient source failures for a bounded grace, and re-resolved on demand after
//! the gateway rejects it.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderMap;
use tokio::runtime::RuntimeFlavor;
use tokio::time::Instant;

use crate::chain::{ChainError, KeyChain, Outcome};
use crate::environment::Environment;
use crate::error::Error;
use crate::headers::{ApiStyle, AuthHeaders, DEFAULT_ANTHROPIC_VERSION, HeaderError};
use crate::key::{ApiKey, Fingerprint};
use crate::settings::Settings;
use crate::source::{Resolved, SourceErrorKind, SourceKind};
use crate::watch::{WatchHandle, WatchMode};

/// Default time a key from a file (secret file, `MEGALLM_API_KEY_FILE`, .env) is used before
/// the file is read again. The directory watcher usually notices a change much sooner.
pub const DEFAULT_FILE_REFRESH: Duration = Duration::from_secs(30);
/// Default time a key from a remote backend (AWS Secrets Manager, Vault) is used before it is
/// fetched again.
pub const DEFAULT_REMOTE_REFRESH: Duration = Duration::from_secs(300);
/// Default time a key from an environment variable or from code is used before the chain is
/// resolved again.
pub const DEFAULT_LOCAL_REFRESH: Duration = Duration::from_secs(300);
/// Default time the last good key is served after its source starts failing transiently.
pub const DEFAULT_STALE_GRACE: Duration = Duration::from_secs(300);
/// Default wait between attempts while the source is failing.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(1);

/// One resolved key with its origin and its prebuilt request headers.
///
/// A snapshot never changes: a rotation publishes a new snapshot, and requests that already hold
/// the old one finish with the old key.
pub struct KeySnapshot {
    resolved: Resolved,
    headers: AuthHeaders,
}

impl KeySnapshot {
    fn new(resolved: Resolved, config: &ProviderConfig) -> KeySnapshot {
        let headers = AuthHeaders::new(&resolved.key, config.style)
            .with_debug_auth(config.debug_auth)
            .with_anthropic_version(&config.anthropic_version)
            .expect("the anthropic-version was checked when the provider was built");
        KeySnapshot { resolved, headers }
    }

    /// Returns the label of the source that supplied the key, such as `file:/run/secrets/x`.
    pub fn label(&self) -> &str {
        &self.resolved.label
    }

    /// Returns the kind of the source that supplied the key.
    pub fn kind(&self) -> SourceKind {
        self.resolved.kind
    }

    /// Returns the backend's version of the secret, when it has one.
    pub fn version(&self) -> Option<&str> {
        self.resolved.version.as_deref()
    }

    /// Returns the key's fingerprint.
    pub fn fingerprint(&self) -> &Fingerprint {
        self.resolved.key.fingerprint()
    }

    /// Returns the key.
    pub fn key(&self) -> &ApiKey {
        &self.resolved.key
    }

    /// Returns the prebuilt request headers.
    pub fn headers(&self) -> &AuthHeaders {
        &self.headers
    }

    /// Writes the headers into `headers`, as [`AuthHeaders::apply`] does.
    #[inline]
    pub fn apply(&self, headers: &mut HeaderMap) {
        self.headers.apply(headers);
    }
}

impl fmt::Debug for KeySnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySnapshot")
            .field("label", &self.label())
            .field("kind", &self.kind())
            .field("version", &self.version())
            .field("fingerprint", self.fingerprint())
            .field("style", &self.headers.style())
            .finish()
    }
}

/// A key could not be resolved and no last good key may be served.
///
/// Display includes the chain's error. The chain's report of every attempt is in
/// [`RefreshError::chain`], and `source()` continues below the chain's error as
/// [`ChainError`] describes, so that a reporter that prints every cause does not print the
/// chain's message twice.
#[derive(Clone, Debug)]
pub struct RefreshError {
    chain: Arc<ChainError>,
    expired: Option<ExpiredKey>,
}

#[derive(Clone, Debug)]
struct ExpiredKey {
    label: String,
    fingerprint: Fingerprint,
    grace: Duration,
}

impl RefreshError {
    /// Returns the failed resolution, with the report of every attempt.
    pub fn chain(&self) -> &ChainError {
        &self.chain
    }

    /// Returns the category of the failure.
    pub fn kind(&self) -> SourceErrorKind {
        self.chain.kind()
    }

    /// Returns whether a last good key was served until its stale grace ended.
    pub fn stale_grace_ended(&self) -> bool {
        self.expired.is_some()
    }
}

impl fmt::Display for RefreshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.expired {
            Some(expired) => write!(
                f,
                "the MegaLLM API key source has failed for longer than the stale grace of {:?}, so \
                 the last good key {} from {} is no longer served: {}",
                expired.grace, expired.fingerprint, expired.label, self.chain
            ),
            None => write!(f, "{}", self.chain),
        }
    }
}

impl std::error::Error for RefreshError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.chain)
    }
}

/// Settings of a [`KeyProvider`], set through [`KeyProviderBuilder`].
#[derive(Clone, Debug)]
struct ProviderConfig {
    style: ApiStyle,
    debug_auth: bool,
    anthropic_version: String,
    intervals: HashMap<SourceKind, Duration>,
    stale_grace: Duration,
    retry_delay: Duration,
    watch: WatchMode,
}

impl ProviderConfig {
    fn refresh_interval(&self, kind: SourceKind) -> Duration {
        if let Some(interval) = self.intervals.get(&kind) {
            return *interval;
        }
        match kind {
            SourceKind::SecretFile | SourceKind::EnvFile | SourceKind::Dotenv => {
                DEFAULT_FILE_REFRESH
            }
            kind if kind.is_remote() => DEFAULT_REMOTE_REFRESH,
            _ => DEFAULT_LOCAL_REFRESH,
        }
    }
}

/// Builds a [`KeyProvider`]. Created by [`KeyProvider::builder`].
#[derive(Debug)]
pub struct KeyProviderBuilder {
    chain: KeyChain,
    config: ProviderConfig,
}

impl KeyProviderBuilder {
    /// Sets the API style of the headers. Default: [`ApiStyle::OpenAi`].
    #[must_use]
    pub fn style(mut self, style: ApiStyle) -> KeyProviderBuilder {
        self.config.style = style;
        self
    }

    /// Sends `X-Debug-Auth: true` on every request. Default: off.
    #[must_use]
    pub fn debug_auth(mut self, enabled: bool) -> KeyProviderBuilder {
        self.config.debug_auth = enabled;
        self
    }

    /// Sets the `anthropic-version` sent in Anthropic style. Default: `2023-06-01`.
    #[must_use]
    pub fn anthropic_version(mut self, version: impl Into<String>) -> KeyProviderBuilder {
        self.config.anthropic_version = version.into();
        self
    }

    /// Sets how long a key from a source of `kind` is used before it is resolved again in the
    /// background. Defaults: [`DEFAULT_FILE_REFRESH`] for files, [`DEFAULT_REMOTE_REFRESH`] for
    /// AWS and Vault, [`DEFAULT_LOCAL_REFRESH`] for environment variables and static keys.
    #[must_use]
    pub fn refresh_interval(mut self, kind: SourceKind, interval: Duration) -> KeyProviderBuilder {
        self.config.intervals.insert(kind, interval);
        self
    }

    /// Sets how long the last good key is served after its source starts failing transiently
    /// (backend unavailable, or its secret file briefly missing). Default:
    /// [`DEFAULT_STALE_GRACE`].
    #[must_use]
    pub fn stale_grace(mut self, grace: Duration) -> KeyProviderBuilder {
        self.config.stale_grace = grace;
        self
    }

    /// Sets the wait between resolution attempts while the source is failing, and how long a
    /// failure is returned to callers before the next attempt. Default: [`DEFAULT_RETRY_DELAY`].
    #[must_use]
    pub fn retry_delay(mut self, delay: Duration) -> KeyProviderBuilder {
        self.config.retry_delay = delay;
        self
    }

    /// Sets how the files named by the sources' [`watch_paths`](crate::KeySource::watch_paths)
    /// are watched. Default: [`WatchMode::Auto`].
    #[must_use]
    pub fn watch(mut self, mode: WatchMode) -> KeyProviderBuilder {
        self.config.watch = mode;
        self
    }

    /// Builds the provider. Nothing is resolved until the first call to
    /// [`KeyProvider::current`].
    ///
    /// # Errors
    ///
    /// [`Error::Header`] when the `anthropic-version` is empty or contains a forbidden byte.
    pub fn build(self) -> Result<KeyProvider, Error> {
        check_anthropic_version(&self.config.anthropic_version)?;

        let now = Instant::now();
        let inner = Arc::new(Inner {
            chain: self.chain,
            config: self.config,
            state: ArcSwap::from_pointee(State::empty(now)),
            resolve_lock: tokio::sync::Mutex::new(()),
            refreshing: AtomicBool::new(false),
            resolver_runtime: Mutex::new(None),
            fresh: Arc::new(AtomicU64::new(NOT_FRESH)),
            watch: Mutex::new(None),
            watch_started: AtomicBool::new(false),
            last_invalidation: Mutex::new(None),
        });
        Ok(KeyProvider { inner })
    }
}

fn check_anthropic_version(version: &str) -> Result<(), HeaderError> {
    const HEADER: &str = "anthropic-version";
    if version.is_empty() {
        return Err(HeaderError::Empty { header: HEADER });
    }
    match version
        .bytes()
        .position(|byte| (byte < 0x20 && byte != b'\t') || byte == 0x7f)
    {
        Some(position) => Err(HeaderError::ForbiddenByte {
            header: HEADER,
            position,
        }),
        None => Ok(()),
    }
}

/// The cached key of a [`KeyChain`], ready to be turned into request headers.
///
/// - Reads of a cached key are lock-free. While the key is marked fresh they also skip the
///   clock: a key published outside a current-thread runtime is marked fresh until shortly
///   before its refresh is due, and a background thread ends the mark. [`KeyProvider::try_apply_current`] and
///   [`KeyProvider::apply_current`] write the headers without cloning the snapshot.
/// - Single flight: any number of callers at a cold start, or after the key can no longer be
///   served, cause one resolution of the chain. The other callers wait for its outcome.
/// - Refresh ahead: once a key is older than its source kind's refresh interval, the next
///   caller starts a background resolution and keeps the old key meanwhile.
/// - Last known good: when a refresh fails transiently (the backend is unavailable, or the
///   secret file that supplied the key is briefly missing, as during a Kubernetes symlink swap)
///   the last good key is served for the stale grace, with a warning; then callers get the
///   error. Other failures (denied, invalid key, misconfigured) reach callers at once.
/// - Files named by the sources are watched, so a rotated secret file is picked up within the
///   watcher's debounce, or within one refresh interval when watching is not possible.
/// - [`KeyProvider::invalidate`] re-resolves after the gateway rejects a key.
///
/// Cloning is cheap and clones share the cache.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// use megallm_auth::{ApiStyle, KeyChain, KeyProvider, StaticSource};
///
/// let chain = KeyChain::new().with(StaticSource::new("sk-mega-TESTDOC00000000").unwrap());
/// let provider = KeyProvider::builder(chain).style(ApiStyle::Anthropic).build().unwrap();
///
/// let snapshot = provider.current().await.unwrap();
/// let headers = snapshot.headers().to_header_map();
/// assert!(headers.get("x-api-key").unwrap().is_sensitive());
/// assert_eq!(headers["anthropic-version"], "2023-06-01");
/// # });
/// ```
#[derive(Clone)]
pub struct KeyProvider {
    inner: Arc<Inner>,
}

struct Inner {
    chain: KeyChain,
    config: ProviderConfig,
    state: ArcSwap<State>,
    /// Held for the duration of a resolution, so only one runs at a time.
    resolve_lock: tokio::sync::Mutex<()>,
    /// Set while a background refresh task exists, so at most one is spawned.
    refreshing: AtomicBool,
    /// The multi-thread runtime of the last resolution, where reads from threads outside any
    /// runtime start their background refreshes.
    resolver_runtime: Mutex<Option<tokio::runtime::Handle>>,
    /// The generation of the published state while its key is marked fresh, or
    /// [`NOT_FRESH`]. The [`FreshTimer`] resets it shortly before the refresh is due, so a
    /// reader that finds it equal to the state's generation can serve the key without reading
    /// the clock. It is shared with the timer, so that the timer never owns the provider.
    fresh: Arc<AtomicU64>,
    watch: Mutex<Option<WatchHandle>>,
    watch_started: AtomicBool,
    /// The key whose invalidation last caused a resolution, and when that resolution ended.
    /// Guarded by `resolve_lock`'s critical section.
    last_invalidation: Mutex<Option<(Fingerprint, Instant)>>,
}

/// The value of [`Inner::fresh`] when no published key may be served without a clock check.
const NOT_FRESH: u64 = u64::MAX;

/// The published state. It is replaced as a whole after every resolution attempt.
struct State {
    /// Incremented by every resolution attempt, successful or not.
    generation: u64,
    snapshot: Option<Arc<KeySnapshot>>,
    /// When the next resolution is due: after the refresh interval following a success, or
    /// after the retry delay following a failure.
    next_attempt_at: Instant,
    /// The first failed attempt since the last success, while the last good key is served.
    stale_since: Option<Instant>,
    /// The last attempt's error, until an attempt succeeds.
    failure: Option<Arc<ChainError>>,
    /// The key whose stale grace ended, kept to explain the error.
    expired: Option<ExpiredKey>,
}

enum Decision {
    Serve {
        snapshot: Arc<KeySnapshot>,
        refresh_due: bool,
    },
    Fail(RefreshError),
    Resolve,
}

impl State {
    fn empty(now: Instant) -> State {
        State {
            generation: 0,
            snapshot: None,
            next_attempt_at: now,
            stale_since: None,
            failure: None,
            expired: None,
        }
    }

    fn decide(&self, now: Instant, grace: Duration) -> Decision {
        if let Some(snapshot) = &self.snapshot {
            let within_grace = self.stale_since.is_none_or(|since| now < since + grace);
            if within_grace {
                return Decision::Serve {
                    snapshot: snapshot.clone(),
                    refresh_due: now >= self.next_attempt_at,
                };
            }
        }

        match &self.failure {
            Some(chain) if now < self.next_attempt_at => Decision::Fail(RefreshError {
                chain: chain.clone(),
                expired: self.expired_key(grace),
            }),
            _ => Decision::Resolve,
        }
    }

    /// Returns what a caller gets right after a resolution attempt.
    fn outcome(&self, now: Instant, grace: Duration) -> Option<Result<Arc<KeySnapshot>, Error>> {
        match self.decide(now, grace) {
            Decision::Serve { snapshot, .. } => Some(Ok(snapshot)),
            Decision::Fail(error) => Some(Err(Error::Refresh(error))),
            Decision::Resolve => self.failure.as_ref().map(|chain| {
                Err(Error::Refresh(RefreshError {
                    chain: chain.clone(),
                    expired: self.expired_key(grace),
                }))
            }),
        }
    }

    fn expired_key(&self, grace: Duration) -> Option<ExpiredKey> {
        match (&self.snapshot, self.stale_since) {
            (Some(snapshot), Some(_)) => Some(ExpiredKey {
                label: snapshot.label().to_owned(),
                fingerprint: snapshot.fingerprint().clone(),
                grace,
            }),
            _ => self.expired.clone(),
        }
    }
}

/// The reason a resolution runs, for the logs.
#[derive(Clone, Copy, Debug)]
enum Trigger {
    /// No key can be served: cold start, or the last failure's retry delay passed.
    Needed,
    /// The key is older than its refresh interval.
    Refresh,
    /// A watched file changed.
    FileChanged,
    /// The gateway rejected the key.
    Invalidated,
}

impl KeyProvider {
    /// Starts building a provider over `chain`.
    pub fn builder(chain: KeyChain) -> KeyProviderBuilder {
        KeyProviderBuilder {
            chain,
            config: ProviderConfig {
                style: ApiStyle::default(),
                debug_auth: false,
                anthropic_version: DEFAULT_ANTHROPIC_VERSION.to_owned(),
                intervals: HashMap::new(),
                stale_grace: DEFAULT_STALE_GRACE,
                retry_delay: DEFAULT_RETRY_DELAY,
                watch: WatchMode::Auto,
            },
        }
    }

    /// Starts building a provider from `settings`: their key chain (sources read
    /// `environment`), API style, `debug_auth` and `anthropic_version`.
    ///
    /// # Errors
    ///
    /// [`Error::Settings`] when a source's settings are invalid.
    pub fn builder_from_settings(
        settings: &Settings,
        environment: &Environment,
    ) -> Result<KeyProviderBuilder, Error> {
        let chain = settings.key_chain(environment)?;
        Ok(KeyProvider::builder(chain)
            .style(settings.api_style)
            .debug_auth(settings.debug_auth)
            .anthropic_version(settings.anthropic_version.clone()))
    }

    /// Returns the API style of the headers.
    pub fn style(&self) -> ApiStyle {
        self.inner.config.style
    }

    /// Returns the chain the provider resolves.
    pub fn chain(&self) -> &KeyChain {
        &self.inner.chain
    }

    /// Returns the current key, resolving the chain first when no key can be served.
    ///
    /// While the key is marked fresh (see [`KeyProvider`]) this takes no lock and reads no
    /// clock: an `arc-swap` load, a flag check and an `Arc` clone. When the key is due for
    /// refresh, a background task resolves the chain and this call returns the current key at
    /// once. The task runs on this thread's Tokio runtime, or else on the multi-thread runtime
    /// that last resolved the key; with neither, no refresh starts.
    ///
    /// # Errors
    ///
    /// [`Error::Refresh`] when the chain has no key, fails hard, or has failed transiently
    /// for longer than the stale grace. A failure is returned without a new attempt until the
    /// retry delay has passed.
    #[inline]
    pub async fn current(&self) -> Result<Arc<KeySnapshot>, Error> {
        match self.decide() {
            (Decision::Serve { snapshot, .. }, _) => Ok(snapshot),
            (Decision::Fail(error), _) => Err(Error::Refresh(error)),
            (Decision::Resolve, generation) => self.resolve_needed(generation).await,
        }
    }

    /// Resolves the chain because no key can be served. The resolution's future is boxed so
    /// that the futures of [`KeyProvider::current`] and [`KeyProvider::apply_current`] stay
    /// small on the path that serves a cached key.
    fn resolve_needed(
        &self,
        generation: u64,
    ) -> Pin<Box<dyn Future<Output = Result<Arc<KeySnapshot>, Error>> + Send + '_>> {
        Box::pin(self.inner.resolve_shared(Some(generation), Trigger::Needed))
    }

    /// Writes the current key's headers into `headers`, as [`KeySnapshot::apply`] does,
    /// resolving the chain first when no key can be served.
    ///
    /// While the key is marked fresh it borrows the published snapshot instead of cloning its
    /// `Arc`. Use
    /// [`KeyProvider::try_apply_current`] where waiting is never wanted, and
    /// [`KeyProvider::current`] when the request's outcome must be tied to the key it carried,
    /// for example to call [`KeyProvider::invalidate`] after a 401.
    ///
    /// # Errors
    ///
    /// As [`KeyProvider::current`]; `headers` is left unchanged.
    #[inline]
    pub async fn apply_current(&self, headers: &mut HeaderMap) -> Result<(), Error> {
        if self.inner.apply_fresh(headers) {
            return Ok(());
        }
        self.apply_unfresh(headers).await
    }

    /// Returns, boxed, the part of [`KeyProvider::apply_current`] that reads the clock and may
    /// resolve, so that the future stays small on the fresh path.
    #[inline(never)]
    fn apply_unfresh<'a>(
        &'a self,
        headers: &'a mut HeaderMap,
    ) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>> {
        Box::pin(async move {
            self.current().await?.apply(headers);
            Ok(())
        })
    }

    /// Decides from the published state what a caller gets, and starts a background refresh
    /// when the key it serves is due. Returns the decision and the state's generation.
    #[inline]
    fn decide(&self) -> (Decision, u64) {
        let state = self.inner.state.load();
        if self.inner.fresh.load(Ordering::Acquire) == state.generation
            && let Some(snapshot) = &state.snapshot
        {
            let decision = Decision::Serve {
                snapshot: snapshot.clone(),
                refresh_due: false,
            };
            return (decision, state.generation);
        }
        let decision = state.decide(Instant::now(), self.inner.config.stale_grace);
        if let Decision::Serve {
            refresh_due: true, ..
        } = &decision
        {
            self.inner.spawn_refresh(state.generation, Trigger::Refresh);
        }
        (decision, state.generation)
    }

    /// Returns the current key when one can be served, without waiting.
    ///
    /// When the key is due for refresh, or no key can be served and no failure is being
    /// returned for the retry delay, a background resolution is started as
    /// [`KeyProvider::current`] describes.
    pub fn try_current(&self) -> Option<Arc<KeySnapshot>> {
        match self.decide() {
            (Decision::Serve { snapshot, .. }, _) => Some(snapshot),
            (Decision::Fail(_), _) => None,
            (Decision::Resolve, generation) => {
                self.inner.spawn_refresh(generation, Trigger::Needed);
                None
            }
        }
    }

    /// Writes the current key's headers into `headers` when a key can be served without
    /// waiting, and returns whether it did.
    ///
    /// This is the synchronous form of [`KeyProvider::apply_current`], and the cheapest read:
    /// while the key is marked fresh it neither clones the snapshot nor reads the clock. When no key
    /// can be served, `headers` is left unchanged. As with [`KeyProvider::try_current`], a
    /// background resolution starts when one is due.
    pub fn try_apply_current(&self, headers: &mut HeaderMap) -> bool {
        if self.inner.apply_fresh(headers) {
            return true;
        }
        match self.try_current() {
            Some(snapshot) => {
                snapshot.apply(headers);
                true
            }
            None => false,
        }
    }

    /// Re-resolves the chain once because the gateway rejected the key with `fingerprint`.
    ///
    /// Nothing is resolved when that key was already replaced, when another resolution
    /// finished while this call waited for its turn, or when an invalidation of the same key
    /// resolved less than the retry delay ago: the current key is returned. A burst of 401s
    /// for one key therefore costs one backend call per retry delay. Compare the returned
    /// fingerprint with the rejected one to know whether a retry can help.
    ///
    /// # Errors
    ///
    /// As [`KeyProvider::current`].
    pub async fn invalidate(&self, fingerprint: &Fingerprint) -> Result<Arc<KeySnapshot>, Error> {
        let observed = self.inner.state.load().generation;
        let inner = &self.inner;

        let guard = inner.resolve_lock.lock().await;
        let state = inner.state.load_full();
        let replaced = state
            .snapshot
            .as_ref()
            .is_none_or(|snapshot| snapshot.fingerprint() != fingerprint);
        let recently_invalidated = inner.last_invalidation.lock().is_ok_and(|last| {
            last.as_ref().is_some_and(|(last_fingerprint, at)| {
                last_fingerprint == fingerprint && at.elapsed() < inner.config.retry_delay
            })
        });
        if state.generation != observed || replaced || recently_invalidated {
            drop(guard);
            return self.current().await;
        }

        tracing::info!(
            source = %state.snapshot.as_ref().map_or("", |snapshot| snapshot.label()),
            fingerprint = %fingerprint,
            "re-resolving the MegaLLM API key because the gateway rejected it"
        );
        let result = inner.resolve_locked(&state, Trigger::Invalidated).await;
        if let Ok(mut last) = inner.last_invalidation.lock() {
            *last = Some((fingerprint.clone(), Instant::now()));
        }
        drop(guard);
        result
    }
}

impl fmt::Debug for KeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.load();
        f.debug_struct("KeyProvider")
            .field("sources", &self.inner.chain.labels())
            .field("style", &self.inner.config.style)
            .field("current", &state.snapshot)
            .field("stale", &state.stale_since.is_some())
            .finish()
    }
}

/// The end of one generation's fresh mark.
struct FreshExpiry {
    at: std::time::Instant,
    generation: u64,
    flag: Weak<AtomicU64>,
}

impl FreshExpiry {
    /// Ends the mark unless a newer generation has replaced it or the provider is gone.
    fn end(&self) {
        if let Some(flag) = self.flag.upgrade() {
            let _ = flag.compare_exchange(
                self.generation,
                NOT_FRESH,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    /// Returns whether ending the mark would still change anything.
    fn is_pending(&self) -> bool {
        self.flag
            .upgrade()
            .is_some_and(|flag| flag.load(Ordering::Acquire) == self.generation)
    }
}

impl PartialEq for FreshExpiry {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for FreshExpiry {}

impl PartialOrd for FreshExpiry {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for FreshExpiry {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.at.cmp(&other.at)
    }
}

/// A thread that ends fresh marks at their deadlines on the wall clock. One is shared by every
/// provider of the process.
///
/// A thread of its own keeps the marks independent of any Tokio runtime: a runtime that sits
/// idle outside `block_on`, shuts down, or has no timer enabled would otherwise leave a mark
/// set past its deadline. The thread runs no code of the providers or their sources, and it
/// holds only weak references to the flags.
///
/// NOTE: a child process created by `fork()` has no such thread, so a key marked fresh in the
/// child is never refreshed there.
struct FreshTimer {
    queue: Mutex<ExpiryQueue>,
    changed: Condvar,
}

struct ExpiryQueue {
    expiries: BinaryHeap<Reverse<FreshExpiry>>,
    /// The length at which expiries that can no longer change anything are dropped, so that
    /// frequent publishes and dropped providers do not grow the queue until their deadlines.
    compact_at: usize,
}

/// The smallest queue length at which the queue is compacted.
const MIN_COMPACT_AT: usize = 64;

impl FreshTimer {
    /// Returns the timer shared by the process, starting its thread on first use, or `None`
    /// when the thread could not be started.
    fn shared() -> Option<&'static FreshTimer> {
        static TIMER: OnceLock<Option<&'static FreshTimer>> = OnceLock::new();
        *TIMER.get_or_init(|| match FreshTimer::start() {
            Ok(timer) => Some(timer),
            Err(error) => {
                tracing::warn!(
                    %error,
                    "failed to start the key freshness timer thread, so reads check the clock"
                );
                None
            }
        })
    }

    /// Starts a timer and its thread. The timer lives as long as the process.
    fn start() -> std::io::Result<&'static FreshTimer> {
        let timer: &'static FreshTimer = Box::leak(Box::new(FreshTimer {
            queue: Mutex::new(ExpiryQueue {
                expiries: BinaryHeap::new(),
                compact_at: MIN_COMPACT_AT,
            }),
            changed: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("megallm-auth-fresh".to_owned())
            .spawn(move || timer.run())?;
        Ok(timer)
    }

    fn schedule(&self, expiry: FreshExpiry) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.expiries.push(Reverse(expiry));
        if queue.expiries.len() >= queue.compact_at {
            queue.expiries.retain(|Reverse(expiry)| expiry.is_pending());
            queue.compact_at = (queue.expiries.len() * 2).max(MIN_COMPACT_AT);
        }
        drop(queue);
        self.changed.notify_one();
    }

    fn run(&self) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let now = std::time::Instant::now();
            while queue
                .expiries
                .peek()
                .is_some_and(|Reverse(first)| first.at <= now)
            {
                if let Some(Reverse(expiry)) = queue.expiries.pop() {
                    expiry.end();
                }
            }
            let next = queue.expiries.peek().map(|Reverse(first)| first.at);
            queue = match next {
                Some(at) => {
                    let wait = at.saturating_duration_since(std::time::Instant::now());
                    self.changed
                        .wait_timeout(queue, wait)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .changed
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
    }

    #[cfg(test)]
    fn queued(&self) -> usize {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .expiries
            .len()
    }
}

/// Resets [`Inner::refreshing`] when a background refresh ends, even when its task is dropped.
struct RefreshingGuard(Arc<Inner>);

impl Drop for RefreshingGuard {
    fn drop(&mut self) {
        self.0.refreshing.store(false, Ordering::Release);
    }
}

impl Inner {
    /// Writes the headers of the published key when it is fresh, and returns whether it did.
    #[inline]
    fn apply_fresh(&self, headers: &mut HeaderMap) -> bool {
        let state = self.state.load();
        if self.fresh.load(Ordering::Acquire) != state.generation {
            return false;
        }
        match &state.snapshot {
            Some(snapshot) => {
                snapshot.apply(headers);
                true
            }
            None => false,
        }
    }

    /// Publishes `next` and, when its key can be served until `next.next_attempt_at` without
    /// a clock check, marks it fresh until a timer resets the mark.
    fn publish(self: &Arc<Self>, next: State) {
        let generation = next.generation;
        let fresh_for = match (&next.snapshot, next.stale_since) {
            (Some(snapshot), None) => Some(self.config.refresh_interval(snapshot.kind())),
            _ => None,
        };
        let refresh_at = next.next_attempt_at;

        self.fresh.store(NOT_FRESH, Ordering::Release);
        self.state.store(Arc::new(next));
        if let Some(interval) = fresh_for {
            self.mark_fresh(generation, refresh_at, interval);
        }
    }

    /// Marks `generation` fresh until a little before `refresh_at`, when the shared
    /// [`FreshTimer`] ends the mark.
    ///
    /// Nothing is marked while a current-thread runtime publishes, because such a runtime may
    /// run on a paused clock, which a wall-clock timer cannot follow. Reads then check the
    /// clock, as they do for a key that is not marked for any other reason.
    ///
    /// NOTE: a key marked here and read inside a paused current-thread runtime stays fresh on
    /// the wall clock, whatever `tokio::time::advance` does.
    fn mark_fresh(self: &Arc<Self>, generation: u64, refresh_at: Instant, interval: Duration) {
        if tokio::runtime::Handle::try_current()
            .is_ok_and(|runtime| runtime.runtime_flavor() == RuntimeFlavor::CurrentThread)
        {
            return;
        }
        // Ending the mark early hands the last moments to the clock-checked path, which is the
        // one that starts the refresh, even when the timer thread wakes up to the margin late.
        let margin = (interval / 8).clamp(Duration::from_millis(2), Duration::from_secs(1));
        let Some(ends) = refresh_at.checked_sub(margin) else {
            return;
        };
        if ends <= Instant::now() {
            return;
        }

        // The mark is set before its expiry is queued, so an expiry that ends it at once cannot
        // be overtaken by the store.
        self.fresh.store(generation, Ordering::Release);
        let expiry = FreshExpiry {
            at: ends.into_std(),
            generation,
            flag: Arc::downgrade(&self.fresh),
        };
        match FreshTimer::shared() {
            Some(timer) => timer.schedule(expiry),
            None => expiry.end(),
        }
    }

    /// Starts one background resolution unless one is already running. It runs on this
    /// thread's Tokio runtime, or else on the multi-thread runtime that last resolved the key;
    /// with neither, nothing starts.
    fn spawn_refresh(self: &Arc<Self>, observed: u64, trigger: Trigger) {
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime,
            Err(_) => match self
                .resolver_runtime
                .lock()
                .ok()
                .and_then(|slot| slot.clone())
            {
                Some(runtime) => runtime,
                None => return,
            },
        };
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }

        let guard = RefreshingGuard(self.clone());
        runtime.spawn(async move {
            let inner = &guard.0;
            // Errors are logged by the resolution and returned to foreground callers.
            let _ = inner.resolve_shared(Some(observed), trigger).await;
        });
    }

    /// Resolves the chain unless another resolution finished since `observed` was read, in
    /// which case its outcome is returned. `None` always resolves.
    async fn resolve_shared(
        self: &Arc<Self>,
        observed: Option<u64>,
        trigger: Trigger,
    ) -> Result<Arc<KeySnapshot>, Error> {
        let _guard = self.resolve_lock.lock().await;
        let state = self.state.load_full();

        if observed.is_some_and(|generation| generation != state.generation)
            && let Some(outcome) = state.outcome(Instant::now(), self.config.stale_grace)
        {
            return outcome;
        }

        self.resolve_locked(&state, trigger).await
    }

    /// Resolves the chain and publishes the new state. The caller must hold `resolve_lock`.
    async fn resolve_locked(
        self: &Arc<Self>,
        previous: &State,
        trigger: Trigger,
    ) -> Result<Arc<KeySnapshot>, Error> {
        self.start_watching();
        self.remember_runtime();
        tracing::debug!(?trigger, "resolving the MegaLLM API key");

        let result = self.chain.resolve().await;
        let now = Instant::now();
        let config = &self.config;

        let next = match result {
            Ok(resolution) => {
                let snapshot = Arc::new(KeySnapshot::new(resolution.resolved, config));
                log_success(previous, &snapshot);
                State {
                    generation: previous.generation + 1,
                    next_attempt_at: now + config.refresh_interval(snapshot.kind()),
                    snapshot: Some(snapshot),
                    stale_since: None,
                    failure: None,
                    expired: None,
                }
            }
            Err(error) => self.failed_state(previous, Arc::new(error), now),
        };

        let outcome = next.outcome(now, config.stale_grace);
        self.publish(next);
        outcome.expect("a resolution attempt leaves either a key or a failure")
    }

    fn failed_state(&self, previous: &State, error: Arc<ChainError>, now: Instant) -> State {
        let config = &self.config;
        let last_good = previous.snapshot.as_ref();
        let transient = is_transient(&error, last_good.map(|snapshot| &**snapshot));
        let stale_since = previous.stale_since.unwrap_or(now);

        match last_good {
            Some(snapshot) if transient && now < stale_since + config.stale_grace => {
                let remaining = stale_since + config.stale_grace - now;
                tracing::warn!(
                    source = %snapshot.label(),
                    fingerprint = %snapshot.fingerprint(),
                    error = %error,
                    remaining_grace_ms = remaining.as_millis() as u64,
                    "refreshing the MegaLLM API key failed; serving the last good key"
                );
                State {
                    generation: previous.generation + 1,
                    snapshot: Some(snapshot.clone()),
                    next_attempt_at: now + config.retry_delay,
                    stale_since: Some(stale_since),
                    failure: Some(error),
                    expired: None,
                }
            }
            _ => {
                let expired = match last_good {
                    Some(snapshot) if transient => Some(ExpiredKey {
                        label: snapshot.label().to_owned(),
                        fingerprint: snapshot.fingerprint().clone(),
                        grace: config.stale_grace,
                    }),
                    _ => previous.expired.clone(),
                };
                tracing::warn!(
                    error = %error,
                    stale_grace_ended = expired.is_some(),
                    "no MegaLLM API key can be served"
                );
                State {
                    generation: previous.generation + 1,
                    snapshot: None,
                    next_attempt_at: now + config.retry_delay,
                    stale_since: None,
                    failure: Some(error),
                    expired,
                }
            }
        }
    }

    /// Keeps the handle of this thread's runtime for readers outside any runtime, when it is a
    /// multi-thread runtime. A current-thread runtime runs spawned tasks only inside
    /// `block_on`, so a refresh spawned on an idle one would hold up every other refresh.
    fn remember_runtime(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if runtime.runtime_flavor() != RuntimeFlavor::MultiThread {
            return;
        }
        if let Ok(mut slot) = self.resolver_runtime.lock() {
            *slot = Some(runtime);
        }
    }

    /// Starts watching the sources' files on the first resolution inside a Tokio runtime, and
    /// again when the runtime that ran the watcher has shut down.
    fn start_watching(self: &Arc<Self>) {
        if self.config.watch == WatchMode::Off {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Ok(mut slot) = self.watch.lock() else {
            return;
        };
        match slot.as_ref() {
            Some(handle) if !handle.is_finished() => return,
            Some(_) => tracing::debug!(
                "the runtime of the MegaLLM API key file watcher ended; watching again"
            ),
            // A first attempt that found nothing to watch is not repeated.
            None if self.watch_started.swap(true, Ordering::AcqRel) => return,
            None => {}
        }
        let paths: Vec<_> = self
            .chain
            .sources()
            .iter()
            .flat_map(|source| source.watch_paths())
            .collect();
        if paths.is_empty() {
            *slot = None;
            return;
        }

        let weak: Weak<Inner> = Arc::downgrade(self);
        let poll_interval = self.config.refresh_interval(SourceKind::SecretFile);
        *slot = crate::watch::start(
            paths,
            self.config.watch,
            poll_interval,
            &runtime,
            move || {
                let weak = weak.clone();
                async move {
                    if let Some(inner) = weak.upgrade() {
                        // Errors are logged by the resolution and returned to foreground callers.
                        let _ = inner.resolve_shared(None, Trigger::FileChanged).await;
                    }
                }
            },
        );
    }
}

fn log_success(previous: &State, snapshot: &KeySnapshot) {
    let old = previous.snapshot.as_ref().map(|old| old.fingerprint());
    match old {
        Some(old) if old != snapshot.fingerprint() => tracing::info!(
            source = %snapshot.label(),
            old_fingerprint = %old,
            new_fingerprint = %snapshot.fingerprint(),
            "rotated MegaLLM API key"
        ),
        _ if previous.stale_since.is_some() => tracing::info!(
            source = %snapshot.label(),
            fingerprint = %snapshot.fingerprint(),
            "the MegaLLM API key source recovered"
        ),
        // The stale grace had ended, so the last good key is no longer in the state.
        None => {
            if let Some(expired) = &previous.expired {
                tracing::info!(
                    source = %snapshot.label(),
                    old_fingerprint = %expired.fingerprint,
                    new_fingerprint = %snapshot.fingerprint(),
                    "the MegaLLM API key source recovered after the stale grace ended"
                );
            }
        }
        _ => {}
    }
}

/// Returns whether the last good key may still be served after `error`. That is the case
/// when the backend is unavailable, or when the file that supplied the last good key is
/// missing, as it is for a moment while Kubernetes swaps its `..data` symlink.
fn is_transient(error: &ChainError, last_good: Option<&KeySnapshot>) -> bool {
    match error.kind() {
        SourceErrorKind::Unavailable => true,
        SourceErrorKind::NotFound => last_good.is_some_and(|snapshot| {
            let from_file = matches!(
                snapshot.kind(),
                SourceKind::SecretFile | SourceKind::EnvFile | SourceKind::Dotenv
            );
            from_file
                && error.report().attempts.iter().any(|attempt| {
                    attempt.label == snapshot.label() && attempt.outcome == Outcome::NotFound
                })
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::StaticSource;

    const KEY: &str = "sk-mega-TESTUNIT000000000";

    fn expiry_in(delay: Duration, generation: u64, flag: &Arc<AtomicU64>) -> FreshExpiry {
        FreshExpiry {
            at: std::time::Instant::now() + delay,
            generation,
            flag: Arc::downgrade(flag),
        }
    }

    /// Polls `flag` every 5 ms for at most 2 s until it contains `expected`, and returns its last
    /// value.
    fn wait_for(flag: &AtomicU64, expected: u64) -> u64 {
        for _ in 0..400 {
            let value = flag.load(Ordering::Acquire);
            if value == expected {
                return value;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        flag.load(Ordering::Acquire)
    }

    fn provider(interval: Duration) -> KeyProvider {
        let chain = KeyChain::new().with(StaticSource::new(KEY).unwrap());
        KeyProvider::builder(chain)
            .refresh_interval(SourceKind::Static, interval)
            .watch(WatchMode::Off)
            .build()
            .unwrap()
    }

    fn multi_thread_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn timer_ends_mark_at_deadline() {
        let timer = FreshTimer::start().unwrap();
        let flag = Arc::new(AtomicU64::new(5));

        timer.schedule(expiry_in(Duration::from_millis(30), 5, &flag));

        assert_eq!(flag.load(Ordering::Acquire), 5);
        assert_eq!(wait_for(&flag, NOT_FRESH), NOT_FRESH);
        assert_eq!(timer.queued(), 0);
    }

    #[test]
    fn timer_keeps_newer_generation() {
        let timer = FreshTimer::start().unwrap();
        let flag = Arc::new(AtomicU64::new(6));

        timer.schedule(expiry_in(Duration::ZERO, 5, &flag));
        for _ in 0..400 {
            if timer.queued() == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }

        assert_eq!(timer.queued(), 0, "the expiry was processed");
        assert_eq!(flag.load(Ordering::Acquire), 6);
    }

    #[test]
    fn timer_wakes_for_earlier_deadline() {
        let timer = FreshTimer::start().unwrap();
        let late = Arc::new(AtomicU64::new(1));
        let early = Arc::new(AtomicU64::new(2));

        timer.schedule(expiry_in(Duration::from_secs(3600), 1, &late));
        std::thread::sleep(Duration::from_millis(20));
        timer.schedule(expiry_in(Duration::from_millis(20), 2, &early));

        assert_eq!(wait_for(&early, NOT_FRESH), NOT_FRESH);
        assert_eq!(late.load(Ordering::Acquire), 1);
    }

    #[test]
    fn queue_drops_expiries_that_change_nothing() {
        let timer = FreshTimer::start().unwrap();
        let live = Arc::new(AtomicU64::new(7));
        timer.schedule(expiry_in(Duration::from_secs(3600), 7, &live));

        let replaced = Arc::new(AtomicU64::new(1_000_000));
        for generation in 0..1_000 {
            // A provider that was dropped, and generations that a newer one replaced.
            let dropped = Arc::new(AtomicU64::new(generation));
            timer.schedule(expiry_in(Duration::from_secs(3600), generation, &dropped));
            timer.schedule(expiry_in(Duration::from_secs(3600), generation, &replaced));
        }

        assert!(timer.queued() < MIN_COMPACT_AT, "{} queued", timer.queued());
        assert!(timer.queued() >= 1);
        assert_eq!(live.load(Ordering::Acquire), 7);
    }

    #[test]
    fn multi_thread_publish_marks_until_deadline() {
        let provider = provider(Duration::from_millis(200));
        let runtime = multi_thread_runtime();

        runtime.block_on(provider.current()).unwrap();
        let generation = provider.inner.state.load().generation;

        assert_eq!(generation, 1);
        assert_eq!(provider.inner.fresh.load(Ordering::Acquire), generation);
        assert_eq!(wait_for(&provider.inner.fresh, NOT_FRESH), NOT_FRESH);
    }

    #[test]
    fn publish_outside_runtime_marks_key() {
        let provider = provider(Duration::from_secs(60));
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());

        // A static source resolves without waiting, so one poll outside any runtime publishes.
        let mut current = std::pin::pin!(provider.current());
        assert!(current.as_mut().poll(&mut context).is_ready());

        assert_eq!(provider.inner.fresh.load(Ordering::Acquire), 1);
    }

    #[test]
    fn current_thread_publish_does_not_mark() {
        let provider = provider(Duration::from_secs(60));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();

        runtime.block_on(provider.current()).unwrap();

        assert_eq!(provider.inner.state.load().generation, 1);
        assert_eq!(provider.inner.fresh.load(Ordering::Acquire), NOT_FRESH);
    }

    #[test]
    fn interval_within_margin_does_not_mark() {
        let provider = provider(Duration::from_millis(1));

        multi_thread_runtime().block_on(provider.current()).unwrap();

        assert_eq!(provider.inner.fresh.load(Ordering::Acquire), NOT_FRESH);
    }
}
