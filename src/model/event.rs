//! What the engine tells operators: every state change of a composition,
//! a participant or an output, and every watchdog alarm, as one JSON object
//! with a sequence number and a time. The same events go to `GET /v1/events`
//! (Server-Sent Events) and to the configured webhooks.
//!
//! ```json
//! {"seq": 7, "time": "2026-11-30T17:02:03.5Z", "type": "participant_interrupted",
//!  "composition": "c-…", "participant": "p-…", "reason": "no audio has arrived from the caller for 2.0 s"}
//! ```

use serde::Serialize;
use time::OffsetDateTime;

use super::controls::ParticipantControls;
use super::ids::{CompositionId, OutputId, ParticipantId};
use super::layout::LayoutKind;
use super::output::OutputKind;

/// One thing that happened, numbered in the order the engine saw it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// Starts at 1 and grows by one per event for the life of the process:
    /// a gap means events were missed.
    pub seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub composition: CompositionId,
    #[serde(flatten)]
    pub what: EventKind,
}

/// The kinds of event; `type` in JSON.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    CompositionCreated { name: Option<String> },
    CompositionDeleted,
    /// Watchdog: the compositor produced no frame for a while.
    CompositionFrozen { reason: String },
    /// The compositor produces frames again after being frozen.
    CompositionRunning,
    ParticipantJoined { participant: ParticipantId, name: String },
    /// Tutti dials it out (`POST .../participants` with a `sip_uri`).
    ParticipantCalling { participant: ParticipantId, name: String, sip_uri: String },
    /// The dialled endpoint is alerting (SIP 180/183).
    ParticipantRinging { participant: ParticipantId },
    /// The dial-out will not be answered; the SIP status and reason.
    ParticipantFailed { participant: ParticipantId, reason: String },
    /// Media flows both ways (first time, or again after an interruption).
    ParticipantActive { participant: ParticipantId },
    /// Watchdog: one of its flows, either way, stopped.
    ParticipantInterrupted { participant: ParticipantId, reason: String },
    /// Nothing arrived from it for longer than the stale timeout.
    ParticipantStale { participant: ParticipantId },
    /// Its media pipeline reported an error.
    ParticipantError { participant: ParticipantId, message: String },
    ParticipantLeft { participant: ParticipantId },
    /// A caller who dialled in keyed in the room's PIN: it is in the room now.
    ParticipantAdmitted { participant: ParticipantId },
    /// A caller keyed in a wrong PIN (`attempts_left` more tries), or ran
    /// out of tries or time (`attempts_left` 0: its call is ended).
    ParticipantPinFailed { participant: ParticipantId, reason: String, attempts_left: u32 },
    /// Its endpoint put the call on hold: Tutti sends it nothing meanwhile.
    ParticipantHeld { participant: ParticipantId },
    /// Its endpoint took the call off hold: media flows both ways again.
    ParticipantResumed { participant: ParticipantId },
    /// A producer changed its name or its controls (`PATCH`); what they are now.
    ParticipantUpdated { participant: ParticipantId, name: String, controls: ParticipantControls },
    /// A WebRTC guest's link changed what it can carry: it is sent the
    /// composite at this bitrate and size now (lower than the composition's
    /// on a poor link, back up when the link recovers), by its bandwidth estimate.
    ParticipantPictureRate { participant: ParticipantId, bitrate_kbps: u32, width: u32, height: u32, bandwidth_estimate_kbps: u64 },
    /// Who the layouts follow now: the caller talking clearly longer than the
    /// last one, or nobody (`null`: that one left or was muted, and nobody
    /// else talks).
    ActiveSpeakerChanged { participant: Option<ParticipantId> },
    /// A producer changed the layout (`PUT .../layout`); its kind now.
    LayoutChanged { kind: LayoutKind },
    OutputAdded { output: OutputId, kind: OutputKind },
    OutputConnecting { output: OutputId },
    OutputLive { output: OutputId },
    OutputReconnecting { output: OutputId, reason: Option<String> },
    /// Watchdog: live, but its bytes stopped growing.
    OutputStalled { output: OutputId, reason: Option<String> },
    OutputFailed { output: OutputId, reason: Option<String> },
    OutputStopped { output: OutputId },
    OutputRemoved { output: OutputId },
}

impl EventKind {
    /// The `type` field, also used as a metric label and in webhook headers.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::CompositionCreated { .. } => "composition_created",
            EventKind::CompositionDeleted => "composition_deleted",
            EventKind::CompositionFrozen { .. } => "composition_frozen",
            EventKind::CompositionRunning => "composition_running",
            EventKind::ParticipantJoined { .. } => "participant_joined",
            EventKind::ParticipantCalling { .. } => "participant_calling",
            EventKind::ParticipantRinging { .. } => "participant_ringing",
            EventKind::ParticipantFailed { .. } => "participant_failed",
            EventKind::ParticipantActive { .. } => "participant_active",
            EventKind::ParticipantInterrupted { .. } => "participant_interrupted",
            EventKind::ParticipantStale { .. } => "participant_stale",
            EventKind::ParticipantError { .. } => "participant_error",
            EventKind::ParticipantLeft { .. } => "participant_left",
            EventKind::ParticipantAdmitted { .. } => "participant_admitted",
            EventKind::ParticipantPinFailed { .. } => "participant_pin_failed",
            EventKind::ParticipantHeld { .. } => "participant_held",
            EventKind::ParticipantResumed { .. } => "participant_resumed",
            EventKind::ParticipantUpdated { .. } => "participant_updated",
            EventKind::ParticipantPictureRate { .. } => "participant_picture_rate",
            EventKind::ActiveSpeakerChanged { .. } => "active_speaker_changed",
            EventKind::LayoutChanged { .. } => "layout_changed",
            EventKind::OutputAdded { .. } => "output_added",
            EventKind::OutputConnecting { .. } => "output_connecting",
            EventKind::OutputLive { .. } => "output_live",
            EventKind::OutputReconnecting { .. } => "output_reconnecting",
            EventKind::OutputStalled { .. } => "output_stalled",
            EventKind::OutputFailed { .. } => "output_failed",
            EventKind::OutputStopped { .. } => "output_stopped",
            EventKind::OutputRemoved { .. } => "output_removed",
        }
    }

    /// Watchdog alarms and failures: what an operator is paged for.
    pub fn is_alarm(&self) -> bool {
        matches!(
            self,
            EventKind::CompositionFrozen { .. }
                | EventKind::ParticipantInterrupted { .. }
                | EventKind::ParticipantStale { .. }
                | EventKind::ParticipantError { .. }
                | EventKind::ParticipantFailed { .. }
                | EventKind::OutputStalled { .. }
                | EventKind::OutputFailed { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_one_flat_json_object_with_its_type() {
        let event = Event {
            seq: 7,
            time: OffsetDateTime::UNIX_EPOCH,
            composition: CompositionId::from("c1".to_string()),
            what: EventKind::ParticipantInterrupted {
                participant: ParticipantId::from("p1".to_string()),
                reason: "no audio".into(),
            },
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "seq": 7, "time": "1970-01-01T00:00:00Z", "type": "participant_interrupted",
                "composition": "c1", "participant": "p1", "reason": "no audio"
            })
        );
        assert_eq!(json["type"], event.what.name());
    }

    #[test]
    fn nobody_speaking_is_a_null_participant() {
        let json = serde_json::to_value(EventKind::ActiveSpeakerChanged { participant: None }).unwrap();
        assert_eq!(json, serde_json::json!({"type": "active_speaker_changed", "participant": null}));
        let json = serde_json::to_value(EventKind::ActiveSpeakerChanged { participant: Some(ParticipantId::from("p1".to_string())) }).unwrap();
        assert_eq!(json, serde_json::json!({"type": "active_speaker_changed", "participant": "p1"}));
    }

    #[test]
    fn a_unit_kind_has_only_its_type() {
        let json = serde_json::to_value(EventKind::CompositionDeleted).unwrap();
        assert_eq!(json, serde_json::json!({"type": "composition_deleted"}));
    }
}
