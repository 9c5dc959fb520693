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
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::config::{PeerConfig, WebRtcConfig};
use super::demux::Routes;
use super::media::{AudioCodec, MediaKind, PeerHandler};
use super::negotiate::{negotiate, video_codec};
use super::offer::{OfferError, plan_offer};
use super::outbox::Outbox;
use super::peer::{Counters, Peer, PeerId, PeerShared, Wake};
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
    wake: Arc<Wake>,
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
        let wake = Arc::new(Wake::default());
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
            next: Instant::now() + IDLE_TICK,
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
            queued: AtomicBool::new(false),
            keyframe_wanted: AtomicBool::new(false),
            estimate_restart: Mutex::default(),
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
    wake: Arc<Wake>,
    stop: CancellationToken,
    stopped: Arc<AtomicBool>,
    peers: Arc<AtomicUsize>,
    sessions: HashMap<PeerId, PeerSession>,
    routes: Routes<PeerId>,
    out: Vec<Datagram>,
    /// The earliest `next_timeout` of any session, or earlier: it only moves
    /// later when the timer fires and every session is looked at.
    next: Instant,
}

impl SocketTask {
    async fn run(mut self) {
        let mut buffer = vec![0u8; RECEIVE_BUFFER_BYTES];
        // No `biased`: under a flood of datagrams the timer and the writers
        // still get their turns.
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => break,
                Some(new_peer) = self.incoming.recv() => {
                    let id = new_peer.session.shared().id;
                    self.routes.add_peer(&new_peer.local_ufrag, id);
                    self.sessions.insert(id, new_peer.session);
                    // Its handle may have been used before it got here, and woken
                    // a task that did not know it yet: serve it now.
                    self.drive(id, |session, out| session.serve_requests(Instant::now(), out));
                }
                received = self.socket.recv_from(&mut buffer) => match received {
                    Ok((n, source)) => self.on_datagram(source, &buffer[..n]),
                    // An ICMP port unreachable from an earlier send surfaces here; the
                    // socket is fine.
                    Err(e) => tracing::debug!("WebRTC socket receive: {e}"),
                },
                _ = self.wake.notified() => {
                    let now = Instant::now();
                    for id in self.wake.take_ready() {
                        self.drive(id, |session, out| session.serve_requests(now, out));
                    }
                }
                _ = tokio::time::sleep_until(self.next.into()) => {
                    let now = Instant::now();
                    let due: Vec<PeerId> =
                        self.sessions.iter().filter(|(_, s)| s.next_timeout() <= now).map(|(id, _)| *id).collect();
                    for id in due {
                        self.drive(id, |session, out| session.handle_timeout(now, out));
                    }
                    let earliest = self.sessions.values().map(PeerSession::next_timeout).min();
                    self.next = earliest.unwrap_or(now + IDLE_TICK);
                }
            }
            self.flush().await;
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

    /// After a session was driven: forget it if it ended, else note its timeout.
    fn touched(&mut self, id: PeerId) {
        let Some(session) = self.sessions.get(&id) else { return };
        if session.is_ended() {
            self.sessions.remove(&id);
            self.routes.remove_peer(id);
            self.peers.fetch_sub(1, Ordering::Relaxed);
        } else {
            self.next = self.next.min(session.next_timeout());
        }
    }

    fn on_datagram(&mut self, source: SocketAddr, datagram: &[u8]) {
        let now = Instant::now();
        let routed = self
            .routes
            .route(source, datagram)
            .filter(|id| self.sessions.get(id).is_some_and(|s| s.accepts(now, source, datagram)));
        let id = match routed {
            Some(id) => id,
            // An address the table has not seen, with no ufrag to go by: ask
            // each peer's str0m (it knows the addresses its ICE validated).
            // Rare: a browser's first packet from an address is a STUN check.
            None => match self.sessions.iter().find(|(_, s)| s.accepts(now, source, datagram)) {
                Some((id, _)) => *id,
                None => {
                    tracing::trace!(%source, "WebRTC datagram for no peer");
                    return;
                }
            },
        };
        self.routes.learn(source, id);
        self.drive(id, |session, out| session.handle_datagram(now, source, datagram, out));
    }

    /// Runs `step` on one session, then `touched`. A panic in it (a str0m bug,
    /// or the peer's handler) ends that peer alone; every other peer goes on.
    fn drive(&mut self, id: PeerId, step: impl FnOnce(&mut PeerSession, &mut Vec<Datagram>)) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        let out = &mut self.out;
        if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| step(session, out))) {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_string());
            session.abandon(&what);
        }
        self.touched(id);
    }

    async fn flush(&mut self) {
        for datagram in self.out.drain(..) {
            if let Err(e) = self.socket.send_to(&datagram.contents, datagram.destination).await {
                tracing::debug!(destination = %datagram.destination, "WebRTC socket send: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The server over real UDP on 127.0.0.1 against str0m clients (full ICE,
    //! as a browser is): each client runs on its own thread with its own
    //! socket, so everything the server does is what it would do for browsers.

    use super::*;
    use crate::webrtc::media::PeerEvent;
    use bytes::Bytes;
    use std::net::{Ipv4Addr, UdpSocket as StdUdpSocket};
    use std::thread::{self, JoinHandle};
    use str0m::change::{SdpAnswer, SdpPendingOffer};
    use str0m::format::Codec as Str0mCodec;
    use str0m::media::{Direction, KeyframeRequestKind, MediaKind as Str0mKind, MediaTime, Mid};
    use str0m::net::{Protocol, Receive};
    use str0m::{Candidate, Event, Input, Output, Rtc};

    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    /// Connecting on loopback takes tens of milliseconds; this is plenty.
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    const MEDIA_TIMEOUT: Duration = Duration::from_secs(5);
    /// One Opus packet's worth of time.
    const PACKET_TIME: Duration = Duration::from_millis(20);
    const POLL: Duration = Duration::from_millis(5);

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime")
    }

    fn server(runtime: &tokio::runtime::Runtime, connect_timeout: Duration) -> WebRtcServer {
        let _entered = runtime.enter();
        let mut config = WebRtcConfig::new(SocketAddr::new(LOOPBACK, 0), LOOPBACK);
        config.connect_timeout = connect_timeout;
        WebRtcServer::start_with(config).expect("the server starts")
    }

    /// Every event of one server-side peer.
    fn recorder() -> (PeerHandler, Arc<Mutex<Vec<PeerEvent>>>) {
        let events: Arc<Mutex<Vec<PeerEvent>>> = Arc::default();
        let log = events.clone();
        (Arc::new(move |e| log.lock().unwrap().push(e)), events)
    }

    fn wait(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !done() {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}"
            );
            thread::sleep(POLL);
        }
    }

    /// A str0m client offering to send and receive audio, before it runs.
    struct Offerer {
        rtc: Rtc,
        socket: StdUdpSocket,
        pending: SdpPendingOffer,
        audio: Mid,
        /// A video m-line the client only receives on.
        video: Option<Mid>,
        offer: String,
    }

    fn offerer() -> Offerer {
        offerer_with(false)
    }

    fn offerer_with(video: bool) -> Offerer {
        let socket = StdUdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let mut rtc = Rtc::new(Instant::now());
        rtc.add_local_candidate(Candidate::host(socket.local_addr().unwrap(), "udp").unwrap());
        let mut change = rtc.sdp_api();
        let audio = change.add_media(Str0mKind::Audio, Direction::SendRecv, None, None, None);
        let video = video.then(|| change.add_media(Str0mKind::Video, Direction::RecvOnly, None, None, None));
        let (offer, pending) = change.apply().expect("an offer");
        Offerer {
            rtc,
            socket,
            pending,
            audio,
            video,
            offer: offer.to_sdp_string(),
        }
    }

    /// A running client: sends `payload` as Opus every 20 ms once connected,
    /// and keeps every audio payload it receives.
    struct Client {
        stop: Arc<AtomicBool>,
        connected: Arc<AtomicBool>,
        /// Set to have the client send a PLI for the video it receives.
        pli: Arc<AtomicBool>,
        received: Arc<Mutex<Vec<Vec<u8>>>>,
        thread: Option<JoinHandle<()>>,
    }

    impl Client {
        fn run(mut offerer: Offerer, answer: &str, payload: &'static [u8]) -> Client {
            let answer = SdpAnswer::from_sdp_string(answer).expect("the answer parses");
            offerer
                .rtc
                .sdp_api()
                .accept_answer(offerer.pending, answer)
                .expect("the answer is accepted");
            let stop = Arc::new(AtomicBool::new(false));
            let connected: Arc<AtomicBool> = Arc::default();
            let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
            let (stopping, connected_flag, log) = (stop.clone(), Arc::clone(&connected), Arc::clone(&received));
            let pli: Arc<AtomicBool> = Arc::default();
            let pli_wanted = pli.clone();
            let thread = thread::spawn(move || {
                let (mut rtc, socket, mid) = (offerer.rtc, offerer.socket, offerer.audio);
                let video = offerer.video;
                let local = socket.local_addr().unwrap();
                let mut buffer = vec![0u8; 2048];
                let (start, mut sent) = (Instant::now(), 0u64);
                while !stopping.load(Ordering::Relaxed) {
                    let timeout = loop {
                        match rtc.poll_output().expect("the client polls") {
                            Output::Timeout(t) => break t,
                            Output::Transmit(t) => {
                                let _ = socket.send_to(&t.contents, t.destination);
                            }
                            Output::Event(Event::Connected) => connected_flag.store(true, Ordering::Relaxed),
                            Output::Event(Event::MediaData(data)) => log.lock().unwrap().push(data.data.to_vec()),
                            Output::Event(_) => {}
                        }
                    };
                    let now = Instant::now();
                    if let Some(video) = video
                        && pli_wanted.load(Ordering::Relaxed)
                    {
                        // Possible once video has arrived (str0m then has a receive stream).
                        let requested = rtc
                            .writer(video)
                            .map(|mut w| w.request_keyframe(None, KeyframeRequestKind::Pli));
                        if matches!(requested, Some(Ok(()))) {
                            pli_wanted.store(false, Ordering::Relaxed);
                            continue; // drain after the mutation
                        }
                    }
                    if connected_flag.load(Ordering::Relaxed) && now >= start + PACKET_TIME * sent as u32 {
                        let writer = rtc.writer(mid).expect("the audio m-line");
                        let pt = writer
                            .payload_params()
                            .find(|p| p.spec().codec == Str0mCodec::Opus)
                            .unwrap()
                            .pt();
                        let time = MediaTime::from_millis(sent * 20);
                        writer.write(pt, now, time, payload).expect("the client writes");
                        sent += 1;
                        continue; // drain after the mutation
                    }
                    let wait = timeout
                        .saturating_duration_since(now)
                        .clamp(Duration::from_millis(1), POLL);
                    socket.set_read_timeout(Some(wait)).unwrap();
                    let input = match socket.recv_from(&mut buffer) {
                        Ok((n, source)) => Input::Receive(
                            Instant::now(),
                            Receive {
                                proto: Protocol::Udp,
                                source,
                                destination: local,
                                contents: buffer[..n].try_into().unwrap(),
                            },
                        ),
                        Err(_) => Input::Timeout(Instant::now()),
                    };
                    rtc.handle_input(input).expect("the client takes input");
                }
            });
            Client {
                stop,
                connected,
                pli,
                received,
                thread: Some(thread),
            }
        }

        fn received(&self) -> Vec<Vec<u8>> {
            self.received.lock().unwrap().clone()
        }
    }

    impl Drop for Client {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    fn connected(events: &Mutex<Vec<PeerEvent>>) -> bool {
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, PeerEvent::Connected { .. }))
    }

    fn media_in(events: &Mutex<Vec<PeerEvent>>) -> Vec<Bytes> {
        let events = events.lock().unwrap();
        events
            .iter()
            .filter_map(|e| {
                if let PeerEvent::MediaIn { data, .. } = e {
                    Some(data.clone())
                } else {
                    None
                }
            })
            .collect()
    }

    fn disconnected(events: &Mutex<Vec<PeerEvent>>) -> Option<String> {
        let events = events.lock().unwrap();
        events.iter().find_map(|e| {
            if let PeerEvent::Disconnected { reason } = e {
                Some(reason.clone())
            } else {
                None
            }
        })
    }

    #[test]
    fn two_peers_on_one_socket_each_get_only_their_own_media_both_ways() {
        let runtime = runtime();
        let server = server(&runtime, CONNECT_TIMEOUT);
        let (mut clients, mut peers) = (Vec::new(), Vec::new());
        for payload in [&b"from-a"[..], &b"from-b"[..]] {
            let offerer = offerer();
            let (handler, events) = recorder();
            let (answer, peer) = server
                .accept_offer(&offerer.offer, PeerConfig::guest(), handler)
                .unwrap();
            assert!(answer.contains("a=ice-lite"), "an ICE-lite answer: {answer}");
            assert!(answer.contains("a=fingerprint:sha-256"), "a DTLS fingerprint: {answer}");
            let port = server.local_addr().port();
            assert!(
                answer.contains(&format!("127.0.0.1 {port} typ host")),
                "our host candidate: {answer}"
            );
            assert_eq!(peer.audio_codec(), Some(AudioCodec::Opus));
            let opus_fmtp = answer.lines().find(|l| l.starts_with("a=fmtp:111 ")).unwrap_or_default();
            assert!(opus_fmtp.contains("usedtx=1"), "the answer asks for DTX: {answer}");
            clients.push(Client::run(offerer, &answer, payload));
            peers.push((peer, events));
        }
        assert_eq!(server.peer_count(), 2);
        for (n, (_, events)) in peers.iter().enumerate() {
            wait(&format!("peer {n} to connect"), CONNECT_TIMEOUT, || connected(events));
        }
        // Tutti writes to each peer from a plain thread, as GStreamer would.
        for (n, (peer, _)) in peers.iter().enumerate() {
            for i in 0..10u32 {
                let tag = if n == 0 { "to-a" } else { "to-b" };
                peer.write_audio(Bytes::from(format!("{tag}-{i}")), PACKET_TIME * i, Instant::now());
            }
        }
        for (n, client) in clients.iter().enumerate() {
            wait(&format!("client {n} to get its audio"), MEDIA_TIMEOUT, || {
                client.received().len() >= 5
            });
        }
        for (n, (_, events)) in peers.iter().enumerate() {
            wait(&format!("peer {n} to hear its client"), MEDIA_TIMEOUT, || {
                media_in(events).len() >= 5
            });
        }
        let tag = |payloads: Vec<Vec<u8>>| -> Vec<String> {
            let mut tags: Vec<String> = payloads
                .iter()
                .map(|p| String::from_utf8_lossy(&p[..4]).into())
                .collect();
            tags.dedup();
            tags
        };
        assert_eq!(tag(clients[0].received()), ["to-a"]);
        assert_eq!(tag(clients[1].received()), ["to-b"]);
        for ((_, events), expected) in peers.iter().zip([&b"from-a"[..], &b"from-b"[..]]) {
            let heard = media_in(events);
            assert!(!heard.is_empty() && heard.iter().all(|p| p == expected), "{heard:?}");
        }
        let stats = peers[0].0.stats();
        assert!(stats.audio.frames_out >= 5 && stats.audio.frames_in >= 5, "{stats:?}");
        assert!(clients.iter().all(|c| c.connected.load(Ordering::Relaxed)));
    }

    #[test]
    fn a_pli_from_the_remote_reaches_the_handler_as_keyframe_requested() {
        let runtime = runtime();
        let server = server(&runtime, CONNECT_TIMEOUT);
        let offerer = offerer_with(true);
        let (handler, events) = recorder();
        let (answer, peer) = server
            .accept_offer(&offerer.offer, PeerConfig::guest(), handler)
            .unwrap();
        assert_eq!(
            peer.video_codec(),
            Some(crate::webrtc::VideoCodec::Vp8),
            "the first of our codecs"
        );
        let client = Client::run(offerer, &answer, b"x");
        wait("the peer to connect", CONNECT_TIMEOUT, || connected(&events));
        let requests = || {
            events
                .lock()
                .unwrap()
                .iter()
                .filter(|e| matches!(e, PeerEvent::KeyframeRequested))
                .count()
        };
        let on_connect = requests();
        assert_eq!(on_connect, 1, "connecting asks the encoder for a keyframe once");
        client.pli.store(true, Ordering::Relaxed);
        // Video for the client to ask a keyframe of, at 30 fps, until it has.
        let deadline = Instant::now() + MEDIA_TIMEOUT;
        let mut frame = 0u32;
        while peer.stats().keyframe_requests_in == 0 {
            assert!(Instant::now() < deadline, "no PLI arrived: {:?}", peer.stats());
            peer.write_video(
                Bytes::from_static(b"\x10\x02\x00\x9d\x01\x2a frame"),
                Duration::from_millis(33) * frame,
                true,
                Instant::now(),
            );
            frame += 1;
            thread::sleep(Duration::from_millis(33));
        }
        wait("KeyframeRequested for the PLI", MEDIA_TIMEOUT, || {
            requests() > on_connect
        });
    }

    #[test]
    fn a_handler_that_panics_ends_its_own_peer_and_no_other() {
        let runtime = runtime();
        let server = server(&runtime, CONNECT_TIMEOUT);
        let (steady, steady_events) = recorder();
        let (_, panicky_events) = recorder();
        let log = panicky_events.clone();
        let panicky: PeerHandler = Arc::new(move |event| {
            let connected = matches!(event, PeerEvent::Connected { .. });
            log.lock().unwrap().push(event);
            assert!(!connected, "a handler bug on Connected");
        });
        let (mut clients, mut peers) = (Vec::new(), Vec::new());
        for handler in [panicky, steady] {
            let offerer = offerer();
            let (answer, peer) = server
                .accept_offer(&offerer.offer, PeerConfig::guest(), handler)
                .unwrap();
            clients.push(Client::run(offerer, &answer, b"steady"));
            peers.push(peer);
        }
        wait("the panicking peer to end", CONNECT_TIMEOUT, || {
            disconnected(&panicky_events).is_some()
        });
        let reason = disconnected(&panicky_events).unwrap();
        assert!(reason.contains("a handler bug on Connected"), "{reason}");
        assert!(peers[0].is_closed());
        wait("the other peer to connect and hear its client", MEDIA_TIMEOUT, || {
            connected(&steady_events) && !media_in(&steady_events).is_empty()
        });
        assert_eq!(disconnected(&steady_events), None);
        wait("the server to free the panicked peer", CONNECT_TIMEOUT, || {
            server.peer_count() == 1
        });
    }

    #[test]
    fn a_peer_that_never_connects_is_disconnected_after_the_connect_timeout_and_freed() {
        let runtime = runtime();
        let server = server(&runtime, Duration::from_millis(300));
        let offerer = offerer(); // never runs: no ICE check ever arrives
        let (handler, events) = recorder();
        let (_, peer) = server
            .accept_offer(&offerer.offer, PeerConfig::guest(), handler)
            .unwrap();
        wait("the connect timeout", CONNECT_TIMEOUT, || {
            disconnected(&events).is_some()
        });
        let reason = disconnected(&events).unwrap();
        assert!(reason.starts_with("no ICE and DTLS connection in time"), "{reason}");
        assert!(peer.is_closed());
        wait("the server to free the peer", CONNECT_TIMEOUT, || {
            server.peer_count() == 0
        });
        peer.write_audio(Bytes::from_static(b"late"), Duration::ZERO, Instant::now());
        assert_eq!(
            peer.stats().audio.frames_dropped,
            0,
            "a write to a closed peer is not a drop"
        );
    }

    #[test]
    fn stopping_the_server_disconnects_every_peer_and_refuses_new_offers() {
        let runtime = runtime();
        let server = server(&runtime, CONNECT_TIMEOUT);
        let offerer = offerer();
        let (handler, events) = recorder();
        let (answer, _peer) = server
            .accept_offer(&offerer.offer, PeerConfig::guest(), handler.clone())
            .unwrap();
        let _client = Client::run(offerer, &answer, b"x");
        wait("the peer to connect", CONNECT_TIMEOUT, || connected(&events));
        assert!(
            runtime.block_on(server.shutdown_and_wait(Duration::from_secs(2))),
            "the task ends in time"
        );
        assert_eq!(disconnected(&events).as_deref(), Some("the WebRTC server stopped"));
        assert_eq!(server.peer_count(), 0);
        let error = server.accept_offer(
            &crate::webrtc::server::tests::offerer().offer,
            PeerConfig::guest(),
            handler,
        );
        assert!(matches!(error, Err(OfferError::ServerStopped)), "{error:?}");
    }

    #[test]
    fn offers_beyond_the_peer_limit_are_refused_and_a_freed_slot_is_reused() {
        let runtime = runtime();
        let _entered = runtime.enter();
        let mut config = WebRtcConfig::new(SocketAddr::new(LOOPBACK, 0), LOOPBACK);
        config.max_peers = 1;
        let server = WebRtcServer::start_with(config).unwrap();
        let (handler, _) = recorder();
        let (_, first) = server
            .accept_offer(&offerer().offer, PeerConfig::guest(), handler.clone())
            .unwrap();
        let refused = server.accept_offer(&offerer().offer, PeerConfig::guest(), handler.clone());
        assert!(matches!(refused, Err(OfferError::TooManyPeers(1))), "{refused:?}");
        first.close();
        wait("the first peer to be freed", CONNECT_TIMEOUT, || {
            server.peer_count() == 0
        });
        assert!(
            server
                .accept_offer(&offerer().offer, PeerConfig::guest(), handler)
                .is_ok()
        );
    }

    #[test]
    fn a_garbled_offer_is_refused_before_any_state_is_made() {
        let runtime = runtime();
        let server = server(&runtime, CONNECT_TIMEOUT);
        let (handler, _) = recorder();
        let error = server
            .accept_offer("v=0\r\nhello\r\n", PeerConfig::guest(), handler)
            .unwrap_err();
        assert!(matches!(error, OfferError::Unparsable(_)), "{error:?}");
        assert_eq!(server.peer_count(), 0);
    }

    #[test]
    fn starting_outside_a_tokio_runtime_says_so() {
        let error = WebRtcServer::start(SocketAddr::new(LOOPBACK, 0), LOOPBACK)
            .err()
            .unwrap();
        assert!(matches!(error, StartError::NoRuntime), "{error:?}");
    }
}
