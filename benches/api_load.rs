//! Latency of `POST /v1/jobs` under a short load, on the local backend in a temp folder: the API
//! is served in-process on 127.0.0.1 and driven over HTTP with keep-alive connections.
//!
//!   cargo bench --bench api_load                      # 2,000 requests, 16 at a time
//!   cargo bench --profile dev --bench api_load        # without a release build of everything
//!   BENCH_REQUESTS=10000 BENCH_CONCURRENCY=64 cargo bench --bench api_load
//!
//! Each request HEADs the source, writes the job's status (a synced file) and sends the job
//! message (a SQLite transaction), as in production on the local backend. No worker runs, so
//! nothing else competes for the disk.

use std::sync::Arc;
use std::time::{Duration, Instant};

use media_worker::api::config::ApiConfig;
use media_worker::api::{self, ApiState};
use media_worker::backend;
use media_worker::config::Config;
use tokio::sync::Semaphore;

const TOKEN: &str = "bench-token-0123456789abcdef";
const SOURCE: &str = "uploads/bench/clip.mp4";

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    let requests = setting("BENCH_REQUESTS", 2000);
    let concurrency = setting("BENCH_CONCURRENCY", 16);
    let dir = tempfile::tempdir().expect("temp dir");
    let vars = [
        ("MEDIA_BACKEND", "local".to_string()),
        ("MEDIA_DATA_DIR", dir.path().join("data").display().to_string()),
        ("MEDIA_WORK_DIR", dir.path().join("work").display().to_string()),
        ("MEDIA_API_TOKENS", TOKEN.to_string()),
    ];
    let lookup = |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
    let config = Config::from_lookup(lookup).expect("config");
    let api_config = ApiConfig::from_lookup(lookup).expect("api config");
    let backend = backend::connect(&config).await.expect("backend");
    backend.storage.put_bytes(SOURCE, b"source".to_vec(), "video/mp4").await.expect("seed the source");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = ApiState::new(config, api_config, backend, addr).expect("state");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api::serve(listener, state, async move {
        let _ = stopped.await;
    }));

    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().expect("client");
    let url = format!("http://{addr}/v1/jobs");
    let body = serde_json::json!({"input": {"key": SOURCE}, "outputs": [{"preset": "mp4-h264"}]}).to_string();
    let send = {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        move || {
            let request =
                client.post(&url).bearer_auth(TOKEN).header("content-type", "application/json").body(body.clone());
            async move {
                let started = Instant::now();
                let response = request.send().await.expect("request");
                assert_eq!(response.status().as_u16(), 202, "{}", response.text().await.unwrap_or_default());
                let _ = response.bytes().await;
                started.elapsed()
            }
        }
    };

    // Warm up connections and caches.
    for _ in 0..concurrency * 2 {
        send().await;
    }

    let gate = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(requests);
    for _ in 0..requests {
        let permit = gate.clone().acquire_owned().await.expect("semaphore");
        let request = send();
        tasks.push(tokio::spawn(async move {
            let elapsed = request.await;
            drop(permit);
            elapsed
        }));
    }
    let mut latencies = Vec::with_capacity(requests);
    for task in tasks {
        latencies.push(task.await.expect("request task"));
    }
    let wall = started.elapsed();
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "POST /v1/jobs, local backend: {requests} requests, concurrency {concurrency}, {:.1} s, {:.0} req/s",
        wall.as_secs_f64(),
        requests as f64 / wall.as_secs_f64()
    );
    println!(
        "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 90.0)),
        ms(percentile(&latencies, 99.0)),
        ms(latencies[latencies.len() - 1])
    );
    let _ = stop.send(());
    let _ = server.await;
}
