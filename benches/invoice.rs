//! Speed of purchase-line parsing and invoice folding (issue 13: the stream holds ~270k lines):
//! every line of `tests/data/retail/stream_slice.csv` (3,000 real lines, 158 invoices) read with
//! [`parse_line`] and folded into its [`Invoice`] in a map keyed by InvoiceNo, as the session
//! window does; against a baseline in the same run: the same bytes read as CSV records by the
//! `csv` crate alone, as one stream (its fastest case: one reader, one reused `ByteRecord`, no
//! field interpreted), which a stage cannot do since each Kafka record is a line of its own.
//!
//! `invoice_date_only` times the 3,000 InvoiceDate fields alone through
//! `stages::time::parse_month_day_year`, to show where parse_line's time goes.
//!
//! `cargo bench --bench invoice`; throughput is in lines (elements) per second.

use std::collections::HashMap;
use std::hint::black_box;

use anomalyd::stages::aggregate::invoice::{Columns, Invoice, parse_line};
use anomalyd::stages::time::parse_month_day_year;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn lines() -> Vec<Vec<u8>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/retail/stream_slice.csv"
    );
    let text = std::fs::read(path).expect("tests/data/retail/stream_slice.csv");
    text.split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

fn invoice(c: &mut Criterion) {
    let lines = lines();
    let columns = Columns::online_retail();
    let mut group = c.benchmark_group("invoice");
    group.throughput(Throughput::Elements(lines.len() as u64));
    let whole = lines.concat();
    group.bench_function("csv_crate_records_baseline", |b| {
        let mut record = csv::ByteRecord::new();
        b.iter(|| {
            let mut r = csv::ReaderBuilder::new()
                .has_headers(false)
                .from_reader(whole.as_slice());
            let mut fields = 0;
            while r.read_byte_record(&mut record).expect("csv") {
                fields += record.len();
            }
            black_box(fields)
        });
    });
    // The part of parse_line spent reading InvoiceDate (stages::time, chrono).
    let dates: Vec<String> = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(whole.as_slice())
        .records()
        .map(|r| r.expect("csv")[4].to_owned())
        .collect();
    group.bench_function("invoice_date_only", |b| {
        b.iter(|| {
            let mut sum = 0i64;
            for d in &dates {
                sum = sum.wrapping_add(parse_month_day_year(d).expect("a date"));
            }
            black_box(sum)
        });
    });
    group.bench_function("parse_line_and_add", |b| {
        b.iter(|| {
            let mut open: HashMap<String, Invoice> = HashMap::new();
            for line in &lines {
                let l = parse_line(line, &columns).expect("a purchase line");
                match open.get_mut(l.invoice_no()) {
                    Some(inv) => inv.add(&l),
                    None => {
                        open.insert(l.invoice_no().to_owned(), Invoice::new(&l));
                    }
                }
            }
            black_box(open.len())
        });
    });
    group.finish();
}

criterion_group!(benches, invoice);
criterion_main!(benches);
