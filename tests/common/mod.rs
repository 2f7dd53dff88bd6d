//! Helpers shared by the integration tests: canary keys and a leak check over captured logs.
#![allow(dead_code)]

#[cfg(feature = "aws")]
pub mod moto;
pub mod sources;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// The canary key of the failure cases. It must never appear in any output.
pub const CANARY: &str = "sk-mega-TESTKEY0000000000";
/// The key a canary is rotated to.
pub const CANARY_ROTATED: &str = "sk-mega-NEWKEY00000000000";

/// Runs of the canary's body that must not appear in output. The all-digit run `0000` is left
/// out because timings and fingerprints can contain it by chance.
const CANARY_RUNS: &[&str] = &[
    "TESTKEY0000000000",
    "TEST",
    "ESTK",
    "STKE",
    "TKEY",
    "KEY0",
    "EY00",
    "Y000",
    "NEWKEY00000000000",
    "NEWK",
    "EWKE",
    "WKEY",
];

/// Panics when `text` contains a canary key or a telling run of one. `what` names the output
/// for the failure message, such as "error Display".
#[track_caller]
pub fn assert_no_canary(what: &str, text: &str) {
    for run in CANARY_RUNS {
        assert!(
            !text.contains(run),
            "{what} contains the canary run {run:?}: {text}"
        );
    }
}

#[derive(Clone, Default)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static LOGS: OnceLock<SharedBuffer> = OnceLock::new();

/// Captures every tracing event of this test process at TRACE level, from any thread.
pub struct LogCapture {
    buffer: SharedBuffer,
}

/// Installs the process-wide log capture on first use and returns a handle to it.
pub fn capture_logs() -> LogCapture {
    let buffer = LOGS
        .get_or_init(|| {
            let buffer = SharedBuffer::default();
            let writer = buffer.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in tests");
            buffer
        })
        .clone();
    LogCapture { buffer }
}

impl LogCapture {
    /// Returns everything logged so far in this process.
    pub fn contents(&self) -> String {
        String::from_utf8_lossy(&self.buffer.0.lock().unwrap()).into_owned()
    }

    /// Panics when the captured logs contain a canary.
    #[track_caller]
    pub fn assert_clean(&self) {
        assert_no_canary("captured logs", &self.contents());
    }
}
