//! [`KeyChain`]: an ordered list of sources, and the [`ResolutionReport`] of one resolution.

use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::Instrument;

use crate::key::Fingerprint;
use crate::source::{KeySource, Resolved, SourceError, SourceErrorKind, SourceKind};

/// An ordered list of key sources. The first source that has the key wins.
///
/// A source that returns "not found" passes to the next one. Any other failure (a malformed
/// key, denied access, an unreachable backend, a configuration error) stops the chain, because
/// silently falling back to another key hides a broken setup.
#[derive(Debug, Default)]
pub struct KeyChain {
    sources: Vec<Box<dyn KeySource>>,
    configured_by: Option<String>,
}

impl KeyChain {
    /// Creates an empty chain.
    pub fn new() -> KeyChain {
        KeyChain::default()
    }

    /// Appends a source.
    #[must_use]
    pub fn with(mut self, source: impl KeySource + 'static) -> KeyChain {
        self.sources.push(Box::new(source));
        self
    }

    /// Appends a boxed source.
    pub fn push(&mut self, source: Box<dyn KeySource>) {
        self.sources.push(source);
    }

    /// Records which configuration layer chose these sources, for the report.
    #[must_use]
    pub fn configured_by(mut self, layer: impl Into<String>) -> KeyChain {
        self.configured_by = Some(layer.into());
        self
    }

    /// Returns the sources in order.
    pub fn sources(&self) -> &[Box<dyn KeySource>] {
        &self.sources
    }

    /// Returns the labels of the sources in order.
    pub fn labels(&self) -> Vec<&str> {
        self.sources.iter().map(|source| source.label()).collect()
    }

    /// Tries each source in order and returns the first key found, with the report.
    ///
    /// # Errors
    ///
    /// [`ChainError`] carrying the report: either no source had a key, or one failed hard.
    pub async fn resolve(&self) -> Result<Resolution, ChainError> {
        let mut report = ResolutionReport {
            configured_by: self.configured_by.clone(),
            attempts: Vec::with_capacity(self.sources.len()),
            winner: None,
        };

        for source in &self.sources {
            let label = source.label().to_owned();
            let started = Instant::now();
            let span = tracing::debug_span!("megallm_key_source", source = %label);
            let result = source.resolve().instrument(span).await;
            let elapsed = started.elapsed();

            match result {
                Ok(resolved) => {
                    tracing::info!(
                        source = %label,
                        fingerprint = %resolved.key.fingerprint(),
                        "resolved MegaLLM API key"
                    );
                    report.attempts.push(Attempt {
                        label,
                        kind: source.kind(),
                        outcome: Outcome::Found,
                        reason: None,
                        elapsed,
                    });
                    report.winner = Some(Winner {
                        label: resolved.label.clone(),
                        fingerprint: resolved.key.fingerprint().clone(),
                        version: resolved.version.clone(),
                    });
                    return Ok(Resolution { resolved, report });
                }
                Err(error) if error.is_not_found() => {
                    tracing::debug!(source = %label, reason = error.message(), "no key here");
                    report.attempts.push(Attempt {
                        label,
                        kind: source.kind(),
                        outcome: Outcome::NotFound,
                        reason: Some(error.message().to_owned()),
                        elapsed,
                    });
                }
                Err(error) => {
                    tracing::warn!(source = %label, kind = %error.kind(), error = %error, "key source failed");
                    report.attempts.push(Attempt {
                        label,
                        kind: source.kind(),
                        outcome: Outcome::Failed(error.kind()),
                        reason: Some(error.message().to_owned()),
                        elapsed,
                    });
                    return Err(ChainError {
                        report,
                        failure: Some(error),
                    });
                }
            }
        }

        Err(ChainError {
            report,
            failure: None,
        })
    }
}

/// A successful resolution: the key and the report of how it was found.
#[derive(Debug)]
pub struct Resolution {
    /// The key and its origin.
    pub resolved: Resolved,
    /// Every attempt up to and including the winner.
    pub report: ResolutionReport,
}

/// Record of each source's attempt during one resolution. It contains labels, outcomes, reasons,
/// timings and the winner's fingerprint, never a key, so it is safe to print and to log.
#[derive(Clone, Debug, Serialize)]
pub struct ResolutionReport {
    /// Configuration layer that chose the sources, when they came from settings.
    pub configured_by: Option<String>,
    /// One entry per source tried, in order.
    pub attempts: Vec<Attempt>,
    /// The source that supplied the key, if any.
    pub winner: Option<Winner>,
}

/// One source's attempt.
#[derive(Clone, Debug, Serialize)]
pub struct Attempt {
    /// The source's label.
    pub label: String,
    /// The source's kind.
    pub kind: SourceKind,
    /// What happened.
    pub outcome: Outcome,
    /// Why, for "not found" and failures.
    pub reason: Option<String>,
    /// Time spent in the source.
    #[serde(rename = "elapsed_ms", serialize_with = "serialize_millis")]
    pub elapsed: Duration,
}

/// The outcome of one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "error")]
pub enum Outcome {
    /// The source supplied the key.
    Found,
    /// The source has no key; the chain went on.
    NotFound,
    /// The source failed; the chain stopped.
    Failed(SourceErrorKind),
}

/// The source that supplied the key.
#[derive(Clone, Debug, Serialize)]
pub struct Winner {
    /// The source's label.
    pub label: String,
    /// The key's fingerprint.
    pub fingerprint: Fingerprint,
    /// The secret's version, when the backend has one.
    pub version: Option<String>,
}

fn serialize_millis<S: serde::Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64() * 1000.0)
}

impl ResolutionReport {
    /// Renders the report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // The report contains only strings, numbers, enums and string-keyed structs, which
        // serde_json serializes without error; the fallback is never expected to run.
        serde_json::to_string_pretty(self).unwrap_or_else(|_| String::from("{}"))
    }
}

impl fmt::Display for ResolutionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(layer) = &self.configured_by {
            writeln!(f, "sources configured by: {layer}")?;
        }
        for (index, attempt) in self.attempts.iter().enumerate() {
            let outcome = match attempt.outcome {
                Outcome::Found => String::from("found"),
                Outcome::NotFound => String::from("not found"),
                Outcome::Failed(kind) => format!("failed ({kind})"),
            };
            write!(
                f,
                "{}. {} -> {} [{:.1} ms]",
                index + 1,
                attempt.label,
                outcome,
                attempt.elapsed.as_secs_f64() * 1000.0
            )?;
            if let Some(reason) = &attempt.reason {
                write!(f, ": {reason}")?;
            }
            writeln!(f)?;
        }
        match &self.winner {
            Some(winner) => {
                write!(f, "key: {} from {}", winner.fingerprint, winner.label)?;
                if let Some(version) = &winner.version {
                    write!(f, " (version {version})")?;
                }
                writeln!(f)
            }
            None => writeln!(f, "key: none"),
        }
    }
}

/// A resolution that produced no key. It carries the full report.
///
/// Display includes the failing source's message, which [`ChainError::failure`] returns as a
/// [`SourceError`]. `source()` continues below it with that error's own cause, so that a
/// reporter that prints every cause does not print the source's message twice.
///
/// That cause can restate the problem: for a badly shaped key it is the
/// [`InvalidKey`](crate::InvalidKey), kept so that callers can downcast it and read
/// [`InvalidKey::problem`](crate::InvalidKey::problem).
#[derive(Debug)]
pub struct ChainError {
    report: ResolutionReport,
    failure: Option<SourceError>,
}

impl ChainError {
    /// Returns the report of every attempt.
    pub fn report(&self) -> &ResolutionReport {
        &self.report
    }

    /// Returns the hard failure that stopped the chain, or `None` when every source returned
    /// "not found".
    pub fn failure(&self) -> Option<&SourceError> {
        self.failure.as_ref()
    }

    /// Returns the category: [`SourceErrorKind::NotFound`] when no source had a key,
    /// otherwise the kind of the failure that stopped the chain.
    pub fn kind(&self) -> SourceErrorKind {
        self.failure
            .as_ref()
            .map_or(SourceErrorKind::NotFound, SourceError::kind)
    }
}

impl fmt::Display for ChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.failure {
            Some(failure) => write!(f, "MegaLLM API key source failed: {failure}"),
            None if self.report.attempts.is_empty() => f.write_str(
                "no MegaLLM API key found: no sources are configured; add a source or set MEGALLM_API_KEY",
            ),
            None => {
                f.write_str("no MegaLLM API key found; tried ")?;
                for (index, attempt) in self.report.attempts.iter().enumerate() {
                    if index > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}", attempt.label)?;
                    if let Some(reason) = &attempt.reason {
                        write!(f, " ({reason})")?;
                    }
                }
                f.write_str("; put the key where one of these sources looks, or configure another source")
            }
        }
    }
}

impl std::error::Error for ChainError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.failure
            .as_ref()
            .and_then(|failure| std::error::Error::source(failure))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::StaticSource;
    use async_trait::async_trait;

    #[derive(Debug)]
    struct Failing(SourceErrorKind);

    #[async_trait]
    impl KeySource for Failing {
        fn label(&self) -> &str {
            "test:failing"
        }

        async fn resolve(&self) -> Result<Resolved, SourceError> {
            Err(SourceError::new(self.0, "test:failing", "backend refused"))
        }
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn first_found_source_wins() {
        let chain = KeyChain::new()
            .with(StaticSource::empty("test:empty"))
            .with(StaticSource::with_label("test:a", "sk-mega-TESTA000000").unwrap())
            .with(StaticSource::with_label("test:b", "sk-mega-TESTB000000").unwrap());

        let resolution = block_on(chain.resolve()).unwrap();

        assert_eq!(resolution.resolved.label, "test:a");
        assert_eq!(resolution.report.attempts.len(), 2);
        assert_eq!(resolution.report.attempts[0].outcome, Outcome::NotFound);
        assert_eq!(resolution.report.attempts[1].outcome, Outcome::Found);
        assert_eq!(resolution.report.winner.as_ref().unwrap().label, "test:a");
    }

    #[test]
    fn hard_failure_stops_chain() {
        let chain = KeyChain::new()
            .with(Failing(SourceErrorKind::Denied))
            .with(StaticSource::with_label("test:b", "sk-mega-TESTB000000").unwrap());

        let error = block_on(chain.resolve()).unwrap_err();

        assert_eq!(error.kind(), SourceErrorKind::Denied);
        assert_eq!(error.report().attempts.len(), 1);
        assert_eq!(
            error.report().attempts[0].outcome,
            Outcome::Failed(SourceErrorKind::Denied)
        );
        assert!(error.report().winner.is_none());
    }

    #[test]
    fn nothing_found_lists_attempts() {
        let chain = KeyChain::new()
            .with(StaticSource::empty("test:one"))
            .with(StaticSource::empty("test:two"));

        let error = block_on(chain.resolve()).unwrap_err();

        assert_eq!(error.kind(), SourceErrorKind::NotFound);
        assert_eq!(
            error.to_string(),
            "no MegaLLM API key found; tried test:one (no key configured), \
             test:two (no key configured); put the key where one of these sources looks, or \
             configure another source"
        );
    }

    #[test]
    fn report_serializes_as_json() {
        let chain = KeyChain::new()
            .with(StaticSource::empty("test:empty"))
            .with(StaticSource::with_label("test:a", "sk-mega-TESTA000000").unwrap())
            .configured_by("defaults");
        let resolution = block_on(chain.resolve()).unwrap();

        let json: serde_json::Value = serde_json::from_str(&resolution.report.to_json()).unwrap();

        assert_eq!(json["configured_by"], "defaults");
        assert_eq!(json["attempts"][0]["label"], "test:empty");
        assert_eq!(json["attempts"][0]["outcome"]["status"], "not_found");
        assert_eq!(json["attempts"][1]["outcome"]["status"], "found");
        assert!(json["attempts"][1]["elapsed_ms"].is_f64());
        assert_eq!(
            json["winner"]["fingerprint"],
            resolution.resolved.key.fingerprint().as_str()
        );
    }
}
