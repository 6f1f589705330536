//! The CSV record format (`[detectors.NAME] format = "csv"`): each Kafka record's value is one
//! CSV line whose cells are named by the detector's `columns`.
//!
//! A line is read as RFC 4180 says (fields separated by commas; a field in double quotes may
//! hold commas, line breaks and doubled quotes `""`), by the `csv` crate. Decisions:
//!
//! - one line ending at the end of the value (`\n` or `\r\n`, as a producer reading a file line
//!   by line may leave it) is not part of the line; a UTF-8 byte-order mark before it is
//!   ignored, as for JSON;
//! - there is no header line: every record is data (a header sent into the stream fails its
//!   feature columns as `not_a_number`, or is scored by rules like any line);
//! - a cell is text; a feature cell is read as an `f64` after trimming spaces and tabs (empty:
//!   `missing_feature`; not a number: `not_a_number`; `inf` or `NaN`: `not_finite`); rules see
//!   a cell as a number when it parses as one, else as a string
//!   ([`FieldValue::Text`](crate::detect::rules::FieldValue));
//! - a value that is not UTF-8 is `not_utf8`; one that holds two CSV records or is empty is
//!   `not_csv`; one whose field count is not the number of columns is `wrong_field_count`.
//!
//! A line that can be scored becomes a JSON object, [`CsvLine::json`],
//! `{"line": "<the line>", "record": {"<column>": "<cell>", ...}}`, which the rest of the
//! pipeline handles as it handles a JSON record: the anomaly is that object with anomalyd's
//! additions (`layout` `"csv"`), so it keeps the exact line and the cells by name.
//!
//! The `csv` crate's reader reads from an `io::Read` it owns, so a worker builds one per line
//! over the line's bytes (a small buffer, sized to the line) and reuses its [`StringRecord`].

use std::fmt::Write as _;

use csv::StringRecord;

use super::features::Rejection;

/// The top-level member of [`CsvLine::json`] holding the line, exactly as received (without
/// its line ending).
pub const LINE: &str = "line";
/// The top-level member of [`CsvLine::json`] holding the cells, an object of strings by
/// column name.
pub const RECORD: &str = "record";

/// Longest quote of a bad cell in a dead letter's error, in bytes (cut at a character
/// boundary).
const MAX_QUOTED: usize = 64;

/// One detector's CSV reading: its columns and where its features are among them.
#[derive(Debug, Clone)]
pub struct CsvFormat {
    columns: Vec<String>,
    /// Index into `columns` of each feature, in the features' order.
    features: Vec<usize>,
}

impl CsvFormat {
    /// The format of `columns` (unique names, as the configuration guarantees) with the
    /// features `features` (column names, in the order the scorer takes them; empty for a
    /// scorer that reads no features). `None` when a feature is not a column.
    pub fn new(columns: Vec<String>, features: &[String]) -> Option<Self> {
        let features = features
            .iter()
            .map(|f| columns.iter().position(|c| c == f))
            .collect::<Option<Vec<_>>>()?;
        Some(Self { columns, features })
    }

    /// The column names, in order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// How many features [`CsvReader::read`] appends per line.
    pub fn n_features(&self) -> usize {
        self.features.len()
    }
}

/// The features of `columns` as the JSON pointers they are in [`CsvLine::json`]'s `record`
/// member's terms: `/Quantity` for `Quantity` (RFC 6901 escapes applied), so the model's
/// feature names are matched to column names exactly as they are to JSON pointers.
pub fn as_pointers(columns: &[String]) -> Vec<String> {
    columns
        .iter()
        .map(|c| format!("/{}", c.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// A partition worker's reader of CSV lines: reuses its record buffer from line to line.
#[derive(Debug)]
pub struct CsvReader<'f> {
    format: &'f CsvFormat,
    /// The feature columns read: the format's, or none for a scorer that reads no features.
    features: &'f [usize],
    builder: csv::ReaderBuilder,
    record: StringRecord,
    /// Where a second record in one value would be read (there must be none).
    rest: StringRecord,
}

/// A line read by [`CsvReader::read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvLine {
    /// `{"line": "...", "record": {"<column>": "<cell>", ...}}`, the columns in order.
    pub json: String,
}

impl<'f> CsvReader<'f> {
    /// A reader of `format`'s lines; with `features` false, no feature is read (a rules
    /// scorer reads the cells itself).
    pub fn new(format: &'f CsvFormat, features: bool) -> Self {
        let mut builder = csv::ReaderBuilder::new();
        // Field counts are checked here, to name the expected and found counts.
        builder.has_headers(false).flexible(true);
        Self {
            format,
            features: if features { &format.features } else { &[] },
            builder,
            record: StringRecord::with_capacity(256, format.columns.len()),
            rest: StringRecord::new(),
        }
    }

    /// Reads `payload` as one CSV line, appends its features to `features` (exactly
    /// [`CsvFormat::n_features`] values, none when made without features, none on error), and
    /// returns the line as JSON.
    ///
    /// # Errors
    /// A [`Rejection`]: `not_utf8`, `not_csv`, `wrong_field_count`, `missing_feature`,
    /// `not_a_number` or `not_finite` (see the module header).
    pub fn read(
        &mut self,
        payload: Option<&[u8]>,
        features: &mut Vec<f64>,
    ) -> Result<CsvLine, Rejection> {
        let bytes = payload.ok_or_else(|| Rejection::NotCsv("the record has no value".into()))?;
        let bytes = bytes.strip_prefix(crate::record::BOM).unwrap_or(bytes);
        let line = std::str::from_utf8(bytes).map_err(|e| Rejection::NotUtf8(e.to_string()))?;
        let line = line
            .strip_suffix('\n')
            .map_or(line, |l| l.strip_suffix('\r').unwrap_or(l));
        if line.is_empty() {
            return Err(Rejection::NotCsv("the line is empty".into()));
        }
        let mut reader = self
            .builder
            .buffer_capacity(line.len().clamp(64, 8 * 1024))
            .from_reader(line.as_bytes());
        let not_csv = |e: csv::Error| Rejection::NotCsv(e.to_string());
        if !reader.read_record(&mut self.record).map_err(not_csv)? {
            return Err(Rejection::NotCsv("the line holds no record".into()));
        }
        if reader.read_record(&mut self.rest).map_err(not_csv)? {
            return Err(Rejection::NotCsv(
                "the value holds more than one CSV line (a line break outside quotes)".into(),
            ));
        }
        let expected = self.format.columns.len();
        if self.record.len() != expected {
            return Err(Rejection::WrongFieldCount {
                expected,
                found: self.record.len(),
            });
        }
        let start = features.len();
        for &i in self.features {
            match cell_number(&self.format.columns[i], &self.record[i]) {
                Ok(x) => features.push(x),
                Err(r) => {
                    features.truncate(start);
                    return Err(r);
                }
            }
        }
        Ok(CsvLine {
            json: self.json(line),
        })
    }

    /// The JSON view of the line just read into `self.record`.
    fn json(&self, line: &str) -> String {
        let mut out = String::with_capacity(2 * line.len() + 16 * self.record.len() + 32);
        out.push_str("{\"");
        out.push_str(LINE);
        out.push_str("\":");
        push_json_string(&mut out, line);
        out.push_str(",\"");
        out.push_str(RECORD);
        out.push_str("\":{");
        for (k, (column, cell)) in self.format.columns.iter().zip(&self.record).enumerate() {
            if k > 0 {
                out.push(',');
            }
            push_json_string(&mut out, column);
            out.push(':');
            push_json_string(&mut out, cell);
        }
        out.push_str("}}");
        out
    }
}

/// `text` as a JSON string literal, appended to `out`.
fn push_json_string(out: &mut String, text: &str) {
    // serde_json's escaping, written straight into the buffer; a `str` always serialises.
    let quoted = serde_json::to_string(text).expect("a string always serialises");
    let _ = write!(out, "{quoted}");
}

/// A feature cell as a finite `f64`, spaces and tabs around it ignored.
fn cell_number(column: &str, cell: &str) -> Result<f64, Rejection> {
    let text = cell.trim_matches([' ', '\t']);
    if text.is_empty() {
        return Err(Rejection::MissingFeature(format!(
            "column {column} (the cell is empty)"
        )));
    }
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        Ok(_) => Err(Rejection::NotFinite(format!(
            "column {column} ({})",
            quote(text)
        ))),
        Err(_) => Err(Rejection::NotANumber(format!(
            "column {column} ({})",
            quote(text)
        ))),
    }
}

/// `text` in double quotes, cut to [`MAX_QUOTED`] bytes at a character boundary (with `...`
/// when cut), for an error message.
fn quote(text: &str) -> String {
    if text.len() <= MAX_QUOTED {
        return format!("{text:?}");
    }
    let mut end = MAX_QUOTED;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const COLUMNS: [&str; 8] = [
        "InvoiceNo",
        "StockCode",
        "Description",
        "Quantity",
        "InvoiceDate",
        "UnitPrice",
        "CustomerID",
        "Country",
    ];

    fn format(features: &[&str]) -> CsvFormat {
        let features: Vec<String> = features.iter().map(|s| s.to_string()).collect();
        CsvFormat::new(COLUMNS.map(String::from).to_vec(), &features).unwrap()
    }

    fn read(f: &CsvFormat, line: &[u8]) -> Result<(Value, Vec<f64>), Rejection> {
        let mut reader = CsvReader::new(f, true);
        let mut out = vec![];
        let line = reader.read(Some(line), &mut out)?;
        Ok((serde_json::from_str(&line.json).unwrap(), out))
    }

    #[test]
    fn quoted_commas_and_doubled_quotes_are_one_field() {
        let f = format(&["Quantity", "UnitPrice"]);
        let line = r#"536365,85123A,"WHITE HANGING HEART T-LIGHT HOLDER, ""LARGE""",6,12/1/2010 8:26,2.55,17850,United Kingdom"#;
        let (v, x) = read(&f, line.as_bytes()).unwrap();
        assert_eq!(x, [6.0, 2.55]);
        assert_eq!(v["line"], line);
        assert_eq!(
            v["record"]["Description"],
            r#"WHITE HANGING HEART T-LIGHT HOLDER, "LARGE""#
        );
        assert_eq!(v["record"]["Country"], "United Kingdom");
        let keys: Vec<&String> = v["record"].as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 8);
    }

    #[test]
    fn a_quoted_line_break_is_kept_and_a_trailing_line_ending_dropped() {
        let f = format(&["Quantity"]);
        let (v, x) = read(&f, b"1,A,\"two\r\nlines\",3,d,1.0,,UK\r\n").unwrap();
        assert_eq!(x, [3.0]);
        assert_eq!(v["record"]["Description"], "two\r\nlines");
        assert_eq!(v["line"], "1,A,\"two\r\nlines\",3,d,1.0,,UK");
        let (v, _) = read(&f, b"1,A,d,3,d,1.0,,UK\n").unwrap();
        assert_eq!(v["line"], "1,A,d,3,d,1.0,,UK");
        assert_eq!(v["record"]["Country"], "UK");
    }

    #[test]
    fn empty_fields_are_empty_strings_but_an_empty_feature_is_missing() {
        let f = format(&["Quantity", "UnitPrice"]);
        let (v, _) = read(&f, b",,,6,,2.5,,").unwrap();
        assert_eq!(v["record"]["CustomerID"], "");
        assert_eq!(v["record"]["InvoiceNo"], "");
        let e = read(&f, b"1,A,d,6,d,,17850,UK").unwrap_err();
        assert_eq!(e.reason(), "missing_feature");
        assert!(e.to_string().contains("UnitPrice"), "{e}");
        let e = read(&f, b"1,A,d,\" \",d,1,17850,UK").unwrap_err();
        assert_eq!(e.reason(), "missing_feature");
    }

    #[test]
    fn a_wrong_field_count_says_expected_and_found() {
        let f = format(&["Quantity"]);
        let e = read(&f, b"1,A,d,6,d,1.0,UK").unwrap_err();
        assert_eq!(e.reason(), "wrong_field_count");
        assert_eq!(e.to_string(), "expected 8 fields, found 7");
        // An unquoted comma in the description: one field too many.
        let e = read(
            &f,
            b"536365,85123A,WHITE HEART, LARGE,6,12/1/2010 8:26,2.55,17850,United Kingdom",
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "expected 8 fields, found 9");
    }

    #[test]
    fn an_unparseable_number_names_its_column_and_quotes_the_cut_value() {
        let f = format(&["Quantity", "UnitPrice"]);
        let e = read(&f, b"1,A,d,six,d,1.0,17850,UK").unwrap_err();
        assert_eq!(e.reason(), "not_a_number");
        assert_eq!(
            e.to_string(),
            "feature column Quantity (\"six\") is not a number"
        );
        let long = format!("1,A,d,6,d,{},17850,UK", "9x".repeat(500));
        let e = read(&f, long.as_bytes()).unwrap_err();
        assert_eq!(e.reason(), "not_a_number");
        assert!(e.to_string().len() < 150, "{e}");
        assert!(e.to_string().contains("..."), "{e}");
        let e = read(&f, b"1,A,d,6,d,inf,17850,UK").unwrap_err();
        assert_eq!(e.reason(), "not_finite");
        // Spaces around a number are not part of it.
        let (_, x) = read(&f, b"1,A,d, 6 ,d,\t1e2,17850,UK").unwrap();
        assert_eq!(x, [6.0, 100.0]);
    }

    #[test]
    fn not_utf8_empty_and_two_lines_are_refused() {
        let f = format(&["Quantity"]);
        let e = read(&f, b"1,A,\xff\xfe,6,d,1.0,17850,UK").unwrap_err();
        assert_eq!(e.reason(), "not_utf8");
        for bad in [&b""[..], b"\n", b"\r\n"] {
            assert_eq!(read(&f, bad).unwrap_err().reason(), "not_csv");
        }
        let mut reader = CsvReader::new(&f, true);
        assert_eq!(
            reader.read(None, &mut vec![]).unwrap_err().reason(),
            "not_csv"
        );
        let e = read(&f, b"1,A,d,6,d,1.0,17850,UK\n2,A,d,6,d,1.0,17850,UK").unwrap_err();
        assert_eq!(e.reason(), "not_csv");
    }

    #[test]
    fn a_reader_is_reused_and_leaves_no_features_on_error() {
        let f = format(&["Quantity", "UnitPrice"]);
        let mut reader = CsvReader::new(&f, true);
        let mut rows = vec![];
        reader
            .read(Some(b"1,A,d,6,d,1.5,17850,UK"), &mut rows)
            .unwrap();
        assert!(
            reader
                .read(Some(b"1,A,d,6,d,x,17850,UK"), &mut rows)
                .is_err()
        );
        let line = reader.read(Some(b"2,B,e,7,d,2.5,1,FR"), &mut rows).unwrap();
        assert_eq!(rows, [6.0, 1.5, 7.0, 2.5]);
        let v: Value = serde_json::from_str(&line.json).unwrap();
        assert_eq!(v["record"]["InvoiceNo"], "2");
        assert_eq!(v["record"]["Country"], "FR");
    }

    #[test]
    fn every_line_read_gives_a_json_record_with_line_and_record() {
        // The worker relies on it: a line read is never lost to its JSON view.
        let f = CsvFormat::new(vec!["a".into(), "b".into()], &[]).unwrap();
        let mut reader = CsvReader::new(&f, false);
        let odd = [
            "\\,\"\u{0}\u{7f}\"",
            "\"\"\"\",\"a\nb\"",
            "\u{2028}\u{feff},\u{1F600}",
            "\"}\",\"{\\\"",
            " , ",
        ];
        for line in odd {
            let read = reader.read(Some(line.as_bytes()), &mut vec![]).unwrap();
            let record = crate::record::Record::parse(Some(read.json.as_bytes()))
                .unwrap_or_else(|e| panic!("{line:?}: {e}"));
            let keys: Vec<&str> = record.members().unwrap().iter().map(|m| &*m.key).collect();
            assert_eq!(keys, [LINE, RECORD], "{line:?}");
            let v: Value = serde_json::from_str(&read.json).unwrap();
            assert_eq!(v[LINE], line);
        }
    }

    #[test]
    fn the_json_view_escapes_names_and_cells() {
        let f = CsvFormat::new(vec!["a\"b".into(), "c/d".into()], &[]).unwrap();
        let (v, x) = read(&f, "\"x\"\"\\y\",é\u{1}".as_bytes()).unwrap();
        assert!(x.is_empty());
        assert_eq!(
            v,
            json!({"line": "\"x\"\"\\y\",é\u{1}", "record": {"a\"b": "x\"\\y", "c/d": "é\u{1}"}})
        );
        assert_eq!(
            as_pointers(&["a/b".into(), "m~n".into(), "Q".into()]),
            ["/a~1b", "/m~0n", "/Q"]
        );
        assert!(CsvFormat::new(vec!["a".into()], &["b".into()]).is_none());
    }
}
