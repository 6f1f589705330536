//! Speed of the web view (issue 15), over the real router on a loopback TCP port:
//!
//! - `/api/anomalies` for one hour of one detector from a 1,000,000-row SQLite store (10
//!   detectors, rows spread over the last 30 days): p50 and p99 of 500 requests, against
//!   `/api/detectors` (the same HTTP round trip and store connection, one index lookup per
//!   detector) as the baseline of the same run. Target: p99 <= 50 ms.
//! - `/api/overview` (anomalies per minute per detector over the last hour, every detector) on
//!   that store: p50 and p99 of 200 requests. Target: <= 100 ms.
//! - The page `/` with 10,000 anomalies in its hour, rendered by headless Chromium
//!   (`--dump-dom`), against Chromium rendering `about:blank` in the same run: median of 5
//!   wall times. Target: <= 1 s. Skipped, saying so, without `chromium` on the PATH.
//!
//! The stores are built in a temp dir on each run (about half a minute for the large one).
//! `cargo bench --bench web`; figures in docs/benchmarks.md.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anomalyd::sinks::store::row::{At, Row, format_ms};
use anomalyd::sinks::store::sqlite::SqliteStore;
use anomalyd::sinks::store::{Store, StoreConfig};
use anomalyd::web::{self, View};
use tokio_util::sync::CancellationToken;

const DETECTORS: usize = 10;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn record(detector: &str, i: usize, t: i64) -> String {
    format!(
        r#"{{"sensor_id":"s-{}","temperature":{}.5,"timestamp":"{}","anomalyd":{{"detector":"{detector}","score":1.0,"decision":-1.0,"model":{{"id":"3fa2c1","kind":"rules"}},"source":{{"topic":"sensor-data","partition":0,"offset":{i}}},"detected_at":"{}","explanation":[{{"rule":"hot"}}],"layout":"inline"}}}}"#,
        i % 100,
        40 + i % 10,
        format_ms(t),
        format_ms(t + 5)
    )
}

/// `n` anomalies of `detectors` detectors, spread evenly over the `span_ms` before `end`.
fn build(path: &Path, n: usize, detectors: usize, end: i64, span_ms: i64) {
    let mut store = SqliteStore::open(path).expect("store");
    let names: Vec<String> = (0..detectors).map(|d| format!("d{d}")).collect();
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..n {
        let t = end - 1 - (i as i64 * span_ms / n as i64);
        let d = &names[i % detectors];
        let text = record(d, i, t);
        let at = At {
            topic: "anomalies",
            partition: (i % 3) as i32,
            offset: i as i64,
            timestamp_ms: t,
        };
        let key = format!("s-{}", i % 100);
        batch.push(
            Row::parse(
                at,
                Some(key.as_bytes()),
                text.as_bytes(),
                Some("/timestamp"),
            )
            .expect("row"),
        );
        if batch.len() == 10_000 {
            store.insert(&batch).expect("insert");
            batch.clear();
        }
    }
    store.insert(&batch).expect("insert");
}

async fn serve(db: &Path, detectors: usize) -> (String, CancellationToken) {
    let view = Arc::new(View::new(
        StoreConfig {
            path: Some(db.to_owned()),
            ..StoreConfig::default()
        },
        (0..detectors).map(|d| format!("d{d}")).collect(),
        None,
        10,
    ));
    let listener = web::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let shutdown = stop.clone();
    tokio::spawn(
        async move { web::run(&listener, web::router(view, None), || {}, shutdown).await },
    );
    (format!("http://{addr}"), stop)
}

/// p50 and p99 of `n` GETs of `url`, after 20 to warm up.
async fn timed(client: &reqwest::Client, url: &str, n: usize) -> (Duration, Duration) {
    let mut times = Vec::with_capacity(n);
    for i in 0..n + 20 {
        let t = Instant::now();
        let res = client.get(url).send().await.expect("request");
        assert_eq!(res.status(), 200, "{url}");
        res.bytes().await.expect("body");
        if i >= 20 {
            times.push(t.elapsed());
        }
    }
    times.sort();
    (times[n / 2], times[(n * 99).div_ceil(100) - 1])
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn chromium(dir: &Path, url: &str) -> Duration {
    let profile = tempfile::tempdir_in(dir).expect("profile");
    let t = Instant::now();
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .expect("chromium");
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("temp dir");
    let end = now_ms();
    let big = dir.path().join("big.db");
    let t = Instant::now();
    build(&big, 1_000_000, DETECTORS, end, 30 * 86_400_000);
    println!(
        "1,000,000-row store built in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let (base, stop) = serve(&big, DETECTORS).await;
    let client = reqwest::Client::new();
    let (p50, p99) = timed(&client, &format!("{base}/api/detectors"), 500).await;
    println!("baseline /api/detectors: p50 {}, p99 {}", ms(p50), ms(p99));
    let (since, until) = (format_ms(end - 2 * 3_600_000), format_ms(end - 3_600_000));
    let url = format!(
        "{base}/api/anomalies?detector=d3&since={}&until={}&limit=1000",
        since.replace(':', "%3A"),
        until.replace(':', "%3A")
    );
    let rows = client
        .get(&url)
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap()["anomalies"]
        .as_array()
        .unwrap()
        .len();
    let (a50, a99) = timed(&client, &url, 500).await;
    println!(
        "/api/anomalies, one hour of one detector ({rows} rows): p50 {}, p99 {} (target p99 <= 50 ms; {:.1}x the baseline's p99)",
        ms(a50),
        ms(a99),
        a99.as_secs_f64() / p99.as_secs_f64()
    );
    let (o50, o99) = timed(&client, &format!("{base}/api/overview"), 200).await;
    println!(
        "/api/overview, last hour, {DETECTORS} detectors: p50 {}, p99 {} (target <= 100 ms)",
        ms(o50),
        ms(o99)
    );
    stop.cancel();

    if Command::new("chromium").arg("--version").output().is_err() {
        println!("page render: skipped, no chromium on the PATH (apt-get install chromium)");
        return;
    }
    let small = dir.path().join("hour.db");
    build(&small, 10_000, 3, end, 3_600_000);
    let (base, stop) = serve(&small, 3).await;
    let blank: Vec<Duration> = (0..5)
        .map(|_| chromium(dir.path(), "about:blank"))
        .collect();
    let page: Vec<Duration> = (0..5)
        .map(|_| chromium(dir.path(), &format!("{base}/?limit=1000")))
        .collect();
    let (blank, page) = (median(blank), median(page));
    println!(
        "page with 10,000 anomalies in its hour (1000 table rows), headless Chromium: median {} \
         against about:blank {}: {} for the page itself (target <= 1 s)",
        ms(page),
        ms(blank),
        ms(page.saturating_sub(blank))
    );
    stop.cancel();
}
