//! What a datagram on the shared socket is, from its first bytes (RFC 7983):
//! STUN, DTLS, RTP or RTCP. Headers only, never a payload: RTP and RTCP
//! headers travel in the clear under SRTP, which lets the socket task count
//! retransmissions without str0m's help.

/// STUN's magic cookie (RFC 5389 §6), bytes 4..8 of every STUN message.
const STUN_MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const STUN_HEADER_BYTES: usize = 20;
const STUN_ATTRIBUTE_USERNAME: u16 = 0x0006;
const RTP_HEADER_BYTES: usize = 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatagramKind {
    Stun,
    Dtls,
    Rtp { payload_type: u8 },
    Rtcp,
    Other,
}

pub fn classify(datagram: &[u8]) -> DatagramKind {
    match datagram.first() {
        Some(0..=3) if datagram.len() >= STUN_HEADER_BYTES && datagram[4..8] == STUN_MAGIC_COOKIE => DatagramKind::Stun,
        Some(20..=63) => DatagramKind::Dtls,
        Some(128..=191) if datagram.len() >= RTP_HEADER_BYTES => match datagram[1] {
            // RTCP packet types 192..=223 fill the whole second byte; an RTP
            // payload type never lands there (RFC 5761 §4).
            192..=223 => DatagramKind::Rtcp,
            marker_and_type => DatagramKind::Rtp {
                payload_type: marker_and_type & 0x7f,
            },
        },
        _ => DatagramKind::Other,
    }
}

/// The USERNAME of a STUN message, `"{receiver ufrag}:{sender ufrag}"` in a
/// binding request: which peer it is for, before any state is touched.
pub fn stun_username(datagram: &[u8]) -> Option<&str> {
    if classify(datagram) != DatagramKind::Stun {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    let attributes = datagram.get(STUN_HEADER_BYTES..STUN_HEADER_BYTES + length)?;
    let mut rest = attributes;
    while rest.len() >= 4 {
        let kind = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let value = rest.get(4..4 + len)?;
        if kind == STUN_ATTRIBUTE_USERNAME {
            return std::str::from_utf8(value).ok();
        }
        let padded = (4 + len).div_ceil(4) * 4;
        rest = rest.get(padded..)?;
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A STUN binding request with a USERNAME and one attribute before it.
    pub(crate) fn binding_request(username: &str) -> Vec<u8> {
        let mut attributes = vec![0x80, 0x2a, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]; // ICE-CONTROLLING
        attributes.extend_from_slice(&STUN_ATTRIBUTE_USERNAME.to_be_bytes());
        attributes.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attributes.extend_from_slice(username.as_bytes());
        while attributes.len() % 4 != 0 {
            attributes.push(0);
        }
        let mut message = vec![0x00, 0x01];
        message.extend_from_slice(&(attributes.len() as u16).to_be_bytes());
        message.extend_from_slice(&STUN_MAGIC_COOKIE);
        message.extend_from_slice(&[7; 12]);
        message.extend_from_slice(&attributes);
        message
    }

    pub(crate) fn rtp(payload_type: u8, marker: bool) -> Vec<u8> {
        let mut packet = vec![0x80, payload_type | if marker { 0x80 } else { 0 }];
        packet.extend_from_slice(&[0; 10]);
        packet.extend_from_slice(b"payload");
        packet
    }

    #[test]
    fn the_first_byte_tells_stun_dtls_and_rtp_apart() {
        assert_eq!(classify(&binding_request("a:b")), DatagramKind::Stun);
        assert_eq!(
            classify(&[22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            DatagramKind::Dtls
        );
        assert_eq!(classify(&rtp(96, false)), DatagramKind::Rtp { payload_type: 96 });
        assert_eq!(classify(&[]), DatagramKind::Other);
        assert_eq!(classify(&[0x80, 96]), DatagramKind::Other, "too short for RTP");
    }

    #[test]
    fn the_marker_bit_is_not_part_of_the_payload_type() {
        assert_eq!(classify(&rtp(111, true)), DatagramKind::Rtp { payload_type: 111 });
    }

    #[test]
    fn rtcp_sender_reports_and_feedback_are_not_rtp() {
        for packet_type in [200u8, 201, 205, 206] {
            let mut packet = rtp(0, false);
            packet[1] = packet_type;
            assert_eq!(classify(&packet), DatagramKind::Rtcp, "{packet_type}");
        }
    }

    #[test]
    fn a_binding_request_names_its_receiver_in_its_username() {
        assert_eq!(
            stun_username(&binding_request("tutti123:browser9")),
            Some("tutti123:browser9")
        );
        assert_eq!(
            stun_username(&binding_request("odd")),
            Some("odd"),
            "padding after a 3-byte value"
        );
    }

    #[test]
    fn a_truncated_or_non_stun_datagram_has_no_username() {
        let request = binding_request("tutti123:browser9");
        assert_eq!(stun_username(&request[..request.len() - 4]), None);
        assert_eq!(stun_username(&rtp(96, false)), None);
        let mut no_cookie = request.clone();
        no_cookie[4] = 0;
        assert_eq!(stun_username(&no_cookie), None);
    }
}
