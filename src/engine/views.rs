//! What the API shows of compositions and participants (JSON, snake_case).

use serde::Serialize;
use std::time::Duration;
use time::OffsetDateTime;

use super::{Attachment, Composition, Ingest, OutputRecord};
use crate::media::{IngestView, Leg, MediumStats, SentPicture, WebRtcStats};
use crate::rtmp::mask_stream_key;
use crate::model::output::{OutputKind, ValidOutput};
use crate::rtmp::PublisherState;
use crate::model::composition::{AudioConfig, VideoConfig};
use crate::model::controls::ParticipantControls;
use crate::model::ids::{CompositionId, OutputId, ParticipantId};
use crate::model::layout::{LayoutConfig, Placement};
use crate::model::signalling::SipCall;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantState {
    /// Joined; no media from it yet.
    Connecting,
    /// Media flows both ways as negotiated (or the caller only receives).
    Active,
    /// A flow stopped for 2 s or more: the caller's media stopped arriving,
    /// or what Tutti sends it (mix-minus, composite) stopped leaving;
    /// `last_error` says which. Back to `active` when it flows again.
    Interrupted,
    /// Nothing arrived for longer than the stale timeout. It stays until deleted.
    Stale,
    /// Dialled in to a room with a PIN and keying it in (DTMF): not in the
    /// layout or the mix yet, hearing the prompt, sent no picture.
    AwaitingPin,
    /// A dial-out: Tutti's INVITE is on its way.
    Calling,
    /// A dial-out whose callee is alerting (180/183).
    Ringing,
    /// A dial-out that was not answered (`last_error` has the SIP status
    /// and reason). It stays until deleted.
    Failed,
}

impl ParticipantState {
    /// Pure state rule: a caller expected to send is `stale` once it has
    /// been silent (or never spoke) for `stale_after`; short of that, a
    /// stopped flow either way (`interrupted`, from the watchdogs) makes it
    /// `interrupted`; else it is `connecting` before its first packet and
    /// `active` after. A receive-only caller is never `connecting` or `stale`.
    pub fn from_media(
        expects_media: bool,
        last_media_age: Option<Duration>,
        since_join: Duration,
        stale_after: Duration,
        interrupted: bool,
    ) -> ParticipantState {
        let stale = match last_media_age {
            Some(age) => age > stale_after,
            None => since_join > stale_after,
        };
        match (expects_media, last_media_age) {
            (true, _) if stale => ParticipantState::Stale,
            _ if interrupted => ParticipantState::Interrupted,
            (true, None) => ParticipantState::Connecting,
            _ => ParticipantState::Active,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ParticipantView {
    pub id: ParticipantId,
    pub name: String,
    /// `rtp` (added through the API with an SDP offer), `sip`, or `rtmp`
    /// (a publisher with a stream key).
    pub transport: &'static str,
    /// The SIP dialog (`call_id`, `from`, `to`, `user_agent`) of a SIP participant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip: Option<SipCall>,
    pub state: ParticipantState,
    /// Its endpoint put the call on hold (a re-offer `sendonly`, `inactive`
    /// or `c=0.0.0.0`): Tutti sends it nothing until it resumes; it stays
    /// in the layout and the mix.
    pub on_hold: bool,
    /// What the producer set (`PATCH`): mute, volume, hidden, deaf.
    pub controls: ParticipantControls,
    /// Where its picture is on the canvas (`x`, `y`, `width`, `height` in
    /// pixels, `z` higher in front); `null` when the layout does not show it.
    pub rect: Option<Placement>,
    /// Whether it is talking now (muted or not: what it sends).
    pub speaking: bool,
    /// The level of what it sends, before its volume, in dBov (RFC 6464:
    /// -127 is silence, 0 the loudest); `null` if it sends no audio.
    pub audio_level_dbov: Option<f64>,
    pub audio: Option<MediumStats>,
    pub video: Option<MediumStats>,
    /// A WebRTC guest's connection: NACKs, retransmissions, keyframe requests, bandwidth estimate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webrtc: Option<WebRtcStats>,
    /// An RTMP participant's ingest: where its publisher sends, its stream
    /// key (masked but in the answer to the POST that made it), and whether
    /// it publishes now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest: Option<IngestView>,
    pub last_error: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputState {
    Connecting,
    Live,
    Reconnecting,
    /// Live, but its bytes have not grown for 2 s (`last_error` says so).
    Stalled,
    Failed,
    Stopped,
}

#[derive(Clone, Debug, Serialize)]
pub struct OutputView {
    pub id: OutputId,
    pub kind: OutputKind,
    pub state: OutputState,
    /// RTMP only, with the stream key masked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Recordings only, relative to the recordings directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// HLS only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub playlist_url: Option<String>,
    /// Bytes sent to the server (RTMP) or written to disk (HLS, recordings).
    pub bytes_sent: u64,
    pub reconnects: u64,
    /// Whole GOPs dropped because the destination could not keep up.
    pub dropped_gops: u64,
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// `GET /healthz`: the engine answered, and what it holds.
#[derive(Clone, Debug, Serialize)]
pub struct HealthView {
    pub status: &'static str,
    pub compositions: usize,
    pub participants: usize,
    pub outputs: usize,
    /// Parts (callers, outputs, compositions) whose media is still stopping.
    pub parts_stopping: usize,
    /// Of those, the ones that did not stop in time: detached, left to finish.
    pub parts_stuck: usize,
    /// CPU cores committed to this node's compositions, callers and outputs (admission by cost).
    pub cpu_committed_cores: f64,
    /// What it may commit; `null` when admission is off.
    pub cpu_budget_cores: Option<f64>,
}

/// Everything `/metrics` shows that the engine knows, read in one go.
#[derive(Clone, Debug)]
pub struct MetricsSnapshot {
    pub health: HealthView,
    pub compositions: Vec<CompositionView>,
    /// (composition, encoder, frames waiting for it).
    pub encoder_queues: Vec<(CompositionId, String, u32)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BroadcastView {
    pub video_encoders: usize,
    pub audio_encoders: usize,
    /// Whether they are at work: only while an output, a caller sharing the
    /// encode or a player of the embedded server takes it.
    pub encoding: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct MixMinusView {
    /// Callers whose mix-minus is encoded for them alone.
    pub own_encodes: usize,
    /// Callers who have put nothing audible into the mix for a second (muted,
    /// silent, sending nothing), and so hear exactly the full mix: they are
    /// sent one encode of it, shared.
    pub shared: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct CompositionView {
    pub id: CompositionId,
    pub name: Option<String>,
    /// `running`, or `frozen` while the compositor produces no frames.
    pub state: &'static str,
    pub last_error: Option<String>,
    pub audio_only: bool,
    /// Whether callers who dial in must key in a PIN (the PIN is never shown).
    pub pin_required: bool,
    /// The canvas; absent in an audio-only composition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoConfig>,
    pub audio: AudioConfig,
    pub layout: LayoutConfig,
    /// Who the layouts follow: the participant talking, or `null`.
    pub active_speaker: Option<ParticipantId>,
    /// Frames the compositor has produced: the composite's pulse. Absent
    /// in an audio-only composition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub composite_frames: Option<u64>,
    /// Of those, the frames produced after they should have been on air
    /// (a stutter in every output). Absent in an audio-only composition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub composite_frames_late: Option<u64>,
    pub participants: Vec<ParticipantView>,
    pub outputs: Vec<OutputView>,
    /// The one encode every output shares.
    pub broadcast: BroadcastView,
    /// How the callers' mix-minus audio is encoded.
    pub mix_minus: MixMinusView,
    /// Where the embedded RTMP server plays this composition, if it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtmp_play_url: Option<String>,
    /// WHEP viewers watching the programme now.
    pub viewers: usize,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl Composition {
    pub(super) fn view(&self, id: &CompositionId) -> CompositionView {
        CompositionView {
            id: id.clone(),
            name: self.config.name.clone(),
            state: if self.composite.as_ref().is_some_and(|c| c.frozen()) { "frozen" } else { "running" },
            last_error: self.composite.as_ref().and_then(|c| c.last_error.clone()),
            audio_only: self.config.audio_only,
            pin_required: self.config.pin.is_some(),
            video: (!self.config.audio_only).then(|| self.config.video.clone()),
            audio: self.config.audio.clone(),
            layout: self.config.layout.clone(),
            active_speaker: self.active_speaker.clone(),
            composite_frames: self.media.composite_frames(),
            composite_frames_late: self.media.composite_frames_late(),
            participants: self
                .participants
                .iter()
                .map(|p| &p.id)
                .chain(self.offers.iter().map(|o| &o.id))
                .filter_map(|id| self.participant_view(id))
                .collect(),
            outputs: self.outputs.iter().map(|o| self.output_view(id, o)).collect(),
            broadcast: {
                let (video_encoders, audio_encoders) = self.media.broadcast_encoders();
                BroadcastView { video_encoders, audio_encoders, encoding: self.media.broadcast_encoding() }
            },
            mix_minus: {
                let encodes = self.media.mix_minus_encodes();
                MixMinusView { own_encodes: encodes.own, shared: encodes.shared }
            },
            rtmp_play_url: self.rtmp_play_url.clone(),
            viewers: self.media.viewer_count(),
            created_at: self.created_at,
        }
    }

    pub(super) fn output_view(&self, id: &CompositionId, output: &OutputRecord) -> OutputView {
        let mut view = OutputView {
            id: output.id.clone(),
            kind: output.valid.kind(),
            state: OutputState::Connecting,
            url: None,
            path: None,
            playlist_url: None,
            bytes_sent: 0,
            reconnects: 0,
            dropped_gops: 0,
            last_error: None,
            created_at: output.created_at,
        };
        match (&output.valid, &output.publisher) {
            (ValidOutput::Rtmp(url), Some(publisher)) => {
                view.url = Some(url.masked());
                view.state = match &*publisher.state().borrow() {
                    PublisherState::Connecting => OutputState::Connecting,
                    PublisherState::Live => OutputState::Live,
                    PublisherState::Reconnecting { .. } => OutputState::Reconnecting,
                    PublisherState::Failed { .. } => OutputState::Failed,
                    PublisherState::Stopped => OutputState::Stopped,
                };
                let stats = publisher.stats();
                view.bytes_sent = stats.bytes_sent;
                view.reconnects = stats.reconnects;
                view.dropped_gops = stats.dropped_gops;
                view.last_error = stats.last_error;
            }
            (valid, _) => {
                match valid {
                    ValidOutput::Hls => view.playlist_url = Some(format!("/hls/{id}/{}/index.m3u8", output.id)),
                    ValidOutput::Record { relative_path, .. } => view.path = Some(relative_path.display().to_string()),
                    ValidOutput::Rtmp(_) => {}
                }
                if let Some(status) = self.media.file_output_status(&output.id) {
                    view.bytes_sent = status.bytes_written;
                    view.state = if status.live { OutputState::Live } else { OutputState::Connecting };
                }
                if let Some(failure) = &output.failure {
                    view.state = OutputState::Failed;
                    view.last_error = Some(failure.clone());
                }
            }
        }
        if view.state == OutputState::Live && let Some(problem) = output.watch.problem() {
            view.state = OutputState::Stalled;
            view.last_error = Some(problem);
        }
        view
    }

    pub(super) fn participant_view(&self, pid: &ParticipantId) -> Option<ParticipantView> {
        let Some(participant) = self.participants.iter().find(|p| &p.id == pid) else {
            return self.dial_view(pid);
        };
        let media = self.media.participant(pid);
        let stats = media.map(|m| m.leg.stats()).unwrap_or_default();
        let publishing = media.is_some_and(|m| matches!(&m.leg, Leg::Publisher(leg) if leg.publishing()));
        let ingest = participant.ingest.as_ref().map(|ingest| ingest.view(&mask_stream_key(&ingest.stream_key), publishing));
        let speech = self.media.speech_of(pid);
        Some(ParticipantView {
            id: participant.id.clone(),
            name: participant.name.clone(),
            transport: participant.signalling.transport(),
            sip: participant.signalling.sip().cloned(),
            state: if participant.lobby.is_some() { ParticipantState::AwaitingPin } else { participant.state },
            on_hold: participant.session.as_ref().is_some_and(|s| s.on_hold),
            controls: participant.controls.clone(),
            rect: self.media.placement(pid),
            speaking: speech.is_some_and(|s| s.speaking),
            // Tenths of a dB: all a level meter can show.
            audio_level_dbov: speech.map(|s| (s.level_dbov * 10.0).round() / 10.0),
            audio: stats.audio,
            video: stats.video,
            webrtc: stats.webrtc.map(|webrtc| WebRtcStats {
                picture: self.media.sent_picture(pid).map(|rung| {
                    let frame = rung.frame(self.config.video.canvas());
                    SentPicture { bitrate_kbps: rung.bitrate_kbps, width: frame.width, height: frame.height, reduced: !rung.is_full() }
                }),
                ..webrtc
            }),
            ingest,
            last_error: participant.last_error.clone(),
        })
    }
}

impl Composition {
    /// A dial-out not yet answered; `None` for anything else.
    fn dial_view(&self, pid: &ParticipantId) -> Option<ParticipantView> {
        let offer = self.offers.iter().find(|o| &o.id == pid)?;
        let dial = offer.dial.as_ref()?;
        Some(ParticipantView {
            id: pid.clone(),
            name: dial.name.clone(),
            transport: offer.seat.signalling.transport(),
            sip: offer.seat.signalling.sip().cloned(),
            state: dial.state,
            on_hold: false,
            controls: ParticipantControls::default(),
            rect: None,
            speaking: false,
            audio_level_dbov: None,
            audio: None,
            video: None,
            webrtc: None,
            ingest: None,
            last_error: dial.last_error.clone(),
        })
    }
}

impl Ingest {
    /// What the API shows of it, with the key as given: whole in the answer
    /// that made it, masked after. An SRT publisher takes the key in its
    /// URL, as OBS and ffmpeg expect it.
    pub(super) fn view(&self, key: &str, publishing: bool) -> IngestView {
        let url = match self.attachment {
            Attachment::Srt { .. } => format!("{}?streamid={key}", self.url),
            Attachment::Rtmp { .. } => self.url.clone(),
        };
        IngestView { url, stream_key: key.to_string(), publishing, encrypted: self.encrypted }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALE: Duration = Duration::from_secs(30);

    #[test]
    fn state_follows_media_age() {
        let s = |age: Option<u64>, joined: u64| {
            ParticipantState::from_media(true, age.map(Duration::from_secs), Duration::from_secs(joined), STALE, false)
        };
        assert_eq!(s(None, 1), ParticipantState::Connecting);
        assert_eq!(s(None, 31), ParticipantState::Stale);
        assert_eq!(s(Some(1), 100), ParticipantState::Active);
        assert_eq!(s(Some(31), 100), ParticipantState::Stale);
        assert_eq!(
            ParticipantState::from_media(false, None, Duration::from_secs(100), STALE, false),
            ParticipantState::Active,
            "a receive-only caller never goes stale"
        );
    }

    #[test]
    fn a_stopped_flow_interrupts_a_caller_short_of_stale() {
        let s = |age: Option<u64>, joined: u64, expects: bool| {
            ParticipantState::from_media(expects, age.map(Duration::from_secs), Duration::from_secs(joined), STALE, true)
        };
        assert_eq!(s(Some(3), 100, true), ParticipantState::Interrupted);
        assert_eq!(s(None, 3, true), ParticipantState::Interrupted, "Tutti sends nothing to a caller that has not spoken yet");
        assert_eq!(s(None, 100, false), ParticipantState::Interrupted, "a receive-only caller that gets nothing");
        assert_eq!(s(Some(31), 100, true), ParticipantState::Stale, "stale wins");
    }
}
