//! Room systems and old decoders, end to end with real media: callers whose
//! offers say what they can decode (`max-fs=396`, CIF) get the composite
//! scaled to fit, from one scaled encode they share, while a normal caller
//! keeps the whole canvas; a room-system offer with five m-lines (audio,
//! main video, slides, BFCP, FECC) joins through the API with its three
//! extras declined, and its audio and video flow both ways. When the CIF
//! callers leave, their encoder goes and the others' video does not stop.
//!
//! One test function in phases, so its media processes never compete with
//! another test's on this 2-core machine. The server's CPU is measured per
//! phase and printed: the cost of the scaled encode, and of sharing it.

use anyhow::{Context, Result, ensure};
use crate::common::*;
use serde_json::json;
use std::thread::sleep;
use std::time::{Duration, SystemTime};

const CANVAS: (u32, u32) = (640, 360);
/// What a CIF-only decoder announces (level 1.3, 396 macroblocks a frame), as Polycom writes it.
const CIF_DECODER: &str = "profile-level-id=42e00d; packetization-mode=1; max-fs=396; max-mbps=11880";
/// The largest 16:9 picture within 396 macroblocks, with even sides: 26x15 macroblocks.
const CIF_RETURN: (u32, u32) = (416, 234);
/// Time for a new caller's return streams to settle (first keyframes, jitter buffers).
const SETTLE: Duration = Duration::from_secs(3);
/// Each measured phase.
const WINDOW: Duration = Duration::from_secs(3);

#[test]
fn cif_callers_get_a_scaled_composite_and_a_room_system_joins_with_its_extras_declined() {
    let server = Server::start().unwrap();
    if let Err(e) = call(&server) {
        panic!("{e:?}\n--- server log ---\n{}", server.logs());
    }
}

/// The server's CPU use over the next `WINDOW`, in percent of one core.
fn cpu_percent(server: &Server) -> Result<f64> {
    let before = cpu_seconds(server.pid())?;
    sleep(WINDOW);
    Ok((cpu_seconds(server.pid())? - before) / WINDOW.as_secs_f64() * 100.0)
}

/// The composition's shared video encoders, as `/metrics` labels them.
fn encoders(server: &Server, composition: &str) -> Result<Vec<String>> {
    let metrics = server.get("/metrics")?.body;
    let prefix = format!("tutti_encoder_queue_frames{{composition=\"{composition}\",encoder=\"");
    let mut labels: Vec<String> =
        metrics.lines().filter_map(|line| line.strip_prefix(&prefix)?.split('"').next().map(str::to_string)).collect();
    labels.sort();
    Ok(labels)
}

fn call(server: &Server) -> Result<()> {
    let composition = server.create_composition(&json!({"video": {"width": CANVAS.0, "height": CANVAS.1, "fps": 30}}))?;

    let mut red = Caller::new(CallerSpec::new("red", Colour::Red, 500.0))?;
    let mut room = Caller::new(CallerSpec {
        audio: Some(AudioCodec::G722),
        room_system_extras: true,
        ..CallerSpec::new("room", Colour::Green, 1300.0)
    })?;
    red.join(server, &composition)?;
    // `join` checks through the answer that each extra is declined (port 0, same media).
    let room_answer = room.join(server, &composition)?.answer;
    for declined in ["m=video 0 RTP/AVP 97\r\n", "m=application 0 UDP/BFCP *\r\n", "m=application 0 RTP/AVP 125\r\n"] {
        ensure!(room_answer.contains(declined), "the room's answer lacks {declined:?}:\n{room_answer}");
    }
    sleep(SETTLE);
    let cpu_full_only = cpu_percent(server)?;

    let cif = |name: &str, colour, tone_hz| CallerSpec { video_fmtp: Some(CIF_DECODER), ..CallerSpec::new(name, colour, tone_hz) };
    let mut blue = Caller::new(cif("blue", Colour::Blue, 700.0))?;
    let blue_joined = blue.join(server, &composition)?;
    let blue_answer = blue_joined.answer;
    // Level 1.3 is what 416x234 at 30 fps needs, and all the caller takes: no larger claim.
    ensure!(
        blue_answer.contains("a=fmtp:96 profile-level-id=42e00d;packetization-mode=1;level-asymmetry-allowed=1\r\n"),
        "the CIF caller's answer claims more than level 1.3:\n{blue_answer}"
    );
    sleep(SETTLE);
    let cpu_one_scaled = cpu_percent(server)?;

    let mut yellow = Caller::new(cif("yellow", Colour::Yellow, 1100.0))?;
    let yellow_location = yellow.join(server, &composition)?.location;
    sleep(SETTLE);
    let four_from = SystemTime::now();
    let cpu_two_scaled = cpu_percent(server)?;
    let four_until = SystemTime::now();
    let shared = encoders(server, &composition)?;
    eprintln!(
        "server CPU (% of a core): {cpu_full_only:.0} with two full-canvas callers, {cpu_one_scaled:.0} with a CIF caller \
         added, {cpu_two_scaled:.0} with a second one sharing its encode"
    );
    // Full-canvas H.264 callers ride the broadcast's encode (no queue of their own);
    // both CIF callers share one scaled encode.
    let scaled = format!("h264-{}x{}", CIF_RETURN.0, CIF_RETURN.1);
    ensure!(shared == ["broadcast".to_string(), scaled.clone()], "encoders {shared:?}, expected the broadcast and one {scaled}");

    let mut callers = [red, room, blue, yellow];
    let mut recordings = Vec::new();
    for caller in &mut callers {
        recordings.push(caller.stop_receiver()?);
    }

    // Both CIF callers leave: their scaled encoder is stopped, and the
    // full-canvas callers' video goes on without a pause.
    callers[0].take_longest_rtp_gap(MediaKind::Video);
    for location in [&blue_joined.location, &yellow_location] {
        let status = server.delete(location)?.status;
        ensure!(status == 204, "DELETE of a CIF caller answered {status}");
    }
    wait_until("the scaled encoder to stop", Duration::from_secs(2), || Ok(encoders(server, &composition)? == ["broadcast"]))?;
    sleep(Duration::from_millis(500));
    let gap = callers[0].take_longest_rtp_gap(MediaKind::Video).unwrap_or_default();
    ensure!(gap < Duration::from_millis(200), "red's video paused {gap:?} while the scaled encoder went");

    // Join order fills the 2x2 grid row by row.
    let expected = [Some(Colour::Red), Some(Colour::Green), Some(Colour::Blue), Some(Colour::Yellow)];
    for (caller, recording) in callers.iter().zip(&recordings) {
        let name = &caller.spec.name;
        let limited = caller.spec.video_fmtp.is_some();
        let want_size = if limited { CIF_RETURN } else { CANVAS };
        let frames = video_frames(recording).with_context(|| format!("decoding {name}'s return video"))?;
        let window: Vec<&Frame> = frames.iter().filter(|f| f.wall_time >= four_from && f.wall_time < four_until).collect();
        ensure!(window.len() >= 60, "{name}: only {} frames in {WINDOW:?}", window.len());
        for frame in window {
            ensure!(
                (frame.width, frame.height) == want_size,
                "{name} got {}x{} frames, expected {}x{}",
                frame.width,
                frame.height,
                want_size.0,
                want_size.1
            );
            let cells: Vec<Option<Colour>> = (0..4).map(|i| frame.colour(Rect::cell(2, 2, i % 2, i / 2).centre(0.33))).collect();
            ensure!(cells == expected, "{name}'s composite at +{:.2} s shows {cells:?}", elapsed(four_from, frame.wall_time));
        }
        if limited {
            // The stream itself keeps to the level the answer named (its SPS, and so its bitrate).
            let level = h264_level(recording)?;
            ensure!(level <= 13, "{name}'s return video is marked level {level}, above the 1.3 it was answered");
            let macroblocks = want_size.0.div_ceil(16) * want_size.1.div_ceil(16);
            ensure!(macroblocks <= 396, "{name}: {macroblocks} macroblocks is more than CIF's 396");
            let (ratio, canvas_ratio) = (f64::from(want_size.0) / f64::from(want_size.1), f64::from(CANVAS.0) / f64::from(CANVAS.1));
            ensure!((ratio / canvas_ratio - 1.0).abs() < 0.01, "{name}: aspect {ratio:.3}, the canvas's {canvas_ratio:.3}");
        }
    }

    // The room system's audio works both ways: it hears the others, and they hear it.
    let tones = [500.0, 1300.0, 700.0, 1100.0];
    for (index, (caller, recording)) in callers.iter().zip(&recordings).enumerate().take(2) {
        let name = &caller.spec.name;
        let audio = audio_samples(recording).with_context(|| format!("decoding {name}'s return audio"))?;
        let levels = audio.tone_levels_db(four_from, four_until, &tones)?;
        eprintln!("{name}: tone levels {levels:?} dBFS");
        for (other, level) in levels.iter().enumerate().filter(|(i, _)| *i != index) {
            ensure!(*level > -30.0, "{name} hears {} Hz only at {level:.1} dBFS: {levels:?}", tones[other]);
            ensure!(levels[index] <= level - 30.0, "{name} hears itself at {:.1} dBFS: {levels:?}", levels[index]);
        }
    }
    Ok(())
}
