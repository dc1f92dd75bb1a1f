//! Relevance judgments (qrels) in the BEIR TSV layout.
//!
//! One judgment per line, `query-id<TAB>corpus-id<TAB>score`; the score is an
//! integer (graded relevance: 0 = judged not relevant, 1, 2, 3 … increasingly
//! relevant; negative grades are read and count as not relevant). Also read:
//! the four-column TREC layout `query-id iteration corpus-id score`, columns
//! separated by tabs or, in a line without tabs, by spaces. A first line whose
//! score column is not an integer is a header (`query-id corpus-id score` in
//! BEIR) and is skipped; files without one (e.g. TREC DL) read the same. Blank
//! lines, a UTF-8 byte-order mark and CRLF line ends are accepted. Any other
//! malformed line is an error naming the file and the line number. A pair
//! judged twice keeps its last grade, as BEIR's loader (a dict) does.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};

/// Relevance judgments: query id → (document id → graded relevance).
pub type Qrels = HashMap<String, HashMap<String, i32>>;

/// Reads a qrels file (see the module documentation for the layout).
pub fn read_qrels(path: &Path) -> Result<Qrels> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_qrels(&text, &path.display().to_string())
}

/// Parses qrels text; `source` names it in errors (a path, say).
pub fn parse_qrels(text: &str, source: &str) -> Result<Qrels> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut qrels = Qrels::new();
    let mut first = true;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: &str| Error::Input(format!("{source} line {}: {why}: {line:?}", n + 1));
        let cols: Vec<&str> = if line.contains('\t') {
            line.split('\t').map(str::trim).collect()
        } else {
            line.split_whitespace().collect()
        };
        let is_first = std::mem::replace(&mut first, false);
        let (q, d, s) = match cols.as_slice() {
            [q, d, s] => (*q, *d, *s),
            [q, _, d, s] => (*q, *d, *s),
            _ => {
                return Err(bad(&format!(
                    "expected 3 columns (query-id, corpus-id, score), found {}",
                    cols.len()
                )))
            }
        };
        let grade = match s.parse::<i32>() {
            Ok(g) => g,
            // The header: the first line with a non-numeric score column.
            Err(_) if is_first && s.parse::<f64>().is_err() => continue,
            Err(_) => return Err(bad("score is not an integer")),
        };
        if q.is_empty() || d.is_empty() {
            return Err(bad("empty query or corpus id"));
        }
        qrels
            .entry(q.to_string())
            .or_default()
            .insert(d.to_string(), grade);
    }
    if qrels.is_empty() {
        return Err(Error::Input(format!("{source}: no judgments found")));
    }
    Ok(qrels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beir_with_header_trec_without_and_graded() {
        let q = parse_qrels(
            "query-id\tcorpus-id\tscore\n1\tA\t1\n1\tB\t2\n2\tC\t0\n",
            "t",
        )
        .unwrap();
        assert_eq!(q.len(), 2);
        assert_eq!((q["1"]["A"], q["1"]["B"], q["2"]["C"]), (1, 2, 0));
        // No header; blank lines, CRLF and a byte-order mark are fine.
        let q = parse_qrels("\u{feff}7\tx\t3\r\n\r\n7\ty\t1\r\n", "t").unwrap();
        assert_eq!((q["7"]["x"], q["7"]["y"]), (3, 1));
        // TREC: four columns, spaces.
        let q = parse_qrels("19335 0 1720389 2\n19335 Q0 1729 -1\n", "t").unwrap();
        assert_eq!((q["19335"]["1720389"], q["19335"]["1729"]), (2, -1));
        // The last grade of a repeated pair wins.
        assert_eq!(parse_qrels("1\tA\t1\n1\tA\t2\n", "t").unwrap()["1"]["A"], 2);
    }

    #[test]
    fn malformed_lines_name_the_line() {
        let err = |text: &str| parse_qrels(text, "f.tsv").unwrap_err().to_string();
        let e = err("q\td\tscore\n1\tA\t1\n2\tB\n");
        assert!(e.contains("f.tsv line 3") && e.contains("3 columns"), "{e}");
        let e = err("1\tA\t1\n2\tB\thigh\n");
        assert!(e.contains("line 2") && e.contains("integer"), "{e}");
        // A non-integer grade is an error even on the first line if numeric.
        let e = err("1\tA\t0.5\n");
        assert!(e.contains("line 1") && e.contains("integer"), "{e}");
        let e = err("1\tA\t1\n\n1\tB\t1\textra\tcols\n");
        assert!(e.contains("line 3"), "{e}");
        let e = err("1\t\t1\n");
        assert!(e.contains("line 1") && e.contains("empty"), "{e}");
        assert!(err("").contains("no judgments"));
        assert!(err("query-id\tcorpus-id\tscore\n").contains("no judgments"));
    }
}
