//! Which address a request comes from, when berth sits behind reverse proxies.
//!
//! The TCP peer is the only address nobody can forge. `X-Forwarded-For` is
//! believed only as far as it was written by proxies the operator listed in
//! `trusted_proxies`: walking the header from the right (the hop nearest to
//! berth), every trusted address is skipped, and the first address that is not
//! trusted is the client. Anything to the left of that hop was written by the
//! client itself and is ignored, so a client cannot pick the address that policy
//! `ip` rules and the audit record see.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// The most `X-Forwarded-For` entries looked at; a longer chain is cut on the
/// left (the untrusted end), so a huge header costs no more than this.
pub const MAX_HOPS: usize = 32;

/// An IPv4 address seen through an IPv6 socket (`::ffff:a.b.c.d`) as plain IPv4,
/// so that `10.0.0.0/8` matches it.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `ip` is in one of the `trusted` networks.
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = canonical(ip);
    trusted.iter().any(|net| net.contains(&ip))
}

/// Parses one `X-Forwarded-For` entry: an address, optionally with a port
/// (`1.2.3.4:80`, `[::1]:80`), as some proxies write it.
pub fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = hop.parse::<SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    hop.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<IpAddr>().ok())
        .map(canonical)
}

/// The client address of a request from TCP peer `peer` carrying the given
/// `X-Forwarded-For` header values (in the order received).
///
/// - peer not trusted (or no proxies configured): the peer;
/// - otherwise the rightmost entry that is not a trusted proxy;
/// - an entry that is not an address stops the walk: the last trusted hop
///   (which wrote it) is used, since nothing left of it can be believed;
/// - every entry trusted: the leftmost one.
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl IntoIterator<Item = &'a [u8]>,
    trusted: &[IpNet],
) -> IpAddr {
    let peer = canonical(peer);
    if trusted.is_empty() || !is_trusted(peer, trusted) {
        return peer;
    }
    // Several header lines are one list, in order (RFC 9110 §5.3).
    let values: Vec<&[u8]> = forwarded_for.into_iter().collect();
    let mut current = peer;
    let mut seen = 0;
    for value in values.iter().rev() {
        let Ok(text) = std::str::from_utf8(value) else {
            return current;
        };
        for hop in text.rsplit(',') {
            if hop.trim().is_empty() {
                continue;
            }
            seen += 1;
            if seen > MAX_HOPS {
                return current;
            }
            let Some(ip) = parse_hop(hop) else {
                return current;
            };
            if !is_trusted(ip, trusted) {
                return ip;
            }
            current = ip;
        }
    }
    current
}

/// Parses a `trusted_proxies` entry: a network (`10.0.0.0/8`, `fd00::/8`) or a
/// single address (`192.0.2.7`, meaning /32 or /128).
pub fn parse_network(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
        format!(
            "{:?} is not an address or network like 10.0.0.0/8 or 2001:db8::/32",
            s.chars().take(60).collect::<String>()
        )
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use proptest::prelude::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| parse_network(s).unwrap()).collect()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn client(peer: &str, headers: &[&str], trusted: &[&str]) -> IpAddr {
        client_ip(
            ip(peer),
            headers.iter().map(|h| h.as_bytes()),
            &nets(trusted),
        )
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_claims() {
        assert_eq!(
            client("203.0.113.9", &["1.1.1.1"], &["10.0.0.0/8"]),
            ip("203.0.113.9")
        );
        assert_eq!(client("10.1.2.3", &["1.1.1.1"], &[]), ip("10.1.2.3"));
    }

    #[test]
    fn rightmost_untrusted_hop_wins() {
        let t = ["10.0.0.0/8", "192.168.0.0/16"];
        // client → proxy A (10.0.0.5) → proxy B (10.0.0.6) → berth
        assert_eq!(
            client("10.0.0.6", &["198.51.100.7, 10.0.0.5"], &t),
            ip("198.51.100.7")
        );
        // A client-forged entry on the left is ignored.
        assert_eq!(
            client("10.0.0.6", &["6.6.6.6, 198.51.100.7, 10.0.0.5"], &t),
            ip("198.51.100.7")
        );
        // Several header lines form one list.
        assert_eq!(
            client("10.0.0.6", &["6.6.6.6", "198.51.100.7,10.0.0.5"], &t),
            ip("198.51.100.7")
        );
        // Ports and brackets as some proxies write them.
        assert_eq!(
            client("10.0.0.6", &["198.51.100.7:4711"], &t),
            ip("198.51.100.7")
        );
        assert_eq!(
            client("10.0.0.6", &["[2001:db8::1]:443"], &t),
            ip("2001:db8::1")
        );
        assert_eq!(
            client("10.0.0.6", &["[2001:db8::1]"], &t),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn no_header_garbage_and_all_trusted() {
        let t = ["10.0.0.0/8"];
        assert_eq!(client("10.0.0.6", &[], &t), ip("10.0.0.6"));
        // Garbage stops the walk at the hop that wrote it.
        assert_eq!(
            client("10.0.0.6", &["1.2.3.4, unknown, 10.0.0.5"], &t),
            ip("10.0.0.5")
        );
        assert_eq!(client("10.0.0.6", &["not-an-ip"], &t), ip("10.0.0.6"));
        // Only trusted hops: the leftmost.
        assert_eq!(
            client("10.0.0.6", &["10.9.9.9, 10.0.0.5"], &t),
            ip("10.9.9.9")
        );
        // Empty entries are skipped.
        assert_eq!(
            client("10.0.0.6", &[" , 198.51.100.7 ,, "], &t),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn ipv4_mapped_addresses_match_ipv4_networks() {
        let t = ["10.0.0.0/8"];
        assert_eq!(
            client("::ffff:10.0.0.6", &["198.51.100.7"], &t),
            ip("198.51.100.7")
        );
        assert_eq!(
            client("10.0.0.6", &["::ffff:198.51.100.7"], &t),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn long_chains_are_cut() {
        let t = ["10.0.0.0/8"];
        let chain: Vec<String> = (0..100)
            .map(|i| format!("10.0.{}.{}", i / 250, i % 250 + 1))
            .collect();
        let header = format!("198.51.100.7, {}", chain.join(", "));
        // More than MAX_HOPS trusted hops: the walk stops at a trusted hop.
        assert!(is_trusted(client("10.0.0.6", &[&header], &t), &nets(&t)));
    }

    #[test]
    fn networks() {
        assert_eq!(
            parse_network("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            parse_network("192.0.2.7").unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert_eq!(parse_network("::1").unwrap().to_string(), "::1/128");
        assert!(parse_network("10.0.0.0/33").is_err());
        assert!(parse_network("example.com").is_err());
        assert!(parse_network("").is_err());
    }

    proptest! {
        #[test]
        fn never_panics_and_untrusted_peers_win(
            header in proptest::collection::vec(any::<u8>(), 0..200),
            peer in any::<[u8; 4]>(),
        ) {
            let t = nets(&["10.0.0.0/8"]);
            let peer = IpAddr::from(peer);
            let got = client_ip(peer, [header.as_slice()], &t);
            if !is_trusted(peer, &t) {
                prop_assert_eq!(got, peer);
            }
        }

        #[test]
        fn parse_network_never_panics(s in "\\PC{0,60}") {
            let _ = parse_network(&s);
        }
    }
}
