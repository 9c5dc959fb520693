//! Starting and stopping parts without ever stalling the engine.
//!
//! A GStreamer state change can block for good: setting a queue to NULL
//! waits for its streaming thread, which may itself wait inside a muxer or
//! an aggregator for something that will never come. On the engine thread
//! such a wait stopped the whole API, for every composition. So:
//! - a start runs on a thread of its own and the engine waits for it at most
//!   [`START_DEADLINE`]; a part that is not playing by then is given up;
//! - a stop (unlink, EOS where a muxer needs it, NULL, removal) always runs
//!   on a thread of its own, handed to the [`Reaper`]. The engine goes on at
//!   once; the reaper tells it when the part has stopped, and which parts
//!   have not stopped after [`STUCK_AFTER`]: those are reported and left to
//!   finish on their own thread.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;

use super::{EventSink, MediaError, MediaEvent};

/// How long the engine waits for a part to play. Starting a part takes
/// milliseconds; the API answers within a second even when one never does.
pub const START_DEADLINE: Duration = Duration::from_millis(500);
/// A part still stopping after this long is reported as stuck.
pub const STUCK_AFTER: Duration = Duration::from_secs(5);

/// Sets `element` (a part, or a whole pipeline) PLAYING on a thread of its
/// own, waiting at most [`START_DEADLINE`]. On a timeout the state change
/// goes on without us: the caller stops the part, and that stop waits for it.
pub fn start(element: &gst::Element) -> Result<(), MediaError> {
    let (done, wait) = std::sync::mpsc::sync_channel(1);
    let starting = element.clone();
    std::thread::Builder::new()
        .name(thread_name("start", &element.name()))
        .spawn(move || {
            let _ = done.send(starting.set_state(gst::State::Playing));
        })
        .map_err(|e| MediaError::Gst(format!("starting {}: {e}", element.name())))?;
    match wait.recv_timeout(START_DEADLINE) {
        Ok(result) => result.map(drop).map_err(|_| MediaError::Gst(format!("{} refused to play", element.name()))),
        Err(_) => Err(MediaError::StartTimeout { part: element.name().to_string(), after: START_DEADLINE }),
    }
}

/// What it takes to stop one part, to be run off the engine thread.
pub struct Teardown {
    what: String,
    job: Box<dyn FnOnce() + Send>,
}

impl Teardown {
    /// `what` names the part in logs ("participant 1a2b of composition 3c4d").
    pub fn new(what: impl Into<String>, job: impl FnOnce() + Send + 'static) -> Teardown {
        Teardown { what: what.into(), job: Box::new(job) }
    }
}

/// Identifies one teardown in the [`MediaEvent::Stopped`] that ends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StopTicket(u64);

struct Stopping {
    what: String,
    since: Instant,
    reported_stuck: bool,
}

/// Runs teardowns, each on a thread of its own, and knows which are still
/// running. Cloned into every composition; one per engine.
#[derive(Clone)]
pub struct Reaper {
    inner: Arc<ReaperInner>,
}

struct ReaperInner {
    next: AtomicU64,
    stopping: Mutex<BTreeMap<StopTicket, Stopping>>,
    events: EventSink,
}

/// How many parts are stopping, and how many of those are stuck.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReaperCounts {
    pub stopping: usize,
    pub stuck: usize,
}

impl Reaper {
    pub fn new(events: EventSink) -> Reaper {
        Reaper { inner: Arc::new(ReaperInner { next: AtomicU64::new(1), stopping: Mutex::default(), events }) }
    }

    /// Starts `teardown` on its own thread; a [`MediaEvent::Stopped`] with
    /// the returned ticket follows when it is done.
    pub fn reap(&self, teardown: Teardown) -> StopTicket {
        let ticket = StopTicket(self.inner.next.fetch_add(1, Ordering::Relaxed));
        let Teardown { what, job } = teardown;
        self.lock().insert(ticket, Stopping { what: what.clone(), since: Instant::now(), reported_stuck: false });
        let inner = self.inner.clone();
        let run = move || {
            job();
            give_back_freed_memory();
            let Some(stopping) = inner.stopping.lock().expect("reaper lock").remove(&ticket) else { return };
            let after = stopping.since.elapsed();
            if stopping.reported_stuck {
                tracing::warn!(part = %stopping.what, after_ms = after.as_millis() as u64, "a stuck part finally stopped");
            } else {
                tracing::debug!(part = %stopping.what, after_ms = after.as_millis() as u64, "part stopped");
            }
            (inner.events)(MediaEvent::Stopped { ticket, after });
        };
        if let Err(e) = std::thread::Builder::new().name(thread_name("stop", &what)).spawn(run) {
            // No thread to be had: the part stays (reported as stuck), the engine goes on.
            tracing::error!(part = %what, "no thread to stop this part: {e}");
        }
        ticket
    }

    /// Parts stopping for longer than [`STUCK_AFTER`] that were not reported
    /// yet: each is returned once, with how long it has been stopping.
    pub fn newly_stuck(&self) -> Vec<(String, Duration)> {
        let mut stopping = self.lock();
        stopping
            .values_mut()
            .filter(|s| !s.reported_stuck && s.since.elapsed() >= STUCK_AFTER)
            .map(|s| {
                s.reported_stuck = true;
                (s.what.clone(), s.since.elapsed())
            })
            .collect()
    }

    pub fn counts(&self) -> ReaperCounts {
        let stopping = self.lock();
        ReaperCounts { stopping: stopping.len(), stuck: stopping.values().filter(|s| s.reported_stuck).count() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<StopTicket, Stopping>> {
        self.inner.stopping.lock().expect("reaper lock")
    }
}

/// Hands the heap pages freed by a stopped part back to the system.
///
/// A part's buffers are allocated by its streaming and decoder threads,
/// each in a glibc malloc arena of its own; when the part stops they are
/// freed but stay in those arenas, and the next part's threads land in
/// other arenas. Measured: 500 joins and leaves grew the server by 150 MiB
/// with no GStreamer object left alive (the leaks tracer counted the same
/// 680 objects after 5 and after 45 of them), and `malloc_trim(0)` gave
/// 132 MiB of it back at once. So each teardown trims (a few ms, on the
/// teardown's own thread).
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas; any thread may call it.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Linux keeps 15 bytes of a thread name: the verb and the start of the part's name.
fn thread_name(verb: &str, part: &str) -> String {
    format!("{verb}-{part}").chars().take(15).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn reaper() -> (Reaper, mpsc::Receiver<MediaEvent>) {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        (Reaper::new(Arc::new(move |e| drop(tx.lock().unwrap().send(e)))), rx)
    }

    #[test]
    fn a_teardown_runs_off_the_calling_thread_and_reports_its_ticket() {
        let (reaper, events) = reaper();
        let caller = std::thread::current().id();
        let (ran_on, seen) = mpsc::channel();
        let ticket = reaper.reap(Teardown::new("part a", move || ran_on.send(std::thread::current().id()).unwrap()));
        assert_ne!(seen.recv_timeout(Duration::from_secs(5)).unwrap(), caller);
        match events.recv_timeout(Duration::from_secs(5)).unwrap() {
            MediaEvent::Stopped { ticket: t, .. } => assert_eq!(t, ticket),
            other => panic!("unexpected event {other:?}"),
        }
        assert_eq!(reaper.counts(), ReaperCounts::default());
    }

    #[test]
    fn a_teardown_that_blocks_never_blocks_the_caller_and_is_counted_while_it_runs() {
        let (reaper, events) = reaper();
        let (release, blocked) = mpsc::channel::<()>();
        let started = Instant::now();
        reaper.reap(Teardown::new("stuck part", move || {
            let _ = blocked.recv();
        }));
        assert!(started.elapsed() < Duration::from_millis(100));
        assert_eq!(reaper.counts(), ReaperCounts { stopping: 1, stuck: 0 });
        assert!(reaper.newly_stuck().is_empty(), "not stuck before STUCK_AFTER");
        release.send(()).unwrap();
        assert!(matches!(events.recv_timeout(Duration::from_secs(5)).unwrap(), MediaEvent::Stopped { .. }));
        assert_eq!(reaper.counts().stopping, 0);
    }

    #[test]
    fn thread_names_fit_linux() {
        assert_eq!(thread_name("stop", "caller-0123456789ab"), "stop-caller-012");
    }
}
