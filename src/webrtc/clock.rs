//! RTP timestamps to media time: a frame's 32-bit RTP timestamp becomes a
//! [`Duration`] from the first frame of its stream.
//!
//! ```text
//!  RTP ts (u32, random start, wraps every 13 h at 90 kHz)
//!     └─► signed step from the previous frame ─► position += step ─► Duration ≥ 0
//!                 └─ a step beyond ±MAX_STEP: a new source, not time passing: step = 0
//! ```
//!
//! A browser that restarts its encoder (a new SSRC, or a track replaced) starts
//! again from a random timestamp; taken literally that is a jump of hours
//! either way. The clock carries on from where it was instead, so a consumer's
//! timeline stays continuous. A frame reordered to before the first one
//! reads as zero.

use std::time::Duration;

/// The largest step between consecutive frames that is still time passing.
/// Frames are tens of milliseconds apart; a browser that paused its track for
/// longer than this and resumed is treated as a new source, which costs at
/// most a gap the consumer did not see as time.
pub const MAX_STEP: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct MediaClock {
    rate: u32,
    max_step: i64,
    last: Option<u32>,
    /// Ticks since the first frame (negative for a frame reordered before it).
    position: i64,
}

impl MediaClock {
    /// A clock for a stream whose RTP clock runs at `rate` Hz.
    pub fn new(rate: u32) -> Self {
        let max_step = (MAX_STEP.as_millis() as i64) * i64::from(rate) / 1000;
        MediaClock {
            rate,
            max_step,
            last: None,
            position: 0,
        }
    }

    /// The time of a frame with RTP timestamp `rtp`, from the first frame.
    pub fn timestamp(&mut self, rtp: u32) -> Duration {
        if let Some(last) = self.last {
            // The signed 32-bit difference crosses a wrap of the timestamp.
            let step = i64::from(rtp.wrapping_sub(last) as i32);
            if step.abs() <= self.max_step {
                self.position += step;
            }
        }
        self.last = Some(rtp);
        let ticks = self.position.max(0) as u64;
        Duration::from_nanos(ticks * 1_000_000_000 / u64::from(self.rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_frame_is_at_zero_and_later_ones_at_their_distance_in_the_clock_rate() {
        let mut clock = MediaClock::new(90_000);
        assert_eq!(clock.timestamp(1_234_567), Duration::ZERO);
        assert_eq!(
            clock.timestamp(1_234_567 + 3000),
            Duration::from_millis(33) + Duration::from_nanos(333_333)
        );
        assert_eq!(clock.timestamp(1_234_567 + 90_000), Duration::from_secs(1));
    }

    #[test]
    fn a_timestamp_wrapping_past_u32_max_keeps_counting_forward() {
        let mut clock = MediaClock::new(48_000);
        clock.timestamp(u32::MAX - 479);
        assert_eq!(clock.timestamp(480), Duration::from_millis(20));
        assert_eq!(clock.timestamp(1440), Duration::from_millis(40));
    }

    #[test]
    fn a_reordered_frame_before_the_first_reads_zero_and_the_clock_carries_on() {
        let mut clock = MediaClock::new(48_000);
        clock.timestamp(10_000);
        assert_eq!(clock.timestamp(9_040), Duration::ZERO);
        assert_eq!(clock.timestamp(10_960), Duration::from_millis(20));
    }

    #[test]
    fn a_jump_beyond_max_step_is_a_new_source_and_time_continues_from_where_it_was() {
        let mut clock = MediaClock::new(90_000);
        clock.timestamp(5_000);
        assert_eq!(clock.timestamp(5_000 + 9_000), Duration::from_millis(100));
        // A new SSRC starting at an unrelated random timestamp, either way.
        assert_eq!(clock.timestamp(3_000_000_000), Duration::from_millis(100));
        assert_eq!(
            clock.timestamp(3_000_000_000 + 3_000),
            Duration::from_nanos(133_333_333)
        );
        assert_eq!(clock.timestamp(7), Duration::from_nanos(133_333_333));
    }

    #[test]
    fn a_pause_just_under_max_step_is_time_passing() {
        let mut clock = MediaClock::new(48_000);
        clock.timestamp(0);
        assert_eq!(clock.timestamp(48_000 * 9), Duration::from_secs(9));
    }
}
