//! The PROXY protocol version 2 header (HAProxy's `proxy-protocol.txt`,
//! section 2.2), the subset midge uses: a follower that forwards a client
//! to the leader sends it first, so that the leader logs the client's own
//! address and never forwards that connection again (one hop at most,
//! whatever the nodes believe about who leads). Pure: no I/O.
//!
//! Layout: the 12-byte signature; version and command (0x21: version 2,
//! PROXY); family and transport (0x11 TCP over IPv4, 0x21 TCP over IPv6);
//! u16 BE length of what follows; source address, destination address,
//! source port, destination port (4+4+2+2 or 16+16+2+2 bytes).

use std::net::{IpAddr, SocketAddr};

pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, version/command, family, length.
pub const FIXED_BYTES: usize = 16;
/// Longest address block midge accepts (TLVs beyond the addresses are
/// skipped, up to this much in all).
pub const ADDRESS_BYTES_MAX: usize = 216;

/// The header announcing a connection from `src` to `dst`.
pub fn encode(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut h = SIGNATURE.to_vec();
    h.push(0x21);
    match (src.ip().to_canonical(), dst.ip().to_canonical()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            h.push(0x11);
            h.extend_from_slice(&12u16.to_be_bytes());
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            h.push(0x21);
            h.extend_from_slice(&36u16.to_be_bytes());
            h.extend_from_slice(&v6(s).octets());
            h.extend_from_slice(&v6(d).octets());
        }
    }
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h
}

/// Whether the first bytes of a connection can start a PROXY header (an
/// MQTT CONNECT starts with 0x10 and a TLS ClientHello with 0x16).
pub fn starts_header(first: u8) -> bool {
    first == SIGNATURE[0]
}

/// Check the fixed part; Ok gives the length of the address block to read.
pub fn parse_fixed(b: &[u8; FIXED_BYTES]) -> Result<usize, &'static str> {
    if b[..12] != SIGNATURE {
        return Err("bad PROXY protocol signature");
    }
    if b[12] >> 4 != 2 {
        return Err("unsupported PROXY protocol version");
    }
    let len = u16::from_be_bytes([b[14], b[15]]) as usize;
    if len > ADDRESS_BYTES_MAX {
        return Err("PROXY header too long");
    }
    Ok(len)
}

/// The source (the client's address) from the address block. `None` for
/// a LOCAL command or an address family midge does not carry.
pub fn parse_source(fixed: &[u8; FIXED_BYTES], block: &[u8]) -> Result<Option<SocketAddr>, &'static str> {
    if fixed[12] & 0x0f == 0 {
        return Ok(None); // LOCAL: a health check by the proxy itself
    }
    let (ip, port_at): (IpAddr, usize) = match fixed[13] {
        0x11 if block.len() >= 12 => (IpAddr::from(<[u8; 4]>::try_from(&block[..4]).unwrap_or_default()), 8),
        0x21 if block.len() >= 36 => {
            let a: [u8; 16] = block[..16].try_into().unwrap_or_default();
            (IpAddr::from(a).to_canonical(), 32)
        }
        0x11 | 0x21 => return Err("PROXY header address block too short"),
        _ => return Ok(None),
    };
    Ok(Some(SocketAddr::new(ip, u16::from_be_bytes([block[port_at], block[port_at + 1]]))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(src: &str, dst: &str) -> Option<SocketAddr> {
        let h = encode(src.parse().unwrap(), dst.parse().unwrap());
        let fixed: [u8; FIXED_BYTES] = h[..FIXED_BYTES].try_into().unwrap();
        assert!(starts_header(h[0]));
        let len = parse_fixed(&fixed).unwrap();
        assert_eq!(len, h.len() - FIXED_BYTES);
        parse_source(&fixed, &h[FIXED_BYTES..]).unwrap()
    }

    #[test]
    fn v4_and_v6_round_trip() {
        assert_eq!(round_trip("10.0.0.5:40000", "10.0.0.11:1883"), Some("10.0.0.5:40000".parse().unwrap()));
        assert_eq!(round_trip("[2001:db8::5]:4000", "[2001:db8::1]:1883"), Some("[2001:db8::5]:4000".parse().unwrap()));
        // Mixed families travel as IPv6; a mapped IPv4 source comes back as IPv4.
        assert_eq!(round_trip("10.0.0.5:1", "[::1]:1883"), Some("10.0.0.5:1".parse().unwrap()));
    }

    #[test]
    fn known_bytes() {
        // HAProxy's spec example layout: signature, 0x21, 0x11, length 12.
        let h = encode("127.0.0.1:5000".parse().unwrap(), "127.0.0.1:1883".parse().unwrap());
        assert_eq!(
            h,
            [
                0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x11, 0x00, 0x0c, 127, 0,
                0, 1, 127, 0, 0, 1, 0x13, 0x88, 0x07, 0x5b
            ]
        );
        assert!(!starts_header(0x10) && !starts_header(0x16));
    }

    #[test]
    fn refuses_bad_headers() {
        let good = encode("127.0.0.1:5000".parse().unwrap(), "127.0.0.1:1883".parse().unwrap());
        let fixed = |h: &[u8]| -> [u8; FIXED_BYTES] { h[..FIXED_BYTES].try_into().unwrap() };
        let mut b = good.clone();
        b[3] = 0;
        assert_eq!(parse_fixed(&fixed(&b)), Err("bad PROXY protocol signature"));
        let mut b = good.clone();
        b[12] = 0x11;
        assert_eq!(parse_fixed(&fixed(&b)), Err("unsupported PROXY protocol version"));
        let mut b = good.clone();
        b[14] = 0xff;
        assert_eq!(parse_fixed(&fixed(&b)), Err("PROXY header too long"));
        assert_eq!(parse_source(&fixed(&good), &good[16..20]), Err("PROXY header address block too short"));
        let mut local = good.clone();
        local[12] = 0x20;
        assert_eq!(parse_source(&fixed(&local), &local[16..]), Ok(None));
    }
}
