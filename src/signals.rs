//! Unix signals, turned into messages the async daemon can await.
//!
//! signal-hook's iterator runs on a small thread of its own; that keeps signal handling out of
//! the async runtime and works the same whatever the runtime is doing. Tests drive the daemon
//! through [`Signals::channel`] instead.
//!
//! SIGINT and SIGTERM both stop the daemon gracefully; they stay distinct so that a second one
//! during the shutdown can end the process with the shell's code for that signal.

use std::fmt;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals as HookSignals;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C): stop gracefully; a second one stops at once.
    Interrupt,
    /// SIGTERM: stop gracefully; a second one stops at once.
    Terminate,
    /// SIGHUP: reload the model.
    Reload,
}

impl Signal {
    /// Whether the signal asks the daemon to stop.
    pub fn is_stop(self) -> bool {
        matches!(self, Self::Interrupt | Self::Terminate)
    }

    /// The signal's number (signal(7)).
    pub fn number(self) -> i32 {
        match self {
            Self::Interrupt => SIGINT,
            Self::Terminate => SIGTERM,
            Self::Reload => SIGHUP,
        }
    }

    /// The shell's exit status for a process ended by this signal: 128 + its number
    /// (130 for SIGINT, 143 for SIGTERM).
    pub fn exit_code(self) -> u8 {
        // Signal numbers are small positive integers (1, 2, 15 here).
        128 + self.number() as u8
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Interrupt => "SIGINT",
            Self::Terminate => "SIGTERM",
            Self::Reload => "SIGHUP",
        })
    }
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
                        SIGINT => Signal::Interrupt,
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

    /// The next SIGTERM or SIGINT, ignoring the rest; `None` once every sender is gone.
    pub async fn next_stop(&mut self) -> Option<Signal> {
        while let Some(sig) = self.recv().await {
            if sig.is_stop() {
                return Some(sig);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(Signal::Interrupt.exit_code(), 130);
        assert_eq!(Signal::Terminate.exit_code(), 143);
        assert_eq!(Signal::Interrupt.to_string(), "SIGINT");
        assert!(Signal::Terminate.is_stop() && !Signal::Reload.is_stop());
    }

    #[tokio::test]
    async fn next_stop_skips_reloads_and_keeps_which_signal() {
        let (tx, mut signals) = Signals::channel();
        tx.send(Signal::Reload).unwrap();
        tx.send(Signal::Terminate).unwrap();
        tx.send(Signal::Interrupt).unwrap();
        drop(tx);
        assert_eq!(signals.next_stop().await, Some(Signal::Terminate));
        assert_eq!(signals.next_stop().await, Some(Signal::Interrupt));
        assert_eq!(signals.next_stop().await, None);
    }
}
