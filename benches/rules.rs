//! Speed of rules scoring (issue 12's bar: a two-comparison CEL rule in at most 1 µs per
//! record, compiled once): `temperature > 40.0 || pressure > 120.0` on a typical sensor
//! record, as a parsed JSON object and as a CSV row, quiet and firing; five rules on the same
//! record; and, to show where the time goes, the bare interpreter on a context whose two
//! variables are bound once (no per-record context, no field lookup or conversion).
//!
//! Each is measured twice: in wall time (criterion's default, group `rules`) and in the
//! benchmark thread's CPU time (group `rules_cpu`, `CLOCK_THREAD_CPUTIME_ID`), which leaves
//! out the time other processes take the core, so the figure holds on a loaded machine.
//!
//! `cargo bench --bench rules`; figures and how to read them are in docs/benchmarks.md.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use anomalyd::detect::rules::{CsvRow, RuleSet};
use cpu_time::ThreadTime;
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{Criterion, criterion_group, criterion_main};

/// The calling thread's CPU time, in nanoseconds, formatted as criterion formats wall time.
struct ThreadCpu {
    wall: WallTime,
}

impl Measurement for ThreadCpu {
    type Intermediate = ThreadTime;
    type Value = Duration;

    fn start(&self) -> ThreadTime {
        ThreadTime::now()
    }

    fn end(&self, start: ThreadTime) -> Duration {
        start.elapsed()
    }

    fn add(&self, v1: &Duration, v2: &Duration) -> Duration {
        *v1 + *v2
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        self.wall.formatter()
    }
}

fn rules(pairs: &[(&str, &str)]) -> RuleSet {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(name, expression)| (name.to_string(), expression.to_string()))
        .collect();
    RuleSet::compile(&pairs).expect("the bench's rules compile")
}

/// A sensor reading as producers send it: ids, a timestamp, a few readings, a nested block.
fn record(temperature: f64) -> serde_json::Value {
    serde_json::json!({
        "sensor": "boiler-7/t2",
        "site": "plant-north",
        "ts": "2026-11-30T06:30:00.123Z",
        "temperature": temperature,
        "pressure": 101.3,
        "humidity": 41.0,
        "battery": 3.61,
        "firmware": "2.4.1",
        "location": {"lat": 52.52, "lon": 13.405},
    })
}

fn wall(c: &mut Criterion) {
    two_comparisons(c, "rules");
}

fn cpu(c: &mut Criterion<ThreadCpu>) {
    two_comparisons(c, "rules_cpu");
}

fn two_comparisons<M: Measurement>(c: &mut Criterion<M>, name: &str) {
    let mut group = c.benchmark_group(name);
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));

    let set = rules(&[("hot_or_pressure", "temperature > 40.0 || pressure > 120.0")]);
    let quiet = record(21.5);
    let hot = record(41.5);
    assert!(!set.evaluate(&quiet).unwrap().anomalous());
    assert!(set.evaluate(&hot).unwrap().anomalous());
    group.bench_function("two_comparisons_json_quiet", |b| {
        b.iter(|| set.evaluate(black_box(&quiet)))
    });
    group.bench_function("two_comparisons_json_fired", |b| {
        b.iter(|| set.evaluate(black_box(&hot)))
    });

    let columns: Vec<String> = [
        "sensor",
        "site",
        "ts",
        "temperature",
        "pressure",
        "humidity",
        "battery",
        "firmware",
    ]
    .map(String::from)
    .to_vec();
    let line = csv::StringRecord::from(vec![
        "boiler-7/t2",
        "plant-north",
        "2026-11-30T06:30:00.123Z",
        "21.5",
        "101.3",
        "41.0",
        "3.61",
        "2.4.1",
    ]);
    let row = CsvRow {
        columns: &columns,
        record: &line,
    };
    assert!(!set.evaluate(&row).unwrap().anomalous());
    group.bench_function("two_comparisons_csv_quiet", |b| {
        b.iter(|| set.evaluate(black_box(&row)))
    });

    let five = rules(&[
        ("hot", "temperature > 40.0"),
        ("over_pressure", "pressure > 120.0"),
        ("damp", "humidity >= 90.0"),
        ("low_battery", "battery < 3.3"),
        (
            "north_cold",
            "site == 'plant-north' && location.lat > 50.0 && temperature < 5.0",
        ),
    ]);
    assert!(!five.evaluate(&quiet).unwrap().anomalous());
    group.bench_function("five_rules_json_quiet", |b| {
        b.iter(|| five.evaluate(black_box(&quiet)))
    });

    // The floor: the interpreter alone, its variables bound once outside the loop.
    let env = Arc::new(cel::Env::stdlib());
    let program = env
        .compile("temperature > 40.0 || pressure > 120.0")
        .unwrap();
    let mut context = cel::Context::with_env(Arc::clone(&env));
    context.add_variable_from_value("temperature", 21.5);
    context.add_variable_from_value("pressure", 101.3);
    assert_eq!(program.execute(&context), Ok(cel::Value::Bool(false)));
    group.bench_function("cel_execute_prebound", |b| {
        b.iter(|| program.execute(black_box(&context)))
    });
    group.bench_function("cel_context_per_record", |b| {
        b.iter(|| cel::Context::with_env(Arc::clone(black_box(&env))))
    });
    group.finish();
}

criterion_group!(wall_time, wall);
criterion_group! {
    name = cpu_time;
    config = Criterion::default().with_measurement(ThreadCpu { wall: WallTime });
    targets = cpu
}
criterion_main!(wall_time, cpu_time);
