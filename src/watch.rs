//! Change detection for the files a key was read from: the directories are watched with
//! `notify`, and a [`KeyProvider`](crate::KeyProvider) re-resolves shortly after any change.
//!
//! The parent directory of each file is watched, not the file: Kubernetes rotates a mounted
//! secret by pointing the `..data` symlink in that directory at a new timestamped directory, so
//! the file's own path is never written.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// The way a [`KeyProvider`](crate::KeyProvider) detects that a file it read a key from changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchMode {
    /// The platform's file notifications (inotify, FSEvents, ReadDirectoryChangesW), or
    /// polling when they cannot be set up (for example when the inotify watch limit is reached).
    #[default]
    Auto,
    /// Polling the directories at the file refresh interval, comparing contents.
    Poll,
    /// No watching: files are read again only when the refresh interval has passed.
    Off,
}

/// Time without further events after which a burst of changes counts as finished, so that
/// the several events of one symlink swap cause one resolution.
#[cfg(any(feature = "secret-file", feature = "dotenv"))]
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Maximum time a burst may delay its resolution, so that a directory that never stops
/// changing still has its key re-read.
#[cfg(any(feature = "secret-file", feature = "dotenv"))]
const MAX_BURST: Duration = Duration::from_secs(1);

/// Maximum time between checks that each watched directory is still the one being watched.
/// A directory that was deleted and created again has lost its watch and is watched anew.
#[cfg(any(feature = "secret-file", feature = "dotenv"))]
const DIRECTORY_CHECK: Duration = Duration::from_secs(1);

/// A running watcher. Dropping it stops its task, which owns the watcher.
pub(crate) struct WatchHandle {
    #[cfg(any(feature = "secret-file", feature = "dotenv"))]
    task: tokio::task::JoinHandle<()>,
}

impl WatchHandle {
    /// Returns whether the watcher's task has ended, as it does when its runtime shuts down.
    pub(crate) fn is_finished(&self) -> bool {
        #[cfg(any(feature = "secret-file", feature = "dotenv"))]
        return self.task.is_finished();
        #[cfg(not(any(feature = "secret-file", feature = "dotenv")))]
        return true;
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        #[cfg(any(feature = "secret-file", feature = "dotenv"))]
        self.task.abort();
    }
}

/// Watches the parent directories of `paths` and runs `on_change` after each burst of changes,
/// in a task on `runtime`. Returns `None`, after logging why, when nothing can be watched. The
/// provider then relies on its refresh interval.
#[cfg(any(feature = "secret-file", feature = "dotenv"))]
pub(crate) fn start<F, Fut>(
    paths: Vec<PathBuf>,
    mode: WatchMode,
    poll_interval: Duration,
    runtime: &tokio::runtime::Handle,
    on_change: F,
) -> Option<WatchHandle>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    use notify::RecursiveMode;

    let mut directories: Vec<PathBuf> = paths
        .iter()
        .filter_map(|path| path.parent().map(|parent| parent.to_path_buf()))
        .map(|parent| {
            if parent.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                parent
            }
        })
        .filter(|parent| parent.is_dir())
        .collect();
    directories.sort();
    directories.dedup();
    if directories.is_empty() {
        tracing::debug!(?paths, "no directory to watch for MegaLLM API key changes");
        return None;
    }

    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<()>();
    let handler = move |event: notify::Result<notify::Event>| {
        // Only the fact that something changed is passed on: event paths are not logged.
        if event.is_ok_and(|event| is_change(&event.kind)) {
            let _ = sender.send(());
        }
    };

    let mut watcher = create_watcher(mode, poll_interval, handler)?;
    let mut watched = 0;
    for directory in &directories {
        match watcher.watch(directory, RecursiveMode::NonRecursive) {
            Ok(()) => watched += 1,
            Err(error) => tracing::warn!(
                directory = %directory.display(),
                error = %error,
                "cannot watch the directory of a MegaLLM API key file; changes are picked up at the refresh interval"
            ),
        }
    }
    if watched == 0 {
        return None;
    }

    let mut identities: Vec<Option<DirectoryIdentity>> = directories
        .iter()
        .map(|directory| DirectoryIdentity::of(directory))
        .collect();
    let check_interval = poll_interval.min(DIRECTORY_CHECK);
    let task = runtime.spawn(async move {
        loop {
            match tokio::time::timeout(check_interval, receiver.recv()).await {
                Ok(None) => break,
                Ok(Some(())) => {
                    wait_for_quiet(&mut receiver).await;
                    tracing::debug!("a watched MegaLLM API key file changed");
                    on_change().await;
                }
                Err(_) => {}
            }

            // A deleted directory takes its watch with it, and notify reports no event when a
            // directory of the same name appears again, so compare identities instead.
            let mut rewatched = false;
            for (directory, identity) in directories.iter().zip(identities.iter_mut()) {
                let current = DirectoryIdentity::of(directory);
                if current.is_none() || current == *identity {
                    if current.is_none() && identity.is_some() {
                        tracing::warn!(
                            directory = %directory.display(),
                            "the directory of a MegaLLM API key file was removed; watching for it to return"
                        );
                        *identity = None;
                    }
                    continue;
                }
                let _ = watcher.unwatch(directory);
                match watcher.watch(directory, RecursiveMode::NonRecursive) {
                    Ok(()) => {
                        tracing::info!(
                            directory = %directory.display(),
                            "watching the recreated directory of a MegaLLM API key file"
                        );
                        *identity = current;
                        rewatched = true;
                    }
                    Err(error) => tracing::warn!(
                        directory = %directory.display(),
                        error = %error,
                        "cannot watch the recreated directory of a MegaLLM API key file; changes are picked up at the refresh interval"
                    ),
                }
            }
            if rewatched {
                on_change().await;
            }
        }
    });

    Some(WatchHandle { task })
}

/// Returns whether an event can mean that a file's contents or a directory's entries changed.
///
/// Opening, reading and closing a file unwritten are left out. The provider reads the key file
/// after every change, and those reads would otherwise count as the next change.
#[cfg(any(feature = "secret-file", feature = "dotenv"))]
fn is_change(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};

    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Waits until no event has arrived for [`DEBOUNCE`], or until [`MAX_BURST`] has passed since
/// the first one.
#[cfg(any(feature = "secret-file", feature = "dotenv"))]
async fn wait_for_quiet(receiver: &mut tokio::sync::mpsc::UnboundedReceiver<()>) {
    let deadline = tokio::time::Instant::now() + MAX_BURST;
    loop {
        let quiet_until = (tokio::time::Instant::now() + DEBOUNCE).min(deadline);
        match tokio::time::timeout_at(quiet_until, receiver.recv()).await {
            Ok(Some(())) if tokio::time::Instant::now() < deadline => continue,
            _ => return,
        }
    }
}

/// Device and inode of a directory, which differ for a directory later created at the same
/// path.
#[cfg(any(feature = "secret-file", feature = "dotenv"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DirectoryIdentity {
    device: u64,
    inode: u64,
}

#[cfg(any(feature = "secret-file", feature = "dotenv"))]
impl DirectoryIdentity {
    /// Returns the identity of `directory`, or `None` when it is not a directory now.
    #[cfg(unix)]
    fn of(directory: &std::path::Path) -> Option<DirectoryIdentity> {
        use std::os::unix::fs::MetadataExt;

        let metadata = std::fs::metadata(directory).ok().filter(|m| m.is_dir())?;
        Some(DirectoryIdentity {
            device: metadata.dev(),
            inode: metadata.ino(),
        })
    }

    /// Returns a fixed identity while `directory` exists.
    ///
    /// NOTE: without inode numbers a directory deleted and recreated between two checks
    /// keeps its stale watch; changes then arrive at the refresh interval.
    #[cfg(not(unix))]
    fn of(directory: &std::path::Path) -> Option<DirectoryIdentity> {
        directory.is_dir().then_some(DirectoryIdentity {
            device: 0,
            inode: 0,
        })
    }
}

#[cfg(any(feature = "secret-file", feature = "dotenv"))]
fn create_watcher(
    mode: WatchMode,
    poll_interval: Duration,
    handler: impl notify::EventHandler + Clone,
) -> Option<Box<dyn notify::Watcher + Send>> {
    let poll = |handler| {
        let config = notify::Config::default()
            .with_poll_interval(poll_interval)
            .with_compare_contents(true)
            .with_follow_symlinks(true);
        match notify::PollWatcher::new(handler, config) {
            Ok(watcher) => Some(Box::new(watcher) as Box<dyn notify::Watcher + Send>),
            Err(error) => {
                tracing::warn!(error = %error, "cannot poll MegaLLM API key files; changes are picked up at the refresh interval");
                None
            }
        }
    };

    match mode {
        WatchMode::Off => None,
        WatchMode::Poll => poll(handler),
        WatchMode::Auto => match notify::recommended_watcher(handler.clone()) {
            Ok(watcher) => Some(Box::new(watcher)),
            Err(error) => {
                tracing::warn!(error = %error, "file notifications are not available; polling MegaLLM API key files instead");
                poll(handler)
            }
        },
    }
}

/// Without a file source compiled in there is nothing to watch.
#[cfg(not(any(feature = "secret-file", feature = "dotenv")))]
pub(crate) fn start<F, Fut>(
    _paths: Vec<PathBuf>,
    _mode: WatchMode,
    _poll_interval: Duration,
    _runtime: &tokio::runtime::Handle,
    _on_change: F,
) -> Option<WatchHandle>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    None
}
