//! The client IP, decided once per request and stored in the request's extensions as
//! [`ClientIp`]; the allowlist, the rate limiter, the stream caps and the audit log all read that
//! value instead of looking at headers themselves.
//!
//! The peer address of the TCP connection is the client, unless the peer is one of
//! `server.trusted_proxies`: then `X-Forwarded-For` is read right to left, skipping trusted
//! proxies, and the first untrusted hop is the client. A header sent by anyone else is ignored,
//! so a client cannot choose its own address. `X-Forwarded-Proto` is kept the same way (only
//! from a trusted proxy); it decides HSTS and nothing else (see [`super::headers`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderMap;

use std::time::Instant;

use super::EdgeState;
use super::allowlist::IpSet;

/// Who sent this request, as decided by [`resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp {
    /// The client's address (the peer, or the forwarded address from a trusted proxy).
    pub ip: IpAddr,
    /// The TCP peer (equal to `ip` without a trusted proxy).
    pub peer: IpAddr,
    /// Whether the TCP peer is one of `server.trusted_proxies` (then its forwarded headers
    /// were read).
    pub via_proxy: bool,
    /// `X-Forwarded-Proto` from a trusted proxy: whether the client used https (`None`: not a
    /// trusted proxy, or it did not say). Used for HSTS only ([`super::headers`]).
    pub forwarded_https: Option<bool>,
    /// When the edge decided this, first thing for every request: the request's arrival, from
    /// which a handler that must answer within the request timeout counts (a JSON-RPC batch,
    /// `mcp::batch`).
    pub arrived: Instant,
}

impl ClientIp {
    /// The request's client IP. Requests that never passed the middleware (in-process tests
    /// without a socket) count as `0.0.0.0`.
    pub fn of<B>(req: &axum::http::Request<B>) -> IpAddr {
        req.extensions()
            .get::<ClientIp>()
            .map(|c| c.ip)
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, seen on dual-stack sockets) as plain IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The key per-address limits count under: an IPv4 address itself, an IPv6 address's /64
/// network. One IPv6 subscriber or host is routinely given a whole /64 and can pick any address
/// in it, so counting single IPv6 addresses would let one client take 2^64 separate allowances
/// (rate limits, sign-in and registration limits, connection and stream caps). Allowlists and
/// logs keep the full address.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    network(ip, 32, 64)
}

/// The network of `ip` (an IPv4-mapped address as IPv4): its first `v4_bits` or `v6_bits`
/// bits, the rest zero.
pub fn network(ip: IpAddr, v4_bits: u32, v6_bits: u32) -> IpAddr {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - v4_bits.min(32)).unwrap_or(0);
            IpAddr::V4(std::net::Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - v6_bits.min(128)).unwrap_or(0);
            IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// Decides the client IP from the peer address and the headers.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &IpSet) -> ClientIp {
    let peer = canonical(peer);
    let mut client = ClientIp {
        ip: peer,
        peer,
        via_proxy: false,
        forwarded_https: None,
        arrived: Instant::now(),
    };
    if trusted.is_empty() || !trusted.contains(peer) {
        return client;
    }
    client.via_proxy = true;
    // Every X-Forwarded-For line, in order, as one list of hops (leftmost = farthest). Split
    // as bytes: a proxy appends the address it saw to whatever the client sent on the same
    // line, so a line with a byte that is not text still ends with a hop we can read. (Taken
    // as text, the whole line would be dropped and the client would look like the proxy.)
    let hops: Vec<&[u8]> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|s| !s.is_empty())
        .collect();
    for hop in hops.iter().rev() {
        match std::str::from_utf8(hop).ok().and_then(parse_hop) {
            Some(ip) => {
                client.ip = ip;
                if !trusted.contains(ip) {
                    break;
                }
            }
            // Garbage from the hop we cannot vouch for: stop at the last address we trust.
            None => break,
        }
    }
    client.forwarded_https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().eq_ignore_ascii_case("https"));
    client
}

/// `1.2.3.4`, `2001:db8::1`, `1.2.3.4:5678` or `[2001:db8::1]:5678`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(canonical)
}

/// Stores the request's [`ClientIp`] in its extensions, where everything after reads it.
pub fn decide_in(edge: &EdgeState, req: &mut Request) {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let client = resolve(peer, req.headers(), &edge.trusted_proxies);
    req.extensions_mut().insert(client);
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn limits_count_ipv4_addresses_and_ipv6_slash_64_networks() {
        let key = |s: &str| limit_key(s.parse().expect("ip")).to_string();
        assert_eq!(key("203.0.113.7"), "203.0.113.7");
        assert_eq!(key("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::1"), "::");
    }

    fn trusted() -> IpSet {
        IpSet::parse(&["10.0.0.0/8".into(), "::1".into()]).expect("valid")
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn an_untrusted_peer_cannot_choose_its_address() {
        let c = resolve("203.0.113.9".parse().unwrap(), &xff("1.1.1.1"), &trusted());
        assert_eq!(c.ip, "203.0.113.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_trusted_proxy_names_the_first_untrusted_hop_from_the_right() {
        let c = resolve(
            "10.0.0.5".parse().unwrap(),
            &xff("6.6.6.6, 198.51.100.7, 10.0.0.4"),
            &trusted(),
        );
        assert_eq!(c.ip, "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!(c.peer, "10.0.0.5".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn without_forwarded_for_the_proxy_itself_is_the_client() {
        let c = resolve("10.0.0.5".parse().unwrap(), &HeaderMap::new(), &trusted());
        assert_eq!(c.ip, "10.0.0.5".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn garbage_stops_at_the_last_trusted_hop() {
        let c = resolve(
            "10.0.0.5".parse().unwrap(),
            &xff("1.1.1.1, nonsense"),
            &trusted(),
        );
        assert_eq!(c.ip, "10.0.0.5".parse::<IpAddr>().unwrap());
    }

    /// A byte that is not text in what the client sent, on the line the proxy appended the
    /// client's address to: the address is still found (it was the proxy's before).
    #[test]
    fn a_line_with_a_non_text_byte_still_yields_the_address_the_proxy_appended() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\x80, 203.0.113.9").expect("hyper accepts the byte"),
        );
        let c = resolve("10.0.0.5".parse().unwrap(), &h, &trusted());
        assert_eq!(c.ip, "203.0.113.9".parse::<IpAddr>().unwrap());
        // And the unreadable hop itself is garbage: nothing left of it is believed.
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"198.51.100.1, \x80, 10.0.0.7").expect("bytes"),
        );
        let c = resolve("10.0.0.5".parse().unwrap(), &h, &trusted());
        assert_eq!(c.ip, "10.0.0.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn ports_and_mapped_addresses_are_normalised() {
        let c = resolve(
            "::ffff:10.0.0.5".parse().unwrap(),
            &xff("[2001:db8::7]:443"),
            &trusted(),
        );
        assert_eq!(c.ip, "2001:db8::7".parse::<IpAddr>().unwrap());
        assert_eq!(c.peer, "10.0.0.5".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn forwarded_proto_is_read_only_from_trusted_proxies() {
        let mut h = xff("198.51.100.7");
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert_eq!(
            resolve("10.0.0.5".parse().unwrap(), &h, &trusted()).forwarded_https,
            Some(true)
        );
        let untrusted = resolve("203.0.113.1".parse().unwrap(), &h, &trusted());
        assert_eq!(untrusted.forwarded_https, None);
        assert!(!untrusted.via_proxy);
        h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        let c = resolve("10.0.0.5".parse().unwrap(), &h, &trusted());
        assert_eq!(c.forwarded_https, Some(false));
        assert!(c.via_proxy);
    }
}
