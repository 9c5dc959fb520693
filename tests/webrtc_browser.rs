//! Tutti's WebRTC adapter against a real browser: headless Chromium with a fake
//! camera (a solid colour) and microphone (a tone) joins as a guest, and the
//! media is judged by its content both ways.
//!
//! ```text
//!            loopback-only network namespace (unshare -n)
//!  ┌──────────────────────────────────────────────────────────────────────────┐
//!  │ Chromium ──GET / , POST /offer──► PageServer ──accept_offer──► WebRtcServer │
//!  │  camera: green box on noise, mic: 1 kHz ══ SRTP over UDP ══►  MediaIn ─► decoded: green? 1 kHz?
//!  │  page: getStats, canvas colour, AnalyserNode ◄══ SRTP ══ Peer ◄─ magenta 320x240 + 440 Hz
//!  │                                     (optionally through a lossy relay)    │
//!  └──────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Each test re-runs itself inside a network namespace that has only loopback
//! (see `common::in_loopback_netns`): Chromium would otherwise prefer the
//! host's real interfaces, and nothing here should depend on them.

#[allow(dead_code, unused_imports)]
mod common;
mod webrtc;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use serde_json::Value;
use tempfile::TempDir;
use tutti::webrtc::{
    AudioCodec, Codec, MediaKind, Peer, PeerConfig, PeerEvent, PeerHandler, VideoCodec, WebRtcConfig, WebRtcServer,
};

use common::{Browser, Colour, Netns, in_loopback_netns, near, tone_level_db, wait_until};
use webrtc::PAGE;
use webrtc::chromium_with_devices;
use webrtc::media::{AUDIO_RATE, Encoder, decode_opus, decode_video_colours};
use webrtc::page_server::PageServer;
use webrtc::relay::LossyRelay;

/// The whole test in its namespace: browser start, media both ways, decoding.
const NETNS_TIMEOUT: Duration = Duration::from_secs(240);
/// From opening the page to ICE and DTLS up: getUserMedia, the offer, the
/// answer, ICE checks and the DTLS handshake take about a second.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// For a few seconds of media to flow each way once connected.
const MEDIA_TIMEOUT: Duration = Duration::from_secs(30);
/// From our PLI to a keyframe from the browser: a round trip and one encode.
const KEYFRAME_TIMEOUT: Duration = Duration::from_secs(5);
/// For the handler to hear `Disconnected` after `close`, and the page to see it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// For str0m's ICE-lite agent to give up on a browser that went silent: it
/// keeps a pair alive for 15 s after the last binding request, and Chromium
/// checks consent every 5 s or so.
const SILENCE_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of the browser's media (by its own timestamps) is collected before judging.
const JUDGED: Duration = Duration::from_secs(3);
/// The last decoded pictures from the browser that must all show the camera's colour.
const LAST_PICTURES: usize = 10;
/// Pictures of ours Chromium must have decoded: 2 s at 30 fps.
const BROWSER_FRAMES: u64 = 60;

const CAMERA: Colour = Colour::Green;
const CAMERA_SIZE: (u32, u32) = (640, 360);
const MICROPHONE_HZ: u32 = 1000;
const OURS: Colour = Colour::Magenta;
const OUR_SIZE: (u32, u32) = (320, 240);
const OUR_TONE_HZ: u32 = 440;
/// What the page has measured so far (see tests/webrtc/page.html).
const REPORT: &str = "return window.report;";
/// The least level the microphone's tone must reach in what Chromium sends.
const TONE_FLOOR_DBFS: f64 = -40.0;
/// A bin of the page's 8192-point FFT at 48 kHz is 5.9 Hz; two bins either way.
const PEAK_TOLERANCE_HZ: f64 = 12.0;
/// How far (Euclidean RGB) a judged colour may be from the one sent: codec
/// and YUV round trips move a flat colour by under 20.
const COLOUR_TOLERANCE: f64 = 60.0;

#[test]
fn chromium_and_tutti_exchange_vp8_and_opus_both_ways() -> Result<()> {
    if in_loopback_netns("chromium_and_tutti_exchange_vp8_and_opus_both_ways", NETNS_TIMEOUT)? == Netns::RanInChild {
        return Ok(());
    }
    exchange_both_ways(VideoCodec::Vp8, Closer::Tutti)
}

#[test]
fn chromium_and_tutti_exchange_h264_and_opus_both_ways() -> Result<()> {
    if in_loopback_netns("chromium_and_tutti_exchange_h264_and_opus_both_ways", NETNS_TIMEOUT)? == Netns::RanInChild {
        return Ok(());
    }
    exchange_both_ways(VideoCodec::H264, Closer::Browser)
}

#[test]
fn chromium_video_heals_through_5_percent_loss_with_nack_and_rtx_and_a_silent_browser_is_disconnected() -> Result<()> {
    if in_loopback_netns(
        "chromium_video_heals_through_5_percent_loss_with_nack_and_rtx_and_a_silent_browser_is_disconnected",
        NETNS_TIMEOUT,
    )? == Netns::RanInChild
    {
        return Ok(());
    }
    heals_through_loss(5, AfterLoss::BrowserGoesSilent)
}

#[test]
fn chromium_video_heals_through_20_percent_loss_with_nack_and_rtx() -> Result<()> {
    if in_loopback_netns(
        "chromium_video_heals_through_20_percent_loss_with_nack_and_rtx",
        NETNS_TIMEOUT,
    )? == Netns::RanInChild
    {
        return Ok(());
    }
    heals_through_loss(20, AfterLoss::Ends)
}

/// How a loss test ends. The silent browser is waited for in one of them
/// only: str0m's ICE takes ~13 s to give up, whatever the loss was.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AfterLoss {
    BrowserGoesSilent,
    /// The call ends as the test does: the browser and the server go.
    Ends,
}

/// Which side ends the call.
#[derive(Clone, Copy, Debug)]
enum Closer {
    /// `Peer::close`: RTCP BYE and DTLS close_notify to the browser.
    Tutti,
    /// `RTCPeerConnection.close()` in the page.
    Browser,
}

fn exchange_both_ways(codec: VideoCodec, closer: Closer) -> Result<()> {
    let started = Instant::now();
    let call = Call::start(codec, None)?;
    let connected = call.wait_connected()?;
    let peer = call.peer()?;
    ensure!(
        peer.video_codec() == Some(codec),
        "we send {:?}, negotiated {:?}",
        codec,
        peer.video_codec()
    );
    ensure!(peer.audio_codec() == Some(AudioCodec::Opus), "we send Opus");

    // Tutti → browser, at real-time pace from GStreamer streaming threads.
    let video = Arc::new(Encoder::video(codec, OURS.rgb(), OUR_SIZE, peer.clone())?);
    *call.video_encoder.lock().unwrap() = Some(video.clone());
    let _audio = Encoder::opus_tone(OUR_TONE_HZ, peer.clone())?;

    // Browser → Tutti: a few seconds of each kind.
    call.wait_for_media(JUDGED)?;
    let first_media = call.received.lock().unwrap().first_media.context("a first MediaIn")?;

    // What the browser makes of ours.
    let report = call.browser.wait_for(
        "Chromium to decode our picture (size, colour) and hear our tone",
        MEDIA_TIMEOUT,
        REPORT,
        "",
        |r| {
            let video = &r["video"];
            number(&video["framesDecoded"]) >= BROWSER_FRAMES as f64
                && (number(&video["frameWidth"]), number(&video["frameHeight"]))
                    == (f64::from(OUR_SIZE.0), f64::from(OUR_SIZE.1))
                && colour(&r["colour"]).is_some_and(|c| near(c, OURS.rgb(), COLOUR_TOLERANCE))
                && (number(&r["peakHz"]) - f64::from(OUR_TONE_HZ)).abs() <= PEAK_TOLERANCE_HZ
        },
    )?;
    ensure!(report["error"].is_null(), "the page reported {}", report["error"]);
    let mime = match codec {
        VideoCodec::Vp8 => "video/VP8",
        VideoCodec::H264 => "video/H264",
    };
    ensure!(
        report["video"]["codec"] == mime,
        "Chromium decodes {}, not {mime}",
        report["video"]["codec"]
    );

    // Our PLI makes the browser send a keyframe: Chromium's encoders otherwise
    // send one only at the start and on resolution changes.
    let keyframe = call.keyframe_after_request(&peer)?;

    // Judge what the browser sent by its decoded content.
    let (video_in, audio_in) = call.media_in();
    let codec_in = video_in.first().map(|f| f.codec).context("no video from Chromium")?;
    ensure!(
        codec_in == Codec::from(codec),
        "Chromium sent {codec_in}, negotiated {codec:?}"
    );
    let colours = decode_video_colours(codec_in, &frames(&video_in))?;
    let camera_seen = judge_pictures(&colours)?;
    let (tone_db, strongest_other_db, peak_hz) = judge_tone(&decode_opus(&frames(&audio_in))?)?;

    let stats = peer.stats();
    let received = call.received.lock().unwrap();
    eprintln!(
        "{codec:?}: connected {:.0?} after the offer, first MediaIn {:.0?} after it; \
         from Chromium: {} video frames ({} keyframes) decoding to {} pictures, {camera_seen} of them {CAMERA:?} \
         (last {:?}), {} Opus packets with {MICROPHONE_HZ} Hz at {tone_db:.1} dBFS (next strongest of 700/1300/440 Hz \
         {strongest_other_db:.1} dBFS, peak {peak_hz} Hz); keyframe {keyframe:.0?} after our PLI; \
         Chromium decoded {} of ours ({}x{}, {} keyframes), canvas {}, peak {} Hz at {} dB; \
         browser PLI/FIR to us: {} (the page counts {} PLIs sent), keyframes asked of our encoder: {}, bandwidth estimates {:?}; stats {stats:?}; \
         whole test {:.1?}",
        connected.duration_since(received.offered.context("an offer")?),
        first_media.duration_since(received.offered.context("an offer")?),
        video_in.len(),
        video_in.iter().filter(|f| f.keyframe).count(),
        colours.len(),
        colours.last(),
        audio_in.len(),
        report["video"]["framesDecoded"],
        report["video"]["frameWidth"],
        report["video"]["frameHeight"],
        report["video"]["keyFramesDecoded"],
        report["colour"],
        report["peakHz"],
        report["peakDb"],
        stats.keyframe_requests_in,
        report["video"]["pliCount"],
        received.keyframe_requests,
        received.bandwidth.iter().rev().take(3).collect::<Vec<_>>(),
        started.elapsed(),
    );
    ensure!(
        stats.video.frames_out > 0 && stats.audio.frames_out > 0,
        "frames written reached str0m: {stats:?}"
    );
    ensure!(
        stats.video.packets_in > 0 && stats.audio.packets_in > 0,
        "str0m counted packets in: {stats:?}"
    );
    ensure!(stats.last_packet_in.is_some(), "a last packet time: {stats:?}");
    ensure!(
        !received.bandwidth.is_empty(),
        "str0m estimated the bandwidth for our video"
    );
    drop(received);

    match closer {
        Closer::Tutti => call.close_from_tutti(&peer),
        Closer::Browser => call.close_from_browser(&peer),
    }
}

fn heals_through_loss(loss_percent: u32, after: AfterLoss) -> Result<()> {
    let call = Call::start(VideoCodec::Vp8, Some(loss_percent))?;
    call.wait_connected()?;
    let peer = call.peer()?;
    // Longer than the lossless case: NACK, RTX and a keyframe or two have to play out.
    call.wait_for_media(JUDGED * 2)?;
    let (video_in, _) = call.media_in();
    let broken = video_in.iter().filter(|f| !f.contiguous).count();
    let keyframes = video_in.iter().filter(|f| f.keyframe).count();
    let colours = decode_video_colours(Codec::Vp8, &frames(&video_in))?;
    let stats = peer.stats();
    let (dropped, forwarded) = call.relay.as_ref().map(LossyRelay::counts).unwrap_or_default();
    eprintln!(
        "{loss_percent}% loss: relay dropped {dropped} RTP packets and forwarded {forwarded}; {} video frames in \
         ({keyframes} keyframes, {broken} after a gap str0m could not fill), {} pictures decoded, {} {CAMERA:?}; \
         NACKs sent {}, RTX in {}, PLIs sent {}; stats {stats:?}",
        video_in.len(),
        colours.len(),
        colours
            .iter()
            .filter(|c| near(**c, CAMERA.rgb(), COLOUR_TOLERANCE))
            .count(),
        stats.nacks_sent,
        stats.rtx_in,
        stats.keyframe_requests_out,
    );
    judge_pictures(&colours)?;
    ensure!(dropped > 0, "the relay dropped nothing");
    ensure!(stats.nacks_sent > 0, "no NACK for {dropped} lost packets: {stats:?}");
    ensure!(stats.rtx_in > 0, "no retransmission arrived: {stats:?}");
    match after {
        AfterLoss::BrowserGoesSilent => call.browser_goes_silent(&peer),
        AfterLoss::Ends => Ok(()),
    }
}

/// How many decoded pictures show the camera's colour; fails unless there are
/// enough and the last ones all do.
fn judge_pictures(colours: &[[u8; 3]]) -> Result<usize> {
    ensure!(
        colours.len() >= LAST_PICTURES * 3,
        "only {} pictures decoded",
        colours.len()
    );
    let seen = colours
        .iter()
        .filter(|c| near(**c, CAMERA.rgb(), COLOUR_TOLERANCE))
        .count();
    let last = &colours[colours.len() - LAST_PICTURES..];
    ensure!(
        last.iter().all(|c| near(*c, CAMERA.rgb(), COLOUR_TOLERANCE)),
        "the last pictures from Chromium should be {CAMERA:?} {:?}: {last:?}",
        CAMERA.rgb()
    );
    Ok(seen)
}

/// The microphone's tone in the last second of decoded audio: its level, the
/// strongest of some other frequencies, and the loudest frequency found.
fn judge_tone(samples: &[f32]) -> Result<(f64, f64, u32)> {
    let second = AUDIO_RATE as usize;
    ensure!(samples.len() >= second, "only {} samples decoded", samples.len());
    let window = &samples[samples.len() - second..];
    let tone = tone_level_db(window, AUDIO_RATE, f64::from(MICROPHONE_HZ));
    let others = [700.0, 1300.0, f64::from(OUR_TONE_HZ)].map(|f| tone_level_db(window, AUDIO_RATE, f));
    let strongest_other = others.into_iter().fold(f64::MIN, f64::max);
    let peak = (20..=400u32).map(|f| f * 10).max_by(|a, b| {
        tone_level_db(window, AUDIO_RATE, f64::from(*a)).total_cmp(&tone_level_db(window, AUDIO_RATE, f64::from(*b)))
    });
    let peak = peak.unwrap_or_default();
    // The file is a sine at half scale (-6 dBFS); Chromium's capture from a file and
    // its Opus encode bring it down to about -24 dBFS. Silence would be below -100.
    ensure!(
        tone > TONE_FLOOR_DBFS,
        "the {MICROPHONE_HZ} Hz tone is at {tone:.1} dBFS"
    );
    ensure!(
        tone - strongest_other > 30.0,
        "{MICROPHONE_HZ} Hz at {tone:.1} dBFS, others up to {strongest_other:.1}"
    );
    ensure!(peak == MICROPHONE_HZ, "the loudest frequency is {peak} Hz");
    Ok((tone, strongest_other, peak))
}

/// A media frame the handler received.
#[derive(Clone)]
struct InFrame {
    at: Instant,
    codec: Codec,
    timestamp: Duration,
    keyframe: bool,
    contiguous: bool,
    data: Bytes,
}

fn frames(frames: &[InFrame]) -> Vec<(Duration, Bytes)> {
    frames.iter().map(|f| (f.timestamp, f.data.clone())).collect()
}

/// What the peer's handler has been told.
#[derive(Default)]
struct Received {
    offered: Option<Instant>,
    connected: Option<(Instant, SocketAddr)>,
    first_media: Option<Instant>,
    video: Vec<InFrame>,
    audio: Vec<InFrame>,
    keyframe_requests: u32,
    bandwidth: Vec<u64>,
    disconnected: Option<String>,
}

/// A browser guest and Tutti's WebRTC server, in the order they are dropped.
struct Call {
    browser: Browser,
    _page: PageServer,
    video_encoder: Arc<Mutex<Option<Arc<Encoder>>>>,
    received: Arc<Mutex<Received>>,
    peer: Arc<Mutex<Option<Peer>>>,
    server: Arc<WebRtcServer>,
    relay: Option<LossyRelay>,
    _runtime: tokio::runtime::Runtime,
    _dir: TempDir,
}

impl Call {
    /// Tutti's server, the page, and Chromium opening it; `loss` puts a lossy
    /// relay between the browser and Tutti.
    fn start(codec: VideoCodec, loss: Option<u32>) -> Result<Call> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let _entered = runtime.enter();
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut config = WebRtcConfig::new(SocketAddr::new(loopback, 0), loopback);
        let mut relay = loss.map(LossyRelay::bind).transpose()?;
        config.advertised = relay.as_ref().map(LossyRelay::front);
        let server = Arc::new(WebRtcServer::start_with(config)?);
        if let Some(relay) = &mut relay {
            relay.forward_to(server.local_addr())?;
        }

        let received = Arc::new(Mutex::new(Received::default()));
        let video_encoder: Arc<Mutex<Option<Arc<Encoder>>>> = Arc::default();
        let handler = handler(received.clone(), video_encoder.clone());
        let peer: Arc<Mutex<Option<Peer>>> = Arc::default();
        let on_offer = {
            let (server, received, peer) = (server.clone(), received.clone(), peer.clone());
            let config = PeerConfig::guest().with_video_codecs(&[codec]);
            Box::new(move |offer: &str| {
                received.lock().unwrap().offered = Some(Instant::now());
                // From the page server's plain thread, as the engine's will call it.
                let (answer, accepted) = server
                    .accept_offer(offer, config.clone(), handler.clone())
                    .map_err(|e| e.to_string())?;
                *peer.lock().unwrap() = Some(accepted);
                Ok(answer)
            })
        };
        let page = PageServer::start(PAGE, on_offer)?;
        let (browser, dir) = chromium_with_devices(CAMERA.rgb(), CAMERA_SIZE, MICROPHONE_HZ)?;
        browser.open(&page.url())?;
        drop(_entered);
        Ok(Call {
            browser,
            _page: page,
            video_encoder,
            received,
            peer,
            server,
            relay,
            _runtime: runtime,
            _dir: dir,
        })
    }

    fn peer(&self) -> Result<Peer> {
        self.peer
            .lock()
            .unwrap()
            .clone()
            .context("no peer: the page's offer never arrived")
    }

    fn wait_connected(&self) -> Result<Instant> {
        let page_said = || self.browser.execute(REPORT, "").unwrap_or(Value::Null);
        wait_until("Chromium to connect", CONNECT_TIMEOUT, || {
            let received = self.received.lock().unwrap();
            if let Some(reason) = &received.disconnected {
                anyhow::bail!("disconnected before connecting: {reason}");
            }
            Ok(received.connected.is_some())
        })
        .with_context(|| format!("the page reports {}\n{}", page_said(), self.browser.console()))?;
        let (at, peer) = self.received.lock().unwrap().connected.expect("waited for");
        ensure!(peer.ip().is_loopback(), "Chromium reached us from {peer}");
        Ok(at)
    }

    /// Waits until the browser's video and audio each span `span` of media time.
    fn wait_for_media(&self, span: Duration) -> Result<()> {
        let spans = |r: &Received| {
            let span_of = |f: &[InFrame]| {
                f.last()
                    .map_or(Duration::ZERO, |l| l.timestamp.saturating_sub(f[0].timestamp))
            };
            (span_of(&r.video), span_of(&r.audio))
        };
        wait_until(
            &format!("{span:?} of video and audio from Chromium"),
            MEDIA_TIMEOUT,
            || {
                let (video, audio) = spans(&self.received.lock().unwrap());
                Ok(video >= span && audio >= span)
            },
        )
        .with_context(|| {
            let received = self.received.lock().unwrap();
            format!("got {:?}; stats {:?}", spans(&received), self.peer().map(|p| p.stats()))
        })
    }

    fn media_in(&self) -> (Vec<InFrame>, Vec<InFrame>) {
        let received = self.received.lock().unwrap();
        (received.video.clone(), received.audio.clone())
    }

    /// Sends a PLI and waits for a keyframe from the browser that arrives after it.
    fn keyframe_after_request(&self, peer: &Peer) -> Result<Duration> {
        let asked = Instant::now();
        let plis = peer.stats().keyframe_requests_out;
        peer.request_keyframe();
        let mut answered = None;
        wait_until("a keyframe from Chromium after our PLI", KEYFRAME_TIMEOUT, || {
            answered = self
                .received
                .lock()
                .unwrap()
                .video
                .iter()
                .find(|f| f.keyframe && f.at > asked)
                .map(|f| f.at);
            Ok(answered.is_some())
        })?;
        ensure!(peer.stats().keyframe_requests_out > plis, "the PLI was counted");
        Ok(answered.expect("waited for").duration_since(asked))
    }

    /// Closing the page's RTCPeerConnection ends the peer with `Disconnected` and frees it.
    fn close_from_browser(&self, peer: &Peer) -> Result<()> {
        let asked = Instant::now();
        self.browser.execute("window.pc.close(); return true;", "")?;
        self.wait_disconnected(peer, CLOSE_TIMEOUT)?;
        let reason = self.received.lock().unwrap().disconnected.clone();
        eprintln!(
            "closed by the page: Disconnected {:.0?} later, {reason:?}",
            asked.elapsed()
        );
        ensure!(
            reason.as_deref() == Some("closed by the browser"),
            "disconnected: {reason:?}"
        );
        Ok(())
    }

    /// With the relay gone, nothing more arrives from the browser: str0m's ICE
    /// gives up on it, and the peer ends with `Disconnected` and is freed.
    fn browser_goes_silent(mut self, peer: &Peer) -> Result<()> {
        let silent = Instant::now();
        drop(self.relay.take());
        self.wait_disconnected(peer, SILENCE_TIMEOUT)?;
        let reason = self.received.lock().unwrap().disconnected.clone();
        eprintln!(
            "browser silent: Disconnected {:.1?} later, {reason:?}",
            silent.elapsed()
        );
        ensure!(
            reason.as_deref().is_some_and(|r| r.starts_with("ICE disconnected")),
            "disconnected: {reason:?}"
        );
        Ok(())
    }

    fn wait_disconnected(&self, peer: &Peer, timeout: Duration) -> Result<()> {
        wait_until("Disconnected", timeout, || {
            Ok(self.received.lock().unwrap().disconnected.is_some())
        })?;
        ensure!(peer.is_closed(), "the handle says closed");
        wait_until("the server to forget the peer", CLOSE_TIMEOUT, || {
            Ok(self.server.peer_count() == 0)
        })
    }

    /// `close` from Tutti's side ends the peer with `Disconnected` and frees it.
    fn close_from_tutti(&self, peer: &Peer) -> Result<()> {
        peer.close();
        self.wait_disconnected(peer, CLOSE_TIMEOUT)?;
        let reason = self.received.lock().unwrap().disconnected.clone();
        ensure!(reason.as_deref() == Some("closed by Tutti"), "disconnected: {reason:?}");
        // Chromium keeps ICE up a while longer; its DTLS transport closes at once.
        let ended = |r: &Value| r["dtls"] == "closed";
        let page = self
            .browser
            .wait_for("the page to see the call end", CLOSE_TIMEOUT, REPORT, "", ended)?;
        eprintln!(
            "closed by Tutti: the page's DTLS transport is {}, its connection {}",
            page["dtls"], page["state"]
        );
        Ok(())
    }
}

/// Records every event; forces a keyframe from our encoder when asked.
fn handler(received: Arc<Mutex<Received>>, video_encoder: Arc<Mutex<Option<Arc<Encoder>>>>) -> PeerHandler {
    Arc::new(move |event| {
        let now = Instant::now();
        let mut r = received.lock().unwrap();
        match event {
            PeerEvent::Connected { peer } => r.connected = Some((now, peer)),
            PeerEvent::MediaIn {
                kind,
                codec,
                timestamp,
                keyframe,
                contiguous,
                data,
            } => {
                r.first_media.get_or_insert(now);
                let frame = InFrame {
                    at: now,
                    codec,
                    timestamp,
                    keyframe,
                    contiguous,
                    data,
                };
                match kind {
                    MediaKind::Video => r.video.push(frame),
                    MediaKind::Audio => r.audio.push(frame),
                }
            }
            PeerEvent::KeyframeRequested => {
                r.keyframe_requests += 1;
                if let Some(encoder) = video_encoder.lock().unwrap().as_ref() {
                    encoder.force_keyframe();
                }
            }
            PeerEvent::BandwidthEstimate { bps } => r.bandwidth.push(bps),
            PeerEvent::Disconnected { reason } => r.disconnected = Some(reason),
        }
    })
}

fn number(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

fn colour(value: &Value) -> Option<[u8; 3]> {
    let c = value.as_array()?;
    Some([
        c.first()?.as_u64()? as u8,
        c.get(1)?.as_u64()? as u8,
        c.get(2)?.as_u64()? as u8,
    ])
}
