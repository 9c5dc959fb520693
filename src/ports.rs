//! UDP port pairs for RTP and RTCP, from the configured range.
//!
//! A pair is only handed out once both sockets are really bound, so a port
//! taken by another program is skipped rather than failing later inside a
//! pipeline. The sockets themselves go to GStreamer; the [`PortLease`] keeps
//! the numbers reserved until the caller that holds it is gone.

use serde::Deserialize;
use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) = s.split_once('-').ok_or_else(|| format!("port range {s:?} is not FIRST-LAST"))?;
        let parse = |p: &str| p.trim().parse::<u16>().map_err(|_| format!("{p:?} is not a port number"));
        let (first, last) = (parse(a)?, parse(b)?);
        if first == 0 || last <= first {
            return Err(format!("port range {s:?} must be FIRST-LAST with 0 < FIRST < LAST"));
        }
        Ok(PortRange { first, last })
    }
}

impl TryFrom<String> for PortRange {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("no free RTP port pair left in {0}")]
pub struct PortsExhausted(pub PortRange);

/// Two bound sockets: RTP on an even port, RTCP on the next one.
#[derive(Debug)]
pub struct PortPair {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
    pub lease: PortLease,
}

impl PortPair {
    pub fn rtp_port(&self) -> u16 {
        self.lease.port
    }
}

/// Keeps a pair's numbers reserved; dropping it gives them back.
#[derive(Debug)]
pub struct PortLease {
    port: u16,
    in_use: Arc<Mutex<BTreeSet<u16>>>,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.in_use.lock().expect("port set lock poisoned").remove(&self.port);
    }
}

#[derive(Debug)]
pub struct PortAllocator {
    range: PortRange,
    bind: IpAddr,
    in_use: Arc<Mutex<BTreeSet<u16>>>,
    /// Where the next search starts: rotating through the range avoids
    /// giving a new caller the port a departed caller's packets still reach.
    cursor: u16,
}

impl PortAllocator {
    pub fn new(range: PortRange, bind: IpAddr) -> PortAllocator {
        let first_even = range.first + range.first % 2;
        PortAllocator { range, bind, in_use: Arc::default(), cursor: first_even }
    }

    pub fn allocate(&mut self) -> Result<PortPair, PortsExhausted> {
        let first_even = self.range.first + self.range.first % 2;
        let candidates: Vec<u16> = (first_even..self.range.last).step_by(2).collect();
        if candidates.is_empty() {
            return Err(PortsExhausted(self.range));
        }
        let start = candidates.iter().position(|&p| p >= self.cursor).unwrap_or(0);
        let mut in_use = self.in_use.lock().expect("port set lock poisoned");
        for &port in candidates[start..].iter().chain(&candidates[..start]) {
            if in_use.contains(&port) {
                continue;
            }
            let (Ok(rtp), Ok(rtcp)) = (
                UdpSocket::bind(SocketAddr::new(self.bind, port)),
                UdpSocket::bind(SocketAddr::new(self.bind, port + 1)),
            ) else {
                continue;
            };
            in_use.insert(port);
            self.cursor = port + 2;
            return Ok(PortPair { rtp, rtcp, lease: PortLease { port, in_use: self.in_use.clone() } });
        }
        Err(PortsExhausted(self.range))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn free_range(len: u16) -> PortRange {
        // The OS picks a free port; the range starts there. Good enough for a unit test.
        let probe = UdpSocket::bind((LOOPBACK, 0)).unwrap();
        let first = probe.local_addr().unwrap().port().min(60000) & !1;
        PortRange { first, last: first + len - 1 }
    }

    #[test]
    fn parses_ranges_and_rejects_nonsense() {
        assert_eq!("20000-20999".parse::<PortRange>().unwrap(), PortRange { first: 20000, last: 20999 });
        assert!("20999-20000".parse::<PortRange>().is_err());
        assert!("abc".parse::<PortRange>().is_err());
        assert!("0-10".parse::<PortRange>().is_err());
    }

    #[test]
    fn pairs_are_even_and_exhaust_then_come_back() {
        let range = free_range(4);
        let mut alloc = PortAllocator::new(range, LOOPBACK);
        let a = alloc.allocate().unwrap();
        let b = alloc.allocate().unwrap();
        assert_eq!(a.rtp_port() % 2, 0);
        assert_eq!(a.rtcp.local_addr().unwrap().port(), a.rtp_port() + 1);
        assert_ne!(a.rtp_port(), b.rtp_port());
        assert_eq!(alloc.allocate().unwrap_err(), PortsExhausted(range));
        let freed = a.rtp_port();
        drop(a);
        assert_eq!(alloc.allocate().unwrap().rtp_port(), freed);
    }

    #[test]
    fn ports_taken_by_others_are_skipped() {
        let range = free_range(4);
        let _squatter = UdpSocket::bind((LOOPBACK, range.first)).unwrap();
        let mut alloc = PortAllocator::new(range, LOOPBACK);
        assert_eq!(alloc.allocate().unwrap().rtp_port(), range.first + 2);
    }
}
