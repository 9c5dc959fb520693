//! One browser's str0m instance and what it means for Tutti: datagrams and
//! time in, datagrams out, str0m's events turned into [`PeerEvent`]s.
//!
//! ```text
//!              ┌──────────────── PeerSession ────────────────┐
//!  datagram ──►│ Rtc::handle_input ─► drain poll_output ─┬─► Transmit ─► `out`
//!  timeout ───►│                                          ├─► Event ─► PeerEvent ─► handler
//!  outbox ────►│ Writer::write / request_keyframe ─► drain └─► Timeout ─► next_timeout()
//!              └──────────────────────────────────────────────┘
//! ```
//!
//! Sans-IO like str0m itself: no socket, no clock of its own. Every mutation
//! of the `Rtc` is followed by draining `poll_output` to its `Timeout`, as
//! str0m requires. A session ends once (ICE gone, DTLS failed, closed by
//! either side, or never connected in time): its last event is
//! `Disconnected`, and the server then forgets it.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use str0m::bwe::{Bitrate, BweKind};
use str0m::format::{Codec as Str0mCodec, CodecExtra};
use str0m::media::{KeyframeRequestKind, MediaData, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};

use super::clock::MediaClock;
use super::datagram::{DatagramKind, classify};
use super::media::{Codec, MediaKind, PeerEvent, PeerHandler};
use super::outbox::OutFrame;
use super::peer::{Counters, PeerShared};

/// A bandwidth estimate is reported when it moved by at least this fraction
/// since the last report: str0m updates it many times a second, and an
/// encoder needs to hear only real changes.
const BWE_REPORT_CHANGE: f64 = 0.05;
/// At most one PLI a second for a broken incoming picture: a keyframe takes
/// a round trip and an encode, and asking again meanwhile only adds load.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(1);
/// How long a closing session may take to send its RTCP BYE and DTLS
/// close_notify: str0m sends them within a few milliseconds; this bounds a
/// session that for any reason does not finish.
const CLOSE_DRAIN: Duration = Duration::from_millis(500);

/// A datagram for the socket.
pub(crate) struct Datagram {
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

/// What we send on an m-line: str0m's payload type for it, the codec, and
/// the RTP clock rate that turns a frame's timestamp into RTP time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sending {
    pub pt: Pt,
    pub codec: Codec,
    pub clock_rate: u32,
}

/// One negotiated m-line.
pub(crate) struct Track {
    pub mid: Mid,
    pub kind: MediaKind,
    pub receive: bool,
    pub send: Option<Sending>,
    pub clock: Option<MediaClock>,
    /// Video received: no keyframe yet, so frames are held back.
    pub awaiting_keyframe: bool,
}

pub(crate) struct PeerSession {
    rtc: Rtc,
    shared: Arc<PeerShared>,
    handler: PeerHandler,
    tracks: Vec<Track>,
    /// Payload types of RTX, to count retransmissions in and out.
    rtx_pts: Vec<u8>,
    /// The address we are reached at: str0m's ICE drops STUN for any other.
    local: SocketAddr,
    connect_deadline: Instant,
    connected: bool,
    last_source: Option<SocketAddr>,
    /// Video we send is held back after connecting until a keyframe is
    /// written: a browser cannot start decoding on a delta frame.
    sent_video_awaits_keyframe: bool,
    last_keyframe_request: Option<Instant>,
    last_bwe: Option<u64>,
    nacks_sent: [u64; 2],
    nacks_received: [u64; 2],
    next_timeout: Instant,
    /// Closing (by `Peer::close`): until when str0m may drain, and the reason
    /// `Disconnected` will give.
    closing: Option<(Instant, &'static str)>,
    ended: bool,
}

fn kind_index(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
    }
}

pub(crate) fn our_codec(codec: Str0mCodec) -> Option<Codec> {
    match codec {
        Str0mCodec::Vp8 => Some(Codec::Vp8),
        Str0mCodec::H264 => Some(Codec::H264),
        Str0mCodec::Opus => Some(Codec::Opus),
        _ => None,
    }
}

impl PeerSession {
    pub fn new(
        rtc: Rtc,
        shared: Arc<PeerShared>,
        handler: PeerHandler,
        tracks: Vec<Track>,
        local: SocketAddr,
        now: Instant,
        connect_timeout: Duration,
    ) -> Self {
        let rtx_pts = rtc
            .codec_config()
            .params()
            .iter()
            .filter_map(|p| p.resend())
            .map(|pt| *pt)
            .collect();
        PeerSession {
            rtc,
            shared,
            handler,
            tracks,
            rtx_pts,
            local,
            connect_deadline: now + connect_timeout,
            connected: false,
            last_source: None,
            sent_video_awaits_keyframe: true,
            last_keyframe_request: None,
            last_bwe: None,
            nacks_sent: [0; 2],
            nacks_received: [0; 2],
            next_timeout: now,
            closing: None,
            ended: false,
        }
    }

    pub fn shared(&self) -> &Arc<PeerShared> {
        &self.shared
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// When the session next needs `handle_timeout`: str0m's own timeout, or
    /// our deadlines for connecting and for closing, whichever is first.
    pub fn next_timeout(&self) -> Instant {
        let mut next = self.next_timeout;
        if !self.connected {
            next = next.min(self.connect_deadline);
        }
        if let Some((deadline, _)) = self.closing {
            next = next.min(deadline);
        }
        next
    }

    /// A datagram from `source` to our address, as str0m takes it.
    fn received<'a>(&self, now: Instant, source: SocketAddr, contents: str0m::net::DatagramRecv<'a>) -> Input<'a> {
        Input::Receive(now, Receive { proto: Protocol::Udp, source, destination: self.local, contents })
    }

    /// Whether str0m claims a datagram from `source` (see `Rtc::accepts`).
    pub fn accepts(&self, now: Instant, source: SocketAddr, datagram: &[u8]) -> bool {
        let Ok(contents) = datagram.try_into() else {
            return false;
        };
        let input = self.received(now, source, contents);
        !self.ended && self.rtc.accepts(&input)
    }

    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, datagram: &[u8], out: &mut Vec<Datagram>) {
        if self.ended {
            return;
        }
        let Ok(contents) = datagram.try_into() else {
            return;
        };
        self.shared.counters.packet_in_now();
        if let DatagramKind::Rtp { payload_type } = classify(datagram)
            && self.rtx_pts.contains(&payload_type)
        {
            Counters::add(&self.shared.counters.rtx_in, 1);
        }
        self.last_source = Some(source);
        let input = self.received(now, source, contents);
        if let Err(e) = self.rtc.handle_input(input) {
            return self.end(&format!("the connection failed: {e}"));
        }
        self.drain(now, out);
    }

    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Datagram>) {
        if self.ended {
            return;
        }
        if let Some((deadline, reason)) = self.closing
            && now >= deadline
        {
            return self.end(reason);
        }
        if !self.connected && now >= self.connect_deadline {
            return self.end("no ICE and DTLS connection in time: the browser never reached us");
        }
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            return self.end(&format!("the connection failed: {e}"));
        }
        self.drain(now, out);
    }

    /// What the [`Peer`](super::Peer) handles asked for: frames to send,
    /// keyframe requests, closing.
    pub fn serve_requests(&mut self, now: Instant, out: &mut Vec<Datagram>) {
        if self.ended {
            return;
        }
        self.shared.queued.store(false, Ordering::Release); // later requests wake the task again
        if self.closing.is_some() {
            return; // frames and requests no longer matter
        }
        if self.shared.close_wanted.load(Ordering::Relaxed) {
            return self.close(now, out, "closed by Tutti");
        }
        let (frames, keyframe_wanted_by_drop) = {
            let mut outbox = self.shared.outbox.lock().unwrap_or_else(|e| e.into_inner());
            (outbox.take(), outbox.take_keyframe_request())
        };
        if keyframe_wanted_by_drop {
            self.emit(PeerEvent::KeyframeRequested);
        }
        for frame in frames {
            self.write(now, frame, out);
            if self.ended {
                return;
            }
        }
        if self.shared.keyframe_wanted.swap(false, Ordering::Relaxed) {
            self.request_keyframe(now, out);
        }
        let restart = self.shared.estimate_restart.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(restart) = restart {
            let mut bwe = self.rtc.bwe();
            if let Some(from) = restart.from_kbps {
                bwe.reset(Bitrate::kbps(from));
                self.last_bwe = None;
            }
            bwe.set_bitrate(Bitrate::ZERO, Bitrate::kbps(restart.probe_to_kbps));
            self.drain(now, out);
        }
    }

    fn write(&mut self, now: Instant, frame: OutFrame, out: &mut Vec<Datagram>) {
        let counters = self.shared.counters.kind(frame.kind);
        let send = self
            .tracks
            .iter()
            .find(|t| t.kind == frame.kind)
            .and_then(|t| t.send.map(|s| (t.mid, s)));
        let Some((mid, sending)) = send else {
            return Counters::add(&counters.frames_dropped, 1); // nothing negotiated to send it on
        };
        if frame.kind == MediaKind::Video && self.sent_video_awaits_keyframe {
            if !frame.keyframe || !self.connected {
                return Counters::add(&counters.frames_dropped, 1);
            }
            self.sent_video_awaits_keyframe = false;
        }
        if !self.connected {
            return Counters::add(&counters.frames_dropped, 1); // str0m would drop it too
        }
        let rate = sending.clock_rate;
        let ticks = (frame.timestamp.as_nanos() * u128::from(rate) / 1_000_000_000) as u64;
        let Some(writer) = self.rtc.writer(mid) else {
            return;
        };
        let Some(frequency) = str0m::media::Frequency::new(rate) else {
            return;
        };
        match writer.write(
            sending.pt,
            frame.wallclock,
            MediaTime::new(ticks, frequency),
            &frame.data[..],
        ) {
            Ok(()) => Counters::add(&counters.frames_out, 1),
            Err(e) => return self.end(&format!("sending {} failed: {e}", frame.kind)),
        }
        self.drain(now, out);
    }

    fn request_keyframe(&mut self, now: Instant, out: &mut Vec<Datagram>) {
        let Some(track) = self.tracks.iter().find(|t| t.kind == MediaKind::Video && t.receive) else {
            return;
        };
        let mid = track.mid;
        let Some(mut writer) = self.rtc.writer(mid) else {
            return;
        };
        if writer.request_keyframe(None, KeyframeRequestKind::Pli).is_ok() {
            Counters::add(&self.shared.counters.keyframe_requests_out, 1);
            self.last_keyframe_request = Some(now);
        }
        self.drain(now, out);
    }

    /// Polls str0m until it has nothing but a timeout left.
    fn drain(&mut self, now: Instant, out: &mut Vec<Datagram>) {
        loop {
            if !self.rtc.is_alive() {
                let reason = self.closing.map_or("closed", |(_, reason)| reason);
                return self.end(reason);
            }
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    self.next_timeout = at;
                    return;
                }
                Ok(Output::Transmit(transmit)) => {
                    let contents: Vec<u8> = transmit.contents.into();
                    if let DatagramKind::Rtp { payload_type } = classify(&contents)
                        && self.rtx_pts.contains(&payload_type)
                    {
                        Counters::add(&self.shared.counters.rtx_out, 1);
                    }
                    out.push(Datagram {
                        destination: transmit.destination,
                        contents,
                    });
                }
                Ok(Output::Event(event)) => {
                    self.on_event(now, event, out);
                    if self.ended {
                        return;
                    }
                }
                Err(e) => return self.end(&format!("the connection failed: {e}")),
            }
        }
    }

    fn on_event(&mut self, now: Instant, event: Event, out: &mut Vec<Datagram>) {
        match event {
            Event::Connected => {
                self.connected = true;
                let peer = self.last_source.unwrap_or(self.local);
                self.emit(PeerEvent::Connected { peer });
                if self
                    .tracks
                    .iter()
                    .any(|t| t.kind == MediaKind::Video && t.send.is_some())
                {
                    // The browser can only start on a keyframe; ask the encoder now
                    // rather than wait for the browser's PLI.
                    self.emit(PeerEvent::KeyframeRequested);
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.end("ICE disconnected: the browser stopped answering");
            }
            Event::Closed => self.end("closed by the browser"),
            Event::MediaData(data) => self.on_media(now, data, out),
            Event::KeyframeRequest(request) => {
                let ours = self
                    .tracks
                    .iter()
                    .any(|t| t.mid == request.mid && t.kind == MediaKind::Video);
                if ours {
                    Counters::add(&self.shared.counters.keyframe_requests_in, 1);
                    self.emit(PeerEvent::KeyframeRequested);
                }
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. } | BweKind::Remb { estimate, .. }) => {
                let bps = estimate.as_u64();
                let moved = self
                    .last_bwe
                    .is_none_or(|last| (bps as f64 - last as f64).abs() >= last as f64 * BWE_REPORT_CHANGE);
                if moved && bps > 0 {
                    self.last_bwe = Some(bps);
                    self.emit(PeerEvent::BandwidthEstimate { bps });
                }
            }
            Event::MediaIngressStats(stats) => {
                if let Some(kind) = self.kind_of(stats.mid) {
                    let counters = self.shared.counters.kind(kind);
                    Counters::set(&counters.packets_in, stats.packets);
                    Counters::set(&counters.bytes_in, stats.bytes);
                    self.nacks_sent[kind_index(kind)] = stats.nacks;
                    Counters::set(&self.shared.counters.nacks_sent, self.nacks_sent.iter().sum());
                }
            }
            Event::MediaEgressStats(stats) => {
                if let Some(kind) = self.kind_of(stats.mid) {
                    let counters = self.shared.counters.kind(kind);
                    Counters::set(&counters.packets_out, stats.packets);
                    Counters::set(&counters.bytes_out, stats.bytes);
                    self.nacks_received[kind_index(kind)] = stats.nacks;
                    Counters::set(&self.shared.counters.nacks_received, self.nacks_received.iter().sum());
                }
            }
            _ => {}
        }
    }

    fn on_media(&mut self, now: Instant, data: MediaData, out: &mut Vec<Datagram>) {
        let codec = self
            .rtc
            .codec_config()
            .params()
            .iter()
            .find(|p| p.pt() == data.pt)
            .and_then(|p| our_codec(p.spec().codec));
        let Some(track) = self.tracks.iter_mut().find(|t| t.mid == data.mid && t.receive) else {
            return;
        };
        let Some(codec) = codec else { return };
        let kind = track.kind;
        let rate = data.time.frequency().get();
        let timestamp = track
            .clock
            .get_or_insert_with(|| MediaClock::new(rate))
            .timestamp(data.time.numer() as u32);
        let keyframe = match data.codec_extra {
            CodecExtra::Vp8(extra) => extra.is_keyframe,
            CodecExtra::H264(extra) => extra.is_keyframe,
            _ => false,
        };
        let recently = self
            .last_keyframe_request
            .is_some_and(|at| now.duration_since(at) < KEYFRAME_REQUEST_INTERVAL);
        if kind == MediaKind::Video && track.awaiting_keyframe {
            if !keyframe {
                // A decoder cannot start on a delta frame (the first keyframe was
                // lost for good, or the browser started mid-GOP): ask for one.
                if !recently {
                    self.request_keyframe(now, out);
                }
                return;
            }
            track.awaiting_keyframe = false;
        }
        Counters::add(&self.shared.counters.kind(kind).frames_in, 1);
        let contiguous = data.contiguous;
        let broken = kind == MediaKind::Video && !contiguous;
        let data = Bytes::from_owner(data.data);
        self.emit(PeerEvent::MediaIn {
            kind,
            codec,
            timestamp,
            keyframe,
            contiguous,
            data,
        });
        if broken && !recently {
            // str0m gave up waiting for a lost packet: only a keyframe repairs the picture.
            self.request_keyframe(now, out);
        }
    }

    fn kind_of(&self, mid: Mid) -> Option<MediaKind> {
        self.tracks.iter().find(|t| t.mid == mid).map(|t| t.kind)
    }

    fn emit(&self, event: PeerEvent) {
        (self.handler)(event);
    }

    /// Ends the session once: str0m stopped, the handle refused, `Disconnected`.
    fn end(&mut self, reason: &str) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.rtc.disconnect();
        self.shared.outbox.lock().unwrap_or_else(|e| e.into_inner()).close();
        self.shared.closed.store(true, Ordering::Relaxed);
        tracing::info!(peer = self.shared.id, reason, "WebRTC peer disconnected");
        self.emit(PeerEvent::Disconnected {
            reason: reason.to_string(),
        });
    }

    /// Ends a session that panicked (a bug in str0m, or a handler that
    /// panicked): its str0m is not touched again, and the handler is told,
    /// shielded from a second panic.
    pub fn abandon(&mut self, what: &str) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.shared.outbox.lock().unwrap_or_else(|e| e.into_inner()).close();
        self.shared.closed.store(true, Ordering::Relaxed);
        let reason = format!("internal error: {what}");
        tracing::error!(peer = self.shared.id, reason, "WebRTC peer abandoned");
        let handler = self.handler.clone();
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| handler(PeerEvent::Disconnected { reason })));
    }

    /// Closes the session: str0m queues an RTCP BYE and a DTLS close_notify,
    /// which go out as it drains; the session ends once str0m is done, or
    /// after [`CLOSE_DRAIN`] at the latest.
    fn close(&mut self, now: Instant, out: &mut Vec<Datagram>, reason: &'static str) {
        if self.ended || self.closing.is_some() {
            return;
        }
        self.closing = Some((now + CLOSE_DRAIN, reason));
        self.next_timeout = now;
        if self.rtc.close().is_err() {
            return self.end(reason);
        }
        self.drain(now, out);
    }

    /// Ends the session because the server is stopping: what str0m has for
    /// the browser right away (its close_notify) goes out, then it ends.
    pub fn shut_down(&mut self, now: Instant, out: &mut Vec<Datagram>) {
        self.close(now, out, "the WebRTC server stopped");
        self.end("the WebRTC server stopped");
    }
}
