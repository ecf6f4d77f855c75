//! The process' one shutdown token, and the one place that listens for SIGTERM and SIGINT.
//!
//! [`on_signals`] raises a [`Stop`] on the first signal and remembers which one it was: the
//! operator only needs to know that it must stop, `install` also exits with `128 + signal`.
//! [`Stop::child`] narrows it (the controller's term as leader ends with the term or with the
//! process).

use std::future::Future;
use std::sync::{Arc, OnceLock};

use nix::sys::signal::Signal;
use tokio::sync::watch;
use tracing::{info, warn};

/// The receiving side of a stop signal. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Stop {
    rx: watch::Receiver<bool>,
    signal: Arc<OnceLock<Signal>>,
}

/// The sending side of a stop signal.
#[derive(Debug)]
pub struct StopHandle {
    tx: watch::Sender<bool>,
    signal: Arc<OnceLock<Signal>>,
}

/// A fresh stop signal.
pub fn stop_pair() -> (StopHandle, Stop) {
    let (tx, rx) = watch::channel(false);
    let signal = Arc::new(OnceLock::new());
    (
        StopHandle {
            tx,
            signal: signal.clone(),
        },
        Stop { rx, signal },
    )
}

impl StopHandle {
    pub fn stop(&self) {
        self.tx.send_replace(true);
    }

    fn stop_by(&self, signal: Signal) {
        // Recorded before the stop is raised: whoever wakes up on it can read the signal.
        let _ = self.signal.set(signal);
        self.stop();
    }
}

impl Stop {
    pub(crate) fn is_stopped(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once stopped (or once the sender is gone: nobody can keep us running then).
    pub(crate) fn stopped(&self) -> impl Future<Output = ()> + Send + Sync + 'static + use<> {
        let mut rx = self.rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// The signal that raised this stop, if a signal did ([`on_signals`]); the unit tests ask,
    /// the crate waits with [`Stop::signalled`].
    #[cfg(test)]
    pub(crate) fn signal(&self) -> Option<Signal> {
        self.signal.get().copied()
    }

    /// Resolves with the signal once a signal has raised this stop; never resolves otherwise.
    pub(crate) fn signalled(&self) -> impl Future<Output = Signal> + Send + Sync + 'static + use<> {
        let (stopped, signal) = (self.stopped(), self.signal.clone());
        async move {
            stopped.await;
            match signal.get() {
                Some(s) => *s,
                None => std::future::pending().await,
            }
        }
    }

    /// The raw receiver, for functions that take one.
    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.rx.clone()
    }

    /// A later signal: fires `by` after this one (at once when `by` is zero). The operator's
    /// tasks stop on it, so a replica that was told to stop keeps answering the webhook while
    /// the API server learns that its endpoint is gone.
    pub(crate) fn delayed(&self, by: std::time::Duration) -> Stop {
        if by.is_zero() {
            return self.clone();
        }
        let (handle, later) = stop_pair();
        let (parent, signal) = (self.stopped(), self.signal.clone());
        tokio::spawn(async move {
            parent.await;
            tokio::time::sleep(by).await;
            if let Some(s) = signal.get() {
                let _ = handle.signal.set(*s);
            }
            handle.stop();
        });
        later
    }

    /// A narrower signal: fires when this one does or when its own handle is used (e.g. the
    /// controller's term as leader).
    pub(crate) fn child(&self) -> (StopHandle, Stop) {
        let (handle, child) = stop_pair();
        let parent = self.stopped();
        let tx = handle.tx.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = parent => { tx.send_replace(true); }
                _ = tx.closed() => {}
            }
        });
        (handle, child)
    }
}

/// Raise the returned stop on SIGTERM or SIGINT, for the rest of the process' life.
///
/// The handlers are installed here, before returning, not inside the task: a spawned task may
/// not have run yet when a signal arrives (under load it did not), and the default action of
/// SIGTERM would then kill the process instead of stopping it cleanly. Once installed they stay,
/// so a second signal while we stop is ignored, not fatal.
pub(crate) fn on_signals() -> (Arc<StopHandle>, Stop) {
    use tokio::signal::unix::{SignalKind, signal};
    let (handle, stop) = stop_pair();
    let handle = Arc::new(handle);
    let h = handle.clone();
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    tokio::spawn(async move {
        let (mut term, mut int) = match (term, int) {
            (Ok(term), Ok(int)) => (term, int),
            (Err(e), _) | (_, Err(e)) => {
                warn!(error = %e, "cannot watch SIGTERM/SIGINT; stopping only when asked to");
                return std::future::pending().await;
            }
        };
        let signal = tokio::select! {
            _ = term.recv() => Signal::SIGTERM,
            _ = int.recv() => Signal::SIGINT,
        };
        info!("{}: shutting down", signal.as_str());
        h.stop_by(signal);
        // Keep the streams (and the handle) alive: the stop stays raised with its cause.
        std::future::pending::<()>().await;
    });
    (handle, stop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_delayed_stop_fires_that_long_after_the_first_with_its_signal() {
        let (handle, stop) = stop_pair();
        let later = stop.delayed(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!later.is_stopped(), "nothing fires before the first stop");
        handle.stop_by(Signal::SIGTERM);
        tokio::time::sleep(Duration::from_millis(4900)).await;
        assert!(stop.is_stopped());
        assert!(!later.is_stopped(), "still serving within the delay");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(later.is_stopped());
        assert_eq!(later.signal(), Some(Signal::SIGTERM));
    }

    #[tokio::test(start_paused = true)]
    async fn no_delay_is_the_same_stop() {
        let (handle, stop) = stop_pair();
        let same = stop.delayed(Duration::ZERO);
        handle.stop();
        assert!(same.is_stopped());
    }
}
