//! The message of one alert: Block Kit for Slack, and the same content as plain text for the
//! log. Every piece is cut to Slack's limits, never past them: a header of at most 150
//! characters, section text of 3000, fields of 2000, at most 10 fields per section and 50
//! blocks, and always a non-empty top-level `text`, the only part mobile notifications show.

use serde::Serialize;
use serde_json::{Value, json};

use super::anomaly::Anomaly;
use super::group::Alert;

pub const HEADER_MAX: usize = 150;
pub const SECTION_TEXT_MAX: usize = 3000;
pub const FIELD_MAX: usize = 2000;
pub const CONTEXT_MAX: usize = 2000;
/// Slack accepts 40,000 characters but advises far fewer; a notification shows only the start.
pub const TEXT_MAX: usize = 3000;
pub const MAX_BLOCKS: usize = 50;
/// Features listed per anomaly; the rest are counted.
pub const MAX_EXPLAINED: usize = 10;

/// What is posted: `text` plus `blocks`. The channel is added by the client.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub text: String,
    pub blocks: Vec<Value>,
}

/// "3 anomalies on transactions".
pub fn header(alert: &Alert) -> String {
    let noun = if alert.count == 1 {
        "anomaly"
    } else {
        "anomalies"
    };
    cut(
        &format!("{} {noun} on {}", alert.count, alert.key.topic),
        HEADER_MAX,
    )
}

/// The Block Kit message of `alert`.
pub fn build(alert: &Alert) -> Message {
    let mut blocks = vec![
        json!({
            "type": "header",
            "text": {"type": "plain_text", "text": header(alert), "emoji": false},
        }),
        json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": cut_mrkdwn(&summary(alert, true), SECTION_TEXT_MAX)},
        }),
        json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": cut_mrkdwn(&escape(&ranges(alert)), CONTEXT_MAX)}],
        }),
    ];
    for (rank, a) in alert.top.iter().enumerate() {
        // Each anomaly takes two blocks; stop short of the limit rather than be refused.
        if blocks.len() + 2 > MAX_BLOCKS {
            break;
        }
        blocks.push(json!({"type": "divider"}));
        let mut fields = vec![
            field("Score", &format!("{:.4}", a.score)),
            field(
                "Model",
                &format!("`{}` ({})", escape(&a.model.id), escape(&a.model.kind)),
            ),
            field("Time", &escape(&a.detected_at)),
            field("Source", &source_mrkdwn(a)),
        ];
        if let Some(id) = &a.id {
            fields.push(field("Record id", &escape(id)));
        }
        let lines: Vec<String> = explanation(a).iter().map(|l| escape(l)).collect();
        let text = format!("*#{}*\n{}", rank + 1, lines.join("\n"));
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": cut_mrkdwn(&text, SECTION_TEXT_MAX)},
            "fields": fields,
        }));
    }
    Message {
        text: cut_mrkdwn(&fallback(alert), TEXT_MAX),
        blocks,
    }
}

/// The same alert as plain text, for `log` mode.
pub fn plain(alert: &Alert) -> String {
    let mut out = vec![header(alert), summary(alert, false), ranges(alert)];
    for (rank, a) in alert.top.iter().enumerate() {
        let id =
            a.id.as_ref()
                .map(|i| format!(", id {i}"))
                .unwrap_or_default();
        out.push(format!(
            "#{} score {:.4}, model {} ({}), detected {}, source {} partition {}, offset {}{id}",
            rank + 1,
            a.score,
            a.model.id,
            a.model.kind,
            a.detected_at,
            a.source.topic,
            a.source.partition,
            a.source.offset,
        ));
        out.extend(explanation(a).into_iter().map(|l| format!("    {l}")));
    }
    out.join("\n")
}

/// The top-level `text`: what a phone notification shows.
fn fallback(alert: &Alert) -> String {
    let mut text = format!("{} (model {})", header(alert), alert.key.model_id);
    if let Some(a) = alert.top.first() {
        text.push_str(&format!(
            "; most anomalous: score {:.4} at {} partition {}, offset {}",
            a.score, a.source.topic, a.source.partition, a.source.offset
        ));
    }
    escape(&text)
}

fn summary(alert: &Alert, mrkdwn: bool) -> String {
    let (b, code) = if mrkdwn { ("*", "`") } else { ("", "") };
    let esc = |s: &str| if mrkdwn { escape(s) } else { s.to_owned() };
    let when = if alert.first_detected == alert.last_detected {
        format!("at {}", esc(&alert.first_detected))
    } else {
        format!(
            "between {} and {}",
            esc(&alert.first_detected),
            esc(&alert.last_detected)
        )
    };
    let noun = if alert.count == 1 {
        "anomaly"
    } else {
        "anomalies"
    };
    format!(
        "{b}{}{b} {noun} from model {code}{}{code} ({}) on {code}{}{code}, detected {when}. \
         Showing the top {} by score (lowest = most anomalous).",
        alert.count,
        esc(&alert.key.model_id),
        esc(&alert.model_kind),
        esc(&alert.key.topic),
        alert.top.len(),
    )
}

/// "Source offsets: partition 0: 12-340, partition 2: 7": where to look for the records.
fn ranges(alert: &Alert) -> String {
    let parts: Vec<String> = alert
        .source_ranges
        .iter()
        .map(|(p, (lo, hi))| {
            if lo == hi {
                format!("partition {p}: {lo}")
            } else {
                format!("partition {p}: {lo}-{hi}")
            }
        })
        .collect();
    format!("Source offsets: {}", parts.join(", "))
}

fn source_mrkdwn(a: &Anomaly) -> String {
    format!(
        "`{}` partition {}, offset {}",
        escape(&a.source.topic),
        a.source.partition,
        a.source.offset
    )
}

/// "x = 3.91, outside training range [-2.6, 2.7]", one line per feature, or, for an anomaly
/// explained by attribution, one line "isolated mostly by x1 = 0.12 (62 %), x0 = -0.3 (38 %)";
/// unescaped.
fn explanation(a: &Anomaly) -> Vec<String> {
    if a.explanation.is_empty() {
        return vec![
            "No single feature is outside its training range: the combination is unusual.".into(),
        ];
    }
    let ranged: Vec<_> = a
        .explanation
        .iter()
        .filter_map(|e| Some((e, e.low?, e.high?)))
        .collect();
    if ranged.is_empty() {
        let parts: Vec<String> = a
            .explanation
            .iter()
            .take(MAX_EXPLAINED)
            .map(|e| match e.share {
                Some(s) => format!("{} = {} ({:.0} %)", e.feature, num(e.value), 100.0 * s),
                None => format!("{} = {}", e.feature, num(e.value)),
            })
            .collect();
        return vec![format!(
            "isolated mostly by {}; no feature is outside its training range",
            parts.join(", ")
        )];
    }
    let mut lines: Vec<String> = ranged
        .iter()
        .take(MAX_EXPLAINED)
        .map(|(e, low, high)| {
            format!(
                "{} = {}, outside training range [{}, {}]",
                e.feature,
                num(e.value),
                num(*low),
                num(*high)
            )
        })
        .collect();
    if ranged.len() > MAX_EXPLAINED {
        lines.push(format!(
            "... and {} more features outside their training range",
            ranged.len() - MAX_EXPLAINED
        ));
    }
    lines
}

fn field(label: &str, value: &str) -> Value {
    json!({"type": "mrkdwn", "text": cut_mrkdwn(&format!("*{label}*\n{value}"), FIELD_MAX)})
}

/// Three significant digits, without trailing zeros; scientific notation for very large or
/// very small magnitudes.
pub fn num(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let mag = x.abs().log10().floor() as i32;
    if !(-3..6).contains(&mag) {
        return format!("{x:.2e}");
    }
    let decimals = (2 - mag).max(0) as usize;
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// Slack's mrkdwn gives `&`, `<` and `>` meaning (links, mentions): shown as themselves.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// At most `max` characters, ending with "…" when cut.
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// [`cut`] for escaped text: never leaves half an `&amp;`.
pub fn cut_mrkdwn(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    if let Some(amp) = out.rfind('&')
        && !out[amp..].contains(';')
    {
        out.truncate(amp);
    }
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::sinks::slack::anomaly::{Explained, ModelRef, Source};
    use crate::sinks::slack::group::GroupKey;

    fn anomaly(topic: &str, score: f64, offset: i64, explained: usize, feature: &str) -> Anomaly {
        Anomaly {
            score,
            model: ModelRef {
                id: "3f2a9c".into(),
                kind: "isolation_forest".into(),
            },
            source: Source {
                topic: topic.into(),
                partition: 1,
                offset,
            },
            detected_at: "2026-05-01T12:00:00.123Z".into(),
            explanation: (0..explained)
                .map(|i| Explained {
                    feature: format!("{feature}{i}"),
                    value: 3.9123,
                    low: Some(-2.6),
                    high: Some(2.7),
                    share: None,
                })
                .collect(),
            id: Some(format!("tx-{offset}")),
        }
    }

    fn alert(topic: &str, top: Vec<Anomaly>, count: u64) -> Alert {
        Alert {
            key: GroupKey {
                topic: topic.into(),
                model_id: "3f2a9c".into(),
            },
            model_kind: "isolation_forest".into(),
            count,
            source_ranges: BTreeMap::from([(1, (5, 900))]),
            positions: vec![],
            first_detected: "2026-05-01T12:00:00.123Z".into(),
            last_detected: "2026-05-01T12:00:09.000Z".into(),
            top,
        }
    }

    fn texts(blocks: &[Value]) -> Vec<String> {
        let mut out = Vec::new();
        for b in blocks {
            if let Some(t) = b["text"]["text"].as_str() {
                out.push(t.to_owned());
            }
            for f in b["fields"].as_array().into_iter().flatten() {
                out.push(f["text"].as_str().unwrap().to_owned());
            }
        }
        out
    }

    #[test]
    fn an_alert_reads_well() {
        let a = alert(
            "transactions",
            vec![anomaly("transactions", -0.71234, 42, 1, "x")],
            3,
        );
        let m = build(&a);
        assert_eq!(m.blocks[0]["text"]["text"], "3 anomalies on transactions");
        assert!(
            m.text
                .starts_with("3 anomalies on transactions (model 3f2a9c)")
        );
        let all = texts(&m.blocks);
        for want in [
            "*Score*\n-0.7123",
            "*Model*\n`3f2a9c` (isolation_forest)",
            "*Time*\n2026-05-01T12:00:00.123Z",
            "*Source*\n`transactions` partition 1, offset 42",
            "*Record id*\ntx-42",
            "*#1*\nx0 = 3.91, outside training range [-2.6, 2.7]",
        ] {
            assert!(all.iter().any(|t| t == want), "{want:?} not in {all:#?}");
        }
        assert!(
            m.blocks[2]["elements"][0]["text"]
                .as_str()
                .unwrap()
                .contains("partition 1: 5-900")
        );
        let p = plain(&a);
        assert!(p.starts_with("3 anomalies on transactions\n"), "{p}");
        assert!(p.contains("x0 = 3.91, outside training range [-2.6, 2.7]"));
        assert!(p.contains("source transactions partition 1, offset 42, id tx-42"));
        let one = alert("t", vec![], 1);
        assert_eq!(header(&one), "1 anomaly on t");
        assert!(plain(&one).contains("\n1 anomaly from model 3f2a9c"));
    }

    #[test]
    fn attributed_anomalies_say_what_isolated_them() {
        let mut a = anomaly("transactions", -0.6, 7, 0, "x");
        a.explanation = [("x1", 0.123, 0.62), ("x0", -0.3, 0.38)]
            .into_iter()
            .map(|(f, value, share)| Explained {
                feature: f.into(),
                value,
                low: None,
                high: None,
                share: Some(share),
            })
            .collect();
        let want = "isolated mostly by x1 = 0.123 (62 %), x0 = -0.3 (38 %); \
                    no feature is outside its training range";
        assert!(plain(&alert("transactions", vec![a.clone()], 1)).contains(want));
        let all = texts(&build(&alert("transactions", vec![a], 1)).blocks);
        assert!(all.iter().any(|t| t.ends_with(want)), "{all:#?}");
    }

    #[test]
    fn huge_values_never_break_slack_limits() {
        let topic = "t".repeat(5000);
        let feature = "f&<>".repeat(1000);
        let top = (0..20)
            .map(|i| anomaly(&topic, -0.5, i, 100, &feature))
            .collect();
        let m = build(&alert(&topic, top, 1_000_000));
        assert!(m.blocks.len() <= MAX_BLOCKS);
        let h = m.blocks[0]["text"]["text"].as_str().unwrap();
        assert!(h.chars().count() <= HEADER_MAX && h.ends_with('…'), "{h}");
        assert!(!m.text.is_empty() && m.text.chars().count() <= TEXT_MAX);
        for b in &m.blocks {
            if let Some(t) = b["text"]["text"].as_str() {
                assert!(t.chars().count() <= SECTION_TEXT_MAX);
            }
            for e in b["elements"].as_array().into_iter().flatten() {
                assert!(e["text"].as_str().unwrap().chars().count() <= CONTEXT_MAX);
            }
            let fields = b["fields"].as_array().map_or(0, Vec::len);
            assert!(fields <= 10);
            for f in b["fields"].as_array().into_iter().flatten() {
                assert!(f["text"].as_str().unwrap().chars().count() <= FIELD_MAX);
            }
        }
        let body = serde_json::to_string(&m).unwrap();
        assert!(
            !body.contains("<>"),
            "mrkdwn control characters are escaped"
        );
    }

    #[test]
    fn numbers_have_three_significant_digits() {
        assert_eq!(num(3.9123), "3.91");
        assert_eq!(num(-2.6), "-2.6");
        assert_eq!(num(123.456), "123");
        assert_eq!(num(0.012345), "0.0123");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(1.5e9), "1.50e9");
    }

    #[test]
    fn cutting_counts_characters_and_keeps_entities_whole() {
        assert_eq!(cut("ééééé", 3), "éé…");
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut_mrkdwn("ab&amp;cd", 6), "ab…");
        assert_eq!(cut_mrkdwn("ab&amp;cd", 8), "ab&amp;…");
    }
}
