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
}

/// The SIP dialog a participant belongs to, as its headers said.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SipCall {
    pub call_id: String,
    pub from: String,
    pub to: String,
    pub user_agent: Option<String>,
}

impl Signalling {
    /// `transport` in the participant's JSON.
    pub fn transport(&self) -> &'static str {
        match self {
            Signalling::Api => "rtp",
            Signalling::Sip(_) => "sip",
        }
    }

    pub fn sip(&self) -> Option<&SipCall> {
        match self {
            Signalling::Api => None,
            Signalling::Sip(call) => Some(call),
        }
    }
}
