//! The heart of Tutti, end to end with real media: RTP callers on loopback
//! (gst-launch-1.0 senders, each a solid colour and a sine tone, over several
//! codecs) join one composition; ffmpeg records what Tutti sends back to each
//! and judges it by decoded pixels and tones.
//!
//! One test function walks through the phases of a call in order, so the
//! media processes never compete with another test's on this 2-core machine.

use anyhow::{Context, Result, ensure};
use crate::common::*;
use serde_json::json;
use std::thread::sleep;
use std::time::{Duration, SystemTime};
use tutti::model::ids::ParticipantId;
use tutti::model::slate::slate_colour;

const CANVAS: (u32, u32) = (640, 360);
/// Seconds of silence after which the server marks a caller stale (short, for the test).
const STALE_AFTER_SECS: u64 = 3;

fn spec(name: &str, colour: Colour, tone_hz: f64, video: VideoCodec, audio: AudioCodec) -> CallerSpec {
    CallerSpec { video: Some(video), audio: Some(audio), ..CallerSpec::new(name, colour, tone_hz) }
}

/// The colour in each cell of a 2x2 grid, row-major, judged on the middle
/// third of the cell (the picture is pillarboxed inside its cell).
fn grid_colours(frame: &Frame) -> Vec<Option<Colour>> {
    (0..4).map(|i| frame.colour(Rect::cell(2, 2, i % 2, i / 2).centre(0.33))).collect()
}

/// The frames recorded between `t0` and `t1`, with at least `min` of them.
fn frames_between(frames: &[Frame], t0: SystemTime, t1: SystemTime, min: usize) -> Result<Vec<&Frame>> {
    let chosen: Vec<&Frame> = frames.iter().filter(|f| f.wall_time >= t0 && f.wall_time < t1).collect();
    ensure!(chosen.len() >= min, "only {} frames between the two instants (wanted {min})", chosen.len());
    Ok(chosen)
}

fn participant_state(server: &Server, location: &str) -> Result<String> {
    let body = server.get(location)?.json()?;
    Ok(body["state"].as_str().context("participant without a state")?.to_string())
}

#[test]
fn callers_get_the_grid_and_their_mix_minus() {
    let server = Server::start_with(&["--stale-after-secs", &STALE_AFTER_SECS.to_string()]).unwrap();
    if let Err(e) = call(&server) {
        panic!("{e:?}\n--- server log ---\n{}", server.logs());
    }
}

fn call(server: &Server) -> Result<()> {
    let composition = server.create_composition(&json!({"video": {"width": CANVAS.0, "height": CANVAS.1, "fps": 30}}))?;

    // Three callers over every codec Tutti decodes and encodes; the last one uses rtcp-mux.
    let mut callers = vec![
        Caller::new(spec("red", Colour::Red, 500.0, VideoCodec::H264Pm1, AudioCodec::Opus))?,
        Caller::new(spec("green", Colour::Green, 700.0, VideoCodec::Vp8, AudioCodec::Pcmu))?,
        Caller::new(CallerSpec { rtcp_mux: true, ..spec("blue", Colour::Blue, 1100.0, VideoCodec::H264Pm0, AudioCodec::G722) })?,
    ];
    let mut locations = Vec::new();
    for caller in &mut callers {
        locations.push(caller.join(server, &composition)?.location);
    }
    // Let every return stream settle (first keyframes, jitter buffers).
    sleep(Duration::from_secs(3));
    let three_from = SystemTime::now();
    sleep(Duration::from_secs(2));
    let three_until = SystemTime::now();

    // A fourth caller joins (with a long GOP, as room systems often have).
    let mut yellow = Caller::new(CallerSpec {
        keyframe_interval: 300,
        ..spec("yellow", Colour::Yellow, 1300.0, VideoCodec::H264Pm1, AudioCodec::Pcma)
    })?;
    // Timed from its POST: its recorder, which starts before, is the test's own.
    let yellow_joined = yellow.join(server, &composition)?;
    let (fourth_joined, yellow_location) = (yellow_joined.posted_at, yellow_joined.location);
    sleep(Duration::from_secs(3));

    // The green caller goes silent: the others' return video must not slow down.
    callers[1].kill_sender();
    let silent_from = SystemTime::now();
    sleep(Duration::from_secs(STALE_AFTER_SECS + 1));
    let silent_until = SystemTime::now();
    let green_state = participant_state(server, &locations[1])?;
    let green_slate = slate_colour(&ParticipantId::from(locations[1].rsplit('/').next().unwrap_or_default().to_string()));
    let red_state = participant_state(server, &locations[0])?;

    // The fourth caller leaves: its cell empties, the others keep theirs.
    let left = SystemTime::now();
    let response = server.delete(&yellow_location)?;
    ensure!(response.status == 204, "DELETE of a participant answered {}", response.status);
    drop(yellow);
    sleep(Duration::from_millis(1500));

    // An audio-only caller takes the free cell as its slate.
    let mut voice = Caller::new(CallerSpec { video: None, ..spec("voice", Colour::White, 1300.0, VideoCodec::H264Pm1, AudioCodec::Opus) })?;
    let voice_joined = SystemTime::now();
    let voice_location = voice.join(server, &composition)?.location;
    let voice_slate = slate_colour(&ParticipantId::from(voice_location.rsplit('/').next().unwrap_or_default().to_string()));
    sleep(Duration::from_millis(2500));
    let voice_until = SystemTime::now();

    let mut recordings = Vec::new();
    for caller in &mut callers {
        recordings.push(caller.stop_receiver()?);
    }
    drop(voice);

    ensure!(green_state == "stale", "a caller silent for {STALE_AFTER_SECS}+ s is stale, got {green_state}");
    ensure!(red_state == "active", "a caller still sending is active, got {red_state}");

    let tones = [500.0, 700.0, 1100.0];
    let expected_three = [Some(Colour::Red), Some(Colour::Green), Some(Colour::Blue), Some(Colour::Black)];
    for (index, (caller, recording)) in callers.iter().zip(&recordings).enumerate() {
        let name = &caller.spec.name;
        let frames = video_frames(recording).with_context(|| format!("decoding {name}'s return video"))?;

        // Phase 1: three callers in a 2x2 grid, row-major in join order, the fourth cell black.
        for frame in frames_between(&frames, three_from, three_until, 40)? {
            ensure!(
                grid_colours(frame) == expected_three,
                "{name}'s composite at +{:.2} s shows {:?}, expected {expected_three:?}",
                elapsed(three_from, frame.wall_time),
                grid_colours(frame)
            );
        }

        // Phase 2: the fourth caller fills the last cell within 1 s of its POST.
        let first_full = frames
            .iter()
            .find(|f| f.wall_time > fourth_joined && grid_colours(f)[3] == Some(Colour::Yellow))
            .with_context(|| format!("{name} never saw the fourth caller"))?;
        let delay = elapsed(fourth_joined, first_full.wall_time);
        eprintln!("{name}: fourth caller visible {:.0} ms after its POST", delay * 1000.0);
        ensure!(delay <= 1.0, "{name} saw the full 2x2 grid {delay:.2} s after the fourth POST (limit 1 s)");
        let settled = first_full.wall_time + Duration::from_millis(200);
        for frame in frames_between(&frames, settled, silent_from, 30)? {
            ensure!(grid_colours(frame)[3] == Some(Colour::Yellow), "{name}: the fourth cell flickered back");
        }

        // Phase 3: with green silent, everyone else's return video keeps its frame rate.
        if index != 1 {
            let from = silent_from + Duration::from_millis(500);
            let fps = fps_between(&frames, from, silent_until);
            eprintln!("{name}: {fps:.1} fps while green was silent");
            ensure!(fps >= 29.0, "{name}'s return video fell to {fps:.1} fps while green was silent");
        }

        // Phase 4: a leave empties the cell within 1 s; an audio-only caller shows as a slate.
        for frame in frames_between(&frames, left + Duration::from_secs(1), voice_joined, 5)? {
            // Green, silent since phase 3, shows its slate rather than a frozen picture.
            let cells = grid_colours(frame);
            // Off-centre: its initials are written in the middle of the slate.
            let green_corner = Rect::cell(2, 2, 1, 0);
            let green_cell = frame.mean_color(Rect { x1: green_corner.x0 + 0.1, y1: green_corner.y0 + 0.1, ..green_corner });
            let expected = [Some(Colour::Red), None, Some(Colour::Blue), Some(Colour::Black)];
            ensure!(
                cells == expected && near(green_cell, green_slate, 30.0),
                "{name}: after the leave: {cells:?}, green's cell {green_cell:?} at +{:.2} s",
                elapsed(left, frame.wall_time)
            );
        }
        let slate = frames_between(&frames, voice_joined + Duration::from_secs(1), voice_until, 20)?;
        for frame in slate {
            // Off-centre: the caller's initials and name are written in the middle of the slate.
            let corner = Rect::cell(2, 2, 1, 1);
            let corner = Rect { x1: corner.x0 + 0.1, y1: corner.y0 + 0.1, ..corner };
            ensure!(near(frame.mean_color(corner), voice_slate, 30.0), "{name}: no slate for the audio-only caller: {:?}", frame.mean_color(corner));
            ensure!(grid_colours(frame)[0] == Some(Colour::Red), "{name}: the first cell moved: {:?} at +{:.2} s", grid_colours(frame), elapsed(voice_joined, frame.wall_time));
        }
        let fps = fps_between(&frames, voice_joined + Duration::from_millis(500), voice_until);
        ensure!(fps >= 29.0, "{name}'s return video fell to {fps:.1} fps with a slate on the canvas");

        // Mix-minus: the other two tones, and its own at least 30 dB below them.
        let audio = audio_samples(recording).with_context(|| format!("decoding {name}'s return audio"))?;
        let levels = audio.tone_levels_db(three_from, three_until, &tones)?;
        let own = levels[index];
        eprintln!("{name}: tone levels {:?} dBFS (own: {} Hz)", levels.iter().map(|l| (l * 10.0).round() / 10.0).collect::<Vec<_>>(), tones[index]);
        for (other, level) in levels.iter().enumerate().filter(|(i, _)| *i != index) {
            ensure!(*level > -30.0, "{name} hears {} Hz only at {level:.1} dBFS: {levels:?}", tones[other]);
            ensure!(
                own <= level - 30.0,
                "{name} hears itself at {own:.1} dBFS, not 30 dB below {} Hz at {level:.1} dBFS",
                tones[other]
            );
        }
    }
    Ok(())
}
