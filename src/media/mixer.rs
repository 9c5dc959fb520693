//! The audio mix of one composition, done in one thread of ours rather than
//! in one GStreamer aggregator per caller. Every 20 ms it takes one block of
//! decoded audio from each caller, sums them once, and hands each caller the
//! sum minus its own block (mix-minus) and the broadcast the whole sum.
//!
//! Why not `audiomixer`s: a mixer per caller fed by every other caller is
//! O(N²) pads (30 callers already took 0.9 of a core here, 10 took 0.18),
//! and a live aggregator waits for its slowest input up to a deadline, so
//! one muted caller (no RTP at all) delayed everyone's audio by the whole
//! jitter buffer plus headroom. Here the work is O(N), a caller with no
//! block simply contributes silence to that block, and a caller's own audio
//! is removed from the very sum it went into, so the mix-minus is exact.
//!
//! The producer's controls act here too: each caller's block goes into the
//! sum at its gain (volume, 0 when muted), ramped linearly over one block
//! when it changes so that a mute is not a click; since its own block is
//! subtracted at the same gain, its mix-minus stays exact. A deaf caller is
//! sent silence, still one block every 20 ms, so that its return stream
//! never stops. And since every caller's block passes here anyway, its level
//! is measured here (before its gain: what it sends) and fed to the speaker
//! detector (`model::speaker`), whose verdict the engine reads.
//!
//! A caller that has contributed nothing to the mix for a while (muted,
//! silent, sending nothing) hears exactly the full mix: its Opus encoder is
//! sent one packet shared with every caller like it (`opus::shared`) instead
//! of encoding its own. Its first audible block takes it back to its own
//! encode, so its mix-minus never holds itself.

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::lipsync::VideoLead;
use super::opus::{ShareKey, SharedEncode, attach_shared_packet};
use super::{MediaError, make};
use crate::model::ids::ParticipantId;
use crate::model::speaker::{BlockLevel, QUIETEST_SPEECH_DBOV, SILENCE_DBOV, SpeakerDetector, TalkerState, level_dbov};

/// One mixing block. 20 ms is what every RTP audio codec here packs per packet.
pub const BLOCK: Duration = Duration::from_millis(20);
/// A caller whose queue grows past this many blocks (a burst arrived after a
/// stall) is trimmed back to `KEPT_AFTER_TRIM` at once.
const MAX_QUEUED_BLOCKS: usize = 4;
const KEPT_AFTER_TRIM: usize = 2;
/// Audio that stayed queued through a whole window of blocks, even at its
/// lowest, is delay that never goes away (queued at start-up, or a sender
/// whose clock runs fast): it is dropped at the end of the window. One
/// second: a drop is rare and a short glitch, the delay it removes is not.
const DRAIN_WINDOW_BLOCKS: u32 = 50;
/// A caller whose block once came too late for its tick (a hole of 20 ms in
/// everyone's mix) keeps this many blocks queued from then on, which the
/// drain above leaves alone. Without it, the late block standing in the
/// queue was drained a second later (a skip), leaving no slack for the next
/// late one: on a loaded machine, a hole and a skip every few seconds
/// (seen in tests/active_speaker.rs). A caller that is never late keeps
/// the lowest delay.
const JITTER_RESERVE_BLOCKS: usize = 1;
/// After a stall of the mixing thread longer than this many blocks it picks
/// up at the present rather than racing through the missed blocks.
const MAX_CATCH_UP_BLOCKS: u32 = 5;
/// How long before its tick the audio of the caller closest to late should
/// be there, once the tick has moved up to the callers (see [`TickPhase`]):
/// room for the scheduling jitter of the threads that decode it.
const TICK_MARGIN: Duration = Duration::from_millis(5);
/// The tick moves up once per this many blocks, if at all...
const PHASE_WINDOW_BLOCKS: u32 = 50;
/// ...and only by this much or more, so that it settles rather than wanders.
const MIN_TICK_ADVANCE: Duration = Duration::from_millis(2);
/// Blocks in a row a caller must contribute nothing audible before it is
/// sent the shared encode of the full mix: each move between encodes is a
/// small break in its decoder's history, so they are kept rare, and a
/// talker's pauses between words do not count.
const SHARE_AFTER_BLOCKS: u32 = 50;
/// The rate Opus encodes at, and so the mix's rate for a shared encode.
const OPUS_RATE: u32 = 48_000;

/// Sample format of every block: interleaved S16LE at the composition's rate.
#[derive(Clone, Copy, Debug)]
pub struct MixFormat {
    pub rate: u32,
    pub channels: u32,
}

impl MixFormat {
    fn block_samples(self) -> usize {
        (self.rate as usize * BLOCK.as_millis() as usize / 1000) * self.channels as usize
    }

    /// How long `samples` (interleaved) last.
    fn duration_of(self, samples: usize) -> gst::ClockTime {
        let frames = (samples / self.channels.max(1) as usize) as u64;
        gst::ClockTime::from_nseconds(frames * 1_000_000_000 / u64::from(self.rate.max(1)))
    }

    pub fn caps(self) -> gst::Caps {
        gst::Caps::builder("audio/x-raw")
            .field("format", "S16LE")
            .field("layout", "interleaved")
            .field("rate", self.rate as i32)
            .field("channels", self.channels as i32)
            .build()
    }
}

/// How many callers' mix-minus is encoded for them alone (`own`), and how
/// many are sent the one shared encode of the full mix (`shared`).
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct MixMinusEncodes {
    pub own: usize,
    pub shared: usize,
}

/// Who gets the whole mix rather than a mix-minus.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
enum Listener {
    Caller(ParticipantId),
    Broadcast,
    /// The WHEP viewers' one encode of the programme's sound.
    Viewers,
}

/// One caller's decoded audio waiting for the next block, and the gain it
/// goes into the mix with.
struct Input {
    queue: VecDeque<i16>,
    /// The fewest samples left after taking a block, over the current window.
    lowest: Option<usize>,
    blocks_in_window: u32,
    /// Whether the latest tick had a whole block from it.
    flowing: bool,
    /// Blocks the drain leaves queued: none until a block came late.
    reserve_blocks: usize,
    /// As the producer set it: its volume, 0 when muted.
    gain: f32,
    /// The gain its latest block went in with; the next block ramps from it.
    applied_gain: f32,
    /// In the lobby (keying in a PIN): nobody hears it, whatever its gain.
    held: bool,
    /// The running time its first queued sample carried (or `None` before any).
    head_time: Option<gst::ClockTime>,
    /// Since when its queue has held a whole block (`None`: it does not).
    ready_since: Option<Instant>,
    /// How much earlier than it was stamped the composite shows its picture
    /// (`lipsync.rs`); its audio is stamped that much earlier too.
    video_lead: VideoLead,
}

impl Default for Input {
    fn default() -> Self {
        Input {
            queue: VecDeque::new(),
            lowest: None,
            blocks_in_window: 0,
            flowing: false,
            reserve_blocks: 0,
            gain: 1.0,
            applied_gain: 1.0,
            held: false,
            head_time: None,
            ready_since: None,
            video_lead: VideoLead::default(),
        }
    }
}

impl Input {
    /// Queues decoded audio whose first sample has running time `time`. The
    /// queue's head time follows by counting samples, and is taken from
    /// `time` again when the two disagree by more than a block (a gap, or
    /// audio the decoder dropped). `now` is when it arrived.
    fn receive(&mut self, samples: impl Iterator<Item = i16>, time: Option<gst::ClockTime>, format: MixFormat, now: Instant) {
        let queued = format.duration_of(self.queue.len());
        let lead = self.video_lead.load(Ordering::Relaxed);
        let lead_by = |t: gst::ClockTime| match u64::try_from(lead) {
            Ok(earlier) => t.saturating_sub(gst::ClockTime::from_nseconds(earlier)),
            Err(_) => t + gst::ClockTime::from_nseconds(lead.unsigned_abs()),
        };
        if let Some(time) = time.map(lead_by) {
            let counted = self.head_time.map(|head| head + queued);
            let off = counted.is_none_or(|c| c.nseconds().abs_diff(time.nseconds()) > BLOCK.as_nanos() as u64);
            if self.queue.is_empty() || off {
                self.head_time = Some(time.saturating_sub(queued));
            }
        }
        let short = self.queue.len() < format.block_samples();
        self.queue.extend(samples);
        if short && self.queue.len() >= format.block_samples() {
            self.ready_since = Some(now);
        }
    }

    /// Drops the first `count` queued samples.
    fn skip(&mut self, count: usize, format: MixFormat) -> std::collections::vec_deque::Drain<'_, i16> {
        self.head_time = self.head_time.map(|head| head + format.duration_of(count));
        self.queue.drain(..count)
    }
}

/// Where one listener's blocks go.
#[derive(Clone)]
struct Output {
    src: gst_app::AppSrc,
    /// Its encoder's, if it can be sent the shared encode of the full mix.
    share: Option<ShareKey>,
}

#[derive(Default)]
struct MixState {
    inputs: HashMap<ParticipantId, Input>,
    outputs: HashMap<Listener, Output>,
    /// Callers sent silence (put on hold by the producer).
    deaf: HashSet<ParticipantId>,
    /// Callers in the lobby, who hear a prompt (or silence) instead of the room.
    lobby: HashMap<ParticipantId, Announcement>,
}

/// What a caller in the lobby hears: a prompt, from its start, then silence.
#[derive(Default)]
struct Announcement {
    samples: Option<Arc<[i16]>>,
    played: usize,
}

impl Announcement {
    /// The next block of the prompt, padded with silence, as S16LE bytes.
    fn next_block(&mut self, block_samples: usize) -> Vec<u8> {
        let mut block = vec![0u8; block_samples * 2];
        if let Some(samples) = &self.samples {
            let part = &samples[self.played.min(samples.len())..(self.played + block_samples).min(samples.len())];
            for (bytes, sample) in block.chunks_exact_mut(2).zip(part) {
                bytes.copy_from_slice(&sample.to_le_bytes());
            }
            self.played += part.len();
        }
        block
    }
}

/// What one listener is sent of a block.
enum Hearing {
    Room { deaf: bool },
    Announcement(Vec<u8>),
}

struct Shared {
    format: MixFormat,
    state: Mutex<MixState>,
    /// Fed by the mixing thread, read by the engine.
    speech: Mutex<SpeakerDetector>,
    /// Called (from the mixing thread) when the active speaker changes.
    on_speaker_change: Box<dyn Fn() + Send + Sync>,
    /// Callers sent the shared encode, and callers encoded for alone, at
    /// the latest block.
    shared_encodes: AtomicUsize,
    own_encodes: AtomicUsize,
    stop: AtomicBool,
}

pub struct AudioMix {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl AudioMix {
    /// Starts the mixing thread; block timestamps follow `pipeline`'s running
    /// time. `jitter_buffer` is how long the callers' audio is held before
    /// it is decoded (see [`QueueLag::expecting`]). `on_speaker_change` is
    /// called from that thread whenever the active speaker changes.
    pub fn start(
        name: &str,
        format: MixFormat,
        jitter_buffer: Duration,
        pipeline: &gst::Pipeline,
        on_speaker_change: impl Fn() + Send + Sync + 'static,
    ) -> Result<AudioMix, MediaError> {
        let shared = Arc::new(Shared {
            format,
            state: Mutex::default(),
            speech: Mutex::new(SpeakerDetector::new(BLOCK)),
            on_speaker_change: Box::new(on_speaker_change),
            shared_encodes: AtomicUsize::new(0),
            own_encodes: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let thread_shared = shared.clone();
        let pipeline = pipeline.downgrade();
        let thread = std::thread::Builder::new()
            .name(name.chars().take(15).collect())
            .spawn(move || run(&thread_shared, &pipeline, jitter_buffer))
            .map_err(|e| MediaError::Gst(format!("mixing thread: {e}")))?;
        Ok(AudioMix { shared, thread: Some(thread) })
    }

    /// An appsink that feeds `caller`'s decoded audio into the mix; `video_lead`
    /// says how much earlier than stamped the composite shows its picture.
    pub fn input(&self, caller: &ParticipantId, name: &str, video_lead: VideoLead) -> Result<gst::Element, MediaError> {
        let sink = make("appsink", name)?.downcast::<gst_app::AppSink>().expect("appsink is an AppSink");
        sink.set_caps(Some(&self.shared.format.caps()));
        // Decoded audio goes to the mix as soon as it exists: the mixing
        // thread's clock is what paces it, not the sink's.
        sink.set_sync(false);
        sink.set_property("async", false);
        {
            let mut state = self.lock();
            let held = state.lobby.contains_key(caller);
            state.inputs.insert(caller.clone(), Input { held, video_lead, ..Input::default() });
        }
        let shared = Arc::downgrade(&self.shared);
        let caller = caller.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let (Some(shared), Some(buffer)) = (shared.upgrade(), sample.buffer()) else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                    let time = sample
                        .segment()
                        .and_then(|segment| segment.downcast_ref::<gst::ClockTime>())
                        .and_then(|segment| segment.to_running_time(buffer.pts()));
                    let mut state = shared.state.lock().expect("mix state lock");
                    if let Some(input) = state.inputs.get_mut(&caller) {
                        let samples = map.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]]));
                        input.receive(samples, time, shared.format, Instant::now());
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        Ok(sink.upcast())
    }

    /// A live appsrc giving what `caller` hears: everyone but itself. With
    /// `share` (its encoder's key), it is sent the shared encode of the full
    /// mix while it contributes nothing.
    pub fn mix_minus(&self, caller: &ParticipantId, name: &str, share: Option<ShareKey>) -> Result<gst::Element, MediaError> {
        let share = share.filter(|_| self.shared.format.rate == OPUS_RATE);
        self.output(Listener::Caller(caller.clone()), name, share)
    }

    /// A live appsrc giving everyone's audio, for the broadcast encode.
    pub fn full_mix(&self, name: &str) -> Result<gst::Element, MediaError> {
        self.output(Listener::Broadcast, name, None)
    }

    /// A live appsrc giving everyone's audio, for the WHEP viewers' encode;
    /// [`AudioMix::stop_viewers_mix`] ends it.
    pub fn viewers_mix(&self, name: &str) -> Result<gst::Element, MediaError> {
        self.output(Listener::Viewers, name, None)
    }

    /// The last viewer left: nothing is mixed for viewers any more.
    pub fn stop_viewers_mix(&self) {
        self.lock().outputs.remove(&Listener::Viewers);
    }

    /// How the callers' mix-minus is encoded now.
    pub fn mix_minus_encodes(&self) -> MixMinusEncodes {
        MixMinusEncodes {
            own: self.shared.own_encodes.load(Ordering::Relaxed),
            shared: self.shared.shared_encodes.load(Ordering::Relaxed),
        }
    }

    fn output(&self, listener: Listener, name: &str, share: Option<ShareKey>) -> Result<gst::Element, MediaError> {
        let src = make("appsrc", name)?.downcast::<gst_app::AppSrc>().expect("appsrc is an AppSrc");
        src.set_caps(Some(&self.shared.format.caps()));
        src.set_is_live(true);
        src.set_format(gst::Format::Time);
        // If its encoder falls behind, old blocks go rather than memory.
        src.set_max_bytes((self.shared.format.block_samples() * 2 * 10) as u64);
        src.set_property_from_str("leaky-type", "downstream");
        self.lock().outputs.insert(listener, Output { src: src.clone(), share });
        Ok(src.upcast())
    }

    /// Applies a producer's controls from the next block on: `gain` for
    /// what `caller` sends (0 when muted), silence for what it receives if `deaf`.
    pub fn set_controls(&self, caller: &ParticipantId, gain: f64, deaf: bool) {
        let mut state = self.lock();
        if let Some(input) = state.inputs.get_mut(caller) {
            input.gain = gain as f32;
        }
        if deaf {
            state.deaf.insert(caller.clone());
        } else {
            state.deaf.remove(caller);
        }
    }

    /// Keeps `caller` out of the room (it keys in a PIN): nobody hears it,
    /// and it hears only what [`AudioMix::announce`] plays it.
    pub fn hold_in_lobby(&self, caller: &ParticipantId) {
        let mut state = self.lock();
        if let Some(input) = state.inputs.get_mut(caller) {
            input.held = true;
        }
        state.lobby.entry(caller.clone()).or_default();
    }

    /// Plays `samples` (in the mix format) to a caller in the lobby from
    /// the next block on, cutting off whatever it was hearing.
    pub fn announce(&self, caller: &ParticipantId, samples: Arc<[i16]>) {
        if let Some(announcement) = self.lock().lobby.get_mut(caller) {
            *announcement = Announcement { samples: Some(samples), played: 0 };
        }
    }

    /// Lets a caller out of the lobby into the room: heard, and hearing its mix-minus.
    pub fn admit(&self, caller: &ParticipantId) {
        let mut state = self.lock();
        if let Some(input) = state.inputs.get_mut(caller) {
            input.held = false;
        }
        state.lobby.remove(caller);
    }

    /// The mix format, for what is announced.
    pub fn format(&self) -> MixFormat {
        self.shared.format
    }

    /// Takes `caller` out of the mix, both as a talker and as a listener.
    pub fn remove(&self, caller: &ParticipantId) {
        {
            let mut state = self.lock();
            state.inputs.remove(caller);
            state.outputs.remove(&Listener::Caller(caller.clone()));
            state.deaf.remove(caller);
            state.lobby.remove(caller);
        }
        let changed = self.speech().remove(caller);
        if changed {
            (self.shared.on_speaker_change)();
        }
    }

    /// Who the detector takes for the active speaker now.
    pub fn active_speaker(&self) -> Option<ParticipantId> {
        self.speech().active().cloned()
    }

    /// `caller`'s level and whether it speaks; `None` if it sends no audio.
    pub fn talker(&self, caller: &ParticipantId) -> Option<TalkerState> {
        self.speech().talker(caller)
    }

    fn speech(&self) -> std::sync::MutexGuard<'_, SpeakerDetector> {
        self.shared.speech.lock().expect("speech lock")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MixState> {
        self.shared.state.lock().expect("mix state lock")
    }
}

impl AudioMix {
    /// Stops the mixing thread (before the pipeline stops, so that it does
    /// not push into elements going away).
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for AudioMix {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The mixing loop: one block every 20 ms on the monotonic clock.
fn run(shared: &Shared, pipeline: &gst::glib::WeakRef<gst::Pipeline>, jitter_buffer: Duration) {
    let mut next = Instant::now() + BLOCK;
    // Running time of the block being produced; set from the pipeline at the first block.
    let mut pts: Option<gst::ClockTime> = None;
    let mut lag = QueueLag::expecting(jitter_buffer + TICK_MARGIN);
    let mut phase = TickPhase::default();
    let mut sharing = Sharing::default();
    let mut held = HeldTick::default();
    while !shared.stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        next += BLOCK;
        let behind = Instant::now().saturating_duration_since(next);
        if behind > BLOCK * MAX_CATCH_UP_BLOCKS {
            // A stall (the machine was starved): skip ahead rather than burst.
            let skipped = (behind.as_nanos() / BLOCK.as_nanos()) as u32 + 1;
            next += BLOCK * skipped;
            pts = pts.map(|t| t + gst::ClockTime::from_nseconds((BLOCK * skipped).as_nanos() as u64));
        }
        let Some(pipeline) = pipeline.upgrade() else { break };
        let Some(start) = pts.or_else(|| pipeline.current_running_time()) else { continue };
        pts = Some(start + gst::ClockTime::from_nseconds(BLOCK.as_nanos() as u64));

        let (mut blocks, all_late) = {
            let mut state = shared.state.lock().expect("mix state lock");
            let was_flowing = state.inputs.values().any(|input| input.flowing);
            let blocks = take_blocks(&mut state.inputs, shared.format, Instant::now());
            let all_late = was_flowing && blocks.is_empty();
            (blocks, all_late)
        };
        let advance = phase.observe(blocks.values().filter_map(|block| block.ready_for));
        let plan = held.plan(start, all_late, !blocks.is_empty());
        match plan {
            TickPlan::Hold | TickPlan::Send => {}
            TickPlan::LateAudioTakesHeldTick => {
                lag.hold_back(BLOCK);
                tracing::debug!("late audio took the tick held back for it");
            }
            TickPlan::SilenceForHeldTick(held_tick) => {
                send_block(shared, &mut sharing, &mut HashMap::new(), lag.label(held_tick));
                tracing::debug!("the callers stopped: the held tick went out as silence");
            }
        }
        if plan != TickPlan::Hold {
            lag.observe(start, blocks.values().filter_map(|block| block.time));
            send_block(shared, &mut sharing, &mut blocks, lag.label(start));
        }
        if let Some(advance) = advance {
            // From the next block on, which is stamped as it would have
            // been: its tick comes earlier, and its audio waits that much less.
            next -= advance;
            pts = pts.map(|t| t.saturating_sub(gst::ClockTime::from_nseconds(advance.as_nanos() as u64)));
            lag.earlier(advance);
            tracing::debug!(?advance, "mixing tick moved up to the callers' audio");
        }
    }
}

/// A tick at which every caller sending audio missed its block: its block
/// is late, or it stopped. Mixed as a hole, a late block was stamped after
/// it and its caller's sound came up to 20 ms behind its picture while the
/// stamps caught up with the longer wait (a flash of `bench/latency.py`
/// read +26 ms). So such a tick is held back, and the next one decides.
#[derive(Default)]
struct HeldTick(Option<gst::ClockTime>);

/// What the mixer does at a tick.
#[derive(Debug, PartialEq)]
enum TickPlan {
    /// Send nothing yet.
    Hold,
    /// Mix and send this tick's audio.
    Send,
    /// The late audio came: it takes the held tick's place, and waits a
    /// block longer from now on (its caller keeps one in reserve).
    LateAudioTakesHeldTick,
    /// Nothing came: the held tick (this running time) goes out first as
    /// the silence it would have been.
    SilenceForHeldTick(gst::ClockTime),
}

impl HeldTick {
    /// The plan for the tick at `tick`: `all_late` if every caller sending
    /// audio missed it, `took_audio` if any block was taken. Never two
    /// ticks held in a row.
    fn plan(&mut self, tick: gst::ClockTime, all_late: bool, took_audio: bool) -> TickPlan {
        match self.0.take() {
            None if all_late => {
                self.0 = Some(tick);
                TickPlan::Hold
            }
            None => TickPlan::Send,
            Some(_) if took_audio => TickPlan::LateAudioTakesHeldTick,
            Some(held) => TickPlan::SilenceForHeldTick(held),
        }
    }
}

/// Mixes `blocks` (the callers' audio taken for one tick) and sends every
/// listener what it hears, stamped `stamp`.
fn send_block(shared: &Shared, sharing: &mut Sharing, blocks: &mut HashMap<ParticipantId, Block>, stamp: gst::ClockTime) {
    let block_samples = shared.format.block_samples();
    let channels = shared.format.channels as usize;
    let (taken, outputs) = {
        let mut guard = shared.state.lock().expect("mix state lock");
        let state = &mut *guard;
        let taken = take_gains(&mut state.inputs, blocks);
        let (outputs, lobby, deaf) = (&state.outputs, &mut state.lobby, &state.deaf);
        let outputs: Vec<(Listener, Output, Hearing)> = outputs
            .iter()
            .map(|(listener, output)| {
                let hearing = match listener {
                    Listener::Caller(id) => match lobby.get_mut(id) {
                        Some(announcement) => Hearing::Announcement(announcement.next_block(block_samples)),
                        None => Hearing::Room { deaf: deaf.contains(id) },
                    },
                    Listener::Broadcast | Listener::Viewers => Hearing::Room { deaf: false },
                };
                (listener.clone(), output.clone(), hearing)
            })
            .collect();
        (taken, outputs)
    };
    let (mixed, levels) = mix(taken, block_samples, channels);
    let changed = shared.speech.lock().expect("speech lock").observe(levels.iter().map(|(id, level)| (id, *level)));
    if changed {
        (shared.on_speaker_change)();
    }
    sharing.begin_block();
    // One buffer per shared encode, pushed to every caller it goes to.
    let mut shared_blocks: HashMap<ShareKey, Option<gst::Buffer>> = HashMap::new();
    let mut encodes = MixMinusEncodes::default();
    for (listener, Output { src, share }, hearing) in outputs {
        let shared_block = match (&listener, &hearing, share) {
            (Listener::Caller(id), Hearing::Room { deaf }, Some(key)) => {
                let hears_full_mix = !deaf && mixed.contributes_nothing(id);
                if sharing.takes_shared(id, hears_full_mix) {
                    let made = shared_blocks.entry(key).or_insert_with(|| {
                        let full = mixed.full_block();
                        let packet = sharing.packet(key, &full, channels)?;
                        Some(block_buffer(samples_to_bytes(&full), stamp, Some(&packet)))
                    });
                    made.clone()
                } else {
                    None
                }
            }
            _ => None,
        };
        let buffer = match (shared_block, hearing) {
            (Some(buffer), _) => {
                encodes.shared += 1;
                buffer
            }
            (None, Hearing::Room { deaf }) => {
                if matches!(listener, Listener::Caller(_)) {
                    encodes.own += 1;
                }
                block_buffer(mixed.heard_by(&listener, deaf), stamp, None)
            }
            (None, Hearing::Announcement(block)) => {
                encodes.own += 1;
                block_buffer(block, stamp, None)
            }
        };
        // Flushing (the caller is being removed) is not an error.
        let _ = src.push_buffer(buffer);
    }
    sharing.end_block();
    shared.own_encodes.store(encodes.own, Ordering::Relaxed);
    shared.shared_encodes.store(encodes.shared, Ordering::Relaxed);
}

/// The shared encodes of the full mix, one per encoder key, and who among
/// the callers has contributed nothing long enough to be sent them.
#[derive(Default)]
struct Sharing {
    /// Per caller that could share: how many blocks in a row it heard
    /// exactly the full mix, and the block it was last seen at.
    quiet: HashMap<ParticipantId, (u32, u64)>,
    streams: HashMap<ShareKey, SharedStream>,
    block: u64,
}

struct SharedStream {
    encode: SharedEncode,
    /// This block's packet, once made.
    packet: Option<gst::glib::Bytes>,
    /// Whether the block before had one: a stream that paused starts over.
    ran_last_block: bool,
}

impl Sharing {
    fn begin_block(&mut self) {
        self.block += 1;
        for stream in self.streams.values_mut() {
            stream.ran_last_block = stream.packet.take().is_some();
        }
    }

    /// Whether `caller` is sent the shared encode this block: it hears
    /// exactly the full mix now (`hears_full_mix`), and has for a while.
    fn takes_shared(&mut self, caller: &ParticipantId, hears_full_mix: bool) -> bool {
        let block = self.block;
        // Looked up before inserting: no clone of the id on every block.
        if !self.quiet.contains_key(caller) {
            self.quiet.insert(caller.clone(), (0, block));
        }
        let (streak, seen) = self.quiet.get_mut(caller).expect("inserted above");
        *seen = block;
        *streak = if hears_full_mix { streak.saturating_add(1) } else { 0 };
        *streak > SHARE_AFTER_BLOCKS
    }

    /// This block's shared packet for `key`, encoding `full` (the full mix,
    /// `channels` interleaved) on the first ask. `None` if it cannot be
    /// made: the caller then encodes its own.
    fn packet(&mut self, key: ShareKey, full: &[i16], channels: usize) -> Option<gst::glib::Bytes> {
        let stream = match self.streams.entry(key) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => match SharedEncode::new(key) {
                Ok(encode) => entry.insert(SharedStream { encode, packet: None, ran_last_block: true }),
                Err(e) => {
                    tracing::warn!(?key, error = %e, "no shared encode of the mix: each caller encodes its own");
                    return None;
                }
            },
        };
        if stream.packet.is_none() {
            if !stream.ran_last_block {
                stream.encode.reset();
            }
            match stream.encode.encode(full, channels) {
                Ok(packet) => stream.packet = Some(packet),
                Err(e) => tracing::warn!(?key, error = %e, "shared encode of the mix failed"),
            }
        }
        stream.packet.clone()
    }

    /// Forgets callers that were not seen this block (they left).
    fn end_block(&mut self) {
        let block = self.block;
        self.quiet.retain(|_, (_, seen)| *seen == block);
    }
}

/// How long the audio mixed into a block waited for its tick, smoothed over
/// a few blocks. Each block is stamped with its tick minus this, that is
/// with the running time its audio carried when it arrived, as the callers'
/// video is: stamped with its tick, every output had its sound 35-50 ms
/// behind its picture.
///
/// The wait moves in steps: a caller whose block came late keeps one in
/// reserve from then on (20 ms more; taken at once where the tick was held
/// back for it, see [`HeldTick`]), a new video lead restamps its audio, a queue is
/// drained. Followed over 50 blocks, such a step put sound 20 ms further behind its
/// picture for a second or two (`bench/latency.py`'s lip sync read +24,
/// +13, +8 ms at the flashes after one). Over 5 blocks it is followed
/// within 100 ms, and each stamp still comes 16 to 20 ms after the one
/// before, so that the stream stays in order for encoders and muxers.
struct QueueLag {
    nanos: f64,
}

/// Blocks over which the lag follows a change by 63 %.
const LAG_SMOOTHING_BLOCKS: f64 = 5.0;

impl QueueLag {
    /// A lag that starts at the wait the first caller's audio will have once
    /// the tick has moved up to it (`TickPhase`): the jitter buffer's hold
    /// and the tick's margin. Started at the first caller's actual wait,
    /// the mix's stamps stepped back by some 40-60 ms when it first spoke;
    /// a listener's jitter buffer, settled on the silence before, took that
    /// for a change of network delay and followed it over seconds, and its
    /// lip sync with them (a return stream read +24, +16, +11 ms at the
    /// flashes of `bench/latency.py` after one).
    fn expecting(wait: Duration) -> QueueLag {
        QueueLag { nanos: wait.as_nanos() as f64 }
    }

    /// Follows the mean wait of this block's audio, if any was taken.
    fn observe(&mut self, tick: gst::ClockTime, arrived: impl Iterator<Item = gst::ClockTime>) {
        let (sum, count) = arrived.fold((0.0, 0u32), |(sum, count), time| {
            (sum + tick.nseconds().saturating_sub(time.nseconds()) as f64, count + 1)
        });
        if count > 0 {
            self.nanos += (sum / f64::from(count) - self.nanos) / LAG_SMOOTHING_BLOCKS;
        }
    }

    /// The stamp of the block mixed at `tick`.
    fn label(&self, tick: gst::ClockTime) -> gst::ClockTime {
        tick.saturating_sub(gst::ClockTime::from_nseconds(self.nanos.max(0.0) as u64))
    }

    /// The audio waits `by` longer from now on: the next stamp follows the last one sent.
    fn hold_back(&mut self, by: Duration) {
        self.nanos += by.as_nanos() as f64;
    }

    /// The ticks come `by` earlier from now on, and so the audio waits that much less.
    fn earlier(&mut self, by: Duration) {
        self.nanos -= by.as_nanos() as f64;
    }
}

/// Moves the mixing tick up to just after the callers' audio arrives. The
/// tick's phase was set by chance when the mixer started, so each caller's
/// audio waited 0-20 ms for it, fixed for the call: the audio latency of
/// `bench/latency.py` read 16 to 42 ms from run to run. Over each window the
/// caller whose block was there the shortest before its tick (the one closest
/// to late) sets how far the tick can move up and leave it `TICK_MARGIN`.
/// Only ever earlier: a later tick would leave a standing block with every
/// caller it passed, and an earlier one beyond a caller a hole in its audio.
#[derive(Default)]
struct TickPhase {
    /// How long before its tick the closest-to-late block was there, this window.
    least_ready: Option<Duration>,
    ticks: u32,
}

impl TickPhase {
    /// Takes how long before this tick each caller's block was there; at
    /// the end of a window, says how much earlier the tick should come.
    fn observe(&mut self, ready_for: impl Iterator<Item = Duration>) -> Option<Duration> {
        for ready in ready_for {
            self.least_ready = Some(self.least_ready.map_or(ready, |least| least.min(ready)));
        }
        self.ticks += 1;
        if self.ticks < PHASE_WINDOW_BLOCKS {
            return None;
        }
        self.ticks = 0;
        let advance = self.least_ready.take()?.checked_sub(TICK_MARGIN)?;
        (advance >= MIN_TICK_ADVANCE).then_some(advance)
    }
}

/// One caller's block of audio, the running time its first sample carried,
/// and how long before the tick it was all there (if known).
struct Block {
    samples: Vec<i16>,
    time: Option<gst::ClockTime>,
    ready_for: Option<Duration>,
}

/// One block from every caller that has one at `now`; drops queued audio
/// that only adds delay.
fn take_blocks(inputs: &mut HashMap<ParticipantId, Input>, format: MixFormat, now: Instant) -> HashMap<ParticipantId, Block> {
    let (block_samples, channels) = (format.block_samples(), format.channels as usize);
    let mut blocks = HashMap::new();
    for (id, input) in inputs.iter_mut() {
        if input.queue.len() > MAX_QUEUED_BLOCKS * block_samples {
            let excess = input.queue.len() - KEPT_AFTER_TRIM * block_samples;
            input.skip(excess, format);
        }
        if input.queue.len() < block_samples {
            // Nothing (or too little) arrived: this caller is silent for this
            // block. If it was flowing, its block is late: keep a reserve.
            if input.flowing {
                input.reserve_blocks = JITTER_RESERVE_BLOCKS;
            }
            input.flowing = false;
            continue;
        }
        input.flowing = true;
        let time = input.head_time;
        let ready_for = input.ready_since.map(|since| now.saturating_duration_since(since));
        blocks.insert(id.clone(), Block { samples: input.skip(block_samples, format).collect(), time, ready_for });
        let left = input.queue.len();
        input.lowest = Some(input.lowest.map_or(left, |l| l.min(left)));
        input.blocks_in_window += 1;
        if input.blocks_in_window == DRAIN_WINDOW_BLOCKS {
            let standing = input.lowest.take().unwrap_or(0);
            let excess = standing.saturating_sub(input.reserve_blocks * block_samples);
            // Whole sample frames only, so that channels stay in their places.
            input.skip(excess - excess % channels, format);
            input.blocks_in_window = 0;
        }
        // A block still queued is there from this tick on.
        input.ready_since = (input.queue.len() >= block_samples).then_some(now);
    }
    blocks
}

/// A gain for one block: `from` at its start, `to` at its last sample frame.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Ramp {
    from: f32,
    to: f32,
}

/// One caller's share of a block: its audio, if a whole block arrived, and its gain.
struct Taken {
    caller: ParticipantId,
    block: Option<Vec<i16>>,
    gain: Ramp,
}

/// Every caller's block (or none) with the gain it goes in with; from the
/// next block on, each caller's gain ramps from where this one ends.
fn take_gains(inputs: &mut HashMap<ParticipantId, Input>, blocks: &mut HashMap<ParticipantId, Block>) -> Vec<Taken> {
    inputs
        .iter_mut()
        .map(|(id, input)| {
            let target = if input.held { 0.0 } else { input.gain };
            let gain = Ramp { from: input.applied_gain, to: target };
            input.applied_gain = target;
            Taken { caller: id.clone(), block: blocks.remove(id).map(|block| block.samples), gain }
        })
        .collect()
}

/// One mixed block: the sum of every caller at its gain, and each caller's
/// block at that gain, to subtract for its mix-minus.
struct Mixed {
    full: Vec<i32>,
    gained: HashMap<ParticipantId, Vec<i32>>,
    /// The callers whose block, at its gain, is loud enough to be speech.
    heard: HashSet<ParticipantId>,
}

/// Mixes one block, and measures each caller's level (before its gain).
fn mix(taken: Vec<Taken>, block_samples: usize, channels: usize) -> (Mixed, Vec<(ParticipantId, BlockLevel)>) {
    let mut levels = Vec::with_capacity(taken.len());
    let mut gained = HashMap::with_capacity(taken.len());
    let mut heard = HashSet::new();
    for Taken { caller, block, gain } in taken {
        let dbov = block.as_deref().map_or(SILENCE_DBOV, level_dbov);
        if let Some(block) = block
            && (gain.from > 0.0 || gain.to > 0.0)
        {
            gained.insert(caller.clone(), apply_gain(&block, gain, channels));
            if dbov + 20.0 * f64::from(gain.from.max(gain.to)).log10() >= QUIETEST_SPEECH_DBOV {
                heard.insert(caller.clone());
            }
        }
        levels.push((caller, BlockLevel { dbov, audible: gain.to > 0.0 }));
    }
    let full = sum(gained.values().map(Vec::as_slice), block_samples);
    (Mixed { full, gained, heard }, levels)
}

impl Mixed {
    /// Whether `caller` put nothing a listener could hear into this block
    /// (no block, muted, or quieter than any speech): then what it hears is
    /// the full mix, give or take what nobody can hear.
    fn contributes_nothing(&self, caller: &ParticipantId) -> bool {
        !self.heard.contains(caller)
    }

    /// The full mix, clipped to 16 bits.
    fn full_block(&self) -> Vec<i16> {
        self.full.iter().map(|&acc| acc.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16).collect()
    }

    /// What `listener` hears of this block, as S16LE bytes: silence if it is
    /// deaf, else everyone but itself.
    fn heard_by(&self, listener: &Listener, deaf: bool) -> Vec<u8> {
        if deaf {
            return vec![0; self.full.len() * 2];
        }
        let own = match listener {
            Listener::Caller(id) => self.gained.get(id).map(Vec::as_slice),
            Listener::Broadcast | Listener::Viewers => None,
        };
        minus(&self.full, own)
    }
}

/// `block` (interleaved, `channels` per sample frame) at `gain`, wide enough
/// for a gain above 1; a changing gain moves linearly frame by frame, so
/// that every channel of a frame gets the same.
fn apply_gain(block: &[i16], gain: Ramp, channels: usize) -> Vec<i32> {
    if gain.from == gain.to {
        if gain.to == 1.0 {
            return block.iter().map(|&s| i32::from(s)).collect();
        }
        return block.iter().map(|&s| (f32::from(s) * gain.to).round() as i32).collect();
    }
    let frames = (block.len() / channels.max(1)).max(1) as f32;
    block
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let progress = (i / channels.max(1) + 1) as f32 / frames;
            (f32::from(s) * (gain.from + (gain.to - gain.from) * progress)).round() as i32
        })
        .collect()
}

/// The sum of `blocks`, wide enough not to clip before the subtraction.
fn sum<'a>(blocks: impl Iterator<Item = &'a [i32]>, block_samples: usize) -> Vec<i32> {
    let mut full = vec![0i32; block_samples];
    for block in blocks {
        for (acc, sample) in full.iter_mut().zip(block) {
            *acc += *sample;
        }
    }
    full
}

/// One block (S16LE bytes) stamped `pts`, with the shared encode's packet of it if there is one.
fn block_buffer(block: Vec<u8>, pts: gst::ClockTime, packet: Option<&gst::glib::Bytes>) -> gst::Buffer {
    let mut buffer = gst::Buffer::from_mut_slice(block);
    {
        let buffer = buffer.get_mut().expect("a new buffer is writable");
        buffer.set_pts(pts);
        buffer.set_duration(gst::ClockTime::from_nseconds(BLOCK.as_nanos() as u64));
        if let Some(packet) = packet {
            attach_shared_packet(buffer, packet);
        }
    }
    buffer
}

fn samples_to_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// `full` without `own`, clipped to 16 bits, as S16LE bytes.
fn minus(full: &[i32], own: Option<&[i32]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(full.len() * 2);
    for (i, acc) in full.iter().enumerate() {
        let own = own.map_or(0, |o| o[i]);
        let sample = (acc - own).clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
        out.extend_from_slice(&sample.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(bytes: &[u8]) -> Vec<i16> {
        bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()
    }

    fn wide(block: &[i16]) -> Vec<i32> {
        block.iter().map(|&s| i32::from(s)).collect()
    }

    #[test]
    fn each_caller_gets_everyone_but_itself_exactly() {
        let (a, b, c) = (wide(&[1000, -2000, 3000]), wide(&[10, 20, 30]), wide(&[-5, 5, -5]));
        let full = sum([&a[..], &b[..], &c[..]].into_iter(), 3);
        assert_eq!(samples(&minus(&full, Some(&a))), vec![5, 25, 25]);
        assert_eq!(samples(&minus(&full, Some(&b))), vec![995, -1995, 2995]);
        assert_eq!(samples(&minus(&full, None)), vec![1005, -1975, 3025]);
    }

    #[test]
    fn loud_sums_clip_after_the_subtraction_not_before() {
        let loud = wide(&[30000, -30000]);
        let full = sum([&loud[..], &loud[..]].into_iter(), 2);
        // Everyone hears the two clipped...
        assert_eq!(samples(&minus(&full, None)), vec![i16::MAX, i16::MIN]);
        // ...but one of the two hears the other unclipped.
        assert_eq!(samples(&minus(&full, Some(&loud))), vec![30000, -30000]);
    }

    #[test]
    fn a_caller_without_a_whole_block_sits_this_one_out() {
        let (a, b) = (ParticipantId::random(), ParticipantId::random());
        let mut inputs = HashMap::new();
        inputs.insert(a.clone(), queued(vec![1i16; 5]));
        inputs.insert(b.clone(), queued(vec![2i16; 3]));
        let blocks = take_blocks(&mut inputs, four_samples(1), Instant::now());
        assert_eq!(blocks.get(&a).map(|block| &block.samples), Some(&vec![1i16; 4]));
        assert!(!blocks.contains_key(&b));
        assert_eq!((inputs[&a].queue.len(), inputs[&b].queue.len()), (1, 3));
    }

    #[test]
    fn a_queue_that_only_grows_is_trimmed_to_the_newest_audio() {
        let a = ParticipantId::random();
        let mut inputs = HashMap::new();
        inputs.insert(a.clone(), queued((0..(MAX_QUEUED_BLOCKS as i16 * 4 + 1)).collect()));
        let blocks = take_blocks(&mut inputs, four_samples(1), Instant::now());
        // Trimmed to 2 blocks (the newest 8 samples), then one taken.
        let first_kept = MAX_QUEUED_BLOCKS as i16 * 4 + 1 - 8;
        assert_eq!(blocks[&a].samples, (first_kept..first_kept + 4).collect::<Vec<_>>());
        assert_eq!(inputs[&a].queue.len(), 4);
    }

    #[test]
    fn audio_that_stays_queued_for_a_whole_window_is_dropped() {
        let a = ParticipantId::random();
        let mut inputs = HashMap::new();
        // Stereo blocks of 4 samples; 6 samples (3 frames) queued before the first block.
        inputs.insert(a.clone(), queued(vec![0i16; 4 + 6]));
        for tick in 1..=DRAIN_WINDOW_BLOCKS {
            let blocks = take_blocks(&mut inputs, four_samples(2), Instant::now());
            assert!(blocks.contains_key(&a), "block {tick}");
            let left = inputs[&a].queue.len();
            let expected = if tick == DRAIN_WINDOW_BLOCKS { 0 } else { 6 };
            assert_eq!(left, expected, "after block {tick}");
            // One block arrives per block taken.
            inputs.get_mut(&a).unwrap().queue.extend([0i16; 4]);
        }
        // A window with a moment of empty queue drops nothing.
        for _ in 0..DRAIN_WINDOW_BLOCKS {
            take_blocks(&mut inputs, four_samples(2), Instant::now());
            inputs.get_mut(&a).unwrap().queue.extend([0i16; 4]);
        }
        assert_eq!(inputs[&a].queue.len(), 4);
    }

    #[test]
    fn a_caller_whose_block_came_late_keeps_a_block_in_reserve_rather_than_skipping() {
        let a = ParticipantId::random();
        let mut inputs = HashMap::new();
        inputs.insert(a.clone(), Input::default());
        // Whether `a` had a block this tick, with `arriving` blocks arrived since the last.
        let tick = |inputs: &mut HashMap<ParticipantId, Input>, arriving: usize| {
            inputs.get_mut(&a).unwrap().queue.extend(vec![0i16; 4 * arriving]);
            take_blocks(inputs, four_samples(1), Instant::now()).contains_key(&a)
        };
        // On time for a while, then one block late: a hole, then two at once.
        for _ in 0..10 {
            assert!(tick(&mut inputs, 1));
        }
        assert!(!tick(&mut inputs, 0), "the late block's tick is a hole");
        assert!(tick(&mut inputs, 2));
        assert_eq!(inputs[&a].queue.len(), 4, "one block standing");
        // The standing block survives the drain, and absorbs the next late block.
        for _ in 0..2 * DRAIN_WINDOW_BLOCKS {
            assert!(tick(&mut inputs, 1));
        }
        assert_eq!(inputs[&a].queue.len(), 4, "the reserve is not drained");
        assert!(tick(&mut inputs, 0), "a late block no longer makes a hole");
        assert!(tick(&mut inputs, 2));
    }

    fn steady(gain: f32) -> Ramp {
        Ramp { from: gain, to: gain }
    }

    fn taken(caller: &ParticipantId, block: &[i16], gain: Ramp) -> Taken {
        Taken { caller: caller.clone(), block: Some(block.to_vec()), gain }
    }

    #[test]
    fn a_caller_is_heard_at_its_gain_by_everyone_and_its_own_mix_minus_stays_exact() {
        let (a, b, c) = (ParticipantId::random(), ParticipantId::random(), ParticipantId::random());
        let blocks = [taken(&a, &[1000, -1000], steady(0.5)), taken(&b, &[100, 100], steady(4.0)), taken(&c, &[7, -7], steady(1.0))];
        let (mixed, _) = mix(blocks.into_iter().collect(), 2, 1);
        assert_eq!(samples(&mixed.heard_by(&Listener::Caller(c.clone()), false)), vec![900, -100], "half of A, four times B");
        assert_eq!(samples(&mixed.heard_by(&Listener::Caller(a.clone()), false)), vec![407, 393], "A hears none of itself");
        assert_eq!(samples(&mixed.heard_by(&Listener::Caller(b.clone()), false)), vec![507, -507], "B none of itself");
        assert_eq!(samples(&mixed.heard_by(&Listener::Broadcast, false)), vec![907, -107]);
    }

    #[test]
    fn a_muted_caller_is_in_nobody_s_mix_and_still_measured() {
        let (a, b) = (ParticipantId::random(), ParticipantId::random());
        let (mixed, levels) = mix(vec![taken(&a, &[16384; 4], steady(0.0)), taken(&b, &[10; 4], steady(1.0))], 4, 1);
        assert_eq!(samples(&mixed.heard_by(&Listener::Broadcast, false)), vec![10; 4]);
        assert_eq!(samples(&mixed.heard_by(&Listener::Caller(a.clone()), false)), vec![10; 4]);
        assert_eq!(samples(&mixed.heard_by(&Listener::Caller(b.clone()), false)), vec![0; 4]);
        let level_of_a = levels.iter().find(|(id, _)| *id == a).unwrap().1;
        assert!(!level_of_a.audible);
        assert!((level_of_a.dbov + 6.02).abs() < 0.01, "what it sends, before its gain: {level_of_a:?}");
        let level_of_b = levels.iter().find(|(id, _)| *id == b).unwrap().1;
        assert!(level_of_b.audible);
    }

    #[test]
    fn a_caller_without_a_block_is_silent_for_the_detector() {
        let a = ParticipantId::random();
        let (_, levels) = mix(vec![Taken { caller: a.clone(), block: None, gain: steady(1.0) }], 4, 1);
        assert_eq!(levels, vec![(a, BlockLevel { dbov: SILENCE_DBOV, audible: true })]);
    }

    #[test]
    fn a_gain_change_ramps_over_one_block_frame_by_frame() {
        // Mono: 1000 muted over four samples.
        assert_eq!(apply_gain(&[1000; 4], Ramp { from: 1.0, to: 0.0 }, 1), vec![750, 500, 250, 0]);
        // Stereo: both channels of a frame get the same gain.
        assert_eq!(apply_gain(&[1000, -1000, 1000, -1000], Ramp { from: 0.0, to: 1.0 }, 2), vec![500, -500, 1000, -1000]);
        assert_eq!(apply_gain(&[-3, 3], steady(4.0), 1), vec![-12, 12]);
        assert_eq!(apply_gain(&[i16::MIN, i16::MAX], steady(4.0), 1), vec![-131072, 131068], "no overflow above unity");
    }

    #[test]
    fn gains_ramp_from_where_the_last_block_ended() {
        let a = ParticipantId::random();
        let mut inputs = HashMap::new();
        inputs.insert(a.clone(), Input::default());
        inputs.get_mut(&a).unwrap().gain = 0.5;
        let mut blocks = HashMap::new();
        let first = take_gains(&mut inputs, &mut blocks);
        assert_eq!(first[0].gain, Ramp { from: 1.0, to: 0.5 });
        let second = take_gains(&mut inputs, &mut blocks);
        assert_eq!(second[0].gain, steady(0.5), "then steady at the new gain");
    }

    #[test]
    fn a_deaf_caller_hears_silence_while_the_others_still_hear_it() {
        let (a, b) = (ParticipantId::random(), ParticipantId::random());
        let (mixed, _) = mix(vec![taken(&a, &[300; 2], steady(1.0)), taken(&b, &[20; 2], steady(1.0))], 2, 1);
        assert_eq!(mixed.heard_by(&Listener::Caller(a.clone()), true), vec![0; 4], "two samples of silence, still sent");
        assert_eq!(samples(&mixed.heard_by(&Listener::Caller(b.clone()), false)), vec![300; 2]);
    }

    fn ms(millis: u64) -> gst::ClockTime {
        gst::ClockTime::from_mseconds(millis)
    }

    #[test]
    fn each_block_carries_the_time_its_first_sample_arrived_with() {
        let format = four_samples(1); // 5 ms a sample
        let mut input = Input::default();
        input.receive([0i16; 8].into_iter(), Some(ms(100)), format, Instant::now());
        // Contiguous audio keeps the counted time, even if stamped a little off.
        input.receive([0i16; 4].into_iter(), Some(ms(141)), format, Instant::now());
        let a = ParticipantId::random();
        let mut inputs = HashMap::from([(a.clone(), input)]);
        let times: Vec<_> = (0..3).map(|_| take_blocks(&mut inputs, format, Instant::now())[&a].time).collect();
        assert_eq!(times, [Some(ms(100)), Some(ms(120)), Some(ms(140))]);
        // After a gap, the time is taken from the audio again.
        let input = inputs.get_mut(&a).unwrap();
        input.receive([0i16; 4].into_iter(), Some(ms(500)), format, Instant::now());
        input.receive([0i16; 4].into_iter(), Some(ms(900)), format, Instant::now());
        assert_eq!(take_blocks(&mut inputs, format, Instant::now())[&a].time, Some(ms(880)), "re-anchored on the newest audio");
    }

    #[test]
    fn a_block_counts_as_there_from_when_its_last_sample_arrived() {
        let format = four_samples(1);
        let start = Instant::now();
        let at = |millis| start + Duration::from_millis(millis);
        let mut input = Input::default();
        input.receive([0i16; 2].into_iter(), None, format, at(0));
        input.receive([0i16; 6].into_iter(), None, format, at(10));
        let a = ParticipantId::random();
        let mut inputs = HashMap::from([(a.clone(), input)]);
        assert_eq!(take_blocks(&mut inputs, format, at(13))[&a].ready_for, Some(Duration::from_millis(3)));
        // The second block was already there at the first tick.
        assert_eq!(take_blocks(&mut inputs, format, at(33))[&a].ready_for, Some(Duration::from_millis(20)));
    }

    #[test]
    fn the_tick_moves_up_until_the_caller_closest_to_late_has_its_margin_and_no_further() {
        let window = |phase: &mut TickPhase, ready: &[u64]| -> Vec<Option<Duration>> {
            (0..PHASE_WINDOW_BLOCKS).map(|_| phase.observe(ready.iter().map(|&r| Duration::from_millis(r)))).collect()
        };
        let mut phase = TickPhase::default();
        let moves = window(&mut phase, &[12, 17]);
        assert!(moves[..moves.len() - 1].iter().all(Option::is_none), "once per window");
        assert_eq!(moves.last(), Some(&Some(Duration::from_millis(12) - TICK_MARGIN)));
        // Moved: the closest-to-late caller now has its margin, give or take a millisecond.
        assert_eq!(window(&mut phase, &[6, 11]).last(), Some(&None));
        assert_eq!(window(&mut phase, &[3, 8]).last(), Some(&None), "never later");
        assert_eq!(window(&mut phase, &[]).last(), Some(&None), "nobody sends audio");
    }

    #[test]
    fn blocks_are_stamped_with_when_their_audio_arrived_and_follow_a_step_in_order() {
        let mut lag = QueueLag::expecting(Duration::from_millis(40));
        let mut stamps = Vec::new();
        for block in 0..400u64 {
            let tick = ms(1000 + 20 * block);
            // Two callers whose audio waited 30 and 50 ms for this tick; from
            // block 200 on the second keeps a block in reserve: 70 ms.
            let second = if block < 200 { 50 } else { 70 };
            lag.observe(tick, [tick - ms(30), tick - ms(second)].into_iter());
            stamps.push(lag.label(tick));
        }
        // From the first block on, the mean wait of 40 ms, as expected.
        assert_eq!(stamps[0], ms(1000 - 40));
        for pair in stamps[..200].windows(2) {
            assert_eq!(pair[1] - pair[0], ms(20));
        }
        // The step to a 50 ms mean is followed within 100 ms (5 blocks) to
        // 4 ms and within 300 ms to half of one, every stamp after the last.
        let off = |block: usize| (ms(1000 + 20 * block as u64 - 50).nseconds() as i64 - stamps[block].nseconds() as i64).abs();
        assert!(off(204) < 4_000_000, "{}", off(204));
        assert!(off(214) < 500_000, "{}", off(214));
        for pair in stamps.windows(2) {
            let step = pair[1] - pair[0];
            assert!(step >= ms(16) && step <= ms(20), "{step}");
        }
        // A block with no audio at all leaves the stamps where they were.
        let before = lag.label(ms(9000));
        lag.observe(ms(9000), std::iter::empty());
        assert_eq!(lag.label(ms(9000)), before);
    }

    #[test]
    fn a_tick_every_sender_missed_waits_for_the_late_audio_or_goes_out_as_silence() {
        let mut held = HeldTick::default();
        assert_eq!(held.plan(ms(1000), false, true), TickPlan::Send);
        // Late: held, then taken by the late audio.
        assert_eq!(held.plan(ms(1020), true, false), TickPlan::Hold);
        assert_eq!(held.plan(ms(1040), false, true), TickPlan::LateAudioTakesHeldTick);
        assert_eq!(held.plan(ms(1060), false, true), TickPlan::Send);
        // Stopped: held, then sent as silence before the silent tick after it.
        assert_eq!(held.plan(ms(1080), true, false), TickPlan::Hold);
        assert_eq!(held.plan(ms(1100), false, false), TickPlan::SilenceForHeldTick(ms(1080)));
        assert_eq!(held.plan(ms(1120), false, false), TickPlan::Send);
        // Never two in a row, whatever the next tick says.
        assert_eq!(held.plan(ms(1140), true, false), TickPlan::Hold);
        assert_eq!(held.plan(ms(1160), true, false), TickPlan::SilenceForHeldTick(ms(1140)));
    }

    #[test]
    fn the_stamps_never_step_back_when_the_first_caller_speaks() {
        // Silence first (no caller's audio): stamped by the expected wait.
        let mut lag = QueueLag::expecting(Duration::from_millis(45));
        let mut stamps = Vec::new();
        for block in 0..100u64 {
            let tick = ms(1000 + 20 * block);
            // From block 50 on a caller whose audio waited 60 ms, 15 ms more than expected.
            let arrived: Vec<_> = if block < 50 { vec![] } else { vec![tick - ms(60)] };
            lag.observe(tick, arrived.into_iter());
            stamps.push(lag.label(tick));
        }
        assert_eq!(stamps[0], ms(1000 - 45));
        for pair in stamps.windows(2) {
            let step = pair[1] - pair[0];
            assert!(step >= ms(16) && step <= ms(20), "{step}");
        }
        assert!((stamps[99].nseconds() as i64 - ms(1000 + 20 * 99 - 60).nseconds() as i64).abs() < 500_000);
    }

    #[test]
    fn a_caller_hears_the_full_mix_when_it_puts_nothing_audible_in() {
        let (muted, whisper, talker, absent) =
            (ParticipantId::random(), ParticipantId::random(), ParticipantId::random(), ParticipantId::random());
        let blocks = vec![
            taken(&muted, &[16384; 4], steady(0.0)),
            // -66 dBov: below the quietest speech.
            taken(&whisper, &[16, -16, 16, -16], steady(1.0)),
            taken(&talker, &[300; 4], steady(1.0)),
            Taken { caller: absent.clone(), block: None, gain: steady(1.0) },
        ];
        let (mixed, _) = mix(blocks, 4, 1);
        for quiet in [&muted, &whisper, &absent] {
            assert!(mixed.contributes_nothing(quiet));
        }
        assert!(!mixed.contributes_nothing(&talker));
        assert_eq!(mixed.full_block(), vec![316, 284, 316, 284]);
    }

    #[test]
    fn a_quiet_caller_takes_the_shared_encode_after_a_second_and_leaves_it_at_once() {
        let (a, b) = (ParticipantId::random(), ParticipantId::random());
        let mut sharing = Sharing::default();
        let block = |sharing: &mut Sharing, a_quiet: bool| {
            sharing.begin_block();
            let a_shares = sharing.takes_shared(&a, a_quiet);
            sharing.takes_shared(&b, false);
            sharing.end_block();
            a_shares
        };
        for i in 0..SHARE_AFTER_BLOCKS {
            assert!(!block(&mut sharing, true), "block {i}: not yet");
        }
        assert!(block(&mut sharing, true), "quiet for a second");
        assert!(!block(&mut sharing, false), "its first audible block is its own");
        assert!(!block(&mut sharing, true), "and it waits a second again");
        // A caller not seen in a block (it left) is forgotten.
        sharing.begin_block();
        sharing.takes_shared(&b, false);
        sharing.end_block();
        assert!(!sharing.quiet.contains_key(&a));
    }

    /// A format whose blocks are 4 samples of `channels` channels.
    fn four_samples(channels: u32) -> MixFormat {
        MixFormat { rate: 200 / channels, channels }
    }

    fn queued(samples: Vec<i16>) -> Input {
        Input { queue: samples.into(), ..Input::default() }
    }
}
