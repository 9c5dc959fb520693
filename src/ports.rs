//! UDP ports from a configured range: pairs for RTP and RTCP, single ports
//! for SRT listeners.
//!
//! A port is only handed out once it was really bound, so a port taken by
//! another program is skipped rather than failing later inside a pipeline.
//! An RTP pair's sockets go to GStreamer; an SRT port is bound again by
//! libsrt. The [`PortLease`] keeps the numbers reserved until the caller
//! that holds it is gone.

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
#[error("no free {what} left in {range}")]
pub struct PortsExhausted {
    pub range: PortRange,
    /// What was asked for: "RTP port pair", "SRT port".
    pub what: &'static str,
}

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

impl PortLease {
    pub fn port(&self) -> u16 {
        self.port
    }
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

    /// An even port and the next one, both bound.
    pub fn allocate(&mut self) -> Result<PortPair, PortsExhausted> {
        let first_even = self.range.first + self.range.first % 2;
        let candidates: Vec<u16> = (first_even..self.range.last).step_by(2).collect();
        let bind = self.bind;
        let (rtp, rtcp, lease) = self
            .claim(&candidates, 2, |port| {
                let rtp = UdpSocket::bind(SocketAddr::new(bind, port)).ok()?;
                let rtcp = UdpSocket::bind(SocketAddr::new(bind, port + 1)).ok()?;
                Some((rtp, rtcp))
            })
            .map(|((rtp, rtcp), lease)| (rtp, rtcp, lease))
            .ok_or(PortsExhausted { range: self.range, what: "RTP port pair" })?;
        Ok(PortPair { rtp, rtcp, lease })
    }

    /// One port that was free a moment ago: bound, then let go for its user
    /// (libsrt) to bind.
    pub fn allocate_single(&mut self, what: &'static str) -> Result<PortLease, PortsExhausted> {
        let candidates: Vec<u16> = (self.range.first..=self.range.last).collect();
        let bind = self.bind;
        self.claim(&candidates, 1, |port| UdpSocket::bind(SocketAddr::new(bind, port)).ok())
            .map(|(_probe, lease)| lease)
            .ok_or(PortsExhausted { range: self.range, what })
    }

    /// The first candidate from the cursor on, not in use, that `bind` binds.
    fn claim<T>(&mut self, candidates: &[u16], width: u16, bind: impl Fn(u16) -> Option<T>) -> Option<(T, PortLease)> {
        let start = candidates.iter().position(|&p| p >= self.cursor).unwrap_or(0);
        let mut in_use = self.in_use.lock().expect("port set lock poisoned");
        for &port in candidates[start..].iter().chain(&candidates[..start]) {
            if in_use.contains(&port) {
                continue;
            }
            let Some(bound) = bind(port) else { continue };
            in_use.insert(port);
            self.cursor = port.saturating_add(width);
            return Some((bound, PortLease { port, in_use: self.in_use.clone() }));
        }
        None
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
        assert_eq!(alloc.allocate().unwrap_err(), PortsExhausted { range, what: "RTP port pair" });
        let freed = a.rtp_port();
        drop(a);
        assert_eq!(alloc.allocate().unwrap().rtp_port(), freed);
    }

    #[test]
    fn single_ports_exhaust_skip_squatters_and_come_back() {
        let range = free_range(3);
        let _squatter = UdpSocket::bind((LOOPBACK, range.first + 1)).unwrap();
        let mut alloc = PortAllocator::new(range, LOOPBACK);
        let a = alloc.allocate_single("SRT port").unwrap();
        let b = alloc.allocate_single("SRT port").unwrap();
        assert_eq!((a.port(), b.port()), (range.first, range.first + 2));
        assert_eq!(alloc.allocate_single("SRT port").unwrap_err(), PortsExhausted { range, what: "SRT port" });
        drop(a);
        assert_eq!(alloc.allocate_single("SRT port").unwrap().port(), range.first);
    }

    #[test]
    fn ports_taken_by_others_are_skipped() {
        let range = free_range(4);
        let _squatter = UdpSocket::bind((LOOPBACK, range.first)).unwrap();
        let mut alloc = PortAllocator::new(range, LOOPBACK);
        assert_eq!(alloc.allocate().unwrap().rtp_port(), range.first + 2);
    }
}
