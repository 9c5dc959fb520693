//! RTP bleed: a stranger who finds a caller's ports sends its own picture and
//! tone there, in the caller's own codecs and payload types (so it would
//! decode). Nobody must see or hear it, the caller must stay undisturbed, and
//! the caller's `packets_rejected` must show it — while `packets_received`
//! counts only the caller's own packets and never goes down.
//!
//! The stranger is a second gst-launch sender (the harness's `Caller`)
//! pointed at the first caller's answer.

use anyhow::{Context, Result, ensure};
use crate::common::*;
use serde_json::{Value, json};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime};

const CANVAS: (u32, u32) = (640, 360);
const RED_HZ: f64 = 500.0;
const GREEN_HZ: f64 = 700.0;
const STRANGER_HZ: f64 = 1300.0;
/// How long the stranger sends, and how often the caller's stats are read meanwhile.
const ATTACK: Duration = Duration::from_secs(5);
const POLL_EVERY: Duration = Duration::from_millis(200);
/// Opus at 20 ms per packet.
const AUDIO_PACKETS_PER_SECOND: f64 = 50.0;


/// One GET of a participant's `audio` and `video` stats.
struct Reading {
    at: SystemTime,
    received: [u64; 2],
    rejected: [u64; 2],
}

fn read_stats(server: &Server, location: &str) -> Result<Reading> {
    let body = server.get(location)?.json()?;
    let field = |medium: &str, name: &str| -> Result<u64> {
        body[medium][name].as_u64().with_context(|| format!("{medium}.{name} is not a count ≥ 0: {body}"))
    };
    for medium in ["audio", "video"] {
        field(medium, "packets_lost")?;
    }
    Ok(Reading {
        at: SystemTime::now(),
        received: [field("audio", "packets_received")?, field("video", "packets_received")?],
        rejected: [field("audio", "packets_rejected")?, field("video", "packets_rejected")?],
    })
}

/// What each caller receives shows red and green in their cells and never
/// the stranger's blue; each hears the other and never the stranger's tone.
fn judge_recordings(red: &mut Caller, green: &mut Caller, from: SystemTime, until: SystemTime) -> Result<()> {
    for (caller, other_hz) in [(red, GREEN_HZ), (green, RED_HZ)] {
        let name = caller.spec.name.clone();
        let recording = caller.stop_receiver()?;
        let frames = video_frames(&recording).with_context(|| format!("decoding {name}'s return video"))?;
        let during: Vec<&Frame> = frames.iter().filter(|f| f.wall_time >= from && f.wall_time < until).collect();
        ensure!(during.len() as f64 >= 25.0 * elapsed(from, until), "{name}: only {} frames while the stranger sent", during.len());
        for frame in &during {
            ensure!(
                side_by_side(frame) == [Some(Colour::Red), Some(Colour::Green)],
                "{name}'s composite at +{:.2} s shows {:?} while the stranger sent",
                elapsed(from, frame.wall_time),
                side_by_side(frame)
            );
        }
        let audio = audio_samples(&recording).with_context(|| format!("decoding {name}'s return audio"))?;
        let [other, stranger] = audio.tone_levels_db(from, until, &[other_hz, STRANGER_HZ])?[..] else { unreachable!() };
        eprintln!("{name} hears {other_hz} Hz at {other:.1} dBFS, the stranger's {STRANGER_HZ} Hz at {stranger:.1} dBFS");
        ensure!(other > -30.0, "{name} no longer hears {other_hz} Hz ({other:.1} dBFS)");
        ensure!(stranger < other - 40.0, "{name} hears the stranger at {stranger:.1} dBFS (the other caller at {other:.1})");
    }
    Ok(())
}

#[test]
fn a_stranger_at_a_callers_ports_is_neither_seen_nor_heard_and_is_counted() {
    with_server(&[], |server| {
        let composition = server.create_composition(&json!({"video": {"width": CANVAS.0, "height": CANVAS.1, "fps": 30}}))?;
        let mut red = Caller::new(CallerSpec::new("red", Colour::Red, RED_HZ))?;
        let mut green = Caller::new(CallerSpec::new("green", Colour::Green, GREEN_HZ))?;
        let red_joined = red.join(server, &composition)?;
        green.join(server, &composition)?;
        sleep(Duration::from_secs(3));

        let before = read_stats(server, &red_joined.location)?;
        ensure!(before.received.iter().all(|&n| n > 0), "red's media is not counted: {:?}", before.received);
        ensure!(before.rejected == [0, 0], "packets rejected before any stranger: {:?}", before.rejected);

        // Same codecs and payload types as red, sent to red's ports from another socket.
        let mut stranger = Caller::new(CallerSpec::new("stranger", Colour::Blue, STRANGER_HZ))?;
        stranger.start_sender(&red_joined.answer)?;
        let attack_from = SystemTime::now();
        let mut readings = vec![read_stats(server, &red_joined.location)?];
        let deadline = Instant::now() + ATTACK;
        while Instant::now() < deadline {
            sleep(POLL_EVERY);
            readings.push(read_stats(server, &red_joined.location)?);
        }
        let attack_until = SystemTime::now();
        stranger.kill_sender();
        sleep(Duration::from_millis(500));

        // packets_received never goes down; packets_rejected climbs all along.
        for pair in readings.windows(2) {
            for medium in 0..2 {
                ensure!(pair[1].received[medium] >= pair[0].received[medium], "packets_received went down: {:?} → {:?}", pair[0].received, pair[1].received);
                ensure!(pair[1].rejected[medium] >= pair[0].rejected[medium], "packets_rejected went down");
            }
        }
        let (first, last) = (&readings[0], readings.last().expect("at least one reading"));
        let half = &readings[readings.len() / 2];
        for medium in 0..2 {
            ensure!(
                first.rejected[medium] < half.rejected[medium] && half.rejected[medium] < last.rejected[medium],
                "packets_rejected does not rise through the attack: {} → {} → {}",
                first.rejected[medium],
                half.rejected[medium],
                last.rejected[medium]
            );
        }
        // Red's own audio rate, not red's plus the stranger's.
        let seconds = elapsed(first.at, last.at);
        let audio_rate = (last.received[0] - first.received[0]) as f64 / seconds;
        eprintln!(
            "during {seconds:.1} s: red's audio {audio_rate:.1} packets/s accepted; rejected audio {}, video {}",
            last.rejected[0] - first.rejected[0],
            last.rejected[1] - first.rejected[1]
        );
        ensure!(
            (0.8 * AUDIO_PACKETS_PER_SECOND..=1.1 * AUDIO_PACKETS_PER_SECOND).contains(&audio_rate),
            "red's accepted audio ran at {audio_rate:.1} packets/s (its own rate is {AUDIO_PACKETS_PER_SECOND})"
        );
        judge_recordings(&mut red, &mut green, attack_from, attack_until)
    });
}

#[test]
fn strict_refuses_a_stranger_from_another_address_even_before_the_caller_speaks() {
    with_server(&["--rtp-source-check", "strict"], |server| {
        let composition = server.create_composition(&json!({"video": {"width": CANVAS.0, "height": CANVAS.1, "fps": 30}}))?;
        let mut red = Caller::new(CallerSpec::new("red", Colour::Red, RED_HZ))?;
        let mut green = Caller::new(CallerSpec::new("green", Colour::Green, GREEN_HZ))?;
        // Red's offer is posted, but a stranger on another host gets to red's ports first:
        // under `latch` it would hold them; `strict` wants the offer's address (127.0.0.1).
        red.start_receiver()?;
        let red_joined = server.add_participant(&composition, &red.offer())?;
        let mut stranger = Caller::new(CallerSpec {
            send_from: Some("127.0.0.2".parse()?),
            ..CallerSpec::new("stranger", Colour::Blue, STRANGER_HZ)
        })?;
        stranger.start_sender(&red_joined.answer)?;
        sleep(Duration::from_secs(1));
        let early = read_stats(server, &red_joined.location)?;
        ensure!(early.received == [0, 0], "packets from 127.0.0.2 were taken: {:?}", early.received);
        ensure!(early.rejected.iter().all(|&n| n > 0), "the stranger's packets are not counted: {:?}", early.rejected);

        red.start_sender(&red_joined.answer)?;
        green.join(server, &composition)?;
        sleep(Duration::from_secs(3));
        let from = SystemTime::now();
        sleep(Duration::from_secs(3));
        let until = SystemTime::now();
        let later = read_stats(server, &red_joined.location)?;
        ensure!(later.received.iter().all(|&n| n > 0), "red's own media is not taken: {:?}", later.received);
        ensure!(later.rejected.iter().zip(early.rejected).all(|(&l, e)| l > e), "the stranger is no longer counted");
        stranger.kill_sender();
        judge_recordings(&mut red, &mut green, from, until)
    });
}

/// The participant view's codec fields (what operators and the web page read).
#[test]
fn codecs_are_shown_as_fields() {
    with_server(&[], |server| {
        let composition = server.create_composition(&json!({"video": {"width": CANVAS.0, "height": CANVAS.1, "fps": 30}}))?;
        let offer = |video: VideoCodec, audio: AudioCodec| -> Result<Value> {
            let caller = Caller::new(CallerSpec { video: Some(video), audio: Some(audio), ..CallerSpec::new("c", Colour::Red, RED_HZ) })?;
            let joined = server.add_participant(&composition, &caller.offer())?;
            server.get(&joined.location)?.json()
        };
        let h264 = offer(VideoCodec::H264Pm0, AudioCodec::Opus)?;
        ensure!(h264["video"]["codec"] == "h264" && h264["video"]["packetization_mode"] == 0, "{h264}");
        ensure!(h264["audio"]["codec"] == "opus" && h264["audio"]["stereo"] == false, "{h264}");
        let vp8 = offer(VideoCodec::Vp8, AudioCodec::G722)?;
        ensure!(vp8["video"]["codec"] == "vp8" && vp8["video"].get("packetization_mode").is_none(), "{vp8}");
        ensure!(vp8["audio"]["codec"] == "g722" && vp8["audio"].get("stereo").is_none(), "{vp8}");
        Ok(())
    });
}
