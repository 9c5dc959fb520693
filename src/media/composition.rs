//! A composition's pipeline: the fixed core (compositor, canvas tee, audio
//! mix thread, broadcast encode) built at creation, and the parts that come
//! and go while it plays: callers, shared return encoders, file outputs.
//! Each part is a bin ([`super::part`]); its links to the rest are recorded
//! in the [`Topology`]; it starts within a deadline and stops off the engine
//! thread ([`super::lifecycle`]).

mod branding;
mod broadcast;
mod outputs;
mod reduced;
mod stage;
mod viewers;

pub use branding::{MissingImage, check_images};

pub use outputs::OutputPaths;

use gstreamer as gst;
use gstreamer::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::flow::{FlowCounter, Measure, count_late_on, count_on};
use super::lifecycle::{self, Reaper, StopTicket, Teardown};
use super::lipsync::Cadence;
use super::mixer::{AudioMix, MixFormat, MixMinusEncodes};
use super::part::{Fanout, add_chain, drop_h264_filler, expose_input};
use super::leg::Leg;
use super::leg::rtp::{JoiningMedium, RtpContext};
use super::leg::webrtc::{GuestMedia, OWN_ENCODE, PictureSwitch};
use super::participant::{JoinContext, Joining, ParticipantMedia, Plug};
use crate::model::ingest::IngestSink;
use super::profiles::{EncoderSettings, Profiles};
use super::prompts::{self, Prompt};
use super::topology::{self, Owner, Topology};
use super::{EventSink, MediaError, MediaEvent, in_canvas_colours, make};
use crate::model::codec::VideoCodec;
use crate::model::composition::CompositionConfig;
use crate::model::h264::{self, FrameSize};
use crate::model::ladder;
use crate::model::sdp;
use crate::model::ids::{CompositionId, OutputId, ParticipantId, ViewerId};
use crate::model::controls::ParticipantControls;
use crate::model::layout::{self, Fit, LayoutConfig, Placement, Seat, Transition, TransitionKind};
use crate::model::source_check::SourceCheckMode;
use crate::model::speaker::TalkerState;
use crate::model::output::ValidOutput;
use crate::model::sdp::NegotiatedMedia;
use crate::rtmp::{PublisherHandle, StreamFeed};
use crate::webrtc::{Peer, PeerEvent, PeerHandler};
use branding::Branding;
use broadcast::{Broadcast, FeedKey, FeedTarget};
use reduced::ReducedPicture;
use outputs::FileOutput;
use viewers::Viewers;
use stage::{Highlight, Move, PadGeometry, Stage};

#[derive(Clone, Debug)]
pub struct MediaSettings {
    pub jitter_buffer: Duration,
    /// Which packets at a caller's ports are taken as its media.
    pub source_check: SourceCheckMode,
    /// Where a layout's background and overlay images are.
    pub branding_dir: std::path::PathBuf,
}

pub struct CompositionMedia {
    id: CompositionId,
    pipeline: gst::Pipeline,
    /// None in an audio-only composition.
    canvas: Option<Canvas>,
    /// Every caller's mix-minus and the broadcast's full mix.
    mix: AudioMix,
    config: CompositionConfig,
    profiles: Arc<Profiles>,
    settings: MediaSettings,
    reaper: Reaper,
    topology: Topology,
    encoders: HashMap<ReturnEncode, SharedEncoder>,
    /// In join order, which is also the layout order.
    participants: Vec<ParticipantMedia>,
    /// Who is talking, as the engine last said; layouts without a pinned
    /// participant follow it.
    active_speaker: Option<ParticipantId>,
    /// Where each shown caller's picture is (or is going, mid-fade).
    placements: HashMap<ParticipantId, Placement>,
    stage: Stage,
    outputs: HashMap<OutputId, OutputMedia>,
    /// WHEP viewers, while there are any.
    viewers: Option<Viewers>,
    /// The lower-bitrate pictures WebRTC guests on poor links are sent, by
    /// their codec and rung (see [`Self::adapt_guest_pictures`]).
    reduced: HashMap<(VideoCodec, usize), ReducedPicture>,
    /// One per file output, tripped from the bus when its part fails.
    fuses: Fuses,
    /// Where callers' keys (DTMF) go, with the pipeline's other reports.
    events: EventSink,
    /// Each part's number, for unique names (a part being torn down keeps its name until it is gone).
    serial: u64,
    /// The compositor's latency in nanoseconds once computed (0 before):
    /// how long after a frame's time it is due.
    latency_ns: Arc<AtomicU64>,
}

/// Part name (`out-{id}`) → tripped? A failing file output (disk full, say)
/// must not send its error back up the shared encode: once its fuse trips,
/// the fanout drops what it would push into that part. Tripped from the bus
/// handler, which runs synchronously in the failing thread, before the next buffer.
type Fuses = Arc<std::sync::Mutex<HashMap<String, Arc<AtomicBool>>>>;

/// The compositor, the tee that hands its canvas to the encoders, and the
/// broadcast encode.
struct Canvas {
    compositor: gst::Element,
    tee: gst::Element,
    broadcast: Broadcast,
    /// The border around the active speaker.
    highlight: Highlight,
    branding: Branding,
    /// Frames out of the compositor: the composite's pulse.
    frames: Arc<FlowCounter>,
    /// Of those, the ones produced after they should have been on air.
    late_frames: Arc<FlowCounter>,
    /// Which frame of each caller its frames show, for the callers' audio stamps.
    cadence: Arc<Cadence>,
}

/// NACKs from a guest within a second that say its link loses our packets;
/// a few may come from a lost packet on any link.
const LOSING_NACKS: u64 = 5;

/// A WebRTC guest moved to another rung of its picture (`model::ladder`).
#[derive(Clone, Debug, PartialEq)]
pub struct PictureMove {
    pub participant: ParticipantId,
    pub rung: ladder::Rung,
    /// The bandwidth estimate that moved it, kbit/s.
    pub estimate_kbps: u64,
}

/// What a shared return encoder makes: callers asking for the same codec
/// at the same size share one encode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ReturnEncode {
    codec: VideoCodec,
    /// `None`: the whole canvas; else the composite scaled down for callers
    /// that decode no more (see [`sdp::NegotiatedMedia::return_size`]).
    size: Option<FrameSize>,
    /// `None`: the composition's bitrate (in proportion when scaled); else a
    /// rung of `model::ladder` for guests on poor links.
    bitrate_kbps: Option<u32>,
}

impl ReturnEncode {
    /// What callers on H.264 packetization-mode 1 taking the whole canvas
    /// get: the broadcast's own encode (see [`CompositionMedia::encoder_for`]).
    const BROADCAST: ReturnEncode = ReturnEncode { codec: VideoCodec::H264 { packetization_mode: 1 }, size: None, bitrate_kbps: None };

    /// Its name in bins and metrics: the encoder profile, the size when
    /// scaled, and the bitrate of a ladder rung.
    fn label(&self) -> String {
        let mut label = self.codec.encoder_profile_name().to_string();
        if let Some(size) = self.size {
            label += &format!("-{}x{}", size.width, size.height);
        }
        if let Some(kbps) = self.bitrate_kbps {
            label += &format!("-{kbps}k");
        }
        label
    }
}

/// One encode of the composite, fanned out to every caller using its codec and size.
struct SharedEncoder {
    bin: gst::Bin,
    out: Fanout,
    /// Frames waiting for its encoder; `None` when it re-frames the broadcast's.
    queue: Option<gst::Element>,
}

/// Where a cross link starts: a tee of the core, or a part's fanout.
enum Source {
    Tee(gst::Element),
    Fanout(Fanout),
}

enum OutputMedia {
    Rtmp(PublisherHandle),
    File(FileOutput),
}

/// What the API shows of an HLS or recording output (RTMP ones report
/// through their publisher).
#[derive(Clone, Debug, Default)]
pub struct FileOutputStatus {
    pub bytes_written: u64,
    pub live: bool,
}

impl CompositionMedia {
    pub fn new(
        id: CompositionId,
        config: CompositionConfig,
        profiles: Arc<Profiles>,
        settings: MediaSettings,
        events: EventSink,
        reaper: Reaper,
        player: Option<StreamFeed>,
    ) -> Result<CompositionMedia, MediaError> {
        let pipeline = gst::Pipeline::with_name(&format!("comp-{id}"));
        let (speaker_events, speaker_composition) = (events.clone(), id.clone());
        let mix = AudioMix::start(&format!("mix-{id}"), mix_format(&config), settings.jitter_buffer, &pipeline, move || {
            speaker_events(MediaEvent::ActiveSpeakerChanged { composition: speaker_composition.clone() })
        })?;
        let fuses = Fuses::default();
        watch_bus(&pipeline, id.clone(), events.clone(), fuses.clone());
        let latency_ns = Arc::new(AtomicU64::new(0));
        let canvas = if config.audio_only {
            None
        } else {
            Some(build_canvas(&pipeline, &id, &config, &profiles, &mix, &settings, player, latency_ns.clone())?)
        };
        let mut media = CompositionMedia {
            id,
            pipeline,
            canvas,
            mix,
            config,
            profiles,
            settings,
            reaper,
            topology: Topology::default(),
            encoders: HashMap::new(),
            participants: Vec::new(),
            active_speaker: None,
            placements: HashMap::new(),
            stage: Stage::default(),
            outputs: HashMap::new(),
            viewers: None,
            reduced: HashMap::new(),
            fuses,
            events,
            serial: 0,
            latency_ns,
        };
        if let Err(e) = media.start() {
            media.shutdown();
            return Err(e);
        }
        media.recalculate_latency();
        if let Some(canvas) = &media.canvas {
            canvas.branding.apply(&media.config.layout);
        }
        Ok(media)
    }

    fn start(&mut self) -> Result<(), MediaError> {
        lifecycle::start(self.pipeline.upcast_ref())?;
        if let Some(canvas) = &self.canvas {
            // Only now that the broadcast plays: a running tee pushing into a
            // pad that is not active yet would get FLUSHING back and stop the compositor.
            let (tee, input) = (canvas.tee.clone(), canvas.broadcast.input.clone());
            self.link_from(Source::Tee(tee), &input, Owner::Core, Owner::Core)?;
        }
        Ok(())
    }

    pub fn id(&self) -> &CompositionId {
        &self.id
    }

    pub fn participant(&self, id: &ParticipantId) -> Option<&ParticipantMedia> {
        self.participants.iter().find(|p| &p.id == id)
    }

    /// Frames the compositor has produced so far; `None` without a canvas.
    pub fn composite_frames(&self) -> Option<u64> {
        self.canvas.as_ref().map(|c| c.frames.count())
    }

    /// Of those, the frames produced after they should have been on air.
    pub fn composite_frames_late(&self) -> Option<u64> {
        self.canvas.as_ref().map(|c| c.late_frames.count())
    }

    /// (Re)computes the pipeline latency: at start, and after an element
    /// reported a change. Off the engine thread: the latency query visits
    /// every element.
    pub fn recalculate_latency(&self) {
        let pipeline = self.pipeline.downgrade();
        let compositor = self.canvas.as_ref().map(|c| c.compositor.downgrade());
        let latency_ns = self.latency_ns.clone();
        let _ = std::thread::Builder::new().name("latency".into()).spawn(move || {
            let Some(pipeline) = pipeline.upgrade() else { return };
            let _ = pipeline.recalculate_latency();
            // The compositor's own deadline: its inputs' latency plus its own.
            let Some(compositor) = compositor.and_then(|c| c.upgrade()) else { return };
            let mut query = gst::query::Latency::new();
            if compositor.static_pad("src").is_some_and(|pad| pad.query(&mut query)) {
                let (_, min, _) = query.result();
                tracing::debug!(pipeline = %pipeline.name(), latency_ms = min.mseconds(), "compositor latency");
                latency_ns.store(min.nseconds(), Ordering::Relaxed);
            }
        });
    }

    /// Adds an RTP caller to the running pipeline, in the lobby if
    /// `in_lobby` (see [`CompositionMedia::admit`]). On error nothing of it stays.
    pub fn add_participant(
        &mut self,
        id: ParticipantId,
        name: &str,
        audio: Option<JoiningMedium>,
        video: Option<JoiningMedium>,
        in_lobby: bool,
    ) -> Result<(), MediaError> {
        let (events, composition, participant) = (self.events.clone(), self.id.clone(), id.clone());
        let context = RtpContext {
            jitter_buffer: self.settings.jitter_buffer,
            source_check: self.settings.source_check,
            on_key: Arc::new(move |key| {
                events(MediaEvent::Key { composition: composition.clone(), participant: participant.clone(), key })
            }),
        };
        self.add(id, name, Joining::Rtp { media: Box::new((audio, video)), context }, in_lobby).map(|_| ())
    }

    /// Adds a publisher's participant (RTMP, SRT); what its transport takes apart
    /// from its publisher goes to the sink this returns. Its publisher's
    /// comings and goings are reported as [`MediaEvent::Publisher`].
    pub fn add_publisher(&mut self, id: ParticipantId, name: &str) -> Result<IngestSink, MediaError> {
        let (events, composition, participant) = (self.events.clone(), self.id.clone(), id.clone());
        let on_change = Arc::new(move |change| {
            events(MediaEvent::Publisher { composition: composition.clone(), participant: participant.clone(), change })
        });
        match self.add(id, name, Joining::Publisher { playout_delay: self.settings.jitter_buffer, on_change }, false)? {
            Some(Plug::Ingest(sink)) => Ok(sink),
            _ => unreachable!("a publisher leg comes with its sink"),
        }
    }

    /// Adds a browser guest; its offer is to be answered with the handler
    /// this returns, and the peer that makes given to [`Self::attach_peer`].
    /// Its connecting and leaving are reported as [`MediaEvent::Guest`].
    pub fn add_guest(&mut self, id: ParticipantId, name: &str, media: GuestMedia) -> Result<PeerHandler, MediaError> {
        let (events, composition, participant) = (self.events.clone(), self.id.clone(), id.clone());
        let on_change = Arc::new(move |change| events(MediaEvent::Guest { composition: composition.clone(), participant: participant.clone(), change }));
        match self.add(id, name, Joining::WebRtc { media, playout_delay: self.settings.jitter_buffer, on_change }, false)? {
            Some(Plug::WebRtc(handler)) => Ok(handler),
            _ => unreachable!("a WebRTC leg comes with its handler"),
        }
    }

    /// Gives a guest's leg the peer its offer was answered with.
    pub fn attach_peer(&self, id: &ParticipantId, peer: Peer) {
        if let Some(ParticipantMedia { leg: Leg::WebRtc(leg), .. }) = self.participant(id) {
            leg.attach(peer);
        }
    }

    fn add(&mut self, id: ParticipantId, name: &str, joining: Joining, in_lobby: bool) -> Result<Option<Plug>, MediaError> {
        if in_lobby {
            self.mix.hold_in_lobby(&id);
        }
        let context = JoinContext {
            profiles: &self.profiles,
            mix: &self.mix,
            canvas_fps: self.canvas.as_ref().map(|_| self.config.video.fps),
            in_lobby,
        };
        let (participant, plug) = match ParticipantMedia::build(&id, name, joining, &context) {
            Ok(built) => built,
            Err(e) => {
                self.mix.remove(&id);
                return Err(e);
            }
        };
        let owner = Owner::Participant(id.clone());
        match self.start_participant(&participant, &owner) {
            Ok(()) => {
                // The newcomer needs a keyframe of the composite right away.
                participant.seat.request_composite_keyframe();
                self.participants.push(participant);
                self.relayout();
                Ok(plug)
            }
            Err(e) => {
                self.mix.remove(&id);
                let bin = participant.bin.clone();
                self.reap(self.participant_label(&id), owner, bin, participant);
                self.drop_unused_encoders();
                Err(e)
            }
        }
    }

    fn start_participant(&mut self, participant: &ParticipantMedia, owner: &Owner) -> Result<(), MediaError> {
        self.pipeline.add(&participant.bin)?;
        if let (Some(canvas), Some(picture)) = (&self.canvas, &participant.seat.picture) {
            let pad = request_pad(&canvas.compositor, "sink_%u")?;
            // Hidden until relayout gives it a cell.
            pad.set_property("alpha", 0.0f64);
            canvas.cadence.follow(&pad, participant.seat.video_lead.clone());
            if let Err(e) = self.topology.link(&picture.src, &pad, owner.clone(), Owner::Core) {
                super::part::release(&pad);
                return Err(e.into());
            }
        }
        if let Some((codec, composite)) = &participant.seat.composite_in {
            let size = participant.leg.composite_size(self.sdp_canvas());
            let (encoder, feed) = self.encoder_for(ReturnEncode { codec: *codec, size, bitrate_kbps: None })?;
            self.link_from(Source::Fanout(feed), composite, encoder, owner.clone())?;
        }
        lifecycle::start(participant.bin.upcast_ref())?;
        self.topology.link_pending(owner)?;
        Ok(())
    }

    /// Plays `prompt` to a caller in the lobby, from its start; says how long it lasts.
    pub fn announce(&self, id: &ParticipantId, prompt: Prompt) -> Result<Duration, MediaError> {
        let format = self.mix.format();
        let samples = prompts::samples(prompt, format)?;
        let length = Duration::from_secs_f64(samples.len() as f64 / f64::from(format.rate * format.channels));
        self.mix.announce(id, samples);
        Ok(length)
    }

    /// Lets a caller out of the lobby into the room: it is heard, hears its
    /// mix-minus, is sent the composite and takes its place in the layout.
    pub fn admit(&mut self, id: &ParticipantId) {
        let Some(participant) = self.participants.iter().find(|p| &p.id == id) else { return };
        participant.seat.admit();
        self.mix.admit(id);
        self.relayout();
    }

    /// Applies a producer's change to one caller: its name and its controls.
    pub fn update_participant(&mut self, id: &ParticipantId, name: &str, controls: &ParticipantControls) {
        let Some(participant) = self.participants.iter_mut().find(|p| &p.id == id) else { return };
        participant.name = name.to_string();
        participant.controls = controls.clone();
        if let Some(picture) = &participant.seat.picture {
            picture.set_name(name);
            picture.set_video_muted(controls.video.muted);
        }
        self.mix.set_controls(id, controls.audio.gain(), controls.deaf);
        self.relayout();
    }

    /// Follows a caller's re-offer (hold, resume, a moved address): the
    /// caller keeps its cell and its place in the mix throughout.
    pub fn renegotiate_participant(&mut self, id: &ParticipantId, media: impl IntoIterator<Item = NegotiatedMedia>) {
        let Some(participant) = self.participants.iter_mut().find(|p| &p.id == id) else { return };
        for medium in media {
            if let Leg::Rtp(leg) = &mut participant.leg {
                leg.follow(medium);
            }
        }
        // A caller that stopped sending video shows its slate.
        self.relayout();
    }

    /// Asks the encoder of the composite a caller receives for a keyframe
    /// (a room system's `picture_fast_update`).
    pub fn request_keyframe_for(&self, id: &ParticipantId) {
        if let Some(participant) = self.participant(id) {
            participant.seat.request_composite_keyframe();
        }
    }

    /// How the callers' mix-minus is encoded now.
    pub fn mix_minus_encodes(&self) -> MixMinusEncodes {
        self.mix.mix_minus_encodes()
    }

    /// Who the mix's speaker detector takes for the active speaker now (the
    /// engine decides when the layouts follow: [`Self::set_active_speaker`]).
    pub fn detected_speaker(&self) -> Option<ParticipantId> {
        self.mix.active_speaker()
    }

    /// A caller's audio level and whether it speaks; `None` if it sends no audio.
    pub fn speech_of(&self, id: &ParticipantId) -> Option<TalkerState> {
        self.mix.talker(id)
    }

    /// Replaces the layout; the pictures move at the next frame, or fade
    /// there as the layout's transition says.
    pub fn set_layout(&mut self, layout: &LayoutConfig) {
        self.config.layout = layout.clone();
        if let Some(canvas) = &self.canvas {
            canvas.branding.apply(layout);
        }
        // The transition is for this change only, not for later joins.
        let transition = self.config.layout.transition.take();
        self.relayout_with(transition);
    }

    /// Where a caller's picture is on the canvas; `None` when not shown.
    pub fn placement(&self, id: &ParticipantId) -> Option<Placement> {
        self.placements.get(id).copied()
    }

    /// The engine's word on who is talking now.
    pub fn set_active_speaker(&mut self, speaker: Option<ParticipantId>) {
        if self.active_speaker != speaker {
            self.active_speaker = speaker;
            self.relayout();
        }
    }

    /// Removes a caller; the others keep streaming and the grid re-lays out.
    /// Its part stops off this thread; the ticket says when it has.
    pub fn remove_participant(&mut self, id: &ParticipantId) -> Option<StopTicket> {
        let index = self.participants.iter().position(|p| &p.id == id)?;
        let participant = self.participants.remove(index);
        self.mix.remove(id);
        for reduced in self.reduced.values() {
            reduced.remove(id);
        }
        self.drop_unused_reduced();
        let bin = participant.bin.clone();
        let ticket = self.reap(self.participant_label(id), Owner::Participant(id.clone()), bin, participant);
        self.drop_unused_encoders();
        self.relayout();
        Some(ticket)
    }

    /// Moves WebRTC guests between the rungs of `model::ladder` as their
    /// links' bandwidth estimates say: a guest whose link cannot carry the
    /// composition's bitrate is sent a lower-bitrate encode of the composite
    /// (shared by the guests on that rung) instead of a picture it loses.
    /// Says who moved, where to, and on which estimate.
    pub fn adapt_guest_pictures(&mut self) -> Vec<PictureMove> {
        let rungs = self.ladder();
        let mut moves = Vec::new();
        for participant in &self.participants {
            let Leg::WebRtc(leg) = &participant.leg else { continue };
            let (Some(codec), Some(link)) = (leg.video_codec(), leg.link()) else { continue };
            let picture = leg.picture();
            let (_, wanted) = picture.sources();
            let reading = ladder::LinkReading {
                estimate_kbps: link.estimate_kbps,
                sent_kbps: link.sent_kbps,
                losing: link.nacks >= LOSING_NACKS,
                connected_for: link.connected_for,
                on_rung_for: picture.moved_for().min(link.connected_for),
            };
            let next = ladder::choose(&rungs, wanted, reading);
            if next != wanted {
                let change = PictureMove { participant: participant.id.clone(), rung: rungs[next], estimate_kbps: link.estimate_kbps };
                moves.push((codec, picture.clone(), change, next > wanted));
            }
        }
        let mut done = Vec::new();
        for (codec, picture, change, down) in moves {
            match self.send_rung(&change.participant, codec, &picture, change.rung) {
                Ok(()) => {
                    // Down: what the estimator learned from the bitrate the link lost is no use; up: probe for the next.
                    let restart = down.then(|| ladder::needs_kbps(&change.rung));
                    picture.retarget_on_move(restart, ladder::probe_target_kbps(&rungs, change.rung.index));
                    done.push(change);
                }
                Err(e) => tracing::warn!(composition = %self.id, participant = %change.participant, "a lower-bitrate picture failed to start: {e}"),
            }
        }
        self.drop_unused_reduced();
        done
    }

    /// The rungs of this composition's guests' pictures, best first.
    fn ladder(&self) -> Vec<ladder::Rung> {
        ladder::rungs(self.config.video.bitrate_kbps, self.config.video.canvas())
    }

    /// What a WebRTC guest is sent of the composite now; `None` for others.
    pub fn sent_picture(&self, id: &ParticipantId) -> Option<ladder::Rung> {
        let Some(ParticipantMedia { leg: Leg::WebRtc(leg), .. }) = self.participant(id) else { return None };
        leg.video_codec()?;
        let (current, _) = leg.picture().sources();
        self.ladder().get(current).copied()
    }

    fn send_rung(&mut self, id: &ParticipantId, codec: VideoCodec, picture: &Arc<PictureSwitch>, rung: ladder::Rung) -> Result<(), MediaError> {
        if rung.is_full() {
            picture.want(OWN_ENCODE, None);
            if let Some(participant) = self.participant(id) {
                participant.seat.request_composite_keyframe();
            }
            return Ok(());
        }
        if !self.reduced.contains_key(&(codec, rung.index)) {
            let name = format!("rung{}-{}-{}", rung.index, codec.encoder_profile_name(), self.id);
            let built = ReducedPicture::build(&name, rung)?;
            let owner = Owner::Reduced(name.clone());
            if let Err(e) = self.start_reduced(&built, codec, &owner) {
                let bin = built.bin.clone();
                self.reap(format!("reduced picture {name}"), owner, bin, built);
                self.drop_unused_encoders();
                return Err(e);
            }
            self.reduced.insert((codec, rung.index), built);
        }
        self.reduced[&(codec, rung.index)].add(id, picture);
        Ok(())
    }

    fn start_reduced(&mut self, reduced: &ReducedPicture, codec: VideoCodec, owner: &Owner) -> Result<(), MediaError> {
        self.pipeline.add(&reduced.bin)?;
        let key = ReturnEncode { codec, size: reduced.rung.size, bitrate_kbps: Some(reduced.rung.bitrate_kbps) };
        let (encoder, feed) = self.encoder_for(key)?;
        self.link_from(Source::Fanout(feed), &reduced.video_in, encoder, owner.clone())?;
        lifecycle::start(reduced.bin.upcast_ref())?;
        self.topology.link_pending(owner)?;
        Ok(())
    }

    /// Stops the reduced pictures no guest is sent any more, and their encodes.
    fn drop_unused_reduced(&mut self) {
        let unused: Vec<(VideoCodec, usize)> = self.reduced.iter().filter(|(_, r)| !r.keep_current()).map(|(key, _)| *key).collect();
        if unused.is_empty() {
            return;
        }
        for key in unused {
            if let Some(reduced) = self.reduced.remove(&key) {
                let name = reduced.bin.name().to_string();
                let bin = reduced.bin.clone();
                self.reap(format!("reduced picture {name}"), Owner::Reduced(name), bin, reduced);
            }
        }
        self.drop_unused_encoders();
    }

    /// A WHEP viewer, sent the programme on `peer`: the broadcast's picture
    /// and one Opus encode of the full mix, shared by every viewer. The
    /// viewers' part is built with the first one. On error nothing of it stays.
    pub fn add_viewer(&mut self, id: ViewerId, peer: Peer) -> Result<(), MediaError> {
        if self.viewers.is_none() {
            let built = Viewers::build(&format!("whep-{}", self.id), &self.mix, &self.profiles, self.canvas.is_some());
            let viewers = built.inspect_err(|_| self.mix.stop_viewers_mix())?;
            if let Err(e) = self.start_viewers(&viewers) {
                self.mix.stop_viewers_mix();
                let bin = viewers.bin.clone();
                self.reap(format!("viewers of composition {}", self.id), Owner::Viewers, bin, viewers);
                self.drop_unused_encoders();
                return Err(e);
            }
            self.viewers = Some(viewers);
        }
        self.viewers.as_ref().expect("built above").add(id, peer);
        Ok(())
    }

    fn start_viewers(&mut self, viewers: &Viewers) -> Result<(), MediaError> {
        self.pipeline.add(&viewers.bin)?;
        if let Some(pad) = &viewers.video_in {
            let (encoder, feed) = self.encoder_for(ReturnEncode::BROADCAST)?;
            self.link_from(Source::Fanout(feed), pad, encoder, Owner::Viewers)?;
        }
        lifecycle::start(viewers.bin.upcast_ref())?;
        self.topology.link_pending(&Owner::Viewers)?;
        Ok(())
    }

    /// Hangs up on a viewer; the last one takes the viewers' part with it.
    pub fn remove_viewer(&mut self, id: &ViewerId) {
        let Some(viewers) = &self.viewers else { return };
        if viewers.remove(id) {
            return;
        }
        let viewers = self.viewers.take().expect("checked above");
        self.mix.stop_viewers_mix();
        let bin = viewers.bin.clone();
        self.reap(format!("viewers of composition {}", self.id), Owner::Viewers, bin, viewers);
        self.drop_unused_encoders();
    }

    /// What a viewer's peer reports, as [`MediaEvent::Viewer`]: it connected
    /// or lost the picture (a keyframe is wanted), or it left.
    pub fn viewer_handler(&self, viewer: ViewerId) -> PeerHandler {
        let (events, composition) = (self.events.clone(), self.id.clone());
        Arc::new(move |event| {
            let left = match event {
                PeerEvent::Connected { .. } | PeerEvent::KeyframeRequested => None,
                PeerEvent::Disconnected { reason } => Some(reason),
                PeerEvent::MediaIn { .. } | PeerEvent::BandwidthEstimate { .. } => return,
            };
            events(MediaEvent::Viewer { composition: composition.clone(), viewer: viewer.clone(), left });
        })
    }

    /// A viewer lost the picture: a keyframe of the broadcast (rate-limited).
    pub fn viewer_wants_keyframe(&self) {
        if let Some(viewers) = &self.viewers {
            viewers.request_keyframe();
        }
    }

    pub fn has_viewer(&self, id: &ViewerId) -> bool {
        self.viewers.as_ref().is_some_and(|v| v.has(id))
    }

    pub fn viewer_count(&self) -> usize {
        self.viewers.as_ref().map_or(0, Viewers::count)
    }

    fn participant_label(&self, id: &ParticipantId) -> String {
        format!("participant {id} of composition {}", self.id)
    }

    /// Detaches a part now and stops it off this thread: its links are
    /// undone first (releasing the shared elements' pads), then it goes to
    /// NULL sinks first and leaves the pipeline. `keep` lives until then
    /// (sockets and port leases, say).
    fn reap(&mut self, what: String, owner: Owner, bin: gst::Bin, keep: impl Send + 'static) -> StopTicket {
        let links = self.detach(&owner, &bin);
        let pipeline = self.pipeline.clone();
        self.reaper.reap(Teardown::new(what, move || {
            topology::undo(&links);
            let _ = bin.set_state(gst::State::Null);
            let _ = pipeline.remove(&bin);
            drop(keep);
        }))
    }

    /// Takes a part out of the running composition before it is stopped:
    /// its links carry nothing any more (see [`Topology::detach`]), and state
    /// changes of the whole pipeline no longer reach it. Such a change walks
    /// every child (GStreamer warns of the graph's loop each time, as on every
    /// HLS output added). An HLS part removed 5 ms after another was added,
    /// set to NULL on its teardown thread meanwhile, was found in READY and
    /// PAUSED when it was disposed, its queues' threads still running, and
    /// the server aborted (`g_mutex_clear() called on ... locked mutex`).
    fn detach(&mut self, owner: &Owner, bin: &gst::Bin) -> Vec<topology::CrossLink> {
        bin.set_locked_state(true);
        self.topology.detach(owner)
    }

    /// Stops the whole pipeline off this thread, recordings finalized first;
    /// every element, socket and port is released when the ticket comes back.
    /// As for one part: nothing crosses between parts any more, recordings
    /// get their EOS, the shared elements' pads are released (which wakes a
    /// thread waiting on the compositor), and only then does it all go to NULL.
    pub fn shutdown(mut self) -> StopTicket {
        let what = format!("composition {}", self.id);
        let reaper = self.reaper.clone();
        reaper.reap(Teardown::new(what, move || {
            let links = self.topology.detach_all();
            let outputs: Vec<(OutputId, OutputMedia)> = self.outputs.drain().collect();
            for (id, output) in &outputs {
                match output {
                    OutputMedia::Rtmp(publisher) => publisher.stop(),
                    OutputMedia::File(file) => file.finalize_recording(tripped(&self.fuses, &output_part_name(id))),
                }
            }
            self.mix.stop();
            topology::undo(&links);
            let _ = self.pipeline.set_state(gst::State::Null);
            for (_, output) in outputs {
                if let OutputMedia::File(file) = output {
                    file.remove_hls_files();
                }
            }
            if let Some(bus) = self.pipeline.bus() {
                bus.unset_sync_handler();
            }
        }))
    }

    /// Moves every caller's picture to where the layout puts it, at once.
    fn relayout(&mut self) {
        self.relayout_with(None);
    }

    /// Moves every caller's picture to where the layout puts it (a caller
    /// not placed leaves the canvas), and the speaker's border with it.
    /// Each caller's chain scales to its new cell; the compositor pads move
    /// at once, or over a fade.
    fn relayout_with(&mut self, transition: Option<Transition>) {
        if self.canvas.is_none() {
            return;
        }
        let v = &self.config.video;
        let seats: Vec<Seat> = self
            .participants
            .iter()
            .map(|p| Seat {
                id: p.id.clone(),
                has_video: p.leg.sends_video() && !p.controls.video.muted,
                // A caller still keying in its PIN is not in the room yet.
                hidden: p.controls.video.hidden || p.seat.in_lobby(),
            })
            .collect();
        let placed = layout::place(v.width, v.height, &self.config.layout.arrangement, &seats, self.active_speaker.as_ref());
        self.placements = placed.into_iter().collect();
        let fade = transition.filter(|t| t.kind == TransitionKind::Fade).map(|t| Duration::from_millis(t.ms.into()));
        let mut moves = Vec::new();
        for participant in &self.participants {
            let (Some(picture), Some(pad)) = (&participant.seat.picture, self.compositor_pad(participant)) else { continue };
            picture.show_label(self.config.layout.labels);
            let to = match self.placements.get(&participant.id) {
                Some(p) => {
                    picture.set_cell(p.rect.width, p.rect.height, p.fit);
                    Some(PadGeometry::shown(p.rect, picture_zorder(p.z)))
                }
                None => {
                    // Off the canvas it costs no more than its decode; one
                    // fading out keeps its picture until the next change.
                    if fade.is_none() {
                        picture.set_cell(UNSEEN_CELL.0, UNSEEN_CELL.1, Fit::Contain);
                    }
                    None
                }
            };
            tracing::debug!(composition = %self.id, participant = %participant.id, pad = %pad.name(), ?to, "cell");
            moves.push(Move { pad, to });
        }
        let speaker = match (&self.active_speaker, self.config.layout.highlight_speaker) {
            (Some(speaker), true) => self.placements.get(speaker).map(|p| (p.rect, picture_zorder(p.z) - 1)),
            _ => None,
        };
        let canvas = self.canvas.as_ref().expect("checked above");
        let border = Highlight::target(speaker, (v.width, v.height));
        canvas.highlight.resize(border.as_ref(), v.fps);
        moves.push(Move { pad: canvas.highlight.pad.clone(), to: border });
        self.stage.apply(moves, fade, Duration::from_secs(1) / v.fps.max(1));
    }

    /// The compositor pad a caller's picture goes to.
    fn compositor_pad(&self, participant: &ParticipantMedia) -> Option<gst::Pad> {
        self.topology.peer_of(&participant.seat.picture.as_ref()?.src)
    }

    /// The shared encoder for `key`, started on first use: its owner and
    /// the fanout its callers subscribe to.
    ///
    /// Callers on H.264 packetization-mode 1 that take the whole canvas get
    /// the broadcast's own encode (Constrained Baseline, which every H.264
    /// endpoint and CDN takes): one x264 for callers and outputs alike,
    /// instead of two encoding the same canvas. Their part only re-frames it
    /// for RTP (byte-stream, SPS/PPS before every IDR). Other codecs, and
    /// callers that decode less than the canvas, get an encoder of their own
    /// per codec and size, scaling in front of it.
    fn encoder_for(&mut self, key: ReturnEncode) -> Result<(Owner, Fanout), MediaError> {
        if let Some(encoder) = self.encoders.get(&key) {
            return Ok((Owner::Encoder(encoder.bin.name().to_string()), encoder.out.clone()));
        }
        if self.canvas.is_none() {
            return Err(MediaError::Gst("an audio-only composition has no video".into()));
        }
        self.serial += 1;
        let name = format!("enc-{}-{}-{}", key.label(), self.id, self.serial);
        let owner = Owner::Encoder(name.clone());
        let bin = gst::Bin::with_name(&name);
        let codec = key.codec;
        let shares_broadcast = key == ReturnEncode::BROADCAST;
        let mut chain = Vec::new();
        let mut waiting = None;
        if !shares_broadcast {
            let queue = make("queue", &format!("{name}-queue"))?;
            // A slow encoder drops composite frames rather than holding up the compositor.
            queue.set_property("max-size-buffers", 2u32);
            queue.set_property("max-size-bytes", 0u32);
            queue.set_property("max-size-time", 0u64);
            queue.set_property_from_str("leaky", "downstream");
            waiting = Some(queue.clone());
            chain.push(queue);
            if let Some(size) = key.size {
                chain.extend(scale_to(size, &name)?);
            }
            let encoder = self.profiles.video_encoder(codec, &format!("{name}-bin"), self.encoder_settings(&key))?;
            chain.push(encoder.upcast());
        }
        if let VideoCodec::H264 { .. } = codec {
            // SPS/PPS once per IDR access unit, before its first slice.
            // rtph264pay's own insertion puts them before every IDR slice,
            // which splits multi-slice pictures into two access units for
            // decoders such as FFmpeg's (ITU-T H.264 7.4.1.2.3).
            let parse = make("h264parse", &format!("{name}-parse"))?;
            parse.set_property("config-interval", -1i32);
            let au = make("capsfilter", &format!("{name}-au"))?;
            au.set_property(
                "caps",
                gst::Caps::builder("video/x-h264").field("stream-format", "byte-stream").field("alignment", "au").build(),
            );
            drop_h264_filler(&au)?;
            chain.extend([parse, au]);
        }
        add_chain(&bin, &chain.iter().collect::<Vec<_>>())?;
        let out = Fanout::new(&bin, &format!("{name}-out"))?;
        chain.last().expect("an encoder has at least a parser or an encoder").link(out.tee())?;
        let input = expose_input(&bin, &chain[0], "sink", "sink")?;

        self.pipeline.add(&bin)?;
        let canvas = self.canvas.as_ref().expect("checked above");
        let source = if shares_broadcast { Source::Fanout(canvas.broadcast.video.clone()) } else { Source::Tee(canvas.tee.clone()) };
        let started = self
            .link_from(source, &input, Owner::Core, owner.clone())
            .and_then(|_| lifecycle::start(bin.upcast_ref()))
            .and_then(|()| Ok(self.topology.link_pending(&owner)?));
        if let Err(e) = started {
            self.reap(format!("encoder {name}"), owner, bin, ());
            return Err(e);
        }
        self.encoders.insert(key, SharedEncoder { bin, out: out.clone(), queue: waiting });
        self.count_broadcast_consumers();
        Ok((owner, out))
    }

    fn drop_unused_encoders(&mut self) {
        let unused: Vec<ReturnEncode> = self
            .encoders
            .iter()
            .filter(|(_, e)| self.topology.count_from(&Owner::Encoder(e.bin.name().to_string())) == 0)
            .map(|(key, _)| *key)
            .collect();
        for key in unused {
            if let Some(encoder) = self.encoders.remove(&key) {
                let name = encoder.bin.name().to_string();
                self.reap(format!("encoder {name}"), Owner::Encoder(name), encoder.bin, ());
            }
        }
        self.count_broadcast_consumers();
    }

    /// Tells the broadcast encode how many parts take it: every output, and
    /// the callers sharing it (one re-framing part for all of them).
    fn count_broadcast_consumers(&self) {
        if let Some(canvas) = &self.canvas {
            let sharing = usize::from(self.encoders.contains_key(&ReturnEncode::BROADCAST));
            canvas.broadcast.set_consumers(self.outputs.len() + sharing);
        }
    }

    /// Links a new src pad of `source` to `sink` and records the link; the
    /// pad goes back to `source` if that fails.
    fn link_from(&mut self, source: Source, sink: &gst::Pad, from: Owner, to: Owner) -> Result<gst::Pad, MediaError> {
        let src = match &source {
            Source::Tee(tee) => request_pad(tee, "src_%u")?,
            Source::Fanout(fanout) => fanout.subscribe()?,
        };
        if let Err(e) = self.topology.link(&src, sink, from, to) {
            super::part::release(&src);
            return Err(e.into());
        }
        Ok(src)
    }

    /// The composition's encoder settings; a scaled-down encode gets the
    /// bitrate in proportion to its pixels (fewer pixels need fewer bits),
    /// and never more than its size's H.264 level allows: a CIF decoder at
    /// level 1.3 takes 768 kbit/s at most, and x264 would otherwise mark the
    /// stream with a higher level than the answer said.
    fn encoder_settings(&self, key: &ReturnEncode) -> EncoderSettings {
        let v = &self.config.video;
        let bitrate_kbps = match (key.bitrate_kbps, key.size) {
            (Some(kbps), _) => kbps,
            (None, Some(size)) => {
                let share = f64::from(size.width * size.height) / f64::from(v.width * v.height);
                let proportional = (f64::from(v.bitrate_kbps) * share).round().max(MIN_SCALED_BITRATE_KBPS) as u32;
                proportional.min(h264::max_bitrate_kbps(size, v.fps))
            }
            (None, None) => v.bitrate_kbps,
        };
        EncoderSettings { bitrate_kbps: Some(bitrate_kbps), keyframe_interval_frames: Some(v.fps * v.keyframe_interval_secs) }
    }

    /// The canvas as SDP negotiation sees it.
    fn sdp_canvas(&self) -> sdp::Canvas {
        let v = &self.config.video;
        sdp::Canvas { width: v.width, height: v.height, fps: v.fps }
    }

    /// Starts an output on the broadcast encode.
    pub fn add_output(&mut self, id: &OutputId, output: &ValidOutput, paths: &OutputPaths, publisher: Option<PublisherHandle>) -> Result<(), MediaError> {
        let canvas = self.canvas.as_ref().ok_or_else(|| MediaError::Gst("no broadcast encode".into()))?;
        let (video, audio, feed) = (canvas.broadcast.video.clone(), canvas.broadcast.audio.clone(), canvas.broadcast.feed.clone());
        let name = output_part_name(id);
        let file = match output {
            ValidOutput::Rtmp(_) => {
                let publisher = publisher.ok_or_else(|| MediaError::Gst("an RTMP output needs its publisher".into()))?;
                feed.add(FeedKey::Output(id.clone()), FeedTarget::Publisher { handle: publisher.clone(), was_live: false });
                feed.request_keyframe();
                self.outputs.insert(id.clone(), OutputMedia::Rtmp(publisher));
                self.count_broadcast_consumers();
                return Ok(());
            }
            // A directory per output: a new HLS output never shares it with one still stopping.
            ValidOutput::Hls => {
                FileOutput::hls(&name, paths.hls_dir.join(self.id.as_str()).join(id.as_str()), self.config.video.keyframe_interval_secs)?
            }
            ValidOutput::Record { relative_path, format } => FileOutput::recording(&name, paths.recordings_dir.join(relative_path), *format)?,
        };
        let owner = Owner::Output(id.clone());
        let fuse = self.fuses.lock().expect("fuses lock").entry(name.clone()).or_default().clone();
        let started = self.start_file_output(&file, &owner, [&video, &audio], fuse);
        if let Err(e) = started {
            self.fuses.lock().expect("fuses lock").remove(&name);
            let bin = file.bin.clone();
            self.reap(format!("output {id} of composition {}", self.id), owner, bin, ());
            return Err(e);
        }
        file.count_written();
        feed.request_keyframe();
        self.outputs.insert(id.clone(), OutputMedia::File(file));
        self.count_broadcast_consumers();
        Ok(())
    }

    fn start_file_output(&mut self, file: &FileOutput, owner: &Owner, sources: [&Fanout; 2], fuse: Arc<AtomicBool>) -> Result<(), MediaError> {
        self.pipeline.add(&file.bin)?;
        for (source, input) in sources.into_iter().zip([&file.video_in, &file.audio_in]) {
            let src = self.link_from(Source::Fanout(source.clone()), input, Owner::Core, owner.clone())?;
            let fuse = fuse.clone();
            src.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST, move |_, _| {
                if fuse.load(Ordering::SeqCst) { gst::PadProbeReturn::Drop } else { gst::PadProbeReturn::Ok }
            });
        }
        lifecycle::start(file.bin.upcast_ref())?;
        self.topology.link_pending(owner)?;
        Ok(())
    }

    /// Stops an output. A recording is finalized (its muxer writes its last
    /// data) off this thread; the ticket says when it is done. An RTMP
    /// output needs no waiting: its publisher closes on its own.
    pub fn remove_output(&mut self, id: &OutputId) -> Option<StopTicket> {
        let output = self.outputs.remove(id)?;
        self.count_broadcast_consumers();
        let name = output_part_name(id);
        let failed = self.fuses.lock().expect("fuses lock").remove(&name).is_some_and(|f| f.load(Ordering::SeqCst));
        match output {
            OutputMedia::Rtmp(publisher) => {
                if let Some(canvas) = &self.canvas {
                    canvas.broadcast.feed.remove(&FeedKey::Output(id.clone()));
                }
                publisher.stop();
                None
            }
            OutputMedia::File(file) => {
                let links = self.detach(&Owner::Output(id.clone()), &file.bin);
                let pipeline = self.pipeline.clone();
                let what = format!("output {id} of composition {}", self.id);
                Some(self.reaper.reap(Teardown::new(what, move || {
                    file.finalize_recording(failed);
                    topology::undo(&links);
                    let _ = file.bin.set_state(gst::State::Null);
                    let _ = pipeline.remove(&file.bin);
                    file.remove_hls_files();
                })))
            }
        }
    }

    pub fn file_output_status(&self, id: &OutputId) -> Option<FileOutputStatus> {
        match self.outputs.get(id)? {
            OutputMedia::Rtmp(_) => None,
            OutputMedia::File(file) => {
                let bytes = file.written.count();
                Some(FileOutputStatus { bytes_written: bytes, live: bytes > 0 })
            }
        }
    }

    /// Frames waiting in front of each video encoder, by encoder (`broadcast`,
    /// or the profile of a callers' encoder): one that stays at its queue's
    /// size cannot keep up, and frames are being dropped.
    pub fn encoder_queues(&self) -> Vec<(String, u32)> {
        let level = |queue: &gst::Element| queue.property::<u32>("current-level-buffers");
        let broadcast = self.canvas.iter().map(|c| ("broadcast".to_string(), level(&c.broadcast.video_queue)));
        let shared = self.encoders.iter().filter_map(|(key, e)| Some((key.label(), level(e.queue.as_ref()?))));
        broadcast.chain(shared).collect()
    }

    /// The encoders the broadcast runs, (video, audio): one each however
    /// many outputs there are.
    pub fn broadcast_encoders(&self) -> (usize, usize) {
        self.canvas.as_ref().map_or((0, 0), |c| c.broadcast.encoders())
    }

    /// Whether the broadcast encoders are at work: something takes what they make.
    pub fn broadcast_encoding(&self) -> bool {
        self.canvas.as_ref().is_some_and(|c| c.broadcast.encoding())
    }
}

/// An output's part name, which its bus messages carry.
pub fn output_part_name(id: &OutputId) -> String {
    format!("out-{id}")
}

/// A caller's part name, which its bus messages carry.
pub fn participant_part_name(id: &ParticipantId) -> String {
    format!("caller-{id}")
}

fn tripped(fuses: &Fuses, name: &str) -> bool {
    fuses.lock().expect("fuses lock").get(name).is_some_and(|f| f.load(Ordering::SeqCst))
}

fn canvas_caps_for(config: &CompositionConfig) -> gst::Caps {
    let v = &config.video;
    in_canvas_colours(gst::Caps::builder("video/x-raw").field("format", "I420"))
        .field("width", v.width as i32)
        .field("height", v.height as i32)
        .field("framerate", gst::Fraction::new(v.fps as i32, 1))
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
        .build()
}

/// The least bitrate a scaled-down return encode gets: below it x264's
/// CBR smears even a small composite.
const MIN_SCALED_BITRATE_KBPS: f64 = 128.0;

/// Scales the canvas to `size` (square pixels), in front of an encoder.
/// The size keeps the canvas's aspect ratio to the nearest even width, so
/// the picture is stretched by under a pixel rather than given borders.
fn scale_to(size: FrameSize, prefix: &str) -> Result<[gst::Element; 2], MediaError> {
    let scale = make("videoscale", &format!("{prefix}-scale"))?;
    scale.set_property("add-borders", false);
    let caps = make("capsfilter", &format!("{prefix}-size"))?;
    caps.set_property(
        "caps",
        in_canvas_colours(gst::Caps::builder("video/x-raw"))
            .field("width", size.width as i32)
            .field("height", size.height as i32)
            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
            .build(),
    );
    Ok([scale, caps])
}

/// The size a caller's picture is scaled to while no layout shows it.
const UNSEEN_CELL: (u32, u32) = (16, 16);

/// A layout's z (higher in front) as a compositor z-order: pictures on
/// even orders from 2 (0 is the pacing driver's), so that the speaker's
/// border fits just below its picture.
fn picture_zorder(z: u32) -> u32 {
    z.saturating_mul(2).saturating_add(2)
}

fn mix_format(config: &CompositionConfig) -> MixFormat {
    MixFormat { rate: config.audio.sample_rate, channels: config.audio.channels }
}

/// The compositor, paced by a tiny transparent live source so that the
/// canvas keeps its frame rate with no caller at all, its tee, and the
/// broadcast encode (in the pipeline, not yet linked to the tee).
fn build_canvas(
    pipeline: &gst::Pipeline,
    id: &CompositionId,
    config: &CompositionConfig,
    profiles: &Profiles,
    mix: &AudioMix,
    settings: &MediaSettings,
    player: Option<StreamFeed>,
    latency_ns: Arc<AtomicU64>,
) -> Result<Canvas, MediaError> {
    let prefix = format!("comp-{id}");
    let n = |role: &str| format!("{prefix}-{role}");
    let driver = make("videotestsrc", &n("driver"))?;
    driver.set_property("is-live", true);
    driver.set_property_from_str("pattern", "black");
    let driver_caps = make("capsfilter", &n("driver-caps"))?;
    driver_caps.set_property(
        "caps",
        gst::Caps::builder("video/x-raw")
            .field("width", 16)
            .field("height", 16)
            .field("framerate", gst::Fraction::new(config.video.fps as i32, 1))
            .build(),
    );
    let compositor = make("compositor", &n("compositor"))?;
    compositor.set_property_from_str("background", "black");
    compositor.set_property_from_str("start-time-selection", "first");
    // A pad that has never had a buffer (the background's, until a layout
    // sets one) must not be waited for: in live mode every composite frame
    // would wait out the whole latency on it, some 90 ms of glass-to-glass.
    compositor.set_property("ignore-inactive-pads", true);
    let upstream_latency = settings.jitter_buffer + Duration::from_millis(20);
    compositor.set_property("min-upstream-latency", upstream_latency.as_nanos() as u64);
    let canvas_caps = make("capsfilter", &n("canvas-caps"))?;
    canvas_caps.set_property("caps", canvas_caps_for(config));
    let tee = make("tee", &n("video"))?;
    tee.set_property("allow-not-linked", true);

    pipeline.add_many([&driver, &driver_caps, &compositor, &canvas_caps, &tee])?;
    gst::Element::link_many([&driver, &driver_caps])?;
    let driver_pad = request_pad(&compositor, "sink_%u")?;
    // Fully transparent: it only paces the compositor, it never shows.
    driver_pad.set_property("alpha", 0.0f64);
    driver_caps.static_pad("src").expect("capsfilter has src").link(&driver_pad)?;
    // Right after the driver, before any caller: under every one of them.
    let branding =
        Branding::build(pipeline, &compositor, &prefix, &canvas_caps_for(config), config.video.fps, settings.branding_dir.clone())?;
    gst::Element::link_many([&compositor, &canvas_caps, &tee])?;
    let frames = Arc::new(FlowCounter::default());
    let late_frames = Arc::new(FlowCounter::default());
    let out = compositor.static_pad("src").expect("compositor has a src pad");
    count_on(&out, frames.clone(), Measure::Buffers);
    // One frame interval of slack: a frame is late when it misses its slot.
    let frame_interval = Duration::from_secs(1) / config.video.fps.max(1);
    count_late_on(&out, latency_ns.clone(), frame_interval, late_frames.clone());
    let cadence = Cadence::watch(&out, config.video.fps, latency_ns);

    let highlight = Highlight::build(pipeline, &compositor, &prefix, config.video.fps)?;

    let broadcast = Broadcast::build(&prefix, config, profiles, mix, player)?;
    pipeline.add(&broadcast.bin)?;
    Ok(Canvas { compositor, tee, broadcast, highlight, branding, frames, late_frames, cadence })
}

fn request_pad(element: &gst::Element, template: &str) -> Result<gst::Pad, MediaError> {
    element.request_pad_simple(template).ok_or_else(|| MediaError::Gst(format!("{} refused a {template} pad", element.name())))
}

/// Errors go to the engine with the part they came from: the child of the
/// pipeline (`caller-{id}`, `out-{id}`, …) that holds the failing element.
fn watch_bus(pipeline: &gst::Pipeline, id: CompositionId, events: EventSink, fuses: Fuses) {
    let bus = pipeline.bus().expect("a pipeline has a bus");
    let top = pipeline.downgrade();
    bus.set_sync_handler(move |_, message| {
        use gst::MessageView;
        let source = || message.src().map(|s| s.path_string().to_string()).unwrap_or_default();
        match message.view() {
            MessageView::Error(err) => {
                let part = top.upgrade().and_then(|pipeline| part_of(message.src(), &pipeline));
                if let Some(part) = &part
                    && let Some(fuse) = fuses.lock().expect("fuses lock").get(part)
                {
                    fuse.store(true, Ordering::SeqCst);
                }
                events(MediaEvent::Error {
                    composition: id.clone(),
                    part,
                    element: source(),
                    message: format!("{} ({})", err.error(), err.debug().map(|d| d.to_string()).unwrap_or_default()),
                })
            }
            MessageView::Warning(w) => {
                tracing::debug!(composition = %id, element = %source(), "GStreamer warning: {}", w.error())
            }
            MessageView::Latency(_) => events(MediaEvent::LatencyChanged { composition: id.clone() }),
            _ => {}
        }
        gst::BusSyncReply::Drop
    });
}

/// The name of the pipeline's child that holds `object`, if it is in a part.
fn part_of(object: Option<&gst::Object>, pipeline: &gst::Pipeline) -> Option<String> {
    let mut current = object?.clone();
    loop {
        let parent = current.parent()?;
        if parent == *pipeline.upcast_ref::<gst::Object>() {
            return Some(current.name().to_string());
        }
        current = parent;
    }
}
