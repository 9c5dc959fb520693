//! Every caller hears the others and sees the composite from its first
//! second, however the joins fall: four callers (gst-launch senders, H.264 +
//! Opus) join a fresh composition 0.25 s apart, thirty times over, and each
//! must receive its mix-minus and the composite within a second of being
//! accepted, and keep receiving both.
//!
//! Why thirty: a caller's part once started its mix-minus source before the
//! elements it feeds; when the mixing thread pushed in between (a window of
//! a millisecond or so, wider on a loaded machine), the source got FLUSHING
//! back and stopped for good: about one caller in forty heard nothing, with
//! no error anywhere. A hundred and twenty joins catch a race that rare 95
//! times in 100 (two hundred took 60 s more of a suite kept under 20 minutes).

use anyhow::{Context, Result, ensure};
use crate::common::*;
use serde_json::json;
use std::thread::sleep;
use std::time::{Duration, SystemTime};

const ROUNDS: usize = 30;
const CALLERS: usize = 4;
const JOIN_SPACING: Duration = Duration::from_millis(250);
/// From the server's 201 to the first packet of each return stream.
const FIRST_PACKET_WITHIN: Duration = Duration::from_secs(1);
const POLL_EVERY: Duration = Duration::from_millis(20);
/// After the last join, how long every stream is watched to keep flowing.
const FLOW_WINDOW: Duration = Duration::from_millis(500);
/// Packets each stream must bring in that window: half of what 20 ms audio
/// packets and a 30 fps picture bring.
const MIN_AUDIO_PACKETS: u64 = 12;
const MIN_VIDEO_PACKETS: u64 = 7;

const COLOURS: [Colour; CALLERS] = [Colour::Red, Colour::Green, Colour::Blue, Colour::Yellow];
const TONES_HZ: [f64; CALLERS] = [500.0, 700.0, 1100.0, 1300.0];

#[test]
fn every_caller_of_thirty_four_caller_joins_gets_its_mix_minus_and_the_composite_at_once() {
    let server = Server::start().unwrap();
    for round in 0..ROUNDS {
        if let Err(e) = join_round(&server, round) {
            panic!("round {round}: {e:?}\n--- server log ---\n{}", server.logs());
        }
    }
}

/// One caller as this test sees it: accepted when, and what it has received.
struct Joined {
    caller: Caller,
    accepted: SystemTime,
}

fn join_round(server: &Server, round: usize) -> Result<()> {
    let id = server.create_composition(&json!({"name": format!("join round {round}")}))?;
    let mut joined: Vec<Joined> = Vec::new();
    for i in 0..CALLERS {
        let mut caller = Caller::new(CallerSpec::new(&format!("r{round}c{i}"), COLOURS[i], TONES_HZ[i]))?;
        let participant = server.add_participant(&id, &caller.offer())?;
        let accepted = SystemTime::now();
        caller.start_sender(&participant.answer)?;
        joined.push(Joined { caller, accepted });
        sleep(JOIN_SPACING);
    }
    // Judged once every stream has begun, or at the last caller's deadline.
    let deadline = joined.last().expect("four callers").accepted + FIRST_PACKET_WITHIN;
    let all_begun = || joined.iter().all(|j| [MediaKind::Audio, MediaKind::Video].iter().all(|&k| j.caller.first_rtp_at(k).is_some()));
    while !all_begun() && SystemTime::now() < deadline {
        sleep(POLL_EVERY);
    }

    for (i, j) in joined.iter().enumerate() {
        for kind in [MediaKind::Audio, MediaKind::Video] {
            let first = j.caller.first_rtp_at(kind).with_context(|| {
                format!("caller {i} received no {kind:?} at all ({} packets of the other medium)", counts(&j.caller).iter().sum::<u64>())
            })?;
            let after = first.duration_since(j.accepted).unwrap_or_default();
            ensure!(after <= FIRST_PACKET_WITHIN, "caller {i}'s first {kind:?} packet came {after:?} after it was accepted");
        }
    }
    let before: Vec<[u64; 2]> = joined.iter().map(|j| counts(&j.caller)).collect();
    sleep(FLOW_WINDOW);
    for (i, (j, before)) in joined.iter().zip(&before).enumerate() {
        let [audio, video] = counts(&j.caller);
        let (audio, video) = (audio - before[0], video - before[1]);
        ensure!(
            audio >= MIN_AUDIO_PACKETS && video >= MIN_VIDEO_PACKETS,
            "caller {i}'s return streams do not keep flowing: {audio} audio and {video} video packets in {FLOW_WINDOW:?}"
        );
    }
    // The API saw it the same way: every caller active, nothing interrupted.
    let composition = server.get(&format!("/v1/compositions/{id}"))?.json()?;
    for participant in composition["participants"].as_array().context("participants")? {
        let audio_sent = participant["audio"]["packets_sent"].as_u64().unwrap_or(0);
        ensure!(audio_sent > 0, "the API shows no audio sent to {}: {participant}", participant["name"]);
        ensure!(participant["state"] != "interrupted", "the watchdog reports {}: {participant}", participant["name"]);
    }
    let deleted = server.delete(&format!("/v1/compositions/{id}"))?;
    ensure!(deleted.status == 204 || deleted.status == 202, "DELETE of the composition answered {}", deleted.status);
    Ok(())
}

fn counts(caller: &Caller) -> [u64; 2] {
    [caller.rtp_packets(MediaKind::Audio), caller.rtp_packets(MediaKind::Video)]
}
