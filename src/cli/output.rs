//! The output contract: results on stdout, everything else on stderr, and documented exit codes.
//!
//! stdout carries only a command's result, so it can be piped to `jq` or read line by line: a
//! JSON document (manifest, status, plan, `show`), or a list with one item per line, its id
//! first. Progress, hints and errors go to stderr.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use chrono::{DateTime, Utc};

// 0: the command did what was asked (`submit --wait`, `status --follow`: the job completed).

/// The job followed ended `failed` or `cancelled`.
pub const JOB_FAILED: u8 = 1;
/// Bad arguments or settings: nothing was done.
pub const USAGE: u8 = 2;
/// `--timeout` passed before the job ended; the job goes on.
pub const TIMEOUT: u8 = 3;
/// No such job, dead letter or object.
pub const NOT_FOUND: u8 = 4;
/// Anything else: storage or queue unreachable, a local file unreadable, ...
pub const ERROR: u8 = 5;

/// An error that maps to its own exit code; any other error exits with [`ERROR`].
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    NotFound(String),
}

impl CliError {
    pub fn code(&self) -> u8 {
        match self {
            CliError::Usage(_) => USAGE,
            CliError::NotFound(_) => NOT_FOUND,
        }
    }
}

/// The exit code for an error a command returned.
pub fn code_of(err: &anyhow::Error) -> ExitCode {
    ExitCode::from(err.downcast_ref::<CliError>().map_or(ERROR, CliError::code))
}

/// Writes a result to stdout. A reader that went away (`| head`) is not an error: the rest of
/// the result is simply not wanted.
pub fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let written = out.write_all(text.as_bytes()).and_then(|()| {
        if !text.ends_with('\n') {
            out.write_all(b"\n")?;
        }
        out.flush()
    });
    match written {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => Err(err.into()),
        _ => Ok(()),
    }
}

/// A JSON value as the command's result, pretty-printed.
pub fn emit_json(value: &serde_json::Value) -> anyhow::Result<()> {
    emit(&serde_json::to_string_pretty(value)?)
}

/// Rows of a list: aligned under a header on a terminal, tab-separated without a header
/// otherwise (so `cut -f1` gives the ids, and keys with spaces stay one field).
pub struct Table {
    header: &'static [&'static str],
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &'static [&'static str]) -> Self {
        Self { header, rows: Vec::new() }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row.into_iter().map(|cell| one_line(&cell)).collect());
    }

    pub fn render(&self, terminal: bool) -> String {
        let mut text = String::new();
        if !terminal {
            for row in &self.rows {
                text.push_str(&row.join("\t"));
                text.push('\n');
            }
            return text;
        }
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(width) = widths.get_mut(i) {
                    *width = (*width).max(cell.chars().count());
                }
            }
        }
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let last = row.len().saturating_sub(1);
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i < last {
                    let pad = widths.get(i).copied().unwrap_or(0).saturating_sub(cell.chars().count());
                    line.push_str(&" ".repeat(pad + 2));
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }

    /// Prints the rows (nothing at all when there are none, so an empty list is empty output).
    pub fn emit(&self) -> anyhow::Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        emit(&self.render(std::io::stdout().is_terminal()))
    }
}

/// Tabs and line breaks would split a cell.
fn one_line(cell: &str) -> String {
    cell.chars().map(|c| if c == '\t' || c == '\n' || c == '\r' { ' ' } else { c }).collect()
}

/// How long ago, in the largest whole unit: `42s`, `5m`, `3h`, `2d`.
pub fn age(since: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = now.signed_duration_since(since).num_seconds().max(0);
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_use_the_largest_whole_unit() {
        let now = Utc::now();
        let ago = |s: i64| age(now - chrono::Duration::seconds(s), now);
        assert_eq!(ago(0), "0s");
        assert_eq!(ago(59), "59s");
        assert_eq!(ago(60), "1m");
        assert_eq!(ago(7199), "1h");
        assert_eq!(ago(3 * 86_400 + 5), "3d");
        // A clock slightly ahead elsewhere never gives a negative age.
        assert_eq!(age(now + chrono::Duration::seconds(5), now), "0s");
    }

    #[test]
    fn tables_align_on_a_terminal_and_are_tab_separated_otherwise() {
        let mut table = Table::new(&["ID", "STATE", "SOURCE"]);
        table.push(vec!["job-1".into(), "failed".into(), "uploads/cat video.mov".into()]);
        table.push(vec!["s3-22".into(), "completed".into(), "uploads/a\tb".into()]);
        assert_eq!(table.render(false), "job-1\tfailed\tuploads/cat video.mov\ns3-22\tcompleted\tuploads/a b\n");
        assert_eq!(
            table.render(true),
            "ID     STATE      SOURCE\njob-1  failed     uploads/cat video.mov\ns3-22  completed  uploads/a b\n"
        );
    }

    #[test]
    fn errors_map_to_their_exit_codes() {
        assert_eq!(code_of(&CliError::Usage("x".into()).into()), ExitCode::from(USAGE));
        assert_eq!(code_of(&CliError::NotFound("x".into()).into()), ExitCode::from(NOT_FOUND));
        let wrapped = anyhow::Error::from(CliError::NotFound("x".into())).context("while listing");
        assert_eq!(code_of(&wrapped), ExitCode::from(NOT_FOUND));
        assert_eq!(code_of(&anyhow::anyhow!("storage unreachable")), ExitCode::from(ERROR));
    }
}
