//! Nothing fails silently: a flow that stops shows in the API within about
//! two seconds, whoever's fault it is, and a part that will not stop never
//! holds up the API.
//!
//! - a caller whose media stops arriving is `interrupted`, then `active` again;
//! - a caller that gets no mix-minus (its encoder profile produces nothing)
//!   is `interrupted`, and says which way and which medium;
//! - a recording whose file stops taking data (a FIFO nobody reads) is
//!   `stalled` while the callers keep their composite; removing it answers
//!   within a second although its muxer cannot stop, `/healthz` counts it
//!   stuck, and it finally stops when the file lets go;
//! - a recording whose file cannot even be opened does not stall the API:
//!   the request fails within a second with 503.

use anyhow::{Context, Result, ensure};
use crate::common::*;
use serde_json::{Value, json};
use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

/// The watchdogs call a flow stopped after 2 s and look every 0.1 s.
const REPORTED_WITHIN: Duration = Duration::from_millis(2600);
const API_DEADLINE: Duration = Duration::from_secs(1);

fn fail_with_logs(server: &Server, result: Result<()>) {
    if let Err(e) = result {
        panic!("{e:?}\n--- server log ---\n{}", server.logs());
    }
}

fn joined(server: &Server, id: &str, spec: CallerSpec) -> Result<(Caller, Participant)> {
    let mut caller = Caller::new(spec)?;
    let participant = server.add_participant(id, &caller.offer())?;
    caller.start_sender(&participant.answer)?;
    Ok((caller, participant))
}

/// Waits for `location`'s JSON to satisfy `wanted`, returning it and when it did.
fn wait_for(server: &Server, location: &str, timeout: Duration, what: &str, wanted: impl Fn(&Value) -> bool) -> Result<(Value, Instant)> {
    let deadline = Instant::now() + timeout;
    loop {
        let body = server.get(location)?.json()?;
        if wanted(&body) {
            return Ok((body, Instant::now()));
        }
        ensure!(Instant::now() < deadline, "{what}: not within {timeout:?}; last seen {body}");
        sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_caller_whose_media_stops_arriving_is_reported_within_two_seconds_and_recovers() {
    let server = Server::start().unwrap();
    fail_with_logs(&server, caller_goes_quiet(&server));
}

fn caller_goes_quiet(server: &Server) -> Result<()> {
    let id = server.create_composition(&json!({"video": {"width": 640, "height": 360}}))?;
    let (mut caller, participant) = joined(server, &id, CallerSpec::new("quiet", Colour::Red, 500.0))?;
    let location = participant.location;
    wait_for(server, &location, Duration::from_secs(5), "the caller active", |p| p["state"] == "active")?;
    // The composite's pulse, which the freeze watchdog reads, beats at the frame rate.
    let frames = |body: &Value| body["composite_frames"].as_u64().unwrap_or(0);
    let before = server.get(&format!("/v1/compositions/{id}"))?.json()?;
    sleep(Duration::from_secs(1));
    let after = server.get(&format!("/v1/compositions/{id}"))?.json()?;
    let fps = frames(&after) - frames(&before);
    ensure!((25..=35).contains(&fps) && after["state"] == "running", "composite at {fps} frames/s: {after}");

    caller.kill_sender();
    let silent_since = Instant::now();
    let (body, seen) = wait_for(server, &location, Duration::from_secs(5), "the caller reported", |p| p["state"] == "interrupted")?;
    let after = seen - silent_since;
    eprintln!("reported {after:?} after the caller went quiet: {}", body["last_error"]);
    ensure!(after <= REPORTED_WITHIN, "reported only {after:?} after the caller went quiet");
    let error = body["last_error"].as_str().unwrap_or_default();
    ensure!(error.contains("has arrived from the caller"), "last_error does not say what stopped: {error:?}");

    caller.start_sender(&participant.answer)?;
    wait_for(server, &location, Duration::from_secs(3), "the caller active again", |p| p["state"] == "active")?;
    Ok(())
}

#[test]
fn a_caller_that_gets_no_mix_minus_is_reported_with_which_way_and_which_medium() {
    // A PCMU encoder profile that produces nothing: an encoder gone quiet.
    let pipelines = tempfile::tempdir().unwrap();
    copy_profiles(pipelines.path(), "mulawenc", "mulawenc ! valve drop=true drop-mode=forward-sticky-events").unwrap();
    let server = Server::start_with(&["--pipelines", pipelines.path().to_str().unwrap()]).unwrap();
    fail_with_logs(&server, caller_gets_no_mix_minus(&server));
}

fn caller_gets_no_mix_minus(server: &Server) -> Result<()> {
    let id = server.create_composition(&json!({"video": {"width": 640, "height": 360}}))?;
    let spec = CallerSpec { audio: Some(AudioCodec::Pcmu), ..CallerSpec::new("deaf", Colour::Green, 700.0) };
    let joined_at = Instant::now();
    let (caller, participant) = joined(server, &id, spec)?;
    let location = participant.location;
    let (body, seen) = wait_for(server, &location, Duration::from_secs(5), "the caller reported", |p| p["state"] == "interrupted")?;
    ensure!(seen - joined_at <= REPORTED_WITHIN, "reported only {:?} after joining", seen - joined_at);
    let error = body["last_error"].as_str().unwrap_or_default();
    ensure!(error.contains("no audio (its mix-minus)"), "last_error does not say what stopped: {error:?}");
    ensure!(body["audio"]["packets_sent"] == 0, "the API counts audio sent: {body}");
    ensure!(body["video"]["packets_sent"].as_u64().unwrap_or(0) > 0, "the composite should still flow: {body}");
    ensure!(caller.rtp_packets(MediaKind::Audio) == 0, "the caller did receive audio");
    ensure!(caller.rtp_packets(MediaKind::Video) > 0, "the caller received no composite either");
    Ok(())
}

#[test]
fn a_recording_that_stops_taking_data_is_reported_and_never_holds_up_the_api() {
    let server = Server::start().unwrap();
    fail_with_logs(&server, recording_stalls(&server));
}

fn recording_stalls(server: &Server) -> Result<()> {
    let id = server.create_composition(&json!({"video": {"width": 640, "height": 360}}))?;
    let (caller, _) = joined(server, &id, CallerSpec::new("watcher", Colour::Blue, 1100.0))?;
    let fifo = make_fifo(&server.recordings_dir(), "stall.mkv")?;
    let reader = FifoReader::start(fifo);

    let added = server.post_json(&format!("/v1/compositions/{id}/outputs"), &json!({"kind": "record", "path": "stall.mkv"}))?;
    ensure!(added.status == 201, "adding the recording: {added:?}");
    let output = added.header("location").context("201 without Location")?.to_owned();
    wait_for(server, &output, Duration::from_secs(5), "the recording live", |o| o["state"] == "live")?;

    reader.stop_reading();
    let (body, _) = wait_for(server, &output, Duration::from_secs(8), "the recording reported stalled", |o| o["state"] == "stalled")?;
    eprintln!("stalled after {} bytes: {}", body["bytes_sent"], body["last_error"]);
    // Its queue leaks: the shared encode goes on for everyone else.
    let composite = caller.rtp_packets(MediaKind::Video);
    sleep(Duration::from_millis(500));
    ensure!(caller.rtp_packets(MediaKind::Video) > composite + 10, "a stalled recording held up the callers' composite");

    // Its muxer's thread is stuck in write(): the removal cannot finish, yet it is answered.
    let started = Instant::now();
    let removed = server.delete(&output)?;
    ensure!(started.elapsed() < API_DEADLINE, "DELETE took {:?}", started.elapsed());
    ensure!(removed.status == 202, "DELETE of a recording that cannot stop answered {removed:?}");
    ensure!(server.get(&output)?.status == 404, "a removed output is still listed");
    let (health, _) = wait_for(server, "/healthz", Duration::from_secs(8), "the part counted stuck", |h| h["parts_stuck"] == 1)?;
    eprintln!("healthz while it is stuck: {health}");
    let started = Instant::now();
    ensure!(server.get(&format!("/v1/compositions/{id}"))?.status == 200, "the composition does not answer");
    ensure!(started.elapsed() < API_DEADLINE, "GET took {:?} while a part is stuck", started.elapsed());

    // The file lets go (its reader closes): the write fails and the part finally stops.
    drop(reader);
    wait_for(server, "/healthz", Duration::from_secs(8), "the stuck part to stop", |h| h["parts_stopping"] == 0 && h["parts_stuck"] == 0)?;
    Ok(())
}

#[test]
fn a_recording_that_cannot_open_its_file_fails_within_a_second() {
    let server = Server::start().unwrap();
    fail_with_logs(&server, recording_never_opens(&server));
}

fn recording_never_opens(server: &Server) -> Result<()> {
    let id = server.create_composition(&json!({"video": {"width": 640, "height": 360}}))?;
    // Opening a FIFO for writing waits for a reader: here, none yet.
    let fifo = make_fifo(&server.recordings_dir(), "never.mkv")?;
    let started = Instant::now();
    let added = server.post_json(&format!("/v1/compositions/{id}/outputs"), &json!({"kind": "record", "path": "never.mkv"}))?;
    ensure!(started.elapsed() < API_DEADLINE, "POST took {:?}", started.elapsed());
    ensure!(added.status == 503, "a recording that cannot start answered {added:?}");
    ensure!(added.body.contains("did not start"), "the error does not say why: {}", added.body);
    let outputs = server.get(&format!("/v1/compositions/{id}/outputs"))?.json()?;
    ensure!(outputs["outputs"].as_array().is_some_and(Vec::is_empty), "a failed output is listed: {outputs}");
    // A reader comes: the open returns, and the given-up part stops.
    let reader = FifoReader::start(fifo);
    wait_for(server, "/healthz", Duration::from_secs(5), "the given-up part to stop", |h| h["parts_stopping"] == 0)?;
    drop(reader);
    Ok(())
}

/// The server's profiles with `from` replaced by `to` in the encoders' descriptions.
fn copy_profiles(dir: &Path, from: &str, to: &str) -> Result<()> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    for name in ["encoders.toml", "decoders.toml"] {
        let text = std::fs::read_to_string(source.join(name))?;
        let text = if name == "encoders.toml" { text.replace(&format!("description = \"{from}\""), &format!("description = \"{to}\"")) } else { text };
        std::fs::write(dir.join(name), text)?;
    }
    ensure!(std::fs::read_to_string(dir.join("encoders.toml"))?.contains(to), "no profile description was \"{from}\"");
    Ok(())
}

fn make_fifo(dir: &Path, name: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    let c_path = CString::new(path.to_str().context("UTF-8 path")?)?;
    // SAFETY: mkfifo reads a NUL-terminated path.
    let made = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    ensure!(made == 0, "mkfifo {}: {}", path.display(), std::io::Error::last_os_error());
    Ok(path)
}

/// Reads a FIFO on a thread of its own until told to stop reading (it then
/// keeps it open, so that the writer blocks), and closes it when dropped.
/// The thread is not joined: it may still wait in open() for a writer.
struct FifoReader {
    reading: Arc<AtomicBool>,
    open: Arc<AtomicBool>,
}

impl FifoReader {
    fn start(path: PathBuf) -> FifoReader {
        let (reading, open) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicBool::new(true)));
        let (keep_reading, keep_open) = (reading.clone(), open.clone());
        thread::spawn(move || {
            // Blocks until the server opens it for writing.
            let Ok(mut file) = File::open(&path) else { return };
            let mut buffer = vec![0u8; 64 * 1024];
            while keep_open.load(Ordering::SeqCst) {
                if keep_reading.load(Ordering::SeqCst) {
                    if matches!(file.read(&mut buffer), Ok(0) | Err(_)) {
                        return;
                    }
                } else {
                    sleep(Duration::from_millis(20));
                }
            }
        });
        FifoReader { reading, open }
    }

    fn stop_reading(&self) {
        self.reading.store(false, Ordering::SeqCst);
    }
}

impl Drop for FifoReader {
    fn drop(&mut self) {
        self.open.store(false, Ordering::SeqCst);
        // Its thread closes the FIFO within one poll.
        sleep(Duration::from_millis(100));
    }
}
