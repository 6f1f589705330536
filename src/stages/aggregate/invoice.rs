//! Purchase lines of the UCI Online Retail data, and the invoice they are folded into.
//!
//! A purchase line is one CSV record (RFC 4180, no header) with the columns `InvoiceNo`,
//! `StockCode`, `Description`, `Quantity`, `InvoiceDate` (`M/D/YYYY H:MM`), `UnitPrice`,
//! `CustomerID` and `Country`, in that order unless [`Columns::from_names`] says otherwise.
//! [`parse_line`] refuses only a line that is not a purchase line at all ([`LineError`], with a
//! dead-letter reason); a line whose fields are empty, out of range or unparsable is kept and
//! carries its [`Problem`]s, which make its invoice invalid.
//!
//! An [`Invoice`] holds running totals only (count, sum, min and max of `UnitPrice`, sum of
//! `Quantity`, the first line's time, customer and country, and a count per problem), so it has
//! the same small size whatever its line count. [`Invoice::features`] is the one feature
//! function, used by the session-window stage and by `anomalyd train --format purchases`:
//! [`FEATURE_NAMES`], in raw units, after the original Spark job's `mean(UnitPrice)`,
//! `min(UnitPrice)`, `max(UnitPrice)`, `hour(InvoiceDate)` and `sum(Quantity)` per invoice, with
//! the hour read from the date (the original read it by position, wrong on days 1-9 of months
//! 1-9).
//!
//! Lines without a `"` are split on commas directly, which is what RFC 4180 gives for them;
//! lines with a quote go through the `csv` crate. Fields borrow from the line unless a quoted
//! field had to be unescaped, so the common line costs no allocation.

use std::borrow::Cow;
use std::fmt;

use serde::Serialize;
use thiserror::Error;

use crate::stages::time;

/// The features of an invoice, in the order of [`Invoice::features`] and of a model's feature
/// names; raw units (pounds, hour of day 0..=23, items).
pub const FEATURE_NAMES: [&str; 5] = [
    "mean_unit_price",
    "min_unit_price",
    "max_unit_price",
    "hour",
    "quantity_sum",
];

/// The Online Retail columns, in the data set's order.
pub use crate::config::stages::ONLINE_RETAIL_COLUMNS as COLUMN_NAMES;

/// Errors configuring the columns.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvoiceError {
    /// The list of column names is not the eight Online Retail columns, each once.
    #[error(
        "purchase line columns must be {} (each once, any order){}{}{}",
        COLUMN_NAMES.join(", "),
        list(" ; unknown: ", unknown),
        list(" ; missing: ", missing),
        list(" ; repeated: ", repeated)
    )]
    Columns {
        unknown: Vec<String>,
        missing: Vec<String>,
        repeated: Vec<String>,
    },
}

fn list(prefix: &str, names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!("{prefix}{}", names.join(", "))
    }
}

/// Where each column is in a line: zero-based field indexes, and how many fields a line has.
/// Built only by [`Columns::online_retail`] or [`Columns::from_names`], so every index is a
/// field of the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Columns {
    invoice_no: usize,
    stock_code: usize,
    description: usize,
    quantity: usize,
    invoice_date: usize,
    unit_price: usize,
    customer_id: usize,
    country: usize,
    /// Fields per line (8).
    count: usize,
}

impl Columns {
    /// The data set's order: [`COLUMN_NAMES`].
    pub const fn online_retail() -> Self {
        Self {
            invoice_no: 0,
            stock_code: 1,
            description: 2,
            quantity: 3,
            invoice_date: 4,
            unit_price: 5,
            customer_id: 6,
            country: 7,
            count: 8,
        }
    }

    /// Zero-based index of `InvoiceNo` (a record's key).
    pub fn invoice_no(&self) -> usize {
        self.invoice_no
    }

    /// Zero-based index of `InvoiceDate` (event time).
    pub fn invoice_date(&self) -> usize {
        self.invoice_date
    }

    /// The columns in the order `names` gives them (a header line, or a configured list).
    /// Names are matched exactly, after trimming spaces and a UTF-8 byte-order mark.
    ///
    /// # Errors
    /// [`InvoiceError::Columns`] naming every unknown, missing and repeated name.
    pub fn from_names(names: &[String]) -> Result<Self, InvoiceError> {
        let mut at = [None; 8];
        let (mut unknown, mut repeated) = (Vec::new(), Vec::new());
        for (i, name) in names.iter().enumerate() {
            let name = name.trim_start_matches('\u{feff}').trim();
            match COLUMN_NAMES.iter().position(|c| *c == name) {
                Some(c) if at[c].is_some() => repeated.push(name.to_owned()),
                Some(c) => at[c] = Some(i),
                None => unknown.push(name.to_owned()),
            }
        }
        let missing: Vec<String> = COLUMN_NAMES
            .iter()
            .zip(at)
            .filter(|(_, i)| i.is_none())
            .map(|(c, _)| (*c).to_owned())
            .collect();
        match at {
            [
                Some(invoice_no),
                Some(stock_code),
                Some(description),
                Some(quantity),
                Some(invoice_date),
                Some(unit_price),
                Some(customer_id),
                Some(country),
            ] if unknown.is_empty() && repeated.is_empty() => Ok(Self {
                invoice_no,
                stock_code,
                description,
                quantity,
                invoice_date,
                unit_price,
                customer_id,
                country,
                count: names.len(),
            }),
            _ => Err(InvoiceError::Columns {
                unknown,
                missing,
                repeated,
            }),
        }
    }
}

impl Default for Columns {
    fn default() -> Self {
        Self::online_retail()
    }
}

/// Why a line is not a purchase line at all (it goes to the dead letters with [`Self::reason`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LineError {
    #[error("the line is not UTF-8 (invalid byte at {valid_up_to})")]
    NotUtf8 { valid_up_to: usize },
    #[error("the line is not one CSV record: {detail}")]
    NotCsv { detail: String },
    #[error("the line has {found} fields, a purchase line has {expected}")]
    WrongFieldCount { found: usize, expected: usize },
    #[error("the line has no InvoiceNo")]
    NoInvoiceNo,
}

impl LineError {
    /// The dead-letter reason code: `not_utf8`, `not_csv`, `wrong_field_count` or
    /// `no_invoice_no`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotUtf8 { .. } => "not_utf8",
            Self::NotCsv { .. } => "not_csv",
            Self::WrongFieldCount { .. } => "wrong_field_count",
            Self::NoInvoiceNo => "no_invoice_no",
        }
    }
}

/// A field problem that makes a line, and so its invoice, invalid (issue 13's validity rules:
/// an empty StockCode, InvoiceDate, CustomerID or Country, Quantity <= 0, UnitPrice <= 0, or a
/// field that does not parse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Problem {
    EmptyStockCode,
    EmptyQuantity,
    QuantityNotANumber,
    QuantityNotPositive,
    EmptyInvoiceDate,
    InvoiceDateNotADate,
    EmptyUnitPrice,
    UnitPriceNotANumber,
    UnitPriceNotPositive,
    EmptyCustomerId,
    EmptyCountry,
}

impl Problem {
    /// Every problem, in the order of a line's columns.
    pub const ALL: [Problem; 11] = [
        Self::EmptyStockCode,
        Self::EmptyQuantity,
        Self::QuantityNotANumber,
        Self::QuantityNotPositive,
        Self::EmptyInvoiceDate,
        Self::InvoiceDateNotADate,
        Self::EmptyUnitPrice,
        Self::UnitPriceNotANumber,
        Self::UnitPriceNotPositive,
        Self::EmptyCustomerId,
        Self::EmptyCountry,
    ];

    /// The stable snake_case code written in `invalid_reasons` and metric labels.
    pub fn code(self) -> &'static str {
        match self {
            Self::EmptyStockCode => "empty_stock_code",
            Self::EmptyQuantity => "empty_quantity",
            Self::QuantityNotANumber => "quantity_not_a_number",
            Self::QuantityNotPositive => "quantity_not_positive",
            Self::EmptyInvoiceDate => "empty_invoice_date",
            Self::InvoiceDateNotADate => "invoice_date_not_a_date",
            Self::EmptyUnitPrice => "empty_unit_price",
            Self::UnitPriceNotANumber => "unit_price_not_a_number",
            Self::UnitPriceNotPositive => "unit_price_not_positive",
            Self::EmptyCustomerId => "empty_customer_id",
            Self::EmptyCountry => "empty_country",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The distinct problems of one line, a set of [`Problem`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Problems(u16);

impl Problems {
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, p: Problem) -> bool {
        self.0 & p.bit() != 0
    }

    /// The problems, in [`Problem::ALL`]'s order.
    pub fn iter(self) -> impl Iterator<Item = Problem> {
        Problem::ALL.into_iter().filter(move |p| self.contains(*p))
    }

    fn insert(&mut self, p: Problem) {
        self.0 |= p.bit();
    }
}

/// One purchase line, its text fields borrowed from the line where possible.
#[derive(Debug, Clone, PartialEq)]
pub struct PurchaseLine<'a> {
    invoice_no: Cow<'a, str>,
    customer_id: Cow<'a, str>,
    country: Cow<'a, str>,
    has_description: bool,
    quantity: Option<i64>,
    unit_price: Option<f64>,
    time_ms: Option<i64>,
    problems: Problems,
}

impl PurchaseLine<'_> {
    /// `InvoiceNo`, trimmed, never empty.
    pub fn invoice_no(&self) -> &str {
        &self.invoice_no
    }

    /// True for a cancellation: `InvoiceNo` starts with `C`.
    pub fn is_cancellation(&self) -> bool {
        self.invoice_no.starts_with('C')
    }

    /// Event time: `InvoiceDate` as UTC milliseconds since the epoch, `None` when empty or not
    /// a date.
    pub fn time_ms(&self) -> Option<i64> {
        self.time_ms
    }

    /// `CustomerID`, trimmed; empty when the line has none.
    pub fn customer_id(&self) -> &str {
        &self.customer_id
    }

    /// `Country`, trimmed; empty when the line has none.
    pub fn country(&self) -> &str {
        &self.country
    }

    /// True when `Description` is not blank.
    pub fn has_description(&self) -> bool {
        self.has_description
    }

    /// `Quantity` when it is a whole number (of any sign).
    pub fn quantity(&self) -> Option<i64> {
        self.quantity
    }

    /// `UnitPrice` when it is a finite number (of any sign).
    pub fn unit_price(&self) -> Option<f64> {
        self.unit_price
    }

    /// The line's validity problems; empty for a valid line.
    pub fn problems(&self) -> Problems {
        self.problems
    }

    /// The same line owning its text, to keep beyond the input buffer.
    pub fn into_owned(self) -> PurchaseLine<'static> {
        PurchaseLine {
            invoice_no: Cow::Owned(self.invoice_no.into_owned()),
            customer_id: Cow::Owned(self.customer_id.into_owned()),
            country: Cow::Owned(self.country.into_owned()),
            has_description: self.has_description,
            quantity: self.quantity,
            unit_price: self.unit_price,
            time_ms: self.time_ms,
            problems: self.problems,
        }
    }
}

/// Reads one purchase line: a CSV record without a header, with or without a final LF or CRLF,
/// a leading UTF-8 byte-order mark ignored.
///
/// # Errors
/// [`LineError`] only when the line cannot be a purchase line: not UTF-8, not exactly one CSV
/// record, not `columns.count` fields, or an empty `InvoiceNo`. Every other field problem is a
/// [`Problem`] on the returned line.
pub fn parse_line<'a>(line: &'a [u8], columns: &Columns) -> Result<PurchaseLine<'a>, LineError> {
    let line = line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line);
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line).map_err(|e| LineError::NotUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    if text.contains(['\n', '\r']) && !text.contains('"') {
        return Err(LineError::NotCsv {
            detail: "a line break inside the line".into(),
        });
    }
    if !text.contains('"') {
        let mut fields = [""; 8];
        let mut found = 0;
        for field in text.split(',') {
            if let Some(slot) = fields.get_mut(found) {
                *slot = field;
            }
            found += 1;
        }
        if found != columns.count {
            return Err(LineError::WrongFieldCount {
                found,
                expected: columns.count,
            });
        }
        return from_fields(|i| Cow::Borrowed(fields[i]), columns);
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(line.len().max(64))
        .from_reader(line);
    let mut record = csv::StringRecord::new();
    let not_csv = |e: csv::Error| LineError::NotCsv {
        detail: e.to_string(),
    };
    if !reader.read_record(&mut record).map_err(not_csv)? {
        return Err(LineError::WrongFieldCount {
            found: 0,
            expected: columns.count,
        });
    }
    let mut rest = csv::StringRecord::new();
    if reader.read_record(&mut rest).map_err(not_csv)? {
        return Err(LineError::NotCsv {
            detail: "more than one record".into(),
        });
    }
    if record.len() != columns.count {
        return Err(LineError::WrongFieldCount {
            found: record.len(),
            expected: columns.count,
        });
    }
    // Fields that were not quoted are copied from the line itself, so they can borrow.
    from_fields(
        |i| {
            let field = &record[i];
            match text.find(field) {
                Some(at) if !field.is_empty() => Cow::Borrowed(&text[at..at + field.len()]),
                _ => Cow::Owned(field.to_owned()),
            }
        },
        columns,
    )
}

/// True when `text` is not blank; otherwise records `p`.
fn nonblank(text: &str, p: Problem, problems: &mut Problems) -> bool {
    let blank = text.trim().is_empty();
    if blank {
        problems.insert(p);
    }
    !blank
}

fn from_fields<'a>(
    field: impl Fn(usize) -> Cow<'a, str>,
    columns: &Columns,
) -> Result<PurchaseLine<'a>, LineError> {
    let trimmed = |c: Cow<'a, str>| match c {
        Cow::Borrowed(s) => Cow::Borrowed(s.trim()),
        Cow::Owned(s) if s.trim().len() == s.len() => Cow::Owned(s),
        Cow::Owned(s) => Cow::Owned(s.trim().to_owned()),
    };
    let invoice_no = trimmed(field(columns.invoice_no));
    if invoice_no.is_empty() {
        return Err(LineError::NoInvoiceNo);
    }
    let mut problems = Problems::default();
    nonblank(
        &field(columns.stock_code),
        Problem::EmptyStockCode,
        &mut problems,
    );
    let has_description = !field(columns.description).trim().is_empty();
    let customer_id = trimmed(field(columns.customer_id));
    nonblank(&customer_id, Problem::EmptyCustomerId, &mut problems);
    let country = trimmed(field(columns.country));
    nonblank(&country, Problem::EmptyCountry, &mut problems);

    let text = field(columns.quantity);
    let quantity = if nonblank(&text, Problem::EmptyQuantity, &mut problems) {
        match text.trim().parse::<i64>() {
            Ok(q) => Some(q),
            Err(_) => {
                problems.insert(Problem::QuantityNotANumber);
                None
            }
        }
    } else {
        None
    };
    if quantity.is_some_and(|q| q <= 0) {
        problems.insert(Problem::QuantityNotPositive);
    }

    let text = field(columns.unit_price);
    let unit_price = if nonblank(&text, Problem::EmptyUnitPrice, &mut problems) {
        match text.trim().parse::<f64>() {
            Ok(p) if p.is_finite() => Some(p),
            _ => {
                problems.insert(Problem::UnitPriceNotANumber);
                None
            }
        }
    } else {
        None
    };
    // `-0` and `0.00` are not positive either.
    if unit_price.is_some_and(|p| p <= 0.0) {
        problems.insert(Problem::UnitPriceNotPositive);
    }

    let text = field(columns.invoice_date);
    let time_ms = if nonblank(&text, Problem::EmptyInvoiceDate, &mut problems) {
        match time::parse_month_day_year(&text) {
            Ok(t) => Some(t),
            Err(_) => {
                problems.insert(Problem::InvoiceDateNotADate);
                None
            }
        }
    } else {
        None
    };
    Ok(PurchaseLine {
        invoice_no,
        customer_id,
        country,
        has_description,
        quantity,
        unit_price,
        time_ms,
        problems,
    })
}

/// One invoice: its purchase lines folded into running totals, in arrival order.
///
/// Memory is constant per invoice: three strings from the first line and at most
/// [`Problem::ALL`]`.len()` problem counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Invoice {
    invoice_no: String,
    customer: String,
    country: String,
    first_time_ms: Option<i64>,
    first_has_description: bool,
    lines: u64,
    /// Lines whose UnitPrice parsed, and their sum, min and max.
    prices: u64,
    price_sum: f64,
    price_min: f64,
    price_max: f64,
    /// Lines whose Quantity parsed, and their sum.
    quantities: u64,
    quantity_sum: i128,
    /// Distinct problems in first-seen order, each with the number of lines that had it.
    problems: Vec<(Problem, u64)>,
    /// 1-based position (in arrival order) of the first line with a problem.
    first_problem_line: Option<u64>,
}

impl Invoice {
    /// An invoice whose first line is `first`.
    pub fn new(first: &PurchaseLine) -> Self {
        let mut invoice = Self {
            invoice_no: first.invoice_no.to_string(),
            customer: first.customer_id.to_string(),
            country: first.country.to_string(),
            first_time_ms: first.time_ms,
            first_has_description: first.has_description,
            lines: 0,
            prices: 0,
            price_sum: 0.0,
            price_min: f64::INFINITY,
            price_max: f64::NEG_INFINITY,
            quantities: 0,
            quantity_sum: 0,
            problems: Vec::new(),
            first_problem_line: None,
        };
        invoice.add(first);
        invoice
    }

    /// Folds in one more line of this invoice (the caller groups lines by `InvoiceNo`; `add`
    /// does not compare it). A line repeated verbatim counts each time, as in the data.
    pub fn add(&mut self, line: &PurchaseLine) {
        self.lines += 1;
        if let Some(p) = line.unit_price {
            self.prices += 1;
            self.price_sum += p;
            self.price_min = self.price_min.min(p);
            self.price_max = self.price_max.max(p);
        }
        if let Some(q) = line.quantity {
            self.quantities += 1;
            self.quantity_sum += i128::from(q);
        }
        if !line.problems.is_empty() {
            self.first_problem_line.get_or_insert(self.lines);
            for p in line.problems.iter() {
                match self.problems.iter_mut().find(|(seen, _)| *seen == p) {
                    Some((_, n)) => *n += 1,
                    None => self.problems.push((p, 1)),
                }
            }
        }
    }

    /// `InvoiceNo`.
    pub fn invoice_no(&self) -> &str {
        &self.invoice_no
    }

    /// True for a cancellation (`InvoiceNo` starts with `C`).
    pub fn is_cancellation(&self) -> bool {
        self.invoice_no.starts_with('C')
    }

    /// The first line's `CustomerID`, empty when it had none.
    pub fn customer(&self) -> &str {
        &self.customer
    }

    /// The first line's `Country`.
    pub fn country(&self) -> &str {
        &self.country
    }

    /// The first line's `InvoiceDate` in UTC milliseconds, `None` when it was not a date.
    pub fn first_time_ms(&self) -> Option<i64> {
        self.first_time_ms
    }

    /// True when the first line had a non-blank `Description` (a training filter).
    pub fn first_has_description(&self) -> bool {
        self.first_has_description
    }

    /// Lines folded in, repeats included.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// True when no line had a problem.
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }

    /// Every distinct problem in first-seen order, with the number of lines that had it.
    pub fn problems(&self) -> &[(Problem, u64)] {
        &self.problems
    }

    /// 1-based position of the first line that had a problem, `None` for a valid invoice.
    pub fn first_problem_line(&self) -> Option<u64> {
        self.first_problem_line
    }

    /// Each of [`FEATURE_NAMES`], `None` where it cannot be computed: the prices when a line's
    /// UnitPrice did not parse, the hour when the first line's InvoiceDate did not, the
    /// quantity sum when a line's Quantity did not.
    pub fn feature_values(&self) -> [Option<f64>; 5] {
        let prices_ok = self.prices == self.lines && self.prices > 0;
        let price = |v: f64| prices_ok.then_some(v);
        [
            price(self.price_sum / self.prices as f64),
            price(self.price_min),
            price(self.price_max),
            self.first_time_ms.map(|t| f64::from(time::hour_of_day(t))),
            (self.quantities == self.lines).then_some(self.quantity_sum as f64),
        ]
    }

    /// The features a model scores, in [`FEATURE_NAMES`]' order: mean UnitPrice (unweighted
    /// over the lines), min UnitPrice, max UnitPrice, hour of day (0..=23) of the first line's
    /// InvoiceDate, sum of Quantity. `None` when any of them cannot be computed
    /// ([`Self::feature_values`]).
    pub fn features(&self) -> Option<[f64; 5]> {
        let v = self.feature_values();
        Some([v[0]?, v[1]?, v[2]?, v[3]?, v[4]?])
    }

    /// The JSON an invoice is emitted as.
    pub fn record(&self) -> InvoiceRecord {
        let [
            mean_unit_price,
            min_unit_price,
            max_unit_price,
            hour,
            quantity_sum,
        ] = self.feature_values();
        InvoiceRecord {
            invoice: self.invoice_no.clone(),
            customer: (!self.customer.is_empty()).then(|| self.customer.clone()),
            country: self.country.clone(),
            first_line_time: self.first_time_ms.and_then(time::rfc3339),
            lines: self.lines,
            features: InvoiceFeatures {
                mean_unit_price,
                min_unit_price,
                max_unit_price,
                hour,
                quantity_sum,
            },
            valid: self.is_valid(),
            invalid_reasons: self
                .problems
                .iter()
                .map(|&(p, lines)| InvalidReason {
                    reason: p.code(),
                    lines,
                })
                .collect(),
        }
    }
}

/// An invoice as emitted to `invoices` (valid) or `invalid_invoices`, e.g.
/// `{"invoice":"560544","customer":"12569","country":"Germany",
/// "first_line_time":"2011-07-19T12:37:00Z","lines":3,"features":{"mean_unit_price":3.1,
/// "min_unit_price":1.25,"max_unit_price":5.95,"hour":12.0,"quantity_sum":19.0},"valid":true,
/// "invalid_reasons":[]}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InvoiceRecord {
    /// `InvoiceNo`.
    pub invoice: String,
    /// The first line's `CustomerID`; `null` when empty.
    pub customer: Option<String>,
    /// The first line's `Country`.
    pub country: String,
    /// The first line's `InvoiceDate`, RFC 3339 UTC; `null` when it was not a date.
    pub first_line_time: Option<String>,
    /// Lines folded in, repeats included.
    pub lines: u64,
    pub features: InvoiceFeatures,
    /// True when no line had a problem.
    pub valid: bool,
    /// Every distinct problem, first-seen order; empty when valid.
    pub invalid_reasons: Vec<InvalidReason>,
}

/// [`FEATURE_NAMES`] as JSON keys; `null` where not computable.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct InvoiceFeatures {
    pub mean_unit_price: Option<f64>,
    pub min_unit_price: Option<f64>,
    pub max_unit_price: Option<f64>,
    pub hour: Option<f64>,
    pub quantity_sum: Option<f64>,
}

/// One problem of an invalid invoice and how many of its lines had it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct InvalidReason {
    /// [`Problem::code`].
    pub reason: &'static str,
    pub lines: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(text: &str) -> PurchaseLine<'_> {
        parse_line(text.as_bytes(), &Columns::online_retail()).unwrap()
    }

    fn codes(line: &PurchaseLine) -> Vec<&'static str> {
        line.problems().iter().map(Problem::code).collect()
    }

    fn invoice(lines: &[&str]) -> Invoice {
        let mut parsed = lines.iter().map(|l| line(l));
        let mut inv = Invoice::new(&parsed.next().unwrap());
        for l in parsed {
            inv.add(&l);
        }
        inv
    }

    const A: &str = "560544,21042,RED RETROSPOT APRON ,3,7/19/2011 12:37,5.95,12569,Germany";
    const B: &str =
        "560544,20754,RETROSPOT RED WASHING UP GLOVES,6,7/19/2011 12:37,2.1,12569,Germany";
    const C: &str = "560544,21154,RED RETROSPOT OVEN GLOVE ,10,7/19/2011 12:38,1.25,12569,Germany";

    #[test]
    fn a_valid_invoice_has_its_features_and_json() {
        let inv = invoice(&[A, B, C]);
        assert!(inv.is_valid());
        assert_eq!(inv.lines(), 3);
        let f = inv.features().unwrap();
        assert!((f[0] - (5.95 + 2.1 + 1.25) / 3.0).abs() < 1e-12);
        assert_eq!(f[1..], [1.25, 5.95, 12.0, 19.0]);
        let json = serde_json::to_value(inv.record()).unwrap();
        assert_eq!(
            json,
            json!({
                "invoice": "560544", "customer": "12569", "country": "Germany",
                "first_line_time": "2011-07-19T12:37:00Z", "lines": 3,
                "features": {"mean_unit_price": f[0], "min_unit_price": 1.25,
                    "max_unit_price": 5.95, "hour": 12.0, "quantity_sum": 19.0},
                "valid": true, "invalid_reasons": []
            })
        );
        let keys: Vec<String> = json["features"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let mut names = FEATURE_NAMES.map(String::from).to_vec();
        names.sort();
        let mut keys = keys;
        keys.sort();
        assert_eq!(keys, names);
    }

    #[test]
    fn quoted_commas_and_quotes_in_the_description() {
        let l = line(
            "536520,21533,\"RETROSPOT LARGE MILK JUG, \"\"STRIPES\"\"\",3,12/1/2010 12:43,4.95,14729,United Kingdom",
        );
        assert!(l.problems().is_empty(), "{:?}", codes(&l));
        assert_eq!(l.quantity(), Some(3));
        assert_eq!(l.unit_price(), Some(4.95));
        assert_eq!(l.customer_id(), "14729");
        assert_eq!(l.country(), "United Kingdom");
        assert!(matches!(l.invoice_no, Cow::Borrowed("536520")));
        // A quoted InvoiceNo with a comma is unescaped (owned), not borrowed.
        let l = line("\"5,1\",1,d,1,1/1/2011 8:00,1,1,UK");
        assert_eq!(l.invoice_no(), "5,1");
        let l = line(
            "\"536520\",21533,\"a \"\"b\"\"\",3,12/1/2010 12:43,4.95,14729,\"United Kingdom\"",
        );
        assert_eq!((l.invoice_no(), l.country()), ("536520", "United Kingdom"));
    }

    #[test]
    fn field_problems_are_kept_on_the_line_with_codes() {
        let l = line("536414,22139,,56,12/1/2010 11:52,0,,United Kingdom");
        assert_eq!(codes(&l), ["unit_price_not_positive", "empty_customer_id"]);
        assert!(!l.has_description());
        let l = line("C536379,D,Discount,-1,12/1/2010 9:41,27.5,14527,United Kingdom");
        assert!(l.is_cancellation());
        assert_eq!(codes(&l), ["quantity_not_positive"]);
    }

    #[test]
    fn every_problem_has_its_code() {
        let l = line("1, ,d,x,1/32/2011 8:00,abc,,");
        assert_eq!(
            codes(&l),
            [
                "empty_stock_code",
                "quantity_not_a_number",
                "invoice_date_not_a_date",
                "unit_price_not_a_number",
                "empty_customer_id",
                "empty_country"
            ]
        );
        let l = line("1,s,d,,,,c,UK");
        assert_eq!(
            codes(&l),
            ["empty_quantity", "empty_invoice_date", "empty_unit_price"]
        );
        let l = line("1,s,d,1.5,1/1/2011 8:00,NaN,c,UK");
        assert_eq!(
            codes(&l),
            ["quantity_not_a_number", "unit_price_not_a_number"]
        );
        let l = line("1,s,d,0,1/1/2011 8:00,-0,c,UK");
        assert_eq!(
            codes(&l),
            ["quantity_not_positive", "unit_price_not_positive"]
        );
        let all: Vec<&str> = Problem::ALL.iter().map(|p| p.code()).collect();
        let mut distinct = all.clone();
        distinct.dedup();
        assert_eq!(all.len(), distinct.len());
    }

    #[test]
    fn an_invalid_invoice_lists_every_reason_with_line_counts() {
        let inv = invoice(&[
            "536414,22139,,56,12/1/2010 11:52,0,,United Kingdom",
            "536414,22140,x,-2,12/1/2010 11:52,1.5,,United Kingdom",
            "536414,22141,y,2,12/1/2010 11:52,1.5,,United Kingdom",
        ]);
        assert!(!inv.is_valid());
        assert_eq!(inv.first_problem_line(), Some(1));
        let r = inv.record();
        assert_eq!(r.customer, None);
        assert!(!r.valid);
        assert_eq!(
            serde_json::to_value(&r.invalid_reasons).unwrap(),
            json!([
                {"reason": "unit_price_not_positive", "lines": 1},
                {"reason": "empty_customer_id", "lines": 3},
                {"reason": "quantity_not_positive", "lines": 1}
            ])
        );
        // Features are computed for invalid invoices too (the numbers parsed).
        assert_eq!(inv.features().unwrap()[1..], [0.0, 1.5, 11.0, 56.0]);
        let later = invoice(&[A, "560544,21042,x,3,7/19/2011 12:37,5.95,,Germany"]);
        assert_eq!(later.first_problem_line(), Some(2));
    }

    #[test]
    fn adjust_bad_debt_invoices_are_invalid() {
        let l = line("A563185,B,Adjust bad debt,1,8/12/2011 14:50,11062.06,,United Kingdom");
        assert!(!l.is_cancellation());
        assert_eq!(codes(&l), ["empty_customer_id"]);
        let inv =
            invoice(&["A563187,B,Adjust bad debt,1,8/12/2011 14:52,-11062.06,,United Kingdom"]);
        let r = inv.record();
        assert_eq!(r.invoice, "A563187");
        assert_eq!(
            r.invalid_reasons,
            [
                InvalidReason {
                    reason: "unit_price_not_positive",
                    lines: 1
                },
                InvalidReason {
                    reason: "empty_customer_id",
                    lines: 1
                }
            ]
        );
        assert_eq!(r.features.min_unit_price, Some(-11062.06));
    }

    #[test]
    fn the_hour_is_read_from_the_date_on_every_day_and_month() {
        let hour = |date: &str| {
            let text = format!("1,s,d,1,{date},1,c,UK");
            let inv = invoice(&[text.as_str()]);
            inv.features().unwrap()[3]
        };
        for m in 1..=12 {
            for d in 1..=9 {
                assert_eq!(hour(&format!("{m}/{d}/2011 9:05")), 9.0, "{m}/{d}");
                assert_eq!(hour(&format!("{m}/{d}/2011 0:00")), 0.0, "{m}/{d}");
                assert_eq!(hour(&format!("{m}/{d}/2011 23:59")), 23.0, "{m}/{d}");
            }
        }
        assert_eq!(hour("1/4/2011 9:05"), 9.0);
        assert_eq!(hour("12/19/2011 10:05"), 10.0);
        // The first line's hour, whatever later lines say.
        let inv = invoice(&[
            "1,s,d,1,1/1/2011 8:59,1,c,UK",
            "1,s,d,1,1/1/2011 9:00,1,c,UK",
        ]);
        assert_eq!(inv.features().unwrap()[3], 8.0);
    }

    #[test]
    fn repeated_lines_count_each_time() {
        let inv = invoice(&[A, A, A, B]);
        assert_eq!(inv.lines(), 4);
        let f = inv.features().unwrap();
        assert!((f[0] - (3.0 * 5.95 + 2.1) / 4.0).abs() < 1e-12);
        assert_eq!(f[4], 15.0);
    }

    #[test]
    fn features_that_cannot_be_computed_are_none_and_null() {
        let inv = invoice(&[A, "560544,21042,x,y,z,p,12569,Germany"]);
        assert_eq!(inv.features(), None);
        let v = inv.feature_values();
        assert_eq!(v, [None, None, None, Some(12.0), None]);
        let json = serde_json::to_value(inv.record()).unwrap();
        assert_eq!(json["features"]["mean_unit_price"], json!(null));
        assert_eq!(json["features"]["hour"], json!(12.0));
        let inv = invoice(&["1,s,d,1,soon,1,c,UK"]);
        assert_eq!(inv.features(), None);
        assert_eq!(inv.record().first_line_time, None);
    }

    #[test]
    fn unusable_lines_are_errors_with_reasons() {
        let cols = Columns::online_retail();
        let reason = |bytes: &[u8]| parse_line(bytes, &cols).unwrap_err().reason();
        assert_eq!(reason(b"1,s,d,1,1/1/2011 8:00,1,c"), "wrong_field_count");
        assert_eq!(
            reason(b"1,s,d,1,1/1/2011 8:00,1,c,UK,extra"),
            "wrong_field_count"
        );
        assert_eq!(
            reason(b"1,s,\"d,1,1/1/2011 8:00,1,c,UK"),
            "wrong_field_count"
        );
        assert_eq!(reason(b""), "wrong_field_count");
        assert_eq!(reason(b"1,s,\xff,1,1/1/2011 8:00,1,c,UK"), "not_utf8");
        assert_eq!(reason(b" ,s,d,1,1/1/2011 8:00,1,c,UK"), "no_invoice_no");
        assert_eq!(
            reason(b"1,s,d,1,1/1/2011 8:00,1,c,UK\n2,s,d,1,1/1/2011 8:00,1,c,UK"),
            "not_csv"
        );
        assert_eq!(
            reason(b"1,s,\"d\",1,1/1/2011 8:00,1,c,UK\n2,s,d,1,1/1/2011 8:00,1,c,UK"),
            "not_csv"
        );
        let e = parse_line(b"1,2", &cols).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the line has 2 fields, a purchase line has 8"
        );
        let e = parse_line(b"1,s,\xff", &cols).unwrap_err();
        assert!(e.to_string().contains("not UTF-8"), "{e}");
    }

    #[test]
    fn bom_lf_and_crlf_are_tolerated() {
        let cols = Columns::online_retail();
        let plain = parse_line(A.as_bytes(), &cols).unwrap();
        for framed in [
            format!("\u{feff}{A}"),
            format!("{A}\n"),
            format!("{A}\r\n"),
            format!("\u{feff}{A}\r\n"),
        ] {
            assert_eq!(parse_line(framed.as_bytes(), &cols).unwrap(), plain);
        }
        let quoted = "1,s,\"a, b\",1,1/1/2011 8:00,1,c,UK";
        let plain = parse_line(quoted.as_bytes(), &cols).unwrap();
        let framed = format!("\u{feff}{quoted}\r\n");
        assert_eq!(parse_line(framed.as_bytes(), &cols).unwrap(), plain);
        assert_eq!(plain.country(), "UK");
    }

    #[test]
    fn columns_follow_the_names_given() {
        let names = |s: &str| s.split(',').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            Columns::from_names(&names(&COLUMN_NAMES.join(","))).unwrap(),
            Columns::online_retail()
        );
        let cols = Columns::from_names(&names(
            "Country,CustomerID,UnitPrice,InvoiceDate,Quantity,Description,StockCode,InvoiceNo",
        ))
        .unwrap();
        assert_eq!((cols.invoice_no(), cols.invoice_date()), (7, 3));
        let l = parse_line(b"UK,c,2.5,1/1/2011 8:00,4,d,s,77", &cols).unwrap();
        assert_eq!(
            (l.invoice_no(), l.country(), l.customer_id()),
            ("77", "UK", "c")
        );
        assert_eq!((l.quantity(), l.unit_price()), (Some(4), Some(2.5)));
        let e = Columns::from_names(&names("InvoiceNo,StockCode,Descr,Quantity,InvoiceNo"))
            .unwrap_err();
        let text = e.to_string();
        for says in [
            "unknown: Descr",
            "missing: Description, InvoiceDate, UnitPrice, CustomerID, Country",
            "repeated: InvoiceNo",
        ] {
            assert!(text.contains(says), "{says}: {text}");
        }
    }

    #[test]
    fn the_plain_split_agrees_with_the_csv_crate() {
        // Every line of the stream slice, read both ways.
        let data = include_str!("../../../tests/data/retail/stream_slice.csv");
        let cols = Columns::online_retail();
        let mut quoted = 0;
        for text in data.lines() {
            let fast = parse_line(text.as_bytes(), &cols);
            let mut r = csv::ReaderBuilder::new()
                .has_headers(false)
                .from_reader(text.as_bytes());
            let rec = r.records().next().unwrap().unwrap();
            quoted += usize::from(text.contains('"'));
            let fields: Vec<String> = rec
                .iter()
                .map(|f| format!("\"{}\"", f.replace('"', "\"\"")))
                .collect();
            let requoted = fields.join(",");
            let slow = parse_line(requoted.as_bytes(), &cols);
            assert_eq!(fast, slow, "{text}");
        }
        assert!(quoted > 0, "the slice has quoted descriptions");
    }
}
