//! Counters of what passes a pad, written from a pad probe in the streaming
//! thread and read by the engine: how the API shows packets sent and
//! received, and how the watchdogs see a flow stop.

use gstreamer as gst;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How much has passed, and when it last did.
#[derive(Debug, Default)]
pub struct FlowCounter {
    count: AtomicU64,
    /// Milliseconds since the Unix epoch of the last time; 0 before the first.
    last_ms: AtomicU64,
}

impl FlowCounter {
    pub fn add(&self, n: u64) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        self.count.fetch_add(n, Ordering::Relaxed);
        self.last_ms.store(now.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// When something last passed, if it ever did.
    pub fn last(&self) -> Option<SystemTime> {
        match self.last_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(UNIX_EPOCH + Duration::from_millis(ms)),
        }
    }
}

/// What a counter counts.
#[derive(Clone, Copy, Debug)]
pub enum Measure {
    /// Buffers (RTP packets, video frames).
    Buffers,
    Bytes,
}

/// Counts every buffer (or its bytes) that `pad` passes into `counter`.
pub fn count_on(pad: &gst::Pad, counter: Arc<FlowCounter>, measure: Measure) {
    use gst::prelude::*;
    pad.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST, move |_, info| {
        let amount = match (&info.data, measure) {
            (Some(gst::PadProbeData::Buffer(_)), Measure::Buffers) => 1,
            (Some(gst::PadProbeData::Buffer(b)), Measure::Bytes) => b.size() as u64,
            (Some(gst::PadProbeData::BufferList(l)), Measure::Buffers) => l.len() as u64,
            (Some(gst::PadProbeData::BufferList(l)), Measure::Bytes) => l.calculate_size() as u64,
            _ => 0,
        };
        if amount > 0 {
            counter.add(amount);
        }
        gst::PadProbeReturn::Ok
    });
}

/// Counts the buffers that leave `pad` too late: at a running time past
/// their own plus the element's latency (`latency_ns`, its deadline; 0
/// while unknown: nothing is counted then) plus `slack`. A composite
/// produced late is one the outputs and callers get with a stutter.
pub fn count_late_on(pad: &gst::Pad, latency_ns: Arc<AtomicU64>, slack: Duration, counter: Arc<FlowCounter>) {
    use gst::prelude::*;
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let latency = latency_ns.load(Ordering::Relaxed);
        let Some(gst::PadProbeData::Buffer(buffer)) = &info.data else { return gst::PadProbeReturn::Ok };
        let (Some(pts), Some(element)) = (buffer.pts(), pad.parent_element()) else { return gst::PadProbeReturn::Ok };
        if latency == 0 {
            return gst::PadProbeReturn::Ok;
        }
        let segment = pad.sticky_event::<gst::event::Segment>(0);
        let running = segment.and_then(|s| s.segment().downcast_ref::<gst::ClockTime>().and_then(|s| s.to_running_time(pts)));
        if let (Some(running), Some(now)) = (running, element.current_running_time())
            && now > running + gst::ClockTime::from_nseconds(latency) + gst::ClockTime::from_nseconds(slack.as_nanos() as u64)
        {
            counter.add(1);
        }
        gst::PadProbeReturn::Ok
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_knows_nothing_passed_until_something_does() {
        let counter = FlowCounter::default();
        assert_eq!((counter.count(), counter.last()), (0, None));
        counter.add(3);
        counter.add(2);
        assert_eq!(counter.count(), 5);
        assert!(counter.last().is_some());
    }
}
