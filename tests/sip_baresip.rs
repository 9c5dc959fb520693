//! A real softphone dials in over SIP: two baresip processes (Debian's 1.0.0,
//! G.722 + H.264, a tone from a WAV and a solid colour from a clip each) call
//! one composition, one by its name over UDP and one by its id over TCP, next
//! to a plain-RTP caller. Each is judged on what it really receives: the
//! composite's pixels in each participant's `rect` (baresip's own snapshots,
//! the RTP caller's recording) and the tones in its decoded audio (mix-minus).
//! Then one is removed through the API (it gets a BYE) and the other hangs up
//! (its participant goes, with a `participant_left` event). A call for a room
//! that does not exist is refused with 404.
//!
//! A second test has an SRTP softphone dial in and Tutti dial out to another.
//!
//! Each test function walks through its calls in order, so its media
//! processes never compete with another test's on this 2-core machine.

use std::collections::HashMap;
use std::thread::sleep;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, ensure};
use crate::common::*;
use serde_json::{Value, json};

const CANVAS: (u32, u32) = (640, 360);
const ROOM: &str = "board";
/// Bound on a SIP caller showing up in the API once its 200 OK arrived.
const LISTED_WITHIN: Duration = Duration::from_secs(1);
/// Return streams settle (first keyframes, jitter buffers) before judging.
const SETTLE: Duration = Duration::from_secs(2);
/// How long the three are judged together.
const WINDOW: Duration = Duration::from_secs(2);

/// Who is in the room: a name, its colour and its tone.
struct Member {
    name: &'static str,
    colour: Colour,
    tone_hz: f64,
}

const RED: Member = Member { name: "red", colour: Colour::Red, tone_hz: 500.0 };
const GREEN: Member = Member { name: "green", colour: Colour::Green, tone_hz: 700.0 };
const BLUE: Member = Member { name: "blue", colour: Colour::Blue, tone_hz: 1100.0 };
const MEMBERS: [&Member; 3] = [&RED, &GREEN, &BLUE];

#[test]
fn softphones_dial_in_by_name_and_id_see_the_composite_and_hear_everyone_but_themselves() {
    let server = Server::start().unwrap();
    let mut red = Caller::new(CallerSpec::new(RED.name, RED.colour, RED.tone_hz)).unwrap();
    let mut green = Baresip::start(BaresipSpec::new(GREEN.name, GREEN.colour, GREEN.tone_hz)).unwrap();
    let mut blue = Baresip::start(BaresipSpec::new(BLUE.name, BLUE.colour, BLUE.tone_hz)).unwrap();
    // Panicking while the callers live makes each print its logs and keep its files.
    if let Err(e) = call(&server, &mut red, &mut green, &mut blue) {
        panic!("{e:?}\n--- server log ---\n{}", server.logs());
    }
}

fn call(server: &Server, red: &mut Caller, green: &mut Baresip, blue: &mut Baresip) -> Result<()> {
    let composition = server.create_composition(&json!({"name": ROOM, "video": {"width": CANVAS.0, "height": CANVAS.1, "fps": 30}}))?;
    let mut events = EventStream::open(server, &format!("?composition={composition}"), None)?;
    let participants_path = format!("/v1/compositions/{composition}/participants");

    red.join_named(server, &composition)?;

    // A room that does not exist: 404, and nobody joins.
    let refused = green.dial_refused(&format!("sip:lobby@127.0.0.1:{}", server.sip_port))?;
    eprintln!("green: a call for no composition: {refused}");
    ensure!(refused.starts_with("404"), "a call for no composition ended with {refused:?}");

    // By the composition's name over UDP, by its id over TCP.
    let green_uri = format!("sip:{ROOM}@127.0.0.1:{}", server.sip_port);
    let green_call = green.dial(&green_uri)?;
    let blue_call = blue.dial(&format!("sip:{composition}@127.0.0.1:{};transport=tcp", server.sip_port))?;
    ensure!(tcp_connected_to(server.sip_port), "blue dialled over TCP, yet no TCP connection to the SIP port is up");
    for (phone, dialled) in [(&*green, &green_call), (&*blue, &blue_call)] {
        let first_frame = phone.first_frame_at()?;
        eprintln!(
            "{}: INVITE → 200 OK {:.0} ms, → first return frame {:.0} ms",
            phone.spec.name,
            elapsed(dialled.invited_at, dialled.answered_at) * 1000.0,
            elapsed(dialled.invited_at, first_frame) * 1000.0
        );
        let waited = elapsed(dialled.answered_at, first_frame);
        ensure!(waited <= 1.0, "{}'s first return frame came {waited:.2} s after its 200 OK", phone.spec.name);
    }

    // Both are listed as SIP participants, with their dialog's identity.
    let mut listed = Vec::new();
    wait_until("both SIP callers listed as active", LISTED_WITHIN, || {
        listed = server.get(&participants_path)?.json()?["participants"].as_array().cloned().unwrap_or_default();
        Ok(listed.iter().filter(|p| p["transport"] == "sip" && p["state"] == "active").count() == 2)
    })
    .with_context(|| format!("participants: {listed:#?}"))?;
    for (phone, dialled_as) in [(&*green, ROOM), (&*blue, composition.as_str())] {
        let name = &phone.spec.name;
        let participant = by_name(&listed, name)?;
        let sip = &participant["sip"];
        ensure!(
            participant["transport"] == "sip"
                && sip["call_id"].as_str().is_some_and(|id| !id.is_empty())
                && sip["from"].as_str().is_some_and(|from| from.contains(&format!("sip:{name}@127.0.0.1")))
                && sip["to"].as_str().is_some_and(|to| to.contains(&format!("sip:{dialled_as}@")))
                && sip["user_agent"].as_str().is_some_and(|agent| agent.starts_with("baresip"))
                // The only codecs its account offers.
                && participant["audio"]["codec"] == "g722"
                && participant["video"]["codec"] == "h264",
            "{name}'s participant: {participant:#}"
        );
    }

    let (together_from, together_until) = together();
    // Everyone in their cell, as each softphone sees the composite.
    let cells = cells(&listed)?;
    for phone in [&mut *green, &mut *blue] {
        sees_everyone_in_their_cell(phone, &cells)?;
    }

    // Removed through the API: the softphone gets a BYE.
    let green_id = by_name(&listed, GREEN.name)?["id"].as_str().context("green without an id")?.to_owned();
    let deleting = SystemTime::now();
    let deleted = server.delete(&format!("{participants_path}/{green_id}"))?;
    ensure!(deleted.status == 204, "DELETE of a SIP participant: {deleted:?}");
    let (closed_at, reason) = green.wait_closed(Duration::from_secs(2))?;
    eprintln!("green: BYE from Tutti ({reason}) {:.0} ms after the DELETE", elapsed(deleting, closed_at) * 1000.0);
    // baresip reports the close on its control socket and logs it on stdout:
    // two channels, in either order (CI run 46 read the log in between).
    let ended = format!("Call with {green_uri} terminated");
    wait_until(&format!("green's log to say {ended:?}"), Duration::from_secs(1), || Ok(green.log().contains(&ended)))
        .map_err(|e| anyhow::anyhow!("{e}:\n{}", green.logs()))?;
    let gone = server.get(&format!("{participants_path}/{green_id}"))?;
    ensure!(gone.status == 404, "a deleted SIP participant still answers {}", gone.status);

    // The softphone hangs up: its participant goes within a second, with an event.
    let blue_id = by_name(&listed, BLUE.name)?["id"].as_str().context("blue without an id")?.to_owned();
    let hung_up = blue.hang_up()?;
    let left = events.wait_for(Duration::from_secs(1), "blue's participant_left", |e| {
        e["type"] == "participant_left" && e["participant"] == blue_id.as_str()
    })?;
    let left_after = elapsed(hung_up, event_time(&left)?);
    eprintln!("blue: participant_left {:.0} ms after it hung up", left_after * 1000.0);
    ensure!(left_after <= 1.0, "blue left the API {left_after:.2} s after hanging up");
    let remaining = server.get(&participants_path)?.json()?;
    ensure!(
        remaining["participants"].as_array().is_some_and(|all| all.iter().all(|p| p["transport"] != "sip")),
        "SIP participants remain: {remaining:#}"
    );

    // The RTP caller's composite shows all three in their cells throughout.
    let recording = red.stop_receiver()?;
    let frames = video_frames(&recording)?;
    let red_hears = audio_samples(&recording)?;

    // Each softphone is in the picture and in the mix within 1 s of its 200 OK.
    for (member, dialled) in [(&GREEN, &green_call), (&BLUE, &blue_call)] {
        let seen = frames
            .iter()
            .find(|f| f.wall_time > dialled.answered_at && shows(f, member.colour))
            .with_context(|| format!("red never saw {}", member.name))?;
        let heard = red_hears
            .tone_intervals(member.tone_hz, -30.0)
            .into_iter()
            .map(|(from, _)| from)
            .find(|&from| from > dialled.answered_at)
            .with_context(|| format!("red never heard {}", member.name))?;
        let (seen_after, heard_after) = (elapsed(dialled.answered_at, seen.wall_time), elapsed(dialled.answered_at, heard));
        eprintln!("{}: in red's picture {:.0} ms and mix {:.0} ms after its 200 OK", member.name, seen_after * 1000.0, heard_after * 1000.0);
        ensure!(seen_after <= 1.0 && heard_after <= 1.0, "{} took {seen_after:.2} s to be seen, {heard_after:.2} s to be heard", member.name);
    }
    let judged: Vec<&Frame> = frames.iter().filter(|f| f.wall_time >= together_from && f.wall_time < together_until).collect();
    ensure!(judged.len() >= 40, "red recorded only {} frames in {WINDOW:?}", judged.len());
    for frame in judged {
        for (member, cell) in &cells {
            let seen = frame.colour(*cell);
            ensure!(
                seen == Some(member.colour),
                "red sees {seen:?} in {}'s cell at +{:.2} s",
                member.name,
                elapsed(together_from, frame.wall_time)
            );
        }
    }

    // Everyone hears the other two and not themselves.
    let heard = HashMap::from([
        (RED.name, red_hears),
        (GREEN.name, green.received_audio(green_call.answered_at)?),
        (BLUE.name, blue.received_audio(blue_call.answered_at)?),
    ]);
    hears_everyone_but_itself(&heard, together_from, together_until)
}

/// Two more ways a softphone meets the room, next to a plain-RTP caller: one
/// that insists on SRTP (`mediaenc=srtp-mand`, SDES keys) dials in, and Tutti
/// dials out to one that answers by itself. Each sees both others in their
/// cells and hears them and not itself; the SRTP leg shows its suite.
#[test]
fn an_srtp_softphone_dials_in_and_tutti_dials_out_to_another() {
    let server = Server::start().unwrap();
    let mut red = Caller::new(CallerSpec::new(RED.name, RED.colour, RED.tone_hz)).unwrap();
    let secure = BaresipSpec { media_encryption: Some("srtp-mand"), ..BaresipSpec::new(GREEN.name, GREEN.colour, GREEN.tone_hz) };
    let mut green = Baresip::start(secure).unwrap();
    let mut blue = Baresip::start(BaresipSpec { auto_answer: true, ..BaresipSpec::new(BLUE.name, BLUE.colour, BLUE.tone_hz) }).unwrap();
    if let Err(e) = secure_and_dialled(&server, &mut red, &mut green, &mut blue) {
        panic!("{e:?}\n--- server log ---\n{}", server.logs());
    }
}

fn secure_and_dialled(server: &Server, red: &mut Caller, green: &mut Baresip, blue: &mut Baresip) -> Result<()> {
    let composition = server.create_composition(&json!({"name": ROOM, "video": {"width": CANVAS.0, "height": CANVAS.1, "fps": 30}}))?;
    let participants_path = format!("/v1/compositions/{composition}/participants");
    red.join_named(server, &composition)?;
    let green_call = green.dial(&format!("sip:{ROOM}@127.0.0.1:{}", server.sip_port))?;
    let dialled = server.post_json(&participants_path, &json!({"name": BLUE.name, "sip_uri": format!("sip:blue@127.0.0.1:{}", blue.sip_port)}))?;
    ensure!(dialled.status == 201, "dial-out: {} {}", dialled.status, dialled.body);
    let blue_answered = blue.wait_answered(Duration::from_secs(5))?;

    let mut listed = Vec::new();
    wait_until("both softphones listed as active", Duration::from_secs(3), || {
        listed = server.get(&participants_path)?.json()?["participants"].as_array().cloned().unwrap_or_default();
        Ok(listed.iter().filter(|p| p["transport"] == "sip" && p["state"] == "active").count() == 2)
    })
    .with_context(|| format!("participants: {listed:#?}"))?;
    let green_view = by_name(&listed, GREEN.name)?;
    for media in ["audio", "video"] {
        ensure!(green_view[media]["srtp_suite"].as_str().is_some_and(|s| s.starts_with("AES_CM_128_HMAC_SHA1")), "green's {media} is SRTP: {green_view:#}");
    }
    ensure!(by_name(&listed, BLUE.name)?["audio"]["srtp_suite"].is_null(), "the dial-out is plain RTP");
    let dialled_sip = &by_name(&listed, BLUE.name)?["sip"];
    ensure!(
        dialled_sip["call_id"].as_str().is_some_and(|id| id.ends_with("@tutti"))
            && dialled_sip["from"].as_str().is_some_and(|from| from.contains("Tutti") && from.contains("tag="))
            && dialled_sip["to"].as_str().is_some_and(|to| to.starts_with("sip:blue@"))
            && dialled_sip["user_agent"].as_str().is_some_and(|agent| agent.starts_with("baresip"))
            && dialled_sip["direction"] == "outbound"
            && by_name(&listed, GREEN.name)?["sip"]["direction"] == "inbound",
        "the dial-out's dialog in the API: {dialled_sip:#}"
    );

    let (together_from, together_until) = together();
    // Everyone in their cell, as each softphone sees the composite.
    let cells = cells(&listed)?;
    for phone in [&mut *green, &mut *blue] {
        sees_everyone_in_their_cell(phone, &cells)?;
    }
    green.hang_up()?;
    let blue_id = by_name(&listed, BLUE.name)?["id"].as_str().context("blue without an id")?.to_owned();
    server.delete(&format!("{participants_path}/{blue_id}"))?;
    blue.wait_closed(Duration::from_secs(2))?;

    let recording = red.stop_receiver()?;
    let heard = HashMap::from([
        (RED.name, audio_samples(&recording)?),
        (GREEN.name, green.received_audio(green_call.answered_at)?),
        (BLUE.name, blue.received_audio(blue_answered)?),
    ]);
    hears_everyone_but_itself(&heard, together_from, together_until)
}

/// Lets the return streams settle, then the window in which all three are judged.
fn together() -> (SystemTime, SystemTime) {
    sleep(SETTLE);
    let from = SystemTime::now();
    sleep(WINDOW);
    (from, SystemTime::now())
}

/// Where each member's colour is judged: the middle of its `rect`.
fn cells(listed: &[Value]) -> Result<Vec<(&'static Member, Rect)>> {
    MEMBERS.iter().map(|&member| Ok((member, Rect::from_api(&by_name(listed, member.name)?["rect"], CANVAS)?.centre(0.33)))).collect()
}

/// A softphone's next received frame is the whole canvas, each member's colour in its cell.
fn sees_everyone_in_their_cell(phone: &mut Baresip, cells: &[(&Member, Rect)]) -> Result<()> {
    let frame = phone.snapshot()?;
    ensure!((frame.width, frame.height) == CANVAS, "{} receives {}x{}", phone.spec.name, frame.width, frame.height);
    for (member, cell) in cells {
        let seen = frame.colour(*cell);
        ensure!(seen == Some(member.colour), "{} sees {seen:?} in {}'s cell {cell:?}: {frame:?}", phone.spec.name, member.name);
    }
    Ok(())
}

/// Each member hears the other two (above -30 dBFS) and itself 30 dB below them.
fn hears_everyone_but_itself(heard: &HashMap<&str, Audio>, from: SystemTime, until: SystemTime) -> Result<()> {
    let tones = MEMBERS.map(|m| m.tone_hz);
    for (index, member) in MEMBERS.iter().enumerate() {
        let levels = heard[member.name].tone_levels_db(from, until, &tones)?;
        eprintln!("{}: hears {:?} dBFS at {tones:?} Hz", member.name, levels.iter().map(|l| (l * 10.0).round() / 10.0).collect::<Vec<_>>());
        let own = levels[index];
        for (other, level) in levels.iter().enumerate().filter(|&(i, _)| i != index) {
            ensure!(*level > -30.0, "{} hears {} Hz only at {level:.1} dBFS", member.name, tones[other]);
            ensure!(own <= level - 30.0, "{} hears itself at {own:.1} dBFS, not 30 dB below {} Hz at {level:.1}", member.name, tones[other]);
        }
    }
    Ok(())
}

/// Whether `colour` fills some part of the picture: judged at the centre of each
/// cell of an 8x8 grid, wherever the layout put the caller.
fn shows(frame: &Frame, colour: Colour) -> bool {
    (0..64).any(|i| frame.colour(Rect::cell(8, 8, i % 8, i / 8).centre(0.5)) == Some(colour))
}

/// The participant called `name` in a participants list.
fn by_name<'a>(participants: &'a [Value], name: &str) -> Result<&'a Value> {
    participants.iter().find(|p| p["name"] == name).with_context(|| format!("no participant {name} in {participants:#?}"))
}
