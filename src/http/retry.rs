//! The retry policy shared by the reqwest middleware and the tower layer: how long to wait
//! after a 429, and how many times to try.
//!
//! A 429 is retried after the wait the gateway requests in `Retry-After` (delay in seconds or an
//! HTTP date), capped at [`RetryPolicy::max_retry_after`]. Without a usable `Retry-After` the
//! wait is an exponential backoff with jitter. After [`RetryPolicy::max_retries`] retries the
//! caller gets [`GatewayError::RateLimited`]. 401 and 403 are
//! not retried by this policy.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderValue;

use super::GatewayError;

/// Default number of retries after a 429.
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// Default cap on a wait requested by `Retry-After`.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Default first backoff when a 429 has no `Retry-After`.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// Default cap on the backoff when a 429 has no `Retry-After`.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(8);

/// A function that waits for a duration. Tests replace the Tokio timer with one that records
/// the waits.
pub type Sleep = Arc<dyn Fn(Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// The retry rules for 429 responses.
#[derive(Clone)]
pub struct RetryPolicy {
    max_retries: u32,
    max_retry_after: Duration,
    initial_backoff: Duration,
    max_backoff: Duration,
    sleep: Sleep,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_retries: DEFAULT_MAX_RETRIES,
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            sleep: Arc::new(|duration| Box::pin(tokio::time::sleep(duration))),
        }
    }
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_retries", &self.max_retries)
            .field("max_retry_after", &self.max_retry_after)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .finish_non_exhaustive()
    }
}

impl RetryPolicy {
    /// Creates the default policy: [`DEFAULT_MAX_RETRIES`] retries, `Retry-After` capped at
    /// [`DEFAULT_MAX_RETRY_AFTER`], backoff from [`DEFAULT_INITIAL_BACKOFF`] up to
    /// [`DEFAULT_MAX_BACKOFF`].
    pub fn new() -> RetryPolicy {
        RetryPolicy::default()
    }

    /// Sets the number of retries after a 429. Zero returns the first 429 as an error.
    #[must_use]
    pub fn max_retries(mut self, retries: u32) -> RetryPolicy {
        self.max_retries = retries;
        self
    }

    /// Sets the cap on a wait asked for by `Retry-After`.
    #[must_use]
    pub fn max_retry_after(mut self, cap: Duration) -> RetryPolicy {
        self.max_retry_after = cap;
        self
    }

    /// Sets the backoff used when a 429 has no usable `Retry-After`: `initial` doubles with
    /// every retry up to `max`, and each wait is drawn between half of that and all of it.
    #[must_use]
    pub fn backoff(mut self, initial: Duration, max: Duration) -> RetryPolicy {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// Replaces the timer that waits between retries.
    #[must_use]
    pub fn with_sleep(mut self, sleep: Sleep) -> RetryPolicy {
        self.sleep = sleep;
        self
    }

    /// Returns the number of retries after a 429.
    pub fn retries(&self) -> u32 {
        self.max_retries
    }

    /// Returns the wait before retry number `retry` (0 for the first retry) after a 429 whose
    /// `Retry-After` asked for `retry_after`.
    pub fn rate_limit_delay(&self, retry_after: Option<Duration>, retry: u32) -> Duration {
        match retry_after {
            Some(wait) => wait.min(self.max_retry_after),
            None => self.jittered_backoff(retry),
        }
    }

    fn jittered_backoff(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        let full = self
            .initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff);
        let half = full / 2;
        let spread = u64::try_from((full - half).as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(fastrand::u64(0..=spread))
    }

    /// Waits for `duration` with the configured timer.
    pub(crate) async fn sleep(&self, duration: Duration) {
        (self.sleep)(duration).await;
    }

    /// Decides what follows a 429 whose headers are `headers`, after `retries_done` retries.
    /// Returns the wait and the copy of the request to send next, or `RateLimited` when the
    /// retries are used up or the request has no copy (`spare` is `None`).
    pub(crate) fn after_rate_limit<T>(
        &self,
        headers: &http::HeaderMap,
        retries_done: u32,
        spare: Option<T>,
    ) -> Result<(Duration, T), GatewayError> {
        let retry_after = retry_after_of(headers);
        let spare = spare.filter(|_| retries_done < self.retries());
        let Some(spare) = spare else {
            return Err(GatewayError::RateLimited {
                retry_after,
                attempts: retries_done + 1,
            });
        };

        let delay = self.rate_limit_delay(retry_after, retries_done);
        tracing::warn!(
            retry = retries_done + 1,
            delay_ms = delay.as_millis() as u64,
            retry_after_s = retry_after.map(|wait| wait.as_secs()),
            "429 from MegaLLM; waiting before retrying"
        );
        Ok((delay, spare))
    }
}

/// Parses a `Retry-After` value relative to `now`: a delay in whole seconds, or an HTTP date
/// (a date in the past means no wait). Returns `None` for anything else.
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if text.is_empty() {
        return None;
    }

    if text.bytes().all(|byte| byte.is_ascii_digit()) {
        // More digits than fit in a u64 still mean "a very long time".
        let seconds = text.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(seconds));
    }

    let date = httpdate::parse_http_date(text).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Returns the parsed `Retry-After` of a response's headers, if any.
pub(crate) fn retry_after_of(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get(http::header::RETRY_AFTER)
        .and_then(|value| parse_retry_after(value, SystemTime::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, now: SystemTime) -> Option<Duration> {
        parse_retry_after(&HeaderValue::from_str(text).unwrap(), now)
    }

    #[test]
    fn retry_after_seconds_parse() {
        let now = SystemTime::now();
        assert_eq!(parse("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse("999999", now), Some(Duration::from_secs(999_999)));
        assert_eq!(
            parse("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn retry_after_http_date_parses() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(
            parse("Wed, 21 Oct 2015 07:28:05 GMT", now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn retry_after_garbage_is_none() {
        let now = SystemTime::now();
        for text in ["", "-1", "3.5", "soon", "1e3"] {
            assert_eq!(parse(text, now), None, "{text:?}");
        }
    }

    #[test]
    fn retry_after_wait_is_capped() {
        let policy = RetryPolicy::new();
        assert_eq!(
            policy.rate_limit_delay(Some(Duration::from_secs(999_999)), 0),
            DEFAULT_MAX_RETRY_AFTER
        );
        assert_eq!(
            policy.rate_limit_delay(Some(Duration::from_secs(3)), 2),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn backoff_is_jittered_and_bounded() {
        let policy = RetryPolicy::new().backoff(Duration::from_millis(100), Duration::from_secs(1));
        for retry in 0..8 {
            let full = Duration::from_millis(100 * (1 << retry)).min(Duration::from_secs(1));
            for _ in 0..50 {
                let delay = policy.rate_limit_delay(None, retry);
                assert!(delay >= full / 2, "retry {retry}: {delay:?}");
                assert!(delay <= full, "retry {retry}: {delay:?}");
            }
        }
        let samples: std::collections::HashSet<_> =
            (0..20).map(|_| policy.rate_limit_delay(None, 3)).collect();
        assert!(samples.len() > 1, "backoff without jitter: {samples:?}");
    }
}
