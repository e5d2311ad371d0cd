//! Value syntax shared by the configuration parser: numbers, host names,
//! addresses and the edit distance used for "did you mean" suggestions.

use std::net::{IpAddr, Ipv6Addr};

use super::Listener;

pub(super) fn join(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

/// Digits only (no sign, no spaces), fitting in a u64.
pub(super) fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A DNS host name: dot-separated labels of letters, digits, `-` and `_`,
/// not all-numeric (that would be a malformed IPv4 address).
pub(super) fn is_hostname(s: &str) -> bool {
    let labels_ok = s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    labels_ok && !s.split('.').all(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

/// Normalised form of an address for duplicate detection.
pub(super) fn host_key(host: &str) -> String {
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => host.to_ascii_lowercase(),
    }
}

pub(super) fn same_listener(a: &Listener, b: &Listener) -> bool {
    a.port == b.port && a.address.as_deref().map(host_key) == b.address.as_deref().map(host_key)
}

/// Validates `HOST:PORT` / `[IPV6]:PORT`, returning a normalised key.
pub(super) fn peer_key(addr: &str) -> Option<(String, u16)> {
    let (host, port) = if let Some(r) = addr.strip_prefix('[') {
        let (h, p) = r.split_once("]:")?;
        h.parse::<Ipv6Addr>().ok()?;
        (h, p)
    } else {
        let (h, p) = addr.rsplit_once(':')?;
        if h.contains(':') || !(h.parse::<IpAddr>().is_ok() || is_hostname(h)) {
            return None;
        }
        (h, p)
    };
    let port = parse_u64(port).filter(|p| (1..=65535).contains(p))? as u16;
    Some((host_key(host), port))
}

/// Levenshtein distance over chars.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}
