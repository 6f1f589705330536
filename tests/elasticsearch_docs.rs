//! docs/elasticsearch.md holds what anomalyd writes (issue 14, item 6), without a broker and
//! without an Elasticsearch server (none runs here): every ```json block parses; every field
//! the index template maps, and every field the ingest pipeline reads, is at that path in a
//! real anomaly or scored record built by the library as the detector worker builds them,
//! with a JSON type that fits the mapping; the connector's documented settings are the ones
//! that give topic+partition+offset ids and route into the template's indices.

use std::time::SystemTime;

use anomalyd::detect::model::LoadedModel;
use anomalyd::detect::scorer::{Batch, RulesScorer, Scored, Scorer};
use anomalyd::record::Record;
use anomalyd::sinks::SourceRef;
use anomalyd::sinks::anomalies::{Additions, Detection, write_anomaly};
use serde_json::Value;

fn doc() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/elasticsearch.md");
    std::fs::read_to_string(path).expect("docs/elasticsearch.md")
}

/// The ```json blocks of `markdown`, each as its text.
fn json_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim()) {
            (None, "```json") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "a ```json block is not closed");
    blocks
}

/// The one parsed block that has `key` at its top level.
fn block_with<'a>(blocks: &'a [Value], key: &str) -> &'a Value {
    let found: Vec<&Value> = blocks.iter().filter(|b| b.get(key).is_some()).collect();
    assert_eq!(found.len(), 1, "blocks with {key:?}: {found:?}");
    found[0]
}

/// `(path, type)` of every mapped leaf field under `properties`, paths dotted.
fn mapped(properties: &Value, prefix: &str, out: &mut Vec<(String, String)>) {
    for (name, m) in properties.as_object().expect("properties is an object") {
        let path = format!("{prefix}{name}");
        match (m.get("properties"), m.get("type").and_then(Value::as_str)) {
            (Some(inner), _) => mapped(inner, &format!("{path}."), out),
            (None, Some(t)) => out.push((path, t.to_owned())),
            (None, None) => panic!("{path}: neither a type nor properties"),
        }
    }
}

fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, part| v.get(part))
}

/// Whether a JSON value can be indexed as the Elasticsearch type `t`.
fn fits(t: &str, v: &Value) -> bool {
    match t {
        "keyword" | "text" => v.is_string(),
        "date" => v
            .as_str()
            .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok()),
        "boolean" => v.is_boolean(),
        "double" | "float" => v.is_number(),
        "integer" | "long" => v.is_i64() || v.is_u64(),
        "flattened" | "object" => v.is_object() || v.is_array(),
        other => panic!("the test does not know the type {other:?}"),
    }
}

/// What the detector worker publishes for `source` scored by `scorer` (row `features`): the
/// anomaly (when it is one) and the scored record, as JSON.
fn outputs(
    source: &str,
    scorer: &dyn Scorer,
    features: &[f64],
    variant: Option<&str>,
) -> Vec<Value> {
    let record = Record::parse(Some(source.as_bytes())).expect("a JSON record");
    let records = [&record];
    let mut out = [Ok(Scored::default())];
    scorer.score_batch(
        &Batch {
            rows: features,
            records: &records,
        },
        &mut out,
    );
    let Scored { score, decision } = out[0].clone().expect("scored");
    let detection = Detection {
        score,
        decision,
        features,
    };
    let from = SourceRef {
        topic: "sensor-data",
        partition: 1,
        offset: 41,
    };
    let anomaly = decision < 0.0;
    let build = if anomaly {
        Additions::new
    } else {
        Additions::not_anomalous
    };
    let mut additions = build(
        &record,
        &detection,
        "sensors",
        scorer,
        from,
        SystemTime::now(),
    );
    additions.variant = variant;
    let mut written = Vec::new();
    let mut buf = Vec::new();
    if anomaly {
        write_anomaly(&mut buf, &record, &additions);
        written.push(serde_json::from_slice(&buf).unwrap());
    }
    additions.anomaly = Some(anomaly);
    write_anomaly(&mut buf, &record, &additions);
    written.push(serde_json::from_slice(&buf).unwrap());
    written
}

/// Real outputs of every layout the template maps: sensor readings under the rules (an
/// anomaly and a normal reading, one with an A/B variant), and an Isolation Forest anomaly of
/// a record that is wrapped (it has an `anomalyd` member of its own).
fn real_outputs(dir: &std::path::Path) -> Vec<Value> {
    let rules =
        RulesScorer::compile(&[("hot".to_owned(), "temperature > 40.0".to_owned())]).unwrap();
    let hot = r#"{"sensor_id":"sensor-3","temperature":41.3,"pressure":101.0,"timestamp":"2026-11-30T10:00:03.000+01:00"}"#;
    let fine = r#"{"sensor_id":"sensor-4","temperature":40.0,"pressure":99.5,"timestamp":"2026-11-30T10:00:04.000+01:00"}"#;
    let mut all = outputs(hot, &rules, &[], None);
    all.extend(outputs(fine, &rules, &[], Some("A")));

    let path = dir.join("m.iforest");
    anomalyd::offline::train::train(&anomalyd::offline::train::TrainOptions {
        trees: Some(20),
        ..anomalyd::offline::train::TrainOptions::synthetic(42, path.clone())
    })
    .unwrap();
    let model = LoadedModel::load(&path).unwrap();
    let wrapped = r#"{"anomalyd":{"note":"mine"},"data":[[9.0,9.0]]}"#;
    all.extend(outputs(wrapped, &model, &[9.0, 9.0], None));
    all
}

#[test]
fn every_json_block_parses() {
    let blocks = json_blocks(&doc());
    assert!(blocks.len() >= 4, "{} json blocks", blocks.len());
    for b in &blocks {
        serde_json::from_str::<Value>(b).unwrap_or_else(|e| panic!("{e}:\n{b}"));
    }
}

#[test]
fn every_mapped_field_is_where_anomalyd_writes_it() {
    let blocks: Vec<Value> = json_blocks(&doc())
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    let template = block_with(&blocks, "index_patterns");
    let mut fields = Vec::new();
    mapped(
        &template["template"]["mappings"]["properties"],
        "",
        &mut fields,
    );
    for required in ["timestamp", "anomalyd.detected_at"] {
        assert!(
            fields.iter().any(|(p, t)| p == required && t == "date"),
            "{required} is a date: {fields:?}"
        );
    }
    for required in ["anomalyd.detector", "anomalyd.model.id", "sensor_id"] {
        assert!(
            fields.iter().any(|(p, t)| p == required && t == "keyword"),
            "{required} is a keyword: {fields:?}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let written = real_outputs(dir.path());
    // The example document on the page is the shape anomalyd writes.
    let example = block_with(&blocks, "sensor_id");
    let real = &written[1];
    let keys = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(keys(example), keys(real));
    assert_eq!(keys(&example["anomalyd"]), keys(&real["anomalyd"]));

    for (path, t) in &fields {
        let values: Vec<&Value> = written.iter().filter_map(|w| at(w, path)).collect();
        assert!(
            !values.is_empty(),
            "the template maps {path}, which no output of anomalyd has"
        );
        for v in values {
            assert!(fits(t, v), "{path}: {v} does not fit {t}");
        }
    }
    // The members anomalyd writes are all mapped: nothing of ours is left to dynamic mapping.
    for w in &written {
        for k in w["anomalyd"].as_object().unwrap().keys() {
            let path = format!("anomalyd.{k}");
            assert!(
                fields
                    .iter()
                    .any(|(p, _)| *p == path || p.starts_with(&format!("{path}."))),
                "{path} is not mapped"
            );
        }
    }

    // The pipeline reads fields that every output has.
    let pipeline = block_with(&blocks, "processors");
    let id = pipeline["processors"][0]["set"]["value"].as_str().unwrap();
    assert_eq!(pipeline["processors"][0]["set"]["field"], "_id");
    let reads: Vec<&str> = id
        .split("{{")
        .skip(1)
        .map(|s| s.split("}}").next().unwrap())
        .collect();
    assert_eq!(reads.len(), 4, "{id}");
    for path in reads {
        for w in &written {
            let v = at(w, path).unwrap_or_else(|| panic!("{path} missing in {w}"));
            assert!(v.is_string() || v.is_i64(), "{path}: {v}");
        }
    }
}

#[test]
fn the_connector_gives_offset_ids_into_the_templates_indices() {
    let blocks: Vec<Value> = json_blocks(&doc())
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    let connector = block_with(&blocks, "config");
    let c = &connector["config"];
    assert_eq!(
        c["connector.class"],
        "io.confluent.connect.elasticsearch.ElasticsearchSinkConnector"
    );
    // topic+partition+offset ids, written with `index` so a replay overwrites.
    assert_eq!(c["key.ignore"], "true");
    assert_eq!(c["write.method"], "insert");
    assert!(c.get("use.autogenerated.ids").is_none_or(|v| v == "false"));
    assert!(c.get("data.stream.type").is_none());
    // Plain JSON values, mapped by the template.
    assert_eq!(
        c["value.converter"],
        "org.apache.kafka.connect.json.JsonConverter"
    );
    assert_eq!(c["value.converter.schemas.enable"], "false");
    assert_eq!(c["schema.ignore"], "true");
    // Every topic's index falls under the template.
    let template = block_with(&blocks, "index_patterns");
    let patterns: Vec<&str> = template["index_patterns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(c["transforms.prefix.regex"], ".*");
    let replacement = c["transforms.prefix.replacement"].as_str().unwrap();
    for topic in c["topics"].as_str().unwrap().split(',') {
        let index = replacement.replace("$0", topic);
        assert!(
            patterns.iter().any(|p| p
                .strip_suffix('*')
                .is_some_and(|prefix| index.starts_with(prefix))),
            "index {index} is not under {patterns:?}"
        );
    }
    // No secret in the configuration itself.
    assert!(
        c["connection.password"]
            .as_str()
            .is_some_and(|p| p.starts_with("${file:")),
        "the password comes from a config provider"
    );
}
