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

use anyhow::{Context, Result, ensure};
use crate::common::*;
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
        // Read well before the rename: the composite is on the wire ~10 ms after a change.
        sleep(Duration::from_millis(500));

        let response = patch(server, &grace_location, json!({"name": "Hopper"}))?;
        ensure!(response.status == 200, "PATCH name: {response:?}");
        sleep(Duration::from_secs(2));
        let renamed = SystemTime::now();
        sleep(Duration::from_millis(500));

        let response = put_layout(server, &composition, json!({"kind": "grid", "labels": false}))?;
        ensure!(response.status == 200, "PUT labels false: {response:?}");
        sleep(Duration::from_secs(2));
        let unlabelled = SystemTime::now();
        sleep(Duration::from_secs(1));
        let recording = ada.stop_receiver()?;

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

/// The top left tenth of a cell: clear of a slate's text and a label.
fn corner(cell: Rect) -> Rect {
    let (w, h) = (cell.x1 - cell.x0, cell.y1 - cell.y0);
    Rect { x0: cell.x0 + w * 0.02, y0: cell.y0 + h * 0.02, x1: cell.x0 + w * 0.12, y1: cell.y0 + h * 0.12 }
}

/// When `pick` first holds from `from` on, and whether it then holds on every frame in
/// `[settled, until)` (at least 20 of them).
fn switch_time(frames: &[Frame], from: SystemTime, settled: SystemTime, until: SystemTime, what: &str, pick: impl Fn(&Frame) -> bool) -> Result<f64> {
    let first = frames.iter().find(|f| f.wall_time >= from && pick(f)).with_context(|| format!("never: {what}"))?;
    for frame in frames_between(frames, settled, until, 20)? {
        ensure!(pick(frame), "{what}: not so at +{:.2} s: {frame:?}", elapsed(from, frame.wall_time));
    }
    Ok(elapsed(from, first.wall_time))
}

#[test]
fn slates_stand_in_for_missing_muted_and_stopped_video() {
    run(&Server::start().unwrap(), |server| {
        // A 2x2 grid of 4:3 cells, so the callers' pictures fill theirs.
        let composition = server.create_composition(&json!({"video": {"width": 960, "height": 720, "fps": 30}}))?;
        let mut ada = Caller::new(CallerSpec::new("Ada", Colour::Red, 500.0))?;
        let mut grace = Caller::new(CallerSpec { video: None, ..CallerSpec::new("Grace Hopper", Colour::White, 700.0) })?;
        let mut linus = Caller::new(CallerSpec::new("Linus", Colour::Blue, 1100.0))?;
        let ada_joined = ada.join_named(server, &composition)?;
        let grace_location = grace.join_named(server, &composition)?.location;
        let linus_location = linus.join_named(server, &composition)?.location;
        let [ada_cell, grace_cell, linus_cell, empty_cell] = [(0, 0), (1, 0), (0, 1), (1, 1)].map(|(c, r)| Rect::cell(2, 2, c, r));
        let grace_slate = slate_colour(&participant_id(&grace_location));
        let linus_slate = slate_colour(&participant_id(&linus_location));
        let ada_slate = slate_colour(&participant_id(&ada_joined.location));

        // Every cell shrinks a little while the videos show: their slates
        // are rendered at the new size only when one is about to be shown.
        sleep(Duration::from_secs(2));
        ensure!(put_layout(server, &composition, json!({"kind": "grid", "gap": 4}))?.status == 200, "PUT a grid with gaps");
        sleep(Duration::from_secs(1));
        let steady = SystemTime::now();
        sleep(Duration::from_secs(2));

        let muted = SystemTime::now();
        ensure!(patch(server, &linus_location, json!({"video": {"muted": true}}))?.status == 200, "PATCH video.muted");
        sleep(Duration::from_secs(2));
        let unmuted = SystemTime::now();
        ensure!(patch(server, &linus_location, json!({"video": {"muted": false}}))?.status == 200, "PATCH video unmuted");
        sleep(Duration::from_secs(2));

        let stopped = SystemTime::now();
        ada.kill_sender();
        sleep(Duration::from_secs(3));
        let resumed = SystemTime::now();
        ada.start_sender(&ada_joined.answer)?;
        sleep(Duration::from_secs(3));
        let end = SystemTime::now();
        let recording = linus.stop_receiver()?;
        let frames = video_frames(&recording)?;
        let second = Duration::from_secs(1);

        // An audio-only caller: its colour, its initials and its name.
        let slate_text = read_text(&recording, steady, grace_cell)?;
        eprintln!("audio-only slate reads {slate_text:?}");
        ensure!(slate_text.contains("GH"), "the audio-only caller's slate reads {slate_text:?}, expected its initials GH");
        let is = |cell: Rect, rgb: [u8; 3]| move |f: &Frame| near(f.mean_color(corner(cell)), rgb, SLATE_TOLERANCE);
        let colour = |cell: Rect, colour: Colour| move |f: &Frame| f.colour(cell.centre(0.5)) == Some(colour);
        let others_steady = |f: &Frame| colour(ada_cell, Colour::Red)(f) && is(grace_cell, grace_slate)(f) && colour(empty_cell, Colour::Black)(f);
        switch_time(&frames, steady, steady, muted, "the audio-only caller's slate colour", |f| {
            is(grace_cell, grace_slate)(f) && colour(ada_cell, Colour::Red)(f) && colour(linus_cell, Colour::Blue)(f)
        })?;

        // Video muted: its slate, the others untouched; unmuted: its picture again.
        let to_slate = switch_time(&frames, muted, muted + second, unmuted, "the muted caller's slate", |f| {
            is(linus_cell, linus_slate)(f) && others_steady(f)
        })?;
        let to_picture = switch_time(&frames, unmuted, unmuted + second, stopped, "the unmuted caller's picture", |f| {
            colour(linus_cell, Colour::Blue)(f) && others_steady(f)
        })?;

        // Its sender stops: its slate within 2 s; it resumes: its picture again.
        let grace_and_linus = |f: &Frame| is(grace_cell, grace_slate)(f) && colour(linus_cell, Colour::Blue)(f);
        let to_stopped_slate = switch_time(&frames, stopped, stopped + 2 * second, resumed, "the stopped caller's slate", |f| {
            is(ada_cell, ada_slate)(f) && grace_and_linus(f)
        })?;
        let to_resumed = switch_time(&frames, resumed, resumed + 2 * second, end, "the resumed caller's picture", |f| {
            colour(ada_cell, Colour::Red)(f) && grace_and_linus(f)
        })?;
        eprintln!(
            "switches: muted→slate {to_slate:.2} s, unmuted→picture {to_picture:.2} s, stopped→slate {to_stopped_slate:.2} s, resumed→picture {to_resumed:.2} s"
        );
        ensure!(to_slate <= 0.5 && to_picture <= 1.0, "mute switches took {to_slate:.2} s and {to_picture:.2} s");
        ensure!(to_stopped_slate <= 2.0, "a stopped sender's slate came after {to_stopped_slate:.2} s");
        ensure!(to_resumed <= 2.0, "a resumed sender's picture came back after {to_resumed:.2} s");
        let fps = fps_between(&frames, steady, end);
        ensure!(fps >= 29.0, "the return stream fell to {fps:.1} fps");
        Ok(())
    });
}

/// Makes `name` in `dir` with ffmpeg from a lavfi filter graph.
fn make_image(dir: &Path, name: &str, inputs: &[&str], graph: &str) -> Result<()> {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error"]);
    for input in inputs {
        cmd.args(["-f", "lavfi", "-i", input]);
    }
    cmd.args(["-filter_complex", graph, "-frames:v", "1", "-y"]).arg(dir.join(name));
    let status = cmd.status()?;
    ensure!(status.success(), "ffmpeg could not make {name}");
    Ok(())
}

/// The named colour of each of `rects` in most of 10 frames of the live stream.
fn stream_colours(url: &str, rects: &[Rect]) -> Result<Vec<Option<Colour>>> {
    rects
        .iter()
        .map(|&rect| {
            let colours: Vec<Option<Colour>> = live_stream_colours(url, 10, rect)?.into_iter().map(Colour::classify).collect();
            // The last frames: the first may still be from before a change.
            Ok(colours[colours.len() - 1])
        })
        .collect()
}

#[test]
fn background_and_overlays_change_live_and_a_missing_image_is_refused() {
    let branding = tempfile::tempdir().unwrap();
    let dir = branding.path().to_str().unwrap().to_owned();
    run(&Server::start_with(&["--branding-dir", &dir]).unwrap(), |server| {
        // A background image, yellow left and cyan right; a logo, magenta on its left half
        // and fully transparent on its right.
        make_image(branding.path(), "stage.png", &["color=c=yellow:s=160x180", "color=c=cyan:s=160x180"], "[0][1]hstack")?;
        make_image(
            branding.path(),
            "logo.png",
            &["color=c=magenta:s=50x100,format=rgba", "color=c=black@0.0:s=50x100,format=rgba"],
            "[0][1]hstack,format=rgba",
        )?;
        let (left, right) = (Rect::cell(2, 1, 0, 0).centre(0.5), Rect::cell(2, 1, 1, 0).centre(0.5));

        // A missing image at creation: 400, naming it.
        let response = server.post_json("/v1/compositions", &json!({"layout": {"background": "nowhere.png"}}))?;
        ensure!(response.status == 400, "a missing background at creation answered {response:?}");
        let error = &response.json()?["error"];
        ensure!(error["code"] == "missing_image" && error["message"].as_str().is_some_and(|m| m.contains("nowhere.png")), "{error}");

        let composition = server.create_composition(&json!({"video": {"width": 1280, "height": 720, "fps": 30}, "layout": {"background": "#00ff00"}}))?;
        let view = server.get(&format!("/v1/compositions/{composition}"))?.json()?;
        let url = view["rtmp_play_url"].as_str().context("rtmp_play_url")?.to_owned();
        let colours = stream_colours(&url, &[left, right])?;
        ensure!(colours == [Some(Colour::Green); 2], "background #00ff00 shows {colours:?}");

        ensure!(put_layout(server, &composition, json!({"background": "stage.png"}))?.status == 200, "PUT background image");
        sleep(Duration::from_millis(500));
        let colours = stream_colours(&url, &[left, right])?;
        ensure!(colours == [Some(Colour::Yellow), Some(Colour::Cyan)], "background image shows {colours:?}");

        // A missing overlay: 400 naming it, and the layout in force unchanged.
        let missing = json!({"background": "#000000", "overlays": [{"image": "gone.png", "x": 0.1, "y": 0.1, "width": 0.2}]});
        let response = put_layout(server, &composition, missing)?;
        ensure!(response.status == 400, "a missing overlay answered {response:?}");
        let error = &response.json()?["error"];
        ensure!(error["code"] == "missing_image" && error["message"].as_str().is_some_and(|m| m.contains("gone.png")), "{error}");
        let layout = server.get(&format!("/v1/compositions/{composition}/layout"))?.json()?;
        ensure!(layout["background"] == "stage.png" && layout["overlays"] == json!([]), "the refused PUT changed the layout: {layout}");
        let colours = stream_colours(&url, &[left, right])?;
        ensure!(colours == [Some(Colour::Yellow), Some(Colour::Cyan)], "after the refused PUT the background shows {colours:?}");

        // An overlay above a caller: its opaque half magenta, the caller through its transparent half.
        let mut ada = Caller::new(CallerSpec::new("Ada", Colour::Red, 500.0))?;
        ada.join_named(server, &composition)?;
        let logo = json!({"background": "stage.png", "labels": false,
            "overlays": [{"image": "logo.png", "x": 0.5, "y": 0.25, "width": 0.25, "height": 0.5}]});
        ensure!(put_layout(server, &composition, logo)?.status == 200, "PUT overlay");
        sleep(Duration::from_secs(2));
        let opaque = Rect { x0: 0.5, y0: 0.25, x1: 0.625, y1: 0.75 }.centre(0.6);
        let clear = Rect { x0: 0.625, y0: 0.25, x1: 0.75, y1: 0.75 }.centre(0.6);
        let beside = Rect { x0: 0.25, y0: 0.25, x1: 0.45, y1: 0.75 };
        let colours = stream_colours(&url, &[opaque, clear, beside])?;
        ensure!(colours == [Some(Colour::Magenta), Some(Colour::Red), Some(Colour::Red)], "overlay: {colours:?} (opaque half, clear half, beside)");

        ensure!(put_layout(server, &composition, json!({"labels": false}))?.status == 200, "PUT without branding");
        sleep(Duration::from_secs(1));
        let colours = stream_colours(&url, &[opaque])?;
        ensure!(colours == [Some(Colour::Red)], "overlay removed: {colours:?}");
        drop(ada);
        Ok(())
    });
}
