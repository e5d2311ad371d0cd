//! A connection's remote address, held inline in its `Conn` (18 bytes)
//! rather than formatted into a string on the heap (~48 bytes with the
//! allocator's overhead): every connection keeps one, for log lines only.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// An IPv4 address is held IPv4-mapped and shown as IPv4 again. The
/// runtime hands over canonical addresses (`IpAddr::to_canonical`), so an
/// IPv4-mapped IPv6 peer never reaches the broker as such.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr {
    ip: [u8; 16],
    port: u16,
}

impl PeerAddr {
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(Ipv6Addr::from(self.ip).to_canonical(), self.port)
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(a: SocketAddr) -> PeerAddr {
        let ip = match a.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        PeerAddr { ip: ip.octets(), port: a.port() }
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.socket_addr().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::PeerAddr;
    use std::net::SocketAddr;

    #[test]
    fn shows_as_the_socket_address() {
        for s in ["127.0.0.1:1883", "[::1]:40000", "[2001:db8::7]:1", "0.0.0.0:0", "[fe80::1]:65535"] {
            let a: SocketAddr = s.parse().unwrap();
            assert_eq!(PeerAddr::from(a).to_string(), a.to_string());
            assert_eq!(PeerAddr::from(a).socket_addr(), a);
        }
    }
}
