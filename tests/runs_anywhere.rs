//! The binary stands on its own: started in an empty directory with no
//! `--pipelines`, it serves compositions with the profiles compiled into it;
//! and its log has colour on a terminal only, never in a file.

use anyhow::{Context, Result, ensure};
use crate::common::*;
use serde_json::json;
use std::net::TcpListener;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, SystemTime};

const ESC: u8 = 0x1b;

#[test]
fn an_empty_working_directory_serves_callers_with_the_built_in_profiles() {
    let server = Server::start_in_empty_dir(&[]).unwrap();
    if let Err(e) = call_from_empty_dir(&server) {
        panic!("{e:?}\n--- server log ---\n{}", server.logs());
    }
}

fn call_from_empty_dir(server: &Server) -> Result<()> {
    let cwd = server.working_dir()?;
    ensure!(cwd.ends_with("cwd") && !cwd.join("pipelines").exists(), "the server runs in {}", cwd.display());
    let log = String::from_utf8_lossy(&server.full_log()?).into_owned();
    ensure!(log.contains("encoders from the built-in encoders.toml, decoders from the built-in decoders.toml"), "profiles not built in:\n{log}");

    let composition = server.create_composition(&json!({"video": {"width": 640, "height": 360, "fps": 30}}))?;
    let mut red = Caller::new(CallerSpec::new("red", Colour::Red, 500.0))?;
    let mut blue = Caller::new(CallerSpec::new("blue", Colour::Blue, 700.0))?;
    red.join(server, &composition)?;
    blue.join(server, &composition)?;
    // First keyframes and jitter buffers settle, then two seconds are judged.
    sleep(Duration::from_secs(3));
    let from = SystemTime::now();
    sleep(Duration::from_secs(2));
    let until = SystemTime::now();
    let recording = red.stop_receiver()?;
    drop(blue);

    // Encoded with the built-in h264 profile and decoded again: the two callers side by side.
    let frames = video_frames(&recording).context("decoding red's return video")?;
    let judged: Vec<&Frame> = frames.iter().filter(|f| f.wall_time >= from && f.wall_time < until).collect();
    ensure!(judged.len() >= 40, "only {} frames in two seconds", judged.len());
    for frame in judged {
        let cells = [0, 1].map(|col| frame.colour(Rect::cell(2, 1, col, 0).centre(0.33)));
        ensure!(cells == [Some(Colour::Red), Some(Colour::Blue)], "red's composite shows {cells:?} at +{:.2} s", elapsed(from, frame.wall_time));
    }
    // Built-in Opus encode and decode: red hears blue, and not itself.
    let levels = audio_samples(&recording)?.tone_levels_db(from, until, &[500.0, 700.0])?;
    ensure!(levels[1] > -30.0 && levels[0] <= levels[1] - 30.0, "red hears 500/700 Hz at {levels:?} dBFS");
    Ok(())
}

#[test]
fn a_log_written_to_a_file_has_no_colour_codes() {
    let server = Server::start().unwrap();
    // A request that is logged, on top of the start-up lines.
    let missing = server.get("/v1/compositions/no-such-composition").unwrap();
    assert_eq!(missing.status, 404);
    let log = server.full_log().unwrap();
    let text = String::from_utf8_lossy(&log);
    assert!(text.contains(" INFO ") && text.contains("Tutti serving"), "no log lines to judge:\n{text}");
    assert!(!log.contains(&ESC), "escape codes in the log file:\n{text:?}");
}

/// `tutti serve` on a pseudo-terminal (util-linux `script`), failing at once
/// on an HTTP port that is taken: everything it printed.
fn serve_on_a_terminal(no_color: Option<&str>) -> Result<String> {
    let taken = TcpListener::bind("127.0.0.1:0")?;
    let serve = format!("{} serve --http {}", tutti_binary().to_string_lossy(), taken.local_addr()?);
    let mut cmd = Command::new("script");
    cmd.args(["--quiet", "--return", "--command", &serve, "/dev/null"]).env("RUST_LOG", "info").env_remove("NO_COLOR");
    if let Some(value) = no_color {
        cmd.env("NO_COLOR", value);
    }
    let output = run_bounded(cmd, Duration::from_secs(20))?;
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    ensure!(!output.status.success() && printed.contains("binding the HTTP API"), "tutti did not fail on the taken port: {printed}");
    ensure!(printed.contains("INFO"), "no log line printed: {printed}");
    Ok(printed)
}

#[test]
fn a_log_on_a_terminal_is_coloured_unless_no_color_is_set() {
    let coloured = serve_on_a_terminal(None).unwrap();
    assert!(coloured.contains("\x1b["), "no colour on a terminal: {coloured:?}");
    let plain = serve_on_a_terminal(Some("1")).unwrap();
    assert!(!plain.contains('\x1b'), "colour despite NO_COLOR=1: {plain:?}");
}
