//! The watchdogs of a composition, read on the engine's tick: every flow
//! that should move (each way of each caller's media, the composite, each
//! output's bytes) has a [`FlowWatch`]; a flow that stops shows in the API
//! (`state`, `last_error`) and is logged at warn level, and again at info
//! level when it moves again. Reading them costs a few atomic loads.

use std::time::{Duration, Instant};

use super::{Composition, OutputRecord, OutputState, ParticipantState};
use crate::events::EventBus;
use crate::media::{CompositionMedia, Flow, ParticipantMedia, Way};
use crate::model::codec::MediaKind;
use crate::model::event::EventKind;
use crate::model::health::{Arm, COMPOSITE_STALL, FlowChange, FlowWatch, LEG_STALL};
use crate::model::ids::{CompositionId, OutputId, ParticipantId};

struct LegWatch {
    flow: Flow,
    watch: FlowWatch,
}

impl LegWatch {
    fn problem(&self) -> String {
        let secs = LEG_STALL.as_secs_f64();
        match (self.flow.way, self.flow.kind) {
            (Way::FromCaller, kind) => format!("no {kind} has arrived from the caller for {secs:.1} s"),
            (Way::ToCaller, MediaKind::Audio) => format!("Tutti has sent the caller no audio (its mix-minus) for {secs:.1} s"),
            (Way::ToCaller, MediaKind::Video) => format!("Tutti has sent the caller no video (the composite) for {secs:.1} s"),
        }
    }
}

/// One watch per way of each medium its leg carries: what the caller sends
/// (counted from its first packet: a caller may take its time to start),
/// and what Tutti sends it (counted from the join: it must flow at once).
pub(super) struct LegWatches(Vec<LegWatch>);

impl LegWatches {
    pub(super) fn new(media: &ParticipantMedia, now: Instant) -> LegWatches {
        let watch = |flow: Flow| {
            let arm = match flow.way {
                Way::FromCaller => Arm::OnFirstMovement,
                Way::ToCaller => Arm::AtOnce,
            };
            LegWatch { flow, watch: FlowWatch::new(now, LEG_STALL, arm) }
        };
        LegWatches(media.leg.flows().into_iter().map(watch).collect())
    }

    fn interrupted(&self) -> bool {
        self.0.iter().any(|w| w.watch.stalled())
    }
}

/// The composite's pulse: frames out of the compositor.
pub(super) struct CompositeWatch {
    watch: FlowWatch,
    pub(super) last_error: Option<String>,
}

impl CompositeWatch {
    pub(super) fn new(now: Instant) -> CompositeWatch {
        CompositeWatch { watch: FlowWatch::new(now, COMPOSITE_STALL, Arm::AtOnce), last_error: None }
    }

    pub(super) fn frozen(&self) -> bool {
        self.watch.stalled()
    }
}

/// An output's bytes, counted once it has written (or sent) its first.
pub(super) struct OutputWatch {
    watch: FlowWatch,
}

impl OutputWatch {
    pub(super) fn new(now: Instant, stall_after: Duration) -> OutputWatch {
        OutputWatch { watch: FlowWatch::new(now, stall_after, Arm::OnFirstMovement) }
    }

    /// What the API says while it is stalled.
    pub(super) fn problem(&self) -> Option<String> {
        self.watch.stalled().then(|| format!("no bytes written or sent for {:.1} s", self.watch.stall_after().as_secs_f64()))
    }
}

impl OutputRecord {
    pub(super) fn bytes(&self, media: &CompositionMedia) -> u64 {
        match &self.publisher {
            Some(publisher) => publisher.stats().bytes_sent,
            None => media.file_output_status(&self.id).map_or(0, |s| s.bytes_written),
        }
    }
}

impl Composition {
    /// Feeds every watchdog one reading; reports (log and event) and
    /// records what changed.
    pub(super) fn watch(&mut self, id: &CompositionId, now: Instant, stale_after: Duration, events: &EventBus) {
        if let (Some(composite), Some(frames)) = (&mut self.composite, self.media.composite_frames()) {
            match composite.watch.observe(frames, now) {
                Some(FlowChange::Stopped) => {
                    let problem = format!("the compositor produced no frame for {:.1} s", COMPOSITE_STALL.as_secs_f64());
                    tracing::warn!(composition = %id, "composite frozen: {problem}");
                    events.publish(id, EventKind::CompositionFrozen { reason: problem.clone() });
                    composite.last_error = Some(problem);
                }
                Some(FlowChange::Resumed) => {
                    tracing::info!(composition = %id, "composite moving again");
                    events.publish(id, EventKind::CompositionRunning);
                }
                None => {}
            }
        }
        for participant in &mut self.participants {
            let Some(media) = self.media.participant(&participant.id) else { continue };
            if participant.lobby.is_some() {
                // Sent no picture and not yet expected in the room; watched from its admission.
                continue;
            }
            for leg in &mut participant.watches.0 {
                match leg.watch.observe(media.leg.count(leg.flow), now) {
                    Some(FlowChange::Stopped) => {
                        let problem = leg.problem();
                        tracing::warn!(composition = %id, participant = %participant.id, "{problem}");
                        participant.last_error = Some(problem);
                    }
                    Some(FlowChange::Resumed) => tracing::info!(
                        composition = %id, participant = %participant.id, kind = %leg.flow.kind, way = ?leg.flow.way, "media flows again"
                    ),
                    None => {}
                }
            }
            let next = ParticipantState::from_media(
                media.leg.expects_media(),
                media.leg.last_media_age(),
                participant.joined.elapsed(),
                stale_after,
                participant.watches.interrupted(),
            );
            if next != participant.state {
                tracing::info!(composition = %id, participant = %participant.id, from = ?participant.state, to = ?next, "participant state");
                participant.state = next;
                let reason = participant.last_error.clone().unwrap_or_default();
                if let Some(what) = participant_event(next, &participant.id, reason) {
                    events.publish(id, what);
                }
            }
        }
        for output in &mut self.outputs {
            let bytes = output.bytes(&self.media);
            match output.watch.watch.observe(bytes, now) {
                Some(FlowChange::Stopped) => {
                    tracing::warn!(composition = %id, output = %output.id, "output stalled: {}", output.watch.problem().unwrap_or_default())
                }
                Some(FlowChange::Resumed) => tracing::info!(composition = %id, output = %output.id, "output moving again"),
                None => {}
            }
        }
        // An output's state comes from several sources (its publisher, its
        // part's bus, its watchdog): the view decides it, the change is announced.
        let changed: Vec<(OutputId, OutputState, Option<String>)> = self
            .outputs
            .iter()
            .filter_map(|o| {
                let view = self.output_view(id, o);
                (view.state != o.announced).then(|| (o.id.clone(), view.state, view.last_error))
            })
            .collect();
        for (oid, state, reason) in changed {
            if let Some(output) = self.outputs.iter_mut().find(|o| o.id == oid) {
                output.announced = state;
            }
            events.publish(id, output_event(state, oid, reason));
        }
    }
}

/// The event for a participant entering `state`; joining is announced
/// when it happens, not from here.
fn participant_event(state: ParticipantState, participant: &ParticipantId, reason: String) -> Option<EventKind> {
    let participant = participant.clone();
    match state {
        // Dial-outs announce these themselves, before they have media; the lobby has its own events.
        ParticipantState::Connecting
        | ParticipantState::Calling
        | ParticipantState::Ringing
        | ParticipantState::Failed
        | ParticipantState::AwaitingPin => None,
        ParticipantState::Active => Some(EventKind::ParticipantActive { participant }),
        ParticipantState::Interrupted => Some(EventKind::ParticipantInterrupted { participant, reason }),
        ParticipantState::Stale => Some(EventKind::ParticipantStale { participant }),
    }
}

fn output_event(state: OutputState, output: OutputId, reason: Option<String>) -> EventKind {
    match state {
        OutputState::Connecting => EventKind::OutputConnecting { output },
        OutputState::Live => EventKind::OutputLive { output },
        OutputState::Reconnecting => EventKind::OutputReconnecting { output, reason },
        OutputState::Stalled => EventKind::OutputStalled { output, reason },
        OutputState::Failed => EventKind::OutputFailed { output, reason },
        OutputState::Stopped => EventKind::OutputStopped { output },
    }
}
