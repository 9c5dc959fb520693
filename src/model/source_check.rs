//! Which packets arriving at a caller's ports are that caller's media: the
//! defence against RTP bleed (packets from anyone who finds the port being
//! decoded as the caller's picture and voice) and RTP injection.
//!
//! The decision is Asterisk's `strictrtp` and rtpengine's, per medium and
//! per channel (RTP and RTCP each keep their own latch, as a sender sends
//! them from two sockets even under rtcp-mux):
//!
//! - `off`: everything is taken, as before this module existed.
//! - `latch` (default): the first well-formed packet (a valid RTP header with
//!   a negotiated payload type; a valid RTCP header) latches its source
//!   address and port, from wherever it comes, so callers behind NAT work.
//!   From then on only that source is taken. Malformed packets and
//!   unnegotiated payload types are never taken and never latch.
//! - `strict`: as `latch`, and the source IP must also be the address the
//!   offer announced (`c=`, or `a=rtcp`'s), unless that is unspecified
//!   (`0.0.0.0`, a caller that does not know its own address).
//!
//! The latch moves to a new source in two cases: the latched source has
//! been silent for [`RELATCH_AFTER`] (the caller restarted, or its NAT
//! binding changed while it was quiet), or a new source continues the
//! latched RTP stream itself — same SSRC, next sequence numbers — which is
//! a NAT rebinding mid-stream that a blind stranger cannot fake without
//! seeing the stream. The latched source may change SSRC at will (an
//! endpoint restarting its encoder): its address and port identify it.
//!
//! Known limit of `latch` (and of every latching peer): a stranger who gets
//! a packet in before the caller's first one, or keeps the port busy while
//! the caller is silent, holds the latch. `strict` closes that for callers
//! whose offer tells their real address.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// How long a latched source must be silent before another may take over:
/// longer than any pause in a live stream (audio sends every 20 ms, video
/// at least every frame), short enough that a caller whose NAT binding or
/// sender restarted is back within a couple of seconds.
pub const RELATCH_AFTER: Duration = Duration::from_secs(2);

/// How far ahead of the latched stream's last sequence number a packet from
/// a new source may be and still count as the same stream continuing (NAT
/// rebinding): a second of 30 fps video split into a few packets per frame.
const CONTINUATION_WINDOW: u16 = 300;

/// RTP header size without CSRCs or extension (RFC 3550 5.1).
const RTP_HEADER_LEN: usize = 12;

/// RTCP packet types, and what RTP payload types they look like under
/// rtcp-mux (RFC 5761 4: 192-223 seen with the marker bit).
const RTCP_PACKET_TYPES: std::ops::RangeInclusive<u8> = 192..=223;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceCheckMode {
    Off,
    #[default]
    Latch,
    Strict,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a source check mode (strict, latch or off)")]
pub struct UnknownSourceCheckMode(String);

impl FromStr for SourceCheckMode {
    type Err = UnknownSourceCheckMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(SourceCheckMode::Off),
            "latch" => Ok(SourceCheckMode::Latch),
            "strict" => Ok(SourceCheckMode::Strict),
            other => Err(UnknownSourceCheckMode(other.to_owned())),
        }
    }
}

/// Which socket a packet arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    Rtp,
    Rtcp,
    /// One socket for both (rtcp-mux): told apart by the packet type byte.
    Muxed,
}

/// What to do with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Take it as the caller's RTP.
    Rtp,
    /// Take it as the caller's RTCP.
    Rtcp,
    Reject(Rejection),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Not a valid RTP (or RTCP) packet.
    Malformed,
    /// A valid RTP header with a payload type that was not negotiated.
    PayloadType,
    /// The sender is not at the address the offer announced (`strict`).
    Address,
    /// Another source holds the latch.
    NotLatched,
    /// The sender's address is unknown, so it cannot be checked.
    UnknownSender,
}

/// The facts of an RTP header that the check uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpHeader {
    pub payload_type: u8,
    pub sequence: u16,
    pub ssrc: u32,
}

/// Parses and validates an RTP header (RFC 3550 5.1): version 2, the CSRC
/// list, the header extension and the padding all inside the packet, and a
/// payload type that is not an RTCP packet type in disguise.
pub fn rtp_header(packet: &[u8]) -> Option<RtpHeader> {
    let fixed: &[u8; RTP_HEADER_LEN] = packet.get(..RTP_HEADER_LEN)?.try_into().ok()?;
    if fixed[0] >> 6 != 2 {
        return None;
    }
    let payload_type = fixed[1] & 0x7f;
    if RTCP_PACKET_TYPES.contains(&fixed[1]) {
        return None;
    }
    let csrc_count = usize::from(fixed[0] & 0x0f);
    let mut header_len = RTP_HEADER_LEN + 4 * csrc_count;
    if fixed[0] & 0x10 != 0 {
        let words = packet.get(header_len + 2..header_len + 4)?;
        header_len += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    let padding = if fixed[0] & 0x20 != 0 { usize::from(*packet.last()?) } else { 0 };
    if header_len + padding > packet.len() || (fixed[0] & 0x20 != 0 && padding == 0) {
        return None;
    }
    Some(RtpHeader {
        payload_type,
        sequence: u16::from_be_bytes([fixed[2], fixed[3]]),
        ssrc: u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]),
    })
}

/// Whether `packet` starts with a valid RTCP header (RFC 3550 6.4): version
/// 2, an RTCP packet type, the sender's SSRC, and a length inside the packet.
pub fn is_valid_rtcp(packet: &[u8]) -> bool {
    let Some(&[first, packet_type, len_hi, len_lo]) = packet.get(..4) else { return false };
    let length = 4 * (usize::from(u16::from_be_bytes([len_hi, len_lo])) + 1);
    first >> 6 == 2 && RTCP_PACKET_TYPES.contains(&packet_type) && packet.len() >= 8 && length <= packet.len()
}

/// Under rtcp-mux: RTCP packet types 192-223 sit where RTP has the marker
/// bit and payload types 64-95, which RTP must not use (RFC 5761 4).
pub fn looks_like_rtcp(packet: &[u8]) -> bool {
    packet.get(1).is_some_and(|second| RTCP_PACKET_TYPES.contains(second))
}

/// The source a channel has latched on to.
#[derive(Clone, Copy, Debug)]
struct Latched {
    source: SocketAddr,
    last_seen: Instant,
    /// The latest RTP stream from it (RTP channel only).
    stream: Option<(u32, u16)>,
}

/// One channel's latch.
#[derive(Clone, Copy, Debug, Default)]
struct Latch {
    latched: Option<Latched>,
}

impl Latch {
    /// Takes `from` if it is the latched source, the latch is free, the
    /// latched source has gone silent, or `from` continues its RTP stream.
    fn admit(&mut self, from: SocketAddr, rtp: Option<RtpHeader>, now: Instant) -> bool {
        let stream = rtp.map(|h| (h.ssrc, h.sequence));
        let admitted = match self.latched {
            None => true,
            Some(latched) if latched.source == from => true,
            Some(latched) if now.saturating_duration_since(latched.last_seen) >= RELATCH_AFTER => true,
            Some(latched) => match (latched.stream, stream) {
                (Some((ssrc, last)), Some((new_ssrc, sequence))) => {
                    ssrc == new_ssrc && sequence.wrapping_sub(last).wrapping_sub(1) < CONTINUATION_WINDOW
                }
                _ => false,
            },
        };
        if admitted {
            self.latched = Some(Latched { source: from, last_seen: now, stream: stream.or(self.latched.and_then(|l| l.stream)) });
        }
        admitted
    }
}

/// The check for one medium of one caller.
#[derive(Clone, Debug)]
pub struct SourceCheck {
    mode: SourceCheckMode,
    /// Where the offer said RTP and RTCP come from (`None`: unspecified).
    announced_rtp: Option<IpAddr>,
    announced_rtcp: Option<IpAddr>,
    /// Negotiated payload types, as a bit set over 0-127.
    payload_types: u128,
    rtp: Latch,
    rtcp: Latch,
}

impl SourceCheck {
    /// `announced_rtp` and `announced_rtcp` are the offer's addresses for
    /// the medium; `payload_types` every payload type the answer accepted
    /// for it (the codec's, and any RTX/FEC/telephone-event ones).
    pub fn new(mode: SourceCheckMode, announced_rtp: IpAddr, announced_rtcp: IpAddr, payload_types: &[u8]) -> Self {
        let specified = |ip: IpAddr| (!ip.is_unspecified()).then_some(ip);
        SourceCheck {
            mode,
            announced_rtp: specified(announced_rtp),
            announced_rtcp: specified(announced_rtcp),
            payload_types: payload_types.iter().filter(|&&pt| pt < 128).fold(0, |set, &pt| set | 1 << pt),
            rtp: Latch::default(),
            rtcp: Latch::default(),
        }
    }

    /// Decides on one datagram that arrived on `channel` from `from` at `now`.
    pub fn check(&mut self, channel: Channel, from: Option<SocketAddr>, packet: &[u8], now: Instant) -> Verdict {
        let is_rtcp = match channel {
            Channel::Rtp => false,
            Channel::Rtcp => true,
            Channel::Muxed => looks_like_rtcp(packet),
        };
        if self.mode == SourceCheckMode::Off {
            return if is_rtcp { Verdict::Rtcp } else { Verdict::Rtp };
        }
        let Some(from) = from else { return Verdict::Reject(Rejection::UnknownSender) };
        // A dual-stack socket shows an IPv4 sender as ::ffff:a.b.c.d; offers write a.b.c.d.
        let from = SocketAddr::new(from.ip().to_canonical(), from.port());
        let (header, announced) = if is_rtcp {
            if !is_valid_rtcp(packet) {
                return Verdict::Reject(Rejection::Malformed);
            }
            (None, self.announced_rtcp)
        } else {
            let Some(header) = rtp_header(packet) else { return Verdict::Reject(Rejection::Malformed) };
            if self.payload_types & (1 << header.payload_type) == 0 {
                return Verdict::Reject(Rejection::PayloadType);
            }
            (Some(header), self.announced_rtp)
        };
        if self.mode == SourceCheckMode::Strict && announced.is_some_and(|ip| ip != from.ip()) {
            return Verdict::Reject(Rejection::Address);
        }
        let latch = if is_rtcp { &mut self.rtcp } else { &mut self.rtp };
        match (latch.admit(from, header, now), is_rtcp) {
            (false, _) => Verdict::Reject(Rejection::NotLatched),
            (true, true) => Verdict::Rtcp,
            (true, false) => Verdict::Rtp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPUS: u8 = 111;
    const CALLER: &str = "192.0.2.10:40000";
    const CALLER_RTCP: &str = "192.0.2.10:40001";
    const STRANGER: &str = "198.51.100.7:5004";

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    fn rtp(pt: u8, sequence: u16, ssrc: u32) -> Vec<u8> {
        let mut packet = vec![0x80, pt, 0, 0, 0, 0, 0, 160, 0, 0, 0, 0];
        packet[2..4].copy_from_slice(&sequence.to_be_bytes());
        packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
        packet.extend_from_slice(&[0xab; 40]);
        packet
    }

    /// An empty receiver report: V=2, RC=0, PT=201, length 1 (8 bytes).
    fn rtcp_rr() -> Vec<u8> {
        vec![0x80, 201, 0, 1, 0x12, 0x34, 0x56, 0x78]
    }

    fn check(mode: SourceCheckMode) -> SourceCheck {
        let announced: IpAddr = "192.0.2.10".parse().unwrap();
        SourceCheck::new(mode, announced, announced, &[OPUS])
    }

    #[test]
    fn mode_parses_from_its_three_names_only() {
        assert_eq!("strict".parse(), Ok(SourceCheckMode::Strict));
        assert_eq!("latch".parse(), Ok(SourceCheckMode::Latch));
        assert_eq!("off".parse(), Ok(SourceCheckMode::Off));
        assert!("Latch".parse::<SourceCheckMode>().is_err());
        assert_eq!(SourceCheckMode::default(), SourceCheckMode::Latch);
    }

    #[test]
    fn rtp_headers_are_validated_to_the_last_byte() {
        assert_eq!(rtp_header(&rtp(OPUS, 7, 42)), Some(RtpHeader { payload_type: OPUS, sequence: 7, ssrc: 42 }));
        assert_eq!(rtp_header(&rtp(OPUS, 7, 42)[..11]), None, "shorter than a header");
        let mut v1 = rtp(OPUS, 7, 42);
        v1[0] = 0x40;
        assert_eq!(rtp_header(&v1), None, "version 1");
        let mut csrcs = rtp(OPUS, 7, 42);
        csrcs[0] = 0x8f; // 15 CSRCs = 60 bytes, more than the packet holds
        assert_eq!(rtp_header(&csrcs), None);
        let mut extension = rtp(OPUS, 7, 42);
        extension[0] |= 0x10;
        extension[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(rtp_header(&extension), None, "extension longer than the packet");
        let mut padding = rtp(OPUS, 7, 42);
        padding[0] |= 0x20;
        *padding.last_mut().unwrap() = 200;
        assert_eq!(rtp_header(&padding), None, "padding longer than the packet");
        *padding.last_mut().unwrap() = 0;
        assert_eq!(rtp_header(&padding), None, "padding flag with a zero count");
        *padding.last_mut().unwrap() = 4;
        assert!(rtp_header(&padding).is_some());
        assert_eq!(rtp_header(&rtcp_rr()), None, "an RTCP packet is not RTP");
    }

    #[test]
    fn rtcp_headers_are_validated() {
        assert!(is_valid_rtcp(&rtcp_rr()));
        assert!(!is_valid_rtcp(&rtcp_rr()[..7]));
        let mut long = rtcp_rr();
        long[3] = 9;
        assert!(!is_valid_rtcp(&long), "length beyond the packet");
        let mut not_rtcp = rtcp_rr();
        not_rtcp[1] = 100;
        assert!(!is_valid_rtcp(&not_rtcp));
        let mut v0 = rtcp_rr();
        v0[0] = 0x00;
        assert!(!is_valid_rtcp(&v0));
    }

    #[test]
    fn off_takes_everything_and_still_tells_muxed_rtcp_from_rtp() {
        let mut check = check(SourceCheckMode::Off);
        let now = Instant::now();
        assert_eq!(check.check(Channel::Rtp, addr(STRANGER), b"garbage", now), Verdict::Rtp);
        assert_eq!(check.check(Channel::Rtp, None, &rtp(5, 1, 1), now), Verdict::Rtp);
        assert_eq!(check.check(Channel::Rtcp, addr(STRANGER), b"x", now), Verdict::Rtcp);
        assert_eq!(check.check(Channel::Muxed, addr(STRANGER), &rtcp_rr(), now), Verdict::Rtcp);
        assert_eq!(check.check(Channel::Muxed, addr(STRANGER), &rtp(OPUS, 1, 1), now), Verdict::Rtp);
    }

    #[test]
    fn latch_takes_the_first_valid_source_from_anywhere_then_only_it() {
        let mut check = check(SourceCheckMode::Latch);
        let now = Instant::now();
        // Behind NAT: not the offer's address, still latched.
        assert_eq!(check.check(Channel::Rtp, addr(STRANGER), &rtp(OPUS, 1, 9), now), Verdict::Rtp);
        assert_eq!(check.check(Channel::Rtp, addr(STRANGER), &rtp(OPUS, 2, 9), now), Verdict::Rtp);
        assert_eq!(check.check(Channel::Rtp, addr(CALLER), &rtp(OPUS, 1, 5), now), Verdict::Reject(Rejection::NotLatched));
        let other_port: SocketAddr = "198.51.100.7:5006".parse().unwrap();
        assert_eq!(check.check(Channel::Rtp, Some(other_port), &rtp(OPUS, 1, 5), now), Verdict::Reject(Rejection::NotLatched));
    }

    #[test]
    fn malformed_packets_and_unnegotiated_payload_types_never_latch() {
        let mut check = check(SourceCheckMode::Latch);
        let now = Instant::now();
        assert_eq!(check.check(Channel::Rtp, addr(STRANGER), b"\x80garbage", now), Verdict::Reject(Rejection::Malformed));
        assert_eq!(check.check(Channel::Rtp, addr(STRANGER), &rtp(96, 1, 9), now), Verdict::Reject(Rejection::PayloadType));
        assert_eq!(check.check(Channel::Rtp, addr(STRANGER), &rtp(OPUS | 0x80, 1, 9), now), Verdict::Rtp, "marker bit set");
        let mut check = self::check(SourceCheckMode::Latch);
        assert_eq!(check.check(Channel::Rtp, addr(STRANGER), &rtp(96, 1, 9), now), Verdict::Reject(Rejection::PayloadType));
        assert_eq!(check.check(Channel::Rtp, addr(CALLER), &rtp(OPUS, 1, 5), now), Verdict::Rtp, "the latch was still free");
        assert_eq!(check.check(Channel::Rtp, addr(CALLER), &rtp(96, 2, 5), now), Verdict::Reject(Rejection::PayloadType), "even from the caller");
    }

    #[test]
    fn an_unknown_sender_is_rejected_unless_the_check_is_off() {
        let mut check = check(SourceCheckMode::Latch);
        assert_eq!(check.check(Channel::Rtp, None, &rtp(OPUS, 1, 1), Instant::now()), Verdict::Reject(Rejection::UnknownSender));
    }

    #[test]
    fn the_latched_source_may_change_ssrc() {
        let mut check = check(SourceCheckMode::Latch);
        let now = Instant::now();
        assert_eq!(check.check(Channel::Rtp, addr(CALLER), &rtp(OPUS, 100, 1), now), Verdict::Rtp);
        assert_eq!(check.check(Channel::Rtp, addr(CALLER), &rtp(OPUS, 5000, 2), now), Verdict::Rtp);
    }

    #[test]
    fn another_source_takes_over_only_after_the_latched_one_was_silent_two_seconds() {
        let mut check = check(SourceCheckMode::Latch);
        let t0 = Instant::now();
        assert_eq!(check.check(Channel::Rtp, addr(CALLER), &rtp(OPUS, 1, 1), t0), Verdict::Rtp);
        let almost = t0 + RELATCH_AFTER - Duration::from_millis(1);
        assert_eq!(check.check(Channel::Rtp, addr(STRANGER), &rtp(OPUS, 1, 2), almost), Verdict::Reject(Rejection::NotLatched));
        let silent = t0 + RELATCH_AFTER;
        assert_eq!(check.check(Channel::Rtp, addr(STRANGER), &rtp(OPUS, 1, 2), silent), Verdict::Rtp);
        assert_eq!(check.check(Channel::Rtp, addr(CALLER), &rtp(OPUS, 2, 1), silent), Verdict::Reject(Rejection::NotLatched));
    }

    #[test]
    fn rejected_packets_do_not_keep_a_silent_latch_alive() {
        let mut check = check(SourceCheckMode::Latch);
        let t0 = Instant::now();
        assert_eq!(check.check(Channel::Rtp, addr(CALLER), &rtp(OPUS, 1, 1), t0), Verdict::Rtp);
        let during = t0 + Duration::from_secs(1);
        assert_eq!(check.check(Channel::Rtp, addr(STRANGER), &rtp(OPUS, 1, 2), during), Verdict::Reject(Rejection::NotLatched));
        // The caller restarted on a new port: it takes over 2 s after its last accepted packet.
        let restarted: SocketAddr = "192.0.2.10:40100".parse().unwrap();
        assert_eq!(check.check(Channel::Rtp, Some(restarted), &rtp(OPUS, 1, 3), t0 + RELATCH_AFTER), Verdict::Rtp);
    }

    #[test]
    fn the_same_stream_from_a_new_port_takes_over_at_once() {
        let mut check = check(SourceCheckMode::Latch);
        let now = Instant::now();
        assert_eq!(check.check(Channel::Rtp, addr(CALLER), &rtp(OPUS, 65534, 77), now), Verdict::Rtp);
        let rebound: SocketAddr = "192.0.2.10:41000".parse().unwrap();
        // Same SSRC, sequence continuing across the wrap: a NAT rebinding.
        assert_eq!(check.check(Channel::Rtp, Some(rebound), &rtp(OPUS, 2, 77), now), Verdict::Rtp);
        assert_eq!(check.check(Channel::Rtp, addr(CALLER), &rtp(OPUS, 1, 78), now), Verdict::Reject(Rejection::NotLatched));
        // A stranger who guessed the SSRC but not the sequence does not.
        assert_eq!(check.check(Channel::Rtp, addr(STRANGER), &rtp(OPUS, 40000, 77), now), Verdict::Reject(Rejection::NotLatched));
        // Nor a stranger replaying an old sequence number.
        assert_eq!(check.check(Channel::Rtp, addr(STRANGER), &rtp(OPUS, 2, 77), now), Verdict::Reject(Rejection::NotLatched));
    }

    #[test]
    fn rtcp_latches_on_its_own() {
        let mut check = check(SourceCheckMode::Latch);
        let now = Instant::now();
        assert_eq!(check.check(Channel::Rtp, addr(CALLER), &rtp(OPUS, 1, 1), now), Verdict::Rtp);
        // A sender's RTCP leaves from another socket than its RTP, even under rtcp-mux.
        assert_eq!(check.check(Channel::Muxed, addr(CALLER_RTCP), &rtcp_rr(), now), Verdict::Rtcp);
        assert_eq!(check.check(Channel::Rtcp, addr(STRANGER), &rtcp_rr(), now), Verdict::Reject(Rejection::NotLatched));
        assert_eq!(check.check(Channel::Rtcp, addr(CALLER_RTCP), b"\x80\xc9junk", now), Verdict::Reject(Rejection::Malformed));
        assert_eq!(check.check(Channel::Muxed, addr(CALLER), &rtp(OPUS, 2, 1), now), Verdict::Rtp);
    }

    #[test]
    fn strict_also_wants_the_offers_address() {
        let mut check = check(SourceCheckMode::Strict);
        let now = Instant::now();
        assert_eq!(check.check(Channel::Rtp, addr(STRANGER), &rtp(OPUS, 1, 1), now), Verdict::Reject(Rejection::Address));
        assert_eq!(check.check(Channel::Rtcp, addr(STRANGER), &rtcp_rr(), now), Verdict::Reject(Rejection::Address));
        assert_eq!(check.check(Channel::Rtp, addr(CALLER), &rtp(OPUS, 1, 1), now), Verdict::Rtp);
        // Same address, another port: still only the latched one.
        assert_eq!(check.check(Channel::Rtp, addr("192.0.2.10:40002"), &rtp(OPUS, 9, 2), now), Verdict::Reject(Rejection::NotLatched));
        assert_eq!(check.check(Channel::Rtcp, addr(CALLER_RTCP), &rtcp_rr(), now), Verdict::Rtcp);
    }

    #[test]
    fn strict_knows_an_ipv4_sender_seen_through_a_dual_stack_socket() {
        let mut check = check(SourceCheckMode::Strict);
        let mapped = addr("[::ffff:192.0.2.10]:40000");
        assert_eq!(check.check(Channel::Rtp, mapped, &rtp(OPUS, 1, 1), Instant::now()), Verdict::Rtp);
        assert_eq!(check.check(Channel::Rtp, addr(CALLER), &rtp(OPUS, 2, 1), Instant::now()), Verdict::Rtp, "the same source");
    }

    #[test]
    fn strict_with_an_unspecified_offer_address_latches_like_latch() {
        let unspecified: IpAddr = "0.0.0.0".parse().unwrap();
        let mut check = SourceCheck::new(SourceCheckMode::Strict, unspecified, unspecified, &[OPUS]);
        let now = Instant::now();
        assert_eq!(check.check(Channel::Rtp, addr(STRANGER), &rtp(OPUS, 1, 1), now), Verdict::Rtp);
        assert_eq!(check.check(Channel::Rtp, addr(CALLER), &rtp(OPUS, 1, 1), now), Verdict::Reject(Rejection::NotLatched));
    }

    #[test]
    fn every_negotiated_payload_type_is_taken() {
        let announced: IpAddr = "192.0.2.10".parse().unwrap();
        let mut check = SourceCheck::new(SourceCheckMode::Latch, announced, announced, &[96, 97, 101, 200]);
        let now = Instant::now();
        for pt in [96, 97, 101] {
            assert_eq!(check.check(Channel::Rtp, addr(CALLER), &rtp(pt, u16::from(pt), 1), now), Verdict::Rtp);
        }
        assert_eq!(check.check(Channel::Rtp, addr(CALLER), &rtp(98, 1, 1), now), Verdict::Reject(Rejection::PayloadType));
    }
}
