//! [`Peer`]: the cheap, cloneable handle the media side holds for one browser.
//! Writes go to the peer's [`Outbox`] and wake the socket task; nothing here
//! waits for the task, so a GStreamer streaming thread may call it.
//!
//! ```text
//!  appsink thread ─► peer.write_video(frame) ─► Outbox (mutex, bounded) ─┐
//!  engine thread ─► peer.request_keyframe() / close() ─► flags ──────────┤ wake: ready list + Notify
//!                                                                         ▼
//!                                                   socket task: str0m, UDP
//!  peer.stats() ◄── counters (atomics) ◄────────────────────────────────┘
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::Notify;

use super::media::{AudioCodec, MediaKind, VideoCodec};
use super::outbox::{OutFrame, Outbox, Push};

/// A peer's number within its server, for logs and the server's tables.
pub type PeerId = u64;

/// What one media kind has moved, as the counters stood when read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindStats {
    /// RTP packets and their bytes from the browser, retransmissions included
    /// (str0m's receive statistics, updated every second).
    pub packets_in: u64,
    pub bytes_in: u64,
    /// Depacketized frames handed to the handler as `MediaIn`.
    pub frames_in: u64,
    /// RTP packets and bytes sent to the browser (str0m, every second).
    pub packets_out: u64,
    pub bytes_out: u64,
    /// Frames the writer handed over that reached the socket task.
    pub frames_out: u64,
    /// Frames the writer handed over that were dropped: the outbox was full
    /// (or it was a video delta waiting for a keyframe after such a drop), or
    /// the browser could not take them yet (not connected, or video before
    /// the first keyframe).
    pub frames_dropped: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    pub audio: KindStats,
    pub video: KindStats,
    /// NACKs we sent for packets lost on the way from the browser.
    pub nacks_sent: u64,
    /// NACKs the browser sent for packets of ours it lost.
    pub nacks_received: u64,
    /// RTX packets from the browser: retransmissions we asked for, and the
    /// padding and payload probes its bandwidth estimator sends on RTX.
    pub rtx_in: u64,
    /// RTX packets we sent: retransmissions and str0m's probes.
    pub rtx_out: u64,
    /// PLIs and FIRs from the browser for our video.
    pub keyframe_requests_in: u64,
    /// PLIs we sent for the browser's video.
    pub keyframe_requests_out: u64,
    /// When the last datagram from this browser arrived.
    pub last_packet_in: Option<SystemTime>,
}

#[derive(Debug, Default)]
pub(crate) struct KindCounters {
    pub packets_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub frames_in: AtomicU64,
    pub packets_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub frames_out: AtomicU64,
    pub frames_dropped: AtomicU64,
}

impl KindCounters {
    fn read(&self) -> KindStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        KindStats {
            packets_in: get(&self.packets_in),
            bytes_in: get(&self.bytes_in),
            frames_in: get(&self.frames_in),
            packets_out: get(&self.packets_out),
            bytes_out: get(&self.bytes_out),
            frames_out: get(&self.frames_out),
            frames_dropped: get(&self.frames_dropped),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub audio: KindCounters,
    pub video: KindCounters,
    pub nacks_sent: AtomicU64,
    pub nacks_received: AtomicU64,
    pub rtx_in: AtomicU64,
    pub rtx_out: AtomicU64,
    pub keyframe_requests_in: AtomicU64,
    pub keyframe_requests_out: AtomicU64,
    /// Milliseconds since the Unix epoch; 0 until the first datagram.
    pub last_packet_in_ms: AtomicU64,
}

impl Counters {
    pub fn kind(&self, kind: MediaKind) -> &KindCounters {
        match kind {
            MediaKind::Audio => &self.audio,
            MediaKind::Video => &self.video,
        }
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set(counter: &AtomicU64, n: u64) {
        counter.store(n, Ordering::Relaxed);
    }

    pub fn packet_in_now(&self) {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Counters::set(&self.last_packet_in_ms, ms);
    }
}

/// How handles wake the socket task: the peers with something to do, and one
/// notification for all of them, so the task serves only those peers.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    notify: Notify,
    ready: Mutex<Vec<PeerId>>,
}

impl Wake {
    /// Puts `peer` on the ready list (once until the task takes it) and wakes the task.
    fn peer(&self, peer: &PeerShared) {
        if !peer.queued.swap(true, Ordering::AcqRel) {
            self.ready.lock().unwrap_or_else(|e| e.into_inner()).push(peer.id);
            self.notify.notify_one();
        }
    }

    pub async fn notified(&self) {
        self.notify.notified().await;
    }

    /// The peers put on the list since the last call.
    pub fn take_ready(&self) -> Vec<PeerId> {
        std::mem::take(&mut *self.ready.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// See [`Peer::retarget_bandwidth_estimate`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct EstimateRestart {
    pub from_kbps: Option<u64>,
    pub probe_to_kbps: u64,
}

/// The state a [`Peer`] handle shares with the socket task.
#[derive(Debug)]
pub(crate) struct PeerShared {
    pub id: PeerId,
    pub outbox: Mutex<Outbox>,
    pub wake: Arc<Wake>,
    /// On the wake's ready list; the task clears it before serving the peer.
    pub queued: AtomicBool,
    pub keyframe_wanted: AtomicBool,
    /// A restart of the bandwidth estimate asked for, not yet applied.
    pub estimate_restart: Mutex<Option<EstimateRestart>>,
    pub close_wanted: AtomicBool,
    pub closed: AtomicBool,
    pub video_codec: Option<VideoCodec>,
    pub audio_codec: Option<AudioCodec>,
    pub counters: Counters,
}

/// One browser, as the media side sees it. Clones share the peer; dropping
/// every clone does not end it (`close` does, or the browser leaving).
#[derive(Clone, Debug)]
pub struct Peer {
    pub(crate) shared: Arc<PeerShared>,
}

impl Peer {
    pub fn id(&self) -> PeerId {
        self.shared.id
    }

    /// Queues one encoded video frame (VP8 frame or H.264 access unit in
    /// Annex-B) for the browser, in the codec [`Peer::video_codec`] names.
    /// Never blocks: a full queue drops the frame, and later deltas until a
    /// keyframe (the handler then gets [`KeyframeRequested`]).
    ///
    /// `wallclock` is the moment the frame's media time was live (see
    /// [`OutFrame::wallclock`]).
    ///
    /// [`KeyframeRequested`]: super::PeerEvent::KeyframeRequested
    pub fn write_video(&self, frame: Bytes, timestamp: Duration, keyframe: bool, wallclock: Instant) {
        self.push(OutFrame {
            kind: MediaKind::Video,
            data: frame,
            timestamp,
            keyframe,
            wallclock,
        });
    }

    /// Queues one Opus packet for the browser. Never blocks.
    pub fn write_audio(&self, packet: Bytes, timestamp: Duration, wallclock: Instant) {
        self.push(OutFrame {
            kind: MediaKind::Audio,
            data: packet,
            timestamp,
            keyframe: false,
            wallclock,
        });
    }

    fn push(&self, frame: OutFrame) {
        let kind = frame.kind;
        // A poisoned lock means a panic elsewhere mid-push; the queue itself is
        // still a valid VecDeque, so carry on with it.
        let outcome = self.shared.outbox.lock().unwrap_or_else(|e| e.into_inner()).push(frame);
        let counters = self.shared.counters.kind(kind);
        match outcome {
            Push::Queued => self.shared.wake.peer(&self.shared),
            Push::Full | Push::AwaitingKeyframe => {
                Counters::add(&counters.frames_dropped, 1);
                self.shared.wake.peer(&self.shared);
            }
            Push::Closed => {}
        }
    }

    /// Asks the browser for a keyframe of the video it sends (an RTCP PLI).
    pub fn request_keyframe(&self) {
        self.shared.keyframe_wanted.store(true, Ordering::Relaxed);
        self.shared.wake.peer(&self.shared);
    }

    /// Sets what the bandwidth estimator probes towards, and, with
    /// `from_kbps`, starts the estimate again from there: the media side
    /// changed what it sends (a lower bitrate for a poor link), and what the
    /// estimator learned sending the old one (the losses it caused) no longer
    /// holds, while str0m paces media at 1.1 times the estimate.
    pub fn retarget_bandwidth_estimate(&self, from_kbps: Option<u64>, probe_to_kbps: u64) {
        *self.shared.estimate_restart.lock().unwrap_or_else(|e| e.into_inner()) = Some(EstimateRestart { from_kbps, probe_to_kbps });
        self.shared.wake.peer(&self.shared);
    }

    /// Ends the peer: RTCP BYE and DTLS close_notify to the browser, then
    /// [`Disconnected`](super::PeerEvent::Disconnected) to the handler.
    pub fn close(&self) {
        self.shared.close_wanted.store(true, Ordering::Relaxed);
        self.shared.wake.peer(&self.shared);
    }

    /// Whether the peer has ended (its `Disconnected` was sent).
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Relaxed)
    }

    /// The video codec we send, if we send video.
    pub fn video_codec(&self) -> Option<VideoCodec> {
        self.shared.video_codec
    }

    /// The audio codec we send, if we send audio.
    pub fn audio_codec(&self) -> Option<AudioCodec> {
        self.shared.audio_codec
    }

    pub fn stats(&self) -> PeerStats {
        let c = &self.shared.counters;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let last_ms = get(&c.last_packet_in_ms);
        PeerStats {
            audio: c.audio.read(),
            video: c.video.read(),
            nacks_sent: get(&c.nacks_sent),
            nacks_received: get(&c.nacks_received),
            rtx_in: get(&c.rtx_in),
            rtx_out: get(&c.rtx_out),
            keyframe_requests_in: get(&c.keyframe_requests_in),
            keyframe_requests_out: get(&c.keyframe_requests_out),
            last_packet_in: (last_ms > 0).then(|| UNIX_EPOCH + Duration::from_millis(last_ms)),
        }
    }
}
