//! The engine: one actor, on its own thread, that owns every composition.
//!
//! Commands arrive from the HTTP adapter through an [`EngineHandle`];
//! events arrive from GStreamer's threads through the same channel. Nothing
//! else mutates composition state, so there are no locks around it.
//! GStreamer calls block briefly (state changes), which is why this is a
//! thread and not a tokio task.

mod views;

pub use views::{CompositionView, OutputState, OutputView, ParticipantState, ParticipantView};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::media::composition::JoiningMedium;
use crate::media::profiles::Profiles;
use crate::media::{CompositionMedia, MediaError, MediaEvent, MediaSettings, OutputPaths};
use crate::model::composition::{CompositionConfig, InvalidConfig, MAX_AUDIO_ONLY_PARTICIPANTS, NO_OUTPUTS_WITHOUT_VIDEO};
use crate::model::output::{InvalidOutput, OutputConfig, ValidOutput};
use crate::rtmp::{PublisherConfig, PublisherHandle, RtmpServerHandle, spawn_publisher};
use crate::model::ids::{CompositionId, ParticipantId};
use crate::model::layout::MAX_GRID_CELLS;
use crate::model::sdp::{self, Canvas, LocalTransport, SdpError};
use crate::ports::{PortAllocator, PortsExhausted};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("no composition with id {0}")]
    CompositionNotFound(CompositionId),
    #[error("no participant with id {1} in composition {0}")]
    ParticipantNotFound(CompositionId, ParticipantId),
    #[error("no output with id {1} in composition {0}")]
    OutputNotFound(CompositionId, String),
    #[error(transparent)]
    InvalidOutput(#[from] InvalidOutput),
    #[error(transparent)]
    InvalidConfig(#[from] InvalidConfig),
    #[error(transparent)]
    Sdp(#[from] SdpError),
    #[error(transparent)]
    PortsExhausted(#[from] PortsExhausted),
    #[error("composition {0} already has {1} participants, the most it takes")]
    CompositionFull(CompositionId, usize),
    #[error("media pipeline: {0}")]
    Media(#[from] MediaError),
    #[error("the server is shutting down")]
    ShuttingDown,
}

pub struct JoinRequest {
    pub name: Option<String>,
    pub offer: String,
}

/// A new participant and the SDP answer for it.
pub struct Joined {
    pub participant: ParticipantView,
    pub answer: String,
}

type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

enum Command {
    CreateComposition(CompositionConfig, Reply<CompositionView>),
    ListCompositions(Reply<Vec<CompositionView>>),
    GetComposition(CompositionId, Reply<CompositionView>),
    DeleteComposition(CompositionId, Reply<()>),
    AddParticipant(CompositionId, JoinRequest, Reply<Joined>),
    GetParticipant(CompositionId, ParticipantId, Reply<ParticipantView>),
    RemoveParticipant(CompositionId, ParticipantId, Reply<()>),
    AddOutput(CompositionId, OutputConfig, Reply<OutputView>),
    GetOutput(CompositionId, String, Reply<OutputView>),
    RemoveOutput(CompositionId, String, Reply<()>),
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

    pub async fn composition(&self, id: CompositionId) -> Result<CompositionView, EngineError> {
        self.ask(|r| Command::GetComposition(id, r)).await
    }

    pub async fn delete_composition(&self, id: CompositionId) -> Result<(), EngineError> {
        self.ask(|r| Command::DeleteComposition(id, r)).await
    }

    pub async fn add_participant(&self, id: CompositionId, request: JoinRequest) -> Result<Joined, EngineError> {
        self.ask(|r| Command::AddParticipant(id, request, r)).await
    }

    pub async fn participant(&self, id: CompositionId, pid: ParticipantId) -> Result<ParticipantView, EngineError> {
        self.ask(|r| Command::GetParticipant(id, pid, r)).await
    }

    pub async fn remove_participant(&self, id: CompositionId, pid: ParticipantId) -> Result<(), EngineError> {
        self.ask(|r| Command::RemoveParticipant(id, pid, r)).await
    }

    pub async fn add_output(&self, id: CompositionId, output: OutputConfig) -> Result<OutputView, EngineError> {
        self.ask(|r| Command::AddOutput(id, output, r)).await
    }

    pub async fn output(&self, id: CompositionId, oid: String) -> Result<OutputView, EngineError> {
        self.ask(|r| Command::GetOutput(id, oid, r)).await
    }

    pub async fn remove_output(&self, id: CompositionId, oid: String) -> Result<(), EngineError> {
        self.ask(|r| Command::RemoveOutput(id, oid, r)).await
    }

    /// Stops every composition, releasing all pipelines and ports.
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
}

struct OutputRecord {
    id: String,
    valid: ValidOutput,
    created_at: OffsetDateTime,
    /// RTMP outputs: the task that pushes to the destination.
    publisher: Option<PublisherHandle>,
    /// An error its GStreamer branch reported (HLS, recordings): it failed.
    failure: Option<String>,
}

struct Participant {
    id: ParticipantId,
    name: String,
    state: ParticipantState,
    joined: Instant,
    last_error: Option<String>,
}

/// What the engine needs from the async side: a runtime for RTMP
/// publishers and, if it runs, the embedded RTMP server.
#[derive(Clone)]
pub struct Services {
    pub runtime: tokio::runtime::Handle,
    pub rtmp_server: Option<RtmpServerHandle>,
}

pub struct Engine {
    config: Config,
    services: Services,
    profiles: Arc<Profiles>,
    ports: PortAllocator,
    compositions: BTreeMap<CompositionId, Composition>,
    tx: mpsc::Sender<Message>,
}

/// How often staleness is checked.
const TICK: Duration = Duration::from_millis(500);

impl Engine {
    /// Starts the engine thread. `gst::init()` must have succeeded and the
    /// profiles must have been validated.
    pub fn start(config: Config, profiles: Profiles, services: Services) -> EngineHandle {
        let (tx, rx) = mpsc::channel();
        let engine = Engine {
            services,
            ports: PortAllocator::new(config.rtp_ports, config.rtp_bind),
            config,
            profiles: Arc::new(profiles),
            compositions: BTreeMap::new(),
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
                    self.shutdown();
                    let _ = done.send(());
                    return;
                }
                Ok(Message::Command(command)) => self.handle(command),
                Ok(Message::Media(event)) => self.on_media_event(event),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.shutdown();
                    return;
                }
            }
            if Instant::now() >= next_tick {
                self.update_participant_states();
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
            Command::GetComposition(id, reply) => drop(reply.send(self.get(&id).map(|c| c.view(&id)))),
            Command::DeleteComposition(id, reply) => drop(reply.send(self.delete_composition(&id))),
            Command::AddParticipant(id, request, reply) => drop(reply.send(self.add_participant(&id, request))),
            Command::GetParticipant(id, pid, reply) => drop(reply.send(
                self.get(&id).and_then(|c| c.participant_view(&pid).ok_or(EngineError::ParticipantNotFound(id, pid))),
            )),
            Command::RemoveParticipant(id, pid, reply) => drop(reply.send(self.remove_participant(&id, &pid))),
            Command::AddOutput(id, output, reply) => drop(reply.send(self.add_output(&id, &output))),
            Command::GetOutput(id, oid, reply) => drop(reply.send(self.get(&id).and_then(|c| {
                let output = c.outputs.iter().find(|o| o.id == oid).ok_or(EngineError::OutputNotFound(id.clone(), oid))?;
                Ok(c.output_view(&id, output))
            }))),
            Command::RemoveOutput(id, oid, reply) => drop(reply.send(self.remove_output(&id, &oid))),
            Command::Shutdown(_) => unreachable!("handled by run()"),
        }
    }

    fn get(&self, id: &CompositionId) -> Result<&Composition, EngineError> {
        self.compositions.get(id).ok_or_else(|| EngineError::CompositionNotFound(id.clone()))
    }

    fn create_composition(&mut self, config: CompositionConfig) -> Result<CompositionView, EngineError> {
        config.validate()?;
        let id = CompositionId::random();
        let events_tx = self.tx.clone();
        let events = Arc::new(move |event| {
            let _ = events_tx.send(Message::Media(event));
        });
        let settings = MediaSettings { jitter_buffer: self.config.jitter_buffer };
        // The embedded RTMP server plays the composite picture: none without video.
        let server = self.services.rtmp_server.as_ref().filter(|_| !config.audio_only);
        let player = server.and_then(|s| s.register_stream(id.as_str()).ok());
        let media = CompositionMedia::new(id.clone(), config.clone(), self.profiles.clone(), settings, events, player)?;
        tracing::info!(composition = %id, name = ?config.name, "composition created");
        let composition = Composition {
            created_at: OffsetDateTime::now_utc(),
            media,
            participants: Vec::new(),
            outputs: Vec::new(),
            rtmp_play_url: server.map(|s| s.play_url(id.as_str())),
            config: config.clone(),
        };
        self.compositions.insert(id.clone(), composition);
        for output in &config.outputs {
            if let Err(e) = self.add_output(&id, output) {
                let _ = self.delete_composition(&id);
                return Err(e);
            }
        }
        Ok(self.compositions[&id].view(&id))
    }

    fn add_output(&mut self, id: &CompositionId, output: &OutputConfig) -> Result<OutputView, EngineError> {
        let valid = output.validate()?;
        let composition = self.compositions.get_mut(id).ok_or_else(|| EngineError::CompositionNotFound(id.clone()))?;
        if composition.config.audio_only {
            return Err(InvalidConfig(NO_OUTPUTS_WITHOUT_VIDEO.into()).into());
        }
        let oid = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let publisher = match &valid {
            ValidOutput::Rtmp(url) => {
                // Publishers are tokio tasks; the engine thread is not in the runtime.
                let _runtime = self.services.runtime.enter();
                Some(spawn_publisher(PublisherConfig::new(url.clone())))
            }
            _ => None,
        };
        let paths = OutputPaths { hls_dir: self.config.hls_dir.clone(), recordings_dir: self.config.recordings_dir.clone() };
        if let Err(e) = composition.media.add_output(oid.clone(), &valid, &paths, publisher.clone()) {
            if let Some(publisher) = publisher {
                publisher.stop();
            }
            return Err(e.into());
        }
        tracing::info!(composition = %id, output = %oid, kind = ?valid.kind(), "output added");
        composition.outputs.push(OutputRecord { id: oid, valid, created_at: OffsetDateTime::now_utc(), publisher, failure: None });
        let record = composition.outputs.last().expect("just added");
        Ok(composition.output_view(id, record))
    }

    fn remove_output(&mut self, id: &CompositionId, oid: &str) -> Result<(), EngineError> {
        let composition = self.compositions.get_mut(id).ok_or_else(|| EngineError::CompositionNotFound(id.clone()))?;
        let index = composition
            .outputs
            .iter()
            .position(|o| o.id == oid)
            .ok_or_else(|| EngineError::OutputNotFound(id.clone(), oid.to_string()))?;
        composition.outputs.remove(index);
        composition.media.remove_output(oid);
        tracing::info!(composition = %id, output = %oid, "output removed");
        Ok(())
    }

    fn delete_composition(&mut self, id: &CompositionId) -> Result<(), EngineError> {
        let composition = self.compositions.remove(id).ok_or_else(|| EngineError::CompositionNotFound(id.clone()))?;
        composition.media.shutdown();
        tracing::info!(composition = %id, "composition deleted");
        Ok(())
    }

    fn add_participant(&mut self, id: &CompositionId, request: JoinRequest) -> Result<Joined, EngineError> {
        let composition = self.compositions.get_mut(id).ok_or_else(|| EngineError::CompositionNotFound(id.clone()))?;
        let most = if composition.config.audio_only { MAX_AUDIO_ONLY_PARTICIPANTS } else { MAX_GRID_CELLS };
        if composition.participants.len() >= most {
            return Err(EngineError::CompositionFull(id.clone(), most));
        }
        let mut negotiation = sdp::negotiate(&request.offer)?;
        if composition.config.audio_only {
            negotiation = negotiation.without_video()?;
        }
        let audio_ports = negotiation.audio.as_ref().map(|_| self.ports.allocate()).transpose()?;
        let video_ports = negotiation.video.as_ref().map(|_| self.ports.allocate()).transpose()?;

        let local = LocalTransport {
            address: self.config.public_ip,
            audio_port: audio_ports.as_ref().map(|p| p.rtp_port()),
            video_port: video_ports.as_ref().map(|p| p.rtp_port()),
        };
        let v = &composition.config.video;
        let canvas = Canvas { width: v.width, height: v.height, fps: v.fps };
        let answer = negotiation.answer(&local, canvas, rand::random::<u32>().into());

        let pid = ParticipantId::random();
        let name = request
            .name
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| format!("Caller {}", composition.participants.len() + 1));
        let joining = |negotiated: Option<sdp::NegotiatedMedia>, ports| {
            negotiated.zip(ports).map(|(negotiated, ports)| JoiningMedium { negotiated, ports })
        };
        composition.media.add_participant(
            pid.clone(),
            &name,
            joining(negotiation.audio.clone(), audio_ports),
            joining(negotiation.video.clone(), video_ports),
        )?;
        tracing::info!(
            composition = %id, participant = %pid, %name,
            audio = ?negotiation.audio.as_ref().map(|m| m.codec),
            video = ?negotiation.video.as_ref().map(|m| m.codec),
            "participant joined"
        );
        composition.participants.push(Participant {
            id: pid.clone(),
            name,
            state: ParticipantState::Connecting,
            joined: Instant::now(),
            last_error: None,
        });
        let participant = composition.participant_view(&pid).expect("just added");
        Ok(Joined { participant, answer })
    }

    fn remove_participant(&mut self, id: &CompositionId, pid: &ParticipantId) -> Result<(), EngineError> {
        let composition = self.compositions.get_mut(id).ok_or_else(|| EngineError::CompositionNotFound(id.clone()))?;
        let index = composition
            .participants
            .iter()
            .position(|p| &p.id == pid)
            .ok_or_else(|| EngineError::ParticipantNotFound(id.clone(), pid.clone()))?;
        composition.participants.remove(index);
        composition.media.remove_participant(pid);
        tracing::info!(composition = %id, participant = %pid, "participant left");
        Ok(())
    }

    fn on_media_event(&mut self, event: MediaEvent) {
        match event {
            MediaEvent::LatencyChanged { composition } => {
                if let Some(c) = self.compositions.get(&composition) {
                    c.media.recalculate_latency();
                }
            }
            MediaEvent::Error { composition, element, message } => {
                let Some(c) = self.compositions.get_mut(&composition) else { return };
                // Element names start with their owner: `caller-{id}-…`, `out-{id}-…`.
                if let Some(p) = c.participants.iter_mut().find(|p| element.contains(&format!("caller-{}-", p.id))) {
                    tracing::warn!(composition = %composition, participant = %p.id, %element, "caller media error: {message}");
                    p.last_error = Some(message);
                } else if let Some(o) = c.outputs.iter_mut().find(|o| element.contains(&format!("out-{}-", o.id))) {
                    tracing::warn!(composition = %composition, output = %o.id, %element, "output failed: {message}");
                    o.failure = Some(message);
                } else {
                    tracing::error!(composition = %composition, %element, "media error: {message}");
                }
            }
        }
    }

    fn update_participant_states(&mut self) {
        let stale_after = self.config.stale_after;
        for (cid, composition) in &mut self.compositions {
            for participant in &mut composition.participants {
                let Some(media) = composition.media.participant(&participant.id) else { continue };
                let next = ParticipantState::from_media(
                    media.expects_media(),
                    media.last_media_age(),
                    participant.joined.elapsed(),
                    stale_after,
                );
                if next != participant.state {
                    tracing::info!(composition = %cid, participant = %participant.id, from = ?participant.state, to = ?next, "participant state");
                    participant.state = next;
                }
            }
        }
    }

    fn shutdown(&mut self) {
        for (id, composition) in std::mem::take(&mut self.compositions) {
            composition.media.shutdown();
            tracing::info!(composition = %id, "composition stopped");
        }
    }
}
