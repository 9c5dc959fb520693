//! Who may call without a password: the trusted networks, loopback unless
//! configured (so the demo and a softphone on the same machine just work),
//! else the networks of trusted trunks (a PBX, an SBC). Anyone else must
//! authenticate as a configured user (`digest`), or is refused.

use ipnet::IpNet;
use rsipstack::sip::{HeadersExt, Request};
use rsipstack::transport::SipConnection;
use std::net::IpAddr;

pub fn trusted(source: IpAddr, networks: &[IpNet]) -> bool {
    networks.iter().any(|n| n.contains(&source))
}

/// Where a request came from: the transport layer writes the packet's
/// source into the top Via (`received`, RFC 3261 §18.2.1) whenever the
/// Via's own host differs, so the Via's target is the real sender.
pub fn source_of(request: &Request) -> Option<IpAddr> {
    let via = request.via_header().ok()?;
    let (_, target) = SipConnection::parse_target_from_via(via).ok()?;
    target.host.to_string().trim_matches(['[', ']']).parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trunk_network_is_trusted_and_its_neighbour_is_not() {
        let trunks: Vec<IpNet> = vec!["192.0.2.0/24".parse().unwrap(), "2001:db8::/32".parse().unwrap()];
        assert!(trusted("192.0.2.200".parse().unwrap(), &trunks));
        assert!(trusted("2001:db8::5".parse().unwrap(), &trunks));
        assert!(!trusted("192.0.3.1".parse().unwrap(), &trunks));
    }

    #[test]
    fn the_source_is_the_received_address_when_the_via_says_otherwise() {
        let invite = "INVITE sip:room@127.0.0.1 SIP/2.0\r\n\
            Via: SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bK1;received=198.51.100.9;rport=4000\r\n\
            From: <sip:a@x>;tag=1\r\nTo: <sip:room@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let request = Request::try_from(invite).unwrap();
        assert_eq!(source_of(&request), Some("198.51.100.9".parse().unwrap()));
    }
}
