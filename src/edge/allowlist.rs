//! IP allowlists: CIDR sets (IPv4 and IPv6) built from config entries and named presets, applied
//! globally (`[access] allow`) and per scope (`allow_ips`). Reads the [`ClientIp`] decided by
//! [`super::client_ip`]; a denied request gets 403 with a short reason, a log line and a count.
//!
//! The presets are snapshots of ranges the vendors publish, and **they change over time**:
//! check them against the vendor's page (named in [`PRESETS`]) before relying on them, and
//! prefer authentication over address checks in any case.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;

use super::EdgeState;
use super::client_ip::ClientIp;
use crate::ops::FailureReport;

/// A named set of client ranges the operator can allow by name.
pub struct Preset {
    /// Name used in config (`allow = ["chatgpt"]`).
    pub name: &'static str,
    /// Who the ranges belong to and where the current list is published.
    pub source: &'static str,
    /// When this snapshot was taken.
    pub as_of: &'static str,
    /// The ranges.
    pub cidrs: &'static [&'static str],
}

/// The presets, as published by the vendors on the dates given. They change: the list here is
/// only as fresh as this build.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "chatgpt",
        source: "OpenAI's ChatGPT actions egress list (8 ranges) plus 23.98.142.176/28 and 40.84.180.224/28 from the seed guide; the seed guide's 76.16.33.0/24 and 128.252.147.0/24 are left out (no OpenAI publication lists them). Current list: chatgpt-connectors.json, linked from OpenAI's 'IP egress ranges' page",
        as_of: "2025-10",
        cidrs: &[
            "23.102.140.112/28",
            "13.66.11.96/28",
            "23.98.142.176/28",
            "40.84.180.224/28",
            "104.210.133.240/28",
            "20.97.188.144/28",
            "20.161.76.48/28",
            "52.234.32.208/28",
            "52.156.132.32/28",
            "40.84.180.128/28",
        ],
    },
    Preset {
        name: "anthropic",
        source: "Anthropic's documented outbound range for MCP tool calls (Claude API docs, 'IP addresses')",
        as_of: "2026-06",
        cidrs: &["160.79.104.0/21"],
    },
];

/// The preset called `name`, if any.
pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

/// Names of all presets.
pub fn preset_names() -> Vec<&'static str> {
    PRESETS.iter().map(|p| p.name).collect()
}

/// Human-readable listing of the presets (for `mssql-mcp ip-presets` and `check-config`).
pub fn describe_presets() -> String {
    let mut out = String::from(
        "IP presets (snapshots; vendors change these ranges over time - verify before relying on them):\n",
    );
    for p in PRESETS {
        out.push_str(&format!(
            "  {} (as of {}): {}\n    source: {}\n",
            p.name,
            p.as_of,
            p.cidrs.join(", "),
            p.source
        ));
    }
    out
}

/// A set of networks; empty means "everyone".
#[derive(Debug, Clone, Default)]
pub struct IpSet {
    nets: Vec<IpNet>,
}

impl IpSet {
    /// Parses CIDRs, bare addresses and preset names. On failure returns the offending entry.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut nets = Vec::new();
        for e in entries {
            let e = e.trim();
            if let Some(p) = preset(e) {
                for c in p.cidrs {
                    nets.push(c.parse::<IpNet>().map_err(|_| (*c).to_string())?);
                }
            } else if let Ok(net) = e.parse::<IpNet>() {
                nets.push(net.trunc());
            } else if let Ok(ip) = e.parse::<IpAddr>() {
                nets.push(IpNet::from(ip));
            } else {
                return Err(e.to_string());
            }
        }
        Ok(Self { nets })
    }

    /// True when no entry was given (no restriction).
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` is inside one of the networks. IPv4-mapped IPv6 addresses match their
    /// IPv4 form.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = super::client_ip::canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Empty sets allow everyone; otherwise the address must be inside.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.is_empty() || self.contains(ip)
    }
}

/// The global set and each scope's own set.
#[derive(Debug, Clone, Default)]
pub struct Allowlists {
    /// `[access] allow`
    pub global: IpSet,
    /// `(scope path, allow_ips)` for scopes with a non-empty list.
    pub scopes: Vec<(String, IpSet)>,
}

impl Allowlists {
    /// Why `ip` may not reach `path`, if it may not. Global and scope lists must both allow it.
    pub fn check(&self, ip: IpAddr, path: &str) -> Result<(), &'static str> {
        if !self.global.allows(ip) {
            return Err("client address not allowed");
        }
        for (scope, set) in &self.scopes {
            if path_in_scope(path, scope) && !set.allows(ip) {
                return Err("client address not allowed for this scope");
            }
        }
        Ok(())
    }
}

/// `/chatgpt`, `/chatgpt/…`, and the RFC 8414/9728 well-known forms `/.well-known/x/chatgpt…`.
pub fn path_in_scope(path: &str, scope: &str) -> bool {
    let under = |p: &str| {
        p.strip_prefix(scope)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    if under(path) {
        return true;
    }
    path.strip_prefix("/.well-known/")
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(_, tail)| under(&format!("/{tail}")))
}

/// Middleware (the plain-HTTP listener's redirect): [`refusal`] or the route.
pub async fn enforce(State(edge): State<Arc<EdgeState>>, req: Request, next: Next) -> Response {
    match refusal(&edge, &req) {
        Some(refused) => refused,
        None => next.run(req).await,
    }
}

/// 403 unless the global and the scope allowlists admit the request's client IP. Each refusal
/// is counted (`mssql_mcp_ip_denied_total`); the log gets them as episodes ([`Denials`]).
pub fn refusal(edge: &EdgeState, req: &Request) -> Option<Response> {
    let ip = ClientIp::of(req);
    let reason = edge.allowlists.check(ip, req.uri().path()).err()?;
    edge.counters.denied.inc();
    edge.denials
        .refused(Instant::now(), ip, req.uri().path(), reason);
    Some(super::refusal(StatusCode::FORBIDDEN, "forbidden", reason))
}

/// How often an episode of refusals is summarized in the log, and how long without a refusal
/// ends one.
pub const DENIALS_LOG_EVERY: Duration = Duration::from_secs(60);

/// Allowlist refusals in the log as episodes, not one line per request: a scanner sending
/// thousands of requests would otherwise flood the journal (refusals come before the rate
/// limits, so nothing else slows them). The first refusal of an episode is logged with its
/// address, path and reason; then at most one summary a minute with the count so far and the
/// latest refusal; a minute without a refusal ends the episode, and its total is logged when
/// the next one begins. The metric counts every refusal.
#[derive(Default)]
pub struct Denials(Mutex<DenialRun>);

#[derive(Default)]
struct DenialRun {
    run: crate::ops::FailureRun,
    /// When the latest refusal came.
    last: Option<Instant>,
}

impl Denials {
    /// Counts a refusal at `now` and logs what the episode calls for; returns that report.
    pub fn refused(
        &self,
        now: Instant,
        ip: IpAddr,
        path: &str,
        reason: &'static str,
    ) -> FailureReport {
        let mut d = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let ended = match d.last {
            Some(t) if now.saturating_duration_since(t) >= DENIALS_LOG_EVERY => d.run.ended(),
            _ => None,
        };
        d.last = Some(now);
        let report = d.run.failed(now, DENIALS_LOG_EVERY);
        drop(d);
        if let Some((refused, lasted)) = ended {
            tracing::info!(
                refused,
                secs = lasted.as_secs(),
                "an episode of requests denied by IP allowlist ended"
            );
        }
        match report {
            FailureReport::First => tracing::warn!(
                client_ip = %ip,
                path,
                reason,
                "request denied by IP allowlist (more refusals are counted in \
                 mssql_mcp_ip_denied_total and summarized here once a minute)"
            ),
            FailureReport::Ongoing { failures, secs } => tracing::warn!(
                refused = failures,
                secs,
                client_ip = %ip,
                path,
                reason,
                "requests denied by IP allowlist: still refusing (the latest named)"
            ),
            FailureReport::Quiet => {}
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(entries: &[&str]) -> IpSet {
        IpSet::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("valid")
    }

    #[test]
    fn ipv4_and_ipv6_cidrs_match_only_their_ranges() {
        let s = set(&["127.0.0.2/32", "10.0.0.0/8", "2001:db8::/32"]);
        assert!(s.contains("127.0.0.2".parse().unwrap()));
        assert!(!s.contains("127.0.0.3".parse().unwrap()));
        assert!(s.contains("10.200.1.1".parse().unwrap()));
        assert!(s.contains("2001:db8::1".parse().unwrap()));
        assert!(!s.contains("2001:db9::1".parse().unwrap()));
        assert!(s.contains("::ffff:10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn presets_expand_to_their_ranges() {
        let s = set(&["chatgpt", "anthropic"]);
        assert!(s.contains("23.102.140.113".parse().unwrap()));
        assert!(s.contains("160.79.105.9".parse().unwrap()));
        assert!(!s.contains("8.8.8.8".parse().unwrap()));
        for p in PRESETS {
            for c in p.cidrs {
                c.parse::<IpNet>().expect("preset CIDRs parse");
            }
        }
    }

    #[test]
    fn an_unknown_entry_is_named() {
        let err = IpSet::parse(&["10.0.0.0/8".into(), "chatgtp".into()]).unwrap_err();
        assert_eq!(err, "chatgtp");
    }

    #[test]
    fn refusals_are_logged_once_per_episode_then_once_a_minute() {
        let d = Denials::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(d.refused(at(0), ip, "/x", "r"), FailureReport::First);
        for i in 1..1000 {
            assert_eq!(d.refused(at(i), ip, "/x", "r"), FailureReport::Quiet);
        }
        assert_eq!(
            d.refused(at(60_000), ip, "/x", "r"),
            FailureReport::Ongoing {
                failures: 1001,
                secs: 60
            }
        );
        assert_eq!(d.refused(at(61_000), ip, "/x", "r"), FailureReport::Quiet);
        // A minute without a refusal ends the episode: the next one is logged again.
        assert_eq!(d.refused(at(121_000), ip, "/x", "r"), FailureReport::First);
    }

    #[test]
    fn an_empty_set_allows_everyone() {
        assert!(IpSet::default().allows("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn scope_paths_include_their_well_known_forms() {
        assert!(path_in_scope("/chatgpt/mcp", "/chatgpt"));
        assert!(path_in_scope("/chatgpt", "/chatgpt"));
        assert!(!path_in_scope("/chatgptx/mcp", "/chatgpt"));
        assert!(path_in_scope(
            "/.well-known/oauth-protected-resource/chatgpt/mcp",
            "/chatgpt"
        ));
        assert!(!path_in_scope(
            "/.well-known/oauth-protected-resource",
            "/chatgpt"
        ));
    }

    #[test]
    fn global_and_scope_lists_must_both_allow() {
        let lists = Allowlists {
            global: set(&["127.0.0.0/8"]),
            scopes: vec![("/chatgpt".into(), set(&["127.0.0.2"]))],
        };
        let two: IpAddr = "127.0.0.2".parse().unwrap();
        let three: IpAddr = "127.0.0.3".parse().unwrap();
        assert!(lists.check(two, "/chatgpt/mcp").is_ok());
        assert!(lists.check(three, "/chatgpt/mcp").is_err());
        assert!(lists.check(three, "/claude/mcp").is_ok());
        assert!(
            lists
                .check("10.0.0.1".parse().unwrap(), "/claude/mcp")
                .is_err()
        );
    }
}
