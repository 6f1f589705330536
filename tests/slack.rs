//! The Slack notifier against a local server that answers as Slack does, reading anomalies
//! from a real topic on the test broker: message shape, grouping of a storm, the per-channel
//! rate, Retry-After, retries, permanent errors and recovery, no anomaly lost across a restart
//! in an outage, the size budget and refusals for content, and no secret in the logs.

mod fake_slack;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anomalyd::config::{SlackConfig, SlackMode};
use anomalyd::sinks::slack::{NotifierError, SlackMetrics, run};
use anomalyd::supervisor::{RestartPolicy, Supervisor, TaskError, TaskState, TaskStatus};
use fake_slack::{FakeSlack, Reply, Request};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "xoxb-4242-TOPSECRET-token";
const WEBHOOK_SECRET: &str = "WEBHOOKSECRET0123456789";
/// The anomalies' source topic (a name in the records, not a topic the test reads).
const SOURCE: &str = "transactions";

// ---- captured logs ---------------------------------------------------------------------

/// Everything every test in this binary logged (all levels, all threads, and `log` records
/// from librdkafka and the HTTP stack), for the secret checks.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .try_init()
            .expect("the only subscriber of this test binary");
        buf
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

/// Fails (without printing the secret or the log) if a secret was logged.
fn assert_no_secret_logged() {
    let text = log_text();
    assert!(!text.contains(TOKEN), "the bot token appears in the logs");
    assert!(
        !text.contains(WEBHOOK_SECRET),
        "the webhook URL appears in the logs"
    );
}

// ---- anomalies on a real topic ---------------------------------------------------------

/// An anomaly record as the detector writes it; `n` is its source offset and record id, and
/// the score falls with `n % 100` so the top N are predictable.
fn anomaly(model: &str, n: i64) -> Value {
    json!({
        "id": n,
        "data": [[3.9, -0.5]],
        "anomalyd": {
            "detector": "transactions",
            "score": -0.6 - (n % 100) as f64 / 1000.0,
            "decision": -0.1,
            "model": {"id": model, "kind": "isolation_forest", "path": "/m.iforest"},
            "source": {"topic": SOURCE, "partition": (n % 3), "offset": n},
            "detected_at": format!("2026-05-01T12:00:{:02}.000Z", n % 60),
            "explanation": [{"feature": "x0", "value": 3.9123, "low": -2.6, "high": 2.7}],
            "layout": "inline",
        },
    })
}

/// An anomaly of a 12-feature model, every feature explained, with names as long as real
/// ones: the case.
fn wide_anomaly(model: &str, n: i64) -> Value {
    let mut a = anomaly(model, n);
    a["id"] = json!(format!("txn-2026-05-01-{n:08}"));
    a["anomalyd"]["explanation"] = (0..12)
        .map(|f| {
            json!({"feature": format!("merchant_category_risk_{f:02}"),
                   "value": 3.9123 + f as f64, "low": -2.6, "high": 2.7})
        })
        .collect();
    a
}

async fn produce(topic: &str, records: impl IntoIterator<Item = Value>) {
    let producer: FutureProducer = anomalyd::kafka::producer_config(&support::kafka_config())
        .create()
        .unwrap();
    let mut pending = Vec::new();
    for r in records {
        let payload = r.to_string();
        pending.push(
            producer
                .send_result(FutureRecord::<(), _>::to(topic).payload(&payload))
                .map_err(|(e, _)| e)
                .expect("enqueue"),
        );
    }
    for p in pending {
        p.await.expect("delivery").expect("delivered");
    }
}

async fn anomalies_topic() -> String {
    let topic = support::unique("anomalies");
    support::create_topic(&topic, 2).await;
    topic
}

// ---- the notifier ----------------------------------------------------------------------

fn bot_config(server: &FakeSlack, dir: &Path) -> SlackConfig {
    let token_file = dir.join("slack-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    SlackConfig {
        mode: SlackMode::Bot,
        channel: "#alerts".into(),
        api_base: server.api_base(),
        token_file: Some(token_file),
        group_id: Some(support::unique("notifier")),
        group_wait_s: 1,
        group_interval_s: 2,
        top_n: 5,
        min_interval_ms: 1000,
        request_timeout_s: 2,
        ..SlackConfig::default()
    }
}

struct Running {
    stop: CancellationToken,
    task: JoinHandle<Result<(), NotifierError>>,
}

/// The notifier reading `topics` (every detector's output topic, as the daemon passes them).
fn start(slack: &SlackConfig, topics: &[&str], metrics: &Arc<SlackMetrics>) -> Running {
    let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
    let (slack, metrics) = (slack.clone(), Arc::clone(metrics));
    let stop = CancellationToken::new();
    let token = stop.clone();
    let task = tokio::spawn(async move {
        run(
            &slack,
            &support::kafka_config(),
            &topics,
            &metrics,
            || {},
            token,
        )
        .await
    });
    Running { stop, task }
}

impl Running {
    async fn stop(self) -> Result<(), NotifierError> {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the notifier stops")
            .expect("no panic")
    }
}

/// The notifier under the daemon's supervisor, which restarts it whenever it fails: the
/// report's `restarts` is what `/status` and `anomalyd_task_restarts_total` show.
struct Supervised {
    supervisor: Supervisor,
    status: Arc<TaskStatus>,
}

async fn start_supervised(
    slack: &SlackConfig,
    topic: &str,
    metrics: &Arc<SlackMetrics>,
) -> Supervised {
    let supervisor = Supervisor::new(RestartPolicy::default());
    let (slack, topic, metrics) = (
        Arc::new(slack.clone()),
        topic.to_owned(),
        Arc::clone(metrics),
    );
    let status = supervisor
        .spawn("notifier", move |status, shutdown| {
            let (slack, topic, metrics) = (Arc::clone(&slack), topic.clone(), Arc::clone(&metrics));
            async move {
                run(
                    &slack,
                    &support::kafka_config(),
                    std::slice::from_ref(&topic),
                    &metrics,
                    || status.heartbeat(),
                    shutdown,
                )
                .await
                .map_err(TaskError::from)
            }
        })
        .await;
    Supervised { supervisor, status }
}

impl Supervised {
    /// Fails unless the notifier is running and was never restarted.
    fn assert_never_restarted(&self) {
        let report = self.status.report();
        assert_eq!(report.restarts, 0, "{report:?}");
        assert_eq!(report.state, TaskState::Running, "{report:?}");
    }

    async fn stop(self) {
        let still = self.supervisor.shutdown(Duration::from_secs(30)).await;
        assert!(still.is_empty(), "{still:?} did not stop");
    }
}

// ---- reading messages ------------------------------------------------------------------

fn header(r: &Request) -> String {
    r.body["blocks"][0]["text"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The anomaly count a message carries, from its header "N anomalies from detector ...".
fn count(r: &Request) -> u64 {
    header(r)
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in header {:?}", header(r)))
}

fn block_texts(r: &Request) -> Vec<String> {
    let mut out = Vec::new();
    for b in r.body["blocks"].as_array().into_iter().flatten() {
        if let Some(t) = b["text"]["text"].as_str() {
            out.push(t.to_owned());
        }
        for f in b["fields"].as_array().into_iter().flatten() {
            out.push(f["text"].as_str().unwrap().to_owned());
        }
        for e in b["elements"].as_array().into_iter().flatten() {
            out.push(e["text"].as_str().unwrap().to_owned());
        }
    }
    out
}

/// The source offsets of the anomalies a message lists, from its "Source" fields.
fn listed(r: &Request) -> BTreeSet<i64> {
    listed_from(r, SOURCE)
}

/// The offsets of `source` records among the anomalies a message lists.
fn listed_from(r: &Request, source: &str) -> BTreeSet<i64> {
    block_texts(r)
        .iter()
        .filter_map(|t| t.strip_prefix(&format!("*Source*\n`{source}` partition ")))
        .map(|rest| {
            rest.split("offset ")
                .nth(1)
                .and_then(|o| o.parse().ok())
                .unwrap_or_else(|| panic!("bad source field {rest:?}"))
        })
        .collect()
}

/// The characters of text in a message's blocks, as Slack counts them against its limit.
fn text_size(r: &Request) -> usize {
    fake_slack::blocks_text(&r.body["blocks"])
}

fn total(reqs: &[Request]) -> u64 {
    reqs.iter().map(count).sum()
}

// ---- tests -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_has_the_documented_shape() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let server = FakeSlack::start().await;
    let topic = anomalies_topic().await;
    produce(&topic, (0..3).map(|n| anomaly("model-a", n))).await;
    let metrics = Arc::new(SlackMetrics::default());
    let n = start(&bot_config(&server, dir.path()), &[&topic], &metrics);
    assert!(
        support::wait_until(Duration::from_secs(60), || !server.accepted().is_empty()).await,
        "no message accepted: {:?}",
        server.requests().len()
    );
    n.stop().await.expect("clean stop");

    let sent = server.accepted();
    assert_eq!(sent.len(), 1);
    let r = &sent[0];
    assert_eq!(r.path, "/api/chat.postMessage");
    assert!(
        r.authorization.as_deref() == Some(&format!("Bearer {TOKEN}")),
        "the bot token is sent as a Bearer authorization"
    );
    assert!(
        r.content_type
            .as_deref()
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(r.body["channel"], "#alerts");
    assert_eq!(
        header(r),
        "3 anomalies from detector transactions on transactions"
    );
    assert!(header(r).chars().count() <= 150);
    let text = r.body["text"].as_str().unwrap();
    assert!(
        text.starts_with("3 anomalies from detector transactions on transactions (model model-a)"),
        "{text}"
    );
    let texts = block_texts(r);
    for want in [
        "*Score*\n-0.6020",
        "*Model*\n`model-a` (isolation_forest)",
        "*Time*\n2026-05-01T12:00:02.000Z",
        "*Source*\n`transactions` partition 2, offset 2",
        "*Record id*\n2",
        "*#1*\nx0 = 3.91, outside training range [-2.6, 2.7]",
        "Source offsets: partition 0: 0, partition 1: 1, partition 2: 2",
    ] {
        assert!(
            texts.iter().any(|t| t == want),
            "{want:?} not in {texts:#?}"
        );
    }
    assert_eq!(listed(r), BTreeSet::from([0, 1, 2]));
    assert_eq!(metrics.alerts_sent.load(Relaxed), 1);
    assert_eq!(metrics.anomalies_alerted.load(Relaxed), 3);
    assert_eq!(metrics.pending_anomalies.load(Relaxed), 0);
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_becomes_a_handful_of_messages_one_second_apart() {
    const N: i64 = 10_000;
    logs();
    let dir = tempfile::tempdir().unwrap();
    let server = FakeSlack::start().await;
    let topic = anomalies_topic().await;
    let metrics = Arc::new(SlackMetrics::default());
    let mut slack = bot_config(&server, dir.path());
    slack.group_wait_s = 2;
    slack.group_interval_s = 3;
    let n = start(&slack, &[&topic], &metrics);
    // Two models, so two groups; produced in ten bursts over about five seconds.
    let producer: FutureProducer = anomalyd::kafka::producer_config(&support::kafka_config())
        .create()
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut deliveries = Vec::new();
    for i in 0..N {
        if i > 0 && i % (N / 10) == 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let model = if i % 2 == 0 { "model-a" } else { "model-b" };
        let payload = anomaly(model, i).to_string();
        deliveries.push(
            producer
                .send_result(FutureRecord::<(), _>::to(&topic).payload(&payload))
                .map_err(|(e, _)| e)
                .expect("enqueue"),
        );
    }
    for d in deliveries {
        d.await.expect("delivery").expect("delivered");
    }
    let produced_in = started.elapsed();
    assert!(
        support::wait_until(Duration::from_secs(90), || total(&server.accepted())
            >= N as u64)
        .await,
        "only {} of {N} anomalies alerted",
        total(&server.accepted())
    );
    tokio::time::sleep(Duration::from_secs(4)).await; // a late extra message would show here
    n.stop().await.expect("clean stop");

    let sent = server.accepted();
    let counts: Vec<u64> = sent.iter().map(count).collect();
    eprintln!(
        "storm: {N} anomalies produced in {produced_in:?} became {} messages: {counts:?}",
        sent.len()
    );
    assert_eq!(total(&sent), N as u64, "every anomaly counted exactly once");
    assert!(
        sent.len() <= 20,
        "{} messages for {N} anomalies",
        sent.len()
    );
    let mut per_model = BTreeMap::new();
    for r in &sent {
        let text = r.body["text"].as_str().unwrap();
        let model = text
            .split("(model ")
            .nth(1)
            .and_then(|t| t.split(')').next())
            .unwrap_or_else(|| panic!("no model in {text:?}"))
            .to_owned();
        *per_model.entry(model).or_insert(0u64) += count(r);
        assert!(listed(r).len() <= 5, "top 5 only");
    }
    assert_eq!(
        per_model,
        BTreeMap::from([("model-a".to_owned(), 5000), ("model-b".to_owned(), 5000)])
    );
    // One channel: at most one message a second, however many groups are due together. The
    // notifier counts the second from the end of the previous request, so even arrival times
    // are a second apart.
    let reqs = server.requests();
    for w in reqs.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(gap >= Duration::from_secs(1), "two messages {gap:?} apart");
    }
    assert_eq!(metrics.anomalies_alerted.load(Relaxed), N as u64);
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_waits_its_retry_after() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let server = FakeSlack::start().await;
    server.script([Reply::RateLimited(3)]);
    let topic = anomalies_topic().await;
    produce(&topic, (0..2).map(|n| anomaly("model-a", n))).await;
    let metrics = Arc::new(SlackMetrics::default());
    let n = start(&bot_config(&server, dir.path()), &[&topic], &metrics);
    // Until the notifier has counted the answer, not only until the server sent it: a stop in
    // between would leave the counters one short (seen once on a loaded machine).
    assert!(
        support::wait_until(Duration::from_secs(60), || {
            metrics.alerts_sent.load(Relaxed) >= 1
        })
        .await
    );
    n.stop().await.expect("clean stop");

    let reqs = server.requests();
    assert_eq!(reqs.len(), 2, "one refused, one accepted");
    assert!(!reqs[0].accepted && reqs[1].accepted);
    let waited = reqs[1].at - reqs[0].at;
    assert!(
        waited >= Duration::from_millis(2900),
        "retried after {waited:?}"
    );
    assert_eq!(reqs[0].body, reqs[1].body, "the same message again");
    assert_eq!(metrics.rate_limited.load(Relaxed), 1);
    assert_eq!(metrics.retries.load(Relaxed), 1);
    assert_eq!(metrics.alerts_sent.load(Relaxed), 1);
    assert_eq!(metrics.backoff_ms.load(Relaxed), 0);
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_silence_are_retried_with_backoff() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let server = FakeSlack::start().await;
    server.script([
        Reply::Status(500, "internal"),
        Reply::Status(503, "unavailable"),
        Reply::Hang(Duration::from_secs(5)),
        Reply::SlackError("internal_error"),
    ]);
    let topic = anomalies_topic().await;
    produce(&topic, [anomaly("model-a", 7)]).await;
    let metrics = Arc::new(SlackMetrics::default());
    let mut slack = bot_config(&server, dir.path());
    slack.request_timeout_s = 2;
    let n = start(&slack, &[&topic], &metrics);
    // Until the notifier has counted the answer (see a_429_waits_its_retry_after).
    assert!(
        support::wait_until(Duration::from_secs(90), || {
            metrics.alerts_sent.load(Relaxed) >= 1
        })
        .await
    );
    n.stop().await.expect("clean stop");

    let reqs = server.requests();
    assert_eq!(reqs.len(), 5, "four failures, then accepted");
    assert!(reqs.iter().all(|r| r.body == reqs[0].body));
    // Never faster than one a second; past that, backoff doubles from 0.5 s (less up to 25 %
    // jitter): 1.5 s after the third failure, which also cost the 2 s timeout, 3 s after the
    // fourth.
    let gaps: Vec<Duration> = reqs.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(gaps[0] >= Duration::from_secs(1), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_secs(1), "{gaps:?}");
    assert!(gaps[2] >= Duration::from_millis(3400), "{gaps:?}");
    assert!(gaps[3] >= Duration::from_millis(2900), "{gaps:?}");
    assert_eq!(metrics.failures.load(Relaxed), 4);
    assert_eq!(metrics.retries.load(Relaxed), 4);
    assert_eq!(metrics.alerts_sent.load(Relaxed), 1);
    assert!(!metrics.is_failing(), "recovered");
    assert!(metrics.last_error().unwrap().contains("internal_error"));
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_auth_fails_the_task_and_the_next_run_sends_everything() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let server = FakeSlack::start().await;
    server.set_default(Reply::SlackError("invalid_auth"));
    let topic = anomalies_topic().await;
    produce(&topic, (0..4).map(|n| anomaly("model-a", n))).await;
    let metrics = Arc::new(SlackMetrics::default());
    let slack = bot_config(&server, dir.path());
    let n = start(&slack, &[&topic], &metrics);
    let err = tokio::time::timeout(Duration::from_secs(60), n.task)
        .await
        .expect("the run ends by itself")
        .expect("no panic")
        .expect_err("invalid_auth is permanent");
    let shown = format!("{err} {err:?}");
    assert!(
        err.to_string()
            .starts_with("Slack refused the alert: invalid_auth (check the bot token"),
        "{err}"
    );
    assert!(!shown.contains(TOKEN), "the error shows the token");
    assert_eq!(server.requests().len(), 1, "not retried inside the task");
    assert!(metrics.is_failing());
    assert!(metrics.last_error().unwrap().contains("invalid_auth"));
    assert!(!format!("{:?}", metrics.snapshot()).contains(TOKEN));

    // The token is fixed; the supervisor's next attempt sends what was refused.
    server.set_default(Reply::Ok);
    let n = start(&slack, &[&topic], &metrics);
    assert!(support::wait_until(Duration::from_secs(60), || !server.accepted().is_empty()).await);
    n.stop().await.expect("clean stop");
    let sent = server.accepted();
    assert_eq!(total(&sent), 4);
    assert_eq!(listed(&sent[0]), BTreeSet::from([0, 1, 2, 3]));
    assert!(!metrics.is_failing());
    let logged = log_text();
    assert!(logged.contains("invalid_auth"), "the failure is logged");
    assert!(logged.contains("alert sent"), "the success is logged");
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_anomaly_is_lost_across_a_restart_in_an_outage() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let server = FakeSlack::start().await;
    let topic = anomalies_topic().await;
    let metrics = Arc::new(SlackMetrics::default());
    let mut slack = bot_config(&server, dir.path());
    slack.top_n = 20;

    // Before the outage: batch A is sent and committed.
    let n = start(&slack, &[&topic], &metrics);
    produce(&topic, (0..10).map(|i| anomaly("model-a", i))).await;
    assert!(support::wait_until(Duration::from_secs(60), || !server.accepted().is_empty()).await);
    let a_messages = server.accepted();
    assert_eq!(
        a_messages.iter().flat_map(listed).collect::<BTreeSet<_>>(),
        (0..10).collect()
    );

    // Slack goes down; batch B is read, and its message is retried in vain.
    server.set_default(Reply::Status(503, "down"));
    let before = server.requests().len();
    produce(&topic, (10..20).map(|i| anomaly("model-a", i))).await;
    assert!(
        support::wait_until(Duration::from_secs(60), || server.requests().len()
            >= before + 2)
        .await,
        "the outage is met"
    );
    assert!(metrics.is_failing());
    assert!(metrics.pending_anomalies.load(Relaxed) >= 10);
    // The notifier is stopped in the middle of the outage.
    n.stop().await.expect("a stop is not a failure");
    let accepted_before_restart = server.accepted().len();

    server.set_default(Reply::Ok);
    let n = start(&slack, &[&topic], &metrics);
    assert!(
        support::wait_until(Duration::from_secs(60), || {
            server.accepted()[accepted_before_restart..]
                .iter()
                .flat_map(listed)
                .collect::<BTreeSet<_>>()
                .is_superset(&(10..20).collect())
        })
        .await,
        "batch B is sent after the restart"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    n.stop().await.expect("clean stop");

    let all: BTreeSet<i64> = server.accepted().iter().flat_map(listed).collect();
    assert_eq!(
        all,
        (0..20).collect(),
        "every anomaly in an accepted message"
    );
    let after: BTreeSet<i64> = server.accepted()[accepted_before_restart..]
        .iter()
        .flat_map(listed)
        .collect();
    assert!(
        after.is_disjoint(&(0..10).collect()),
        "batch A was committed once accepted and not sent again: {after:?}"
    );
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_post_to_their_url_and_a_4xx_is_permanent() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let server = FakeSlack::start().await;
    let url_file = dir.path().join("webhook");
    std::fs::write(&url_file, server.webhook_url(WEBHOOK_SECRET)).unwrap();
    let topic = anomalies_topic().await;
    produce(&topic, (0..2).map(|n| anomaly("model-w", n))).await;
    let metrics = Arc::new(SlackMetrics::default());
    let slack = SlackConfig {
        mode: SlackMode::Webhook,
        webhook_url_file: Some(url_file),
        ..bot_config(&server, dir.path())
    };
    let n = start(&slack, &[&topic], &metrics);
    assert!(support::wait_until(Duration::from_secs(60), || !server.accepted().is_empty()).await);
    n.stop().await.expect("clean stop");
    let r = &server.accepted()[0];
    assert_eq!(r.path, format!("/services/T000/B000/{WEBHOOK_SECRET}"));
    assert!(r.authorization.is_none(), "no token on webhooks");
    assert!(
        r.body.get("channel").is_none(),
        "the webhook has its channel"
    );
    assert_eq!(
        header(r),
        "2 anomalies from detector transactions on transactions"
    );

    server.set_default(Reply::Status(404, "no_service"));
    produce(&topic, [anomaly("model-w", 5)]).await;
    let n = start(&slack, &[&topic], &metrics);
    let err = tokio::time::timeout(Duration::from_secs(60), n.task)
        .await
        .expect("the run ends by itself")
        .expect("no panic")
        .expect_err("a webhook 4xx is permanent");
    assert_eq!(
        err.to_string(),
        "the Slack webhook refused the alert: HTTP 404: no_service"
    );
    assert!(!format!("{err:?}").contains(WEBHOOK_SECRET));
    assert!(!metrics.last_error().unwrap().contains(WEBHOOK_SECRET));
    assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_mode_writes_the_alert_to_the_log() {
    logs();
    let topic = anomalies_topic().await;
    let mut records: Vec<Value> = (0..2).map(|n| anomaly("model-log", n)).collect();
    // A source topic unique to this test, to find its alert among every test's logs.
    let source = support::unique("logged");
    for r in &mut records {
        r["anomalyd"]["source"]["topic"] = json!(source);
    }
    produce(&topic, records).await;
    let metrics = Arc::new(SlackMetrics::default());
    let slack = SlackConfig {
        mode: SlackMode::Log,
        group_id: Some(support::unique("notifier")),
        group_wait_s: 1,
        ..SlackConfig::default()
    };
    let n = start(&slack, &[&topic], &metrics);
    assert!(
        support::wait_until(Duration::from_secs(60), || metrics
            .alerts_sent
            .load(Relaxed)
            == 1)
        .await
    );
    n.stop().await.expect("clean stop");
    let logged = log_text();
    assert!(logged.contains(&format!(
        "2 anomalies from detector transactions on {source}"
    )));
    assert!(logged.contains("x0 = 3.91, outside training range [-2.6, 2.7]"));
    assert!(logged.contains(&format!("source {source} partition 1, offset 1, id 1")));
}

/// Issue 11, item 4: a 12-feature model with `top_n = 20` made one alert of 43 blocks and
/// about 18,300 characters, which Slack refused with `msg_blocks_too_long` forever. Against a server
/// that refuses past Slack's 12,000 characters, it now goes out in one post, within the budget,
/// and still says how many anomalies the group has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_anomalies_of_twelve_features_go_out_in_one_message() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let server = FakeSlack::start().await;
    server.limit_blocks_text(12_000);
    let topic = anomalies_topic().await;
    produce(&topic, (0..30).map(|n| wide_anomaly("model-a", n))).await;
    let metrics = Arc::new(SlackMetrics::default());
    let mut slack = bot_config(&server, dir.path());
    slack.top_n = 20;
    slack.group_wait_s = 2;
    let n = start_supervised(&slack, &topic, &metrics).await;
    assert!(support::wait_until(Duration::from_secs(60), || !server.accepted().is_empty()).await);
    n.assert_never_restarted();
    n.stop().await;

    let reqs = server.requests();
    assert_eq!(reqs.len(), 1, "one post, accepted at once");
    let r = &reqs[0];
    let blocks = r.body["blocks"].as_array().unwrap().len();
    eprintln!(
        "12 features, top_n 20, 30 anomalies: {blocks} blocks, {} characters of block text, {} listed",
        text_size(r),
        listed(r).len()
    );
    assert!(r.accepted);
    assert!(blocks <= 50, "{blocks} blocks");
    assert!(text_size(r) <= 10_000, "{} characters", text_size(r));
    assert_eq!(
        header(r),
        "30 anomalies from detector transactions on transactions",
        "the group's count"
    );
    // README's numbers (the unit test of message.rs checks them in detail).
    assert_eq!(blocks, 36);
    let shown = listed(r);
    assert_eq!(shown.len(), 16, "{shown:?}");
    // The most anomalous first: scores fall with the offset, so the highest offsets are listed.
    assert_eq!(shown, (30 - shown.len() as i64..30).collect());
    let more = format!("… and {} more not listed.", 30 - shown.len());
    assert!(block_texts(r).contains(&more), "{more:?}");
    assert_eq!(metrics.anomalies_alerted.load(Relaxed), 30);
    assert_eq!(metrics.alerts_reduced.load(Relaxed), 0);
    assert_no_secret_logged();
}

/// Slack refusing a message for its content (here: stricter than our budget) is answered by a
/// smaller message, not by a restart; the anomalies count as alerted once it is accepted, and
/// their offsets are committed: a new notifier of the same group does not send them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_refused_for_its_size_is_sent_smaller_without_a_restart() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let server = FakeSlack::start().await;
    server.limit_blocks_text(5_000);
    let topic = anomalies_topic().await;
    produce(&topic, (0..25).map(|n| wide_anomaly("model-a", n))).await;
    let metrics = Arc::new(SlackMetrics::default());
    let mut slack = bot_config(&server, dir.path());
    slack.top_n = 20;
    slack.group_wait_s = 2;
    let n = start_supervised(&slack, &topic, &metrics).await;
    assert!(support::wait_until(Duration::from_secs(60), || !server.accepted().is_empty()).await);
    tokio::time::sleep(Duration::from_secs(2)).await; // a needless extra post would show here
    n.assert_never_restarted();
    n.stop().await;

    let reqs = server.requests();
    assert!(reqs.len() <= 3, "{} posts for one group", reqs.len());
    assert_eq!(reqs.len(), 2, "refused, then accepted smaller");
    assert!(!reqs[0].accepted && reqs[1].accepted);
    assert!(text_size(&reqs[0]) > 5_000);
    assert!(text_size(&reqs[1]) <= 5_000);
    assert!(listed(&reqs[1]).len() < listed(&reqs[0]).len());
    assert!(
        !listed(&reqs[1]).is_empty(),
        "still lists the most anomalous"
    );
    assert_eq!(
        header(&reqs[1]),
        "25 anomalies from detector transactions on transactions"
    );
    assert_eq!(metrics.alerts_sent.load(Relaxed), 1);
    assert_eq!(metrics.alerts_reduced.load(Relaxed), 1);
    assert_eq!(metrics.alerts_refused.load(Relaxed), 0);
    assert_eq!(metrics.anomalies_alerted.load(Relaxed), 25);
    assert!(!metrics.is_failing());
    assert!(
        log_text().contains("msg_blocks_too_long"),
        "the refusal is logged"
    );

    // A new notifier of the same group: the 25 were committed, only the new one goes out.
    let n = start_supervised(&slack, &topic, &metrics).await;
    produce(&topic, [wide_anomaly("model-a", 100)]).await;
    assert!(support::wait_until(Duration::from_secs(60), || server.accepted().len() >= 2).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    n.stop().await;
    let sent = server.accepted();
    assert_eq!(sent.len(), 2);
    assert_eq!(count(&sent[1]), 1, "nothing sent again");
    assert_eq!(listed(&sent[1]), BTreeSet::from([100]));
    assert_no_secret_logged();
}

/// When Slack refuses even the text-only message for its content, the alert is logged as an
/// error with its group, counted, and committed: three posts, no restart, no loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_refused_in_every_form_is_logged_counted_and_committed() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let server = FakeSlack::start().await;
    server.set_default(Reply::SlackError("msg_too_long"));
    let topic = anomalies_topic().await;
    let model = support::unique("model-refused");
    produce(&topic, (0..3).map(|n| anomaly(&model, n))).await;
    let metrics = Arc::new(SlackMetrics::default());
    let slack = bot_config(&server, dir.path());
    let n = start_supervised(&slack, &topic, &metrics).await;
    assert!(
        support::wait_until(Duration::from_secs(60), || metrics
            .alerts_refused
            .load(Relaxed)
            == 1)
        .await
    );
    tokio::time::sleep(Duration::from_secs(3)).await; // a loop would post again here
    n.assert_never_restarted();
    n.stop().await;

    let reqs = server.requests();
    assert_eq!(reqs.len(), 3, "full, smaller, text-only; then given up");
    assert!(reqs.iter().all(|r| !r.accepted));
    assert_eq!(listed(&reqs[0]).len(), 3);
    assert_eq!(listed(&reqs[1]).len(), 1, "half as many listed");
    assert!(reqs[2].body.get("blocks").is_none(), "text only");
    let text = reqs[2].body["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!(
            "3 anomalies from detector transactions on transactions (model {model})"
        )),
        "{text}"
    );
    assert_eq!(metrics.alerts_sent.load(Relaxed), 0);
    assert_eq!(metrics.anomalies_alerted.load(Relaxed), 0);
    assert!(
        metrics.is_failing(),
        "health says WARNING until an alert goes through"
    );
    let logged = log_text();
    let line = logged
        .lines()
        .find(|l| l.contains("ERROR") && l.contains(&model))
        .expect("an error naming the group is logged");
    assert!(
        line.contains("msg_too_long") && line.contains("3 anomalies"),
        "{line}"
    );

    // Committed: a new notifier of the same group sends only what comes next.
    server.set_default(Reply::Ok);
    let n = start_supervised(&slack, &topic, &metrics).await;
    produce(&topic, [anomaly(&model, 50)]).await;
    assert!(support::wait_until(Duration::from_secs(60), || !server.accepted().is_empty()).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    n.stop().await;
    let sent = server.accepted();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        listed(&sent[0]),
        BTreeSet::from([50]),
        "the refused three are not resent"
    );
    assert!(!metrics.is_failing());
    assert_no_secret_logged();
}

/// A webhook answers a message that is too big with HTTP 400 `invalid_blocks`: the same
/// fallback, not a permanent failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_refusing_the_blocks_gets_a_smaller_message() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let server = FakeSlack::start().await;
    server.limit_blocks_text(5_000);
    let url_file = dir.path().join("webhook");
    std::fs::write(&url_file, server.webhook_url(WEBHOOK_SECRET)).unwrap();
    let topic = anomalies_topic().await;
    produce(&topic, (0..20).map(|n| wide_anomaly("model-w", n))).await;
    let metrics = Arc::new(SlackMetrics::default());
    let slack = SlackConfig {
        mode: SlackMode::Webhook,
        webhook_url_file: Some(url_file),
        top_n: 20,
        ..bot_config(&server, dir.path())
    };
    let n = start_supervised(&slack, &topic, &metrics).await;
    assert!(support::wait_until(Duration::from_secs(60), || !server.accepted().is_empty()).await);
    n.assert_never_restarted();
    n.stop().await;
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2, "refused, then accepted smaller");
    assert!(!reqs[0].accepted && reqs[1].accepted);
    assert_eq!(
        header(&reqs[1]),
        "20 anomalies from detector transactions on transactions"
    );
    assert_eq!(metrics.alerts_reduced.load(Relaxed), 1);
    assert_no_secret_logged();
}

/// An anomaly of detector `detector`, as [`anomaly`] but named for it.
fn anomaly_of(detector: &str, model: &str, n: i64) -> Value {
    let mut a = anomaly(model, n);
    a["anomalyd"]["detector"] = json!(detector);
    a
}

/// An anomaly of a rules detector on `sensors`: the rules that fired are its explanation.
fn rules_anomaly(n: i64) -> Value {
    json!({
        "id": format!("s-{n}"),
        "temperature": 50.0,
        "anomalyd": {
            "detector": "sensors",
            "score": 1.0,
            "decision": -1.0,
            "model": {"id": "rules-1234", "kind": "rules"},
            "source": {"topic": "sensors", "partition": 0, "offset": n},
            "detected_at": format!("2026-05-01T12:00:{:02}.000Z", n % 60),
            "explanation": [{"rule": "hot"}],
            "layout": "inline",
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_detectors_output_topic_is_alerted_per_detector_and_committed() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let server = FakeSlack::start().await;
    // Two output topics: `fraud` and `audit` share one (same schema), `sensors` has its own.
    let shared = anomalies_topic().await;
    let sensors = anomalies_topic().await;
    produce(
        &shared,
        (0..5)
            .map(|n| anomaly_of("fraud", "model-a", n))
            .chain((100..103).map(|n| anomaly_of("audit", "model-a", n))),
    )
    .await;
    produce(&sensors, (0..4).map(rules_anomaly)).await;
    let metrics = Arc::new(SlackMetrics::default());
    let mut slack = bot_config(&server, dir.path());
    slack.top_n = 20;
    // The daemon passes each topic once; a repeated one is read once all the same.
    let topics = [shared.as_str(), sensors.as_str(), shared.as_str()];
    let n = start(&slack, &topics, &metrics);
    let by_detector = |reqs: &[Request], detector: &str, on: &str| -> u64 {
        let prefix = format!("from detector {detector} on {on}");
        reqs.iter()
            .filter(|r| header(r).ends_with(&prefix))
            .map(count)
            .sum()
    };
    assert!(
        support::wait_until(Duration::from_secs(60), || {
            let sent = server.accepted();
            by_detector(&sent, "fraud", SOURCE) == 5
                && by_detector(&sent, "audit", SOURCE) == 3
                && by_detector(&sent, "sensors", "sensors") == 4
        })
        .await,
        "every detector's anomalies alerted: {:#?}",
        server.accepted().iter().map(header).collect::<Vec<_>>()
    );
    n.stop().await.expect("clean stop");

    let sent = server.accepted();
    assert_eq!(total(&sent), 12, "each anomaly in one message");
    for r in &sent {
        let h = header(r);
        let offsets = listed(r);
        // One alert, one detector: the listed anomalies are that detector's only.
        if h.ends_with("from detector fraud on transactions") {
            assert!(
                offsets.iter().all(|o| (0..5).contains(o)),
                "{h}: {offsets:?}"
            );
        } else if h.ends_with("from detector audit on transactions") {
            assert!(
                offsets.iter().all(|o| (100..103).contains(o)),
                "{h}: {offsets:?}"
            );
        } else {
            assert!(h.ends_with("from detector sensors on sensors"), "{h}");
            let texts = block_texts(r);
            assert!(
                texts.iter().any(|t| t.contains("(rules `hot` fired)")),
                "{texts:#?}"
            );
            assert!(
                texts.iter().any(|t| t == "*Rules fired*\n`hot`"),
                "{texts:#?}"
            );
            assert!(
                !texts.iter().any(|t| t.contains("rules-1234")),
                "{texts:#?}"
            );
            assert!(listed_from(r, "sensors").iter().all(|o| (0..4).contains(o)));
        }
    }
    let all: BTreeSet<i64> = sent.iter().flat_map(listed).collect();
    assert_eq!(all, (0..5).chain(100..103).collect());
    let all: BTreeSet<i64> = sent
        .iter()
        .flat_map(|r| listed_from(r, "sensors"))
        .collect();
    assert_eq!(all, (0..4).collect());

    // Restarted in the same group, with one new anomaly on each topic: only those go out, so
    // both topics' offsets were committed.
    let before = sent.len();
    let n = start(&slack, &topics, &metrics);
    produce(&shared, [anomaly_of("fraud", "model-a", 5)]).await;
    produce(&sensors, [rules_anomaly(4)]).await;
    assert!(
        support::wait_until(Duration::from_secs(60), || {
            let after = &server.accepted()[before..];
            by_detector(after, "fraud", SOURCE) >= 1
                && by_detector(after, "sensors", "sensors") >= 1
        })
        .await,
        "the new anomalies are alerted"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    n.stop().await.expect("clean stop");
    let after = &server.accepted()[before..];
    assert_eq!(
        total(after),
        2,
        "nothing sent again after the restart: {:#?}",
        after.iter().map(header).collect::<Vec<_>>()
    );
    assert_eq!(
        after.iter().flat_map(listed).collect::<BTreeSet<_>>(),
        [5].into()
    );
    assert_eq!(
        after
            .iter()
            .flat_map(|r| listed_from(r, "sensors"))
            .collect::<BTreeSet<_>>(),
        [4].into()
    );
    assert_no_secret_logged();
}
