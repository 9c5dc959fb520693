//! Watchdogs, as pure logic: has a flow that should move (packets to or
//! from a caller, frames out of the compositor, bytes to an output) stopped?
//! The engine reads the counters on its tick and feeds them here; what
//! changed is what it reports (API state, log, and events once they exist).
//! LiveKit Egress's freeze watchdog is the model: nothing fails silently.

use std::time::{Duration, Instant};

use crate::model::output::OutputKind;

/// A caller's media, or what Tutti sends it, that has not moved for this
/// long is reported; a whole second more than RTP's usual packet gaps, well
/// under what a person waits before hanging up.
pub const LEG_STALL: Duration = Duration::from_secs(2);
/// An output whose bytes have not grown for this long is reported.
pub const OUTPUT_STALL: Duration = Duration::from_secs(2);

/// How long an output's bytes may stand still before it is reported. HLS
/// is written a GOP at a time (splitmuxsink, inside hlssink2, holds each
/// GOP back until the next keyframe closes it), so its bytes stand still
/// for a whole keyframe interval in normal running: it gets that on top.
/// With a 2 s GOP and no allowance, a healthy HLS output read `stalled`
/// whenever one GOP was written a tick later than the one before.
pub fn output_stall_after(kind: OutputKind, keyframe_interval: Duration) -> Duration {
    match kind {
        OutputKind::Hls => OUTPUT_STALL + keyframe_interval,
        OutputKind::Rtmp | OutputKind::Record => OUTPUT_STALL,
    }
}
/// A composite that produced no frame for this long is frozen: at 30 fps
/// that is thirty frames missed.
pub const COMPOSITE_STALL: Duration = Duration::from_secs(1);

/// When a watch starts counting silence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arm {
    /// From its creation: the flow must start by itself (what Tutti sends).
    AtOnce,
    /// From the first movement: before that the flow has not begun (what a
    /// caller sends, an output that is still connecting).
    OnFirstMovement,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowChange {
    Stopped,
    Resumed,
}

/// One counter watched for progress.
#[derive(Clone, Debug)]
pub struct FlowWatch {
    stall_after: Duration,
    armed: bool,
    last_count: u64,
    moved_at: Instant,
    stalled: bool,
}

impl FlowWatch {
    pub fn new(now: Instant, stall_after: Duration, arm: Arm) -> FlowWatch {
        FlowWatch { stall_after, armed: arm == Arm::AtOnce, last_count: 0, moved_at: now, stalled: false }
    }

    /// Feeds one reading of the counter; says what changed, if anything.
    pub fn observe(&mut self, count: u64, now: Instant) -> Option<FlowChange> {
        if count != self.last_count {
            self.last_count = count;
            self.moved_at = now;
            self.armed = true;
            if self.stalled {
                self.stalled = false;
                return Some(FlowChange::Resumed);
            }
            return None;
        }
        if self.armed && !self.stalled && now.saturating_duration_since(self.moved_at) >= self.stall_after {
            self.stalled = true;
            return Some(FlowChange::Stopped);
        }
        None
    }

    pub fn stalled(&self) -> bool {
        self.stalled
    }

    pub fn stall_after(&self) -> Duration {
        self.stall_after
    }

    /// How long nothing has moved (since creation, before the first movement).
    pub fn quiet_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.moved_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn hls_may_stand_still_for_a_whole_gop_and_other_outputs_may_not() {
        let gop = Duration::from_secs(4);
        assert_eq!(output_stall_after(OutputKind::Hls, gop), OUTPUT_STALL + gop);
        assert_eq!(output_stall_after(OutputKind::Record, gop), OUTPUT_STALL);
        assert_eq!(output_stall_after(OutputKind::Rtmp, gop), OUTPUT_STALL);
    }

    #[test]
    fn a_flow_that_never_starts_is_reported_once_when_armed_at_once() {
        let t0 = Instant::now();
        let mut watch = FlowWatch::new(t0, 2000 * MS, Arm::AtOnce);
        assert_eq!(watch.observe(0, t0 + 1999 * MS), None);
        assert_eq!(watch.observe(0, t0 + 2000 * MS), Some(FlowChange::Stopped));
        assert_eq!(watch.observe(0, t0 + 5000 * MS), None, "reported once");
        assert!(watch.stalled());
    }

    #[test]
    fn a_flow_armed_on_first_movement_may_take_its_time_to_start() {
        let t0 = Instant::now();
        let mut watch = FlowWatch::new(t0, 2000 * MS, Arm::OnFirstMovement);
        assert_eq!(watch.observe(0, t0 + 60_000 * MS), None);
        assert_eq!(watch.observe(7, t0 + 60_001 * MS), None);
        assert_eq!(watch.observe(7, t0 + 62_000 * MS), None);
        assert_eq!(watch.observe(7, t0 + 62_001 * MS), Some(FlowChange::Stopped));
    }

    #[test]
    fn a_stopped_flow_resumes_when_its_counter_moves_again() {
        let t0 = Instant::now();
        let mut watch = FlowWatch::new(t0, 1000 * MS, Arm::AtOnce);
        assert_eq!(watch.observe(10, t0 + 100 * MS), None);
        assert_eq!(watch.observe(10, t0 + 1100 * MS), Some(FlowChange::Stopped));
        assert_eq!(watch.quiet_for(t0 + 1500 * MS), 1400 * MS);
        assert_eq!(watch.observe(11, t0 + 1600 * MS), Some(FlowChange::Resumed));
        assert!(!watch.stalled());
        assert_eq!(watch.observe(12, t0 + 2500 * MS), None, "a moving flow stays healthy");
    }
}
