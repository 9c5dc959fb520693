//! Why a call is not taken, as the status codes SBCs and room systems act on:
//! 404 tries another route, 486 tells the user the room is full, 488 with a
//! `Warning` says which media did not fit, 503 with `Retry-After` lets a
//! carrier's SBC fail over to another node.

use crate::engine::EngineError;
use crate::model::sdp::{RenegotiationError, SdpError};
use rsipstack::sip::{Header, StatusCode, headers};

/// How long an overloaded node asks callers to wait before trying it again.
const RETRY_AFTER_SECS: u32 = 30;

#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    /// RFC 3261 §20.43: a three-digit code and a text for the user's logs.
    pub warning: Option<(u16, String)>,
    pub retry_after: Option<u32>,
}

impl Refusal {
    pub fn status(status: StatusCode) -> Refusal {
        Refusal { status, warning: None, retry_after: None }
    }

    pub fn headers(&self, agent: &str) -> Vec<Header> {
        let mut headers = Vec::new();
        if let Some((code, text)) = &self.warning {
            // The text is a quoted-string: no quotes or backslashes inside.
            let text: String = text.chars().map(|c| if matches!(c, '"' | '\\' | '\r' | '\n') { '\'' } else { c }).collect();
            headers.push(headers::Warning::from(format!("{code} {agent} \"{text}\"")).into());
        }
        if let Some(secs) = self.retry_after {
            headers.push(headers::RetryAfter::from(secs.to_string()).into());
        }
        headers
    }
}

impl From<&EngineError> for Refusal {
    fn from(error: &EngineError) -> Refusal {
        match error {
            EngineError::CompositionNotFound(_) => Refusal::status(StatusCode::NotFound),
            EngineError::CompositionFull(..) => Refusal::status(StatusCode::BusyHere),
            // 305 Incompatible media format (RFC 3261 §20.43).
            EngineError::Sdp(SdpError::NothingInCommon { .. }) => {
                Refusal { status: StatusCode::NotAcceptableHere, warning: Some((305, error.to_string())), retry_after: None }
            }
            EngineError::Renegotiation(RenegotiationError::Sdp(SdpError::NothingInCommon { .. })) => {
                Refusal { status: StatusCode::NotAcceptableHere, warning: Some((305, error.to_string())), retry_after: None }
            }
            // 399 Miscellaneous warning: the offer could not be read, or the running call cannot follow it.
            EngineError::Sdp(_) | EngineError::Renegotiation(_) => {
                Refusal { status: StatusCode::NotAcceptableHere, warning: Some((399, error.to_string())), retry_after: None }
            }
            EngineError::OverCapacity(_)
            | EngineError::PortsExhausted(_)
            | EngineError::TooManyCompositions(_)
            | EngineError::TooManyParticipants(_)
            | EngineError::ShuttingDown => Refusal {
                status: StatusCode::ServiceUnavailable,
                warning: Some((399, error.to_string())),
                retry_after: Some(RETRY_AFTER_SECS),
            },
            _ => Refusal { status: StatusCode::ServerInternalError, warning: Some((399, error.to_string())), retry_after: None },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ids::CompositionId;

    #[test]
    fn each_engine_refusal_maps_to_the_status_a_caller_acts_on() {
        let id = CompositionId::from("room".to_string());
        assert_eq!(Refusal::from(&EngineError::CompositionNotFound(id.clone())).status, StatusCode::NotFound);
        assert_eq!(Refusal::from(&EngineError::CompositionFull(id, 9)).status, StatusCode::BusyHere);
        let busy = Refusal::from(&EngineError::TooManyParticipants(10));
        assert_eq!((busy.status, busy.retry_after), (StatusCode::ServiceUnavailable, Some(RETRY_AFTER_SECS)));
        let codecs = Refusal::from(&EngineError::Sdp(SdpError::NothingInCommon { reason: "m-line 1 (audio): none".into(), supported: "PCMU".into() }));
        assert_eq!(codecs.status, StatusCode::NotAcceptableHere);
        assert_eq!(codecs.warning.as_ref().map(|w| w.0), Some(305));
    }

    #[test]
    fn a_warning_is_one_quoted_string_whatever_the_reason_holds() {
        let refusal = Refusal { status: StatusCode::NotAcceptableHere, warning: Some((305, "no \"G729\"\r\nhere".into())), retry_after: Some(5) };
        let lines: Vec<String> = refusal.headers("tutti").iter().map(|h| h.to_string()).collect();
        assert_eq!(lines, ["Warning: 305 tutti \"no 'G729'''here\"", "Retry-After: 5"]);
    }
}
