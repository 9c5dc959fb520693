//! Names, slates and branding on the picture, judged on what callers receive (ffmpeg
//! decodes the return stream, tesseract reads the text) and on the embedded RTMP stream.
//!
//! - labels: each caller's name in its own cell, re-drawn on a rename, gone with
//!   `"labels": false` (the cell then its plain colour);
//! - slates: an audio-only caller's colour and initials; a video-muted caller's slate and
//!   its picture back on unmute; a stopped sender's slate within 2 s and its picture back
//!   when it resumes; the other cells and the frame rate untouched throughout;
//! - branding: a background colour and image where no caller is, an overlay PNG with alpha
//!   above a caller, and a PUT naming a missing image refused with a 400 that changes nothing.

mod common;

use anyhow::{Context, Result, ensure};
use common::*;
use reqwest::Method;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, SystemTime};
use tutti::model::ids::ParticipantId;
use tutti::model::slate::slate_colour;

/// Two 4:3 cells side by side: the callers' 320x240 pictures fill them, no bars.
const WIDE: (u32, u32) = (1280, 480);
/// How far a decoded slate may be from its palette colour (codec and YUV round trips
/// move a flat colour by < 20).
const SLATE_TOLERANCE: f64 = 30.0;

fn run(server: &Server, test: impl FnOnce(&Server) -> Result<()>) {
    if let Err(e) = test(server) {
        panic!("{e:?}\n--- server log ---\n{}", server.logs());
    }
}

fn patch(server: &Server, location: &str, body: serde_json::Value) -> Result<HttpResponse> {
    server.send(server.request(Method::PATCH, location).json(&body))
}

fn put_layout(server: &Server, composition: &str, body: serde_json::Value) -> Result<HttpResponse> {
    server.send(server.request(Method::PUT, &format!("/v1/compositions/{composition}/layout")).json(&body))
}

fn participant_id(location: &str) -> ParticipantId {
    ParticipantId::from(location.rsplit('/').next().unwrap_or_default().to_string())
}

/// The frames stamped in `[t0, t1)`, at least `min` of them.
fn frames_between(frames: &[Frame], t0: SystemTime, t1: SystemTime, min: usize) -> Result<Vec<&Frame>> {
    let picked: Vec<&Frame> = frames.iter().filter(|f| f.wall_time >= t0 && f.wall_time < t1).collect();
    ensure!(picked.len() >= min, "{} frames between {t0:?} and {t1:?}, expected {min}+", picked.len());
    Ok(picked)
}

/// Where a short name's label is drawn: bottom left of its cell, its text a twelfth
/// of the cell high, half that off the edges.
fn label_area(cell: Rect) -> Rect {
    let (w, h) = (cell.x1 - cell.x0, cell.y1 - cell.y0);
    Rect { x0: cell.x0 + w * 0.03, y0: cell.y0 + h * 0.87, x1: cell.x0 + w * 0.15, y1: cell.y0 + h * 0.94 }
}

#[test]
fn names_are_drawn_in_their_own_cells_follow_a_rename_and_go_with_labels_off() {
    run(&Server::start().unwrap(), |server| {
        let composition = server.create_composition(&json!({"video": {"width": WIDE.0, "height": WIDE.1, "fps": 30}}))?;
        let mut ada = Caller::new(CallerSpec::new("Ada", Colour::Red, 500.0))?;
        let mut grace = Caller::new(CallerSpec::new("Grace", Colour::Blue, 700.0))?;
        ada.join_named(server, &composition)?;
        let grace_location = grace.join_named(server, &composition)?.location;
        sleep(Duration::from_secs(3));
        let named = SystemTime::now();

        let response = patch(server, &grace_location, json!({"name": "Hopper"}))?;
        ensure!(response.status == 200, "PATCH name: {response:?}");
        sleep(Duration::from_secs(2));
        let renamed = SystemTime::now();

        let response = put_layout(server, &composition, json!({"kind": "grid", "labels": false}))?;
        ensure!(response.status == 200, "PUT labels false: {response:?}");
        sleep(Duration::from_secs(2));
        let unlabelled = SystemTime::now();
        sleep(Duration::from_secs(1));
        let recording = ada.stop_receiver()?;
        std::fs::copy(&recording, "/tmp/labels-debug.mkv")?;

        let (left, right) = (Rect::cell(2, 1, 0, 0), Rect::cell(2, 1, 1, 0));
        let (left_text, right_text) = (read_text(&recording, named, left)?, read_text(&recording, named, right)?);
        eprintln!("labels: left {left_text:?}, right {right_text:?}");
        ensure!(left_text.contains("Ada") && !left_text.contains("Grace"), "left cell reads {left_text:?}, expected Ada only");
        ensure!(right_text.contains("Grace") && !right_text.contains("Ada"), "right cell reads {right_text:?}, expected Grace only");

        let right_text = read_text(&recording, renamed, right)?;
        eprintln!("after the rename: right {right_text:?}");
        ensure!(right_text.contains("Hopper") && !right_text.contains("Grace"), "after the rename the right cell reads {right_text:?}");

        let texts = [read_text(&recording, unlabelled, left)?, read_text(&recording, unlabelled, right)?];
        ensure!(texts.iter().all(|t| !["Ada", "Grace", "Hopper"].iter().any(|n| t.contains(n))), "labels off, still reads {texts:?}");
        let frames = video_frames(&recording)?;
        let frame = frames.iter().find(|f| f.wall_time >= unlabelled).context("no frame after labels off")?;
        for (cell, colour) in [(left, Colour::Red), (right, Colour::Blue)] {
            let measured = frame.mean_color(label_area(cell));
            ensure!(Colour::classify(measured) == Some(colour), "labels off: the label area is {measured:?}, not plain {colour:?}");
        }
        // And with labels on, the same area was not plain: the band and the text were there.
        let labelled = frames.iter().find(|f| f.wall_time >= named).context("no frame with labels")?;
        ensure!(labelled.colour(label_area(left)) != Some(Colour::Red), "with labels on the label area is plain red");
        Ok(())
    });
}
