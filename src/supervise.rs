//! Supervision of the operator's long-running tasks.
//!
//! A task that panics, fails or simply returns while the operator is still meant to run is a
//! dead component: the controller stops reconciling, the webhook stops answering, and a process
//! that keeps answering `/healthz` with 200 hides it from the kubelet. Every long-running task is
//! therefore started through a [`Supervisor`], which
//! - catches panics (they become failures of that task only),
//! - marks the task down on `/healthz` (named, with the reason) until it runs again,
//! - counts the restart in `bifrost_requirements_task_restarts_total{task=…}`,
//! - restarts it after an exponential backoff ([`OnExit::Restart`]), or shuts the whole process
//!   down with a non-zero exit ([`OnExit::Exit`]) where a restart cannot help.
//!
//! Tasks watch the same [`Stop`] (from [`crate::shutdown`]) the supervisor watches, and finish their own way (graceful
//! HTTP shutdown, lease release); a task that ignores it is dropped after [`STOP_GRACE`].

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::shutdown::{Stop, StopHandle};

/// How long a task may take to finish after the stop signal before it is dropped.
const STOP_GRACE: Duration = Duration::from_secs(15);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    pub task: String,
}

/// Restarts per task kind (the part of a task name before the first `/`, so per-resource tasks
/// share one series).
pub(crate) type RestartCounter = Family<TaskLabels, Counter>;

/// Restart delays: `initial`, doubled after each failure up to `max`; a run that lasted
/// `reset_after` starts the sequence again.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// Delay before restart number `failures` (1-based) in a row.
    pub(crate) fn delay(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(20));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// What to do when a task ends while the operator is meant to keep running.
#[derive(Debug, Clone, Copy)]
pub enum OnExit {
    Restart(Backoff),
    /// Stop everything and exit non-zero: for tasks whose absence nothing else can report
    /// (the health endpoint itself).
    Exit,
}

/// Why a task ended unexpectedly.
fn describe<E: std::fmt::Display>(
    outcome: std::result::Result<std::result::Result<(), E>, Box<dyn Any + Send>>,
) -> String {
    match outcome {
        Ok(Ok(())) => "returned while the operator was still running".into(),
        Ok(Err(e)) => format!("failed: {e}"),
        Err(panic) => format!("panicked: {}", panic_message(panic.as_ref())),
    }
}

/// The text of a panic payload (`panic!` with a literal or a formatted message), truncated.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&'static str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    truncate_chars(&text, 500)
}

fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[derive(Debug)]
struct Shared {
    /// Task name → why it is down. Empty when every task runs.
    down: Mutex<BTreeMap<String, String>>,
    restarts: RestartCounter,
    /// Set (once) when an [`OnExit::Exit`] task ended: the reason the process exits non-zero.
    fatal: Mutex<Option<String>>,
    /// Stops everything (used by fatal tasks).
    root: Arc<StopHandle>,
}

/// Starts and watches tasks. Clones share the health record, the restart counter and the root
/// stop; [`Supervisor::scoped`] narrows the stop signal.
#[derive(Debug, Clone)]
pub struct Supervisor {
    shared: Arc<Shared>,
    stop: Stop,
}

impl Supervisor {
    /// `root`/`stop`: the process-wide signal (see [`crate::shutdown::on_signals`]).
    pub fn new(restarts: RestartCounter, root: Arc<StopHandle>, stop: Stop) -> Self {
        Self {
            shared: Arc::new(Shared {
                down: Mutex::default(),
                restarts,
                fatal: Mutex::default(),
                root,
            }),
            stop,
        }
    }

    /// The same supervisor, for tasks that must end when `stop` fires (it should be a
    /// [`Stop::child`] of this one's).
    pub(crate) fn scoped(&self, stop: Stop) -> Self {
        Self {
            shared: self.shared.clone(),
            stop,
        }
    }

    pub fn stop(&self) -> &Stop {
        &self.stop
    }

    /// Tasks currently down, with the reason, sorted by name.
    pub fn down(&self) -> Vec<(String, String)> {
        let down = self
            .shared
            .down
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        down.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Why the process must exit non-zero, if a fatal task ended.
    pub(crate) fn fatal(&self) -> Option<String> {
        self.shared
            .fatal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_down(&self, name: &str, why: Option<String>) {
        let mut down = self
            .shared
            .down
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match why {
            Some(why) => down.insert(name.to_string(), why),
            None => down.remove(name),
        };
    }

    /// [`Supervisor::run`] on its own Tokio task.
    pub fn spawn<F, Fut, E>(
        &self,
        name: impl Into<String>,
        on_exit: OnExit,
        make: F,
    ) -> JoinHandle<()>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        tokio::spawn(self.run(name.into(), on_exit, make))
    }

    /// Run `make()` until the stop signal; when it ends otherwise (panic, error, return), mark it
    /// down, count it, and restart it after the backoff — or stop the process ([`OnExit::Exit`]).
    /// Dropping the returned future (e.g. aborting its task) clears its health entry.
    pub(crate) fn run<F, Fut, E>(
        &self,
        name: String,
        on_exit: OnExit,
        mut make: F,
    ) -> impl Future<Output = ()> + Send + 'static + use<F, Fut, E>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let this = self.clone();
        async move {
            let _clear = ClearOnDrop {
                supervisor: this.clone(),
                name: name.clone(),
            };
            let kind = name.split('/').next().unwrap_or(&name).to_string();
            let mut failures = 0u32;
            loop {
                let started = Instant::now();
                let task = AssertUnwindSafe(make()).catch_unwind();
                let outcome = tokio::select! {
                    outcome = task => outcome,
                    // The task saw the stop too; give it time to finish its own way.
                    _ = async { this.stop.stopped().await; tokio::time::sleep(STOP_GRACE).await } => {
                        warn!(task = %name, "did not stop within {STOP_GRACE:?}; dropped");
                        return;
                    }
                };
                if this.stop.is_stopped() {
                    return;
                }
                let why = describe(outcome);
                this.set_down(&name, Some(why.clone()));
                this.shared
                    .restarts
                    .get_or_create(&TaskLabels { task: kind.clone() })
                    .inc();
                let backoff = match on_exit {
                    OnExit::Exit => {
                        error!(task = %name, "{why}; stopping the operator");
                        self::set_fatal(&this, format!("task {name} {why}"));
                        return;
                    }
                    OnExit::Restart(b) => b,
                };
                if started.elapsed() >= backoff.reset_after {
                    failures = 0;
                }
                failures += 1;
                let delay = backoff.delay(failures);
                error!(task = %name, restart_in = ?delay, "{why}");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = this.stop.stopped() => return,
                }
                this.set_down(&name, None);
                info!(task = %name, "restarting");
            }
        }
    }
}

fn set_fatal(s: &Supervisor, why: String) {
    s.shared
        .fatal
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_or_insert(why);
    s.shared.root.stop();
}

struct ClearOnDrop {
    supervisor: Supervisor,
    name: String,
}

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        // A fatal task stays on record: the process is going down because of it.
        if self.supervisor.fatal().is_none() {
            self.supervisor.set_down(&self.name, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, Result};
    use crate::shutdown::stop_pair;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn supervisor() -> (Supervisor, RestartCounter, Arc<StopHandle>) {
        let (handle, stop) = stop_pair();
        let handle = Arc::new(handle);
        let restarts = RestartCounter::default();
        (
            Supervisor::new(restarts.clone(), handle.clone(), stop),
            restarts,
            handle,
        )
    }

    fn count(restarts: &RestartCounter, task: &str) -> u64 {
        restarts
            .get_or_create(&TaskLabels { task: task.into() })
            .get()
    }

    fn quick() -> OnExit {
        OnExit::Restart(Backoff {
            initial: Duration::from_millis(40),
            max: Duration::from_millis(160),
            reset_after: Duration::from_secs(60),
        })
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            reset_after: Duration::from_secs(60),
        };
        let delays: Vec<_> = (1..=6).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_reported_down_counted_and_restarted_with_backoff() {
        let (sup, restarts, _root) = supervisor();
        let runs = Arc::new(AtomicU32::new(0));
        let starts = Arc::new(Mutex::new(Vec::new()));
        let (r, s) = (runs.clone(), starts.clone());
        let t0 = Instant::now();
        sup.spawn("controller", quick(), move || {
            let n = r.fetch_add(1, Ordering::SeqCst);
            s.lock().unwrap().push(t0.elapsed());
            async move {
                if n < 3 {
                    panic!("boom {n}");
                }
                std::future::pending::<Result<()>>().await
            }
        });
        // First panic: down, named, with the message (the restart is 40 ms away).
        tokio::time::sleep(Duration::from_millis(15)).await;
        let down = sup.down();
        assert_eq!(down.len(), 1, "{down:?}");
        assert_eq!(down[0].0, "controller");
        assert!(down[0].1.contains("panicked: boom 0"), "{down:?}");
        assert_eq!(count(&restarts, "controller"), 1);
        // Three panics, delays 40, 80, 160 ms, then it keeps running and is healthy again.
        let deadline = Instant::now() + Duration::from_secs(5);
        while runs.load(Ordering::SeqCst) < 4 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        assert_eq!(count(&restarts, "controller"), 3);
        assert!(sup.down().is_empty(), "{:?}", sup.down());
        let starts = starts.lock().unwrap().clone();
        let gaps: Vec<u128> = starts
            .windows(2)
            .map(|w| (w[1] - w[0]).as_millis())
            .collect();
        assert_eq!(gaps.len(), 3, "{gaps:?}");
        // Tokio's clock is paused in this test: the gaps are the backoff itself, however slow the
        // machine (printing a panic's backtrace under load once took 280 ms of real time).
        assert_eq!(gaps, [40, 80, 160], "backoff");
        assert!(sup.fatal().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn errors_and_unexpected_returns_are_failures_too() {
        let (sup, restarts, _root) = supervisor();
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        sup.spawn("mirror/ns/a", quick(), move || {
            let n = r.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0 => Err(Error::Config("no database".into())),
                    1 => Ok(()),
                    _ => std::future::pending().await,
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(15)).await;
        assert_eq!(
            sup.down(),
            [(
                "mirror/ns/a".to_string(),
                "failed: invalid configuration: no database".to_string()
            )]
        );
        // Restart after 40 ms; it returns at once: down again, for 80 ms.
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(
            sup.down()[0].1.contains("returned while"),
            "{:?}",
            sup.down()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(sup.down().is_empty());
        // Per-resource tasks share their kind's series.
        assert_eq!(count(&restarts, "mirror"), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fatal_task_stops_everything_and_stays_on_record() {
        let (sup, restarts, _root) = supervisor();
        let other_stopped = Arc::new(AtomicU32::new(0));
        let o = other_stopped.clone();
        let stop = sup.stop().clone();
        let other = sup.spawn("controller", quick(), move || {
            let o = o.clone();
            let stop = stop.clone();
            async move {
                stop.stopped().await;
                o.fetch_add(1, Ordering::SeqCst);
                Ok::<(), Error>(())
            }
        });
        let fatal = sup.spawn("metrics-server", OnExit::Exit, || async {
            Err::<(), _>(Error::Config("address in use".into()))
        });
        fatal.await.unwrap();
        other.await.unwrap();
        assert!(sup.stop().is_stopped());
        assert_eq!(other_stopped.load(Ordering::SeqCst), 1);
        assert_eq!(
            sup.fatal().as_deref(),
            Some("task metrics-server failed: invalid configuration: address in use")
        );
        assert_eq!(sup.down().len(), 1);
        assert_eq!(count(&restarts, "metrics-server"), 1);
        // A task that stops because it was asked to is not a failure.
        assert_eq!(count(&restarts, "controller"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_scoped_stop_ends_its_tasks_and_aborting_clears_health() {
        let (sup, _restarts, _root) = supervisor();
        let (term, scope) = sup.stop().child();
        let scoped = sup.scoped(scope);
        let s = scoped.stop().clone();
        let task = scoped.spawn("controller", quick(), move || {
            let s = s.clone();
            async move {
                s.stopped().await;
                Ok::<(), Error>(())
            }
        });
        term.stop();
        task.await.unwrap();
        assert!(!sup.stop().is_stopped(), "the parent keeps running");

        let failing = sup.spawn("mirror/ns/gone", quick(), || async {
            panic!("always");
            #[allow(unreachable_code)]
            Ok::<(), Error>(())
        });
        tokio::time::sleep(Duration::from_millis(15)).await;
        assert_eq!(sup.down().len(), 1);
        failing.abort();
        let _ = failing.await;
        assert!(sup.down().is_empty(), "{:?}", sup.down());
    }

    #[test]
    fn panic_messages_are_extracted_and_truncated() {
        let long = "é".repeat(600);
        let payload: Box<dyn Any + Send> = Box::new(long.clone());
        let m = panic_message(payload.as_ref());
        assert_eq!(m.chars().count(), 501);
        let payload: Box<dyn Any + Send> = Box::new("static");
        assert_eq!(panic_message(payload.as_ref()), "static");
        let payload: Box<dyn Any + Send> = Box::new(42u8);
        assert_eq!(panic_message(payload.as_ref()), "(no message)");
    }
}
