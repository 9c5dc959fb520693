//! A room with a PIN, as dial-in callers meet it (real clients, nothing mocked).
//!
//! - A softphone (baresip) dials in: it is answered, hears the spoken prompt
//!   and nothing of the room, and the room neither hears nor sees it, until
//!   it keys in the PIN as RFC 4733 `telephone-event` in its RTP; then it is
//!   in the layout and the mix like anyone else, and sees the composite. A
//!   second one on SRTP keys it in too (its keys are read once decrypted).
//! - A room system (SIPp) keys in three wrong PINs by SIP INFO
//!   (`application/dtmf-relay`): each is announced, and after the last
//!   prompt Tutti hangs up (BYE).
//! - The PIN is checked when the room is made and never shown back.

use std::thread::sleep;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, ensure};
use crate::common::*;
use serde_json::{Value, json};

const CANVAS: (u32, u32) = (640, 360);
const PIN: &str = "4711";
const RED_HZ: f64 = 500.0;
const GREEN_HZ: f64 = 700.0;
const BLUE_HZ: f64 = 1100.0;

#[test]
fn a_softphone_keys_in_the_pin_and_only_then_joins_the_room() {
    let server = Server::start().unwrap();
    let mut red = Caller::new(CallerSpec::new("red", Colour::Red, RED_HZ)).unwrap();
    let mut green = Baresip::start(BaresipSpec::new("green", Colour::Green, GREEN_HZ)).unwrap();
    let secure = BaresipSpec { media_encryption: Some("srtp-mand"), ..BaresipSpec::new("blue", Colour::Blue, BLUE_HZ) };
    let mut blue = Baresip::start(secure).unwrap();
    if let Err(e) = keys_in_the_pin(&server, &mut red, &mut green, &mut blue) {
        panic!("{e:?}\n--- server log ---\n{}", server.logs());
    }
}

fn keys_in_the_pin(server: &Server, red: &mut Caller, green: &mut Baresip, blue: &mut Baresip) -> Result<()> {
    let composition = server.create_composition(&json!({"name": "vault", "pin": PIN, "video": {"width": CANVAS.0, "height": CANVAS.1, "fps": 30}}))?;
    let mut events = EventStream::open(server, &format!("?composition={composition}"), None)?;
    red.join_named(server, &composition)?;

    let dialled = green.dial(&format!("sip:vault@127.0.0.1:{}", server.sip_port))?;
    blue.dial(&format!("sip:vault@127.0.0.1:{}", server.sip_port))?;
    let participants_path = format!("/v1/compositions/{composition}/participants");
    let listed: Vec<Value> = server.get(&participants_path)?.json()?["participants"].as_array().cloned().unwrap_or_default();
    let waiting = by_name(&listed, "green")?;
    ensure!(waiting["state"] == "awaiting_pin" && waiting["rect"].is_null(), "green before its PIN: {waiting:#}");
    let green_id = waiting["id"].as_str().context("green's id")?.to_owned();

    // The prompt lasts 5 s: judged from 0.5 s after the answer to 3.5 s.
    let lobby = (dialled.answered_at + Duration::from_millis(500), dialled.answered_at + Duration::from_millis(3500));
    sleep(lobby.1.duration_since(SystemTime::now()).unwrap_or_default());
    let pressing = SystemTime::now();
    green.press(PIN)?;
    let admitted = events.wait_for(Duration::from_secs(3), "participant_admitted", |e| {
        e["type"] == "participant_admitted" && e["participant"] == green_id.as_str()
    })?;
    blue.press(PIN)?;
    events.wait_for(Duration::from_secs(3), "blue's participant_admitted", |e| {
        e["type"] == "participant_admitted" && e["participant"] != green_id.as_str()
    })?;
    let admitted_at = event_time(&admitted)?;
    // press() sends a key every 250 ms: the last one left 750 ms after the first.
    let after_last_key = elapsed(pressing, admitted_at) - 0.75;
    eprintln!("green: admitted {:.0} ms after its last key, {:.2} s after its 200 OK", after_last_key * 1000.0, elapsed(dialled.answered_at, admitted_at));

    // Only now is it sent the composite.
    let first_frame = green.first_frame_at()?;
    ensure!(first_frame > admitted_at, "green got a picture {:.2} s before it was admitted", elapsed(first_frame, admitted_at));

    sleep(Duration::from_secs(2));
    let together_from = SystemTime::now();
    sleep(Duration::from_secs(2));
    let together_until = SystemTime::now();
    let listed: Vec<Value> = server.get(&participants_path)?.json()?["participants"].as_array().cloned().unwrap_or_default();
    let green_now = by_name(&listed, "green")?;
    ensure!(green_now["state"] == "active" && !green_now["rect"].is_null(), "green after its PIN: {green_now:#}");
    let blue_now = by_name(&listed, "blue")?;
    ensure!(
        blue_now["state"] == "active" && blue_now["audio"]["srtp_suite"].as_str().is_some_and(|s| s.starts_with("AES_CM")),
        "blue (SRTP) after its PIN: {blue_now:#}"
    );
    let green_cell = Rect::from_api(&green_now["rect"], CANVAS)?.centre(0.33);
    let red_cell = Rect::from_api(&by_name(&listed, "red")?["rect"], CANVAS)?.centre(0.33);
    let frame = green.snapshot()?;
    ensure!(
        frame.colour(green_cell) == Some(Colour::Green) && frame.colour(red_cell) == Some(Colour::Red),
        "green sees {:?} in its cell and {:?} in red's",
        frame.colour(green_cell),
        frame.colour(red_cell)
    );
    green.hang_up()?;
    blue.hang_up()?;

    // In the lobby green heard the prompt and not the room; the room did not hear or see it.
    let heard = green.received_audio(dialled.answered_at)?;
    let speech = rms_dbfs(heard.window(lobby.0, lobby.1)?);
    // The median over blocks, judged against red's tone once admitted: the
    // speech reads about -52 dBFS at any frequency near 500 Hz.
    let room_in_lobby = heard.tone_level_median_db(lobby.0, lobby.1, RED_HZ)?;
    eprintln!("green in the lobby: {speech:.1} dBFS in all, red's tone at {room_in_lobby:.1} dBFS (median)");
    ensure!(speech > -35.0, "green heard no prompt in the lobby ({speech:.1} dBFS)");
    let recording = red.stop_receiver()?;
    let red_hears = audio_samples(&recording)?;
    let green_in_lobby = red_hears.tone_level_median_db(lobby.0, lobby.1, GREEN_HZ)?;
    eprintln!("red while green was in the lobby: green's tone at {green_in_lobby:.1} dBFS (median)");
    ensure!(green_in_lobby < -50.0, "red heard green ({green_in_lobby:.1} dBFS) before its PIN");
    let frames = video_frames(&recording)?;
    let lobby_frames: Vec<&Frame> = frames.iter().filter(|f| f.wall_time >= lobby.0 && f.wall_time < lobby.1).collect();
    ensure!(lobby_frames.len() >= 60, "red recorded only {} frames while green was in the lobby", lobby_frames.len());
    ensure!(lobby_frames.iter().all(|f| !shows(f, Colour::Green)), "red saw green before its PIN");

    // Admitted, everyone hears the other and not itself.
    let green_hears = green.received_audio(dialled.answered_at)?;
    let tones = [RED_HZ, GREEN_HZ, BLUE_HZ];
    let (red_levels, green_levels) =
        (red_hears.tone_levels_db(together_from, together_until, &tones)?, green_hears.tone_levels_db(together_from, together_until, &tones)?);
    eprintln!("admitted: red hears {red_levels:.1?}, green hears {green_levels:.1?} dBFS at {tones:?} Hz");
    ensure!(red_levels[1] > -30.0 && red_levels[2] > -30.0 && red_levels[0] < red_levels[1] - 30.0, "red's mix-minus: {red_levels:?}");
    ensure!(green_levels[0] > -30.0 && green_levels[1] < green_levels[0] - 30.0, "green's mix-minus: {green_levels:?}");
    ensure!(room_in_lobby < green_levels[0] - 30.0, "green heard the room ({room_in_lobby:.1} dBFS of red's tone) before its PIN");
    Ok(())
}

#[test]
fn three_wrong_pins_by_sip_info_end_the_call_after_the_last_prompt() -> Result<()> {
    let server = Server::start()?;
    let composition = server.create_composition(&json!({"name": "vault", "pin": PIN, "audio_only": true}))?;
    let mut events = EventStream::open(&server, &format!("?composition={composition}"), None)?;
    let media = MediaPort::bind(false)?;
    let relay = "application/dtmf-relay";
    let key = |k: char| format!("Signal={k}\nDuration=160\n");
    let mut middle = Dialog::new().pause(300);
    for wrong in ["12#", "0000#", "4712#"] {
        for k in wrong.chars() {
            middle = middle.info(relay, &key(k)).pause(100);
        }
    }
    let end = middle.await_bye(8_000);
    let sipp = Sipp::place("call.xml", &[("BODY", &pcmu_offer(media.rtp_port)), ("MIDDLE", ""), ("END", &end)], "vault", server.sip_port, false)?;
    let mut failures = Vec::new();
    for left in [2, 1, 0] {
        let failed = events.wait_for(Duration::from_secs(8), "participant_pin_failed", |e| e["type"] == "participant_pin_failed")?;
        ensure!(failed["attempts_left"] == left, "expected {left} attempts left: {failed}");
        failures.push(failed);
    }
    let last = failures.last().context("three failures")?;
    ensure!(last["reason"].as_str().is_some_and(|r| r.contains("3 times")), "the last failure says {}", last["reason"]);
    let left = events.wait_for(Duration::from_secs(8), "participant_left", |e| e["type"] == "participant_left")?;
    let prompt = elapsed(event_time(last)?, event_time(&left)?);
    eprintln!("third wrong PIN → hung up {prompt:.2} s later (the goodbye prompt lasts 3.2 s)");
    ensure!((3.0..4.0).contains(&prompt), "hung up {prompt:.2} s after the third wrong PIN: not after the goodbye prompt");
    sipp.finish()?;
    let view: Value = server.get(&format!("/v1/compositions/{composition}"))?.json()?;
    ensure!(view["participants"].as_array().is_some_and(Vec::is_empty), "participants left: {view:#}");
    Ok(())
}

#[test]
fn a_pin_is_checked_when_the_room_is_made_and_never_shown() -> Result<()> {
    let server = Server::start()?;
    // A number, not a string: its leading zeros would be lost.
    for (bad, says) in [(json!("12a4"), "pin must be 4 to 12 digits"), (json!("123"), "pin must be 4 to 12 digits"), (json!(4711), "expected a string")] {
        let refused = server.post_json("/v1/compositions", &json!({"pin": bad}))?;
        ensure!(refused.status == 400 && refused.body.contains(says), "pin {bad}: {} {}", refused.status, refused.body);
    }
    let id = server.create_composition(&json!({"pin": "004711"}))?;
    let shown = server.get(&format!("/v1/compositions/{id}"))?.body;
    ensure!(shown.contains("\"pin_required\":true") && !shown.contains("004711"), "the composition shows {shown}");
    Ok(())
}

fn rms_dbfs(samples: &[f32]) -> f64 {
    let mean_square = samples.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / samples.len().max(1) as f64;
    10.0 * mean_square.max(1e-12).log10()
}

/// Whether `colour` fills some part of the picture (the centre of any cell of an 8x8 grid).
fn shows(frame: &Frame, colour: Colour) -> bool {
    (0..64).any(|i| frame.colour(Rect::cell(8, 8, i % 8, i / 8).centre(0.5)) == Some(colour))
}

fn by_name<'a>(participants: &'a [Value], name: &str) -> Result<&'a Value> {
    participants.iter().find(|p| p["name"] == name).with_context(|| format!("no participant {name} in {participants:#?}"))
}
