//! A caller that joins, or leaves right after joining, never takes the
//! composite down; neither does an output added or removed meanwhile.
//!
//! Callers on H.264 packetization-mode 1 share the broadcast's own x264
//! (see `encoder_for`), VP8 callers a shared VP8 encode; two callers that
//! stay (one of each) and HLS or recording outputs keep the broadcast and
//! both encodes busy. A third caller joins and is removed after 0–150 ms,
//! over and over, now and then right after an output is added or removed,
//! while busy threads load the machine. After each cycle the composite must
//! still be produced (`composite_frames` rising, `state` `running`), and
//! every 10 cycles the callers that stay must still receive it.
//!
//! The bug it caught: a fanout's new subscription linked the running tee's
//! new pad to a ghost pad not yet active; a buffer pushed in that 1.5 ms
//! window carried its sticky events into it, they were refused, the tee
//! returned GST_FLOW_ERROR to the shared encoder's thread, and the encoder's
//! queue, the compositor and every caller's video stopped ("reason error
//! (-5)"). On the old build the composite froze in 2 runs of 3 (after 87 and
//! 108 cycles); churn.rs had hit it once in a few hundred joins.

use anyhow::{Context, Result, ensure};
use crate::common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

/// Join-and-leave cycles, at most; the test stops earlier at `TIME_BUDGET`.
const CYCLES: usize = 300;
const TIME_BUDGET: Duration = Duration::from_secs(40);
/// How long a caller stays before it is removed: 0–150 ms.
const MAX_STAY_MS: u64 = 150;
/// The composite must have produced a frame within this after each cycle
/// (the engine calls it frozen after 1 s without one).
const FRAME_DEADLINE: Duration = Duration::from_secs(2);
/// How often the callers that stay are checked to still receive the composite.
const RECEIVE_CHECK_EVERY: usize = 10;
/// Busy threads loading the machine (niced, so the server's threads win but
/// are preempted at random points).
const LOAD_THREADS: usize = 2;
/// The chance a cycle starts with a new HLS output, and how many are kept.
const HLS_EVERY: f64 = 0.3;
const MAX_HLS: usize = 2;

#[test]
fn callers_joining_and_leaving_at_once_never_freeze_the_composite() {
    let server = Server::start().unwrap();
    if let Err(e) = join_leave_race(&server) {
        panic!("{e:?}\n--- server log ---\n{}", server.logs());
    }
}

fn join_leave_race(server: &Server) -> Result<()> {
    let id = server.create_composition(&json!({
        "name": "race",
        "video": {"width": 640, "height": 360, "keyframe_interval_secs": 1},
    }))?;
    let composition = format!("/v1/compositions/{id}");
    let mut outputs = vec![add_output(server, &composition, &json!({"kind": "hls"}))?];

    let mut stayers = Vec::new();
    for (name, colour, tone, video) in
        [("h264", Colour::Red, 500.0, VideoCodec::H264Pm1), ("vp8", Colour::Blue, 700.0, VideoCodec::Vp8)]
    {
        let mut caller = Caller::new(CallerSpec { video: Some(video), ..CallerSpec::new(name, colour, tone) })?;
        let participant = server.add_participant(&id, &caller.offer())?;
        caller.start_sender(&participant.answer)?;
        stayers.push(caller);
    }
    wait_until("both callers to receive the composite", Duration::from_secs(10), || {
        Ok(stayers.iter().all(|c| c.rtp_packets(MediaKind::Video) > 0))
    })?;

    let seed: u64 = rand::random();
    eprintln!("join/leave race seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let load = Load::start(LOAD_THREADS);
    let started = Instant::now();
    let mut frames = composite_frames(server, &composition)?;
    let mut received: Vec<u64> = stayers.iter().map(|c| c.rtp_packets(MediaKind::Video)).collect();
    let mut cycles = 0;
    while cycles < CYCLES && started.elapsed() < TIME_BUDGET {
        cycles += 1;
        // Now and then a new HLS output (and the oldest goes): each one
        // subscribes to the broadcast encode and takes its sink through preroll.
        if rng.random_bool(HLS_EVERY) {
            let body = if rng.random_bool(0.5) {
                json!({"kind": "hls"})
            } else {
                json!({"kind": "record", "path": format!("race-{cycles}.mkv")})
            };
            outputs.push(add_output(server, &composition, &body)?);
            if outputs.len() > MAX_HLS {
                let removed = server.delete(&outputs.remove(0))?;
                ensure!(removed.status == 204 || removed.status == 202, "removing an output: {removed:?}");
            }
            sleep(Duration::from_millis(rng.random_range(0..=300)));
        }
        // Mostly H.264 mode 1 (the broadcast's own encode), VP8 now and then.
        let video = if rng.random_bool(0.75) { VideoCodec::H264Pm1 } else { VideoCodec::Vp8 };
        let mut caller = Caller::new(CallerSpec { video: Some(video), ..CallerSpec::new("brief", Colour::Green, 1100.0) })?;
        let participant = server.add_participant(&id, &caller.offer())?;
        caller.start_sender(&participant.answer)?;
        sleep(Duration::from_millis(rng.random_range(0..=MAX_STAY_MS)));
        let removed = server.delete(&participant.location)?;
        ensure!(removed.status == 204 || removed.status == 202, "cycle {cycles}: DELETE answered {removed:?}");

        let before = frames;
        wait_until(&format!("cycle {cycles} ({video:?}): the composite to go on"), FRAME_DEADLINE, || {
            let body = server.get(&composition)?.json()?;
            ensure!(body["state"] == "running", "cycle {cycles} ({video:?}): the composite is {}", body["state"]);
            frames = body["composite_frames"].as_u64().context("no composite_frames")?;
            Ok(frames > before)
        })?;
        if cycles % RECEIVE_CHECK_EVERY == 0 {
            let now: Vec<u64> = stayers.iter().map(|c| c.rtp_packets(MediaKind::Video)).collect();
            for ((caller, then), now) in stayers.iter().zip(&received).zip(&now) {
                ensure!(now > then, "cycle {cycles}: {} no longer receives the composite", caller.spec.name);
            }
            received = now;
        }
    }
    drop(load);
    eprintln!("{cycles} join/leave cycles in {:?}", started.elapsed());
    ensure!(cycles >= 50, "too few cycles to prove anything: {cycles}");
    Ok(())
}

fn add_output(server: &Server, composition: &str, body: &serde_json::Value) -> Result<String> {
    let response = server.post_json(&format!("{composition}/outputs"), body)?;
    ensure!(response.status == 201, "adding {body}: {response:?}");
    Ok(response.header("location").context("201 without Location")?.to_owned())
}

fn composite_frames(server: &Server, composition: &str) -> Result<u64> {
    server.get(composition)?.json()?["composite_frames"].as_u64().context("no composite_frames")
}

/// Busy threads at the lowest priority, for as long as it lives.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    fn start(threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                thread::spawn(move || {
                    // SAFETY: setpriority on the calling thread (who = 0) only lowers its own priority.
                    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                    }
                })
            })
            .collect();
        Load { stop, threads }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
