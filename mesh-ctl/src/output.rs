//! Rendering: aligned tables for people, JSON or YAML for scripts.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables and sentences.
    Human,
    Json,
    Yaml,
}

/// Prints `value` as JSON or YAML (for the machine formats).
pub fn print_machine<T: Serialize>(format: Format, value: &T) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Yaml => print!("{}", serde_yaml_ng::to_string(value)?),
        Format::Human => unreachable!("human output is rendered by each command"),
    }
    Ok(())
}

/// An aligned table with a header row; empty cells print as `-`.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count().max(1));
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            let cell = if cell.is_empty() { "-" } else { cell };
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `42s`, `5m`, `3h`, `2d`: how long ago a Unix timestamp was.
pub fn age(since: u64, now: u64) -> String {
    let s = now.saturating_sub(since);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_fill_empty_cells() {
        let t = table(
            &["NODE", "SYNC"],
            &[
                vec!["n1".into(), "in sync".into()],
                vec!["node-22".into(), "".into()],
            ],
        );
        assert_eq!(t, "NODE     SYNC\nn1       in sync\nnode-22  -\n");
    }

    #[test]
    fn ages_are_short() {
        assert_eq!(age(100, 142), "42s");
        assert_eq!(age(0, 7200), "2h");
        assert_eq!(age(200, 100), "0s");
    }
}
