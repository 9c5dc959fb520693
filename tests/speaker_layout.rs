//! The `speaker` layout follows who talks, on the picture, and never a
//! cough. Red and blue take turns (a tone on for 3.5 s of every 4 s, from
//! WAV clips made by ffmpeg's `aevalsrc`), each making two 200 ms bursts
//! during the other's turns; the composition shows the speaker large with
//! the other in the strip below, with the speaker's border on.
//!
//! Judged in red's return video, decoded by ffmpeg: from each turn's onset
//! (read from the other caller's return audio, as in
//! `tests/active_speaker.rs`) the large picture shows the talker within
//! 1.5 s, and keeps showing it, through the other's bursts, until the next
//! turn; the strip shows the other one all the while.

use anyhow::{Context, Result, ensure};
use crate::common::turns::*;
use crate::common::*;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime};

/// What the issue asks: the picture follows within 1.5 s of an onset.
const SWITCH_LIMIT_SECS: f64 = 1.5;
const TONE_THRESHOLD_DB: f64 = -30.0;
const CANVAS: (u32, u32) = (640, 360);

#[test]
fn the_speaker_layout_shows_who_talks_large_within_1_5_s_and_never_a_burst() {
    let server = Server::start().unwrap();
    if let Err(e) = follow(&server) {
        panic!("{e:?}\n--- server log ---\n{}", server.logs());
    }
}

fn follow(server: &Server) -> Result<()> {
    let composition = server.create_composition(&json!({
        "video": {"width": CANVAS.0, "height": CANVAS.1},
        "layout": {"kind": "speaker", "strip": "bottom", "highlight_speaker": true, "labels": false},
    }))?;
    let clips = tempfile::tempdir()?;
    let (colours, tones) = ([Colour::Red, Colour::Blue], [500.0, 700.0]);
    let mut callers = Vec::new();
    let mut answers = Vec::new();
    for (who, name) in ["red", "blue"].into_iter().enumerate() {
        let clip = clips.path().join(format!("{name}.wav"));
        gated_tone_wav(&clip, tones[who], TONE_AMPLITUDE, CLIP_SECS, &turn_schedule(who))?;
        let mut caller = Caller::new(CallerSpec { audio_clip: Some(clip), ..CallerSpec::new(name, colours[who], tones[who]) })?;
        caller.start_receiver()?;
        answers.push(server.add_participant(&composition, &caller.offer())?.answer);
        callers.push(caller);
    }
    for (caller, answer) in callers.iter_mut().zip(&answers) {
        caller.start_sender(answer)?;
    }
    // Where the speaker and the strip are, from the API once somebody has
    // spoken: the largest rectangle is the speaker's.
    let started = SystemTime::now();
    let rects = loop {
        let view: Value = server.get(&format!("/v1/compositions/{composition}"))?.json()?;
        let mut rects: Vec<[u32; 4]> = view["participants"]
            .as_array()
            .context("participants")?
            .iter()
            .map(|p| ["x", "y", "width", "height"].map(|k| p["rect"][k].as_u64().unwrap_or(0) as u32))
            .filter(|r| r[2] > 0)
            .collect();
        if view["active_speaker"].is_string() && rects.len() == 2 {
            rects.sort_by_key(|r| std::cmp::Reverse(r[2] * r[3]));
            break rects;
        }
        ensure!(elapsed(started, SystemTime::now()) < LEAD_SECS + SWITCH_LIMIT_SECS + 2.0, "no active speaker in {view}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let spot = |r: [u32; 4]| {
        let (w, h) = (f64::from(CANVAS.0), f64::from(CANVAS.1));
        Rect { x0: f64::from(r[0]) / w, y0: f64::from(r[1]) / h, x1: f64::from(r[0] + r[2]) / w, y1: f64::from(r[1] + r[3]) / h }
            .centre(0.3)
    };
    let (large, small) = (spot(rects[0]), spot(rects[1]));
    std::thread::sleep(Duration::from_secs_f64(CLIP_SECS - elapsed(started, SystemTime::now()).min(CLIP_SECS)));

    let red_return = callers[0].stop_receiver()?;
    let blue_return = callers[1].stop_receiver()?;
    let frames = video_frames(&red_return).context("decoding red's return video")?;
    let heard = [audio_samples(&blue_return)?, audio_samples(&red_return)?];
    let mut onsets = Vec::new();
    for who in 0..2 {
        // A caller's first block late for its tick is a 20 ms hole in the mix
        // (src/media/mixer.rs keeps a block in reserve from then on): at most one.
        let (intervals, holes) = close_holes(heard[who].tone_intervals(tones[who], TONE_THRESHOLD_DB));
        eprintln!("caller {who}'s tone as the other heard it: holes at {holes:?} s");
        ensure!(holes.len() <= 1, "{} holes in caller {who}'s tone: {holes:?} s", holes.len());
        for (from, to) in intervals {
            if elapsed(from, to) > TONE_SECS - 0.5 {
                onsets.push((from, who));
            }
        }
    }
    onsets.sort_by_key(|(at, _)| *at);
    let whos: Vec<usize> = onsets.iter().map(|(_, who)| *who).collect();
    ensure!(whos == [0, 1, 0, 1, 0, 1], "turns heard: {whos:?}");

    let mut switches = Vec::new();
    for (turn, &(onset, who)) in onsets.iter().enumerate() {
        let next = onsets.get(turn + 1).map_or(frames.last().context("no frames")?.wall_time, |(at, _)| *at);
        let in_turn: Vec<&Frame> = frames.iter().filter(|f| f.wall_time >= onset && f.wall_time < next).collect();
        let shown = in_turn
            .iter()
            .find(|f| f.colour(large) == Some(colours[who]))
            .with_context(|| format!("turn {turn}: {:?} never shown large", colours[who]))?;
        let switch = elapsed(onset, shown.wall_time);
        eprintln!("turn {turn} ({:?}): large {:.0} ms after the onset", colours[who], switch * 1000.0);
        ensure!(switch <= SWITCH_LIMIT_SECS, "turn {turn}: shown large {switch:.2} s after the onset");
        switches.push(switch);
        // From then until the next turn (the other's two bursts fall in it): the talker
        // large, the other in the strip; not one frame otherwise.
        for frame in in_turn.iter().filter(|f| f.wall_time >= shown.wall_time) {
            let at = elapsed(onset, frame.wall_time);
            ensure!(
                frame.colour(large) == Some(colours[who]) && frame.colour(small) == Some(colours[1 - who]),
                "turn {turn} at +{at:.2} s: large {:?}, strip {:?}",
                frame.colour(large),
                frame.colour(small)
            );
        }
    }
    switches.sort_by(f64::total_cmp);
    eprintln!(
        "onset -> speaker shown large: min {:.0} ms, median {:.0} ms, max {:.0} ms over {} turns",
        switches[0] * 1000.0,
        switches[switches.len() / 2] * 1000.0,
        switches[switches.len() - 1] * 1000.0,
        switches.len()
    );
    Ok(())
}
