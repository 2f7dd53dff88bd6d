//! KeyProvider caching: single flight, refresh ahead, stale grace, invalidation and headers.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::{CANARY, CANARY_ROTATED, assert_no_canary, capture_logs};
use megallm_auth::{
    ApiKey, ApiStyle, Error, ErrorKind, Fingerprint, KeyChain, KeyPolicy, KeyProvider, KeySource,
    Resolved, SourceError, SourceErrorKind, SourceKind, WatchMode,
};

/// A source whose key and failure can be changed by the test, and which counts resolutions.
#[derive(Debug)]
struct Backend {
    key: Mutex<String>,
    failure: Mutex<Option<SourceErrorKind>>,
    calls: AtomicUsize,
    delay: Duration,
    kind: SourceKind,
}

impl Backend {
    fn new(key: &str, kind: SourceKind) -> Arc<Backend> {
        Backend::with_delay(key, kind, Duration::ZERO)
    }

    fn with_delay(key: &str, kind: SourceKind, delay: Duration) -> Arc<Backend> {
        Arc::new(Backend {
            key: Mutex::new(key.to_owned()),
            failure: Mutex::new(None),
            calls: AtomicUsize::new(0),
            delay,
            kind,
        })
    }

    fn set_key(&self, key: &str) {
        *self.key.lock().unwrap() = key.to_owned();
    }

    fn fail_with(&self, kind: Option<SourceErrorKind>) {
        *self.failure.lock().unwrap() = kind;
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
struct Shared(Arc<Backend>);

#[async_trait]
impl KeySource for Shared {
    fn label(&self) -> &str {
        "test:backend"
    }

    fn kind(&self) -> SourceKind {
        self.0.kind
    }

    async fn resolve(&self) -> Result<Resolved, SourceError> {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        if !self.0.delay.is_zero() {
            tokio::time::sleep(self.0.delay).await;
        }
        if let Some(kind) = *self.0.failure.lock().unwrap() {
            return Err(SourceError::new(kind, "test:backend", "backend refused"));
        }
        let key = ApiKey::parse(
            &self.0.key.lock().unwrap(),
            "test:backend",
            KeyPolicy::Strict,
        )?;
        Ok(Resolved::new(key, "test:backend", self.0.kind).with_version("v1"))
    }
}

fn provider_over(backend: &Arc<Backend>) -> megallm_auth::KeyProviderBuilder {
    KeyProvider::builder(KeyChain::new().with(Shared(backend.clone()))).watch(WatchMode::Off)
}

fn fingerprint(key: &str) -> Fingerprint {
    Fingerprint::of(key.as_bytes())
}

/// Lets spawned background refreshes run to completion on a paused current-thread runtime.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_resolves_once() {
    let backend = Backend::with_delay(CANARY, SourceKind::Static, Duration::from_millis(50));
    let provider = provider_over(&backend).build().unwrap();

    let callers: Vec<_> = (0..2000)
        .map(|_| {
            let provider = provider.clone();
            tokio::spawn(async move { provider.current().await.map(|s| s.fingerprint().clone()) })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap().unwrap(), fingerprint(CANARY));
    }

    assert_eq!(backend.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn fresh_key_is_served_from_cache() {
    let backend = Backend::new(CANARY, SourceKind::Static);
    let provider = provider_over(&backend).build().unwrap();

    let first = provider.current().await.unwrap();
    let second = provider.current().await.unwrap();

    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(backend.calls(), 1);
    assert_eq!(first.label(), "test:backend");
    assert_eq!(first.kind(), SourceKind::Static);
    assert_eq!(first.version(), Some("v1"));
    assert_eq!(first.fingerprint(), &fingerprint(CANARY));
}

#[tokio::test(start_paused = true)]
async fn refresh_ahead_keeps_old_key_meanwhile() {
    let backend = Backend::new(CANARY, SourceKind::AwsSecretsManager);
    let provider = provider_over(&backend)
        .refresh_interval(SourceKind::AwsSecretsManager, Duration::from_secs(60))
        .build()
        .unwrap();
    provider.current().await.unwrap();
    backend.set_key(CANARY_ROTATED);

    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(
        provider.current().await.unwrap().fingerprint(),
        &fingerprint(CANARY)
    );
    settle().await;
    assert_eq!(backend.calls(), 1, "no refresh before the interval");

    tokio::time::advance(Duration::from_secs(2)).await;
    let during = provider.current().await.unwrap();
    assert_eq!(
        during.fingerprint(),
        &fingerprint(CANARY),
        "old key while refreshing"
    );
    settle().await;

    let after = provider.current().await.unwrap();
    assert_eq!(after.fingerprint(), &fingerprint(CANARY_ROTATED));
    assert_eq!(backend.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn remote_kinds_refresh_less_often() {
    let file = Backend::new(CANARY, SourceKind::SecretFile);
    let remote = Backend::new(CANARY, SourceKind::Vault);
    let file_provider = provider_over(&file).build().unwrap();
    let remote_provider = provider_over(&remote).build().unwrap();
    file_provider.current().await.unwrap();
    remote_provider.current().await.unwrap();

    tokio::time::advance(megallm_auth::DEFAULT_FILE_REFRESH + Duration::from_secs(1)).await;
    file_provider.current().await.unwrap();
    remote_provider.current().await.unwrap();
    settle().await;

    assert_eq!(file.calls(), 2);
    assert_eq!(remote.calls(), 1);
    assert!(megallm_auth::DEFAULT_REMOTE_REFRESH > megallm_auth::DEFAULT_FILE_REFRESH);
}

#[tokio::test(start_paused = true)]
async fn stale_grace_serves_then_fails() {
    let logs = capture_logs();
    let backend = Backend::new(CANARY, SourceKind::Vault);
    let provider = provider_over(&backend)
        .refresh_interval(SourceKind::Vault, Duration::from_secs(10))
        .stale_grace(Duration::from_secs(30))
        .retry_delay(Duration::from_secs(1))
        .build()
        .unwrap();
    provider.current().await.unwrap();
    backend.fail_with(Some(SourceErrorKind::Unavailable));

    // The refresh at 11 s fails: the stale grace runs from then until 41 s.
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(
        provider.current().await.unwrap().fingerprint(),
        &fingerprint(CANARY)
    );
    settle().await;
    assert_eq!(backend.calls(), 2);

    for _ in 0..29 {
        tokio::time::advance(Duration::from_secs(1)).await;
        let served = provider.current().await.expect("within the stale grace");
        assert_eq!(served.fingerprint(), &fingerprint(CANARY));
        settle().await;
    }

    tokio::time::advance(Duration::from_secs(2)).await;
    let error = provider.current().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable);
    let Error::Refresh(refresh) = &error else {
        panic!("expected a refresh error: {error:?}");
    };
    assert!(refresh.stale_grace_ended());
    let text = error.to_string();
    assert!(text.contains("stale grace of 30s"), "{text}");
    assert!(text.contains(fingerprint(CANARY).as_str()), "{text}");
    assert_no_canary("error Display", &text);
    assert_no_canary("error Debug", &format!("{error:?}"));

    let contents = logs.contents();
    assert!(contents.contains("serving the last good key"), "{contents}");

    // The source comes back with a rotated key after the grace ended.
    backend.set_key(CANARY_ROTATED);
    backend.fail_with(None);
    tokio::time::advance(Duration::from_secs(2)).await;
    let recovered = provider.current().await.unwrap();
    assert_eq!(recovered.fingerprint(), &fingerprint(CANARY_ROTATED));
    let contents = logs.contents();
    let line = contents
        .lines()
        .find(|line| line.contains("recovered after the stale grace ended"))
        .expect("a log line for the recovery");
    assert!(line.contains(fingerprint(CANARY).as_str()), "{line}");
    assert!(
        line.contains(fingerprint(CANARY_ROTATED).as_str()),
        "{line}"
    );
    logs.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn source_recovery_ends_stale_period() {
    let backend = Backend::new(CANARY, SourceKind::Vault);
    let provider = provider_over(&backend)
        .refresh_interval(SourceKind::Vault, Duration::from_secs(10))
        .stale_grace(Duration::from_secs(5))
        .retry_delay(Duration::from_secs(1))
        .build()
        .unwrap();
    provider.current().await.unwrap();
    backend.fail_with(Some(SourceErrorKind::Unavailable));
    tokio::time::advance(Duration::from_secs(11)).await;
    provider.current().await.unwrap();
    settle().await;

    backend.fail_with(None);
    backend.set_key(CANARY_ROTATED);
    tokio::time::advance(Duration::from_secs(2)).await;
    provider.current().await.unwrap();
    settle().await;

    tokio::time::advance(Duration::from_secs(10)).await;
    let served = provider
        .current()
        .await
        .expect("recovered, so no grace applies");
    assert_eq!(served.fingerprint(), &fingerprint(CANARY_ROTATED));
}

#[tokio::test(start_paused = true)]
async fn hard_failure_is_not_served_stale() {
    let backend = Backend::new(CANARY, SourceKind::Vault);
    let provider = provider_over(&backend)
        .refresh_interval(SourceKind::Vault, Duration::from_secs(10))
        .stale_grace(Duration::from_secs(300))
        .build()
        .unwrap();
    provider.current().await.unwrap();
    backend.fail_with(Some(SourceErrorKind::Denied));

    tokio::time::advance(Duration::from_secs(11)).await;
    provider.current().await.unwrap();
    settle().await;

    let error = provider.current().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Denied);
    let Error::Refresh(refresh) = &error else {
        panic!("expected a refresh error: {error:?}");
    };
    assert!(!refresh.stale_grace_ended());
    assert_eq!(refresh.chain().report().attempts[0].label, "test:backend");
}

#[tokio::test(start_paused = true)]
async fn failure_is_cached_for_retry_delay() {
    let backend = Backend::new(CANARY, SourceKind::Vault);
    backend.fail_with(Some(SourceErrorKind::NotFound));
    let provider = provider_over(&backend)
        .retry_delay(Duration::from_secs(2))
        .build()
        .unwrap();

    assert_eq!(
        provider.current().await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        provider.current().await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(backend.calls(), 1);

    backend.fail_with(None);
    tokio::time::advance(Duration::from_secs(2)).await;
    let served = provider.current().await.unwrap();
    assert_eq!(served.fingerprint(), &fingerprint(CANARY));
    assert_eq!(backend.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn invalidate_resolves_once_per_key() {
    let backend = Backend::new(CANARY, SourceKind::Static);
    let provider = provider_over(&backend).build().unwrap();
    provider.current().await.unwrap();
    backend.set_key(CANARY_ROTATED);

    let fresh = provider.invalidate(&fingerprint(CANARY)).await.unwrap();
    assert_eq!(fresh.fingerprint(), &fingerprint(CANARY_ROTATED));
    assert_eq!(backend.calls(), 2);

    let again = provider.invalidate(&fingerprint(CANARY)).await.unwrap();
    assert_eq!(again.fingerprint(), &fingerprint(CANARY_ROTATED));
    assert_eq!(backend.calls(), 2, "the rejected key was already replaced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_invalidations_resolve_once() {
    let backend = Backend::with_delay(CANARY, SourceKind::Static, Duration::from_millis(100));
    let provider = provider_over(&backend).build().unwrap();
    provider.current().await.unwrap();

    let callers: Vec<_> = (0..50)
        .map(|_| {
            let provider = provider.clone();
            tokio::spawn(async move { provider.invalidate(&fingerprint(CANARY)).await })
        })
        .collect();
    for caller in callers {
        let snapshot = caller.await.unwrap().unwrap();
        assert_eq!(snapshot.fingerprint(), &fingerprint(CANARY));
    }

    assert_eq!(backend.calls(), 2);
}

/// 401s that arrive one after another for a key the source still returns: each would
/// otherwise cost a backend call.
#[tokio::test(start_paused = true)]
async fn staggered_invalidations_wait_retry_delay() {
    let backend = Backend::new(CANARY, SourceKind::Static);
    let provider = provider_over(&backend)
        .retry_delay(Duration::from_secs(1))
        .build()
        .unwrap();
    provider.current().await.unwrap();

    for _ in 0..20 {
        let snapshot = provider.invalidate(&fingerprint(CANARY)).await.unwrap();
        assert_eq!(snapshot.fingerprint(), &fingerprint(CANARY));
    }
    assert_eq!(backend.calls(), 2, "one resolution for the burst");

    tokio::time::advance(Duration::from_millis(1100)).await;
    provider.invalidate(&fingerprint(CANARY)).await.unwrap();
    assert_eq!(backend.calls(), 3, "a later 401 resolves again");
}

#[tokio::test(start_paused = true)]
async fn rotation_logs_both_fingerprints() {
    let logs = capture_logs();
    let backend = Backend::new(CANARY, SourceKind::Static);
    let provider = provider_over(&backend).build().unwrap();
    provider.current().await.unwrap();
    backend.set_key(CANARY_ROTATED);

    provider.invalidate(&fingerprint(CANARY)).await.unwrap();

    let contents = logs.contents();
    let line = contents
        .lines()
        .find(|line| {
            line.contains("rotated MegaLLM API key")
                && line.contains(fingerprint(CANARY_ROTATED).as_str())
        })
        .unwrap_or_else(|| panic!("no rotation line in {contents}"));
    assert!(
        line.contains(&format!("old_fingerprint={}", fingerprint(CANARY))),
        "{line}"
    );
    assert!(line.contains("source=test:backend"), "{line}");
    logs.assert_clean();
}

#[tokio::test(start_paused = true)]
async fn snapshot_headers_follow_settings() {
    let backend = Backend::new(CANARY, SourceKind::Static);
    let provider = provider_over(&backend)
        .style(ApiStyle::Anthropic)
        .debug_auth(true)
        .anthropic_version("2024-10-22")
        .build()
        .unwrap();

    let snapshot = provider.current().await.unwrap();
    let headers = snapshot.headers().to_header_map();

    assert_eq!(headers["x-api-key"].as_bytes(), CANARY.as_bytes());
    assert!(headers["x-api-key"].is_sensitive());
    assert_eq!(headers["anthropic-version"], "2024-10-22");
    assert_eq!(headers["x-debug-auth"], "true");
    assert!(!headers.contains_key("authorization"));
    assert_no_canary("snapshot Debug", &format!("{snapshot:?}"));
    assert_no_canary("provider Debug", &format!("{provider:?}"));
}

#[test]
fn invalid_anthropic_version_is_rejected() {
    let backend = Backend::new(CANARY, SourceKind::Static);

    let error = provider_over(&backend)
        .anthropic_version("2023-06-01\r\nx-evil: 1")
        .build()
        .unwrap_err();

    assert_eq!(error.kind(), ErrorKind::InvalidKey);
    assert!(error.to_string().contains("anthropic-version"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn try_current_never_waits() {
    let backend = Backend::new(CANARY, SourceKind::Static);
    let provider = provider_over(&backend).build().unwrap();

    assert!(provider.try_current().is_none());
    settle().await;

    let snapshot = provider
        .try_current()
        .expect("the background resolution finished");
    assert_eq!(snapshot.fingerprint(), &fingerprint(CANARY));
    assert_eq!(backend.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn apply_current_writes_the_current_headers() {
    let backend = Backend::new(CANARY, SourceKind::Static);
    let provider = provider_over(&backend)
        .refresh_interval(SourceKind::Static, Duration::from_secs(60))
        .style(ApiStyle::Anthropic)
        .build()
        .unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "authorization",
        "Bearer sk-mega-TESTSTALE0000".parse().unwrap(),
    );

    provider.apply_current(&mut headers).await.unwrap();

    assert_eq!(headers["x-api-key"].as_bytes(), CANARY.as_bytes());
    assert!(headers["x-api-key"].is_sensitive());
    assert_eq!(headers["anthropic-version"], "2023-06-01");
    assert!(!headers.contains_key("authorization"));
    assert_eq!(backend.calls(), 1);

    backend.set_key(CANARY_ROTATED);
    tokio::time::advance(Duration::from_secs(61)).await;
    provider.apply_current(&mut headers).await.unwrap();
    assert_eq!(
        headers["x-api-key"].as_bytes(),
        CANARY.as_bytes(),
        "the old key while the refresh runs"
    );
    settle().await;
    provider.apply_current(&mut headers).await.unwrap();
    assert_eq!(headers["x-api-key"].as_bytes(), CANARY_ROTATED.as_bytes());
    assert_eq!(headers.len(), 2);
    assert_eq!(backend.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn apply_current_failure_keeps_headers() {
    let backend = Backend::new(CANARY, SourceKind::Static);
    backend.fail_with(Some(SourceErrorKind::Denied));
    let provider = provider_over(&backend).build().unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", "application/json".parse().unwrap());

    let error = provider.apply_current(&mut headers).await.unwrap_err();

    assert!(matches!(error, Error::Refresh(_)), "{error:?}");
    assert_eq!(error.kind(), ErrorKind::Denied);
    assert_eq!(headers.len(), 1);
    assert_eq!(headers["content-type"], "application/json");
}

/// Builds a current-thread runtime with its timer enabled. Keys it publishes are not marked
/// fresh, because its clock could be paused.
fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// Builds a multi-thread runtime with one worker. Keys it publishes are marked fresh until
/// shortly before their refresh is due.
fn multi_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap()
}

/// Builds a provider over `backend` whose static key is due for refresh after 300 ms.
fn provider_due_after_300ms(backend: &Arc<Backend>) -> KeyProvider {
    provider_over(backend)
        .refresh_interval(SourceKind::Static, Duration::from_millis(300))
        .build()
        .unwrap()
}

/// Reads the key every 10 ms, for at most 2 s, until it is the rotated one. Returns whether it
/// was.
async fn reads_until_rotated(provider: &KeyProvider) -> bool {
    for _ in 0..200 {
        let snapshot = provider.current().await.unwrap();
        if snapshot.fingerprint() == &fingerprint(CANARY_ROTATED) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// The runtime that published a key can end before the key is due for refresh. A read on
/// another runtime must still find the key due and start the refresh.
#[test]
fn refresh_starts_after_publisher_runtime_ends() {
    let backend = Backend::new(CANARY, SourceKind::Static);
    let provider = provider_due_after_300ms(&backend);
    let first = multi_thread_runtime().block_on(provider.current()).unwrap();
    assert_eq!(first.fingerprint(), &fingerprint(CANARY));
    backend.set_key(CANARY_ROTATED);

    std::thread::sleep(Duration::from_millis(400));
    // Outside any runtime the refresh goes to the runtime that resolved the key, which has
    // ended. The read still serves the old key and leaves the refresh to the next runtime.
    let due = provider.try_current().unwrap();
    assert_eq!(due.fingerprint(), &fingerprint(CANARY));
    let rotated = current_thread_runtime().block_on(reads_until_rotated(&provider));

    assert!(rotated, "the key was never refreshed");
    assert_eq!(backend.calls(), 2);
}

/// Reads on a thread outside any runtime serve a fresh key without resolving, and once the key
/// is due they start its refresh on the multi-thread runtime that resolved it.
#[test]
fn outside_runtime_reads_use_resolver() {
    let backend = Backend::new(CANARY, SourceKind::Static);
    let provider = provider_due_after_300ms(&backend);
    let publisher = multi_thread_runtime();
    publisher.block_on(provider.current()).unwrap();
    backend.set_key(CANARY_ROTATED);

    let fresh = provider.try_current().unwrap();
    assert_eq!(fresh.fingerprint(), &fingerprint(CANARY));
    let mut headers = http::HeaderMap::new();
    assert!(provider.try_apply_current(&mut headers));
    assert_eq!(
        headers["authorization"].as_bytes(),
        format!("Bearer {CANARY}").as_bytes()
    );
    assert_eq!(backend.calls(), 1);

    // Past the interval the first read still serves the old key and starts the refresh.
    std::thread::sleep(Duration::from_millis(400));
    let due = provider.try_current().unwrap();
    assert_eq!(due.fingerprint(), &fingerprint(CANARY));
    let mut rotated = false;
    for _ in 0..200 {
        let snapshot = provider.try_current().unwrap();
        if snapshot.fingerprint() == &fingerprint(CANARY_ROTATED) {
            rotated = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    assert!(rotated, "the key was never refreshed");
    assert_eq!(backend.calls(), 2);
}

/// A current-thread runtime runs spawned tasks only inside `block_on`. One that resolved a key
/// and then sits idle gets no refreshes from reads outside any runtime, which serve the key
/// they have, and does not keep readers on other runtimes from refreshing it.
#[test]
fn idle_current_thread_resolver_delays_nothing() {
    let backend = Backend::new(CANARY, SourceKind::Static);
    let provider = provider_due_after_300ms(&backend);
    let publisher = current_thread_runtime();
    publisher.block_on(provider.current()).unwrap();
    backend.set_key(CANARY_ROTATED);

    std::thread::sleep(Duration::from_millis(400));
    let due = provider.try_current().unwrap();
    std::thread::sleep(Duration::from_millis(100));

    assert_eq!(due.fingerprint(), &fingerprint(CANARY));
    assert_eq!(backend.calls(), 1);
    let rotated = multi_thread_runtime().block_on(reads_until_rotated(&provider));
    assert!(rotated, "a read inside a runtime starts the refresh");
    assert_eq!(backend.calls(), 2);
    drop(publisher);
}

/// A key served through a failing source is never marked fresh, so its stale grace ends on
/// time even when the next attempt is due much later.
#[test]
fn stale_key_stops_when_grace_ends() {
    let backend = Backend::new(CANARY, SourceKind::Static);
    let provider = provider_over(&backend)
        .refresh_interval(SourceKind::Static, Duration::from_millis(200))
        .stale_grace(Duration::from_millis(300))
        .retry_delay(Duration::from_secs(5))
        .build()
        .unwrap();
    let runtime = multi_thread_runtime();
    runtime.block_on(provider.current()).unwrap();
    backend.fail_with(Some(SourceErrorKind::Unavailable));

    std::thread::sleep(Duration::from_millis(250));
    runtime.block_on(async {
        let served = provider.current().await.unwrap();
        assert_eq!(served.fingerprint(), &fingerprint(CANARY));
        for _ in 0..200 {
            if backend.calls() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    assert_eq!(backend.calls(), 2, "the refresh ran and failed");
    let stale = provider.try_current().unwrap();
    assert_eq!(stale.fingerprint(), &fingerprint(CANARY));

    std::thread::sleep(Duration::from_millis(400));
    let error = runtime.block_on(provider.current()).unwrap_err();
    let Error::Refresh(refresh) = &error else {
        panic!("expected a refresh error: {error:?}");
    };
    assert!(refresh.stale_grace_ended());
    assert_eq!(error.kind(), ErrorKind::Unavailable);
    assert_eq!(backend.calls(), 2, "no new attempt before the retry delay");
}

#[tokio::test(start_paused = true)]
async fn try_apply_current_never_waits() {
    let backend = Backend::new(CANARY, SourceKind::Static);
    let provider = provider_over(&backend).build().unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", "application/json".parse().unwrap());

    assert!(!provider.try_apply_current(&mut headers));
    assert_eq!(headers.len(), 1, "nothing written before a key exists");
    settle().await;

    assert!(provider.try_apply_current(&mut headers));
    assert_eq!(
        headers["authorization"].as_bytes(),
        format!("Bearer {CANARY}").as_bytes()
    );
    assert!(headers["authorization"].is_sensitive());
    assert_eq!(headers.len(), 2);
    assert_eq!(backend.calls(), 1);
}
