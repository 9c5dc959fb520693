//! A small embedded RTMP server: local players (ffplay, VLC, ffprobe) play
//! `rtmp://HOST:PORT/live/{stream}`, and publishers (OBS, ffmpeg) send to
//! `rtmp://HOST:PORT/ingest/{stream_key}`.
//!
//! ```text
//!  media adapter ─► StreamFeed("main") ─┬─ headers: watch (latest wins) ──────┐
//!                                       └─ frames: broadcast (bounded) ─┐      │
//!  TcpListener ─► one task per connection: handshake ─► connect(app) ─┬─► play(stream) on `live`
//!                                                                     │   └─► Packager ─► socket
//!                                                                     └─► publish(key) on `ingest`
//!                                                                            │
//!  media adapter ◄─ IngestEvent ◄─ the sink registered for the key ◄─────────┘
//! ```
//!
//! Players get only streams registered with `register_stream`, publishers
//! only keys registered with `register_ingest` (see [`super::ingest`] for
//! who wins a key). Anything else — an unknown application, stream or key,
//! a play on `ingest`, a publish on `live` — is refused with an RTMP error
//! status naming the problem; a refusal never echoes a stream key.
//!
//! Each player has its own bounded view of the stream: one that falls behind
//! skips to the next keyframe (and is disconnected if a write stalls), and
//! can never slow the source or the other players down. A publisher that
//! sends nothing for `request_timeout` is disconnected.

use super::handshake::{HandshakeFailure, handshake};
use super::ingest::{
    INGEST_APP, IngestEvent, IngestKeys, IngestPublisher, IngestRegistration, IngestSink, Superseded, audio_event,
    video_event,
};
use super::media::{MediaFrame, StreamHeaders};
use super::packager::{FlvTag, Packager};
use super::stop_signal::stop_requested;
use rml_rtmp::handshake::PeerType;
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionError, ServerSessionEvent, ServerSessionResult,
};
use rml_rtmp::time::RtmpTimestamp;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1935);
pub const DEFAULT_APP: &str = "live";
/// About 3 s of 30 fps video with its AAC frames.
pub const DEFAULT_PLAYER_BUFFER_FRAMES: usize = 256;
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const READ_BUFFER_BYTES: usize = 4096;
/// How long a refused client gets to read the refusal and hang up.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct RtmpServerConfig {
    pub listen: SocketAddr,
    /// The one application players connect to (publishers connect to `ingest`).
    pub app: String,
    /// Frames a player may fall behind before it skips to the next keyframe.
    pub player_buffer_frames: usize,
    /// From TCP accept to the play or publish request (handshake, connect,
    /// createStream, play or publish); and the longest a publisher may stay
    /// silent.
    pub request_timeout: Duration,
    /// A client whose socket accepts nothing for this long is disconnected.
    pub write_timeout: Duration,
}

impl Default for RtmpServerConfig {
    fn default() -> Self {
        RtmpServerConfig {
            listen: DEFAULT_LISTEN,
            app: DEFAULT_APP.to_string(),
            player_buffer_frames: DEFAULT_PLAYER_BUFFER_FRAMES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
        }
    }
}

#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("a stream named {0:?} is already registered")]
    StreamExists(String),
    #[error("invalid stream name {0:?}: use letters, digits, '-', '_' or '.'")]
    BadStreamName(String),
    // Neither ingest error names the key: it is a secret.
    #[error("this stream key is already registered")]
    IngestKeyExists,
    #[error("invalid stream key: use only ASCII letters, digits, '-' and '_'")]
    BadIngestKey,
}

/// Why one connection (a player's or a publisher's) ended.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error(transparent)]
    Handshake(#[from] HandshakeFailure),
    #[error("no play or publish request within {0:?}")]
    NoRequest(Duration),
    #[error("refused: {0}")]
    Refused(String),
    #[error("{0}")]
    UnsupportedMedia(String),
    #[error("the publisher sent nothing for {0:?}")]
    PublisherSilent(Duration),
    #[error(transparent)]
    Superseded(#[from] Superseded),
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    #[error("a write stalled for more than {0:?}: the client is too slow")]
    WriteStalled(Duration),
    #[error("RTMP protocol error: {0}")]
    Protocol(#[from] ServerSessionError),
}

/// A cloneable handle to a running server. Dropping the last clone (or
/// calling `shutdown`) stops it and disconnects its players and publishers.
#[derive(Clone)]
pub struct RtmpServerHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    local_addr: SocketAddr,
    registry: Arc<Registry>,
    shutdown: watch::Sender<bool>,
}

/// The streams players can ask for, by name, and the keys publishers may use.
struct Registry {
    config: RtmpServerConfig,
    streams: Mutex<HashMap<String, StreamSource>>,
    ingest_keys: Arc<IngestKeys>,
}

/// What a new player needs to join a stream.
#[derive(Clone)]
struct StreamSource {
    headers: watch::Receiver<Option<StreamHeaders>>,
    frames: broadcast::Sender<MediaFrame>,
}

impl Registry {
    fn streams(&self) -> std::sync::MutexGuard<'_, HashMap<String, StreamSource>> {
        self.streams.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Binds `config.listen` and serves players and publishers on the current
/// tokio runtime.
pub async fn start_server(config: RtmpServerConfig) -> Result<RtmpServerHandle, ServerError> {
    let addr = config.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    let registry = Arc::new(Registry {
        config,
        streams: Mutex::new(HashMap::new()),
        ingest_keys: Arc::default(),
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    tokio::spawn(accept_connections(listener, registry.clone(), shutdown_rx));
    tracing::info!(%local_addr, "RTMP server listening");
    Ok(RtmpServerHandle {
        inner: Arc::new(HandleInner {
            local_addr,
            registry,
            shutdown,
        }),
    })
}

impl RtmpServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Where players find `stream`.
    pub fn play_url(&self, stream: &str) -> String {
        format!(
            "rtmp://{}/{}/{}",
            self.inner.local_addr, self.inner.registry.config.app, stream
        )
    }

    /// Makes `name` playable until the returned feed is dropped.
    pub fn register_stream(&self, name: &str) -> Result<StreamFeed, ServerError> {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(ServerError::BadStreamName(name.to_string()));
        }
        let registry = &self.inner.registry;
        let mut streams = registry.streams();
        if streams.contains_key(name) {
            return Err(ServerError::StreamExists(name.to_string()));
        }
        let (headers, headers_rx) = watch::channel(None);
        let (frames, _) = broadcast::channel(registry.config.player_buffer_frames.max(1));
        streams.insert(
            name.to_string(),
            StreamSource {
                headers: headers_rx,
                frames: frames.clone(),
            },
        );
        Ok(StreamFeed {
            name: name.to_string(),
            headers,
            frames,
            registry: registry.clone(),
        })
    }

    /// `rtmp://{host}:{port}/ingest`: `host` as given (the operator's public
    /// address), the port the server listens on. Publishers append
    /// `/<stream_key>`.
    pub fn ingest_url(&self, host: IpAddr) -> String {
        // Through SocketAddr so an IPv6 host gets its brackets.
        let authority = SocketAddr::new(host, self.inner.local_addr.port());
        format!("rtmp://{authority}/{INGEST_APP}")
    }

    /// Accepts publishers with `key` until the returned registration is
    /// dropped; `sink` hears what they send. Dropping the registration
    /// disconnects the current publisher (without sending `Ended`). Keys are
    /// ASCII letters, digits, '-' and '_'.
    pub fn register_ingest(&self, key: &str, sink: IngestSink) -> Result<IngestRegistration, ServerError> {
        self.inner.registry.ingest_keys.register(key, sink)
    }

    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }
}

/// The sending side of one playable stream. Never blocks. Dropping it ends
/// the stream: its players get `NetStream.Play.Complete`.
pub struct StreamFeed {
    name: String,
    headers: watch::Sender<Option<StreamHeaders>>,
    frames: broadcast::Sender<MediaFrame>,
    registry: Arc<Registry>,
}

impl StreamFeed {
    pub fn set_headers(&self, headers: StreamHeaders) {
        self.headers.send_replace(Some(headers));
    }

    /// Sends `frame` to every player; returns how many there are.
    pub fn push(&self, frame: MediaFrame) -> usize {
        self.frames.send(frame).unwrap_or(0)
    }

    pub fn players(&self) -> usize {
        self.frames.receiver_count()
    }
}

impl Drop for StreamFeed {
    fn drop(&mut self) {
        // With the registry's copy gone too, the channel closes and players finish.
        self.registry.streams().remove(&self.name);
    }
}

async fn accept_connections(listener: TcpListener, registry: Arc<Registry>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop_requested(&mut shutdown) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let (registry, shutdown) = (registry.clone(), shutdown.clone());
                    tokio::spawn(async move {
                        match serve_connection(stream, peer, &registry, shutdown).await {
                            Ok(()) => tracing::debug!(%peer, "RTMP client left"),
                            Err(error) => tracing::info!(%peer, %error, "RTMP client disconnected"),
                        }
                    });
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(error) => {
                    tracing::warn!(%error, "RTMP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    registry: &Registry,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConnectionError> {
    let config = &registry.config;
    let deadline = Instant::now() + config.request_timeout;
    stream.set_nodelay(true)?;
    let after_handshake = handshake(&mut stream, PeerType::Server, config.request_timeout).await?;
    let (reader, writer) = stream.into_split();
    let (session, results) = ServerSession::new(ServerSessionConfig::new())?;
    let mut connection = Connection {
        reader,
        writer,
        session,
        read_buffer: vec![0; READ_BUFFER_BYTES],
        write_timeout: config.write_timeout,
    };
    connection.send_results(results).await?;
    let early_results = connection.session.handle_input(&after_handshake)?;
    let mut events = connection.send_results(early_results).await?;

    let accepted = loop {
        if let Some(accepted) = connection.answer_requests(events, registry, peer).await? {
            break accepted;
        }
        let n = tokio::select! {
            _ = stop_requested(&mut shutdown) => return Ok(()),
            read = tokio::time::timeout_at(deadline, connection.read()) => {
                read.map_err(|_| ConnectionError::NoRequest(config.request_timeout))??
            }
        };
        let Some(n) = n else { return Ok(()) };
        events = connection.process(n).await?;
    };
    match accepted {
        Accepted::Play { stream_id, source } => connection.play(stream_id, source, &mut shutdown).await,
        Accepted::Publish(publisher) => {
            connection
                .ingest(publisher, config.request_timeout, &mut shutdown)
                .await
        }
    }
}

/// Logs an event nothing here acts on, without the stream key many of them
/// carry: a publisher's key is a secret.
fn log_ignored(event: &ServerSessionEvent) {
    match event {
        // releaseStream, FCPublish and FCUnpublish name the key in their arguments.
        ServerSessionEvent::UnhandleableAmf0Command { command_name, .. } => {
            tracing::debug!(command_name, "RTMP command ignored");
        }
        ServerSessionEvent::ClientChunkSizeChanged { .. }
        | ServerSessionEvent::AcknowledgementReceived { .. }
        | ServerSessionEvent::PingResponseReceived { .. } => tracing::debug!(?event, "RTMP control event"),
        _ => tracing::debug!("RTMP stream event ignored (not shown: it names a stream key)"),
    }
}

/// What a connection was accepted for.
enum Accepted {
    Play { stream_id: u32, source: StreamSource },
    Publish(IngestPublisher),
}

/// One client's socket halves and its sans-IO server session.
struct Connection {
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    session: ServerSession,
    read_buffer: Vec<u8>,
    write_timeout: Duration,
}

impl Connection {
    /// Cancel-safe; `None` when the client closed the connection.
    async fn read(&mut self) -> Result<Option<usize>, ConnectionError> {
        match self.reader.read(&mut self.read_buffer).await? {
            0 => Ok(None),
            n => Ok(Some(n)),
        }
    }

    async fn process(&mut self, n: usize) -> Result<Vec<ServerSessionEvent>, ConnectionError> {
        let results = self.session.handle_input(&self.read_buffer[..n])?;
        self.send_results(results).await
    }

    /// Accepts or refuses what the client asked for. Returns what it may do
    /// once a play or publish request is accepted.
    async fn answer_requests(
        &mut self,
        events: Vec<ServerSessionEvent>,
        registry: &Registry,
        peer: SocketAddr,
    ) -> Result<Option<Accepted>, ConnectionError> {
        let player_app = registry.config.app.as_str();
        for event in events {
            match event {
                ServerSessionEvent::ConnectionRequested { request_id, app_name } => {
                    let app = app_name.trim_end_matches('/');
                    if app == player_app || app == INGEST_APP {
                        let results = self.session.accept_request(request_id)?;
                        self.send_results(results).await?;
                    } else {
                        let reason = format!(
                            "no application {app_name:?} here; play rtmp://host/{player_app}/<stream> \
                             or publish to rtmp://host/{INGEST_APP}/<stream_key>"
                        );
                        return Err(self.refuse(request_id, "NetConnection.Connect.Rejected", reason).await);
                    }
                }
                ServerSessionEvent::PublishStreamRequested {
                    request_id,
                    app_name,
                    stream_key,
                    ..
                } => {
                    if app_name != INGEST_APP {
                        let reason =
                            format!("{app_name:?} is for players; publish to rtmp://host/{INGEST_APP}/<stream_key>");
                        return Err(self.refuse(request_id, "NetStream.Publish.Denied", reason).await);
                    }
                    // OBS and ffmpeg may append a query string; it is not part of the key.
                    let key = stream_key.split('?').next().unwrap_or_default();
                    let Some(slot) = registry.ingest_keys.find(key) else {
                        // The key is a secret, even a wrong one (it may be a typo of the right one).
                        let reason = "no publisher is expected with this stream key".to_string();
                        return Err(self.refuse(request_id, "NetStream.Publish.BadName", reason).await);
                    };
                    let results = self.session.accept_request(request_id)?;
                    self.send_results(results).await?;
                    let publisher = slot.claim(peer).ok_or(Superseded::Unregistered)?;
                    return Ok(Some(Accepted::Publish(publisher)));
                }
                ServerSessionEvent::PlayStreamRequested {
                    request_id,
                    app_name,
                    stream_key,
                    stream_id,
                    ..
                } => {
                    if app_name != player_app {
                        let reason = format!("{app_name:?} is for publishers; play rtmp://host/{player_app}/<stream>");
                        return Err(self.refuse(request_id, "NetStream.Play.Failed", reason).await);
                    }
                    // Players may append a query string (tokens); it does not name the stream.
                    let name = stream_key.split('?').next().unwrap_or_default();
                    let found = registry.streams().get(name).cloned();
                    let Some(source) = found else {
                        let reason = format!("no stream named {name:?} on this server");
                        return Err(self.refuse(request_id, "NetStream.Play.StreamNotFound", reason).await);
                    };
                    let results = self.session.accept_request(request_id)?;
                    self.send_results(results).await?;
                    return Ok(Some(Accepted::Play { stream_id, source }));
                }
                event => log_ignored(&event),
            }
        }
        Ok(None)
    }

    /// Sends the error status, closes our side, and says why.
    async fn refuse(&mut self, request_id: u32, code: &str, reason: String) -> ConnectionError {
        let sent = async {
            let results = self.session.reject_request(request_id, code, &reason)?;
            self.send_results(results).await?;
            self.writer.shutdown().await?;
            // Closing with the client's bytes unread would reset the connection
            // and could destroy the error before the client reads it: let the
            // client hang up first (briefly).
            let drain = async {
                while self.read().await?.is_some() {}
                Ok::<(), ConnectionError>(())
            };
            let _ = tokio::time::timeout(REFUSAL_LINGER, drain).await;
            Ok::<(), ConnectionError>(())
        };
        match sent.await {
            Ok(()) => ConnectionError::Refused(format!("{code}: {reason}")),
            Err(error) => error,
        }
    }

    async fn play(
        mut self,
        stream_id: u32,
        source: StreamSource,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), ConnectionError> {
        let StreamSource { mut headers, frames } = source;
        let mut frames = frames.subscribe();
        let mut packager = Packager::new();
        if let Some(current) = headers.borrow_and_update().clone() {
            packager.set_headers(current);
        }
        loop {
            tokio::select! {
                _ = stop_requested(shutdown) => return Ok(()),
                frame = frames.recv() => match frame {
                    Ok(frame) => {
                        if headers.has_changed().unwrap_or(false) {
                            if let Some(current) = headers.borrow_and_update().clone() {
                                packager.set_headers(current);
                            }
                        }
                        for tag in packager.package(&frame) {
                            self.send_tag(stream_id, tag).await?;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "RTMP player fell behind; skipping to the next keyframe");
                        packager.skip_to_next_keyframe();
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        let packet = self.session.finish_playing(stream_id)?;
                        self.write(&packet.bytes).await?;
                        return Ok(());
                    }
                },
                read = self.read() => {
                    let Some(n) = read? else { return Ok(()) };
                    for event in self.process(n).await? {
                        if matches!(event, ServerSessionEvent::PlayStreamFinished { .. }) {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    /// Hands what the publisher sends to its key's sink until it stops,
    /// falls silent, is replaced or sends a codec Tutti cannot take.
    async fn ingest(
        mut self,
        mut publisher: IngestPublisher,
        silence_timeout: Duration,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), ConnectionError> {
        // Every way out drops `publisher`, which tells the sink `Ended` if it
        // still owns the key.
        loop {
            let n = tokio::select! {
                _ = stop_requested(shutdown) => return Ok(()),
                superseded = publisher.superseded() => return Err(superseded.into()),
                read = tokio::time::timeout(silence_timeout, self.read()) => {
                    read.map_err(|_| ConnectionError::PublisherSilent(silence_timeout))??
                }
            };
            let Some(n) = n else { return Ok(()) };
            for event in self.process(n).await? {
                let parsed = match event {
                    ServerSessionEvent::VideoDataReceived { data, timestamp, .. } => {
                        video_event(timestamp.value, &data)
                    }
                    ServerSessionEvent::AudioDataReceived { data, timestamp, .. } => {
                        audio_event(timestamp.value, &data)
                    }
                    ServerSessionEvent::PublishStreamFinished { .. } => return Ok(()),
                    ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                        tracing::debug!(?metadata, "RTMP publisher metadata");
                        None
                    }
                    event => {
                        log_ignored(&event);
                        None
                    }
                };
                match parsed {
                    Some(IngestEvent::Refused { reason }) => {
                        publisher.refuse(reason.clone());
                        return Err(ConnectionError::UnsupportedMedia(reason));
                    }
                    Some(event) => publisher.deliver(event),
                    None => {}
                }
            }
        }
    }

    async fn send_tag(&mut self, stream_id: u32, tag: FlvTag) -> Result<(), ConnectionError> {
        let packet = match tag {
            FlvTag::Metadata(metadata) => self.session.send_metadata(stream_id, &metadata)?,
            FlvTag::Video { timestamp_ms, body } => {
                self.session
                    .send_video_data(stream_id, body, RtmpTimestamp::new(timestamp_ms), false)?
            }
            FlvTag::Audio { timestamp_ms, body } => {
                self.session
                    .send_audio_data(stream_id, body, RtmpTimestamp::new(timestamp_ms), false)?
            }
        };
        self.write(&packet.bytes).await
    }

    async fn send_results(
        &mut self,
        results: Vec<ServerSessionResult>,
    ) -> Result<Vec<ServerSessionEvent>, ConnectionError> {
        let mut events = Vec::new();
        for result in results {
            match result {
                ServerSessionResult::OutboundResponse(packet) => self.write(&packet.bytes).await?,
                ServerSessionResult::RaisedEvent(event) => events.push(event),
                ServerSessionResult::UnhandleableMessageReceived(message) => {
                    tracing::debug!(type_id = message.type_id, "ignoring RTMP message from client");
                }
            }
        }
        Ok(events)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ConnectionError> {
        tokio::time::timeout(self.write_timeout, self.writer.write_all(bytes))
            .await
            .map_err(|_| ConnectionError::WriteStalled(self.write_timeout))?
            .map_err(ConnectionError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::super::flv;
    use super::super::publisher::error_status;
    use bytes::Bytes;
    use crate::model::ingest::AudioConfig;
    use super::*;
    use rml_rtmp::sessions::{
        ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
    };
    use std::net::Ipv4Addr;
    use tokio::sync::mpsc;

    /// Every wait in these tests is bounded by this; on 127.0.0.1 each
    /// answer takes milliseconds.
    const PATIENCE: Duration = Duration::from_secs(5);
    /// The start of an AVCDecoderConfigurationRecord: copied verbatim, so enough.
    const AVC_RECORD: [u8; 6] = [0x01, 0x42, 0xc0, 0x1f, 0xff, 0xe1];
    /// AAC-LC, 48 kHz, stereo.
    const AAC_CONFIG: [u8; 2] = [0x11, 0x90];
    const ACCESS_UNIT: [u8; 5] = [0, 0, 0, 1, 0x65];
    const AAC_FRAME: [u8; 3] = [0x21, 0x10, 0x04];

    async fn server_with_request_timeout(request_timeout: Duration) -> RtmpServerHandle {
        start_server(RtmpServerConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            request_timeout,
            ..Default::default()
        })
        .await
        .unwrap()
    }

    async fn test_server() -> RtmpServerHandle {
        server_with_request_timeout(DEFAULT_REQUEST_TIMEOUT).await
    }

    /// Registers `key` with a sink that queues what it hears for the test.
    fn register(server: &RtmpServerHandle, key: &str) -> (IngestRegistration, mpsc::UnboundedReceiver<IngestEvent>) {
        let (heard, events) = mpsc::unbounded_channel();
        let sink: IngestSink = Arc::new(move |event| {
            let _ = heard.send(event);
        });
        (server.register_ingest(key, sink).unwrap(), events)
    }

    async fn next_event(events: &mut mpsc::UnboundedReceiver<IngestEvent>) -> IngestEvent {
        tokio::time::timeout(PATIENCE, events.recv())
            .await
            .expect("the sink hears something in time")
            .expect("the sink is alive")
    }

    /// The sink heard nothing it has not been asked about (or is gone, with its registration).
    fn nothing_more(events: &mut mpsc::UnboundedReceiver<IngestEvent>) {
        if let Ok(event) = events.try_recv() {
            panic!("the sink heard {event:?}");
        }
    }

    /// A client over a real socket, speaking rml_rtmp's client session as
    /// OBS or ffplay would.
    struct TestClient {
        socket: TcpStream,
        session: ClientSession,
        read_buffer: Vec<u8>,
    }

    impl TestClient {
        /// TCP, handshake, connect(app); `Err` carries the server's refusal.
        async fn connect(server: &RtmpServerHandle, app: &str) -> Result<TestClient, String> {
            let mut socket = TcpStream::connect(server.local_addr()).await.unwrap();
            let after_handshake = handshake(&mut socket, PeerType::Client, PATIENCE).await.unwrap();
            let (session, results) = ClientSession::new(ClientSessionConfig::new()).unwrap();
            let mut client = TestClient {
                socket,
                session,
                read_buffer: vec![0; READ_BUFFER_BYTES],
            };
            client.send(results).await;
            let early_results = client.session.handle_input(&after_handshake).unwrap();
            client.send(early_results).await;
            let request = client.session.request_connection(app.to_string()).unwrap();
            client.send(vec![request]).await;
            client
                .answer(|event| match event {
                    ClientSessionEvent::ConnectionRequestAccepted => Some(Ok(())),
                    ClientSessionEvent::ConnectionRequestRejected { description } => Some(Err(description.clone())),
                    _ => None,
                })
                .await?;
            Ok(client)
        }

        async fn publish(&mut self, stream_key: &str) -> Result<(), String> {
            let request = self
                .session
                .request_publishing(stream_key.to_string(), PublishRequestType::Live)
                .unwrap();
            self.send(vec![request]).await;
            self.answer(|event| matches!(event, ClientSessionEvent::PublishRequestAccepted).then_some(Ok(())))
                .await
        }

        async fn play(&mut self, stream: &str) -> Result<(), String> {
            let request = self.session.request_playback(stream.to_string()).unwrap();
            self.send(vec![request]).await;
            self.answer(|event| matches!(event, ClientSessionEvent::PlaybackRequestAccepted).then_some(Ok(())))
                .await
        }

        async fn send_video(&mut self, timestamp_ms: u32, body: Bytes) {
            let packet = self
                .session
                .publish_video_data(body, RtmpTimestamp::new(timestamp_ms), false)
                .unwrap();
            self.send(vec![packet]).await;
        }

        async fn send_audio(&mut self, timestamp_ms: u32, body: Bytes) {
            let packet = self
                .session
                .publish_audio_data(body, RtmpTimestamp::new(timestamp_ms), false)
                .unwrap();
            self.send(vec![packet]).await;
        }

        async fn stop_publishing(&mut self) {
            let results = self.session.stop_publishing().unwrap();
            self.send(results).await;
        }

        /// Reads until `decide` settles on an event; a server's error
        /// status ("code: description") settles it as `Err`.
        async fn answer(
            &mut self,
            mut decide: impl FnMut(&ClientSessionEvent) -> Option<Result<(), String>>,
        ) -> Result<(), String> {
            loop {
                let n = self.read().await;
                if n == 0 {
                    return Err("the server closed the connection".to_string());
                }
                let results = self.session.handle_input(&self.read_buffer[..n]).unwrap();
                for event in self.send(results).await {
                    // Refusals of play and publish come with transaction id 0.
                    if let ClientSessionEvent::UnknownTransactionResultReceived { additional_values, .. } = &event
                        && let Some(status) = error_status(additional_values)
                    {
                        return Err(status);
                    }
                    if let Some(answer) = decide(&event) {
                        return answer;
                    }
                }
            }
        }

        /// Reads until the server closes the connection.
        async fn closed_by_server(&mut self) {
            while self.read().await > 0 {}
        }

        /// 0 when the server closed (a reset is a close too).
        async fn read(&mut self) -> usize {
            tokio::time::timeout(PATIENCE, self.socket.read(&mut self.read_buffer))
                .await
                .expect("the server answers in time")
                .unwrap_or(0)
        }

        async fn send(&mut self, results: Vec<ClientSessionResult>) -> Vec<ClientSessionEvent> {
            let mut events = Vec::new();
            for result in results {
                match result {
                    ClientSessionResult::OutboundResponse(packet) => {
                        self.socket.write_all(&packet.bytes).await.unwrap()
                    }
                    ClientSessionResult::RaisedEvent(event) => events.push(event),
                    ClientSessionResult::UnhandleableMessageReceived(_) => {}
                }
            }
            events
        }

        fn address(&self) -> SocketAddr {
            self.socket.local_addr().unwrap()
        }
    }

    /// Connected to `ingest` and publishing with `key`.
    async fn publisher(server: &RtmpServerHandle, key: &str) -> TestClient {
        let mut client = TestClient::connect(server, INGEST_APP).await.unwrap();
        client.publish(key).await.unwrap();
        client
    }

    #[tokio::test]
    async fn a_publisher_with_the_right_key_delivers_its_media_in_order_then_ends() {
        let server = test_server().await;
        let (_registration, mut events) = register(&server, "key");
        // OBS may append a query string; it is not part of the key.
        let mut client = publisher(&server, "key?obs=30").await;
        assert_eq!(next_event(&mut events).await, IngestEvent::Publishing { peer: client.address() });

        client.send_video(0, flv::avc_sequence_header(&AVC_RECORD)).await;
        client.send_audio(0, flv::aac_sequence_header(&AAC_CONFIG)).await;
        client.send_video(40, flv::avc_nalu(true, 80, &ACCESS_UNIT)).await;
        client.send_audio(43, flv::aac_raw(&AAC_FRAME)).await;
        client.stop_publishing().await;

        let expected = [
            IngestEvent::VideoConfig(Bytes::from_static(&AVC_RECORD)),
            IngestEvent::AudioConfig(AudioConfig::Aac(Bytes::from_static(&AAC_CONFIG))),
            IngestEvent::Video {
                dts_ms: 40,
                pts_ms: 120,
                keyframe: true,
                data: Bytes::from_static(&ACCESS_UNIT),
            },
            IngestEvent::Audio {
                pts_ms: 43,
                data: Bytes::from_static(&AAC_FRAME),
            },
            IngestEvent::Ended,
        ];
        for event in expected {
            assert_eq!(next_event(&mut events).await, event);
        }
    }

    #[tokio::test]
    async fn a_wrong_key_is_refused_without_being_echoed_and_the_sink_hears_nothing() {
        let server = test_server().await;
        let (_registration, mut events) = register(&server, "right-key");
        let mut client = TestClient::connect(&server, INGEST_APP).await.unwrap();
        let refusal = client.publish("wrong-key").await.unwrap_err();
        assert!(refusal.starts_with("NetStream.Publish.BadName"), "{refusal}");
        assert!(!refusal.contains("wrong-key"), "{refusal}");
        nothing_more(&mut events);
    }

    #[tokio::test]
    async fn a_second_publisher_with_the_key_takes_over_and_the_first_falls_silent() {
        let server = test_server().await;
        let (_registration, mut events) = register(&server, "key");
        let mut first = publisher(&server, "key").await;
        assert_eq!(next_event(&mut events).await, IngestEvent::Publishing { peer: first.address() });
        first.send_video(0, flv::avc_sequence_header(&AVC_RECORD)).await;
        assert_eq!(next_event(&mut events).await, IngestEvent::VideoConfig(Bytes::from_static(&AVC_RECORD)));

        let mut second = publisher(&server, "key").await;
        assert_eq!(next_event(&mut events).await, IngestEvent::Publishing { peer: second.address() });
        first.closed_by_server().await;
        // Had the first connection said Ended on its way out, it would come before this.
        second.send_audio(0, flv::aac_sequence_header(&AAC_CONFIG)).await;
        assert_eq!(next_event(&mut events).await, IngestEvent::AudioConfig(AudioConfig::Aac(Bytes::from_static(&AAC_CONFIG))));

        drop(second);
        assert_eq!(next_event(&mut events).await, IngestEvent::Ended);
    }

    #[tokio::test]
    async fn dropping_the_registration_disconnects_the_publisher_without_ended() {
        let server = test_server().await;
        let (registration, mut events) = register(&server, "key");
        let mut client = publisher(&server, "key").await;
        assert_eq!(next_event(&mut events).await, IngestEvent::Publishing { peer: client.address() });
        drop(registration);
        client.closed_by_server().await;
        nothing_more(&mut events);
    }

    #[tokio::test]
    async fn a_publisher_sending_hevc_is_refused_and_disconnected_without_ended() {
        let server = test_server().await;
        let (_registration, mut events) = register(&server, "key");
        let mut client = publisher(&server, "key").await;
        assert_eq!(next_event(&mut events).await, IngestEvent::Publishing { peer: client.address() });
        client.send_video(0, Bytes::from_static(b"\x90hvc1\x01")).await;
        let IngestEvent::Refused { reason } = next_event(&mut events).await else {
            panic!("HEVC accepted")
        };
        assert!(reason.contains("HEVC"), "{reason}");
        client.closed_by_server().await;
        nothing_more(&mut events);
    }

    #[tokio::test]
    async fn a_silent_publisher_is_disconnected_and_ended() {
        let server = server_with_request_timeout(Duration::from_millis(300)).await;
        let (_registration, mut events) = register(&server, "key");
        let mut client = publisher(&server, "key").await;
        assert_eq!(next_event(&mut events).await, IngestEvent::Publishing { peer: client.address() });
        assert_eq!(next_event(&mut events).await, IngestEvent::Ended);
        client.closed_by_server().await;
    }

    #[tokio::test]
    async fn shutting_the_server_down_ends_its_publishers() {
        let server = test_server().await;
        let (_registration, mut events) = register(&server, "key");
        let mut client = publisher(&server, "key").await;
        assert_eq!(next_event(&mut events).await, IngestEvent::Publishing { peer: client.address() });
        server.shutdown();
        assert_eq!(next_event(&mut events).await, IngestEvent::Ended);
        client.closed_by_server().await;
    }

    #[tokio::test]
    async fn players_and_publishers_are_told_which_application_is_theirs() {
        let server = test_server().await;
        let (_registration, mut events) = register(&server, "key");
        let _feed = server.register_stream("key").unwrap();

        let mut player_on_ingest = TestClient::connect(&server, INGEST_APP).await.unwrap();
        let refusal = player_on_ingest.play("key").await.unwrap_err();
        assert!(refusal.starts_with("NetStream.Play.Failed"), "{refusal}");
        assert!(refusal.contains("is for publishers"), "{refusal}");

        let mut publisher_on_live = TestClient::connect(&server, DEFAULT_APP).await.unwrap();
        let refusal = publisher_on_live.publish("key").await.unwrap_err();
        assert!(refusal.starts_with("NetStream.Publish.Denied"), "{refusal}");
        assert!(refusal.contains("/ingest/<stream_key>"), "{refusal}");

        let refusal = TestClient::connect(&server, "other").await.err().unwrap();
        assert!(refusal.contains("no application \"other\""), "{refusal}");
        nothing_more(&mut events);
    }

    #[test]
    fn the_ingest_url_names_the_given_host_and_the_listening_port() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let server = runtime.block_on(test_server());
        let port = server.local_addr().port();
        assert_eq!(
            server.ingest_url(IpAddr::from([203, 0, 113, 7])),
            format!("rtmp://203.0.113.7:{port}/ingest")
        );
        assert_eq!(
            server.ingest_url("2001:db8::1".parse().unwrap()),
            format!("rtmp://[2001:db8::1]:{port}/ingest")
        );
    }
}
