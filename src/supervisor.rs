//! The embedded supervisor: runs every long-lived task, restarts one that fails or panics with
//! exponential backoff and jitter, and records each task's state for health reports.
//!
//! A task that returns `Ok` has finished its job (a generator with a `count`) and is not
//! restarted. A task that keeps failing marks the daemon degraded, but is still retried: a
//! broker or Slack outage ends on its own, and the daemon should recover without an operator.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rand::RngExt;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// A task's error, as text: the supervisor only reports it.
pub type TaskError = Box<dyn std::error::Error + Send + Sync>;

/// How failed tasks are restarted.
#[derive(Debug, Clone)]
pub struct RestartPolicy {
    /// Delay before the first restart; doubles with each failure in a row.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// A run this long counts as healthy and resets the backoff.
    pub healthy_after: Duration,
    /// More restarts than this within `window` mark the task (and the daemon) degraded.
    pub max_restarts: usize,
    pub window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            healthy_after: Duration::from_secs(60),
            max_restarts: 5,
            window: Duration::from_secs(300),
        }
    }
}

impl RestartPolicy {
    /// The delay before restart number `failures_in_a_row` (1-based), with up to 25 % jitter
    /// so that tasks failing together do not retry in lock-step.
    pub fn backoff(&self, failures_in_a_row: u32) -> Duration {
        let exp = failures_in_a_row.saturating_sub(1).min(20);
        let base = self
            .initial_backoff
            .saturating_mul(1 << exp)
            .min(self.max_backoff);
        let jitter = rand::rng().random_range(0.0..=0.25);
        base.mul_f64(1.0 - jitter)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Running,
    /// Failed; waiting to be restarted.
    Backoff,
    /// Returned `Ok`: its job is done.
    Finished,
    /// Stopped by shutdown.
    Stopped,
}

/// What the supervisor knows about one task, for `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct TaskReport {
    pub name: &'static str,
    pub state: TaskState,
    pub restarts: u64,
    pub last_error: Option<String>,
    /// Restarts within the policy's window exceeded its limit.
    pub degraded: bool,
    /// Seconds since the task last said it was alive, if it reports heartbeats.
    pub heartbeat_age_s: Option<f64>,
}

/// A task's live record, shared between the supervisor and the task's handle.
#[derive(Debug)]
pub struct TaskStatus {
    name: &'static str,
    inner: Mutex<StatusInner>,
    /// Milliseconds since `epoch` of the last heartbeat; 0 = never.
    heartbeat_ms: AtomicU64,
    epoch: Instant,
}

#[derive(Debug)]
struct StatusInner {
    state: TaskState,
    restarts: u64,
    last_error: Option<String>,
    recent_restarts: Vec<Instant>,
    degraded: bool,
}

impl TaskStatus {
    pub(crate) fn new(name: &'static str) -> Self {
        Self {
            name,
            inner: Mutex::new(StatusInner {
                state: TaskState::Running,
                restarts: 0,
                last_error: None,
                recent_restarts: Vec::new(),
                degraded: false,
            }),
            heartbeat_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Called by the task to say it is alive and making progress.
    pub fn heartbeat(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.heartbeat_ms.store(ms.max(1), Relaxed);
    }

    pub fn heartbeat_age(&self) -> Option<Duration> {
        match self.heartbeat_ms.load(Relaxed) {
            0 => None,
            ms => Some(
                self.epoch
                    .elapsed()
                    .saturating_sub(Duration::from_millis(ms)),
            ),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StatusInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_state(&self, state: TaskState) {
        self.lock().state = state;
    }

    pub fn report(&self) -> TaskReport {
        let s = self.lock();
        TaskReport {
            name: self.name,
            state: s.state,
            restarts: s.restarts,
            last_error: s.last_error.clone(),
            degraded: s.degraded,
            heartbeat_age_s: self.heartbeat_age().map(|d| d.as_secs_f64()),
        }
    }

    /// Records a failure; returns whether the task is now degraded.
    fn failed(&self, error: String, policy: &RestartPolicy) -> bool {
        let mut s = self.lock();
        let now = Instant::now();
        s.state = TaskState::Backoff;
        s.restarts += 1;
        s.last_error = Some(error);
        s.recent_restarts.push(now);
        s.recent_restarts
            .retain(|t| now.duration_since(*t) <= policy.window);
        s.degraded = s.recent_restarts.len() > policy.max_restarts;
        s.degraded
    }

    fn recovered(&self) {
        let mut s = self.lock();
        s.degraded = false;
        s.recent_restarts.clear();
    }
}

/// Runs tasks, restarts them, and stops them all on shutdown.
pub struct Supervisor {
    policy: RestartPolicy,
    shutdown: CancellationToken,
    tasks: Mutex<Vec<Arc<TaskStatus>>>,
    joins: tokio::sync::Mutex<JoinSet<&'static str>>,
    started: SystemTime,
}

impl Supervisor {
    pub fn new(policy: RestartPolicy) -> Self {
        Self {
            policy,
            shutdown: CancellationToken::new(),
            tasks: Mutex::new(Vec::new()),
            joins: tokio::sync::Mutex::new(JoinSet::new()),
            started: SystemTime::now(),
        }
    }

    /// The token every task watches; cancelled by [`Supervisor::shutdown`].
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// Starts `task` under supervision. `make` builds one attempt of the task; it is called
    /// again for every restart, with the task's status (for heartbeats) and the shutdown token.
    pub async fn spawn<F, Fut>(&self, name: &'static str, make: F) -> Arc<TaskStatus>
    where
        F: Fn(Arc<TaskStatus>, CancellationToken) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
    {
        let status = Arc::new(TaskStatus::new(name));
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::clone(&status));
        let policy = self.policy.clone();
        let shutdown = self.shutdown.clone();
        let st = Arc::clone(&status);
        self.joins.lock().await.spawn(async move {
            supervise(name, make, st, policy, shutdown).await;
            name
        });
        status
    }

    pub fn reports(&self) -> Vec<TaskReport> {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|t| t.report())
            .collect()
    }

    /// Running tasks whose last heartbeat is older than `limit`: hung, as far as anyone can
    /// tell from outside. Tasks waiting to restart or finished are not counted.
    pub fn hung(&self, limit: Duration) -> Vec<&'static str> {
        self.reports()
            .into_iter()
            .filter(|t| {
                t.state == TaskState::Running
                    && t.heartbeat_age_s.is_some_and(|a| a > limit.as_secs_f64())
            })
            .map(|t| t.name)
            .collect()
    }

    /// Whether any task has failed too often lately.
    pub fn degraded(&self) -> bool {
        self.reports().iter().any(|r| r.degraded)
    }

    /// Asks every task to stop and waits up to `grace` for them. Returns the names of those
    /// still running when the grace period ended (empty on a clean stop).
    pub async fn shutdown(&self, grace: Duration) -> Vec<&'static str> {
        self.shutdown.cancel();
        let mut joins = self.joins.lock().await;
        let deadline = tokio::time::Instant::now() + grace;
        while !joins.is_empty() {
            match tokio::time::timeout_at(deadline, joins.join_next()).await {
                Ok(Some(_)) | Ok(None) => {}
                Err(_) => break,
            }
        }
        let still = self.running();
        joins.abort_all();
        still
    }

    /// The tasks neither finished nor stopped: running, or waiting to restart. During a
    /// shutdown, those still to stop.
    pub fn running(&self) -> Vec<&'static str> {
        self.reports()
            .into_iter()
            .filter(|r| matches!(r.state, TaskState::Running | TaskState::Backoff))
            .map(|r| r.name)
            .collect()
    }
}

async fn supervise<F, Fut>(
    name: &'static str,
    make: F,
    status: Arc<TaskStatus>,
    policy: RestartPolicy,
    shutdown: CancellationToken,
) where
    F: Fn(Arc<TaskStatus>, CancellationToken) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
{
    let mut in_a_row = 0u32;
    loop {
        status.set_state(TaskState::Running);
        status.heartbeat();
        let began = Instant::now();
        // Each attempt is its own tokio task, so a panic is caught as a JoinError.
        // Every event the task logs carries `task=<name>`, for filtering.
        let span = tracing::info_span!("task", task = name);
        let attempt = tokio::spawn(make(Arc::clone(&status), shutdown.clone()).instrument(span));
        let outcome = match attempt.await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) if e.is_panic() => Some(format!("panicked: {}", panic_message(e))),
            Err(e) => Some(e.to_string()),
        };
        let Some(error) = outcome else {
            let state = if shutdown.is_cancelled() {
                TaskState::Stopped
            } else {
                tracing::info!(task = name, "task finished");
                TaskState::Finished
            };
            status.set_state(state);
            return;
        };
        if shutdown.is_cancelled() {
            tracing::warn!(task = name, error, "task failed while stopping");
            status.set_state(TaskState::Stopped);
            return;
        }
        if began.elapsed() >= policy.healthy_after {
            in_a_row = 0;
            status.recovered();
        }
        in_a_row += 1;
        let degraded = status.failed(error.clone(), &policy);
        let delay = policy.backoff(in_a_row);
        tracing::error!(task = name, error, restart_in = ?delay, degraded, "task failed");
        tokio::select! {
            _ = shutdown.cancelled() => {
                status.set_state(TaskState::Stopped);
                return;
            }
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

fn panic_message(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn fast_policy() -> RestartPolicy {
        RestartPolicy {
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(80),
            healthy_after: Duration::from_secs(60),
            max_restarts: 3,
            window: Duration::from_secs(60),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let p = RestartPolicy::default();
        for (n, base_ms) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (9, 25_600),
            (10, 30_000),
            (40, 30_000),
        ] {
            let d = p.backoff(n).as_secs_f64() * 1000.0;
            assert!(
                d <= base_ms as f64 && d >= base_ms as f64 * 0.75,
                "restart {n}: {d} ms"
            );
        }
    }

    #[tokio::test]
    async fn failing_task_is_restarted_with_growing_delays_and_marks_degraded() {
        let sup = Supervisor::new(fast_policy());
        let starts = Arc::new(Mutex::new(Vec::<Instant>::new()));
        let s = Arc::clone(&starts);
        sup.spawn("flaky", move |_, _| {
            s.lock().unwrap().push(Instant::now());
            async { Err::<(), TaskError>("boom".into()) }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        let report = &sup.reports()[0];
        assert!(report.restarts >= 4, "{report:?}");
        assert_eq!(report.last_error.as_deref(), Some("boom"));
        assert!(report.degraded);
        assert!(sup.degraded());
        let starts = starts.lock().unwrap().clone();
        let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
        // 5 ms, 10, 20, 40 minus at most 25 % jitter: each gap grows.
        assert!(gaps[2] > gaps[0], "{gaps:?}");
        assert!(gaps[3] >= Duration::from_millis(30), "{gaps:?}");
        assert!(sup.shutdown(Duration::from_secs(1)).await.is_empty());
    }

    #[tokio::test]
    async fn panicking_task_is_restarted() {
        let sup = Supervisor::new(fast_policy());
        let runs = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&runs);
        sup.spawn("panicky", move |_, shutdown| {
            let n = r.fetch_add(1, Relaxed);
            async move {
                if n == 0 {
                    panic!("first run dies");
                }
                shutdown.cancelled().await;
                Ok(())
            }
        })
        .await;
        // Generous: printing a panic's backtrace can take a while in debug builds.
        for _ in 0..500 {
            if runs.load(Relaxed) >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(runs.load(Relaxed), 2);
        let report = &sup.reports()[0];
        assert_eq!(report.state, TaskState::Running);
        assert_eq!(
            report.last_error.as_deref(),
            Some("panicked: first run dies")
        );
        assert!(!report.degraded);
        assert!(sup.shutdown(Duration::from_secs(1)).await.is_empty());
        assert_eq!(sup.reports()[0].state, TaskState::Stopped);
    }

    #[tokio::test]
    async fn finished_task_is_not_restarted() {
        let sup = Supervisor::new(fast_policy());
        let runs = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&runs);
        sup.spawn("once", move |_, _| {
            r.fetch_add(1, Relaxed);
            async { Ok(()) }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(runs.load(Relaxed), 1);
        assert_eq!(sup.reports()[0].state, TaskState::Finished);
    }

    #[tokio::test]
    async fn a_task_that_stops_beating_is_hung() {
        let sup = Supervisor::new(fast_policy());
        sup.spawn("beating", |status, shutdown| async move {
            loop {
                status.heartbeat();
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
        })
        .await;
        sup.spawn("stuck", |_, _| std::future::pending()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(sup.hung(Duration::from_millis(150)), ["stuck"]);
        assert!(sup.hung(Duration::from_secs(5)).is_empty());
    }

    #[tokio::test]
    async fn shutdown_names_tasks_that_overstay_the_grace_period() {
        let sup = Supervisor::new(fast_policy());
        sup.spawn("stubborn", |_, _| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(())
        })
        .await;
        sup.spawn("polite", |_, shutdown| async move {
            shutdown.cancelled().await;
            Ok(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let still = sup.shutdown(Duration::from_millis(100)).await;
        assert_eq!(still, ["stubborn"]);
    }
}
