//! Parts come and go at the worst moments, and the API never stops
//! answering: callers (gst-launch senders) and RTMP and SRT publishers (ffmpeg) join
//! and leave, some right after joining (a publisher maybe before it has
//! connected, maybe mid-stream); HLS, recording and RTMP (to nginx) outputs are added and removed
//! right after adding, mid-segment and just after a keyframe; hundreds of
//! times. Meanwhile a watcher asks `/healthz` and the composition every
//! 100 ms. Every request of either must be answered within a second, the
//! composite must never freeze, and once everything is removed the server
//! holds the file descriptors and ports it held before.
//!
//! Before parts were bins stopped off the engine thread, removing an HLS
//! output hung the engine in 2 tries of 3 (a queue's NULL waited for its
//! thread, held inside hlssink2's splitmuxsink), and with it the whole API.

use anyhow::{Context, Result, bail, ensure};
use crate::common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

/// The churn goes on until this many callers have joined and this many
/// outputs have been added (each also leaves or is removed): about 200
/// operations.
const AT_LEAST_EACH: usize = 50;
/// A bound on operations that the churn reaches only if it stopped adding.
const MAX_OPERATIONS: usize = 600;
/// Short GOPs and segments, so removals land at keyframes and mid-segment often.
const KEYFRAME_SECS: f64 = 1.0;
/// Every request, the churn's and the watcher's, is answered within this.
const API_DEADLINE: Duration = Duration::from_secs(1);
const WATCH_EVERY: Duration = Duration::from_millis(100);
const MAX_CALLERS: usize = 4;
const MAX_OUTPUTS: usize = 3;
/// GLib's thread pool ends threads idle for 15 s, but keeps two (its default
/// `max_unused_threads`).
const THREADS_RETIRE_WITHIN: Duration = Duration::from_secs(20);
const GLIB_KEPT_IDLE_THREADS: usize = 2;
/// After the churn, how long parts may take to finish stopping.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn callers_and_outputs_come_and_go_hundreds_of_times_and_the_api_always_answers() {
    let server = Server::start().unwrap();
    let nginx = Nginx::start();
    if let Err(e) = churn(&server, &nginx) {
        panic!("{e:?}\n--- server log ---\n{}\n--- nginx ---\n{}", server.logs(), nginx.logs());
    }
}

fn churn(server: &Server, nginx: &Nginx) -> Result<()> {
    let id = server.create_composition(&json!({
        "name": "churn",
        "video": {"width": 640, "height": 360, "keyframe_interval_secs": KEYFRAME_SECS as u32},
    }))?;
    let composition = format!("/v1/compositions/{id}");
    let seed: u64 = rand::random();
    eprintln!("churn seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);

    let watcher = Watcher::start(server, &composition);
    sleep(Duration::from_secs(1));
    let before = server.footprint()?;

    let logs = tempfile::tempdir()?;
    let mut callers: Vec<(Member, String)> = Vec::new();
    // Outputs and WHEP viewers, each with when it is to go.
    let mut outputs: Vec<(String, Instant)> = Vec::new();
    let mut viewers = 0;
    let mut never_connects: Vec<String> = Vec::new();
    let mut counts = [0usize; 4];
    let mut serial = 0;
    let mut operations = 0;
    while counts[0] < AT_LEAST_EACH || counts[2] < AT_LEAST_EACH {
        operations += 1;
        ensure!(operations <= MAX_OPERATIONS, "{MAX_OPERATIONS} operations and still too little churn: {counts:?}");
        let now = Instant::now();
        if let Some(i) = outputs.iter().position(|(_, due)| *due <= now) {
            let (location, _) = outputs.swap_remove(i);
            timed_delete(server, &location, &never_connects)?;
            counts[3] += 1;
        } else if rng.random_bool(0.1) && outputs.len() < MAX_OUTPUTS {
            // A WHEP viewer that never connects: the viewers' part (and the broadcast
            // encode it takes) comes and goes with it.
            let offer = webrtc_offer("opus/48000/2", true, "recvonly", true);
            let response = timed(server, "POST whep", || server.post_sdp(&format!("{composition}/whep"), &offer))?;
            ensure!(response.status == 201, "a WHEP viewer: {response:?}");
            let location = response.header("location").context("201 without Location")?.to_owned();
            viewers += 1;
            never_connects.push(location.clone());
            outputs.push((location, Instant::now() + Duration::from_secs_f64(rng.random_range(0.0..2.0))));
        } else if rng.random_bool(0.6) {
            if callers.len() < MAX_CALLERS && (callers.is_empty() || rng.random_bool(0.6)) {
                serial += 1;
                let (member, location) = if rng.random_bool(PUBLISHER_SHARE) {
                    join_publisher(server, &id, serial, logs.path())?
                } else if rng.random_bool(GUEST_SHARE) {
                    // A browser guest that vanishes before it connects: its leg is built,
                    // and the engine removes it after the connect timeout unless deleted first.
                    let offer = webrtc_offer("opus/48000/2", true, "sendrecv", true);
                    let participant = timed(server, "POST WebRTC guest", || server.add_participant(&id, &offer))?;
                    never_connects.push(participant.location.clone());
                    (Member::Guest, participant.location)
                } else {
                    let colour = [Colour::Red, Colour::Green, Colour::Blue, Colour::Yellow][serial % 4];
                    let mut caller = Caller::new(CallerSpec::new(&format!("churn{serial}"), colour, 500.0 + 200.0 * (serial % 4) as f64))?;
                    let participant = timed(server, "POST participant", || server.add_participant(&id, &caller.offer()))?;
                    caller.start_sender(&participant.answer)?;
                    (Member::Caller(Box::new(caller)), participant.location)
                };
                counts[0] += 1;
                if rng.random_bool(0.25) {
                    // Gone right after joining, its sender just started (a publisher maybe not yet connected).
                    timed_delete(server, &location, &never_connects)?;
                    counts[1] += 1;
                } else {
                    callers.push((member, location));
                }
            } else if !callers.is_empty() {
                let (_caller, location) = callers.swap_remove(rng.random_range(0..callers.len()));
                timed_delete(server, &location, &never_connects)?;
                counts[1] += 1;
            }
        } else if outputs.len() < MAX_OUTPUTS {
            let body = match rng.random_range(0..3) {
                0 => json!({"kind": "hls"}),
                1 => json!({"kind": "record", "path": format!("churn-{serial}-{}.mkv", counts[2])}),
                _ => json!({"kind": "rtmp", "url": nginx.url("live", &format!("churn{}", counts[2]))}),
            };
            let response = timed(server, "POST output", || server.post_json(&format!("{composition}/outputs"), &body))?;
            ensure!(response.status == 201, "adding {body}: {response:?}");
            let location = response.header("location").context("201 without Location")?.to_owned();
            counts[2] += 1;
            // Right after adding, mid-segment, or just after a keyframe.
            let delay = match rng.random_range(0..3) {
                0 => 0.0,
                1 => rng.random_range(0.2..0.8) * KEYFRAME_SECS,
                _ => rng.random_range(1..3) as f64 * KEYFRAME_SECS + 0.05,
            };
            outputs.push((location, Instant::now() + Duration::from_secs_f64(delay)));
        }
        sleep(Duration::from_secs_f64(rng.random_range(0.05..0.4)));
        watcher.check()?;
    }
    eprintln!(
        "{operations} operations: joins {}, leaves {}, outputs added {}, removed {} (of them WHEP viewers {viewers})",
        counts[0], counts[1], counts[2] + viewers, counts[3]
    );

    // The callers still in the call were served all along.
    for (member, location) in &callers {
        match member {
            Member::Caller(caller) => {
                let first = caller.rtp_packets(MediaKind::Audio);
                sleep(Duration::from_millis(300));
                ensure!(caller.rtp_packets(MediaKind::Audio) > first, "{location} no longer receives its mix-minus");
            }
            Member::Publisher { .. } => wait_until(&format!("{location}'s publisher to be publishing"), Duration::from_secs(5), || {
                Ok(server.get(location)?.json()?["ingest"]["publishing"] == true)
            })?,
            Member::Guest => {}
        }
    }
    for (_, location) in callers.drain(..) {
        timed_delete(server, &location, &never_connects)?;
    }
    for (location, _) in outputs.drain(..) {
        timed_delete(server, &location, &never_connects)?;
    }
    wait_until("every part to finish stopping", SETTLE_TIMEOUT, || {
        let health = server.get("/healthz")?.json()?;
        ensure!(health["parts_stuck"] == 0, "parts stuck after the churn: {health}");
        Ok(health["parts_stopping"] == 0)
    })?;
    watcher.stop()?;

    // A stopped part's streaming threads go back to GLib's pool (keeping
    // their last name), which ends those idle for 15 s but keeps two.
    let settled = Instant::now();
    let threads_back = wait_until("the streaming threads to end", THREADS_RETIRE_WITHIN, || {
        Ok(server.footprint()?.thread_count() <= before.thread_count() + GLIB_KEPT_IDLE_THREADS)
    });
    let after = server.footprint()?;
    eprintln!("before the churn {before:?}\nafter {after:?}, {:.1} s after every part stopped", settled.elapsed().as_secs_f64());
    threads_back.with_context(|| format!("threads not given back: {:?} → {:?}", before.threads, after.threads))?;
    ensure!(after.fds <= before.fds, "file descriptors not given back: {} → {}", before.fds, after.fds);
    let deleted = server.delete(&composition)?;
    ensure!(deleted.status == 204, "DELETE of the composition answered {}", deleted.status);
    let bound = server.bound_rtp_ports();
    ensure!(bound.is_empty(), "RTP ports still bound after every caller left: {bound:?}");
    Ok(())
}

/// One in this many joins is an RTMP or SRT publisher rather than an RTP caller.
const PUBLISHER_SHARE: f64 = 0.25;
/// Of the other joins, one in this many is a WebRTC guest that never connects.
const GUEST_SHARE: f64 = 0.15;

/// A participant of the churn: its sender lives as long as it does.
enum Member {
    Caller(Box<Caller>),
    /// The ffmpeg publishing to its ingest (killed when dropped).
    Publisher { _ffmpeg: ChildProcess },
    /// A WebRTC guest whose browser never connects.
    Guest,
}

/// An RTMP or SRT participant (by its serial's parity) and its ffmpeg publisher, just started.
fn join_publisher(server: &Server, id: &str, serial: usize, logs: &std::path::Path) -> Result<(Member, String)> {
    let ingest = if serial % 2 == 0 { "rtmp" } else { "srt" };
    let body = json!({"name": format!("host{serial}"), "ingest": ingest});
    let host = timed(server, &format!("POST {ingest} participant"), || add_publisher_participant(server, id, &body))?;
    let spec = PublisherSpec { colour: "magenta", tone_hz: 1900.0, size: (320, 180), seconds: 60 };
    let publisher = publisher(&host.publish_url(), &spec, &logs.join(format!("publisher{serial}.log")))?;
    Ok((Member::Publisher { _ffmpeg: publisher }, host.location))
}

/// Runs one churn request and fails if it took longer than the API deadline.
fn timed<T>(server: &Server, what: &str, request: impl FnOnce() -> Result<T>) -> Result<T> {
    let started = Instant::now();
    let result = request().with_context(|| what.to_owned())?;
    let took = started.elapsed();
    if took > API_DEADLINE {
        bail!("{what} took {took:?}\n{}", server.logs());
    }
    Ok(result)
}

fn timed_delete(server: &Server, location: &str, never_connects: &[String]) -> Result<()> {
    let response = timed(server, &format!("DELETE {location}"), || server.delete(location))?;
    // 202: gone from the API, its media still stopping (answered at 0.75 s); 200: a viewer.
    // 404 only for a WHEP viewer or WebRTC guest that never connected, which its connect
    // timeout may have removed already (see `never_connects`).
    let answered = matches!(response.status, 200 | 202 | 204) || (response.status == 404 && never_connects.iter().any(|l| l == location));
    ensure!(answered, "DELETE {location} answered {response:?}");
    Ok(())
}

/// Asks `/healthz` and the composition every 100 ms on a thread of its own,
/// and remembers the first problem: a slow or failed answer, a frozen composite.
struct Watcher {
    stop: Arc<AtomicBool>,
    problem: Arc<Mutex<Option<String>>>,
    thread: Option<thread::JoinHandle<usize>>,
}

impl Watcher {
    fn start(server: &Server, composition: &str) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let problem = Arc::new(Mutex::new(None));
        let urls = [server.url("/healthz"), server.url(composition)];
        let (stop_flag, found) = (stop.clone(), problem.clone());
        let thread = thread::spawn(move || {
            let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().expect("an HTTP client");
            let mut asked = 0;
            while !stop_flag.load(Ordering::SeqCst) {
                for url in &urls {
                    let started = Instant::now();
                    let answer = http.get(url).send().and_then(|r| r.error_for_status()).and_then(|r| r.text());
                    let took = started.elapsed();
                    asked += 1;
                    let trouble = match answer {
                        Err(e) => Some(format!("GET {url} failed after {took:?}: {e}")),
                        Ok(_) if took > API_DEADLINE => Some(format!("GET {url} took {took:?}")),
                        Ok(body) if frozen(&body) => Some(format!("the composite froze: {body}")),
                        Ok(_) => None,
                    };
                    if let Some(trouble) = trouble {
                        found.lock().unwrap().get_or_insert(trouble);
                    }
                }
                sleep(WATCH_EVERY);
            }
            asked
        });
        Watcher { stop, problem, thread: Some(thread) }
    }

    fn check(&self) -> Result<()> {
        match self.problem.lock().unwrap().as_ref() {
            Some(problem) => bail!("{problem}"),
            None => Ok(()),
        }
    }

    fn stop(mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        let asked = self.thread.take().expect("joined once").join().expect("the watcher does not panic");
        eprintln!("the watcher asked {asked} times");
        self.check()
    }
}

/// A composition's body that says its composite is frozen.
fn frozen(body: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body).is_ok_and(|v| v["state"] == "frozen")
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
