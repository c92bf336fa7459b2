//! What every table of settings shares (the worker's, the API's, notifications'): a documented
//! variable, the error that names one, and reading values with the table's defaults. A leaf:
//! the other tables read it without reading [`super::Config`].

use std::net::SocketAddr;
use std::time::Duration;

/// One documented environment variable.
pub struct Variable {
    pub name: &'static str,
    /// The default as a user would type it; empty when there is none.
    pub default: &'static str,
    pub help: &'static str,
}

/// A setting that is missing or malformed; the message names the variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("configuration error: {var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

impl ConfigError {
    pub fn new(var: &'static str, message: impl Into<String>) -> Self {
        Self { var, message: message.into() }
    }
}

/// A lookup (the environment, or a map in tests) read against one table, whose defaults fill
/// in what the lookup lacks.
pub struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    table: &'static [Variable],
}

impl<'a> Env<'a> {
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>, table: &'static [Variable]) -> Self {
        Self { lookup, table }
    }

    /// The value, with blank values treated as unset.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
    }

    pub fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.get(name).ok_or_else(|| ConfigError::new(name, "is required for the aws backend"))
    }

    /// The value, or the table's default for it.
    pub fn or_default(&self, name: &'static str) -> String {
        self.get(name).unwrap_or_else(|| self.default_of(name).to_string())
    }

    pub fn parse_with<T>(
        &self,
        name: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        parse(&self.or_default(name)).map_err(|message| ConfigError::new(name, message))
    }

    fn default_of(&self, name: &str) -> &'static str {
        self.table.iter().find(|v| v.name == name).map(|v| v.default).unwrap_or("")
    }
}

/// A table's entries as `--help` shows them.
pub fn help(table: &[Variable]) -> String {
    let mut out = String::new();
    for var in table {
        let default = if var.default.is_empty() { String::new() } else { format!(" [default: {}]", var.default) };
        out.push_str(&format!("  {}{}\n      {}\n", var.name, default, var.help));
    }
    out
}

pub fn parse_bool(raw: &str) -> Result<bool, String> {
    match raw.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("expected true or false, got `{raw}`")),
    }
}

pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw).map_err(|e| format!("expected a duration such as 30s or 5m, got `{raw}` ({e})"))
}

/// Bytes, optionally with a binary unit: `1048576`, `64MiB`, `5GiB`.
pub fn parse_size(raw: &str) -> Result<u64, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (digits, unit) = raw.split_at(split);
    let number: u64 = digits.parse().map_err(|_| format!("expected a size such as 64MiB, got `{raw}`"))?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        _ => return Err(format!("unknown unit in `{raw}`; use B, KiB, MiB or GiB")),
    };
    number.checked_mul(multiplier).ok_or_else(|| format!("`{raw}` is too large"))
}

/// An `ip:port` to listen on (`0.0.0.0:9090`, `127.0.0.1:0`, `[::]:9090`).
pub fn parse_socket_addr(raw: &str) -> Result<SocketAddr, String> {
    raw.parse().map_err(|_| format!("expected an address such as 0.0.0.0:9090, got `{raw}`"))
}

/// Checks the shape of a cron expression with a seconds field; the scheduler parses it for real.
pub fn parse_cron(raw: &str) -> Result<String, String> {
    let fields = raw.split_whitespace().count();
    if !(6..=7).contains(&fields) {
        return Err(format!("expected a cron expression with a seconds field (6 fields), got `{raw}`"));
    }
    Ok(raw.to_string())
}

/// A whole number within `range`, or the message saying so.
pub fn parse_count<T>(raw: &str, range: std::ops::RangeInclusive<T>) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    match raw.parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(format!("expected a whole number from {} to {}, got `{raw}`", range.start(), range.end())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("5GiB"), Ok(5 << 30));
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn blank_values_take_the_table_default() {
        const TABLE: &[Variable] = &[Variable { name: "A", default: "7", help: "" }];
        let lookup = |name: &str| (name == "A").then(|| "  ".to_string());
        let env = Env::new(&lookup, TABLE);
        assert_eq!(env.get("A"), None);
        assert_eq!(env.parse_with("A", |raw| parse_count(raw, 1..=10u32)), Ok(7));
        assert_eq!(parse_count("0", 1..=10u32), Err("expected a whole number from 1 to 10, got `0`".to_string()));
    }
}
