//! The engine: one actor, on its own thread, that owns every composition.
//!
//! Commands arrive from the HTTP adapter through an [`EngineHandle`];
//! events arrive from GStreamer's threads through the same channel. Nothing
//! else mutates composition state, so there are no locks around it.
//!
//! The engine never waits on GStreamer without a deadline (see
//! `media::lifecycle`): a part starts within half a second or is given up,
//! and a part stops on a thread of its own while the engine goes on. A
//! removal is answered when the part has stopped (204), or after
//! [`REPLY_DEADLINE`] if it has not yet (202: it is gone from the API and
//! still stopping). Every [`TICK`] the watchdogs ([`watch`]) read the
//! media's counters, so that a caller that hears nothing, a frozen
//! composite or an output that stopped writing shows in the API and the log.

mod views;
mod watch;

pub use views::{CompositionView, HealthView, MetricsSnapshot, OutputState, OutputView, ParticipantState, ParticipantView};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::events::EventBus;
use crate::media::profiles::Profiles;
use crate::media::prompts::Prompt;
use crate::media::{
    CompositionMedia, Directions, GuestChange, GuestMedia, JoiningMedium, MediaError, MediaEvent, MediaSettings, MissingImage, OutputPaths,
    PublisherChange, Reaper, StopTicket, check_images, output_part_name, participant_part_name,
};
use crate::model::codec::VideoCodec;
use crate::model::event::EventKind;
use crate::model::pin::{self, PinEntry, PinStep};
use crate::model::health::output_stall_after;
use crate::model::admission::{Cores, OverCapacity, Picture};
use crate::model::composition::{
    CompositionConfig, InvalidConfig, NO_LAYOUT_WITHOUT_VIDEO, NO_OUTPUTS_WITHOUT_VIDEO,
};
use crate::model::controls::{InvalidPatch, ParticipantControls, ParticipantPatch};
use crate::model::ids::{CompositionId, OutputId, ParticipantId, ViewerId};
use crate::model::layout::LayoutConfig;
use crate::model::output::{InvalidOutput, OutputConfig, ValidOutput};
use crate::model::sdp::crypto::MediaEncryption;
use crate::model::sdp::{self, Canvas, LocalTransport, Negotiation, RenegotiationError, SdpError, with_origin_version};
use crate::model::signalling::{CallDirection, Signalling, SipCall};
use crate::ports::{PortAllocator, PortLease, PortPair, PortsExhausted};
use crate::model::ingest::{IngestTransport, Passphrase};
use crate::srt::{SrtListener, SrtListenerConfig};
use crate::rtmp::{IngestRegistration, PublisherConfig, PublisherHandle, RtmpServerHandle, RtmpsTrust, spawn_publisher};
use crate::webrtc::offer::{SectionPlan, is_webrtc_offer, plan_offer};
use crate::webrtc::{OfferError, Peer, PeerConfig, VideoCodec as WebRtcVideo, WebRtcServer};
use watch::{CompositeWatch, LegWatches, OutputWatch};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("no composition with id {0}")]
    CompositionNotFound(CompositionId),
    #[error("no participant with id {1} in composition {0}")]
    ParticipantNotFound(CompositionId, ParticipantId),
    #[error("no output with id {1} in composition {0}")]
    OutputNotFound(CompositionId, OutputId),
    #[error(transparent)]
    InvalidOutput(#[from] InvalidOutput),
    #[error(transparent)]
    InvalidConfig(#[from] InvalidConfig),
    #[error(transparent)]
    Sdp(#[from] SdpError),
    #[error(transparent)]
    Renegotiation(#[from] RenegotiationError),
    #[error(transparent)]
    PortsExhausted(#[from] PortsExhausted),
    #[error("output {1} of composition {0} already writes there")]
    OutputConflict(CompositionId, OutputId),
    #[error("composition {0} already has {1} participants, the most it takes")]
    CompositionFull(CompositionId, usize),
    #[error(transparent)]
    InvalidPatch(#[from] InvalidPatch),
    #[error("invalid layout: {0}")]
    InvalidLayout(String),
    #[error("invalid layout: {0}")]
    MissingImage(#[from] MissingImage),
    #[error("media pipeline: {0}")]
    Media(#[from] MediaError),
    #[error("dial-out needs SIP (--sip-listen)")]
    DialOutUnavailable,
    #[error("invalid dial-out: {0}")]
    InvalidDialOut(String),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    OverCapacity(#[from] OverCapacity),
    #[error("this node already runs {0} compositions, the most it takes (--max-compositions)")]
    TooManyCompositions(usize),
    #[error("this node already has {0} participants, the most it takes (--max-participants)")]
    TooManyParticipants(usize),
    #[error("participant {0} is a publisher (RTMP, SRT) or a WebRTC guest: it has no SDP session Tutti renegotiates")]
    NoSdpSession(ParticipantId),
    #[error("RTMP publishers need the embedded RTMP server (--rtmp-listen)")]
    IngestUnavailable,
    #[error("no WHEP viewer with id {1} in composition {0}")]
    ViewerNotFound(CompositionId, ViewerId),
    #[error("WebRTC guests need the WebRTC server (--webrtc-udp)")]
    WebRtcUnavailable,
    #[error(transparent)]
    WebRtcOffer(#[from] OfferError),
}

pub struct JoinRequest {
    pub name: Option<String>,
    pub offer: String,
    pub signalling: Signalling,
}

/// A participant Tutti will make the offer to (a SIP late offer, a dial-out).
pub struct OfferRequest {
    pub name: Option<String>,
    pub signalling: Signalling,
}

/// Tutti's offer, and the id its participant will have once answered.
pub struct Offered {
    pub participant: ParticipantId,
    pub offer: String,
}

/// A new participant and the SDP answer for it.
pub struct Joined {
    pub participant: ParticipantView,
    pub answer: String,
}

/// How far a removal got by the time it was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// Its media stopped and everything it held was released.
    Stopped,
    /// Gone from the API; its media is still stopping on a thread of its own.
    Stopping,
}

type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

enum Command {
    CreateComposition(CompositionConfig, Reply<CompositionView>),
    ListCompositions(Reply<Vec<CompositionView>>),
    Rooms(Reply<Vec<(CompositionId, Option<String>)>>),
    GetComposition(CompositionId, Reply<CompositionView>),
    DeleteComposition(CompositionId, Reply<Removal>),
    AddParticipant(CompositionId, JoinRequest, Reply<Joined>),
    AddPublisher(CompositionId, Option<String>, IngestTransport, Reply<ParticipantView>),
    AddWhip(CompositionId, Option<String>, String, Reply<Joined>),
    AddViewer(CompositionId, String, Reply<(ViewerId, String)>),
    RemoveViewer(CompositionId, ViewerId, Reply<()>),
    GetParticipant(CompositionId, ParticipantId, Reply<ParticipantView>),
    RemoveParticipant(CompositionId, ParticipantId, Reply<Removal>),
    UpdateParticipant(CompositionId, ParticipantId, ParticipantPatch, Reply<ParticipantView>),
    Renegotiate(CompositionId, ParticipantId, String, Reply<String>),
    MakeOffer(CompositionId, OfferRequest, Reply<Offered>),
    DialOut(CompositionId, DialRequest, Reply<ParticipantView>),
    PendingOffer(CompositionId, ParticipantId, Reply<String>),
    DialProgressed(CompositionId, ParticipantId, DialProgress, Reply<()>),
    CompleteOffer(CompositionId, ParticipantId, String, Reply<ParticipantView>),
    RequestKeyframe(CompositionId, ParticipantId, Reply<()>),
    Key(CompositionId, ParticipantId, char, Reply<()>),
    SetLayout(CompositionId, LayoutConfig, Reply<LayoutConfig>),
    AddOutput(CompositionId, OutputConfig, Reply<OutputView>),
    GetOutput(CompositionId, OutputId, Reply<OutputView>),
    RemoveOutput(CompositionId, OutputId, Reply<Removal>),
    Health(Reply<HealthView>),
    Metrics(Reply<MetricsSnapshot>),
    Shutdown(oneshot::Sender<()>),
}

enum Message {
    Command(Command),
    Media(MediaEvent),
}

/// Cloneable sender to the engine, used by the HTTP adapter.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Message>,
}

impl EngineHandle {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, EngineError> {
        let (reply, response) = oneshot::channel();
        self.tx.send(Message::Command(make(reply))).map_err(|_| EngineError::ShuttingDown)?;
        response.await.map_err(|_| EngineError::ShuttingDown)?
    }

    pub async fn create_composition(&self, config: CompositionConfig) -> Result<CompositionView, EngineError> {
        self.ask(|r| Command::CreateComposition(config, r)).await
    }

    pub async fn list_compositions(&self) -> Result<Vec<CompositionView>, EngineError> {
        self.ask(Command::ListCompositions).await
    }

    /// Every composition's id and name, oldest first: what SIP routes a
    /// call by, without the views' stats.
    pub async fn rooms(&self) -> Result<Vec<(CompositionId, Option<String>)>, EngineError> {
        self.ask(Command::Rooms).await
    }

    pub async fn composition(&self, id: CompositionId) -> Result<CompositionView, EngineError> {
        self.ask(|r| Command::GetComposition(id, r)).await
    }

    pub async fn delete_composition(&self, id: CompositionId) -> Result<Removal, EngineError> {
        self.ask(|r| Command::DeleteComposition(id, r)).await
    }

    pub async fn add_participant(&self, id: CompositionId, request: JoinRequest) -> Result<Joined, EngineError> {
        self.ask(|r| Command::AddParticipant(id, request, r)).await
    }

    /// A participant that an RTMP or SRT publisher (OBS, ffmpeg) becomes
    /// with the stream key this answers with, whole this once (masked afterwards).
    pub async fn add_publisher(&self, id: CompositionId, name: Option<String>, transport: IngestTransport) -> Result<ParticipantView, EngineError> {
        self.ask(|r| Command::AddPublisher(id, name, transport, r)).await
    }

    /// A WHIP publisher (RFC 9725) from its offer: a participant that sends
    /// its camera and microphone over WebRTC and is sent nothing.
    pub async fn add_whip(&self, id: CompositionId, name: Option<String>, offer: String) -> Result<Joined, EngineError> {
        self.ask(|r| Command::AddWhip(id, name, offer, r)).await
    }

    /// A WHEP viewer from its offer: it is sent the programme (composite and
    /// full mix). Answers with the viewer's id and Tutti's answer.
    pub async fn add_viewer(&self, id: CompositionId, offer: String) -> Result<(ViewerId, String), EngineError> {
        self.ask(|r| Command::AddViewer(id, offer, r)).await
    }

    pub async fn remove_viewer(&self, id: CompositionId, viewer: ViewerId) -> Result<(), EngineError> {
        self.ask(|r| Command::RemoveViewer(id, viewer, r)).await
    }

    pub async fn participant(&self, id: CompositionId, pid: ParticipantId) -> Result<ParticipantView, EngineError> {
        self.ask(|r| Command::GetParticipant(id, pid, r)).await
    }

    pub async fn remove_participant(&self, id: CompositionId, pid: ParticipantId) -> Result<Removal, EngineError> {
        self.ask(|r| Command::RemoveParticipant(id, pid, r)).await
    }

    /// Renames a participant or changes its controls, live.
    pub async fn update_participant(&self, id: CompositionId, pid: ParticipantId, patch: ParticipantPatch) -> Result<ParticipantView, EngineError> {
        self.ask(|r| Command::UpdateParticipant(id, pid, patch, r)).await
    }

    /// A participant's new SDP offer in its running session (hold, resume,
    /// a moved address): answers with Tutti's answer, or refuses and leaves
    /// the session as it was.
    pub async fn renegotiate(&self, id: CompositionId, pid: ParticipantId, offer: String) -> Result<String, EngineError> {
        self.ask(|r| Command::Renegotiate(id, pid, offer, r)).await
    }

    /// Tutti's offer for a participant whose endpoint will answer (a late
    /// offer, a dial-out); the participant joins with [`Self::complete_offer`],
    /// or the offer is withdrawn with [`Self::remove_participant`].
    pub async fn make_offer(&self, id: CompositionId, request: OfferRequest) -> Result<Offered, EngineError> {
        self.ask(|r| Command::MakeOffer(id, request, r)).await
    }

    /// Calls a SIP URI into composition `id`: a participant in state
    /// `calling` whose offer the SIP adapter sends (it follows the
    /// `participant_calling` event) and whose answer it reports.
    pub async fn dial_out(&self, id: CompositionId, request: DialRequest) -> Result<ParticipantView, EngineError> {
        self.ask(|r| Command::DialOut(id, request, r)).await
    }

    /// Tutti's offer to a participant whose answer is pending.
    pub async fn pending_offer(&self, id: CompositionId, pid: ParticipantId) -> Result<String, EngineError> {
        self.ask(|r| Command::PendingOffer(id, pid, r)).await
    }

    /// How a dial-out goes before its answer: ringing, or failed.
    pub async fn dial_progressed(&self, id: CompositionId, pid: ParticipantId, progress: DialProgress) -> Result<(), EngineError> {
        self.ask(|r| Command::DialProgressed(id, pid, progress, r)).await
    }

    /// The endpoint's answer to Tutti's offer: the participant joins.
    pub async fn complete_offer(&self, id: CompositionId, pid: ParticipantId, answer: String) -> Result<ParticipantView, EngineError> {
        self.ask(|r| Command::CompleteOffer(id, pid, answer, r)).await
    }

    /// A DTMF key a participant pressed, sent in its signalling (SIP INFO)
    /// rather than in its RTP.
    pub async fn key(&self, id: CompositionId, pid: ParticipantId, key: char) -> Result<(), EngineError> {
        self.ask(|r| Command::Key(id, pid, key, r)).await
    }

    /// A keyframe, soon, in the video a participant receives (its endpoint
    /// lost the picture and asked, as room systems do over SIP INFO).
    pub async fn request_keyframe(&self, id: CompositionId, pid: ParticipantId) -> Result<(), EngineError> {
        self.ask(|r| Command::RequestKeyframe(id, pid, r)).await
    }

    /// Replaces a composition's layout, live; answers with the layout now in force.
    pub async fn set_layout(&self, id: CompositionId, layout: LayoutConfig) -> Result<LayoutConfig, EngineError> {
        self.ask(|r| Command::SetLayout(id, layout, r)).await
    }

    pub async fn add_output(&self, id: CompositionId, output: OutputConfig) -> Result<OutputView, EngineError> {
        self.ask(|r| Command::AddOutput(id, output, r)).await
    }

    pub async fn output(&self, id: CompositionId, oid: OutputId) -> Result<OutputView, EngineError> {
        self.ask(|r| Command::GetOutput(id, oid, r)).await
    }

    pub async fn remove_output(&self, id: CompositionId, oid: OutputId) -> Result<Removal, EngineError> {
        self.ask(|r| Command::RemoveOutput(id, oid, r)).await
    }

    /// The engine's own answer: proof that it is not stuck.
    pub async fn health(&self) -> Result<HealthView, EngineError> {
        self.ask(Command::Health).await
    }

    /// What `/metrics` shows, read in one go.
    pub async fn metrics(&self) -> Result<MetricsSnapshot, EngineError> {
        self.ask(Command::Metrics).await
    }

    /// Stops every composition, releasing all pipelines and ports (those
    /// that stop within [`SHUTDOWN_DEADLINE`]).
    pub async fn shutdown(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Command(Command::Shutdown(done))).is_ok() {
            let _ = wait.await;
        }
    }
}

struct Composition {
    config: CompositionConfig,
    created_at: OffsetDateTime,
    media: CompositionMedia,
    /// In join order.
    participants: Vec<Participant>,
    outputs: Vec<OutputRecord>,
    rtmp_play_url: Option<String>,
    /// `None` in an audio-only composition.
    composite: Option<CompositeWatch>,
    /// Who the layouts follow, as last announced.
    active_speaker: Option<ParticipantId>,
    /// Offers Tutti made, waiting for their answers; dial-outs among them
    /// show as participants (`calling`, `ringing`, `failed`).
    offers: Vec<PendingOffer>,
}

struct OutputRecord {
    id: OutputId,
    valid: ValidOutput,
    created_at: OffsetDateTime,
    /// RTMP outputs: the task that pushes to the destination.
    publisher: Option<PublisherHandle>,
    /// An error its GStreamer part reported (HLS, recordings): it failed.
    failure: Option<String>,
    watch: OutputWatch,
    /// The state last announced as an event.
    announced: OutputState,
}

struct Participant {
    id: ParticipantId,
    name: String,
    /// What it costs: a caller that sends video costs more (see `model::admission`).
    sends_video: bool,
    state: ParticipantState,
    /// What the producer set: mute, volume, hidden, deaf.
    controls: ParticipantControls,
    signalling: Signalling,
    joined: Instant,
    last_error: Option<String>,
    watches: LegWatches,
    /// An RTP participant's offer/answer session; `None` for a publisher (RTMP, SRT).
    session: Option<SdpSession>,
    /// A publisher's ingest (RTMP, SRT); `None` for an RTP participant.
    ingest: Option<Ingest>,
    /// A WebRTC guest's peer; dropping it (the participant leaves) hangs up.
    guest: Option<GuestPeer>,
    /// Dialled in to a room with a PIN and keying it in: not in the room yet.
    lobby: Option<PinEntry>,
    /// When its call is to end: after its last prompt (a wrong PIN, too
    /// late), or when its publisher has not come back.
    leaving_at: Option<Instant>,
}

/// Where a publisher participant's publisher sends, with which key.
struct Ingest {
    /// Without the key: the RTMP application's URL, or the SRT listener's.
    url: String,
    stream_key: String,
    /// Whether an SRT publisher must give a passphrase.
    encrypted: bool,
    /// Dropping it (the participant leaves) refuses the key and
    /// disconnects the publisher.
    attachment: Attachment,
}

/// What a WebRTC offer to a composition makes.
#[derive(Clone, Copy, Debug)]
enum GuestKind {
    /// A guest on the participants URL: sends and receives both.
    Guest,
    /// A WHIP publisher: sends only.
    WhipPublisher,
}

/// A WebRTC guest's peer: closed (RTCP BYE, DTLS close_notify) when the
/// participant is dropped, whoever removed it.
struct GuestPeer {
    peer: Peer,
    /// Where it connected from, once ICE and DTLS are up.
    connected_from: Option<std::net::SocketAddr>,
}

impl Drop for GuestPeer {
    fn drop(&mut self) {
        self.peer.close();
    }
}

/// What will let a publisher in, before it is built.
enum Attaching {
    Rtmp(RtmpServerHandle),
    Srt { port: PortLease, passphrase: Option<Passphrase> },
}

/// What lets a publisher in: its key's place on the RTMP server, or its own
/// SRT listener.
enum Attachment {
    Rtmp { _registration: IngestRegistration },
    Srt { _listener: SrtListener },
}

/// What a participant joins with, besides its negotiation.
struct Seat {
    /// Tutti's offer, when Tutti made it.
    offer: String,
    name: Option<String>,
    signalling: Signalling,
    audio_ports: Option<PortPair>,
    video_ports: Option<PortPair>,
    local: LocalTransport,
    session_id: u64,
}

/// An offer Tutti made, waiting for its answer; its ports are held.
struct PendingOffer {
    id: ParticipantId,
    seat: Seat,
    /// A dial-out's progress; `None` for a SIP late offer (not shown).
    dial: Option<Dial>,
}

/// A dial-out, from the API's `sip_uri`, until it is answered.
struct Dial {
    name: String,
    state: ParticipantState,
    last_error: Option<String>,
}

/// What the signalling adapter reports of a dial-out before its answer.
#[derive(Clone, Debug)]
pub enum DialProgress {
    /// The INVITE left: the dialog's identity, for the API.
    Dialled { call_id: String, from: String },
    /// The callee is alerted (SIP 180/183).
    Ringing,
    /// It answered: what it says it is (`Server` or `User-Agent`), just before it joins.
    Answering { user_agent: Option<String> },
    /// It will not be answered: the status and reason (`486 Busy Here`).
    Failed(String),
}

/// `POST .../participants` with a `sip_uri`: a participant Tutti calls.
pub struct DialRequest {
    pub name: Option<String>,
    pub uri: String,
}

/// A participant's side of its offer/answer session: what later offers
/// are negotiated against and what its answers keep (RFC 3264 §8).
struct SdpSession {
    /// As negotiated when it joined: what its leg was built for.
    built: Negotiation,
    local: LocalTransport,
    session_id: u64,
    /// The o= version of Tutti's last answer.
    version: u64,
    /// The caller's last offer asked Tutti to send it nothing.
    on_hold: bool,
}

/// What the engine needs from the async side: a runtime for RTMP
/// publishers, the CAs their `rtmps://` servers are checked against, if it
/// runs the embedded RTMP server, and where events go.
#[derive(Clone)]
pub struct Services {
    pub runtime: tokio::runtime::Handle,
    pub rtmps_trust: RtmpsTrust,
    pub rtmp_server: Option<RtmpServerHandle>,
    /// The one UDP socket of every WebRTC guest; `None` refuses them.
    pub webrtc: Option<Arc<WebRtcServer>>,
    pub events: EventBus,
}

/// A removal waiting for its part to stop before it is answered.
struct PendingRemoval {
    reply: Reply<Removal>,
    since: Instant,
}

pub struct Engine {
    config: Config,
    services: Services,
    profiles: Arc<Profiles>,
    ports: PortAllocator,
    /// One port per SRT participant.
    srt_ports: PortAllocator,
    compositions: BTreeMap<CompositionId, Composition>,
    reaper: Reaper,
    pending_removals: HashMap<StopTicket, PendingRemoval>,
    tx: mpsc::Sender<Message>,
}

/// Plays a prompt to a caller in the lobby; says how long it lasts. One
/// that cannot play is logged (the caller can still key in its PIN).
fn announce(composition: &Composition, pid: &ParticipantId, prompt: Prompt) -> Duration {
    composition.media.announce(pid, prompt).unwrap_or_else(|e| {
        tracing::warn!(participant = %pid, ?prompt, "prompt not played: {e}");
        Duration::ZERO
    })
}

/// The participant `pid` of composition `id`, or why not. On the list
/// rather than the composition, so that its media stays free to borrow.
fn participant_mut<'a>(participants: &'a mut [Participant], id: &CompositionId, pid: &ParticipantId) -> Result<&'a mut Participant, EngineError> {
    participants.iter_mut().find(|p| &p.id == pid).ok_or_else(|| EngineError::ParticipantNotFound(id.clone(), pid.clone()))
}

/// The composition `id`, borrowing only the map, so that the engine's
/// other fields (its event bus) stay usable meanwhile.
fn composition_mut<'a>(
    compositions: &'a mut BTreeMap<CompositionId, Composition>,
    id: &CompositionId,
) -> Result<&'a mut Composition, EngineError> {
    compositions.get_mut(id).ok_or_else(|| EngineError::CompositionNotFound(id.clone()))
}

/// How often the watchdogs look and late removals are answered.
const TICK: Duration = Duration::from_millis(100);
/// A removal whose part has not stopped by then is answered 202, so that
/// the API answers within a second whatever GStreamer does.
pub const REPLY_DEADLINE: Duration = Duration::from_millis(750);
/// How long a shutdown waits for the compositions to stop.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(4);
/// A new stream key (RTMP, SRT): 128 random bits, as letters and digits.
fn stream_key() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl Engine {
    /// Starts the engine thread. `gst::init()` must have succeeded and the
    /// profiles must have been validated.
    pub fn start(config: Config, profiles: Profiles, services: Services) -> EngineHandle {
        let (tx, rx) = mpsc::channel();
        let events_tx = tx.clone();
        let reaper = Reaper::new(Arc::new(move |event| {
            let _ = events_tx.send(Message::Media(event));
        }));
        let engine = Engine {
            services,
            ports: PortAllocator::new(config.rtp_ports, config.rtp_bind),
            srt_ports: PortAllocator::new(config.srt_ports, config.rtp_bind),
            config,
            profiles: Arc::new(profiles),
            compositions: BTreeMap::new(),
            reaper,
            pending_removals: HashMap::new(),
            tx: tx.clone(),
        };
        std::thread::Builder::new()
            .name("tutti-engine".into())
            .spawn(move || engine.run(rx))
            .expect("spawning the engine thread");
        EngineHandle { tx }
    }

    fn run(mut self, rx: mpsc::Receiver<Message>) {
        let mut next_tick = Instant::now() + TICK;
        loop {
            let timeout = next_tick.saturating_duration_since(Instant::now());
            match rx.recv_timeout(timeout) {
                Ok(Message::Command(Command::Shutdown(done))) => {
                    self.shutdown(&rx);
                    let _ = done.send(());
                    return;
                }
                Ok(Message::Command(command)) => self.handle(command),
                Ok(Message::Media(event)) => self.on_media_event(event),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.shutdown(&rx);
                    return;
                }
            }
            if Instant::now() >= next_tick {
                self.tick();
                next_tick = Instant::now() + TICK;
            }
        }
    }

    fn handle(&mut self, command: Command) {
        // A reply nobody waits for any more (client gone) is not an error.
        match command {
            Command::CreateComposition(config, reply) => drop(reply.send(self.create_composition(config))),
            Command::ListCompositions(reply) => {
                drop(reply.send(Ok(self.compositions.iter().map(|(id, c)| c.view(id)).collect())))
            }
            Command::Rooms(reply) => {
                let mut rooms: Vec<_> = self.compositions.iter().map(|(id, c)| (c.created_at, id.clone(), c.config.name.clone())).collect();
                rooms.sort_by_key(|(created_at, ..)| *created_at);
                drop(reply.send(Ok(rooms.into_iter().map(|(_, id, name)| (id, name)).collect())))
            }
            Command::GetComposition(id, reply) => drop(reply.send(self.get(&id).map(|c| c.view(&id)))),
            Command::DeleteComposition(id, reply) => {
                let removed = self.delete_composition(&id);
                self.answer_removal(removed, reply)
            }
            Command::AddParticipant(id, request, reply) => drop(reply.send(self.add_participant(&id, request))),
            Command::AddPublisher(id, name, transport, reply) => drop(reply.send(self.add_publisher(&id, name, transport))),
            Command::AddWhip(id, name, offer, reply) => drop(reply.send(self.add_guest(&id, name, &offer, GuestKind::WhipPublisher))),
            Command::AddViewer(id, offer, reply) => drop(reply.send(self.add_viewer(&id, &offer))),
            Command::RemoveViewer(id, viewer, reply) => drop(reply.send(self.remove_viewer(&id, &viewer))),
            Command::GetParticipant(id, pid, reply) => drop(reply.send(
                self.get(&id).and_then(|c| c.participant_view(&pid).ok_or(EngineError::ParticipantNotFound(id, pid))),
            )),
            Command::RemoveParticipant(id, pid, reply) => {
                let removed = self.remove_participant(&id, &pid);
                self.answer_removal(removed, reply)
            }
            Command::UpdateParticipant(id, pid, patch, reply) => drop(reply.send(self.update_participant(&id, &pid, &patch))),
            Command::Renegotiate(id, pid, offer, reply) => drop(reply.send(self.renegotiate(&id, &pid, &offer))),
            Command::MakeOffer(id, request, reply) => drop(reply.send(self.make_offer(&id, request, None))),
            Command::DialOut(id, request, reply) => drop(reply.send(self.dial_out(&id, request))),
            Command::PendingOffer(id, pid, reply) => drop(reply.send(self.get(&id).and_then(|c| {
                let offer = c.offers.iter().find(|o| o.id == pid).ok_or_else(|| EngineError::ParticipantNotFound(id.clone(), pid.clone()))?;
                Ok(offer.seat.offer.clone())
            }))),
            Command::DialProgressed(id, pid, progress, reply) => drop(reply.send(self.dial_progressed(&id, &pid, progress))),
            Command::CompleteOffer(id, pid, answer, reply) => drop(reply.send(self.complete_offer(&id, &pid, &answer))),
            Command::Key(id, pid, key, reply) => drop(reply.send(self.on_key(&id, &pid, key))),
            Command::RequestKeyframe(id, pid, reply) => drop(reply.send(self.get(&id).and_then(|c| {
                c.participants.iter().find(|p| p.id == pid).ok_or_else(|| EngineError::ParticipantNotFound(id.clone(), pid.clone()))?;
                tracing::debug!(composition = %id, participant = %pid, "keyframe requested for a participant");
                c.media.request_keyframe_for(&pid);
                Ok(())
            }))),
            Command::SetLayout(id, layout, reply) => drop(reply.send(self.set_layout(&id, layout))),
            Command::AddOutput(id, output, reply) => drop(reply.send(self.add_output(&id, &output))),
            Command::GetOutput(id, oid, reply) => drop(reply.send(self.get(&id).and_then(|c| {
                let output = c.outputs.iter().find(|o| o.id == oid).ok_or(EngineError::OutputNotFound(id.clone(), oid))?;
                Ok(c.output_view(&id, output))
            }))),
            Command::RemoveOutput(id, oid, reply) => {
                let removed = self.remove_output(&id, &oid);
                self.answer_removal(removed, reply)
            }
            Command::Health(reply) => drop(reply.send(Ok(self.health()))),
            Command::Metrics(reply) => drop(reply.send(Ok(self.metrics()))),
            Command::Shutdown(_) => unreachable!("handled by run()"),
        }
    }

    fn get(&self, id: &CompositionId) -> Result<&Composition, EngineError> {
        self.compositions.get(id).ok_or_else(|| EngineError::CompositionNotFound(id.clone()))
    }

    fn create_composition(&mut self, config: CompositionConfig) -> Result<CompositionView, EngineError> {
        config.validate()?;
        if !config.audio_only {
            check_images(&config.layout, &self.config.branding_dir)?;
        }
        let limits = &self.config.limits;
        if self.compositions.len() >= limits.max_compositions {
            return Err(EngineError::TooManyCompositions(limits.max_compositions));
        }
        let cost = limits.costs.composition(picture(&config)) + limits.costs.output * config.outputs.len() as Cores;
        limits.cpu_budget.admit(self.committed_cost(), cost)?;
        let id = CompositionId::random();
        let events_tx = self.tx.clone();
        let events = Arc::new(move |event| {
            let _ = events_tx.send(Message::Media(event));
        });
        let settings = MediaSettings {
            jitter_buffer: self.config.jitter_buffer,
            source_check: self.config.rtp_source_check,
            branding_dir: self.config.branding_dir.clone(),
        };
        // The embedded RTMP server plays the composite picture: none without video.
        let server = self.services.rtmp_server.as_ref().filter(|_| !config.audio_only);
        let player = server.and_then(|s| s.register_stream(id.as_str()).ok());
        let media =
            CompositionMedia::new(id.clone(), config.clone(), self.profiles.clone(), settings, events, self.reaper.clone(), player)?;
        tracing::info!(composition = %id, name = ?config.name, "composition created");
        self.services.events.publish(&id, EventKind::CompositionCreated { name: config.name.clone() });
        let composition = Composition {
            created_at: OffsetDateTime::now_utc(),
            composite: media.composite_frames().map(|_| CompositeWatch::new(Instant::now())),
            media,
            participants: Vec::new(),
            outputs: Vec::new(),
            rtmp_play_url: server.map(|s| s.play_url(id.as_str())),
            config: config.clone(),
            active_speaker: None,
            offers: Vec::new(),
        };
        self.compositions.insert(id.clone(), composition);
        for output in &config.outputs {
            if let Err(e) = self.add_output(&id, output) {
                // Its outputs so far and the composition go, as a DELETE would.
                drop(self.delete_composition(&id));
                return Err(e);
            }
        }
        Ok(self.compositions[&id].view(&id))
    }

    fn add_output(&mut self, id: &CompositionId, output: &OutputConfig) -> Result<OutputView, EngineError> {
        let valid = output.validate()?;
        let runtime = self.services.runtime.clone();
        let rtmps_trust = self.services.rtmps_trust.clone();
        let paths = OutputPaths { hls_dir: self.config.hls_dir.clone(), recordings_dir: self.config.recordings_dir.clone() };
        let taken = self.compositions.iter().find_map(|(cid, c)| {
            let output = c.outputs.iter().find(|o| valid.collides_with(&o.valid))?;
            Some(EngineError::OutputConflict(cid.clone(), output.id.clone()))
        });
        if let Some(conflict) = taken {
            return Err(conflict);
        }
        let admitted = self.config.limits.cpu_budget.admit(self.committed_cost(), self.config.limits.costs.output);
        let composition = composition_mut(&mut self.compositions, id)?;
        if composition.config.audio_only {
            return Err(InvalidConfig(NO_OUTPUTS_WITHOUT_VIDEO.into()).into());
        }
        admitted?;
        let oid = OutputId::random();
        let publisher = match &valid {
            ValidOutput::Rtmp(url) => {
                // Publishers are tokio tasks; the engine thread is not in the runtime.
                let _runtime = runtime.enter();
                Some(spawn_publisher(PublisherConfig::new(url.clone(), rtmps_trust)))
            }
            _ => None,
        };
        if let Err(e) = composition.media.add_output(&oid, &valid, &paths, publisher.clone()) {
            if let Some(publisher) = publisher {
                publisher.stop();
            }
            return Err(e.into());
        }
        tracing::info!(composition = %id, output = %oid, kind = ?valid.kind(), "output added");
        let keyframe_interval = Duration::from_secs(composition.config.video.keyframe_interval_secs.into());
        let stall_after = output_stall_after(valid.kind(), keyframe_interval);
        self.services.events.publish(id, EventKind::OutputAdded { output: oid.clone(), kind: valid.kind() });
        composition.outputs.push(OutputRecord {
            id: oid,
            valid,
            created_at: OffsetDateTime::now_utc(),
            publisher,
            failure: None,
            watch: OutputWatch::new(Instant::now(), stall_after),
            announced: OutputState::Connecting,
        });
        let record = composition.outputs.last().expect("just added");
        Ok(composition.output_view(id, record))
    }

    fn remove_output(&mut self, id: &CompositionId, oid: &OutputId) -> Result<Option<StopTicket>, EngineError> {
        let composition = composition_mut(&mut self.compositions, id)?;
        let index = composition
            .outputs
            .iter()
            .position(|o| &o.id == oid)
            .ok_or_else(|| EngineError::OutputNotFound(id.clone(), oid.clone()))?;
        composition.outputs.remove(index);
        let ticket = composition.media.remove_output(oid);
        tracing::info!(composition = %id, output = %oid, "output removed");
        self.services.events.publish(id, EventKind::OutputRemoved { output: oid.clone() });
        Ok(ticket)
    }

    fn delete_composition(&mut self, id: &CompositionId) -> Result<Option<StopTicket>, EngineError> {
        let composition = self.compositions.remove(id).ok_or_else(|| EngineError::CompositionNotFound(id.clone()))?;
        let ticket = composition.media.shutdown();
        tracing::info!(composition = %id, "composition deleted");
        // Whoever follows a participant or an output hears it end.
        let events = &self.services.events;
        let dialled = composition.offers.iter().filter(|o| o.dial.is_some()).map(|o| &o.id);
        for participant in composition.participants.iter().map(|p| &p.id).chain(dialled) {
            events.publish(id, EventKind::ParticipantLeft { participant: participant.clone() });
        }
        for output in &composition.outputs {
            events.publish(id, EventKind::OutputRemoved { output: output.id.clone() });
        }
        events.publish(id, EventKind::CompositionDeleted);
        Ok(Some(ticket))
    }

    /// Whether one more participant fits this node and composition `id`:
    /// counts, then cost (one that sends video costs more).
    fn admit(&self, id: &CompositionId, sends_video: bool) -> Result<(), EngineError> {
        let limits = &self.config.limits;
        let joined = self.compositions.values().map(|c| c.participants.len() + c.offers.len()).sum::<usize>();
        if joined >= limits.max_participants {
            return Err(EngineError::TooManyParticipants(limits.max_participants));
        }
        let composition = self.get(id)?;
        let most = composition.config.participant_limit();
        if composition.participants.len() + composition.offers.len() >= most {
            return Err(EngineError::CompositionFull(id.clone(), most));
        }
        limits.cpu_budget.admit(self.committed_cost(), limits.costs.caller(sends_video))?;
        Ok(())
    }

    fn canvas_of(&self, id: &CompositionId) -> Result<Canvas, EngineError> {
        let v = &self.get(id)?.config.video;
        Ok(Canvas { width: v.width, height: v.height, fps: v.fps })
    }

    fn add_participant(&mut self, id: &CompositionId, request: JoinRequest) -> Result<Joined, EngineError> {
        if request.signalling == Signalling::Api && is_webrtc_offer(&request.offer) {
            return self.add_guest(id, request.name, &request.offer, GuestKind::Guest);
        }
        let audio_only = self.get(id)?.config.audio_only;
        let mut negotiation = sdp::negotiate(&request.offer, self.config.media_encryption)?;
        if audio_only {
            negotiation = negotiation.without_video()?;
        }
        self.admit(id, negotiation.video.is_some())?;
        let audio_ports = negotiation.audio.as_ref().map(|_| self.ports.allocate()).transpose()?;
        let video_ports = negotiation.video.as_ref().map(|_| self.ports.allocate()).transpose()?;
        let local = LocalTransport {
            address: self.config.public_ip,
            audio_port: audio_ports.as_ref().map(|p| p.rtp_port()),
            video_port: video_ports.as_ref().map(|p| p.rtp_port()),
        };
        let session_id = rand::random::<u32>().into();
        let answer = negotiation.answer(&local, self.canvas_of(id)?, session_id);
        let seat = Seat { offer: String::new(), name: request.name, signalling: request.signalling, audio_ports, video_ports, local, session_id };
        let participant = self.seat(id, ParticipantId::random(), negotiation, seat)?;
        Ok(Joined { participant, answer })
    }

    /// Tutti's offer for a participant whose endpoint will answer (a SIP
    /// late offer, a dial-out): its ports are allocated now, its media is
    /// built by [`Self::complete_offer`] once the answer comes.
    fn make_offer(&mut self, id: &CompositionId, request: OfferRequest, dial: Option<Dial>) -> Result<Offered, EngineError> {
        if self.config.media_encryption == MediaEncryption::Required {
            // Tutti's own offers are plain RTP (no SRTP keys of its own offered yet).
            return Err(EngineError::Sdp(SdpError::NothingInCommon {
                reason: "media_encryption is required, and Tutti offers only plain RTP itself (late offers, dial-outs)".into(),
                supported: "an offer in the INVITE".into(),
            }));
        }
        let audio_only = self.get(id)?.config.audio_only;
        self.admit(id, !audio_only)?;
        let audio_ports = self.ports.allocate()?;
        let video_ports = (!audio_only).then(|| self.ports.allocate()).transpose()?;
        let local = LocalTransport {
            address: self.config.public_ip,
            audio_port: Some(audio_ports.rtp_port()),
            video_port: video_ports.as_ref().map(|p| p.rtp_port()),
        };
        let session_id = rand::random::<u32>().into();
        let offer = sdp::offer(&local, self.canvas_of(id)?, session_id);
        let pid = ParticipantId::random();
        let seat = Seat {
            offer: offer.clone(),
            name: request.name,
            signalling: request.signalling,
            audio_ports: Some(audio_ports),
            video_ports,
            local,
            session_id,
        };
        composition_mut(&mut self.compositions, id)?.offers.push(PendingOffer { id: pid.clone(), seat, dial });
        tracing::info!(composition = %id, participant = %pid, "offer made; the answer is pending");
        Ok(Offered { participant: pid, offer })
    }

    /// Builds the media of a participant Tutti made an offer for, with its
    /// endpoint's answer. A broken answer ends the offer: its ports are freed.
    fn complete_offer(&mut self, id: &CompositionId, pid: &ParticipantId, answer: &str) -> Result<ParticipantView, EngineError> {
        let composition = composition_mut(&mut self.compositions, id)?;
        let index = composition
            .offers
            .iter()
            .position(|o| &o.id == pid && o.dial.as_ref().is_none_or(|d| d.state != ParticipantState::Failed))
            .ok_or_else(|| EngineError::ParticipantNotFound(id.clone(), pid.clone()))?;
        let pending = composition.offers.remove(index);
        let mut seat = pending.seat;
        let negotiation = match sdp::read_answer(&seat.local, answer) {
            Ok(negotiation) => negotiation,
            Err(error) => {
                if let Some(dial) = pending.dial {
                    // A dial-out whose answer is broken stays listed, failed; its ports go.
                    let reason = format!("the answer could not be used: {error}");
                    let failed = Dial { state: ParticipantState::Failed, last_error: Some(reason.clone()), ..dial };
                    let seat = Seat { audio_ports: None, video_ports: None, ..seat };
                    composition.offers.push(PendingOffer { id: pid.clone(), seat, dial: Some(failed) });
                    self.services.events.publish(id, EventKind::ParticipantFailed { participant: pid.clone(), reason });
                }
                return Err(error.into());
            }
        };
        // What the answer declined is not kept.
        if negotiation.audio.is_none() {
            seat.audio_ports = None;
            seat.local.audio_port = None;
        }
        if negotiation.video.is_none() {
            seat.video_ports = None;
            seat.local.video_port = None;
        }
        self.seat(id, pid.clone(), negotiation, seat)
    }

    fn dial_out(&mut self, id: &CompositionId, request: DialRequest) -> Result<ParticipantView, EngineError> {
        if self.config.sip.listen.is_none() {
            return Err(EngineError::DialOutUnavailable);
        }
        let uri = request.uri.trim().to_string();
        if !uri.to_ascii_lowercase().starts_with("sip:") || uri.len() > 512 || uri.chars().any(char::is_control) {
            return Err(EngineError::InvalidDialOut(format!("sip_uri {uri:?} is not a sip: URI")));
        }
        let name = request.name.filter(|n| !n.trim().is_empty()).unwrap_or_else(|| uri.clone());
        let signalling = Signalling::Sip(SipCall {
            call_id: String::new(),
            from: String::new(),
            to: uri.clone(),
            user_agent: None,
            direction: CallDirection::Outbound,
        });
        let dial = Dial { name: name.clone(), state: ParticipantState::Calling, last_error: None };
        let offered = self.make_offer(id, OfferRequest { name: Some(name.clone()), signalling }, Some(dial))?;
        let pid = offered.participant;
        self.services.events.publish(id, EventKind::ParticipantCalling { participant: pid.clone(), name, sip_uri: uri });
        Ok(self.get(id)?.participant_view(&pid).expect("just offered"))
    }

    fn dial_progressed(&mut self, id: &CompositionId, pid: &ParticipantId, progress: DialProgress) -> Result<(), EngineError> {
        let composition = composition_mut(&mut self.compositions, id)?;
        let offer = composition
            .offers
            .iter_mut()
            .find(|o| &o.id == pid)
            .ok_or_else(|| EngineError::ParticipantNotFound(id.clone(), pid.clone()))?;
        let Some(dial) = offer.dial.as_mut() else { return Ok(()) };
        let sip = match &mut offer.seat.signalling {
            Signalling::Sip(call) => Some(call),
            _ => None,
        };
        match progress {
            DialProgress::Dialled { call_id, from } => {
                if let Some(call) = sip {
                    (call.call_id, call.from) = (call_id, from);
                }
            }
            DialProgress::Answering { user_agent } => {
                if let Some(call) = sip {
                    call.user_agent = user_agent;
                }
            }
            DialProgress::Ringing if dial.state == ParticipantState::Calling => {
                dial.state = ParticipantState::Ringing;
                self.services.events.publish(id, EventKind::ParticipantRinging { participant: pid.clone() });
            }
            DialProgress::Ringing => {}
            DialProgress::Failed(reason) => {
                tracing::info!(composition = %id, participant = %pid, %reason, "dial-out failed");
                dial.state = ParticipantState::Failed;
                dial.last_error = Some(reason.clone());
                // Its ports go now; it stays listed, failed, until deleted.
                offer.seat.audio_ports = None;
                offer.seat.video_ports = None;
                self.services.events.publish(id, EventKind::ParticipantFailed { participant: pid.clone(), reason });
            }
        }
        Ok(())
    }

    /// Builds a negotiated participant's media and puts it in the composition.
    fn seat(&mut self, id: &CompositionId, pid: ParticipantId, negotiation: Negotiation, seat: Seat) -> Result<ParticipantView, EngineError> {
        let canvas = self.canvas_of(id)?;
        let composition = composition_mut(&mut self.compositions, id)?;
        let Seat { name, signalling, audio_ports, video_ports, local, session_id, .. } = seat;
        let lobby = composition.config.pin.clone().filter(|_| signalling.dialled_in()).map(|pin| PinEntry::new(pin, Instant::now()));
        let name = name.filter(|n| !n.trim().is_empty()).unwrap_or_else(|| format!("Caller {}", composition.participants.len() + 1));
        let joining = |negotiated: Option<sdp::NegotiatedMedia>, ports| {
            negotiated.zip(ports).map(|(negotiated, ports)| JoiningMedium { negotiated, ports })
        };
        composition.media.add_participant(
            pid.clone(),
            &name,
            joining(negotiation.audio.clone(), audio_ports),
            joining(negotiation.video.clone(), video_ports),
            lobby.is_some(),
        )?;
        if lobby.is_some() {
            announce(composition, &pid, Prompt::EnterPin);
        }
        tracing::info!(
            composition = %id, participant = %pid, %name,
            audio = ?negotiation.audio.as_ref().map(|m| m.codec),
            video = ?negotiation.video.as_ref().map(|m| m.codec),
            // Set when the caller decodes less than the canvas: what it is sent instead.
            scaled_to = ?negotiation.video.as_ref().and_then(|m| m.return_size(canvas)),
            "participant joined"
        );
        let media = composition.media.participant(&pid).expect("just added");
        self.services.events.publish(id, EventKind::ParticipantJoined { participant: pid.clone(), name: name.clone() });
        composition.participants.push(Participant {
            id: pid.clone(),
            name,
            sends_video: negotiation.video.is_some(),
            state: ParticipantState::Connecting,
            controls: ParticipantControls::default(),
            signalling,
            joined: Instant::now(),
            last_error: None,
            watches: LegWatches::new(media, Instant::now()),
            session: Some(SdpSession { built: negotiation, local, session_id, version: 1, on_hold: false }),
            ingest: None,
            guest: None,
            lobby,
            leaving_at: None,
        });
        Ok(composition.participant_view(&pid).expect("just added"))
    }

    fn add_publisher(&mut self, id: &CompositionId, name: Option<String>, transport: IngestTransport) -> Result<ParticipantView, EngineError> {
        // What lets its publisher in, before anything is built: a transport
        // that cannot be had refuses the participant.
        let attaching = match transport {
            IngestTransport::Rtmp => Attaching::Rtmp(self.services.rtmp_server.clone().ok_or(EngineError::IngestUnavailable)?),
            IngestTransport::Srt { passphrase } => Attaching::Srt { port: self.srt_ports.allocate_single("SRT port")?, passphrase },
        };
        // In an audio-only composition only its sound is taken.
        let sends_video = !self.get(id)?.config.audio_only;
        self.admit(id, sends_video)?;
        let composition = composition_mut(&mut self.compositions, id)?;
        let pid = ParticipantId::random();
        let name = name.filter(|n| !n.trim().is_empty()).unwrap_or_else(|| format!("Caller {}", composition.participants.len() + 1));
        let sink = composition.media.add_publisher(pid.clone(), &name)?;
        let stream_key = stream_key();
        let (signalling, encrypted) = match &attaching {
            Attaching::Rtmp(_) => (Signalling::Rtmp, false),
            Attaching::Srt { passphrase, .. } => (Signalling::Srt, passphrase.is_some()),
        };
        let attached = match attaching {
            Attaching::Rtmp(server) => server
                .register_ingest(&stream_key, sink)
                .map(|registration| (server.ingest_url(self.config.public_ip), Attachment::Rtmp { _registration: registration }))
                .map_err(|error| format!("RTMP ingest: {error}")),
            Attaching::Srt { port, passphrase } => {
                let url = format!("srt://{}:{}", self.config.public_ip, port.port());
                let config = SrtListenerConfig { bind: self.config.rtp_bind, port, stream_key: stream_key.clone(), passphrase };
                SrtListener::start(config, sink).map(|listener| (url, Attachment::Srt { _listener: listener })).map_err(|error| error.to_string())
            }
        };
        let (url, attachment) = match attached {
            Ok(attached) => attached,
            Err(error) => {
                composition.media.remove_participant(&pid);
                return Err(EngineError::Media(MediaError::Gst(error)));
            }
        };
        let ingest = Ingest { url, stream_key: stream_key.clone(), encrypted, attachment };
        tracing::info!(composition = %id, participant = %pid, %name, url = %ingest.url, transport = signalling.transport(), "publisher participant waits for its publisher");
        let media = composition.media.participant(&pid).expect("just added");
        self.services.events.publish(id, EventKind::ParticipantJoined { participant: pid.clone(), name: name.clone() });
        composition.participants.push(Participant {
            id: pid.clone(),
            name,
            sends_video,
            state: ParticipantState::Connecting,
            controls: ParticipantControls::default(),
            signalling,
            joined: Instant::now(),
            last_error: None,
            watches: LegWatches::new(media, Instant::now()),
            session: None,
            ingest: Some(ingest),
            guest: None,
            lobby: None,
            leaving_at: None,
        });
        let participant = composition.participants.last().expect("just pushed");
        let mut view = composition.participant_view(&pid).expect("just added");
        // Shown whole this once, as a CDN shows a new stream key.
        view.ingest = participant.ingest.as_ref().map(|ingest| ingest.view(&stream_key, false));
        Ok(view)
    }

    /// A browser guest from its WebRTC offer: it sends its camera and
    /// microphone and receives the composite and its mix-minus on one peer
    /// connection, answered by the WebRTC server with ICE-lite.
    fn add_guest(&mut self, id: &CompositionId, name: Option<String>, offer: &str, kind: GuestKind) -> Result<Joined, EngineError> {
        let server = self.services.webrtc.clone().ok_or(EngineError::WebRtcUnavailable)?;
        let (mut config, signalling) = match kind {
            GuestKind::Guest => (PeerConfig::guest().with_video_bitrate_kbps(self.get(id)?.config.video.bitrate_kbps), Signalling::WebRtc),
            GuestKind::WhipPublisher => (PeerConfig::publisher(), Signalling::Whip),
        };
        if self.get(id)?.config.audio_only {
            (config.receive_video, config.send_video) = (false, false);
        }
        let plan = plan_offer(offer, &config)?;
        // One video codec both ways. H.264 first: at the canvas size a guest
        // shares the broadcast's own encode, and costs no encode of its own.
        let video_codec = plan.video.as_ref().and_then(|video| {
            [WebRtcVideo::H264, WebRtcVideo::Vp8].into_iter().find(|codec| video.codecs.contains(&(*codec).into()))
        });
        let config = config.with_video_codecs(video_codec.as_slice());
        let directions = |section: &Option<SectionPlan>| {
            section.as_ref().map_or(Directions::default(), |s| Directions { from_guest: s.we_receive, to_guest: s.we_send })
        };
        let media = GuestMedia {
            audio: directions(&plan.audio),
            video: directions(&plan.video),
            video_codec: match video_codec {
                Some(WebRtcVideo::H264) => VideoCodec::H264 { packetization_mode: 1 },
                _ => VideoCodec::Vp8,
            },
        };
        self.admit(id, media.video.from_guest)?;
        let composition = composition_mut(&mut self.compositions, id)?;
        let pid = ParticipantId::random();
        let name = name.filter(|n| !n.trim().is_empty()).unwrap_or_else(|| format!("Guest {}", composition.participants.len() + 1));
        let handler = composition.media.add_guest(pid.clone(), &name, media)?;
        let (answer, peer) = match server.accept_offer(offer, config, handler) {
            Ok(answered) => answered,
            Err(error) => {
                composition.media.remove_participant(&pid);
                return Err(error.into());
            }
        };
        composition.media.attach_peer(&pid, peer.clone());
        tracing::info!(composition = %id, participant = %pid, %name, ?media, peer = peer.id(), transport = signalling.transport(), "WebRTC guest joined");
        let watched = composition.media.participant(&pid).expect("just added");
        self.services.events.publish(id, EventKind::ParticipantJoined { participant: pid.clone(), name: name.clone() });
        composition.participants.push(Participant {
            id: pid.clone(),
            name,
            sends_video: media.video.from_guest,
            state: ParticipantState::Connecting,
            controls: ParticipantControls::default(),
            signalling,
            joined: Instant::now(),
            last_error: None,
            watches: LegWatches::new(watched, Instant::now()),
            session: None,
            ingest: None,
            guest: Some(GuestPeer { peer, connected_from: None }),
            lobby: None,
            leaving_at: None,
        });
        Ok(Joined { participant: composition.participant_view(&pid).expect("just added"), answer })
    }

    fn add_viewer(&mut self, id: &CompositionId, offer: &str) -> Result<(ViewerId, String), EngineError> {
        let server = self.services.webrtc.clone().ok_or(EngineError::WebRtcUnavailable)?;
        let composition = composition_mut(&mut self.compositions, id)?;
        // The broadcast's own H.264: no encode per viewer. Its estimate starts
        // at what that encode sends, as a guest's does: below it, str0m's
        // pacer queues the picture (the viewer saw it ~0.6 s late).
        let mut config = PeerConfig::viewer()
            .with_video_codecs(&[WebRtcVideo::H264])
            .with_video_bitrate_kbps(composition.config.video.bitrate_kbps);
        config.send_video = !composition.config.audio_only;
        let viewer = ViewerId::random();
        let (answer, peer) = server.accept_offer(offer, config, composition.media.viewer_handler(viewer.clone()))?;
        if let Err(error) = composition.media.add_viewer(viewer.clone(), peer.clone()) {
            peer.close();
            return Err(error.into());
        }
        tracing::info!(composition = %id, %viewer, peer = peer.id(), viewers = composition.media.viewer_count(), "WHEP viewer joined");
        Ok((viewer, answer))
    }

    fn remove_viewer(&mut self, id: &CompositionId, viewer: &ViewerId) -> Result<(), EngineError> {
        let composition = composition_mut(&mut self.compositions, id)?;
        if !composition.media.has_viewer(viewer) {
            return Err(EngineError::ViewerNotFound(id.clone(), viewer.clone()));
        }
        composition.media.remove_viewer(viewer);
        tracing::info!(composition = %id, %viewer, viewers = composition.media.viewer_count(), "WHEP viewer left");
        Ok(())
    }

    /// What a WebRTC guest's connection did.
    fn guest_changed(&mut self, id: &CompositionId, pid: &ParticipantId, change: GuestChange) {
        let Some(composition) = self.compositions.get_mut(id) else { return };
        let Some(participant) = composition.participants.iter_mut().find(|p| &p.id == pid) else { return };
        let Some(guest) = participant.guest.as_mut() else { return };
        match change {
            GuestChange::Connected(from) => {
                tracing::info!(composition = %id, participant = %pid, %from, "WebRTC guest connected");
                guest.connected_from = Some(from);
            }
            GuestChange::Disconnected(reason) => {
                if guest.connected_from.is_none() {
                    // It never got through: a firewall, or a browser gone before ICE.
                    let message = format!("its browser never connected: {reason}");
                    tracing::warn!(composition = %id, participant = %pid, "WebRTC guest {message}");
                    self.services.events.publish(id, EventKind::ParticipantError { participant: pid.clone(), message });
                } else {
                    tracing::info!(composition = %id, participant = %pid, %reason, "WebRTC guest disconnected");
                }
                // Its part stops on its own; nobody waits on the ticket.
                let _ = self.remove_participant(id, pid);
            }
        }
    }

    /// What a publisher participant's publisher did.
    fn publisher_changed(&mut self, id: &CompositionId, pid: &ParticipantId, change: PublisherChange) {
        let Some(composition) = self.compositions.get_mut(id) else { return };
        let Some(participant) = composition.participants.iter_mut().find(|p| &p.id == pid) else { return };
        let transport = participant.signalling.transport().to_uppercase();
        match change {
            PublisherChange::Publishing(peer) => {
                tracing::info!(composition = %id, participant = %pid, %peer, "{transport} publisher publishing");
                participant.leaving_at = None;
                participant.last_error = None;
            }
            PublisherChange::Ended => {
                let within = self.config.publisher_return_within;
                let reason = format!("its {transport} publisher stopped; the participant leaves unless it is back within {} s", within.as_secs());
                tracing::info!(composition = %id, participant = %pid, "{reason}");
                participant.last_error = Some(reason);
                participant.leaving_at = Some(Instant::now() + within);
            }
            PublisherChange::Refused(reason) => {
                tracing::warn!(composition = %id, participant = %pid, "{transport} publisher refused: {reason}");
                self.services.events.publish(id, EventKind::ParticipantError { participant: pid.clone(), message: reason.clone() });
                participant.last_error = Some(reason);
            }
        }
    }

    fn remove_participant(&mut self, id: &CompositionId, pid: &ParticipantId) -> Result<Option<StopTicket>, EngineError> {
        let composition = composition_mut(&mut self.compositions, id)?;
        if let Some(index) = composition.offers.iter().position(|o| &o.id == pid) {
            // An offer still waiting for its answer: only its ports to free,
            // and a dial-out's call to end (the SIP adapter follows the event).
            let offer = composition.offers.remove(index);
            tracing::info!(composition = %id, participant = %pid, "offer withdrawn");
            if offer.dial.is_some() {
                self.services.events.publish(id, EventKind::ParticipantLeft { participant: pid.clone() });
            }
            return Ok(None);
        }
        let index = composition
            .participants
            .iter()
            .position(|p| &p.id == pid)
            .ok_or_else(|| EngineError::ParticipantNotFound(id.clone(), pid.clone()))?;
        composition.participants.remove(index);
        let ticket = composition.media.remove_participant(pid);
        tracing::info!(composition = %id, participant = %pid, "participant left");
        self.services.events.publish(id, EventKind::ParticipantLeft { participant: pid.clone() });
        Ok(ticket)
    }

    fn update_participant(&mut self, id: &CompositionId, pid: &ParticipantId, patch: &ParticipantPatch) -> Result<ParticipantView, EngineError> {
        let composition = composition_mut(&mut self.compositions, id)?;
        let participant = participant_mut(&mut composition.participants, id, pid)?;
        patch.apply(&mut participant.name, &mut participant.controls)?;
        composition.media.update_participant(pid, &participant.name, &participant.controls);
        tracing::info!(composition = %id, participant = %pid, name = %participant.name, controls = ?participant.controls, "participant updated");
        let what = EventKind::ParticipantUpdated {
            participant: pid.clone(),
            name: participant.name.clone(),
            controls: participant.controls.clone(),
        };
        self.services.events.publish(id, what);
        Ok(composition.participant_view(pid).expect("found above"))
    }

    fn renegotiate(&mut self, id: &CompositionId, pid: &ParticipantId, offer: &str) -> Result<String, EngineError> {
        let composition = composition_mut(&mut self.compositions, id)?;
        let v = &composition.config.video;
        let canvas = Canvas { width: v.width, height: v.height, fps: v.fps };
        let participant = participant_mut(&mut composition.participants, id, pid)?;
        let session = participant.session.as_mut().ok_or_else(|| EngineError::NoSdpSession(pid.clone()))?;
        let next = session.built.renegotiate(offer)?;
        session.version += 1;
        let answer = with_origin_version(&next.answer(&session.local, canvas, session.session_id), session.version);
        let on_hold = next.holds();
        composition.media.renegotiate_participant(pid, next.audio.iter().chain(next.video.iter()).cloned());
        if let Some(media) = composition.media.participant(pid) {
            // The flows to watch are the ones now negotiated.
            participant.watches = LegWatches::new(media, Instant::now());
        }
        tracing::info!(
            composition = %id, participant = %pid, on_hold,
            audio = ?next.audio.as_ref().map(|m| (m.direction, m.remote_rtp)),
            video = ?next.video.as_ref().map(|m| (m.direction, m.remote_rtp)),
            "participant renegotiated"
        );
        if on_hold != session.on_hold {
            session.on_hold = on_hold;
            let participant = pid.clone();
            let what = if on_hold { EventKind::ParticipantHeld { participant } } else { EventKind::ParticipantResumed { participant } };
            self.services.events.publish(id, what);
        }
        Ok(answer)
    }

    fn set_layout(&mut self, id: &CompositionId, layout: LayoutConfig) -> Result<LayoutConfig, EngineError> {
        let composition = composition_mut(&mut self.compositions, id)?;
        if composition.config.audio_only {
            return Err(EngineError::InvalidLayout(NO_LAYOUT_WITHOUT_VIDEO.into()));
        }
        let mut config = composition.config.clone();
        config.layout = layout;
        config.validate().map_err(|e| EngineError::InvalidLayout(e.0))?;
        check_images(&config.layout, &self.config.branding_dir)?;
        composition.media.set_layout(&config.layout);
        tracing::info!(composition = %id, layout = ?config.layout, "layout changed");
        self.services.events.publish(id, EventKind::LayoutChanged { kind: config.layout.kind() });
        // The transition was for this change only.
        config.layout.transition = None;
        composition.config.layout = config.layout.clone();
        Ok(config.layout)
    }

    /// Answers a removal: an error or, if nothing is left to stop, at once;
    /// else once its part has stopped or [`REPLY_DEADLINE`] has passed,
    /// whichever comes first.
    fn answer_removal(&mut self, removed: Result<Option<StopTicket>, EngineError>, reply: Reply<Removal>) {
        match removed {
            Err(e) => drop(reply.send(Err(e))),
            Ok(None) => drop(reply.send(Ok(Removal::Stopped))),
            Ok(Some(ticket)) => drop(self.pending_removals.insert(ticket, PendingRemoval { reply, since: Instant::now() })),
        }
    }

    /// A key a participant pressed: in the lobby, a step of its PIN.
    fn on_key(&mut self, id: &CompositionId, pid: &ParticipantId, key: char) -> Result<(), EngineError> {
        let composition = composition_mut(&mut self.compositions, id)?;
        let participant = participant_mut(&mut composition.participants, id, pid)?;
        tracing::debug!(composition = %id, participant = %pid, "DTMF key");
        if let Some(entry) = &mut participant.lobby {
            let step = entry.key(key, Instant::now());
            self.follow_pin(id, pid, step);
        }
        Ok(())
    }

    /// Acts on what a caller's PIN entry answered.
    fn follow_pin(&mut self, id: &CompositionId, pid: &ParticipantId, step: PinStep) {
        let Some(composition) = self.compositions.get_mut(id) else { return };
        let Some(participant) = composition.participants.iter_mut().find(|p| &p.id == pid) else { return };
        let events = &self.services.events;
        let failed = |reason: &str, attempts_left| EventKind::ParticipantPinFailed { participant: pid.clone(), reason: reason.into(), attempts_left };
        match step {
            PinStep::Typing => {}
            PinStep::Admitted => {
                participant.lobby = None;
                if let Some(media) = composition.media.participant(pid) {
                    participant.watches = LegWatches::new(media, Instant::now());
                }
                composition.media.admit(pid);
                tracing::info!(composition = %id, participant = %pid, "participant keyed in the PIN and is admitted");
                events.publish(id, EventKind::ParticipantAdmitted { participant: pid.clone() });
            }
            PinStep::Wrong { attempts_left } => {
                tracing::info!(composition = %id, participant = %pid, attempts_left, "wrong PIN");
                events.publish(id, failed("wrong PIN", attempts_left));
                announce(composition, pid, Prompt::WrongPin);
            }
            PinStep::Reprompt => drop(announce(composition, pid, Prompt::EnterPin)),
            PinStep::Rejected | PinStep::TimedOut => {
                let (reason, prompt) = match step {
                    PinStep::Rejected => (format!("wrong PIN {} times", pin::MAX_ATTEMPTS), Prompt::Rejected),
                    _ => (format!("no PIN keyed in within {} s", pin::ENTRY_TIMEOUT.as_secs()), Prompt::TimedOut),
                };
                tracing::info!(composition = %id, participant = %pid, %reason, "ending the call after its last prompt");
                events.publish(id, failed(&reason, 0));
                participant.last_error = Some(reason);
                let said = announce(composition, pid, prompt);
                if let Some(participant) = composition.participants.iter_mut().find(|p| &p.id == pid) {
                    participant.leaving_at = Some(Instant::now() + said);
                }
            }
        }
    }

    /// PIN entries' pauses and timeouts, calls whose last prompt is over, and
    /// Publisher participants whose publisher did not come back.
    fn tick_lobbies(&mut self, now: Instant) {
        let mut steps = Vec::new();
        let mut leaving = Vec::new();
        for (id, composition) in &mut self.compositions {
            for participant in &mut composition.participants {
                if participant.leaving_at.is_some_and(|at| now >= at) {
                    leaving.push((id.clone(), participant.id.clone()));
                } else if let Some(entry) = &mut participant.lobby {
                    steps.push((id.clone(), participant.id.clone(), entry.tick(now)));
                }
            }
        }
        for (id, pid, step) in steps {
            self.follow_pin(&id, &pid, step);
        }
        for (id, pid) in leaving {
            // Its part stops on its own; nobody waits on the ticket.
            let _ = self.remove_participant(&id, &pid);
        }
    }

    fn on_media_event(&mut self, event: MediaEvent) {
        match event {
            MediaEvent::Key { composition, participant, key } => {
                // From a socket's thread, for a caller that may have just left.
                let _ = self.on_key(&composition, &participant, key);
            }
            MediaEvent::LatencyChanged { composition } => {
                if let Some(c) = self.compositions.get(&composition) {
                    c.media.recalculate_latency();
                }
            }
            MediaEvent::ActiveSpeakerChanged { composition } => {
                if let Some(c) = self.compositions.get_mut(&composition) {
                    c.follow_speaker(&composition, &self.services.events);
                }
            }
            MediaEvent::Publisher { composition, participant, change } => self.publisher_changed(&composition, &participant, change),
            MediaEvent::Guest { composition, participant, change } => self.guest_changed(&composition, &participant, change),
            MediaEvent::Viewer { composition, left: None, .. } => {
                if let Some(composition) = self.compositions.get(&composition) {
                    composition.media.viewer_wants_keyframe();
                }
            }
            MediaEvent::Viewer { composition, viewer, left: Some(reason) } => {
                tracing::info!(%composition, %viewer, %reason, "WHEP viewer disconnected");
                let _ = self.remove_viewer(&composition, &viewer);
            }
            MediaEvent::Stopped { ticket, .. } => {
                if let Some(pending) = self.pending_removals.remove(&ticket) {
                    let _ = pending.reply.send(Ok(Removal::Stopped));
                }
            }
            MediaEvent::Error { composition, part, element, message } => {
                let Some(c) = self.compositions.get_mut(&composition) else { return };
                let part = part.unwrap_or_default();
                if let Some(p) = c.participants.iter_mut().find(|p| participant_part_name(&p.id) == part) {
                    tracing::warn!(composition = %composition, participant = %p.id, %element, "caller media error: {message}");
                    let what = EventKind::ParticipantError { participant: p.id.clone(), message: message.clone() };
                    self.services.events.publish(&composition, what);
                    p.last_error = Some(message);
                } else if let Some(o) = c.outputs.iter_mut().find(|o| output_part_name(&o.id) == part) {
                    tracing::warn!(composition = %composition, output = %o.id, %element, "output failed: {message}");
                    o.failure = Some(message);
                } else if !part.is_empty() {
                    // The broadcast, a shared encoder, the compositor's driver, or a caller or
                    // output removed from the API and still stopping: no owner to report it to.
                    tracing::warn!(composition = %composition, %part, %element, "media error in a shared or stopping part: {message}");
                } else {
                    tracing::error!(composition = %composition, %element, "media error: {message}");
                }
            }
        }
    }

    /// Watchdogs, late removals, stuck parts.
    fn tick(&mut self) {
        let now = Instant::now();
        self.tick_lobbies(now);
        let stale_after = self.config.stale_after;
        for (id, composition) in &mut self.compositions {
            composition.watch(id, now, stale_after, &self.services.events);
            composition.follow_speaker(id, &self.services.events);
            composition.adapt_guest_pictures(id, &self.services.events);
        }
        let late: Vec<StopTicket> =
            self.pending_removals.iter().filter(|(_, p)| p.since.elapsed() >= REPLY_DEADLINE).map(|(t, _)| *t).collect();
        for ticket in late {
            if let Some(pending) = self.pending_removals.remove(&ticket) {
                let _ = pending.reply.send(Ok(Removal::Stopping));
            }
        }
        for (part, after) in self.reaper.newly_stuck() {
            tracing::warn!(
                %part, after_ms = after.as_millis() as u64,
                "part did not stop in time; detached and left to finish on its own thread"
            );
        }
    }

    /// What every composition, caller and output of this node costs, in cores.
    fn committed_cost(&self) -> Cores {
        let costs = &self.config.limits.costs;
        let composition = |c: &Composition| {
            costs.composition(picture(&c.config))
                + c.participants.iter().map(|p| costs.caller(p.sends_video)).fold(0.0, |a, b| a + b)
                // An offer holding ports counts as the caller it may become.
                + c.offers.iter().filter(|o| o.seat.audio_ports.is_some()).map(|o| costs.caller(o.seat.video_ports.is_some())).fold(0.0, |a, b| a + b)
                + costs.output * c.outputs.len() as Cores
        };
        // fold from +0.0: an empty f64 `sum()` is -0.0, which would show as "-0.0" in /healthz.
        self.compositions.values().map(composition).fold(0.0, |a, b| a + b)
    }

    fn health(&self) -> HealthView {
        let counts = self.reaper.counts();
        HealthView {
            status: "ok",
            compositions: self.compositions.len(),
            participants: self.compositions.values().map(|c| c.participants.len()).sum(),
            outputs: self.compositions.values().map(|c| c.outputs.len()).sum(),
            parts_stopping: counts.stopping,
            parts_stuck: counts.stuck,
            cpu_committed_cores: round_cores(self.committed_cost()),
            cpu_budget_cores: self.config.limits.cpu_budget.cores().map(round_cores),
        }
    }

    fn metrics(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            health: self.health(),
            compositions: self.compositions.iter().map(|(id, c)| c.view(id)).collect(),
            encoder_queues: self
                .compositions
                .iter()
                .flat_map(|(id, c)| c.media.encoder_queues().into_iter().map(move |(encoder, n)| (id.clone(), encoder, n)))
                .collect(),
        }
    }

    /// Stops every composition at once and waits for them, at most
    /// [`SHUTDOWN_DEADLINE`]; whatever has not stopped by then ends with the process.
    fn shutdown(&mut self, rx: &mpsc::Receiver<Message>) {
        let mut stopping: Vec<StopTicket> = std::mem::take(&mut self.compositions)
            .into_iter()
            .map(|(id, composition)| {
                tracing::info!(composition = %id, "composition stopping");
                composition.media.shutdown()
            })
            .collect();
        let deadline = Instant::now() + SHUTDOWN_DEADLINE;
        while !stopping.is_empty() {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Message::Media(MediaEvent::Stopped { ticket, .. })) => stopping.retain(|t| *t != ticket),
                Ok(_) => {}
                Err(_) => {
                    tracing::warn!(compositions = stopping.len(), "compositions still stopping at shutdown");
                    return;
                }
            }
        }
        tracing::info!("every composition stopped");
    }
}

impl Composition {
    /// Reads who the mix's speaker detector takes for the active speaker; on
    /// a change the layouts follow and an event says who. On every tick, and
    /// at once when the mix says it changed.
    fn follow_speaker(&mut self, id: &CompositionId, events: &EventBus) {
        let detected = self.media.detected_speaker();
        if detected == self.active_speaker {
            return;
        }
        tracing::debug!(composition = %id, speaker = ?detected, "active speaker");
        self.media.set_active_speaker(detected.clone());
        events.publish(id, EventKind::ActiveSpeakerChanged { participant: detected.clone() });
        self.active_speaker = detected;
    }

    /// Sends each WebRTC guest the picture its link carries (see
    /// `model::ladder`); every move is logged and announced.
    fn adapt_guest_pictures(&mut self, id: &CompositionId, events: &EventBus) {
        for moved in self.media.adapt_guest_pictures() {
            let size = moved.rung.frame(self.config.video.canvas());
            tracing::info!(
                composition = %id, participant = %moved.participant, bitrate_kbps = moved.rung.bitrate_kbps, width = size.width,
                height = size.height, estimate_kbps = moved.estimate_kbps, "a guest's link: its picture moves to another bitrate"
            );
            events.publish(id, EventKind::ParticipantPictureRate {
                participant: moved.participant,
                bitrate_kbps: moved.rung.bitrate_kbps,
                width: size.width,
                height: size.height,
                bandwidth_estimate_kbps: moved.estimate_kbps,
            });
        }
    }
}

/// The picture a composition's cost scales with; none when audio only.
fn picture(config: &CompositionConfig) -> Option<Picture> {
    let v = &config.video;
    (!config.audio_only).then_some(Picture { width: v.width, height: v.height, fps: v.fps })
}

/// Hundredths of a core: what the figures behind the costs can tell apart.
fn round_cores(cores: Cores) -> Cores {
    (cores * 100.0).round() / 100.0
}
