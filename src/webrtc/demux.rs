//! Which peer a datagram on the shared socket belongs to.
//!
//! ```text
//!  datagram from S ─┬─ STUN with USERNAME "ufrag:…" ─► the peer whose ufrag it is
//!                   ├─ anything else from a learned S ──► that peer
//!                   └─ unknown S ─► None: the socket task asks each peer's str0m
//!                                   (`Rtc::accepts`)
//!  whichever way a peer's str0m claims it, the task learns S for that peer
//! ```
//!
//! The browser's first packets are STUN binding requests, which name us by the
//! ICE ufrag we put in the answer; once str0m has validated an address, the
//! DTLS and SRTP from it carry nothing to route by but that address. A route
//! only ever points at a peer, whose str0m still checks every packet
//! (integrity, SRTP authentication): a wrong route costs a dropped packet.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;

use super::datagram::stun_username;

/// Addresses learned per peer at most. A browser uses one or two candidate
/// pairs (a few more across a network change); anyone who saw a ufrag on
/// the wire could otherwise grow the table with STUN from spoofed addresses.
/// Past the cap, a peer's datagrams still arrive, through the slower lookup.
pub const MAX_ADDRESSES_PER_PEER: usize = 8;

#[derive(Debug)]
pub struct Routes<P> {
    by_ufrag: HashMap<String, P>,
    by_address: HashMap<SocketAddr, P>,
    addresses_of: HashMap<P, usize>,
}

impl<P: Copy + Eq + Hash> Routes<P> {
    pub fn new() -> Self {
        Routes {
            by_ufrag: HashMap::new(),
            by_address: HashMap::new(),
            addresses_of: HashMap::new(),
        }
    }

    /// A new peer, known by the ICE ufrag of our answer to it.
    pub fn add_peer(&mut self, local_ufrag: &str, peer: P) {
        self.by_ufrag.insert(local_ufrag.to_string(), peer);
    }

    /// The peer `datagram` from `source` is for, if the table knows.
    pub fn route(&self, source: SocketAddr, datagram: &[u8]) -> Option<P> {
        if let Some(username) = stun_username(datagram) {
            let local = username.split(':').next().unwrap_or_default();
            return self.by_ufrag.get(local).copied();
        }
        self.by_address.get(&source).copied()
    }

    /// `peer` accepted a packet from `source`: later ones go straight to it
    /// (up to [`MAX_ADDRESSES_PER_PEER`] addresses a peer).
    pub fn learn(&mut self, source: SocketAddr, peer: P) {
        if self.by_address.get(&source) == Some(&peer) {
            return;
        }
        if self.addresses_of.get(&peer).copied().unwrap_or(0) >= MAX_ADDRESSES_PER_PEER {
            return;
        }
        if let Some(previous) = self.by_address.insert(source, peer)
            && let Some(n) = self.addresses_of.get_mut(&previous)
        {
            *n -= 1;
        }
        *self.addresses_of.entry(peer).or_default() += 1;
    }

    pub fn remove_peer(&mut self, peer: P) {
        self.by_ufrag.retain(|_, p| *p != peer);
        self.by_address.retain(|_, p| *p != peer);
        self.addresses_of.remove(&peer);
    }

    pub fn addresses(&self) -> usize {
        self.by_address.len()
    }
}

impl<P: Copy + Eq + Hash> Default for Routes<P> {
    fn default() -> Self {
        Routes::new()
    }
}

#[cfg(test)]
mod tests {
    use super::super::datagram::tests::{binding_request, rtp};
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_binding_request_goes_to_the_peer_named_by_the_ufrag_before_its_colon() {
        let mut routes = Routes::new();
        routes.add_peer("aaaa", 1);
        routes.add_peer("bbbb", 2);
        assert_eq!(routes.route(addr(5000), &binding_request("bbbb:browser")), Some(2));
        assert_eq!(routes.route(addr(5000), &binding_request("cccc:browser")), None);
    }

    #[test]
    fn media_from_an_unlearned_address_has_no_route_until_learned() {
        let mut routes = Routes::new();
        routes.add_peer("aaaa", 1);
        assert_eq!(routes.route(addr(5000), &rtp(96, false)), None);
        routes.learn(addr(5000), 1);
        assert_eq!(routes.route(addr(5000), &rtp(96, false)), Some(1));
        assert_eq!(routes.route(addr(5001), &rtp(96, false)), None);
    }

    #[test]
    fn stun_is_routed_by_ufrag_even_from_an_address_learned_for_another_peer() {
        let mut routes = Routes::new();
        routes.add_peer("aaaa", 1);
        routes.add_peer("bbbb", 2);
        routes.learn(addr(5000), 1);
        assert_eq!(routes.route(addr(5000), &binding_request("bbbb:x")), Some(2));
    }

    #[test]
    fn a_peer_learns_a_bounded_number_of_addresses_and_a_moved_address_is_counted_once() {
        let mut routes = Routes::new();
        routes.add_peer("aaaa", 1);
        routes.add_peer("bbbb", 2);
        for port in 0..100 {
            routes.learn(addr(6000 + port), 1);
        }
        assert_eq!(routes.addresses(), MAX_ADDRESSES_PER_PEER);
        assert_eq!(
            routes.route(addr(6099), &rtp(96, false)),
            None,
            "past the cap: the slow lookup"
        );
        // An address that moves to another peer frees a place for the first.
        routes.learn(addr(6000), 2);
        assert_eq!(routes.route(addr(6000), &rtp(96, false)), Some(2));
        routes.learn(addr(7000), 1);
        assert_eq!(routes.route(addr(7000), &rtp(96, false)), Some(1));
        routes.remove_peer(1);
        assert_eq!(routes.addresses(), 1);
    }

    #[test]
    fn a_removed_peer_leaves_no_route_behind() {
        let mut routes = Routes::new();
        routes.add_peer("aaaa", 1);
        routes.add_peer("bbbb", 2);
        routes.learn(addr(5000), 1);
        routes.learn(addr(5002), 2);
        routes.remove_peer(1);
        assert_eq!(routes.route(addr(5000), &rtp(96, false)), None);
        assert_eq!(routes.route(addr(5000), &binding_request("aaaa:x")), None);
        assert_eq!(routes.route(addr(5002), &rtp(96, false)), Some(2));
        assert_eq!(routes.addresses(), 1);
    }
}
