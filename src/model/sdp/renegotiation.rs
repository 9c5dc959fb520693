//! A new offer in a running session (RFC 3264 §8): a re-INVITE or UPDATE
//! that puts a call on hold, resumes it, or moves its media to another
//! address or port.
//!
//! The caller's leg was built for what was negotiated when it joined: its
//! codecs, its payload types, whether Tutti sends and receives on each
//! medium, rtcp-mux or not. A re-offer may change, live, only what the leg
//! can follow without being rebuilt: where Tutti sends, and whether it sends
//! or receives at all (never more than it was built for). Anything else is
//! refused, which leaves the call as it was (RFC 3261 §14.2: 488).

use super::crypto::MediaEncryption;
use super::{Direction, NegotiatedMedia, Negotiation, SdpError, negotiate};
use crate::model::codec::MediaKind;
use sdp_types::Session;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RenegotiationError {
    #[error(transparent)]
    Sdp(#[from] SdpError),
    /// A change the running leg cannot make; the call goes on as it was.
    #[error("{0}; the call goes on as it was")]
    Unsupported(String),
}

impl Negotiation {
    /// Negotiates `offer` against the session as it was built (`self`, the
    /// negotiation of the join): the same m-lines, the same codec and
    /// payload type on each accepted one, directions within what was built.
    /// A medium declined at the join (say video in an audio-only
    /// composition) stays declined.
    pub fn renegotiate(&self, offer: &str) -> Result<Negotiation, RenegotiationError> {
        // The policy was applied at the join; here only the leg as built counts.
        let mut next = negotiate(offer, MediaEncryption::Optional)?;
        if next.offered.len() != self.offered.len() {
            return Err(unsupported(format!(
                "the offer has {} m-lines where the session has {} (adding or removing streams in a call is not supported)",
                next.offered.len(),
                self.offered.len()
            )));
        }
        if self.video.is_none() {
            next.video = None;
        }
        if self.audio.is_none() {
            next.audio = None;
        }
        for kind in [MediaKind::Audio, MediaKind::Video] {
            let (built, offered) = match kind {
                MediaKind::Audio => (&self.audio, &next.audio),
                MediaKind::Video => (&self.video, &next.video),
            };
            match (built, offered) {
                (Some(built), Some(offered)) => check_same_leg(kind, built, offered)?,
                (Some(_), None) => return Err(unsupported(format!("the offer drops the {kind} stream"))),
                (None, _) => {}
            }
        }
        // An SRTP leg keeps Tutti's key: its encoder was built with it.
        for (built, next) in [(&self.audio, &mut next.audio), (&self.video, &mut next.video)] {
            if let (Some(built), Some(next)) = (built, next.as_mut()) {
                next.srtp = built.srtp.clone();
            }
        }
        Ok(next)
    }

    /// Whether Tutti sends the caller nothing at all: it put the call on
    /// hold (`sendonly`, `inactive` or `c=0.0.0.0` on every medium).
    pub fn holds(&self) -> bool {
        self.accepted().all(|m| !m.direction.sends())
    }
}

fn check_same_leg(kind: MediaKind, built: &NegotiatedMedia, offered: &NegotiatedMedia) -> Result<(), RenegotiationError> {
    if offered.mline != built.mline {
        return Err(unsupported(format!("the {kind} stream moved from m-line {} to {}", built.mline + 1, offered.mline + 1)));
    }
    if (offered.codec, offered.payload_type) != (built.codec, built.payload_type) {
        return Err(unsupported(format!(
            "changing the {kind} codec in a call ({} payload type {} to {} payload type {}) is not supported",
            built.codec.name(),
            built.payload_type,
            offered.codec.name(),
            offered.payload_type
        )));
    }
    match (&built.srtp, &offered.srtp) {
        (None, None) => {}
        (Some(built), Some(offered)) if (built.suite, &built.receive) == (offered.suite, &offered.receive) => {}
        (Some(_), Some(_)) => return Err(unsupported(format!("new SRTP keys for the {kind} stream in a call are not supported"))),
        _ => return Err(unsupported(format!("switching the {kind} stream between RTP and SRTP in a call is not supported"))),
    }
    if offered.rtcp_mux != built.rtcp_mux {
        return Err(unsupported(format!("switching rtcp-mux on the {kind} stream in a call is not supported")));
    }
    let wider = |can: fn(Direction) -> bool| can(offered.direction) && !can(built.direction);
    if wider(Direction::sends) || wider(Direction::receives) {
        return Err(unsupported(format!(
            "the {kind} stream was set up {} and cannot become {} in a call",
            built.direction.as_attribute(),
            offered.direction.as_attribute()
        )));
    }
    Ok(())
}

fn unsupported(reason: String) -> RenegotiationError {
    RenegotiationError::Unsupported(reason)
}

/// An answer with its o= version set: each new answer in a session carries
/// the previous version plus one (RFC 3264 §8).
pub fn with_origin_version(answer: &str, version: u64) -> String {
    let Ok(mut session) = Session::parse(answer.trim_end().as_bytes()) else {
        return answer.to_string();
    };
    session.origin.sess_version = version;
    let mut out = Vec::new();
    session.write(&mut out).expect("writing SDP into a Vec cannot fail");
    String::from_utf8(out).expect("sdp-types writes UTF-8")
}

#[cfg(test)]
mod tests {
    use super::super::{Canvas, LocalTransport};
    use super::*;

    const JOIN: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n\
        m=audio 4000 RTP/AVP 0 8\r\n\
        m=video 4002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n";

    fn built() -> Negotiation {
        negotiate(JOIN, MediaEncryption::Optional).unwrap()
    }

    fn with_direction(attribute: &str) -> String {
        JOIN.replace("t=0 0\r\n", &format!("t=0 0\r\na={attribute}\r\n"))
    }

    #[test]
    fn a_sendonly_hold_is_answered_recvonly_and_stops_tutti_sending() {
        let held = built().renegotiate(&with_direction("sendonly")).unwrap();
        assert_eq!(held.audio.as_ref().unwrap().direction, Direction::RecvOnly);
        assert_eq!(held.video.as_ref().unwrap().direction, Direction::RecvOnly);
        assert!(held.holds());
        let answer = held.answer(&local(), CANVAS, 9);
        assert_eq!(answer.matches("a=recvonly\r\n").count(), 2, "{answer}");
        assert!(!answer.contains("sendrecv"), "a hold answered sendrecv makes carriers hang up: {answer}");
    }

    #[test]
    fn an_inactive_hold_is_answered_inactive() {
        let held = built().renegotiate(&with_direction("inactive")).unwrap();
        assert!(held.holds());
        assert!(held.accepted().all(|m| m.direction == Direction::Inactive));
    }

    #[test]
    fn a_zero_address_is_a_hold() {
        let held = built().renegotiate(&JOIN.replace("c=IN IP4 10.0.0.5", "c=IN IP4 0.0.0.0")).unwrap();
        assert!(held.holds());
        assert_eq!(held.audio.unwrap().direction, Direction::RecvOnly);
    }

    #[test]
    fn resuming_sends_again() {
        let resumed = built().renegotiate(&with_direction("sendrecv")).unwrap();
        assert!(!resumed.holds());
        assert!(resumed.accepted().all(|m| m.direction == Direction::SendRecv));
    }

    #[test]
    fn a_moved_port_is_followed() {
        let moved = built().renegotiate(&JOIN.replace("m=audio 4000", "m=audio 5000")).unwrap();
        assert_eq!(moved.audio.unwrap().remote_rtp, "10.0.0.5:5000".parse().unwrap());
    }

    #[test]
    fn a_changed_codec_is_refused() {
        let error = built().renegotiate(&JOIN.replace("RTP/AVP 0 8", "RTP/AVP 8 0")).unwrap_err();
        assert!(matches!(&error, RenegotiationError::Unsupported(r) if r.contains("pcmu payload type 0 to pcma payload type 8")), "{error}");
    }

    #[test]
    fn a_dropped_or_added_stream_is_refused() {
        let dropped = JOIN.replace("m=video 4002", "m=video 0");
        assert!(matches!(built().renegotiate(&dropped), Err(RenegotiationError::Unsupported(_))));
        let added = format!("{JOIN}m=audio 4010 RTP/AVP 0\r\n");
        assert!(matches!(built().renegotiate(&added), Err(RenegotiationError::Unsupported(_))));
    }

    #[test]
    fn a_leg_built_receive_only_cannot_start_sending() {
        let publisher = negotiate(&with_direction("sendonly"), MediaEncryption::Optional).unwrap();
        let error = publisher.renegotiate(JOIN).unwrap_err();
        assert!(error.to_string().contains("set up recvonly and cannot become sendrecv"), "{error}");
    }

    #[test]
    fn a_medium_declined_at_the_join_stays_declined() {
        let audio_only = negotiate(JOIN, MediaEncryption::Optional).unwrap().without_video().unwrap();
        let next = audio_only.renegotiate(&with_direction("sendonly")).unwrap();
        assert!(next.video.is_none());
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        assert!(matches!(built().renegotiate("v=0\r\nrubbish"), Err(RenegotiationError::Sdp(SdpError::Malformed(_)))));
    }

    #[test]
    fn the_origin_version_is_set() {
        let answer = built().answer(&local(), CANVAS, 9);
        assert!(answer.contains("o=tutti 9 1 IN IP4"), "{answer}");
        let next = with_origin_version(&answer, 2);
        assert!(next.contains("o=tutti 9 2 IN IP4"), "{next}");
        assert_eq!(next.replace("o=tutti 9 2", "o=tutti 9 1"), answer);
    }

    const CANVAS: Canvas = Canvas { width: 1280, height: 720, fps: 30 };

    fn local() -> LocalTransport {
        LocalTransport { address: "192.0.2.1".parse().unwrap(), audio_port: Some(20000), video_port: Some(20002) }
    }
}
