//! Proves the harness judges media correctly, without the server: each caller's sender is
//! pointed (through a stand-in peer) straight back at its own recorder, and the analysis must
//! find the caller's own colour, tone, frame rate and timing.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, ensure};
use crate::common::*;
use sdp_types::{Attribute, Rtcp, Session};

/// How far a recorded wall time may be from the event that caused it (server tests assert
/// things like "within 1 s of this POST").
const WALL_CLOCK_TOLERANCE: f64 = 0.150;
/// From spawning gst-launch to its first packet: start-up time (long on a loaded machine),
/// not a timing error; the bound only catches a recording on some other clock.
const STARTUP_BOUND: f64 = 3.0;
/// Long enough that the only keyframes besides the first are the ones a PLI asks for.
const NO_AUTOMATIC_KEYFRAMES: u32 = 1000;
const PEER_SSRC: u32 = 0x7e57_0001;

/// Stands in for the server: answers the offer with its own ports, sends the caller's RTP
/// straight back to the caller's own receive ports, swallows its RTCP, and can send a PLI.
/// Like a server, it sends one continuous stream (its own SSRC and sequence numbers) even
/// when the caller's sender restarts: ffmpeg would drop the first packet after a sequence
/// jump, and for VP8 that loses the keyframe.
struct LoopbackPeer {
    answer: String,
    media: Vec<PeerMedia>,
    stop: Arc<AtomicBool>,
    forwarders: Vec<JoinHandle<()>>,
}

struct PeerMedia {
    kind: MediaKind,
    socket: UdpSocket,
    /// Where the caller reads RTCP: its rtcp-mux port or its a=rtcp port.
    caller_rtcp: SocketAddr,
    /// The SSRC of the caller's latest RTP, which a PLI must name.
    sender_ssrc: Arc<AtomicU32>,
    /// Bound only so the sender's RTCP is not refused; never read.
    _rtcp_socket: Option<UdpSocket>,
}

impl LoopbackPeer {
    fn new(offer: &str) -> Result<Self> {
        let mut session = Session::parse(offer.as_bytes())?;
        let stop = Arc::new(AtomicBool::new(false));
        let (mut media, mut forwarders) = (Vec::new(), Vec::new());
        for m in &mut session.medias {
            let kind = if m.media == MediaKind::Video.sdp_name() { MediaKind::Video } else { MediaKind::Audio };
            let caller_rtp = SocketAddr::from(([127, 0, 0, 1], m.port));
            let mux = m.has_attribute("rtcp-mux");
            let caller_rtcp_port = match m.get_first_attribute_typed::<Rtcp>() {
                _ if mux => m.port,
                Some(rtcp) => rtcp.map_err(|e| anyhow!("{e:?}"))?.port,
                None => m.port + 1,
            };
            let socket = UdpSocket::bind("127.0.0.1:0")?;
            socket.set_read_timeout(Some(Duration::from_millis(50)))?;
            m.port = socket.local_addr()?.port();
            m.attributes.retain(|a| a.attribute != "rtcp");
            let rtcp_socket = if mux { None } else { Some(UdpSocket::bind("127.0.0.1:0")?) };
            if let Some(rtcp) = &rtcp_socket {
                // Deliberately not port + 1, so the caller must honour a=rtcp.
                m.attributes.push(Attribute::with_value("rtcp", rtcp.local_addr()?.port()));
            }
            let sender_ssrc = Arc::new(AtomicU32::new(0));
            let (forward, ssrc, stop) = (socket.try_clone()?, sender_ssrc.clone(), stop.clone());
            forwarders.push(thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                let mut seq = 0u16;
                while !stop.load(Ordering::SeqCst) {
                    let Ok((len, _)) = forward.recv_from(&mut buf) else { continue };
                    let packet = &mut buf[..len];
                    if len >= 12 && !is_rtcp(packet) {
                        ssrc.store(u32::from_be_bytes(packet[8..12].try_into().unwrap()), Ordering::SeqCst);
                        packet[2..4].copy_from_slice(&seq.to_be_bytes());
                        packet[8..12].copy_from_slice(&PEER_SSRC.to_be_bytes());
                        seq = seq.wrapping_add(1);
                        let _ = forward.send_to(packet, caller_rtp);
                    }
                }
            }));
            let caller_rtcp = SocketAddr::from(([127, 0, 0, 1], caller_rtcp_port));
            media.push(PeerMedia { kind, socket, caller_rtcp, sender_ssrc, _rtcp_socket: rtcp_socket });
        }
        Ok(Self { answer: session.to_string(), media, stop, forwarders })
    }

    /// Sends an RTCP PLI (RFC 4585 6.3.1) for the caller's `kind` stream to its RTCP port.
    fn send_pli(&self, kind: MediaKind) -> Result<()> {
        let m = self.media.iter().find(|m| m.kind == kind).context("no such m= line")?;
        let media_ssrc = m.sender_ssrc.load(Ordering::SeqCst);
        ensure!(media_ssrc != 0, "no RTP seen yet, so no SSRC to name in the PLI");
        // V=2, FMT=1 (PLI), PT=206 (payload-specific feedback), length 2 (32-bit words - 1).
        let mut pli = vec![0x81, 206, 0, 2];
        pli.extend_from_slice(&PEER_SSRC.to_be_bytes());
        pli.extend_from_slice(&media_ssrc.to_be_bytes());
        m.socket.send_to(&pli, m.caller_rtcp)?;
        Ok(())
    }
}

impl Drop for LoopbackPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.forwarders.drain(..).for_each(|f| f.join().unwrap());
    }
}

/// When each scripted event of a check happened.
struct Timeline {
    started: SystemTime,
    pli_at: SystemTime,
    killed_at: SystemTime,
    restarted_at: SystemTime,
    stopped_at: SystemTime,
    /// When the relay saw the last packet before the kill: on a loaded machine the sender
    /// lags, so this, not `killed_at`, is when the media stopped.
    last_video_before_gap: Option<SystemTime>,
    last_audio_before_gap: Option<SystemTime>,
}

fn at(t: SystemTime, offset_secs: f64) -> SystemTime {
    if offset_secs >= 0.0 {
        t + Duration::from_secs_f64(offset_secs)
    } else {
        t - Duration::from_secs_f64(-offset_secs)
    }
}

fn sleep(secs: f64) {
    thread::sleep(Duration::from_secs_f64(secs));
}

/// Panics on failure while the caller is alive, so that its logs are printed and its
/// recording is kept (see `Caller`'s Drop).
fn check_loopback(spec: &CallerSpec) -> String {
    let mut caller = Caller::new(spec.clone()).expect("creating the caller");
    let peer = LoopbackPeer::new(&caller.offer()).expect("creating the loopback peer");
    run_script(&mut caller, &peer).unwrap_or_else(|e| panic!("caller {}: {e:#}", spec.name))
}

/// Sends for 3.2 s (a PLI at 2 s), goes silent for 0.8 s, sends again for 3 s, then
/// judges the recording. Returns a line of measurements.
fn run_script(caller: &mut Caller, peer: &LoopbackPeer) -> Result<String> {
    caller.start_receiver()?;
    let started = SystemTime::now();
    caller.start_sender(&peer.answer)?;
    sleep(2.0);
    let pli_at = SystemTime::now();
    if caller.spec.video.is_some() {
        peer.send_pli(MediaKind::Video)?;
    }
    sleep(1.2);
    let killed_at = SystemTime::now();
    caller.kill_sender();
    sleep(0.8);
    let last_video_before_gap = caller.last_rtp_at(MediaKind::Video);
    let last_audio_before_gap = caller.last_rtp_at(MediaKind::Audio);
    let restarted_at = SystemTime::now();
    caller.start_sender(&peer.answer)?;
    sleep(3.0);
    let stopped_at = SystemTime::now();
    caller.stop_sender();
    sleep(0.3);
    let recording = caller.stop_receiver()?;
    let timeline =
        Timeline { started, pli_at, killed_at, restarted_at, stopped_at, last_video_before_gap, last_audio_before_gap };
    let mut report = format!("{:<14}", caller.spec.name);
    if caller.spec.video.is_some() {
        report += &check_video(caller, &video_frames(&recording)?, &timeline)?;
    }
    if caller.spec.audio.is_some() {
        report += &check_audio(caller, &audio_samples(&recording)?, &timeline)?;
    }
    Ok(report)
}

fn check_video(caller: &Caller, frames: &[Frame], t: &Timeline) -> Result<String> {
    let spec = &caller.spec;
    ensure!(!frames.is_empty(), "no video decoded");
    for frame in frames {
        ensure!((frame.width, frame.height) == spec.video_size, "size {}x{}", frame.width, frame.height);
        let colour = frame.colour(Rect::FULL.centre(0.5));
        ensure!(colour == Some(spec.colour), "expected {:?}, got {frame:?}", spec.colour);
    }
    let (before_gap, after_gap): (Vec<&Frame>, Vec<&Frame>) =
        frames.iter().partition(|f| f.wall_time < at(t.killed_at, 0.4));
    let (first, last_before) = (before_gap.first().context("no frames")?, before_gap.last().unwrap());
    let first_after = after_gap.first().context("no frames after the restart")?;

    // Wall-clock mapping, against instants known independently of ffmpeg: when the harness's
    // relay saw the first and the last packet, and when the test killed the sender.
    let first_vs_relay = elapsed(caller.first_rtp_at(MediaKind::Video).context("no video RTP")?, first.wall_time);
    let last_vs_relay = elapsed(t.last_video_before_gap.context("no video RTP")?, last_before.wall_time);
    let last_vs_kill = elapsed(t.killed_at, last_before.wall_time);
    for (what, secs) in [("first frame", first_vs_relay), ("last frame before the gap", last_vs_relay)] {
        ensure!(secs.abs() <= WALL_CLOCK_TOLERANCE, "{what} stamped {secs:.3} s from its packet's arrival");
    }
    ensure!(last_vs_kill <= WALL_CLOCK_TOLERANCE, "a frame stamped {last_vs_kill:.3} s after the kill");
    // Against process starts only loosely: gst-launch takes its time to start.
    let start_delay = elapsed(t.started, first.wall_time);
    let restart_delay = elapsed(t.restarted_at, first_after.wall_time);
    for (what, secs) in [("start", start_delay), ("restart", restart_delay)] {
        ensure!((0.0..=STARTUP_BOUND).contains(&secs), "first frame stamped {secs:.3} s after the sender's {what}");
    }

    // Away from each start: a freshly started sender on a loaded machine sends a burst.
    let fps = [
        fps_between(frames, at(first.wall_time, 0.5), at(last_before.wall_time, -0.1)),
        fps_between(frames, at(first_after.wall_time, 1.0), at(t.stopped_at, -0.1)),
    ];
    ensure!(fps.iter().all(|f| (28.5..=31.5).contains(f)), "fps {fps:?}");

    // The PLI must have reached the encoder: a keyframe soon after it, none before it.
    let keyframes: Vec<f64> = frames.iter().filter(|f| f.keyframe).map(|f| elapsed(t.pli_at, f.wall_time)).collect();
    let pli_response = keyframes.iter().copied().find(|&k| k >= 0.0).context("no keyframe after the PLI")?;
    ensure!(pli_response <= 0.3, "keyframe {pli_response:.3} s after the PLI");
    let spontaneous = keyframes.iter().filter(|&&k| k < 0.0 && k > elapsed(t.pli_at, first.wall_time) + 0.1).count();
    ensure!(spontaneous == 0, "{spontaneous} keyframes before the PLI: keyframes at {keyframes:?} s from the PLI");

    Ok(format!(
        " video {:?}: {} frames, fps {:.1}/{:.1}, first frame +{:.0} ms after start ({:+.0} ms from its packet), \
         last {:+.0} ms from its packet ({:+.0} ms from the kill), +{:.0} ms after restart, PLI->keyframe {:.0} ms;",
        spec.video.unwrap(),
        frames.len(),
        fps[0],
        fps[1],
        start_delay * 1e3,
        first_vs_relay * 1e3,
        last_vs_relay * 1e3,
        last_vs_kill * 1e3,
        restart_delay * 1e3,
        pli_response * 1e3
    ))
}

fn check_audio(caller: &Caller, audio: &Audio, t: &Timeline) -> Result<String> {
    let spec = &caller.spec;
    let start_vs_relay = elapsed(caller.first_rtp_at(MediaKind::Audio).context("no audio RTP")?, audio.start);
    ensure!(
        (-0.002..=WALL_CLOCK_TOLERANCE).contains(&start_vs_relay),
        "first sample stamped {start_vs_relay:.3} s after its packet arrived"
    );
    let start_delay = elapsed(t.started, audio.start);
    ensure!((0.0..=STARTUP_BOUND).contains(&start_delay), "first sample stamped {start_delay:.3} s after the start");
    let tone = spec.tone_hz;
    let other = tone * 1.37; // not a harmonic
    let expected_db = 20.0 * TONE_AMPLITUDE.log10();
    let last_packet = t.last_audio_before_gap.context("no audio RTP")?;
    let talking = [
        (at(audio.start, 0.5), at(last_packet, -0.1)),
        (at(t.stopped_at, -1.2), at(t.stopped_at, -0.2)),
        // Just before the last packet before the gap, the tone must still be there...
        (at(last_packet, -0.25), at(last_packet, -0.1)),
    ];
    let mut levels = Vec::new();
    for (t0, t1) in talking {
        let measured = audio.tone_levels_db(t0, t1, &[tone, other])?;
        let (level, other_level) = (measured[0], measured[1]);
        ensure!(
            (level - expected_db).abs() <= 3.0,
            "tone at {level:.1} dBFS, expected {expected_db:.1}, from {:.3} to {:.3} s after the first sample",
            elapsed(audio.start, t0),
            elapsed(audio.start, t1)
        );
        ensure!(level - other_level >= 30.0, "tone {level:.1} dB, {other} Hz {other_level:.1} dB");
        levels.push((level, other_level));
    }
    // ...and gone soon after it: silence was filled in where it belongs on the timeline.
    let silent = audio.tone_level_db(at(last_packet, WALL_CLOCK_TOLERANCE), t.restarted_at, tone)?;
    ensure!(silent <= expected_db - 40.0, "tone at {silent:.1} dBFS while the sender was dead");
    Ok(format!(
        " audio {:?}: tone {:.1} dBFS vs {:.1} dBFS at {other:.0} Hz, {silent:.0} dBFS while silent, \
         first sample +{:.0} ms after start ({:+.0} ms after its first packet)",
        spec.audio.unwrap(),
        levels[0].0,
        levels[0].1,
        start_delay * 1e3,
        start_vs_relay * 1e3
    ))
}

#[test]
fn loopback_media_is_judged_correctly() {
    let callers = [
        CallerSpec { keyframe_interval: NO_AUTOMATIC_KEYFRAMES, ..CallerSpec::new("h264-opus", Colour::Red, 500.0) },
        CallerSpec {
            video: Some(VideoCodec::Vp8),
            audio: Some(AudioCodec::Pcmu),
            keyframe_interval: NO_AUTOMATIC_KEYFRAMES,
            rtcp_mux: true,
            ..CallerSpec::new("vp8-pcmu", Colour::Green, 700.0)
        },
        CallerSpec {
            video: Some(VideoCodec::H264Pm0),
            audio: Some(AudioCodec::G722),
            video_size: (640, 480),
            keyframe_interval: NO_AUTOMATIC_KEYFRAMES,
            ..CallerSpec::new("h264pm0-g722", Colour::Blue, 1100.0)
        },
        CallerSpec {
            video: None,
            audio: Some(AudioCodec::Pcma),
            rtcp_mux: true,
            ..CallerSpec::new("pcma", Colour::Yellow, 1300.0)
        },
    ];
    // In parallel: each check mostly waits on the clock, and together they stay under 30 s.
    let checks: Vec<_> = callers.into_iter().map(|spec| thread::spawn(move || check_loopback(&spec))).collect();
    let failures = checks
        .into_iter()
        .filter_map(|check| match check.join() {
            Ok(report) => {
                println!("{report}");
                None
            }
            Err(panic) => Some(panic.downcast_ref::<String>().cloned().unwrap_or_else(|| format!("{panic:?}"))),
        })
        .collect::<Vec<_>>();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
