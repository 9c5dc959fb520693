//! Sound and picture of a caller stamped alike in the composite and the mix.
//!
//! The compositor makes a frame every 1/fps on its own cadence and puts in
//! it, for each caller, the latest frame that starts before that composite
//! frame ends. A caller's frame stamped `p` therefore goes out stamped with
//! a slot that began up to one frame interval before `p`, or, when it
//! reached the compositor after that slot was made, with the next one. By
//! how much is set by chance when a call starts, and its audio kept its own
//! stamps: measured on the outputs, sound ran from 12 ms before to 29 ms
//! after its picture from one call to the next. So this module watches
//! which frame of each caller every composite frame shows, and keeps a
//! caller's lead (how much earlier its picture goes out than it was
//! stamped; negative when later) for the mixer, which stamps the caller's
//! audio the same (`mixer.rs`).
//!
//! That lead must hold still, and a live compositor alone lets it flip by a
//! frame. It makes a composite frame as soon as every pad has a frame
//! queued. A caller frame that came after its slot was made stays queued,
//! so at the next slot the compositor does not wait for the caller's next
//! frame: it shows the stale one, and the next one comes too late again. A
//! caller whose frames arrive around when the canvas's own pacing frame
//! does thus goes out either in its slot or one slot late, and stays in
//! either state for seconds: the latency smoke's flashes read sound up to
//! 23 ms early at some and 6 ms late at others. So a frame that missed its slot
//! although it came before the slot's deadline (the compositor did not wait
//! for it) is dropped: the compositor then waits for the next frame, which
//! is in time. A frame that came after the deadline is shown late, as
//! before, so that a caller whose frames all come that late is still seen;
//! and a caller's frames are not dropped while it settles (`SETTLE_NS`).

use gstreamer as gst;
use gstreamer::prelude::*;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// How much earlier than it was stamped a caller's picture goes out, in ns
/// (negative: later).
pub type VideoLead = Arc<AtomicI64>;

/// The composite's cadence and the callers whose frames it shows.
pub struct Cadence {
    frame_ns: i64,
    callers: Mutex<Vec<Weak<Follower>>>,
    /// Running time of the latest composite frame's slot (`i64::MIN` before any).
    made: AtomicI64,
    /// The compositor's latency in ns (0 until known): a slot is made at
    /// the latest that long after it starts.
    latency_ns: Arc<AtomicU64>,
}

/// One caller's picture at the compositor.
struct Follower {
    seen: Mutex<Seen>,
    lead: VideoLead,
}

#[derive(Default)]
struct Seen {
    /// Running times of the last two frames queued, newest first.
    queued: [Option<i64>; 2],
    /// The lead found at the latest composite frame. A frame queued while a
    /// composite frame is being made can be taken for shown in it, so a
    /// lead is kept only once two composite frames in a row agree on it.
    last: Option<i64>,
    /// Whether the latest frame was dropped for missing its slot.
    dropped: bool,
    /// Running time of its first frame.
    first: Option<i64>,
}

/// How long a caller's frames are shown as they come, late or not, before
/// any is dropped: its jitter buffer and decoder deliver its first frames
/// late, and waiting for them held up every output's composite (a joining
/// caller's first return frame came 25 ms later, median of 3 runs).
const SETTLE_NS: i64 = 2_000_000_000;

impl Seen {
    /// Whether the frame stamped `time` is dropped, `missed` saying whether
    /// it missed its slot only because the compositor did not wait for it.
    /// Never two in a row: were the deadline misjudged, a caller would lose
    /// half its frames, not all.
    fn drops(&mut self, time: i64, missed: impl FnOnce() -> bool) -> bool {
        let settled = time - *self.first.get_or_insert(time) >= SETTLE_NS;
        self.dropped = settled && !self.dropped && missed();
        self.dropped
    }
}

/// Two leads this close are the same (the stamps jitter by a millisecond or so).
const SAME_LEAD_NS: i64 = 2_000_000;

impl Cadence {
    /// Watches the composite frames leaving `pad` (the compositor's src,
    /// whose latency `latency_ns` holds).
    pub fn watch(pad: &gst::Pad, fps: u32, latency_ns: Arc<AtomicU64>) -> Arc<Cadence> {
        let cadence = Arc::new(Cadence::new(fps, latency_ns));
        let weak = Arc::downgrade(&cadence);
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            if let (Some(cadence), Some(slot)) = (weak.upgrade(), running_time(pad, info)) {
                cadence.shown(slot);
            }
            gst::PadProbeReturn::Ok
        });
        cadence
    }

    fn new(fps: u32, latency_ns: Arc<AtomicU64>) -> Cadence {
        Cadence {
            frame_ns: 1_000_000_000 / i64::from(fps.max(1)),
            callers: Mutex::default(),
            made: AtomicI64::new(i64::MIN),
            latency_ns,
        }
    }

    /// Keeps `lead` for the caller whose picture enters the compositor at
    /// `pad` (its sink pad), for as long as that pad lives, and drops its
    /// frames that missed their slot only because the compositor did not
    /// wait for them.
    pub fn follow(self: &Arc<Self>, pad: &gst::Pad, lead: VideoLead) {
        let follower = Arc::new(Follower { seen: Mutex::default(), lead });
        {
            let mut callers = self.callers.lock().expect("cadence lock");
            callers.retain(|c| c.strong_count() > 0);
            callers.push(Arc::downgrade(&follower));
        }
        let cadence = Arc::downgrade(self);
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let (Some(cadence), Some(time)) = (cadence.upgrade(), running_time(pad, info)) else {
                return gst::PadProbeReturn::Ok;
            };
            // The clock is read only for a frame that may be dropped.
            let missed = || {
                let now = pad.parent_element().and_then(|compositor| compositor.current_running_time());
                now.and_then(|now| i64::try_from(now.nseconds()).ok())
                    .is_some_and(|now| cadence.missed_while_waited_for(time, now))
            };
            let mut seen = follower.seen.lock().expect("follower lock");
            if seen.drops(time, missed) {
                return super::DROP_IN_SINK_PROBE;
            }
            seen.queued = [Some(time), seen.queued[0]];
            gst::PadProbeReturn::Ok
        });
    }

    /// Whether a frame stamped `time` that arrives at `now` comes after its
    /// slot was made but before that slot's deadline.
    fn missed_while_waited_for(&self, time: i64, now: i64) -> bool {
        let (made, latency) = (self.made.load(Ordering::Relaxed), self.latency_ns.load(Ordering::Relaxed));
        if made == i64::MIN || latency == 0 || time >= made + self.frame_ns {
            return false;
        }
        // The start of the slot `time` falls in: `made`, or a whole number of frames before it.
        let slot = made - (made - time + self.frame_ns - 1) / self.frame_ns * self.frame_ns;
        now < slot + i64::try_from(latency).unwrap_or(i64::MAX)
    }

    /// A composite frame for the slot starting at `slot` went out.
    fn shown(&self, slot: i64) {
        self.made.store(slot, Ordering::Relaxed);
        let callers = self.callers.lock().expect("cadence lock");
        for follower in callers.iter().filter_map(Weak::upgrade) {
            let mut seen = follower.seen.lock().expect("follower lock");
            let lead = lead_in_slot(seen.queued, slot, self.frame_ns);
            if let (Some(lead), Some(last)) = (lead, seen.last)
                && (lead - last).abs() < SAME_LEAD_NS
            {
                follower.lead.store(lead, Ordering::Relaxed);
            }
            seen.last = lead;
        }
    }
}

/// How much earlier than stamped the frame shown in the slot starting at
/// `slot` goes out: the newest queued frame that starts before the slot
/// ends (a newer one waits for a later slot).
fn lead_in_slot(queued: [Option<i64>; 2], slot: i64, frame_ns: i64) -> Option<i64> {
    let shown = queued.into_iter().flatten().find(|&time| time < slot + frame_ns)?;
    Some(shown - slot)
}

fn running_time(pad: &gst::Pad, info: &gst::PadProbeInfo) -> Option<i64> {
    let pts = info.buffer()?.pts()?;
    let segment = pad.sticky_event::<gst::event::Segment>(0)?;
    let time = segment.segment().downcast_ref::<gst::ClockTime>()?.to_running_time(pts)?;
    i64::try_from(time.nseconds()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: i64 = 33_333_333;
    const MS: i64 = 1_000_000;

    #[test]
    fn a_frame_shown_in_a_slot_that_began_before_it_leads_its_stamp() {
        assert_eq!(lead_in_slot([Some(1010 * MS), Some(1010 * MS - FRAME)], 1000 * MS, FRAME), Some(10 * MS));
    }

    #[test]
    fn a_frame_that_came_after_its_slot_was_made_trails_its_stamp() {
        // The frame for this slot (1020) is not there yet: the one before it is shown again, late.
        assert_eq!(lead_in_slot([Some(1020 * MS - FRAME), None], 1000 * MS, FRAME), Some(1020 * MS - FRAME - 1000 * MS));
    }

    #[test]
    fn a_frame_from_a_later_slot_waits_for_it() {
        let queued = [Some(1040 * MS), Some(1040 * MS - FRAME)];
        assert_eq!(lead_in_slot(queued, 1000 * MS, FRAME), Some(1040 * MS - FRAME - 1000 * MS));
    }

    #[test]
    fn a_lead_is_kept_once_two_composite_frames_agree_on_it() {
        let cadence = Cadence::new(30, Arc::default());
        let follower = Arc::new(Follower { seen: Mutex::default(), lead: VideoLead::default() });
        cadence.callers.lock().unwrap().push(Arc::downgrade(&follower));
        let show = |frame: i64, slot: i64| {
            follower.seen.lock().unwrap().queued = [Some(frame), None];
            cadence.shown(slot);
            follower.lead.load(Ordering::Relaxed)
        };
        assert_eq!(show(1010 * MS, 1000 * MS), 0, "one composite frame is not enough");
        assert_eq!(show(1010 * MS + FRAME, 1000 * MS + FRAME), 10 * MS);
        // One odd frame (queued while its slot was being made) changes nothing.
        assert_eq!(show(1010 * MS + 2 * FRAME, 1000 * MS + 3 * FRAME), 10 * MS);
        assert_eq!(show(1010 * MS + 4 * FRAME, 1000 * MS + 4 * FRAME), 10 * MS);
    }

    #[test]
    fn a_frame_is_dropped_only_when_its_slot_was_made_before_its_deadline_without_it() {
        let cadence = Cadence::new(30, Arc::new(AtomicU64::new(93 * MS as u64)));
        let at = |time: i64, now: i64| cadence.missed_while_waited_for(time * MS, now * MS);
        assert!(!at(1010, 1040), "no slot made yet");
        cadence.made.store(1000 * MS, Ordering::Relaxed);
        assert!(!at(1040, 1045), "its slot is still to be made");
        assert!(at(1022, 1060), "made without it, 38 ms into a deadline of 93");
        let one_back = 1022 * MS - FRAME;
        assert!(cadence.missed_while_waited_for(one_back, 1050 * MS), "a slot back, still before that slot's deadline");
        assert!(!cadence.missed_while_waited_for(one_back, 1060 * MS), "a slot back, after that slot's deadline");
        assert!(!at(1022, 1093), "after the deadline: the compositor waited, it is late, it is shown late");
        cadence.latency_ns.store(0, Ordering::Relaxed);
        assert!(!at(1022, 1060), "without a known deadline nothing is dropped");
    }

    #[test]
    fn a_caller_loses_no_frame_while_it_settles_nor_two_in_a_row() {
        let mut seen = Seen::default();
        assert!(!seen.drops(1000 * MS, || true), "its first frame");
        assert!(!seen.drops(1000 * MS + SETTLE_NS - MS, || true), "still settling");
        assert!(seen.drops(1000 * MS + SETTLE_NS, || true));
        assert!(!seen.drops(1000 * MS + SETTLE_NS + FRAME, || true), "not two in a row");
        assert!(seen.drops(1000 * MS + SETTLE_NS + 2 * FRAME, || true));
        assert!(!seen.drops(1000 * MS + SETTLE_NS + 3 * FRAME, || false), "in time");
    }

    #[test]
    fn nothing_queued_yet_says_nothing() {
        assert_eq!(lead_in_slot([None, None], 1000 * MS, FRAME), None);
        assert_eq!(lead_in_slot([Some(2000 * MS), None], 1000 * MS, FRAME), None);
    }
}
