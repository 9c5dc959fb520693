//! How a participant arrived: what the API shows as `transport` (and `sip`),
//! so a producer can tell a SIP room system from a caller a platform added.
//! Only descriptive strings live here; SIP itself stays in `crate::sip`.

use serde::Serialize;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Signalling {
    /// Added through the REST API with an SDP offer (plain RTP).
    #[default]
    Api,
    /// Called in (or was called) over SIP.
    Sip(SipCall),
    /// Added through the REST API as an RTMP publisher with a stream key.
    Rtmp,
    /// Added through the REST API as an SRT publisher with a stream key.
    Srt,
    /// Added through the REST API with a browser's WebRTC offer.
    WebRtc,
    /// A WHIP publisher (OBS, an encoder): WebRTC, sending only.
    Whip,
}

/// The SIP dialog a participant belongs to, as its headers said.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SipCall {
    pub call_id: String,
    pub from: String,
    pub to: String,
    pub user_agent: Option<String>,
    pub direction: CallDirection,
}

/// Who called whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallDirection {
    /// It called Tutti: a room's PIN is asked of it.
    Inbound,
    /// Tutti called it (a dial-out): the producer chose it, no PIN.
    Outbound,
}

impl Signalling {
    /// `transport` in the participant's JSON.
    pub fn transport(&self) -> &'static str {
        match self {
            Signalling::Api => "rtp",
            Signalling::Sip(_) => "sip",
            Signalling::Rtmp => "rtmp",
            Signalling::Srt => "srt",
            Signalling::WebRtc => "webrtc",
            Signalling::Whip => "whip",
        }
    }

    /// Whether it dialled in, and so must key in the room's PIN if it has one.
    pub fn dialled_in(&self) -> bool {
        matches!(self, Signalling::Sip(call) if call.direction == CallDirection::Inbound)
    }

    pub fn sip(&self) -> Option<&SipCall> {
        match self {
            Signalling::Api | Signalling::Rtmp | Signalling::Srt | Signalling::WebRtc | Signalling::Whip => None,
            Signalling::Sip(call) => Some(call),
        }
    }
}
