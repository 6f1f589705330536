//! The web view against a seeded SQLite store (in a temp dir, rows made by the store's own
//! parsing and insert, as the store task makes them): every API endpoint and filter, bad
//! parameters (400 with the reason), the token (401 without it), the headers; the page in a
//! real browser (headless Chromium: the table shows the seeded anomalies, the charts have the
//! right number of points, a filter narrows the table, a screenshot is not blank); and a
//! non-loopback `listen` without a token refused as a configuration error (exit 78).
//!
//! Most tests serve the view with [`anomalyd::web::run`], the function the daemon's `web` task
//! runs, and need no broker; the last one runs the daemon itself against the real broker
//! (`scripts/test --test web`) with a generator, the store and the view, and reads the
//! daemon's counters and its stored anomalies from the API and in the browser. The browser
//! tests need Debian's `chromium` (scripts/test installs it); without it, they fail saying so.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anomalyd::sinks::store::row::{At, Row, format_ms};
use anomalyd::sinks::store::sqlite::SqliteStore;
use anomalyd::sinks::store::{Store, StoreConfig};
use anomalyd::web::{self, Token, View};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "6f1c0ffee15bad5eed0123456789abcd";
/// Minutes ago of the `sensors` readings of key s-1 that are anomalies.
const SENSOR_ANOMALIES: [i64; 3] = [3, 8, 15];
/// Minutes ago of the `tx` anomalies (key k-9) within the last hour.
const TX_RECENT: [i64; 5] = [5, 10, 25, 40, 50];
/// Readings of s-1 (one a minute, minutes 1 to 20 ago).
const READINGS: i64 = 20;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `minutes` ago, one second into that minute: each seeded time in its own minute.
fn ago(base: i64, minutes: i64) -> i64 {
    base - minutes * 60_000 + 1000
}

/// An anomaly record as the detector writes it (inline layout); `anomaly: None` for the
/// anomalies topic, `Some(flag)` for the scored topic.
#[allow(clippy::too_many_arguments)]
fn record(
    detector: &str,
    fields: &str,
    time_ms: i64,
    decision: f64,
    rules: &[&str],
    anomaly: Option<bool>,
    source_offset: i64,
) -> String {
    let explanation: Vec<String> = rules
        .iter()
        .map(|r| format!("{{\"rule\":\"{r}\"}}"))
        .collect();
    let flag = anomaly
        .map(|a| format!(",\"anomaly\":{a}"))
        .unwrap_or_default();
    format!(
        "{{{fields},\"timestamp\":\"{}\",\"anomalyd\":{{\"detector\":\"{detector}\",\"score\":{},\
         \"decision\":{decision},\"model\":{{\"id\":\"rules-1\",\"kind\":\"rules\"}},\
         \"source\":{{\"topic\":\"in\",\"partition\":0,\"offset\":{source_offset}}},\
         \"detected_at\":\"{}\",\"explanation\":[{}],\"layout\":\"inline\"{flag}}}}}",
        format_ms(time_ms),
        -decision,
        format_ms(time_ms + 50),
        explanation.join(",")
    )
}

/// Seeds the store at `db`: returns the base time (the current minute's start).
fn seed(db: &Path) -> i64 {
    let base = now_ms().div_euclid(60_000) * 60_000;
    let mut store = SqliteStore::open(db).unwrap();
    let mut rows = Vec::new();
    let mut push = |topic: &str, offset: i64, key: &str, text: String, t: i64| {
        let at = At {
            topic,
            partition: 0,
            offset,
            timestamp_ms: t,
        };
        rows.push(
            Row::parse(
                at,
                Some(key.as_bytes()),
                text.as_bytes(),
                Some("/timestamp"),
            )
            .unwrap(),
        );
    };
    // sensors: every reading of s-1 from its scored topic, three of them anomalies.
    for m in 1..=READINGS {
        let hot = SENSOR_ANOMALIES.contains(&m);
        let temp = if hot {
            45.0 + m as f64
        } else {
            20.0 + (m % 5) as f64
        };
        let t = ago(base, m);
        let text = record(
            "sensors",
            &format!("\"sensor_id\":\"s-1\",\"temperature\":{temp}"),
            t,
            if hot { -1.0 } else { 1.0 },
            if hot { &["hot"][..] } else { &[] },
            Some(hot),
            m,
        );
        push("sensor-scored", m, "s-1", text, t);
    }
    // tx: five anomalies in the last hour, two two days ago.
    for (i, m) in TX_RECENT
        .iter()
        .chain(&[2 * 24 * 60, 2 * 24 * 60 + 1])
        .enumerate()
    {
        let t = ago(base, *m);
        let text = record(
            "tx",
            &format!("\"amount\":{}", 1000 + i),
            t,
            -0.5,
            &["big_amount"],
            None,
            100 + i as i64,
        );
        push("tx-anomalies", i as i64, "k-9", text, t);
    }
    store.insert(&rows).unwrap();
    base
}

struct Served {
    addr: SocketAddr,
    base: i64,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
    dir: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A seeded store served by the web task on a free loopback port.
async fn serve(token: Option<&str>) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("anomalies.db");
    let base = seed(&db);
    let view = Arc::new(View::new(
        StoreConfig {
            path: Some(db),
            ..StoreConfig::default()
        },
        vec!["sensors".into(), "tx".into(), "idle".into()],
        None,
        1,
    ));
    let router = web::router(view, token.map(|t| Token::new(t.into())));
    let listener = web::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let shutdown = stop.clone();
    tokio::spawn(async move { web::run(&listener, router, || {}, shutdown).await });
    Served {
        addr,
        base,
        stop,
        dir: dir.path().to_owned(),
        _dir: dir,
    }
}

struct Answer {
    status: u16,
    content_type: String,
    cache: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// A plain-HTTP client (reqwest wants a TLS provider chosen even so).
fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn get_with(s: &Served, path: &str, auth: Option<&str>) -> Answer {
    let mut req = client().get(format!("http://{}{path}", s.addr));
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    let res = req.send().await.unwrap();
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    Answer {
        status: res.status().as_u16(),
        content_type: header("content-type"),
        cache: header("cache-control"),
        body: res.text().await.unwrap(),
    }
}

async fn get(s: &Served, path: &str) -> Answer {
    get_with(s, path, None).await
}

/// 200, JSON, not cached: the body.
async fn ok_json(s: &Served, path: &str) -> Value {
    let a = get(s, path).await;
    assert_eq!(a.status, 200, "{path}: {}", a.body);
    assert_eq!(a.content_type, "application/json", "{path}");
    assert_eq!(a.cache, "no-store", "{path}");
    a.json()
}

fn keys_of(v: &Value) -> Vec<(String, String)> {
    v["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["detector"].as_str().unwrap().to_owned(),
                a["event_time"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_endpoint_and_filter_answers_from_the_store() {
    let s = serve(None).await;
    let base = s.base;

    let d = ok_json(&s, "/api/detectors").await;
    assert_eq!(d["detectors"], serde_json::json!(["idle", "sensors", "tx"]));

    // The last hour by default: the 3 + 5 anomalies, newest first; scored normal rows not.
    let all = ok_json(&s, "/api/anomalies").await;
    let mut expected: Vec<(String, i64)> = SENSOR_ANOMALIES
        .iter()
        .map(|m| ("sensors".to_owned(), *m))
        .chain(TX_RECENT.iter().map(|m| ("tx".to_owned(), *m)))
        .collect();
    expected.sort_by_key(|(_, m)| *m);
    let expected: Vec<(String, String)> = expected
        .into_iter()
        .map(|(d, m)| (d, format_ms(ago(base, m))))
        .collect();
    assert_eq!(keys_of(&all), expected);
    assert_eq!(all["limit"], 100);
    let first = &all["anomalies"][0];
    assert_eq!(first["key"], "s-1");
    assert_eq!(first["rules"], serde_json::json!(["hot"]));
    assert!(
        first.get("record").is_none(),
        "the list leaves the record out"
    );

    let n = |v: &Value| v["anomalies"].as_array().unwrap().len();
    assert_eq!(n(&ok_json(&s, "/api/anomalies?detector=tx").await), 5);
    assert_eq!(n(&ok_json(&s, "/api/anomalies?key=s-1").await), 3);
    assert_eq!(n(&ok_json(&s, "/api/anomalies?since=3d").await), 10);
    assert_eq!(
        n(&ok_json(&s, "/api/anomalies?since=12m").await),
        4,
        "sensors 3, 8; tx 5, 10"
    );
    let until = format_ms(ago(base, 9));
    let v = ok_json(
        &s,
        &format!(
            "/api/anomalies?until={}&detector=tx",
            until.replace(':', "%3A")
        ),
    )
    .await;
    assert_eq!(n(&v), 4, "tx 10, 25, 40 and 50 minutes ago, not 5: {v}");
    let v = ok_json(&s, "/api/anomalies?limit=2").await;
    assert_eq!(keys_of(&v), expected[..2]);
    // Text that looks like SQL is only a value.
    assert_eq!(
        n(&ok_json(&s, "/api/anomalies?key=%27%20OR%201%3D1%20--").await),
        0
    );
    let empty = ok_json(&s, "/api/anomalies?detector=idle").await;
    assert_eq!(n(&empty), 0);

    // One anomaly with its record.
    let id = first["id"].as_str().unwrap();
    assert_eq!(id, "sensor-scored/0/3");
    let one = ok_json(&s, &format!("/api/anomalies/{id}")).await;
    assert_eq!(one["record"]["temperature"], 48.0);
    assert_eq!(one["record"]["anomalyd"]["explanation"][0]["rule"], "hot");
    assert_eq!(
        get(&s, "/api/anomalies/sensor-scored/0/999").await.status,
        404
    );

    // Counts per interval per detector.
    let c = ok_json(&s, "/api/counts?detector=sensors&by=1m").await;
    let counts = &c["detectors"][0];
    assert_eq!(counts["detector"], "sensors");
    assert_eq!(counts["anomalies"], 3);
    let starts: Vec<&str> = counts["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["start"].as_str().unwrap())
        .collect();
    let want: Vec<String> = [15, 8, 3]
        .iter()
        .map(|m| format_ms(base - m * 60_000))
        .collect();
    assert_eq!(starts, want);
    let c = ok_json(&s, "/api/counts?by=1h&since=3d").await;
    let per: Vec<(String, u64)> = c["detectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["detector"].as_str().unwrap().to_owned(),
                d["anomalies"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        per,
        [("idle".into(), 0), ("sensors".into(), 3), ("tx".into(), 7)]
    );

    // The series: every reading of s-1, oldest first, the anomalies marked.
    let v = ok_json(&s, "/api/series?detector=sensors&key=s-1&field=temperature").await;
    let points = v["points"].as_array().unwrap();
    assert_eq!(points.len(), READINGS as usize);
    assert_eq!(points[0]["time"], format_ms(ago(base, READINGS)));
    let marked: Vec<f64> = points
        .iter()
        .filter(|p| p["anomaly"] == true)
        .map(|p| p["value"].as_f64().unwrap())
        .collect();
    assert_eq!(marked, [60.0, 53.0, 48.0]);
    assert_eq!(v["skipped"], 0);
    let v = ok_json(&s, "/api/series?detector=sensors&key=s-1&field=nope").await;
    assert_eq!(
        (v["points"].as_array().unwrap().len(), v["skipped"].as_u64()),
        (0, Some(20))
    );

    // The overview: per minute over the last hour, no daemon counters outside a daemon.
    let o = ok_json(&s, "/api/overview").await;
    assert_eq!(o["window"], "1h");
    assert_eq!(o["anomalies"], 8);
    assert_eq!(o["totals"], Value::Null);
    let o = ok_json(&s, "/api/overview?window=1d").await;
    assert_eq!(
        o["anomalies"], 8,
        "the two-day-old ones are outside the day"
    );
}

#[tokio::test]
async fn bad_parameters_get_400_with_the_reason() {
    let s = serve(None).await;
    for (path, reason) in [
        (
            "/api/anomalies?since=yesterday",
            "since=\"yesterday\": neither an RFC 3339 time",
        ),
        ("/api/anomalies?until=2026-13-01T00:00:00Z", "until="),
        (
            "/api/anomalies?since=1h&until=2h",
            "since must be before until",
        ),
        (
            "/api/anomalies?detector=nope",
            "detector=\"nope\": no such detector",
        ),
        (
            "/api/anomalies?detector=x%27%3B%20DROP%20TABLE%20anomalies",
            "no such detector",
        ),
        (
            "/api/anomalies?limit=5000",
            "limit=\"5000\": expected a whole number between 1 and 1000",
        ),
        ("/api/anomalies?limit=0", "between 1 and 1000"),
        ("/api/anomalies?limit=ten", "between 1 and 1000"),
        ("/api/anomalies?detectr=tx", "unknown parameter \"detectr\""),
        ("/api/anomalies?key=a&key=b", "given more than once"),
        ("/api/counts?by=1s&since=1d", "at most 10000"),
        ("/api/counts?by=soon", "by=\"soon\""),
        (
            "/api/overview?window=1y",
            "window=\"1y\": expected one of 1h, 1d",
        ),
        (
            "/api/series?detector=sensors&field=temperature",
            "parameter \"key\" is required",
        ),
        (
            "/api/series?key=s-1&field=temperature",
            "parameter \"detector\" is required",
        ),
        (
            "/api/series?detector=sensors&key=s-1&field=t&limit=10001",
            "between 1 and 10000",
        ),
        ("/api/anomalies/t/zero/1", "partition"),
        ("/api/anomalies/t/0/1?x=1", "unknown parameter"),
    ] {
        let a = get(&s, path).await;
        assert_eq!(a.status, 400, "{path}: {}", a.body);
        assert_eq!(a.content_type, "application/json", "{path}");
        assert_eq!(a.cache, "no-store", "{path}");
        let why = a.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(why.contains(reason), "{path}: {why}");
    }
    // The page says why too, as a page.
    let a = get(&s, "/?since=yesterday").await;
    assert_eq!(a.status, 400);
    assert!(
        a.content_type.starts_with("text/html"),
        "{}",
        a.content_type
    );
    assert!(a.body.contains("neither an RFC 3339 time"), "{}", a.body);
    // The store still holds every row.
    let db = SqliteStore::open_read_only(&s.dir.join("anomalies.db")).unwrap();
    assert_eq!(db.detectors().unwrap(), ["sensors", "tx"]);
}

#[tokio::test]
async fn with_a_token_every_request_needs_it() {
    let s = serve(Some(TOKEN)).await;
    for path in [
        "/api/anomalies",
        "/api/overview",
        "/",
        "/assets/live.js",
        "/nope",
    ] {
        let a = get(&s, path).await;
        assert_eq!(a.status, 401, "{path}");
        assert!(!a.body.contains(TOKEN));
        assert_eq!(
            get_with(&s, path, Some("Bearer wrong-token-0123456789"))
                .await
                .status,
            401
        );
        assert_eq!(
            get_with(&s, path, Some(TOKEN)).await.status,
            401,
            "no scheme"
        );
    }
    let a = get_with(&s, "/api/anomalies", Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["anomalies"].as_array().unwrap().len(), 8);
    let a = get_with(&s, "/", Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(a.status, 200);
}

#[tokio::test]
async fn pages_and_assets_have_their_types_and_headers() {
    let s = serve(None).await;
    let res = client()
        .get(format!("http://{}/", s.addr))
        .send()
        .await
        .unwrap();
    let h = res.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    let a = get(&s, "/assets/live.js").await;
    assert_eq!(
        (a.status, a.content_type.as_str()),
        (200, "text/javascript; charset=utf-8")
    );
    let a = get(&s, "/assets/style.css").await;
    assert_eq!(
        (a.status, a.content_type.as_str()),
        (200, "text/css; charset=utf-8")
    );
    let a = get(&s, "/anomaly/tx-anomalies/0/0").await;
    assert_eq!(a.status, 200);
    for part in ["big_amount", "rules-1", "&quot;amount&quot;: 1000", "-0.5"] {
        assert!(a.body.contains(part), "{part}: {}", a.body);
    }
    assert!(
        a.body
            .contains("<a href=\"/series?detector=tx&amp;key=k-9&amp;field=amount\">amount</a>"),
        "{}",
        a.body
    );
    assert_eq!(get(&s, "/anomaly/tx-anomalies/0/99").await.status, 404);
}

/// A `[web]` bound beyond loopback without `token_file` stops at the configuration, naming
/// file, line and key, with exit 78; with a token file it passes that check.
#[test]
fn a_non_loopback_listen_without_a_token_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("anomalyd.toml");
    let text = |web: &str| {
        format!(
            "[detectors.tx]\ninput_topic = \"in\"\noutput_topic = \"out\"\n\
             dead_letter_topic = \"dlq\"\nmodel = \"{}\"\n\n[store]\npath = \"{}\"\n\n[web]\n{web}",
            dir.path().join("m.model").display(),
            dir.path().join("a.db").display()
        )
    };
    let check = |web: &str| {
        std::fs::write(&path, text(web)).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_anomalyd"))
            .args(["check-config", "--config"])
            .arg(&path)
            .env_remove("ANOMALYD_CONFIG")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = check("listen = \"0.0.0.0:8080\"\n");
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains(&format!("{}:11:", path.display())) && err.contains("web.listen"),
        "{err}"
    );
    assert!(err.contains("token_file"), "{err}");
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let (code, err) = check(&format!(
        "listen = \"0.0.0.0:8080\"\ntoken_file = \"{}\"\n",
        token.display()
    ));
    assert!(!err.contains("web."), "{err}");
    assert!(!err.contains(TOKEN), "{err}");
    // It goes on to the model, which does not exist: not a [web] problem.
    assert_ne!(code, Some(0));
}

/// Runs headless Chromium on `url` with the given extra arguments; returns stdout.
async fn chromium(dir: &Path, args: &[String], url: &str) -> String {
    let profile = tempfile::tempdir_in(dir).unwrap();
    let out = tokio::process::Command::new("chromium")
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
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("chromium within 2 minutes")
        .expect("Debian's chromium package (scripts/test installs it)");
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn dump_args() -> Vec<String> {
    vec!["--virtual-time-budget=3000".into(), "--dump-dom".into()]
}

/// `data-points="N"` of the `<svg id="{id}">`.
fn points_of(dom: &str, id: &str) -> usize {
    let at = dom
        .find(&format!("<svg id=\"{id}\""))
        .unwrap_or_else(|| panic!("no chart {id}"));
    let rest = &dom[at..];
    let n = rest.find("data-points=\"").unwrap() + "data-points=\"".len();
    rest[n..n + rest[n..].find('"').unwrap()].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_renders_in_a_real_browser() {
    let s = serve(None).await;
    let url = format!("http://{}/", s.addr);
    let dom = chromium(&s.dir, &dump_args(), &url).await;
    // The script ran (and refreshed the live part, refresh_s being 1).
    assert!(dom.contains("data-live=\"on\""), "{dom}");
    assert!(dom.contains("data-refreshed=\""), "the refresh ran: {dom}");
    // The table: the 8 anomalies of the last hour, newest first.
    let rows: Vec<&str> = dom.matches("<tr class=\"anomaly\"").collect();
    assert_eq!(rows.len(), 8, "{dom}");
    let first = dom.find("data-id=\"sensor-scored/0/3\"").unwrap();
    let last = dom.find("data-id=\"tx-anomalies/0/4\"").unwrap();
    assert!(first < last, "newest first");
    // The overview: one point per detector per minute with anomalies (3 + 5), one circle each.
    assert_eq!(points_of(&dom, "overview"), 8);
    let svg = &dom[dom.find("<svg id=\"overview\"").unwrap()..];
    let svg = &svg[..svg.find("</svg>").unwrap()];
    assert_eq!(svg.matches("<circle class=\"point").count(), 8);
    assert!(dom.contains("<b>8</b> anomalies"), "{dom}");

    // A filter in the address narrows the table.
    let dom = chromium(
        &s.dir,
        &dump_args(),
        &format!("{url}?detector=tx&since=30m"),
    )
    .await;
    assert_eq!(dom.matches("<tr class=\"anomaly\"").count(), 3, "{dom}");
    assert!(!dom.contains("data-id=\"sensor-scored/"), "{dom}");
    assert!(dom.contains("<option selected=\"\">tx</option>"), "{dom}");

    // The series: 20 readings, the 3 anomalies marked.
    let series = format!("{url}series?detector=sensors&key=s-1&field=temperature");
    let dom = chromium(&s.dir, &dump_args(), &series).await;
    assert_eq!(points_of(&dom, "series"), READINGS as usize);
    assert_eq!(
        dom.matches("<circle class=\"point anomaly\"").count(),
        3,
        "{dom}"
    );

    // A screenshot of the page: a real picture, not a blank one.
    let shot = s.dir.join("page.png");
    chromium(
        &s.dir,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1200,900".into(),
            "--virtual-time-budget=2000".into(),
        ],
        &url,
    )
    .await;
    let size = std::fs::metadata(&shot).unwrap().len();
    assert!(
        size > 20_000,
        "a blank page is a few kB; this one is {size} bytes"
    );
}

/// The address the daemon logged for its web view.
fn logged_address(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().find(|l| l.contains("web view listening"))?;
    let at = line.find("127.0.0.1:")?;
    let addr: String = line[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    Some(addr)
}

/// The daemon itself: a generator, a detector, the store and the view on a free loopback
/// port. The overview's totals are the daemon's counters, the API lists what the store holds,
/// the page shows it in the browser, and a stop ends the `web` task with the rest (exit 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_serves_its_store_and_counters() {
    const N: u64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let model = support::seed_model(dir.path());
    let mut config = support::pipeline_config(dir.path(), &model).await;
    support::generate(&mut config, N, 0.0, 5);
    let db = dir.path().join("state/anomalies.db");
    config.store = Some(StoreConfig {
        path: Some(db.clone()),
        batch_max: 200,
        ..StoreConfig::default()
    });
    config.web.listen = Some("127.0.0.1:0".into());
    config.web.refresh_s = 1;
    let path = dir.path().join("anomalyd.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let log = dir.path().join("run.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_anomalyd"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ANOMALYD_")) {
        cmd.env_remove(k);
    }
    let mut daemon = support::Reaper(
        cmd.args(["run", "--config"])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start anomalyd"),
    );
    let mut addr = None;
    assert!(
        support::wait_until(Duration::from_secs(60), || {
            addr = logged_address(&log);
            addr.is_some()
        })
        .await,
        "no web view address; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let s = Served {
        addr: addr.unwrap().parse().unwrap(),
        base: 0,
        stop: CancellationToken::new(),
        dir: dir.path().to_owned(),
        _dir: tempfile::tempdir().unwrap(),
    };

    // Every record scored, and every anomaly of the topic stored and listed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let (overview, stored) = loop {
        let a = get(&s, "/api/overview").await;
        let stored = SqliteStore::open_read_only(&db)
            .ok()
            .and_then(|db| {
                db.select(&anomalyd::sinks::store::Filter {
                    limit: 10_000,
                    ..Default::default()
                })
                .ok()
            })
            .map_or(0, |rows| rows.len() as u64);
        if a.status == 200 {
            let o = a.json();
            let t = &o["totals"];
            if t["records_scored"] == N
                && t["anomalies"].as_u64() == Some(stored)
                && o["anomalies"].as_u64() == Some(stored)
            {
                break (o, stored);
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the view did not catch up: {} (stored {stored}); log:\n{}",
            a.body,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(
        stored > 0,
        "the seeded model flags some of the generated records"
    );
    assert_eq!(overview["totals"]["dead_letters"], 0);
    assert_eq!(overview["detectors"][0]["detector"], support::DETECTOR);
    let limit = stored.min(1000);
    let listed = ok_json(
        &s,
        &format!(
            "/api/anomalies?detector={}&limit={limit}",
            support::DETECTOR
        ),
    )
    .await;
    assert_eq!(listed["anomalies"].as_array().unwrap().len() as u64, limit);

    // The page, in the browser, from the daemon.
    let dom = chromium(dir.path(), &dump_args(), &format!("http://{}/", s.addr)).await;
    assert!(dom.contains(&format!("Records scored <b>{N}</b>")), "{dom}");
    assert_eq!(
        dom.matches("<tr class=\"anomaly\"").count() as u64,
        stored.min(100)
    );

    // A stop ends every task, the view's too.
    Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    let mut code = None;
    assert!(
        support::wait_until(Duration::from_secs(60), || {
            code = daemon.try_wait().unwrap().map(|s| s.code());
            code.is_some()
        })
        .await
    );
    assert_eq!(
        code.unwrap(),
        Some(0),
        "log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
