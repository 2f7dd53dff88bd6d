//! KeyProvider over real files: the Kubernetes `..data` symlink swap, a briefly missing file,
//! polling and .env rotation.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::{CANARY, CANARY_ROTATED, capture_logs};
use megallm_auth::{
    DotenvSource, Fingerprint, KeyChain, KeyProvider, KeySource, Resolved, SecretFileSource,
    SourceError, SourceKind, WatchMode,
};

/// Upper bound on waiting for an event, so a broken watcher fails the test instead of hanging
/// it. It bounds the wait; it is not a speed requirement.
const HANG_GUARD: Duration = Duration::from_secs(20);

fn fingerprint(key: &str) -> Fingerprint {
    Fingerprint::of(key.as_bytes())
}

/// Lays out a mounted Kubernetes secret: `..<version>/api_key`, `..data -> ..<version>`,
/// `api_key -> ..data/api_key`.
fn mount_secret(dir: &Path, version: &str, key: &str) -> PathBuf {
    let versioned = dir.join(format!("..{version}"));
    std::fs::create_dir(&versioned).unwrap();
    std::fs::write(versioned.join("api_key"), format!("{key}\n")).unwrap();
    symlink(format!("..{version}"), dir.join("..data")).unwrap();
    symlink("..data/api_key", dir.join("api_key")).unwrap();
    dir.join("api_key")
}

/// Rotates the secret as the kubelet does: new versioned directory, `..data_tmp` pointing at
/// it, rename over `..data`, delete the old directory.
fn rotate_secret(dir: &Path, old: &str, new: &str, key: &str) {
    let versioned = dir.join(format!("..{new}"));
    std::fs::create_dir(&versioned).unwrap();
    std::fs::write(versioned.join("api_key"), format!("{key}\n")).unwrap();
    symlink(format!("..{new}"), dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join(format!("..{old}"))).unwrap();
}

async fn wait_for_key(provider: &KeyProvider, key: &str) {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        if let Ok(snapshot) = provider.current().await
            && snapshot.fingerprint() == &fingerprint(key)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the provider never served the rotated key"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_swap_rotates_key() {
    let logs = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let path = mount_secret(dir.path(), "2025_01_01.1", CANARY);
    // A long interval: only the directory watcher can deliver K2 during this test.
    let provider = KeyProvider::builder(KeyChain::new().with(SecretFileSource::new(&path)))
        .refresh_interval(SourceKind::SecretFile, Duration::from_secs(3600))
        .build()
        .unwrap();
    assert_eq!(
        provider.current().await.unwrap().fingerprint(),
        &fingerprint(CANARY)
    );

    // A reader runs throughout the swap and records every result.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let provider = provider.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                seen.push(provider.current().await.map(|s| s.fingerprint().clone()));
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    rotate_secret(dir.path(), "2025_01_01.1", "2025_01_02.2", CANARY_ROTATED);
    wait_for_key(&provider, CANARY_ROTATED).await;
    stop.store(true, Ordering::Relaxed);

    let seen = reader.await.unwrap();
    assert!(!seen.is_empty());
    for result in &seen {
        let served = result.as_ref().expect("no error during the swap");
        assert!(
            served == &fingerprint(CANARY) || served == &fingerprint(CANARY_ROTATED),
            "unexpected key {served}"
        );
    }
    logs.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_file_keeps_last_key() {
    let logs = capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let path = mount_secret(dir.path(), "2025_01_01.1", CANARY);
    let provider = KeyProvider::builder(KeyChain::new().with(SecretFileSource::new(&path)))
        .refresh_interval(SourceKind::SecretFile, Duration::from_secs(3600))
        .retry_delay(Duration::from_millis(50))
        .build()
        .unwrap();
    provider.current().await.unwrap();

    // A non-atomic swap: `..data` disappears before the new one is in place.
    std::fs::remove_file(dir.path().join("..data")).unwrap();
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while !logs.contents().contains("serving the last good key") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watcher never re-read the file"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let during = provider
        .current()
        .await
        .expect("the last good key is served");
    assert_eq!(during.fingerprint(), &fingerprint(CANARY));

    let versioned = dir.path().join("..2025_01_02.2");
    std::fs::create_dir(&versioned).unwrap();
    std::fs::write(versioned.join("api_key"), format!("{CANARY_ROTATED}\n")).unwrap();
    symlink("..2025_01_02.2", dir.path().join("..data")).unwrap();
    wait_for_key(&provider, CANARY_ROTATED).await;

    let contents = logs.contents();
    let warning = contents
        .lines()
        .find(|line| line.contains("serving the last good key"))
        .unwrap();
    assert!(warning.contains(fingerprint(CANARY).as_str()), "{warning}");
    assert!(
        warning.contains(&format!("file:{}", path.display())),
        "{warning}"
    );
    logs.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_detects_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let path = mount_secret(dir.path(), "2025_01_01.1", CANARY);
    let provider = KeyProvider::builder(KeyChain::new().with(SecretFileSource::new(&path)))
        .refresh_interval(SourceKind::SecretFile, Duration::from_millis(200))
        .watch(WatchMode::Poll)
        .build()
        .unwrap();
    provider.current().await.unwrap();

    rotate_secret(dir.path(), "2025_01_01.1", "2025_01_02.2", CANARY_ROTATED);

    wait_for_key(&provider, CANARY_ROTATED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwatched_file_rotates_after_interval() {
    let dir = tempfile::tempdir().unwrap();
    let path = mount_secret(dir.path(), "2025_01_01.1", CANARY);
    let provider = KeyProvider::builder(KeyChain::new().with(SecretFileSource::new(&path)))
        .refresh_interval(SourceKind::SecretFile, Duration::from_millis(200))
        .watch(WatchMode::Off)
        .build()
        .unwrap();
    provider.current().await.unwrap();

    rotate_secret(dir.path(), "2025_01_01.1", "2025_01_02.2", CANARY_ROTATED);

    wait_for_key(&provider, CANARY_ROTATED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dotenv_change_rotates_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".env");
    std::fs::write(&path, format!("MEGALLM_API_KEY={CANARY}\n")).unwrap();
    let provider = KeyProvider::builder(KeyChain::new().with(DotenvSource::new(&path)))
        .refresh_interval(SourceKind::Dotenv, Duration::from_secs(3600))
        .build()
        .unwrap();
    assert_eq!(
        provider.current().await.unwrap().fingerprint(),
        &fingerprint(CANARY)
    );

    // Written next to the file and renamed over it, so no reader sees a half-written file.
    let staging = dir.path().join(".env.tmp");
    std::fs::write(&staging, format!("MEGALLM_API_KEY={CANARY_ROTATED}\n")).unwrap();
    std::fs::rename(&staging, &path).unwrap();

    wait_for_key(&provider, CANARY_ROTATED).await;
}

/// A deleted directory takes its inotify watch with it. When the mount comes back, the
/// provider must watch it again, so later swaps still arrive without the refresh interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreated_directory_is_watched_again() {
    let logs = capture_logs();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("mount");
    std::fs::create_dir(&dir).unwrap();
    let path = mount_secret(&dir, "2025_01_01.1", CANARY);
    let provider = KeyProvider::builder(KeyChain::new().with(SecretFileSource::new(&path)))
        .refresh_interval(SourceKind::SecretFile, Duration::from_secs(3600))
        .build()
        .unwrap();
    assert_eq!(
        provider.current().await.unwrap().fingerprint(),
        &fingerprint(CANARY)
    );

    std::fs::remove_dir_all(&dir).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    std::fs::create_dir(&dir).unwrap();
    mount_secret(&dir, "2025_01_02.2", CANARY_ROTATED);
    wait_for_key(&provider, CANARY_ROTATED).await;

    rotate_secret(&dir, "2025_01_02.2", "2025_01_03.3", CANARY);
    wait_for_key(&provider, CANARY).await;

    assert!(
        logs.contents()
            .contains("watching the recreated directory of a MegaLLM API key file"),
        "no log line says the directory is watched again"
    );
    logs.assert_clean();
}

/// A secret file source that counts its resolutions.
#[derive(Debug)]
struct Counted {
    inner: SecretFileSource,
    calls: Arc<AtomicUsize>,
}

#[async_trait]
impl KeySource for Counted {
    fn label(&self) -> &str {
        self.inner.label()
    }

    fn kind(&self) -> SourceKind {
        self.inner.kind()
    }

    async fn resolve(&self) -> Result<Resolved, SourceError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.resolve().await
    }

    fn watch_paths(&self) -> Vec<PathBuf> {
        self.inner.watch_paths()
    }
}

/// Returns a watched provider over the secret file at `path` whose interval is long enough
/// that only the watcher re-reads the file during a test, and its resolution counter.
fn counted_provider(path: &Path) -> (KeyProvider, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let source = Counted {
        inner: SecretFileSource::new(path),
        calls: calls.clone(),
    };
    let provider = KeyProvider::builder(KeyChain::new().with(source))
        .refresh_interval(SourceKind::SecretFile, Duration::from_secs(3600))
        .build()
        .unwrap();
    (provider, calls)
}

/// Replaces the file at `path` by writing a temporary file and renaming it over the old one.
fn replace_file(path: &Path, key: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, format!("{key}\n")).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// Reading the key file opens and closes it, which inotify reports. Those reports must not
/// count as changes, or every read would cause the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_reads_do_not_trigger_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api_key");
    std::fs::write(&path, format!("{CANARY}\n")).unwrap();
    let (provider, calls) = counted_provider(&path);

    provider.current().await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "no change, no second read");

    replace_file(&path, CANARY_ROTATED);
    wait_for_key(&provider, CANARY_ROTATED).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "one read for one replacement"
    );
}

/// A burst of changes closer together than the debounce causes one resolution after the
/// burst, which reads the last key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_changes_resolves_after_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api_key");
    std::fs::write(&path, format!("{CANARY}\n")).unwrap();
    let (provider, calls) = counted_provider(&path);
    provider.current().await.unwrap();

    for round in 0..10 {
        replace_file(&path, &format!("sk-mega-TESTBURST{round:08}"));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    replace_file(&path, CANARY_ROTATED);
    wait_for_key(&provider, CANARY_ROTATED).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Scheduling on a busy machine can split the burst once. Ten resolutions would mean no
    // debounce at all.
    let resolutions = calls.load(Ordering::SeqCst) - 1;
    assert!((1..=2).contains(&resolutions), "{resolutions} resolutions");
}

/// A cold read outside any runtime resolves without starting a watcher. The first resolution
/// inside a runtime starts it.
#[test]
fn cold_read_outside_runtime_defers_watching() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api_key");
    std::fs::write(&path, format!("{CANARY}\n")).unwrap();
    let (provider, calls) = counted_provider(&path);

    let first = block_on_outside_runtime(provider.current()).unwrap();
    assert_eq!(first.fingerprint(), &fingerprint(CANARY));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        provider.invalidate(first.fingerprint()).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        replace_file(&path, CANARY_ROTATED);
        wait_for_key(&provider, CANARY_ROTATED).await;
    });
}

/// The watcher runs on the runtime of the first resolution. When that runtime shuts down, the
/// next resolution on another runtime starts watching again.
#[test]
fn watching_resumes_after_runtime_ends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api_key");
    std::fs::write(&path, format!("{CANARY}\n")).unwrap();
    let (provider, _calls) = counted_provider(&path);
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    };

    let first = runtime().block_on(provider.current()).unwrap();

    runtime().block_on(async {
        provider.invalidate(first.fingerprint()).await.unwrap();
        replace_file(&path, CANARY_ROTATED);
        wait_for_key(&provider, CANARY_ROTATED).await;
    });
}

/// Polls `future` on this thread, outside any Tokio runtime, until it completes.
fn block_on_outside_runtime<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker = std::task::Waker::noop();
    let mut context = std::task::Context::from_waker(waker);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Returns the Display of `error` and of each of its causes.
fn messages(error: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut messages = vec![error.to_string()];
    let mut cause = error.source();
    while let Some(inner) = cause {
        messages.push(inner.to_string());
        cause = inner.source();
    }
    messages
}

/// A reporter that prints every cause, such as anyhow's `{:#}`, prints no message twice, because
/// the provider's and the chain's messages already include the source's. Only the `InvalidKey`
/// cause, kept for callers that read its problem, states the problem again.
#[tokio::test]
async fn error_causes_are_not_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let invalid = dir.path().join("invalid");
    std::fs::write(&invalid, "sk-proj-TESTOTHERVENDOR00\n").unwrap();
    let missing = dir.path().join("missing");

    let provider = KeyProvider::builder(KeyChain::new().with(SecretFileSource::new(&invalid)))
        .watch(WatchMode::Off)
        .build()
        .unwrap();
    let error = provider.current().await.unwrap_err();
    let chain = messages(&error);
    assert_eq!(chain.len(), 2, "{chain:#?}");
    assert!(
        chain[0].contains(&format!("file:{}", invalid.display())),
        "{chain:#?}"
    );
    let cause = std::error::Error::source(&error).unwrap();
    let invalid_key = cause
        .downcast_ref::<megallm_auth::InvalidKey>()
        .expect("the cause below the messages is the InvalidKey");
    assert_eq!(
        invalid_key.problem,
        megallm_auth::KeyProblem::ForeignKey {
            vendor: "OpenAI (project key)"
        }
    );

    let provider = KeyProvider::builder(KeyChain::new().with(SecretFileSource::new(&missing)))
        .watch(WatchMode::Off)
        .build()
        .unwrap();
    let error = provider.current().await.unwrap_err();
    let chain = messages(&error);
    assert_eq!(chain.len(), 1, "{chain:#?}");
    assert!(chain[0].contains("does not exist"), "{chain:#?}");
}
