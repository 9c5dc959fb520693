//! A producer's audio controls, live, judged by tones: three callers on
//! distinct tones; `PATCH .../participants/{pid}` turns one down to volume
//! 0.5 (6 dB lower in the others' mix and in a recording of the broadcast),
//! mutes it (40 dB down or more), brings it back, and makes another deaf
//! (it receives silence, its return RTP keeps flowing and it stays `active`).
//! Muted A (on Opus) hears exactly the full mix: from a second into its mute
//! it is sent the one shared encode of it, and hears B and C just as before,
//! across the switch and back on its own encode once it is heard again.
//!
//! The phases are 3 s each; each is judged on its middle 1.5 s (from 1 s
//! after the PATCH). The recording output carries no wall clock: its time
//! 0 is the composition's start (its pipeline's running time), which the
//! mute's edge in it confirms.

use anyhow::{Context, Result, ensure};
use crate::common::*;
use serde_json::{Value, json};
use std::thread::sleep;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const PHASE: Duration = Duration::from_secs(3);
const JUDGED_FROM: Duration = Duration::from_millis(1000);
const JUDGED_FOR: Duration = Duration::from_millis(1500);
/// Three tones at 0.25 each: their sum stays below full scale, so the
/// broadcast's mix never clips.
const AMPLITUDE: f64 = 0.25;
const TONES: [f64; 3] = [500.0, 700.0, 1100.0];
const HALF_VOLUME_DB: f64 = -6.02;
const TOLERANCE_DB: f64 = 1.0;
const SILENCED_DB: f64 = -40.0;
/// What Opus (A's codec) may move a tone between two windows of one call.
const OPUS_TOLERANCE_DB: f64 = 2.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Baseline,
    HalfVolume,
    Muted,
    Restored,
    Deaf,
    Hearing,
}

const PHASES: [Phase; 6] = [Phase::Baseline, Phase::HalfVolume, Phase::Muted, Phase::Restored, Phase::Deaf, Phase::Hearing];

#[test]
fn volume_mute_and_deaf_act_on_the_mix_live() {
    let server = Server::start().unwrap();
    if let Err(e) = controls(&server) {
        panic!("{e:?}\n--- server log ---\n{}", server.logs());
    }
}

fn patch(server: &Server, location: &str, body: Value) -> Result<Value> {
    let response = server.send(server.request(reqwest::Method::PATCH, location).json(&body))?;
    ensure!(response.status == 200, "PATCH {body}: {response:?}");
    response.json()
}

fn controls(server: &Server) -> Result<()> {
    let created = SystemTime::now();
    let composition = server.create_composition(&json!({
        "video": {"width": 320, "height": 180, "fps": 15},
        "outputs": [{"kind": "record", "path": "mix.mkv"}]
    }))?;
    let mut callers = Vec::new();
    let mut locations = Vec::new();
    // The listeners judged (B, C) receive a waveform codec: Opus, a perceptual
    // codec, moved a lone 500 Hz tone by up to 2 dB from one run to the next.
    let codecs = [AudioCodec::Opus, AudioCodec::Pcmu, AudioCodec::G722];
    for ((name, tone), codec) in ["a", "b", "c"].into_iter().zip(TONES).zip(codecs) {
        let mut caller = Caller::new(CallerSpec {
            video: None,
            audio: Some(codec),
            tone_amplitude: AMPLITUDE,
            ..CallerSpec::new(name, Colour::White, tone)
        })?;
        locations.push(caller.join(server, &composition)?.location);
        callers.push(caller);
    }
    let (a, c) = (&locations[0], &locations[2]);
    // Every return stream settles (jitter buffers, the encoders' first frames).
    sleep(Duration::from_secs(3));

    let mut started = Vec::new();
    let mut deaf_packets = (0, 0);
    let mut deaf_gap = None;
    let mut deaf_view = Value::Null;
    let mut mix_minus = Vec::new();
    for phase in PHASES {
        let body = match phase {
            Phase::Baseline => None,
            Phase::HalfVolume => Some((a, json!({"audio": {"volume": 0.5}}))),
            Phase::Muted => Some((a, json!({"audio": {"muted": true}}))),
            Phase::Restored => Some((a, json!({"audio": {"muted": false, "volume": 1.0}}))),
            Phase::Deaf => Some((c, json!({"deaf": true}))),
            Phase::Hearing => Some((c, json!({"deaf": false}))),
        };
        started.push(SystemTime::now());
        if let Some((location, body)) = body {
            let view = patch(server, location, body.clone())?;
            ensure!(view["controls"]["audio"]["volume"].is_number(), "the PATCH answers the participant: {view}");
        }
        if phase == Phase::Deaf {
            callers[2].take_longest_rtp_gap(MediaKind::Audio);
            deaf_packets.0 = callers[2].rtp_packets(MediaKind::Audio);
        }
        sleep(PHASE);
        if matches!(phase, Phase::Muted | Phase::Restored) {
            mix_minus.push(server.get(&format!("/v1/compositions/{composition}"))?.json()?["mix_minus"].clone());
        }
        if phase == Phase::Deaf {
            deaf_packets.1 = callers[2].rtp_packets(MediaKind::Audio);
            deaf_gap = callers[2].take_longest_rtp_gap(MediaKind::Audio);
            deaf_view = server.get(c)?.json()?;
        }
    }
    let window = |phase: Phase| {
        let index = PHASES.iter().position(|p| *p == phase).expect("a phase of the list");
        let from = started[index] + JUDGED_FROM;
        (from, from + JUDGED_FOR)
    };

    let output = format!("/v1/compositions/{composition}/outputs");
    let outputs = server.get(&output)?.json()?;
    let oid = outputs["outputs"][0]["id"].as_str().context("the recording output")?.to_string();
    let removed = server.delete(&format!("{output}/{oid}"))?.status;
    ensure!(removed == 204 || removed == 202, "DELETE of the recording: {removed}");
    if removed == 202 {
        // Still being finalized on its own thread.
        sleep(Duration::from_secs(2));
    }
    let mut recording = audio_samples(&server.recordings_dir().join("mix.mkv"))?;
    recording.start = created + recording.start.duration_since(UNIX_EPOCH)?;
    let mut heard = Vec::new();
    for caller in &mut callers {
        heard.push(audio_samples(&caller.stop_receiver()?)?);
    }

    // Levels of every tone, by listener and phase (dBFS).
    let levels = |audio: &Audio, phase: Phase| -> Result<Vec<f64>> {
        let (from, to) = window(phase);
        TONES.iter().map(|&tone| audio.tone_level_median_db(from, to, tone)).collect()
    };
    let listeners: [(&str, &Audio); 3] = [("b", &heard[1]), ("c", &heard[2]), ("the recording", &recording)];
    for (name, audio) in listeners {
        let base = levels(audio, Phase::Baseline)?;
        for phase in [Phase::HalfVolume, Phase::Muted, Phase::Restored] {
            let now = levels(audio, phase)?;
            let change: Vec<f64> = now.iter().zip(&base).map(|(n, b)| ((n - b) * 10.0).round() / 10.0).collect();
            eprintln!("{name}: {phase:?}: A {:+.1} dB (B {:+.1}, C {:+.1}) against the baseline {base:.1?}", change[0], change[1], change[2]);
            let expected = match phase {
                Phase::HalfVolume => HALF_VOLUME_DB,
                Phase::Restored => 0.0,
                _ => SILENCED_DB,
            };
            if phase == Phase::Muted {
                ensure!(change[0] <= SILENCED_DB, "{name}: muted A is only {:.1} dB down", change[0]);
            } else {
                ensure!((change[0] - expected).abs() <= TOLERANCE_DB, "{name}: A at {phase:?} changed {:.1} dB", change[0]);
            }
            // Whoever is not A, and not the listener, is unchanged.
            for other in [1, 2].into_iter().filter(|i| name != ["a", "b", "c"][*i]) {
                ensure!(change[other].abs() <= TOLERANCE_DB, "{name}: tone {other} moved {:.1} dB at {phase:?}", change[other]);
            }
        }
    }

    // Muted A shares the encode of the full mix, and hears B and C as before.
    ensure!(mix_minus[0] == json!({"own_encodes": 2, "shared": 1}), "while A is muted: {}", mix_minus[0]);
    ensure!(mix_minus[1] == json!({"own_encodes": 3, "shared": 0}), "once A is heard again: {}", mix_minus[1]);
    let a_base = levels(&heard[0], Phase::Baseline)?;
    for phase in [Phase::Muted, Phase::Restored] {
        let now = levels(&heard[0], phase)?;
        eprintln!("a: {phase:?}: B {:+.1} dB, C {:+.1} dB against the baseline {a_base:.1?}", now[1] - a_base[1], now[2] - a_base[2]);
        for other in [1, 2] {
            ensure!((now[other] - a_base[other]).abs() <= OPUS_TOLERANCE_DB, "a: tone {other} moved {:.1} dB at {phase:?}", now[other] - a_base[other]);
        }
    }

    // The recording's timeline is the composition's: the mute's edge is where its clock says.
    let (muted_at, restored_at) = (started[2], started[3]);
    let edge = recording
        .tone_intervals(TONES[0], -40.0)
        .iter()
        .map(|(_, end)| *end)
        .find(|end| elapsed(muted_at, *end).abs() < 1.0)
        .with_context(|| "no end of A's tone near the mute in the recording")?;
    eprintln!("the recording: the mute heard {:.0} ms after the PATCH", elapsed(muted_at, edge) * 1000.0);
    ensure!(edge < restored_at, "the mute's edge is outside its phase");

    // Deaf: C hears nothing, yet its return stream never stopped and it stayed active.
    let base = levels(&heard[2], Phase::Baseline)?;
    let deaf = levels(&heard[2], Phase::Deaf)?;
    let hearing = levels(&heard[2], Phase::Hearing)?;
    eprintln!("c: deaf A {:.1}, B {:.1} dB; hearing again A {:.1}, B {:.1} dB (baseline {base:.1?})", deaf[0] - base[0], deaf[1] - base[1], hearing[0] - base[0], hearing[1] - base[1]);
    for tone in [0, 1] {
        ensure!(deaf[tone] - base[tone] <= SILENCED_DB, "deaf C still hears tone {tone} at {:.1} dB", deaf[tone] - base[tone]);
        ensure!((hearing[tone] - base[tone]).abs() <= TOLERANCE_DB, "C hears tone {tone} again at {:.1} dB", hearing[tone] - base[tone]);
    }
    let packets = deaf_packets.1 - deaf_packets.0;
    let gap = deaf_gap.context("C's audio port")?;
    eprintln!("c while deaf: {packets} RTP packets in {:.1} s, longest gap {} ms", PHASE.as_secs_f64(), gap.as_millis());
    ensure!(packets as f64 >= 0.9 * 50.0 * PHASE.as_secs_f64(), "deaf C got {packets} packets in {PHASE:?}");
    ensure!(gap < Duration::from_millis(200), "deaf C's return stream paused for {gap:?}");
    ensure!(deaf_view["state"] == "active" && deaf_view["controls"]["deaf"] == true, "deaf C: {deaf_view}");
    // B still hears C, deaf or not.
    let b_base = levels(&heard[1], Phase::Baseline)?;
    let b_deaf = levels(&heard[1], Phase::Deaf)?;
    ensure!((b_deaf[2] - b_base[2]).abs() <= TOLERANCE_DB, "B hears deaf C {:.1} dB off", b_deaf[2] - b_base[2]);
    Ok(())
}
