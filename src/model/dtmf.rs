//! DTMF keys as callers send them: RFC 4733 `telephone-event` packets in
//! the audio RTP stream (what room systems, softphones and PBXs send by
//! default), or a SIP INFO with an `application/dtmf-relay` body (the
//! fallback of endpoints that cannot send RFC 4733, e.g. behind some SBCs).

/// A key's RFC 4733 §3.2 event code as a character: `0`–`9`, `*`, `#`, `A`–`D`.
fn key(event: u8) -> Option<char> {
    match event {
        0..=9 => Some(char::from(b'0' + event)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + event - 12)),
        _ => None,
    }
}

/// The payload type, timestamp and payload of an RTP packet (RFC 3550
/// 5.1: CSRCs, a header extension and padding are skipped).
pub fn rtp_parts(packet: &[u8]) -> Option<(u8, u32, &[u8])> {
    if packet.len() < 12 || packet[0] >> 6 != 2 {
        return None;
    }
    let payload_type = packet[1] & 0x7f;
    let timestamp = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    let mut start = 12 + 4 * usize::from(packet[0] & 0x0f);
    if packet[0] & 0x10 != 0 {
        let words = packet.get(start + 2..start + 4)?;
        start += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    let mut end = packet.len();
    if packet[0] & 0x20 != 0 {
        end = end.checked_sub(usize::from(*packet.last()?))?;
    }
    Some((payload_type, timestamp, packet.get(start..end)?))
}

/// Turns a caller's `telephone-event` packets into key presses. One press
/// is sent as several packets with the same RTP timestamp (updates while
/// the key is held, then the end packet three times, RFC 4733 §2.5.1.4),
/// so a press is reported once, on the first packet of a new timestamp:
/// without waiting for the end, and still when packets are lost.
#[derive(Debug, Default)]
pub struct KeyReceiver {
    /// The timestamp of the last press reported.
    last_press: Option<u32>,
}

impl KeyReceiver {
    /// The key a `telephone-event` payload starts, if it starts one.
    pub fn packet(&mut self, timestamp: u32, payload: &[u8]) -> Option<char> {
        // event (8 bits), E|R|volume (8), duration (16); several events
        // in one packet (RFC 4733 §2.5.1.5, redundancy) begin with the newest.
        let event = *payload.first()?;
        if payload.len() < 4 || self.last_press == Some(timestamp) {
            return None;
        }
        let pressed = key(event)?;
        self.last_press = Some(timestamp);
        Some(pressed)
    }
}

/// The key in an `application/dtmf-relay` body (`Signal=5\r\nDuration=160`,
/// Cisco's format, which every SIP endpoint that sends DTMF by INFO uses).
pub fn dtmf_relay_key(body: &str) -> Option<char> {
    let signal = body.lines().find_map(|line| {
        let (name, value) = line.split_once('=')?;
        name.trim().eq_ignore_ascii_case("signal").then(|| value.trim())
    })?;
    // Digits, and the event codes some endpoints send instead of `*` and `#`.
    if let Ok(code) = signal.parse::<u8>() {
        return key(code);
    }
    let mut chars = signal.chars();
    let only = chars.next()?.to_ascii_uppercase();
    (chars.next().is_none() && matches!(only, '*' | '#' | 'A'..='D')).then_some(only)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(payload_type: u8, timestamp: u32, payload: &[u8]) -> Vec<u8> {
        let mut packet = vec![0x80, payload_type, 0, 1];
        packet.extend(timestamp.to_be_bytes());
        packet.extend([0, 0, 0, 7]);
        packet.extend(payload);
        packet
    }

    #[test]
    fn rtp_parts_skip_csrcs_extension_and_padding() {
        let plain = rtp(101, 160, &[5, 0x0a, 0, 160]);
        assert_eq!(rtp_parts(&plain), Some((101, 160, &[5, 0x0a, 0, 160][..])));
        // One CSRC, a one-word extension, two bytes of padding.
        let mut packet = vec![0xb1, 101, 0, 1, 0, 0, 0, 160, 0, 0, 0, 7, 1, 2, 3, 4, 0xbe, 0xde, 0, 1, 9, 9, 9, 9];
        packet.extend([3, 0x8a, 1, 64, 0, 2]);
        assert_eq!(rtp_parts(&packet), Some((101, 160, &[3, 0x8a, 1, 64][..])));
        assert_eq!(rtp_parts(&[0x80, 101, 0]), None);
        assert_eq!(rtp_parts(&[0x40; 16]), None, "not RTP version 2");
        let mut overpadded = rtp(101, 1, &[1]);
        *overpadded.last_mut().unwrap() = 200;
        overpadded[0] |= 0x20;
        assert_eq!(rtp_parts(&overpadded), None);
    }

    #[test]
    fn a_press_sent_as_many_packets_is_one_key_and_the_next_press_is_another() {
        let mut keys = KeyReceiver::default();
        let presses: Vec<Option<char>> = [
            (1000, [1, 0x0a, 0, 160]),
            (1000, [1, 0x0a, 1, 64]),
            (1000, [1, 0x8a, 3, 32]),
            (1000, [1, 0x8a, 3, 32]),
            (1000, [1, 0x8a, 3, 32]),
            (2600, [11, 0x0a, 0, 160]),
            (4200, [1, 0x0a, 0, 160]),
        ]
        .iter()
        .map(|(ts, payload)| keys.packet(*ts, payload))
        .collect();
        assert_eq!(presses, [Some('1'), None, None, None, None, Some('#'), Some('1')]);
    }

    #[test]
    fn a_press_whose_first_packets_were_lost_still_counts_once() {
        let mut keys = KeyReceiver::default();
        assert_eq!(keys.packet(500, &[10, 0x8a, 3, 32]), Some('*'));
        assert_eq!(keys.packet(500, &[10, 0x8a, 3, 32]), None);
    }

    #[test]
    fn events_that_are_not_keys_and_short_payloads_are_ignored() {
        let mut keys = KeyReceiver::default();
        assert_eq!(keys.packet(1, &[16, 0x0a, 0, 160]), None, "flash hook");
        assert_eq!(keys.packet(2, &[5, 0x0a]), None);
        assert_eq!(keys.packet(3, &[15, 0x0a, 0, 160]), Some('D'));
    }

    #[test]
    fn dtmf_relay_bodies_as_endpoints_write_them() {
        assert_eq!(dtmf_relay_key("Signal=5\r\nDuration=160\r\n"), Some('5'));
        assert_eq!(dtmf_relay_key("Signal= #\nDuration= 250"), Some('#'));
        assert_eq!(dtmf_relay_key("signal=*"), Some('*'));
        assert_eq!(dtmf_relay_key("Signal=11\r\n"), Some('#'));
        assert_eq!(dtmf_relay_key("Signal=b"), Some('B'));
        assert_eq!(dtmf_relay_key("Duration=160"), None);
        assert_eq!(dtmf_relay_key("Signal=E"), None);
        assert_eq!(dtmf_relay_key("Signal=99"), None);
    }
}
