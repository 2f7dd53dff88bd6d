//! Per-request cost of adding MegaLLM credentials to a request's headers.
//!
//! Run with `cargo bench --all-features --bench headers`. BENCHMARKS.md has the results.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use async_openai::config::{Config, OpenAIConfig};
use criterion::{Criterion, criterion_group, criterion_main};
use http::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use megallm_auth::{KeyChain, KeyProvider, StaticSource};

const KEY: &str = "sk-mega-TESTBENCH000000000000000000000000";

/// Returns a provider that has resolved its key on a multi-thread runtime, as a service's
/// provider does, so the key is marked fresh.
fn warm_provider() -> KeyProvider {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let chain = KeyChain::new().with(StaticSource::new(KEY).unwrap());
    let provider = KeyProvider::builder(chain).build().unwrap();
    runtime.block_on(provider.current()).unwrap();
    provider
}

/// Polls a future that completes without waiting, as `current()` does for a warm provider.
fn poll_ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut context) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a warm provider does not wait"),
    }
}

fn header_injection(c: &mut Criterion) {
    let provider = warm_provider();
    let prebuilt = provider.try_current().unwrap().headers().to_header_map()[AUTHORIZATION].clone();
    let openai = OpenAIConfig::new()
        .with_api_key(KEY)
        .with_org_id("")
        .with_project_id("");

    // Every variant writes into the request's existing header map, as a middleware does;
    // async-openai's `Config::headers()` builds a new map per request, which is its API.
    let mut group = c.benchmark_group("header_injection");
    let mut headers = HeaderMap::with_capacity(8);
    group.bench_function("baseline_prebuilt_clone", |b| {
        b.iter(|| {
            headers.insert(AUTHORIZATION, black_box(&prebuilt).clone());
            black_box(&headers);
        })
    });
    group.bench_function("provider_current", |b| {
        b.iter(|| {
            let snapshot = poll_ready(black_box(&provider).current()).unwrap();
            snapshot.apply(&mut headers);
            black_box(&headers);
        })
    });
    group.bench_function("provider_apply_current", |b| {
        b.iter(|| {
            poll_ready(black_box(&provider).apply_current(&mut headers)).unwrap();
            black_box(&headers);
        })
    });
    group.bench_function("provider_try_apply_current", |b| {
        b.iter(|| {
            assert!(black_box(&provider).try_apply_current(&mut headers));
            black_box(&headers);
        })
    });
    group.bench_function("provider_try_current", |b| {
        b.iter(|| {
            black_box(&provider)
                .try_current()
                .unwrap()
                .apply(&mut headers);
            black_box(&headers);
        })
    });
    group.bench_function("snapshot_apply_only", |b| {
        let snapshot = provider.try_current().unwrap();
        b.iter(|| {
            black_box(&snapshot).apply(&mut headers);
            black_box(&headers);
        })
    });
    group.bench_function("format_and_from_str", |b| {
        b.iter(|| {
            let value = format!("Bearer {}", black_box(KEY));
            headers.insert(AUTHORIZATION, HeaderValue::from_str(&value).unwrap());
            black_box(&headers);
        })
    });
    group.bench_function("async_openai_config_headers", |b| {
        b.iter(|| black_box(black_box(&openai).headers()))
    });
    group.finish();
}

fn two_thread_reads(c: &mut Criterion) {
    let provider = Arc::new(warm_provider());

    c.bench_function("provider_current_two_threads", |b| {
        b.iter_custom(|iterations| {
            on_two_threads(&provider, iterations, |provider, headers| {
                poll_ready(provider.current()).unwrap().apply(headers);
            })
        })
    });
    c.bench_function("provider_try_apply_current_two_threads", |b| {
        b.iter_custom(|iterations| {
            on_two_threads(&provider, iterations, |provider, headers| {
                assert!(provider.try_apply_current(headers));
            })
        })
    });
}

/// Runs `iterations` reads spread over two threads and returns the wall time they took.
fn on_two_threads(
    provider: &Arc<KeyProvider>,
    iterations: u64,
    read: fn(&KeyProvider, &mut HeaderMap),
) -> Duration {
    let per_thread = iterations.div_ceil(2);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..2 {
            let provider = provider.clone();
            scope.spawn(move || {
                let mut headers = HeaderMap::with_capacity(8);
                for _ in 0..per_thread {
                    read(black_box(&provider), &mut headers);
                    black_box(&headers);
                }
            });
        }
    });
    started.elapsed()
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = header_injection, two_thread_reads
}
criterion_main!(benches);
