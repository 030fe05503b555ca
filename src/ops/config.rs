//! `[metrics]`, `[audit]` and `[log]`: the operator-facing knobs of [`super`].

use serde::Deserialize;

use crate::config::{Config, ConfigError};
use crate::edge::allowlist::IpSet;

/// `[metrics]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Client addresses (CIDRs or single addresses) that may read `/metrics` on the main
    /// listener; everyone else gets 403. Empty = nobody (scrape the admin listener instead,
    /// which always serves `/metrics` to loopback).
    pub allow: Vec<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            allow: vec!["127.0.0.0/8".into(), "::1".into()],
        }
    }
}

/// Where audit records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditOutput {
    /// JSON lines in `{state_dir}/audit.jsonl`, rotated by size.
    File,
    /// JSON lines on standard error; under systemd that is the journal.
    Stderr,
    /// No audit records.
    Off,
}

/// `[audit]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// `file` (default), `stderr` (the journal under systemd) or `off`.
    pub output: AuditOutput,
    /// `file`: rotate when the file would grow past this many bytes.
    pub max_bytes: u64,
    /// `file`: rotated files kept (`audit.jsonl.1` … `audit.jsonl.N`).
    pub keep: u32,
    /// Records waiting to be written; beyond it new records are dropped and counted
    /// (`mssql_mcp_audit_dropped_total`) instead of slowing requests down.
    pub queue: usize,
    /// `file`: flush written records to the disk (`fdatasync`) within a second, and at
    /// shutdown, so a power loss or kernel crash loses at most the last second's. Off the
    /// request path: requests never wait for it.
    pub sync: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            output: AuditOutput::File,
            max_bytes: 64 * 1024 * 1024,
            keep: 5,
            queue: 4096,
            sync: true,
        }
    }
}

/// The log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON under systemd/journald (`JOURNAL_STREAM` set), human-readable otherwise.
    #[default]
    Auto,
    /// Human-readable lines (colours only on a terminal).
    Human,
    /// One JSON object per line, with the request's span fields (request id, method, path).
    Json,
}

/// `[log]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `auto` (default), `human` or `json`. The level comes from `RUST_LOG` (default
    /// `info,tiberius::tds::stream::token=off`: tiberius logs every server message at info).
    pub format: LogFormat,
}

impl LogFormat {
    /// Whether to write JSON, given the environment.
    pub fn json(self) -> bool {
        match self {
            LogFormat::Json => true,
            LogFormat::Human => false,
            LogFormat::Auto => std::env::var_os("JOURNAL_STREAM").is_some(),
        }
    }
}

pub fn validate(config: &Config) -> Result<(), ConfigError> {
    if let Err(bad) = IpSet::parse(&config.metrics.allow) {
        return Err(ConfigError::new(
            "metrics.allow",
            format!("`{bad}` is not a CIDR or an address"),
            "list entries such as \"127.0.0.1\" or \"10.0.0.0/8\"",
        ));
    }
    if let Some(p) = config
        .metrics
        .allow
        .iter()
        .find(|e| crate::edge::allowlist::preset(e.trim()).is_some())
    {
        return Err(ConfigError::new(
            "metrics.allow",
            format!(
                "`{p}` is a preset: the ranges an AI vendor's clients come from, not a scraper"
            ),
            "list the addresses of your Prometheus (e.g. \"127.0.0.1\" or \"10.0.0.7\"), or scrape the admin listener",
        ));
    }
    let a = &config.audit;
    if a.max_bytes < 4096 {
        return Err(ConfigError::new(
            "audit.max_bytes",
            format!("{} is too small", a.max_bytes),
            "use at least 4096 (default 67108864)",
        ));
    }
    if a.queue == 0 || a.queue > 1_000_000 {
        return Err(ConfigError::new(
            "audit.queue",
            format!("{} is out of range", a.queue),
            "use 1 to 1000000 (default 4096)",
        ));
    }
    Ok(())
}
