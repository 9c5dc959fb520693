//! A small embedded RTMP server for local playback: ffplay, VLC or ffprobe
//! play `rtmp://127.0.0.1:PORT/live/{stream}`.
//!
//! ```text
//!  media adapter ─► StreamFeed("main") ─┬─ headers: watch (latest wins) ───────┐
//!                                       └─ frames: broadcast (bounded) ─┐       │
//!  TcpListener ─► one task per connection: handshake ─► connect(app) ─► play(stream)
//!                                                       └─► Packager ─► socket
//! ```
//!
//! Playback only: publish requests, unknown applications and unknown streams
//! are refused with an RTMP error status naming the problem. Each player
//! has its own bounded view of the stream: one that falls behind skips to
//! the next keyframe (and is disconnected if a write stalls), and can never
//! slow the source or the other players down.

use super::handshake::{HandshakeFailure, handshake};
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
use std::net::SocketAddr;
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
    /// The one application players connect to.
    pub app: String,
    /// Frames a player may fall behind before it skips to the next keyframe.
    pub player_buffer_frames: usize,
    /// From TCP accept to the play request (handshake, connect, createStream, play).
    pub request_timeout: Duration,
    /// A player whose socket accepts nothing for this long is disconnected.
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
}

/// Why one connection ended.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error(transparent)]
    Handshake(#[from] HandshakeFailure),
    #[error("no play request within {0:?}")]
    NoPlayRequest(Duration),
    #[error("refused: {0}")]
    Refused(String),
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    #[error("a write stalled for more than {0:?}: the player is too slow")]
    WriteStalled(Duration),
    #[error("RTMP protocol error: {0}")]
    Protocol(#[from] ServerSessionError),
}

/// A cloneable handle to a running server. Dropping the last clone (or
/// calling `shutdown`) stops it and disconnects its players.
#[derive(Clone)]
pub struct RtmpServerHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    local_addr: SocketAddr,
    registry: Arc<Registry>,
    shutdown: watch::Sender<bool>,
}

/// The streams players can ask for, by name.
struct Registry {
    config: RtmpServerConfig,
    streams: Mutex<HashMap<String, StreamSource>>,
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

/// Binds `config.listen` and serves players on the current tokio runtime.
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
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    tokio::spawn(accept_connections(listener, registry.clone(), shutdown_rx));
    tracing::info!(%local_addr, "RTMP playback server listening");
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
                        match serve_connection(stream, &registry, shutdown).await {
                            Ok(()) => tracing::debug!(%peer, "RTMP player left"),
                            Err(error) => tracing::info!(%peer, %error, "RTMP player disconnected"),
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

    let (stream_id, source) = loop {
        if let Some(accepted) = connection.answer_requests(events, registry).await? {
            break accepted;
        }
        let n = tokio::select! {
            _ = stop_requested(&mut shutdown) => return Ok(()),
            read = tokio::time::timeout_at(deadline, connection.read()) => {
                read.map_err(|_| ConnectionError::NoPlayRequest(config.request_timeout))??
            }
        };
        let Some(n) = n else { return Ok(()) };
        events = connection.process(n).await?;
    };
    connection.play(stream_id, source, &mut shutdown).await
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
    /// Cancel-safe; `None` when the player closed the connection.
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

    /// Accepts or refuses what the client asked for. Returns the stream to
    /// play once a play request is accepted.
    async fn answer_requests(
        &mut self,
        events: Vec<ServerSessionEvent>,
        registry: &Registry,
    ) -> Result<Option<(u32, StreamSource)>, ConnectionError> {
        for event in events {
            match event {
                ServerSessionEvent::ConnectionRequested { request_id, app_name } => {
                    if app_name.trim_end_matches('/') == registry.config.app {
                        let results = self.session.accept_request(request_id)?;
                        self.send_results(results).await?;
                    } else {
                        let reason = format!(
                            "no application {app_name:?} here; play rtmp://host/{}/<stream>",
                            registry.config.app
                        );
                        return Err(self.refuse(request_id, "NetConnection.Connect.Rejected", reason).await);
                    }
                }
                ServerSessionEvent::PublishStreamRequested { request_id, .. } => {
                    let reason = "this server only serves playback".to_string();
                    return Err(self.refuse(request_id, "NetStream.Publish.Denied", reason).await);
                }
                ServerSessionEvent::PlayStreamRequested {
                    request_id,
                    stream_key,
                    stream_id,
                    ..
                } => {
                    // Players may append a query string (tokens); it does not name the stream.
                    let name = stream_key.split('?').next().unwrap_or_default();
                    let found = registry.streams().get(name).cloned();
                    let Some(source) = found else {
                        let reason = format!("no stream named {name:?} on this server");
                        return Err(self.refuse(request_id, "NetStream.Play.StreamNotFound", reason).await);
                    };
                    let results = self.session.accept_request(request_id)?;
                    self.send_results(results).await?;
                    return Ok(Some((stream_id, source)));
                }
                event => tracing::debug!(?event, "RTMP player event"),
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
                    tracing::debug!(type_id = message.type_id, "ignoring RTMP message from player");
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
