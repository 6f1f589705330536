//! `anomalyd train --format purchases`: a file of purchase lines (the Online Retail CSV) read
//! into one row of invoice features per invoice, with the stream's own code
//! ([`crate::stages::aggregate::invoice`]), so a model is trained on the features it will score.
//!
//! Invoices are formed over the whole file, by `InvoiceNo` (not by an inactivity gap: a file
//! has no arrival times), in order of first appearance. Left out, as the original Spark job's
//! training did, and counted, each invoice under the first that applies: cancellations
//! (`InvoiceNo` starting with `C`), invoices whose first line has no `CustomerID`, or no
//! `Description`; and invoices whose features cannot be computed (a price, quantity or first
//! date that does not parse). Invalid invoices are otherwise kept, as the original kept them.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::stages::aggregate::invoice::{self, Columns, Invoice, InvoiceError, parse_line};

/// Errors reading a purchases file; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum PurchasesError {
    #[error("{}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("{}, line 1 (header): {error}", path.display())]
    Header { path: PathBuf, error: InvoiceError },
    #[error("{}: no invoice left to train on ({counts})", path.display())]
    NoInvoices {
        path: PathBuf,
        counts: PurchaseCounts,
    },
}

impl PurchasesError {
    /// True when the file could not be found.
    pub fn is_missing(&self) -> bool {
        matches!(self, Self::Open { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// What reading a purchases file found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurchaseCounts {
    /// The file began with a header line (first cell `InvoiceNo`).
    pub header: bool,
    /// Lines read, the header excepted.
    pub lines: u64,
    /// Lines that are not purchase lines, by dead-letter reason, in first-seen order.
    pub unusable: Vec<(&'static str, u64)>,
    /// Invoices formed from the usable lines.
    pub invoices: u64,
    pub cancellations: u64,
    /// Not cancellations, first line without a CustomerID.
    pub no_customer: u64,
    /// Neither of the above, first line without a Description.
    pub no_description: u64,
    /// None of the above, features not computable.
    pub no_features: u64,
    /// Invoices kept: one training row each.
    pub trained: u64,
}

impl fmt::Display for PurchaseCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "purchase lines {}{}",
            self.lines,
            if self.header { " after a header" } else { "" }
        )?;
        if !self.unusable.is_empty() {
            let unusable: Vec<String> = self
                .unusable
                .iter()
                .map(|(reason, n)| format!("{n} {reason}"))
                .collect();
            write!(f, " (unusable: {})", unusable.join(", "))?;
        }
        write!(
            f,
            ", invoices {}; left out {} cancellations, {} without CustomerID, {} without \
             Description, {} without features; trained on {}",
            self.invoices,
            self.cancellations,
            self.no_customer,
            self.no_description,
            self.no_features,
            self.trained
        )
    }
}

/// The training rows of a purchases file.
#[derive(Debug, Clone, PartialEq)]
pub struct PurchaseSet {
    /// Row-major, [`invoice::FEATURE_NAMES`] per row, invoices in order of first appearance.
    pub values: Vec<f64>,
    pub counts: PurchaseCounts,
}

/// Reads `path`: purchase lines, with or without a header line (a first line whose first cell
/// is a column name, such as `InvoiceNo`). A header gives the column order
/// ([`Columns::from_names`]); without one the data set's order is assumed.
///
/// # Errors
/// The file cannot be read, its header is not the eight columns, or no invoice is left.
pub fn read(path: &Path) -> Result<PurchaseSet, PurchasesError> {
    let bytes = std::fs::read(path).map_err(|source| PurchasesError::Open {
        path: path.into(),
        source,
    })?;
    let mut lines = bytes.split(|&b| b == b'\n').peekable();
    let mut counts = PurchaseCounts::default();
    let mut columns = Columns::online_retail();
    if let Some(first) = lines.peek() {
        let first = first.strip_prefix(b"\xef\xbb\xbf").unwrap_or(first);
        let names: Vec<String> = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(first)
            .records()
            .next()
            .and_then(Result::ok)
            .map(|r| r.iter().map(|c| c.trim().to_owned()).collect())
            .unwrap_or_default();
        // A data line's first cell is an InvoiceNo, never a column name.
        if names
            .first()
            .is_some_and(|c| invoice::COLUMN_NAMES.contains(&c.as_str()))
        {
            columns = Columns::from_names(&names).map_err(|error| PurchasesError::Header {
                path: path.into(),
                error,
            })?;
            counts.header = true;
            lines.next();
        }
    }

    let mut index: HashMap<String, usize> = HashMap::new();
    let mut invoices: Vec<Invoice> = Vec::new();
    while let Some(line) = lines.next() {
        // The empty piece after a final line break is not a line.
        if line.is_empty() && lines.peek().is_none() {
            break;
        }
        counts.lines += 1;
        match parse_line(line, &columns) {
            Ok(l) => match index.get(l.invoice_no()) {
                Some(&i) => invoices[i].add(&l),
                None => {
                    index.insert(l.invoice_no().to_owned(), invoices.len());
                    invoices.push(Invoice::new(&l));
                }
            },
            Err(e) => match counts.unusable.iter_mut().find(|(r, _)| *r == e.reason()) {
                Some((_, n)) => *n += 1,
                None => counts.unusable.push((e.reason(), 1)),
            },
        }
    }

    counts.invoices = invoices.len() as u64;
    let mut values = Vec::with_capacity(invoices.len() * invoice::FEATURE_NAMES.len());
    for inv in &invoices {
        if inv.is_cancellation() {
            counts.cancellations += 1;
        } else if inv.customer().is_empty() {
            counts.no_customer += 1;
        } else if !inv.first_has_description() {
            counts.no_description += 1;
        } else if let Some(features) = inv.features() {
            values.extend_from_slice(&features);
            counts.trained += 1;
        } else {
            counts.no_features += 1;
        }
    }
    if counts.trained == 0 {
        return Err(PurchasesError::NoInvoices {
            path: path.into(),
            counts,
        });
    }
    Ok(PurchaseSet { values, counts })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("p.csv");
        std::fs::write(&path, text).unwrap();
        path
    }

    const LINES: &str = "\
1,s,d,2,1/1/2011 8:00,1.5,c1,UK
2,s,d,1,1/1/2011 9:00,4,c2,UK
C3,s,d,-1,1/1/2011 9:00,4,c2,UK
1,s,d,3,1/1/2011 8:01,0.5,c1,UK
4,s,d,1,1/1/2011 9:00,4,,UK
5,s,,1,1/1/2011 9:00,4,c5,UK
6,s,d,x,1/1/2011 9:00,4,c6,UK
7,s,d,1,1/1/2011 10:00,0,c7,UK
not a line
1,s,d
";

    #[test]
    fn invoices_over_the_whole_file_with_each_exclusion_counted() {
        let dir = tempfile::tempdir().unwrap();
        let set = read(&file(dir.path(), LINES)).unwrap();
        assert_eq!(
            set.counts,
            PurchaseCounts {
                header: false,
                lines: 10,
                unusable: vec![("wrong_field_count", 2)],
                invoices: 7,
                cancellations: 1,
                no_customer: 1,
                no_description: 1,
                no_features: 1,
                trained: 3,
            }
        );
        // Invoice 1 joins its two lines although invoice 2 came between; invalid 7 is kept.
        assert_eq!(
            set.values,
            [
                1.0, 0.5, 1.5, 8.0, 5.0, //
                4.0, 4.0, 4.0, 9.0, 1.0, //
                0.0, 0.0, 0.0, 10.0, 1.0
            ]
        );
        let text = set.counts.to_string();
        assert!(text.contains("(unusable: 2 wrong_field_count)"), "{text}");
        assert!(text.contains("trained on 3"), "{text}");
    }

    #[test]
    fn a_header_gives_the_column_order() {
        let dir = tempfile::tempdir().unwrap();
        let text = "\u{feff}Country,InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID\r\n\
                    UK,1,s,d,2,1/1/2011 8:00,1.5,c1\r\n";
        let set = read(&file(dir.path(), text)).unwrap();
        assert!(set.counts.header);
        assert_eq!(set.counts.lines, 1);
        assert_eq!(set.values, [1.5, 1.5, 1.5, 8.0, 2.0]);
        let err = read(&file(dir.path(), "InvoiceNo,Stock\n1,2\n")).unwrap_err();
        assert!(err.to_string().contains("line 1 (header)"), "{err}");
        assert!(err.to_string().contains("unknown: Stock"), "{err}");
    }

    #[test]
    fn nothing_to_train_on_and_a_missing_file_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = read(&file(dir.path(), "C1,s,d,-1,1/1/2011 8:00,1,c,UK\n")).unwrap_err();
        assert!(err.to_string().contains("1 cancellations"), "{err}");
        let err = read(&dir.path().join("none.csv")).unwrap_err();
        assert!(err.is_missing());
    }
}
