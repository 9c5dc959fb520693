//! [`WebRtcServer`]: one UDP socket, one tokio task, every peer.
//!
//! ```text
//!  engine / API thread ── accept_offer(sdp) ─► plan_offer ─► negotiate (str0m, in the caller)
//!        ◄── (answer SDP, Peer) ──────────────────────────────────┘ └─► NewPeer ─┐
//!                                                                                ▼
//!  UDP socket ─► recv ─► Routes (ufrag, address) ─► PeerSession ─► handler(PeerEvent)
//!       ▲                                              │  ▲
//!       └──────────── send ◄── Datagram ◄─────────────┘  └── wake: Peer writes, requests
//! ```
//!
//! `accept_offer` does its str0m work (certificate, SDP) on the calling
//! thread and hands the finished instance to the task without waiting for
//! it: a std thread (the engine), a GStreamer thread or async code can all
//! call it, it never blocks on the task, and a stalled task cannot stall the
//! caller. The browser's first STUN may beat the instance to the task; ICE
//! retransmits it within 50-500 ms.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::config::{PeerConfig, WebRtcConfig};
use super::demux::Routes;
use super::media::{AudioCodec, MediaKind, PeerHandler};
use super::negotiate::{negotiate, video_codec};
use super::offer::{OfferError, plan_offer};
use super::outbox::Outbox;
use super::peer::{Counters, Peer, PeerId, PeerShared};
use super::session::{Datagram, PeerSession};

/// Big enough for any datagram a browser sends: WebRTC keeps packets under
/// about 1200 bytes of payload, DTLS flights under the path MTU.
const RECEIVE_BUFFER_BYTES: usize = 2048;
/// How long the task sleeps with no peer timeout pending.
const IDLE_TICK: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("binding the WebRTC UDP socket on {bind}: {source}")]
    Bind { bind: SocketAddr, source: io::Error },
    #[error("the WebRTC server needs a tokio runtime to run its socket task in")]
    NoRuntime,
}

struct NewPeer {
    session: PeerSession,
    local_ufrag: String,
}

/// The WebRTC transport: answers offers and runs every peer's media over one
/// UDP socket. Dropping it (or [`WebRtcServer::shutdown`]) stops the task,
/// which closes every peer with `Disconnected`.
pub struct WebRtcServer {
    config: WebRtcConfig,
    local: SocketAddr,
    advertised: SocketAddr,
    new_peers: mpsc::UnboundedSender<NewPeer>,
    wake: Arc<Notify>,
    stop: CancellationToken,
    stopped: Arc<AtomicBool>,
    peers: Arc<AtomicUsize>,
    next_id: AtomicU64,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl WebRtcServer {
    /// Binds `bind` and spawns the socket task on the current tokio runtime;
    /// browsers are told to reach us at `public_ip` and the bound port.
    pub fn start(bind: SocketAddr, public_ip: IpAddr) -> Result<WebRtcServer, StartError> {
        WebRtcServer::start_with(WebRtcConfig::new(bind, public_ip))
    }

    pub fn start_with(config: WebRtcConfig) -> Result<WebRtcServer, StartError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
        let bind = config.bind;
        let std_socket = std::net::UdpSocket::bind(bind).map_err(|source| StartError::Bind { bind, source })?;
        std_socket
            .set_nonblocking(true)
            .map_err(|source| StartError::Bind { bind, source })?;
        let local = std_socket
            .local_addr()
            .map_err(|source| StartError::Bind { bind, source })?;
        let socket = {
            let _entered = runtime.enter();
            UdpSocket::from_std(std_socket).map_err(|source| StartError::Bind { bind, source })?
        };
        let advertised = config
            .advertised
            .unwrap_or(SocketAddr::new(config.public_ip, local.port()));
        let (new_peers, incoming) = mpsc::unbounded_channel();
        let wake = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let stopped = Arc::new(AtomicBool::new(false));
        let peers = Arc::new(AtomicUsize::new(0));
        let task = SocketTask {
            socket,
            advertised,
            incoming,
            wake: wake.clone(),
            stop: stop.clone(),
            stopped: stopped.clone(),
            peers: peers.clone(),
            sessions: HashMap::new(),
            routes: Routes::new(),
            out: Vec::new(),
        };
        let task = runtime.spawn(task.run());
        tracing::info!(%local, %advertised, "WebRTC server listening");
        Ok(WebRtcServer {
            config,
            local,
            advertised,
            new_peers,
            wake,
            stop,
            stopped,
            peers,
            next_id: AtomicU64::new(1),
            task: Mutex::new(Some(task)),
        })
    }

    /// The bound socket's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The address answers announce as our ICE candidate.
    pub fn advertised_addr(&self) -> SocketAddr {
        self.advertised
    }

    /// Peers answered and not yet disconnected.
    pub fn peer_count(&self) -> usize {
        self.peers.load(Ordering::Relaxed)
    }

    /// Answers a browser's offer. Callable from any thread, async or not: the
    /// SDP and DTLS setup run here (a few milliseconds), then the peer goes to
    /// the socket task without waiting for it. `on_event` is called from the
    /// socket task for everything that happens to the peer afterwards.
    pub fn accept_offer(
        &self,
        offer_sdp: &str,
        peer_config: PeerConfig,
        on_event: PeerHandler,
    ) -> Result<(String, Peer), OfferError> {
        if self.stopped.load(Ordering::Relaxed) {
            return Err(OfferError::ServerStopped);
        }
        let plan = plan_offer(offer_sdp, &peer_config)?;
        let max = self.config.max_peers;
        self.peers
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < max).then_some(n + 1))
            .map_err(|_| OfferError::TooManyPeers(max))?;
        let now = Instant::now();
        let negotiated = match negotiate(&plan, &peer_config, self.advertised, now) {
            Ok(negotiated) => negotiated,
            Err(e) => {
                self.peers.fetch_sub(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let sends_audio = negotiated
            .tracks
            .iter()
            .any(|t| t.kind == MediaKind::Audio && t.send.is_some());
        let shared = Arc::new(PeerShared {
            id,
            outbox: Mutex::new(Outbox::new(self.config.outbox_frames)),
            wake: self.wake.clone(),
            keyframe_wanted: AtomicBool::new(false),
            close_wanted: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            video_codec: video_codec(&negotiated.tracks),
            audio_codec: sends_audio.then_some(AudioCodec::Opus),
            counters: Counters::default(),
        });
        let session = PeerSession::new(
            negotiated.rtc,
            shared.clone(),
            on_event,
            negotiated.tracks,
            self.advertised,
            now,
            self.config.connect_timeout,
        );
        let new_peer = NewPeer {
            session,
            local_ufrag: negotiated.local_ufrag,
        };
        if self.new_peers.send(new_peer).is_err() {
            self.peers.fetch_sub(1, Ordering::Relaxed);
            return Err(OfferError::ServerStopped);
        }
        tracing::info!(peer = id, ?peer_config, "WebRTC offer answered");
        Ok((negotiated.answer, Peer { shared }))
    }

    /// Stops the socket task; every peer gets `Disconnected`. Returns at once.
    pub fn shutdown(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.stop.cancel();
    }

    /// Stops the socket task and waits up to `timeout` for it to finish
    /// closing its peers. Whether it finished in time.
    pub async fn shutdown_and_wait(&self, timeout: Duration) -> bool {
        self.shutdown();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        match task {
            Some(task) => tokio::time::timeout(timeout, task).await.is_ok(),
            None => true,
        }
    }
}

impl Drop for WebRtcServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The one task that owns the socket and every [`PeerSession`].
struct SocketTask {
    socket: UdpSocket,
    advertised: SocketAddr,
    incoming: mpsc::UnboundedReceiver<NewPeer>,
    wake: Arc<Notify>,
    stop: CancellationToken,
    stopped: Arc<AtomicBool>,
    peers: Arc<AtomicUsize>,
    sessions: HashMap<PeerId, PeerSession>,
    routes: Routes<PeerId>,
    out: Vec<Datagram>,
}

impl SocketTask {
    async fn run(mut self) {
        let mut buffer = vec![0u8; RECEIVE_BUFFER_BYTES];
        loop {
            let now = Instant::now();
            let next = self
                .sessions
                .values()
                .map(PeerSession::next_timeout)
                .min()
                .unwrap_or(now + IDLE_TICK);
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => break,
                Some(new_peer) = self.incoming.recv() => {
                    let id = new_peer.session.shared().id;
                    self.routes.add_peer(&new_peer.local_ufrag, id);
                    self.sessions.insert(id, new_peer.session);
                }
                received = self.socket.recv_from(&mut buffer) => match received {
                    Ok((n, source)) => self.on_datagram(source, &buffer[..n]),
                    // An ICMP port unreachable from an earlier send surfaces here; the
                    // socket is fine.
                    Err(e) => tracing::debug!("WebRTC socket receive: {e}"),
                },
                _ = self.wake.notified() => {
                    let now = Instant::now();
                    for session in self.sessions.values_mut() {
                        session.serve_requests(now, &mut self.out);
                    }
                }
                _ = tokio::time::sleep_until(next.into()) => {
                    let now = Instant::now();
                    for session in self.sessions.values_mut().filter(|s| s.next_timeout() <= now) {
                        session.handle_timeout(now, &mut self.out);
                    }
                }
            }
            self.flush().await;
            self.forget_ended();
        }
        self.stopped.store(true, Ordering::Relaxed);
        self.incoming.close();
        let now = Instant::now();
        for session in self.sessions.values_mut() {
            session.shut_down(now, &mut self.out);
        }
        // Sessions still arriving were answered but never ran: end them too.
        while let Ok(mut new_peer) = self.incoming.try_recv() {
            new_peer.session.shut_down(now, &mut self.out);
        }
        self.flush().await;
        self.peers.store(0, Ordering::Relaxed);
        tracing::info!(advertised = %self.advertised, "WebRTC server stopped");
    }

    fn on_datagram(&mut self, source: SocketAddr, datagram: &[u8]) {
        let now = Instant::now();
        let routed = self
            .routes
            .route(source, datagram)
            .filter(|id| self.sessions.get(id).is_some_and(|s| s.accepts(now, source, datagram)));
        let id = match routed {
            Some(id) => id,
            None => {
                // An address str0m validated but the table has not seen yet (the
                // browser's DTLS after its STUN): ask each peer once, then remember.
                let found = self
                    .sessions
                    .iter()
                    .find(|(_, s)| s.accepts(now, source, datagram))
                    .map(|(id, _)| *id);
                let Some(id) = found else {
                    tracing::trace!(%source, "WebRTC datagram for no peer");
                    return;
                };
                self.routes.learn(source, id);
                id
            }
        };
        if let Some(session) = self.sessions.get_mut(&id) {
            session.handle_datagram(now, source, datagram, &mut self.out);
        }
    }

    async fn flush(&mut self) {
        for datagram in self.out.drain(..) {
            if let Err(e) = self.socket.send_to(&datagram.contents, datagram.destination).await {
                tracing::debug!(destination = %datagram.destination, "WebRTC socket send: {e}");
            }
        }
    }

    fn forget_ended(&mut self) {
        let ended: Vec<PeerId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.is_ended())
            .map(|(id, _)| *id)
            .collect();
        for id in ended {
            self.sessions.remove(&id);
            self.routes.remove_peer(id);
            self.peers.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
