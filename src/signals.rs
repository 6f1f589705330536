//! Unix signals, turned into messages the async daemon can await.
//!
//! signal-hook's iterator runs on a small thread of its own; that keeps signal handling out of
//! the async runtime and works the same whatever the runtime is doing. Tests drive the daemon
//! through [`Signals::channel`] instead.

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals as HookSignals;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: stop gracefully.
    Terminate,
    /// SIGHUP: reload the model.
    Reload,
}

/// The process's signals, as a stream.
pub struct Signals {
    rx: mpsc::UnboundedReceiver<Signal>,
}

impl Signals {
    /// Installs the handlers for SIGTERM, SIGINT and SIGHUP. Call once, before starting work.
    pub fn install() -> std::io::Result<Self> {
        let mut hook = HookSignals::new([SIGTERM, SIGINT, SIGHUP])?;
        let (tx, signals) = Self::channel();
        std::thread::Builder::new()
            .name("anomalyd-signals".into())
            .spawn(move || {
                for sig in hook.forever() {
                    let msg = match sig {
                        SIGHUP => Signal::Reload,
                        _ => Signal::Terminate,
                    };
                    if tx.send(msg).is_err() {
                        break;
                    }
                }
            })?;
        Ok(signals)
    }

    /// Signals sent by hand: for tests and embedders.
    pub fn channel() -> (mpsc::UnboundedSender<Signal>, Self) {
        let (tx, rx) = mpsc::unbounded_channel();
        (tx, Self { rx })
    }

    /// The next signal; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Signal> {
        self.rx.recv().await
    }

    /// Completes at the first SIGTERM or SIGINT, ignoring the rest.
    pub async fn terminated(&mut self) {
        while let Some(sig) = self.recv().await {
            if sig == Signal::Terminate {
                return;
            }
        }
    }
}
