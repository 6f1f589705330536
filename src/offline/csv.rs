//! Reading a labelled or unlabelled CSV file (header row, numeric columns) into a row-major
//! table for training and evaluation.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

/// Errors reading a CSV file; each names the file, and the line where one applies.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("{}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("{}: {source}", path.display())]
    Parse { path: PathBuf, source: csv::Error },
    #[error("{}: has no header row", path.display())]
    NoHeader { path: PathBuf },
    #[error("{}: has no data rows", path.display())]
    NoRows { path: PathBuf },
    #[error("{}: no column named {column:?} (columns: {available})", path.display())]
    MissingColumn {
        path: PathBuf,
        column: String,
        available: String,
    },
    #[error("{}: no numeric feature columns", path.display())]
    NoFeatures { path: PathBuf },
    #[error(
        "{}: feature column {column:?} appears twice; features are matched to a record's \
         fields by name, so each name must be unique",
        path.display()
    )]
    DuplicateFeature { path: PathBuf, column: String },
    #[error("{}: column {column:?} is both a feature and the label", path.display())]
    LabelIsFeature { path: PathBuf, column: String },
    #[error("{}, line {line}, column {column:?}: {value:?} is not a finite number", path.display())]
    NotNumeric {
        path: PathBuf,
        line: u64,
        column: String,
        value: String,
    },
    #[error("{}, line {line}: label {value:?} is neither 0 nor 1", path.display())]
    BadLabel {
        path: PathBuf,
        line: u64,
        value: String,
    },
}

impl CsvError {
    /// True when the file could not be found.
    pub fn is_missing(&self) -> bool {
        matches!(self, Self::Open { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// Which columns are features.
#[derive(Debug, Clone, Copy)]
pub enum Columns<'a> {
    /// Every column whose first value is a number, except the label.
    Numeric,
    /// These, in this order.
    Named(&'a [String]),
}

/// A CSV file's features, row-major, and its labels when it has a label column.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub feature_names: Vec<String>,
    pub values: Vec<f64>,
    /// `true` = anomaly; `None` when the file has no label column.
    pub labels: Option<Vec<bool>>,
}

impl Table {
    pub fn n_features(&self) -> usize {
        self.feature_names.len()
    }

    pub fn n_rows(&self) -> usize {
        self.values.len() / self.n_features().max(1)
    }
}

/// Reads `path`. A column named `label` (if present) holds 0/1 labels and is never a feature.
pub fn read(path: &Path, columns: Columns<'_>, label: &str) -> Result<Table, CsvError> {
    let file = File::open(path).map_err(|source| CsvError::Open {
        path: path.into(),
        source,
    })?;
    let parse_error = |source| CsvError::Parse {
        path: path.into(),
        source,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(BufReader::with_capacity(1 << 16, file));
    let header: Vec<String> = reader
        .headers()
        .map_err(parse_error)?
        .iter()
        .map(str::to_string)
        .collect();
    if header.is_empty() || header.iter().all(String::is_empty) {
        return Err(CsvError::NoHeader { path: path.into() });
    }
    let label_at = header.iter().position(|h| h == label);

    let mut record = csv::ByteRecord::new();
    if !reader.read_byte_record(&mut record).map_err(parse_error)? {
        return Err(CsvError::NoRows { path: path.into() });
    }
    let picked: Vec<usize> = match columns {
        Columns::Named(names) => names
            .iter()
            .map(|name| {
                if name == label {
                    return Err(CsvError::LabelIsFeature {
                        path: path.into(),
                        column: name.clone(),
                    });
                }
                header
                    .iter()
                    .position(|h| h == name)
                    .ok_or_else(|| CsvError::MissingColumn {
                        path: path.into(),
                        column: name.clone(),
                        available: header.join(","),
                    })
            })
            .collect::<Result<_, _>>()?,
        Columns::Numeric => (0..header.len())
            .filter(|&i| Some(i) != label_at)
            .filter(|&i| record.get(i).and_then(parse_number).is_some())
            .collect(),
    };
    if picked.is_empty() {
        return Err(CsvError::NoFeatures { path: path.into() });
    }
    if let Some(twice) = picked.iter().enumerate().find_map(|(k, &i)| {
        picked[..k]
            .iter()
            .any(|&j| header[j] == header[i])
            .then_some(i)
    }) {
        return Err(CsvError::DuplicateFeature {
            path: path.into(),
            column: header[twice].clone(),
        });
    }

    let mut values = Vec::new();
    let mut labels = label_at.map(|_| Vec::new());
    loop {
        let line = record.position().map_or(0, |p| p.line());
        for &i in &picked {
            let field = record.get(i).unwrap_or_default();
            let value = parse_number(field).ok_or_else(|| CsvError::NotNumeric {
                path: path.into(),
                line,
                column: header[i].clone(),
                value: String::from_utf8_lossy(field).into_owned(),
            })?;
            values.push(value);
        }
        if let (Some(i), Some(labels)) = (label_at, labels.as_mut()) {
            let field = record.get(i).unwrap_or_default();
            let label = match parse_number(field) {
                Some(0.0) => false,
                Some(1.0) => true,
                _ => {
                    return Err(CsvError::BadLabel {
                        path: path.into(),
                        line,
                        value: String::from_utf8_lossy(field).into_owned(),
                    });
                }
            };
            labels.push(label);
        }
        if !reader.read_byte_record(&mut record).map_err(parse_error)? {
            break;
        }
    }
    Ok(Table {
        feature_names: picked.iter().map(|&i| header[i].clone()).collect(),
        values,
        labels,
    })
}

/// A finite number, or `None`: NaN and infinities would poison the forest.
fn parse_number(field: &[u8]) -> Option<f64> {
    std::str::from_utf8(field)
        .ok()?
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.csv");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn numeric_columns_except_label_by_default() {
        let (_d, path) = write("id,a,b,label\nx1,1.5,2,0\nx2,3,-4e1,1\n");
        let t = read(&path, Columns::Numeric, "label").unwrap();
        assert_eq!(t.feature_names, ["a", "b"]);
        assert_eq!(t.values, [1.5, 2.0, 3.0, -40.0]);
        assert_eq!(t.labels, Some(vec![false, true]));
        assert_eq!(t.n_rows(), 2);
    }

    #[test]
    fn named_columns_in_the_given_order_and_no_label() {
        let (_d, path) = write("a,b,c\n1,2,3\n4,5,6\n");
        let names = ["c".to_string(), "a".to_string()];
        let t = read(&path, Columns::Named(&names), "label").unwrap();
        assert_eq!(t.feature_names, ["c", "a"]);
        assert_eq!(t.values, [3.0, 1.0, 6.0, 4.0]);
        assert_eq!(t.labels, None);
    }

    #[test]
    fn errors_name_the_file_line_and_column() {
        let (_d, path) = write("a,label\n1,0\nnan,1\n");
        let err = read(&path, Columns::Numeric, "label")
            .unwrap_err()
            .to_string();
        assert!(err.contains("d.csv, line 3, column \"a\""), "{err}");

        let (_d, path) = write("a,label\n1,2\n");
        let err = read(&path, Columns::Numeric, "label").unwrap_err();
        assert!(matches!(err, CsvError::BadLabel { line: 2, .. }), "{err}");

        let (_d, path) = write("a,b\n1,2\n");
        let err = read(&path, Columns::Named(&["z".into()]), "label").unwrap_err();
        assert!(
            err.to_string()
                .contains("no column named \"z\" (columns: a,b)"),
            "{err}"
        );

        let (_d, path) = write("a,b\n");
        assert!(matches!(
            read(&path, Columns::Numeric, "label"),
            Err(CsvError::NoRows { .. })
        ));

        let (_d, path) = write("name\nfoo\n");
        assert!(matches!(
            read(&path, Columns::Numeric, "label"),
            Err(CsvError::NoFeatures { .. })
        ));

        let err = read(Path::new("/nonexistent.csv"), Columns::Numeric, "label").unwrap_err();
        assert!(err.is_missing());
    }

    /// Features are matched to records by name, so a name may name one feature only.
    #[test]
    fn a_feature_named_twice_is_refused() {
        let (_d, path) = write("a,b,a\n1,2,3\n");
        let err = read(&path, Columns::Numeric, "label").unwrap_err();
        assert!(
            matches!(&err, CsvError::DuplicateFeature { column, .. } if column == "a"),
            "{err}"
        );
        let (_d, path) = write("a,b\n1,2\n");
        let twice = ["a".to_owned(), "a".to_owned()];
        assert!(matches!(
            read(&path, Columns::Named(&twice), "label"),
            Err(CsvError::DuplicateFeature { .. })
        ));
        // A duplicate column that is not a feature is no one's business.
        let (_d, path) = write("a,note,note\n1,x,y\n");
        assert!(read(&path, Columns::Numeric, "label").is_ok());
    }
}
