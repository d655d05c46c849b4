//! YAML files as documents with their positions: what `validate` reports line numbers
//! against and what `enroll` rewrites one document of. A document separator is a line
//! starting with `---` at column 0 (inside block scalars content is always indented, so
//! such a line can only be a separator).

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// One document of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Byte range of the document's text in the file, separator line excluded.
    pub range: std::ops::Range<usize>,
    /// 1-based line of the document's first content line (past comments and blank lines).
    pub line: usize,
    /// 1-based line where the text in `range` begins (for offsetting parser line numbers).
    pub first_line: usize,
}

impl Document {
    pub fn text<'a>(&self, file: &'a str) -> &'a str {
        &file[self.range.clone()]
    }

    /// Only whitespace and comments: not an object (e.g. after a trailing `---`).
    pub fn is_empty(&self, file: &str) -> bool {
        self.text(file)
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    }
}

/// Splits a file into documents.
pub fn split(text: &str) -> Vec<Document> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let is_separator =
            line.starts_with("---") && line[3..].chars().next().is_none_or(char::is_whitespace);
        if is_separator {
            if offset > start || i > 0 {
                docs.push(document(text, start..offset, start_line));
            }
            // `--- {kind: Pod}`: content may follow the marker on the same line; it is
            // dropped here, which only matters for that rare style.
            start = offset + line.len();
            start_line = i + 2;
        }
        offset += line.len();
    }
    docs.push(document(text, start..text.len(), start_line));
    docs
}

fn document(text: &str, range: std::ops::Range<usize>, first_line: usize) -> Document {
    let line = text[range.clone()]
        .lines()
        .position(|l| !(l.trim().is_empty() || l.trim_start().starts_with('#')))
        .map_or(first_line, |p| first_line + p);
    Document {
        range,
        line,
        first_line,
    }
}

/// A file to read, or stdin (`-`).
#[derive(Debug, Clone)]
pub struct Input {
    /// As shown in reports: the path, or `<stdin>`.
    pub name: String,
    pub text: String,
}

/// Reads the files named, expanding directories to their `.yaml`/`.yml` files in name order
/// (not recursive, like the controller's directory source).
pub fn read_inputs(paths: &[PathBuf]) -> anyhow::Result<Vec<Input>> {
    let mut inputs = Vec::new();
    for path in paths {
        if path == Path::new("-") {
            let text = std::io::read_to_string(std::io::stdin()).context("reading stdin")?;
            inputs.push(Input {
                name: "<stdin>".into(),
                text,
            });
        } else if path.is_dir() {
            for file in yaml_files(path)? {
                inputs.push(read(&file)?);
            }
        } else {
            inputs.push(read(path)?);
        }
    }
    Ok(inputs)
}

/// The `.yaml`/`.yml` files of a directory, in name order.
pub fn yaml_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading directory {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    Ok(files)
}

fn read(path: &Path) -> anyhow::Result<Input> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {}: does the file exist?", path.display()))?;
    Ok(Input {
        name: path.display().to_string(),
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_know_their_lines() {
        let text = "# head\nkind: A\n---\n\n---\nkind: B\nx: 1\n--- \nkind: C\n";
        let docs = split(text);
        let summary: Vec<(usize, &str, bool)> = docs
            .iter()
            .map(|d| (d.line, d.text(text), d.is_empty(text)))
            .collect();
        assert_eq!(
            summary,
            [
                (2, "# head\nkind: A\n", false),
                (4, "\n", true),
                (6, "kind: B\nx: 1\n", false),
                (9, "kind: C\n", false),
            ]
        );
    }

    #[test]
    fn a_leading_separator_makes_no_empty_document_at_line_one() {
        let text = "---\nkind: A\n";
        let docs = split(text);
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].line, 2);
    }
}
