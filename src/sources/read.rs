//! A bounded file reader into zeroizing memory, shared by the file-based sources, and the
//! mapping of its I/O failures onto [`SourceError`] kinds.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use zeroize::Zeroizing;

use crate::source::{SourceError, SourceErrorKind};

/// Default size limit of a secret file, in bytes: 4 KiB.
///
/// 4 KiB is far more than an API key needs, even with a BOM, quotes and trailing newlines. It
/// is small enough to reject a wrong path (a certificate bundle, a log file, a device) before
/// much of it is read into memory. [`SecretFileSource`](crate::SecretFileSource) and
/// [`EnvFileSource`](crate::EnvFileSource) use it unless `with_max_size` changes it.
#[cfg(any(feature = "env", feature = "secret-file"))]
pub const DEFAULT_MAX_SECRET_FILE_SIZE: u64 = 4 * 1024;

/// Smallest buffer allocated for a read, so that a file whose metadata reports length 0
/// (a pipe, a procfs file) does not grow one byte at a time.
const MIN_BUFFER: usize = 64;

/// Cause of a failed file read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileProblem {
    /// The file or one of its parent directories does not exist, or a symlink dangles.
    Missing,
    /// A component of the path is a file where a directory is expected.
    ParentNotDirectory,
    /// The path names a directory.
    Directory,
    /// The file is larger than the limit.
    TooLarge { limit: u64 },
    /// The OS refused access (EACCES or EPERM).
    PermissionDenied,
    /// Any other I/O failure.
    Io,
}

/// A failed read: the classified problem and, where the OS reported one, its error.
#[derive(Debug)]
pub(crate) struct ReadError {
    pub(crate) problem: FileProblem,
    io: Option<io::Error>,
}

impl ReadError {
    fn from_io(error: io::Error) -> ReadError {
        ReadError {
            problem: classify_io_error(&error),
            io: Some(error),
        }
    }

    fn new(problem: FileProblem) -> ReadError {
        ReadError { problem, io: None }
    }

    /// Converts the failure into a [`SourceError`] for the source `label`. `description` names the
    /// file in the message, such as "secret file /run/secrets/megallm_api_key".
    /// `missing_kind` is the kind reported when the file does not exist: not found for a file
    /// that is optional, misconfigured for a file that a setting points at.
    pub(crate) fn into_source_error(
        self,
        label: &str,
        description: &str,
        missing_kind: SourceErrorKind,
    ) -> SourceError {
        let error = match self.problem {
            FileProblem::Missing => {
                SourceError::new(missing_kind, label, format!("{description} does not exist"))
            }
            FileProblem::ParentNotDirectory => SourceError::misconfigured(
                label,
                format!(
                    "{description} cannot be opened because a parent in its path is a file, not a directory; check the path"
                ),
            ),
            FileProblem::Directory => SourceError::misconfigured(
                label,
                format!(
                    "{description} is a directory; point the source at the file that contains the key"
                ),
            ),
            FileProblem::TooLarge { limit } => SourceError::misconfigured(
                label,
                format!(
                    "{description} is larger than the limit of {limit} bytes; check that the path names the key file, or raise the limit with with_max_size"
                ),
            ),
            FileProblem::PermissionDenied => SourceError::denied(
                label,
                format!(
                    "permission denied reading {description}; make the file readable by the user this process runs as. For a mounted secret, set its owner or mode (Kubernetes defaultMode or fsGroup, or the uid, gid and mode of a Docker Swarm secret)"
                ),
            ),
            FileProblem::Io => {
                SourceError::unavailable(label, format!("failed to read {description}"))
            }
        };

        // Security: an io::Error from the OS carries an error code and its description, never
        // file contents, so it is safe to attach.
        match self.io {
            Some(io) => error.with_cause(io),
            None => error,
        }
    }
}

/// Classifies an OS error from opening or reading a file.
pub(crate) fn classify_io_error(error: &io::Error) -> FileProblem {
    match error.kind() {
        io::ErrorKind::NotFound => FileProblem::Missing,
        io::ErrorKind::NotADirectory => FileProblem::ParentNotDirectory,
        io::ErrorKind::IsADirectory => FileProblem::Directory,
        io::ErrorKind::PermissionDenied => FileProblem::PermissionDenied,
        _ => FileProblem::Io,
    }
}

/// Reads the whole file at `path` into zeroizing memory, failing once it exceeds `max_size`
/// bytes.
///
/// The file is opened by path at every call, so symlinks are followed afresh each time (a
/// Kubernetes secret update swaps the `..data` symlink). The read never requests more than
/// `max_size + 1` bytes, so a wrong path such as `/dev/zero` fails fast. The buffer grows by
/// copying into a larger zeroizing buffer, because `Vec`'s own growth would free the old
/// allocation without wiping it.
///
/// NOTE: this is a blocking read. It is meant for small local files (tmpfs secret mounts,
/// a .env file); a file on a hung network filesystem blocks the calling thread.
pub(crate) fn read_bounded(path: &Path, max_size: u64) -> Result<Zeroizing<Vec<u8>>, ReadError> {
    let mut file = File::open(path).map_err(ReadError::from_io)?;
    let metadata = file.metadata().map_err(ReadError::from_io)?;
    if metadata.is_dir() {
        return Err(ReadError::new(FileProblem::Directory));
    }
    if metadata.len() > max_size {
        return Err(ReadError::new(FileProblem::TooLarge { limit: max_size }));
    }

    // One byte more than the limit, so that reading it proves the file too large.
    let hard_cap = usize::try_from(max_size.saturating_add(1)).unwrap_or(usize::MAX);
    let expected = usize::try_from(metadata.len()).unwrap_or(usize::MAX);
    let initial = expected.saturating_add(1).max(MIN_BUFFER).min(hard_cap);
    let mut buffer = Zeroizing::new(vec![0u8; initial]);
    let mut filled = 0;

    loop {
        if filled == buffer.len() {
            if buffer.len() >= hard_cap {
                break;
            }
            let grown = buffer.len().saturating_mul(2).min(hard_cap);
            let mut larger = Zeroizing::new(vec![0u8; grown]);
            larger[..filled].copy_from_slice(&buffer[..filled]);
            // The old buffer is wiped when it drops here.
            buffer = larger;
        }
        match file.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(count) => filled += count,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(ReadError::from_io(error)),
        }
    }

    if filled as u64 > max_size {
        return Err(ReadError::new(FileProblem::TooLarge { limit: max_size }));
    }
    buffer.truncate(filled);
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Tests run as root, where chmod cannot make open() fail with EACCES, so the
    // classification is tested on OS errors built from their raw codes. The codes are the same
    // on Linux and macOS.
    #[cfg(unix)]
    #[test]
    fn raw_os_errors_are_classified() {
        let cases = [
            (2, FileProblem::Missing),             // ENOENT
            (20, FileProblem::ParentNotDirectory), // ENOTDIR
            (21, FileProblem::Directory),          // EISDIR
            (13, FileProblem::PermissionDenied),   // EACCES
            (1, FileProblem::PermissionDenied),    // EPERM
            (5, FileProblem::Io),                  // EIO
        ];
        for (code, expected) in cases {
            let error = io::Error::from_raw_os_error(code);
            assert_eq!(classify_io_error(&error), expected, "os error {code}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn permission_denied_maps_to_denied() {
        let error = ReadError::from_io(io::Error::from_raw_os_error(13));
        let source_error = error.into_source_error(
            "file:/run/secrets/megallm_api_key",
            "secret file /run/secrets/megallm_api_key",
            SourceErrorKind::NotFound,
        );
        assert_eq!(source_error.kind(), SourceErrorKind::Denied);
        assert!(
            source_error
                .message()
                .contains("/run/secrets/megallm_api_key")
        );
        assert!(source_error.message().contains("defaultMode"));
        assert!(std::error::Error::source(&source_error).is_some());
    }

    #[cfg(unix)]
    #[test]
    fn other_io_error_maps_to_unavailable() {
        let error = ReadError::from_io(io::Error::from_raw_os_error(5));
        let source_error =
            error.into_source_error("file:/x", "secret file /x", SourceErrorKind::NotFound);
        assert_eq!(source_error.kind(), SourceErrorKind::Unavailable);
        assert_eq!(source_error.message(), "failed to read secret file /x");
    }

    #[test]
    fn missing_kind_is_chosen_by_caller() {
        let error = ReadError::new(FileProblem::Missing);
        let source_error = error.into_source_error(
            "env-file:X_FILE",
            "the file /x named by X_FILE",
            SourceErrorKind::Misconfigured,
        );
        assert_eq!(source_error.kind(), SourceErrorKind::Misconfigured);
        assert_eq!(
            source_error.message(),
            "the file /x named by X_FILE does not exist"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn endless_device_stops_at_limit() {
        let error = read_bounded(Path::new("/dev/zero"), 100).expect_err("/dev/zero is endless");
        assert_eq!(error.problem, FileProblem::TooLarge { limit: 100 });
    }

    #[test]
    fn grows_past_initial_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let content: Vec<u8> = (0..1000u32).map(|i| b'a' + (i % 26) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let read = read_bounded(&path, 1000).unwrap();
        assert_eq!(&read[..], &content[..]);
        let error = read_bounded(&path, 999).expect_err("one byte over the limit");
        assert_eq!(error.problem, FileProblem::TooLarge { limit: 999 });
    }
}
