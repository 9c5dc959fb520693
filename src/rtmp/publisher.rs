//! An RTMP publish client: one tokio task per destination, fed through a
//! [`PublisherHandle`].
//!
//! ```text
//!  Connecting ─► TCP (+TLS) ─► handshake ─► connect(app) ─► publish(key, live) ─► Live ─► frames…
//!     ▲   │          │                            │                  │              │
//!     │   │          └─ certificate not trusted ──┴─── refused ──────┴─► Failed     │ connection lost,
//!     │   └── network failure ──┐                     (reconnect.rs decides)        │ write stalled
//!     │                         ▼                                                   │
//!     └──── Reconnecting { attempt } ◄── backoff 1 s, 2 s, 4 s … 30 s, ±20% ◄───────┘
//!
//!  stop(), in any state ─► deleteStream (if live) ─► Stopped
//! ```
//!
//! Media never waits for the network: frames go through a bounded queue
//! ([`super::frame_queue`]) that drops whole GOPs when the destination falls
//! behind, and while the publisher is not live the task keeps draining the
//! queue so a reconnect starts from fresh frames. Each session starts with
//! `@setDataFrame onMetaData` and the sequence headers, at a keyframe, with
//! timestamps from 0 ([`super::packager`]).

use super::frame_queue::{FrameSender, PushOutcome};
use super::handshake::{HandshakeFailure, handshake};
use super::media::{MediaFrame, StreamHeaders};
use super::packager::{FlvTag, Packager};
use super::reconnect::{FailureKind, NextStep, ReconnectPolicy, Reconnector};
use super::stop_signal::stop_requested;
use super::transport::{self, BoxedStream, TransportError};
use super::trust::RtmpsTrust;
use super::url::RtmpUrl;
use rml_rtmp::chunk_io::Packet;
use rml_rtmp::handshake::PeerType;
use rml_rtmp::rml_amf0::Amf0Value;
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionError, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use std::fmt;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// About 3 s of 30 fps video with its AAC frames.
pub const DEFAULT_QUEUE_FRAMES: usize = 256;
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `stop()` waits for deleteStream to leave before closing anyway.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
const READ_BUFFER_BYTES: usize = 16 * 1024;
/// The `flashVer` OBS sends: ingest servers know it as a live encoder.
const FLASH_VERSION: &str = "FMLE/3.0 (compatible; FMSc/1.0)";
/// onStatus codes by which a server says no. rml_rtmp hands us the code
/// only (not the level), so refusals are recognised by their suffix.
const REFUSAL_CODE_SUFFIXES: [&str; 6] = [
    ".BadName",
    ".Denied",
    ".Rejected",
    ".Failed",
    ".Unauthorized",
    ".InvalidApp",
];

#[derive(Clone, Debug)]
pub struct PublisherConfig {
    pub url: RtmpUrl,
    /// Certificate authorities an `rtmps://` server may be vouched for by.
    pub trust: RtmpsTrust,
    /// Frames (video and audio) queued between the media threads and the socket.
    pub queue_frames: usize,
    /// Resolving, TCP connect and TLS together.
    pub connect_timeout: Duration,
    /// The RTMP handshake, and each answer to connect and publish.
    pub response_timeout: Duration,
    /// One message stuck in the socket longer than this means the path is dead.
    pub write_timeout: Duration,
    pub reconnect: ReconnectPolicy,
}

impl PublisherConfig {
    pub fn new(url: RtmpUrl, trust: RtmpsTrust) -> PublisherConfig {
        PublisherConfig {
            url,
            trust,
            queue_frames: DEFAULT_QUEUE_FRAMES,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            reconnect: ReconnectPolicy::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublisherState {
    /// First connection attempt.
    Connecting,
    Live,
    /// Lost or never got a connection; `attempt` counts retries since last live.
    Reconnecting {
        attempt: u32,
    },
    /// The server refused us or its certificate for good; `reason` says why.
    Failed {
        reason: String,
    },
    Stopped,
}

impl PublisherState {
    /// Failed and Stopped are final: the task has ended.
    pub fn is_final(&self) -> bool {
        matches!(self, PublisherState::Failed { .. } | PublisherState::Stopped)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Bytes written to the socket (RTMP chunks, after the handshake).
    pub bytes_sent: u64,
    /// Times the publisher went live again after losing a live session.
    pub reconnects: u64,
    /// GOPs dropped because the queue to the socket was full.
    pub dropped_gops: u64,
    /// Why the last session or attempt ended.
    pub last_error: Option<String>,
}

/// The stage of the RTMP exchange a failure happened in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionStep {
    Connect { app: String },
    Publish,
    Streaming,
}

impl fmt::Display for SessionStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionStep::Connect { app } => write!(f, "connect to application {app:?}"),
            SessionStep::Publish => f.write_str("publish"),
            SessionStep::Streaming => f.write_str("streaming"),
        }
    }
}

#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Handshake(#[from] HandshakeFailure),
    #[error("no answer to {step} within {timeout:?}")]
    NoAnswer { step: SessionStep, timeout: Duration },
    #[error("the server closed the connection during {step}")]
    Closed { step: SessionStep },
    #[error("socket error during {step}: {source}")]
    Io { step: SessionStep, source: io::Error },
    #[error("a write to the server stalled for more than {0:?}")]
    WriteStalled(Duration),
    #[error("RTMP protocol error: {0}")]
    Protocol(#[from] ClientSessionError),
    #[error("the server refused {step}: {reason}")]
    Refused { step: SessionStep, reason: String },
}

impl PublishError {
    /// A refusal is an RTMP server that, after a complete handshake, turned
    /// down our connect or publish: by an explicit `_error`/error status, or
    /// by closing the connection in answer to it (what nginx-rtmp does for an
    /// unknown application, and many CDNs for a bad key). A certificate that
    /// failed verification is its own kind. Everything else before the
    /// handshake completes, timeouts, and losses while streaming are network
    /// failures.
    pub fn failure_kind(&self) -> FailureKind {
        match self {
            PublishError::Transport(TransportError::UntrustedCertificate { .. }) => FailureKind::UntrustedCertificate,
            PublishError::Refused { .. } => FailureKind::Refusal,
            PublishError::Closed { step } if step != &SessionStep::Streaming => FailureKind::Refusal,
            _ => FailureKind::Network,
        }
    }
}

/// A cloneable sender to one publisher task. Every method returns at once;
/// none blocks the calling (GStreamer) thread. Dropping the last clone stops
/// the publisher.
#[derive(Clone)]
pub struct PublisherHandle {
    shared: Arc<Shared>,
}

struct Shared {
    frames: FrameSender,
    headers: watch::Sender<Option<StreamHeaders>>,
    stop: watch::Sender<bool>,
    state: watch::Receiver<PublisherState>,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    bytes_sent: AtomicU64,
    reconnects: AtomicU64,
    dropped_gops: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// Starts publishing to `config.url` on the current tokio runtime.
pub fn spawn_publisher(config: PublisherConfig) -> PublisherHandle {
    let (frames_tx, frames_rx) = mpsc::channel(config.queue_frames.max(1));
    let (headers_tx, headers_rx) = watch::channel(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (state_tx, state_rx) = watch::channel(PublisherState::Connecting);
    let counters = Arc::new(Counters::default());
    let task = PublisherTask {
        config,
        inputs: Inputs {
            frames: frames_rx,
            headers: headers_rx,
            stop: stop_rx,
        },
        state: state_tx,
        counters: counters.clone(),
    };
    tokio::spawn(task.run());
    PublisherHandle {
        shared: Arc::new(Shared {
            frames: FrameSender::new(frames_tx),
            headers: headers_tx,
            stop: stop_tx,
            state: state_rx,
            counters,
        }),
    }
}

impl PublisherHandle {
    /// Replaces the stream headers; sent before the next keyframe if they
    /// changed, and at the start of every (re)connection.
    pub fn set_headers(&self, headers: StreamHeaders) {
        self.shared.headers.send_replace(Some(headers));
    }

    /// Queues one frame, or drops it with the rest of its GOP if the queue is full.
    pub fn push(&self, frame: MediaFrame) -> PushOutcome {
        let (outcome, new_dropped_gop) = self.shared.frames.push(frame);
        if new_dropped_gop {
            self.shared.counters.dropped_gops.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    /// The lifecycle state; `changed()` on it wakes on every transition.
    pub fn state(&self) -> watch::Receiver<PublisherState> {
        self.shared.state.clone()
    }

    pub fn stats(&self) -> PublisherStats {
        let counters = &self.shared.counters;
        PublisherStats {
            bytes_sent: counters.bytes_sent.load(Ordering::Relaxed),
            reconnects: counters.reconnects.load(Ordering::Relaxed),
            dropped_gops: counters.dropped_gops.load(Ordering::Relaxed),
            last_error: counters.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    /// Asks the task to unpublish and close; the state becomes `Stopped`.
    pub fn stop(&self) {
        self.shared.stop.send_replace(true);
    }
}

struct PublisherTask {
    config: PublisherConfig,
    inputs: Inputs,
    state: watch::Sender<PublisherState>,
    counters: Arc<Counters>,
}

/// What the handles send to the task.
struct Inputs {
    frames: mpsc::Receiver<MediaFrame>,
    headers: watch::Receiver<Option<StreamHeaders>>,
    stop: watch::Receiver<bool>,
}

impl Inputs {
    /// Runs `work` while throwing away frames (nobody can take them yet);
    /// `None` if a stop was requested or every handle is gone.
    async fn discard_frames_until<F: Future>(&mut self, work: F) -> Option<F::Output> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                output = &mut work => return Some(output),
                _ = stop_requested(&mut self.stop) => return None,
                // `None`: every handle is gone.
                frame = self.frames.recv() => { frame?; }
            }
        }
    }
}

impl PublisherTask {
    async fn run(mut self) {
        let url = self.config.url.clone();
        let mut reconnector = Reconnector::new(self.config.reconnect.clone());
        let final_state = loop {
            let attempt = connect_and_publish(&self.config, &self.counters);
            let error = match self.inputs.discard_frames_until(attempt).await {
                None => break PublisherState::Stopped,
                Some(Ok(connection)) => {
                    if reconnector.has_been_live() {
                        self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    reconnector.on_live();
                    tracing::info!(%url, "RTMP publisher live");
                    self.state.send_replace(PublisherState::Live);
                    match self.stream(connection).await {
                        Ok(()) => break PublisherState::Stopped,
                        Err(error) => error,
                    }
                }
                Some(Err(error)) => error,
            };
            *self.counters.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.to_string());
            match reconnector.on_failure(error.failure_kind(), rand::random_range(-1.0..=1.0)) {
                NextStep::GiveUp => {
                    tracing::warn!(%url, %error, "RTMP publisher failed for good");
                    break PublisherState::Failed {
                        reason: error.to_string(),
                    };
                }
                NextStep::RetryAfter { attempt, delay } => {
                    tracing::warn!(%url, %error, attempt, ?delay, "RTMP publisher reconnecting");
                    self.state.send_replace(PublisherState::Reconnecting { attempt });
                    if self
                        .inputs
                        .discard_frames_until(tokio::time::sleep(delay))
                        .await
                        .is_none()
                    {
                        break PublisherState::Stopped;
                    }
                }
            }
        };
        self.state.send_replace(final_state);
    }

    /// Sends frames until a stop (`Ok`) or a failure.
    async fn stream(&mut self, mut connection: Connection) -> Result<(), PublishError> {
        let mut packager = Packager::new();
        if let Some(headers) = self.inputs.headers.borrow_and_update().clone() {
            packager.set_headers(headers);
        }
        loop {
            tokio::select! {
                _ = stop_requested(&mut self.inputs.stop) => break,
                frame = self.inputs.frames.recv() => {
                    let Some(frame) = frame else { break };
                    // The media side sets headers before the keyframe that needs
                    // them, so looking here keeps them in order.
                    if self.inputs.headers.has_changed().unwrap_or(false) {
                        if let Some(headers) = self.inputs.headers.borrow_and_update().clone() {
                            packager.set_headers(headers);
                        }
                    }
                    for tag in packager.package(&frame) {
                        connection.send_tag(tag).await?;
                    }
                }
                read = connection.read() => {
                    for event in connection.process(read?).await? {
                        match event {
                            ClientSessionEvent::UnhandleableOnStatusCode { code } if is_refusal_code(&code) => {
                                return Err(PublishError::Refused { step: SessionStep::Streaming, reason: code });
                            }
                            event => tracing::debug!(?event, "RTMP server event while streaming"),
                        }
                    }
                }
            }
        }
        connection.close().await;
        Ok(())
    }
}

fn is_refusal_code(code: &str) -> bool {
    REFUSAL_CODE_SUFFIXES.iter().any(|suffix| code.ends_with(suffix))
}

/// "code: description" of the first error-level status object in `values`.
pub(super) fn error_status(values: &[Amf0Value]) -> Option<String> {
    values.iter().find_map(|value| {
        let Amf0Value::Object(properties) = value else {
            return None;
        };
        let text = |key: &str| match properties.get(key) {
            Some(Amf0Value::Utf8String(text)) => Some(text.as_str()),
            _ => None,
        };
        // "_error" is what rml_rtmp-based servers put there.
        if !matches!(text("level")?, "error" | "_error") {
            return None;
        }
        let code = text("code").unwrap_or("error");
        Some(match text("description") {
            Some(description) if !description.is_empty() => format!("{code}: {description}"),
            _ => code.to_string(),
        })
    })
}

/// TCP (+TLS), handshake, connect(app), createStream + publish(key, live).
async fn connect_and_publish(config: &PublisherConfig, counters: &Arc<Counters>) -> Result<Connection, PublishError> {
    let url = &config.url;
    let mut stream = transport::connect(url, &config.trust, config.connect_timeout).await?;
    let after_handshake = handshake(&mut stream, PeerType::Client, config.response_timeout).await?;
    let (reader, writer) = tokio::io::split(stream);
    let mut session_config = ClientSessionConfig::new();
    session_config.flash_version = FLASH_VERSION.to_string();
    session_config.tc_url = Some(url.tc_url());
    let (session, results) = ClientSession::new(session_config)?;
    let mut connection = Connection {
        reader,
        writer,
        session,
        step: SessionStep::Connect {
            app: url.app().to_string(),
        },
        read_buffer: vec![0; READ_BUFFER_BYTES],
        write_timeout: config.write_timeout,
        counters: counters.clone(),
    };
    connection.send_results(results).await?;
    let early_results = connection.session.handle_input(&after_handshake)?;
    connection.send_results(early_results).await?;

    let request = connection.session.request_connection(url.app().to_string())?;
    connection.send_results(vec![request]).await?;
    connection
        .await_answer(config.response_timeout, |event| match event {
            ClientSessionEvent::ConnectionRequestAccepted => Some(Ok(())),
            ClientSessionEvent::ConnectionRequestRejected { description } if description.is_empty() => {
                Some(Err("connect rejected without a reason".to_string()))
            }
            ClientSessionEvent::ConnectionRequestRejected { description } => Some(Err(description)),
            _ => None,
        })
        .await?;

    connection.step = SessionStep::Publish;
    let request = connection
        .session
        .request_publishing(url.stream_key().to_string(), PublishRequestType::Live)?;
    connection.send_results(vec![request]).await?;
    connection
        .await_answer(config.response_timeout, |event| match event {
            ClientSessionEvent::PublishRequestAccepted => Some(Ok(())),
            ClientSessionEvent::UnhandleableOnStatusCode { code } if is_refusal_code(&code) => Some(Err(code)),
            _ => None,
        })
        .await?;
    connection.step = SessionStep::Streaming;
    Ok(connection)
}

/// One RTMP connection: the socket halves and the sans-IO client session.
struct Connection {
    reader: ReadHalf<BoxedStream>,
    writer: WriteHalf<BoxedStream>,
    session: ClientSession,
    /// Where the exchange is, to say where a failure happened.
    step: SessionStep,
    read_buffer: Vec<u8>,
    write_timeout: Duration,
    counters: Arc<Counters>,
}

impl Connection {
    /// Reads what the server sent; cancel-safe, so it can sit in a `select!`.
    async fn read(&mut self) -> Result<usize, PublishError> {
        match self.reader.read(&mut self.read_buffer).await {
            Ok(0) => Err(PublishError::Closed {
                step: self.step.clone(),
            }),
            Ok(n) => Ok(n),
            // A reset is a close that left our data unread.
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) =>
            {
                Err(PublishError::Closed {
                    step: self.step.clone(),
                })
            }
            Err(source) => Err(PublishError::Io {
                step: self.step.clone(),
                source,
            }),
        }
    }

    /// Feeds `n` read bytes to the session, sends its replies (acks, pongs)
    /// and returns its events.
    async fn process(&mut self, n: usize) -> Result<Vec<ClientSessionEvent>, PublishError> {
        let results = match self.session.handle_input(&self.read_buffer[..n]) {
            Ok(results) => results,
            Err(ClientSessionError::CreateStreamFailed) => {
                return Err(PublishError::Refused {
                    step: SessionStep::Publish,
                    reason: "createStream refused".to_string(),
                });
            }
            Err(error) => return Err(error.into()),
        };
        self.send_results(results).await
    }

    /// Reads until `decide` accepts or refuses one of the session's events.
    async fn await_answer(
        &mut self,
        timeout: Duration,
        mut decide: impl FnMut(ClientSessionEvent) -> Option<Result<(), String>>,
    ) -> Result<(), PublishError> {
        let deadline = Instant::now() + timeout;
        loop {
            let n = tokio::time::timeout_at(deadline, self.read())
                .await
                .map_err(|_| PublishError::NoAnswer {
                    step: self.step.clone(),
                    timeout,
                })??;
            for event in self.process(n).await? {
                let answer = match event {
                    // An `_error` rml_rtmp could not match to our request (servers
                    // answer publish with transaction id 0) still says no.
                    ClientSessionEvent::UnknownTransactionResultReceived { additional_values, .. } => {
                        error_status(&additional_values).map(Err)
                    }
                    event => decide(event),
                };
                if let Some(answer) = answer {
                    return answer.map_err(|reason| PublishError::Refused {
                        step: self.step.clone(),
                        reason,
                    });
                }
            }
        }
    }

    /// Sends the packets among `results`, returns the events.
    async fn send_results(
        &mut self,
        results: Vec<ClientSessionResult>,
    ) -> Result<Vec<ClientSessionEvent>, PublishError> {
        let mut events = Vec::new();
        for result in results {
            match result {
                ClientSessionResult::OutboundResponse(packet) => self.send(packet).await?,
                ClientSessionResult::RaisedEvent(event) => events.push(event),
                ClientSessionResult::UnhandleableMessageReceived(message) => {
                    tracing::debug!(type_id = message.type_id, "ignoring RTMP message from server");
                }
            }
        }
        Ok(events)
    }

    async fn send_tag(&mut self, tag: FlvTag) -> Result<(), PublishError> {
        let packet = match tag {
            FlvTag::Metadata(metadata) => self.session.publish_metadata(&metadata)?,
            FlvTag::Video { timestamp_ms, body } => {
                self.session
                    .publish_video_data(body, RtmpTimestamp::new(timestamp_ms), false)?
            }
            FlvTag::Audio { timestamp_ms, body } => {
                self.session
                    .publish_audio_data(body, RtmpTimestamp::new(timestamp_ms), false)?
            }
        };
        self.send_results(vec![packet]).await.map(drop)
    }

    async fn send(&mut self, packet: Packet) -> Result<(), PublishError> {
        let write = async {
            self.writer.write_all(&packet.bytes).await?;
            // A no-op on TCP; pushes the records out on TLS.
            self.writer.flush().await
        };
        match tokio::time::timeout(self.write_timeout, write).await {
            Err(_) => Err(PublishError::WriteStalled(self.write_timeout)),
            Ok(Err(source)) => Err(PublishError::Io {
                step: self.step.clone(),
                source,
            }),
            Ok(Ok(())) => {
                self.counters
                    .bytes_sent
                    .fetch_add(packet.bytes.len() as u64, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// Unpublishes (deleteStream) and closes, best effort within CLOSE_TIMEOUT.
    async fn close(mut self) {
        let goodbye = async {
            let results = self.session.stop_publishing()?;
            self.send_results(results).await?;
            self.writer.shutdown().await.map_err(|source| PublishError::Io {
                step: self.step.clone(),
                source,
            })
        };
        match tokio::time::timeout(CLOSE_TIMEOUT, goodbye).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(%error, "RTMP publisher closed uncleanly"),
            Err(_) => tracing::debug!("RTMP publisher gave up waiting to unpublish"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::trust::CertificateProblem;
    use super::*;

    #[test]
    fn refusals_and_rejected_certificates_are_told_from_network_failures() {
        let connect = SessionStep::Connect {
            app: "nosuchapp".into(),
        };
        let kind = |error: PublishError| error.failure_kind();
        assert_eq!(
            kind(PublishError::Closed { step: connect.clone() }),
            FailureKind::Refusal
        );
        assert_eq!(
            kind(PublishError::Closed {
                step: SessionStep::Publish
            }),
            FailureKind::Refusal
        );
        assert_eq!(
            kind(PublishError::Refused {
                step: SessionStep::Publish,
                reason: "NetStream.Publish.BadName".into()
            }),
            FailureKind::Refusal
        );
        assert_eq!(
            kind(PublishError::Transport(TransportError::UntrustedCertificate {
                host: "live.example.com".into(),
                problem: CertificateProblem::Expired { not_after: None },
            })),
            FailureKind::UntrustedCertificate
        );
        assert_eq!(
            kind(PublishError::Transport(TransportError::Tls {
                host: "live.example.com".into(),
                source: io::ErrorKind::ConnectionReset.into(),
            })),
            FailureKind::Network
        );
        assert_eq!(
            kind(PublishError::Closed {
                step: SessionStep::Streaming
            }),
            FailureKind::Network
        );
        assert_eq!(
            kind(PublishError::NoAnswer {
                step: connect,
                timeout: Duration::from_secs(10)
            }),
            FailureKind::Network
        );
        assert_eq!(
            kind(PublishError::Handshake(HandshakeFailure::Closed)),
            FailureKind::Network
        );
        assert_eq!(
            kind(PublishError::WriteStalled(Duration::from_secs(10))),
            FailureKind::Network
        );
    }

    #[test]
    fn error_statuses_are_refusals_and_informational_ones_are_not() {
        for code in [
            "NetStream.Publish.BadName",
            "NetStream.Publish.Denied",
            "NetConnection.Connect.Rejected",
        ] {
            assert!(is_refusal_code(code), "{code}");
        }
        for code in [
            "NetStream.Publish.Start",
            "NetStream.Unpublish.Success",
            "NetStream.Play.PublishNotify",
        ] {
            assert!(!is_refusal_code(code), "{code}");
        }
    }

    #[test]
    fn error_status_objects_give_code_and_description() {
        let status = |level: &str, description: &str| {
            let mut properties = std::collections::HashMap::new();
            properties.insert("level".to_string(), Amf0Value::Utf8String(level.into()));
            properties.insert(
                "code".to_string(),
                Amf0Value::Utf8String("NetStream.Publish.Denied".into()),
            );
            properties.insert("description".to_string(), Amf0Value::Utf8String(description.into()));
            vec![Amf0Value::Null, Amf0Value::Object(properties)]
        };
        assert_eq!(
            error_status(&status("error", "playback only")).as_deref(),
            Some("NetStream.Publish.Denied: playback only")
        );
        assert_eq!(
            error_status(&status("_error", "")).as_deref(),
            Some("NetStream.Publish.Denied")
        );
        assert_eq!(error_status(&status("status", "fine")), None);
    }

    #[test]
    fn a_refusal_names_the_step_and_the_servers_reason() {
        let error = PublishError::Closed {
            step: SessionStep::Connect {
                app: "nosuchapp".into(),
            },
        };
        assert_eq!(
            error.to_string(),
            "the server closed the connection during connect to application \"nosuchapp\""
        );
    }
}
