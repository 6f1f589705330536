//! The invoices stage: purchase lines (CSV) grouped into invoices by a session window keyed by
//! InvoiceNo, each invoice emitted once when no line has arrived for the inactivity gap.
//!
//! Lines of one invoice share a Kafka key, so one partition worker owns each invoice. A valid
//! invoice goes to the output topic, an invalid one (any bad line) to the invalid topic, each
//! keyed by its invoice number; cancellation lines (`C...`) do not form invoices (the
//! cancellations stage counts them); a line for an invoice already emitted goes to the late
//! topic with reason `late`; a line that cannot be read at all goes to the dead letters. The
//! committed offset never passes the first line of an open invoice
//! ([`SessionWindows::safe_offset`]), so a restart rebuilds open invoices by re-reading.
//!
//! In event time a line whose InvoiceDate cannot be read is placed at the partition's stream
//! time (it still belongs to its invoice, which its bad date makes invalid).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use rdkafka::message::{Message, OwnedMessage};
use serde::Serialize;

use super::aggregate::invoice::{Columns, Invoice, InvoiceRecord, parse_line};
use super::metrics::StageMetrics;
use super::session_window::{Admit, CloseReason, Closed, LateReason, SessionWindows};
use super::time::TimeMode;
use super::worker::{Emit, Stage};

/// Where an invoices stage writes, shared by its partition workers.
#[derive(Debug)]
pub struct InvoiceOutputs {
    pub invoices: Arc<str>,
    pub invalid: Arc<str>,
    pub late: Arc<str>,
    pub dead_letter: Arc<str>,
}

/// The reason code of a late line's headers.
pub const LATE: &str = "late";

/// One partition's invoice assembly.
pub struct InvoiceStage {
    sessions: SessionWindows<Invoice>,
    columns: Arc<Columns>,
    mode: TimeMode,
    outputs: Arc<InvoiceOutputs>,
    topic: String,
    partition: i32,
    metrics: Arc<StageMetrics>,
    /// Open invoices last added to the shared gauge by this partition.
    open_counted: i64,
}

/// An emitted invoice: the aggregate's record and where it came from.
#[derive(Serialize)]
struct Emitted<'a> {
    #[serde(flatten)]
    invoice: InvoiceRecord,
    /// `gap` (no line for the inactivity gap) or `max_open` (emitted early: too many open).
    closed_by: &'static str,
    /// Input topic, partition and the offsets of the first and last line: a repeat after a
    /// crash carries the same.
    source: SourceSpan<'a>,
}

#[derive(Serialize)]
struct SourceSpan<'a> {
    topic: &'a str,
    partition: i32,
    first_offset: i64,
    last_offset: i64,
}

impl InvoiceStage {
    /// `sessions` empty, for `topic`/`partition`.
    pub fn new(
        sessions: SessionWindows<Invoice>,
        mode: TimeMode,
        columns: Arc<Columns>,
        outputs: Arc<InvoiceOutputs>,
        topic: &str,
        partition: i32,
        metrics: Arc<StageMetrics>,
    ) -> Self {
        Self {
            sessions,
            columns,
            mode,
            outputs,
            topic: topic.to_owned(),
            partition,
            metrics,
            open_counted: 0,
        }
    }

    fn emit(&self, closed: Closed<Invoice>, out: &mut Vec<Emit>) {
        let invoice = closed.aggregate.record();
        let valid = invoice.valid;
        let closed_by = match closed.reason {
            CloseReason::Gap => "gap",
            CloseReason::MaxOpen => "max_open",
        };
        if closed.reason == CloseReason::MaxOpen {
            self.metrics.closed_early.fetch_add(1, Relaxed);
        }
        let doc = Emitted {
            invoice,
            closed_by,
            source: SourceSpan {
                topic: &self.topic,
                partition: self.partition,
                first_offset: closed.first_offset,
                last_offset: closed.last_offset,
            },
        };
        let value = serde_json::to_vec(&doc).expect("an invoice record serializes");
        let topic = if valid {
            self.metrics.emitted.fetch_add(1, Relaxed);
            &self.outputs.invoices
        } else {
            self.metrics.invalid.fetch_add(1, Relaxed);
            &self.outputs.invalid
        };
        out.push(Emit {
            topic: Arc::clone(topic),
            key: Some(closed.key.into_bytes()),
            value,
            headers: None,
        });
    }

    fn count_open(&mut self) {
        let now = self.sessions.open_len() as i64;
        self.metrics
            .open
            .fetch_add(now - self.open_counted, Relaxed);
        self.open_counted = now;
    }
}

impl Drop for InvoiceStage {
    fn drop(&mut self) {
        // A revoked partition's open invoices are rebuilt by its next owner.
        self.metrics.open.fetch_sub(self.open_counted, Relaxed);
    }
}

impl Stage for InvoiceStage {
    fn process(&mut self, m: &OwnedMessage, now_ms: i64, out: &mut Vec<Emit>) {
        let line = match parse_line(m.payload().unwrap_or_default(), &self.columns) {
            Ok(line) => line,
            Err(e) => {
                self.metrics.dead_letters.fetch_add(1, Relaxed);
                let letter = Emit::letter(m, &self.outputs.dead_letter, e.reason(), &e.to_string());
                out.push(letter);
                return;
            }
        };
        if line.is_cancellation() {
            // Not an invoice line, but its time moves the partition's stream time.
            if let (TimeMode::Event, Some(t)) = (self.mode, line.time_ms()) {
                self.sessions.restore_stream_time(t);
            }
            self.metrics.skipped.fetch_add(1, Relaxed);
            return;
        }
        let t = match self.mode {
            TimeMode::Processing => now_ms,
            TimeMode::Event => line
                .time_ms()
                .or(self.sessions.stream_time())
                .unwrap_or(now_ms),
        };
        // `Invoice::new` folds in its first line; the session applies `update` to every line,
        // the first included, so the opening line is not added twice.
        let opened = std::cell::Cell::new(false);
        let admit = self.sessions.add(
            line.invoice_no(),
            t,
            m.offset(),
            || {
                opened.set(true);
                Invoice::new(&line)
            },
            |invoice| {
                if !opened.get() {
                    invoice.add(&line);
                }
            },
        );
        if let Admit::Late { reason } = admit {
            self.metrics.late.fetch_add(1, Relaxed);
            let why = match reason {
                LateReason::Closed => format!(
                    "invoice {} was already emitted: this line came after its inactivity gap",
                    line.invoice_no()
                ),
                LateReason::BehindCloseTime { .. } => format!(
                    "a line of invoice {} older than stream time minus gap and grace: any \
                     session it could join has closed",
                    line.invoice_no()
                ),
                LateReason::OutsideSession => format!(
                    "a line of invoice {} too far in time from its open session to join it",
                    line.invoice_no()
                ),
            };
            let letter = Emit::letter(m, &self.outputs.late, LATE, &why);
            out.push(letter);
        }
        self.count_open();
    }

    fn punctuate(&mut self, now_ms: i64, out: &mut Vec<Emit>) {
        for closed in self.sessions.advance(now_ms) {
            self.emit(closed, out);
        }
        self.count_open();
    }

    fn safe_offset(&mut self, next: i64) -> i64 {
        self.sessions.safe_offset(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::session_window::SessionConfig;
    use rdkafka::Timestamp;
    use rdkafka::message::Headers;

    fn stage(mode: TimeMode, gap_ms: i64) -> (InvoiceStage, Arc<StageMetrics>) {
        let metrics = Arc::new(StageMetrics::default());
        let sessions = SessionWindows::new(SessionConfig {
            time: mode,
            inactivity_gap_ms: gap_ms,
            grace_ms: 0,
            max_open: 2,
            remember_closed: 10,
        })
        .unwrap();
        let outputs = Arc::new(InvoiceOutputs {
            invoices: "invoices".into(),
            invalid: "invalid".into(),
            late: "late".into(),
            dead_letter: "dead".into(),
        });
        let s = InvoiceStage::new(
            sessions,
            mode,
            Arc::new(Columns::online_retail()),
            outputs,
            "purchases",
            1,
            Arc::clone(&metrics),
        );
        (s, metrics)
    }

    fn msg(line: &str, offset: i64) -> OwnedMessage {
        let key = line.split(',').next().unwrap().as_bytes().to_vec();
        OwnedMessage::new(
            Some(line.as_bytes().to_vec()),
            Some(key),
            "purchases".into(),
            Timestamp::NotAvailable,
            1,
            offset,
            None,
        )
    }

    fn value(e: &Emit) -> serde_json::Value {
        serde_json::from_slice(&e.value).unwrap()
    }

    const A1: &str = "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,12/1/2010 8:26,2.55,17850,United Kingdom";
    const A2: &str = "536365,71053,WHITE METAL LANTERN,6,12/1/2010 8:26,3.39,17850,United Kingdom";
    const B1: &str =
        "536366,22633,\"HAND WARMER, UNION JACK\",6,12/1/2010 8:28,1.85,,United Kingdom";

    #[test]
    fn an_invoice_is_emitted_once_after_the_gap_and_a_later_line_is_late() {
        let (mut s, metrics) = stage(TimeMode::Processing, 1000);
        let mut out = Vec::new();
        s.process(&msg(A1, 10), 0, &mut out);
        s.process(&msg(B1, 11), 100, &mut out);
        s.process(&msg(A2, 12), 500, &mut out);
        assert!(out.is_empty());
        assert_eq!(s.safe_offset(13), 10, "the first line of the open invoice");
        s.punctuate(1400, &mut out);
        assert_eq!(out.len(), 1, "B closed, A still open");
        assert_eq!(
            &*out[0].topic, "invalid",
            "an empty CustomerID makes B invalid"
        );
        assert_eq!(out[0].key.as_deref(), Some(&b"536366"[..]));
        s.punctuate(1500, &mut out);
        assert_eq!(out.len(), 2);
        let a = value(&out[1]);
        assert_eq!(&*out[1].topic, "invoices");
        assert_eq!(a["lines"], 2);
        assert_eq!(a["closed_by"], "gap");
        assert_eq!(a["source"]["first_offset"], 10);
        assert_eq!(a["source"]["last_offset"], 12);
        assert_eq!(a["features"]["max_unit_price"], 3.39);
        assert_eq!(s.safe_offset(13), 13, "nothing open: past the last line");
        s.process(&msg(A2, 13), 1600, &mut out);
        assert_eq!(&*out[2].topic, "late");
        assert_eq!(out[2].value, A2.as_bytes(), "the late line unchanged");
        let reason = out[2].headers.as_ref().unwrap().get(0);
        assert_eq!(reason.value, Some(&b"late"[..]));
        let snap = metrics.snapshot();
        assert_eq!(
            (snap.emitted, snap.invalid, snap.late, snap.open),
            (1, 1, 1, 0)
        );
    }

    #[test]
    fn cancellations_are_skipped_bad_lines_dead_lettered_and_max_open_closes_early() {
        let (mut s, metrics) = stage(TimeMode::Processing, 60_000);
        let mut out = Vec::new();
        s.process(
            &msg(
                "C536379,D,Discount,-1,12/1/2010 9:41,27.5,14527,United Kingdom",
                0,
            ),
            0,
            &mut out,
        );
        s.process(&msg("536365,only,three", 1), 0, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(&*out[0].topic, "dead");
        s.process(&msg(A1, 2), 0, &mut out);
        s.process(&msg(B1, 3), 0, &mut out);
        s.process(
            &msg("536367,X,Y,1,12/1/2010 8:34,1.0,13047,United Kingdom", 4),
            0,
            &mut out,
        );
        s.punctuate(1, &mut out);
        assert_eq!(out.len(), 2, "the third open invoice pushed the oldest out");
        assert_eq!(value(&out[1])["invoice"], "536365");
        assert_eq!(value(&out[1])["closed_by"], "max_open");
        let snap = metrics.snapshot();
        assert_eq!(
            (
                snap.skipped,
                snap.dead_letters,
                snap.closed_early,
                snap.open
            ),
            (1, 1, 1, 2)
        );
        drop(s);
        assert_eq!(
            metrics.snapshot().open,
            0,
            "a dropped partition takes its open count along"
        );
    }

    #[test]
    fn in_event_time_invoice_dates_and_cancellations_move_the_stream_time() {
        let (mut s, _) = stage(TimeMode::Event, 120_000);
        let mut out = Vec::new();
        s.process(&msg(A1, 0), 0, &mut out);
        s.punctuate(i64::MAX, &mut out);
        assert!(
            out.is_empty(),
            "the wall clock does not close an event-time session"
        );
        s.process(
            &msg(
                "C536379,D,Discount,-1,12/1/2010 8:29,27.5,14527,United Kingdom",
                1,
            ),
            0,
            &mut out,
        );
        s.punctuate(0, &mut out);
        assert_eq!(
            out.len(),
            1,
            "8:29 is 3 minutes after 8:26: past the 2-minute gap"
        );
        assert_eq!(value(&out[0])["first_line_time"], "2010-12-01T08:26:00Z");
    }
}
