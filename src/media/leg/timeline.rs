//! Where a sender's frames go on the running time: RTMP, SRT and WebRTC
//! senders stamp their frames with their own clock, and a [`Timeline`] places
//! them on the pipeline's, the way an RTP caller's jitter buffer does.

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::time::Duration;

use crate::media::{MediaError, make};

/// A sender whose frames come more than this much later than their
/// timestamps say (it stalled, or its clock jumped) is placed afresh.
const RESYNC_AFTER: Duration = Duration::from_secs(1);

/// Maps a sender's millisecond timestamps onto the running time, the
/// same way for its sound and its picture, so that they stay together. It
/// is anchored at the earliest arrival seen (a frame arriving sooner than
/// the anchor expects moves it there, for [`SETTLED_AFTER`]; later it
/// waits for its time), so network jitter only ever makes a frame late,
/// never early; and a frame more than [`RESYNC_AFTER`] away from its time
/// anchors it afresh (the sender stalled or its clock jumped).
///
/// Some frames come late by design, not by jitter: an MPEG-TS muxer
/// (ffmpeg's, so OBS's) sends its audio in bursts behind the video of the
/// same time, and over SRT from ffmpeg the latest frames came 170 ms to
/// 0.55 s behind the earliest. Dropped as late by the mixer, such audio
/// read 28 dB below its level. So frames are placed later by the *spread*:
/// the lateness of the latest frame so far, once it is more than
/// [`SPREAD_STEP`] beyond the spread (the playout delay covers less).
/// Placement holds still otherwise: moved by a few ms at every slightly
/// later frame, a picture slipped by a whole composite frame against its
/// sound now and then (flashes 36 ms early in one run, 19 ms late in another).
#[derive(Default)]
pub(super) struct Timeline {
    anchor: Option<Anchor>,
    spread: gst::ClockTime,
}

#[derive(Clone, Copy)]
struct Anchor {
    ms: i64,
    time: gst::ClockTime,
    /// When the sender was first anchored.
    since: gst::ClockTime,
}

/// How long an earlier arrival may move the anchor: afterwards it holds
/// still, and the mixer, which counts samples once it has an input's first
/// time, stays in step with the picture.
const SETTLED_AFTER: gst::ClockTime = gst::ClockTime::from_seconds(2);

/// Lateness beyond the spread that moves it: less is within the playout delay.
const SPREAD_STEP: gst::ClockTime = gst::ClockTime::from_mseconds(20);

impl Timeline {
    pub(super) fn place(&mut self, ms: i64, now: gst::ClockTime) -> gst::ClockTime {
        let resync = gst::ClockTime::from_nseconds(RESYNC_AFTER.as_nanos() as u64);
        if let Some(Anchor { ms: anchor_ms, time: anchor_time, since }) = self.anchor {
            let offset = ms - anchor_ms;
            let expected = if offset >= 0 {
                anchor_time.checked_add(gst::ClockTime::from_mseconds(offset as u64))
            } else {
                anchor_time.checked_sub(gst::ClockTime::from_mseconds(offset.unsigned_abs()))
            };
            match expected {
                Some(expected) if expected <= now && now - expected <= resync => {
                    if now - expected > self.spread + SPREAD_STEP {
                        self.spread = now - expected;
                    }
                    return expected + self.spread;
                }
                // Early, once the anchor has settled: it waits for its time.
                Some(expected) if expected > now && expected - now <= resync && now.saturating_sub(since) >= SETTLED_AFTER => {
                    return expected + self.spread;
                }
                _ => {}
            }
        }
        let since = self.anchor.map_or(now, |a| a.since);
        self.anchor = Some(Anchor { ms, time: now, since });
        now + self.spread
    }
}

/// An appsrc a sender's frames are pushed into with their placed times;
/// it holds `queued` frames before it drops the oldest.
pub(super) fn live_source(name: &str, queued: u64) -> Result<gst_app::AppSrc, MediaError> {
    let source = make("appsrc", name)?.downcast::<gst_app::AppSrc>().expect("appsrc is an AppSrc");
    source.set_format(gst::Format::Time);
    source.set_is_live(true);
    source.set_max_buffers(queued);
    source.set_property_from_str("leaky-type", "downstream");
    // Its frames come no later than their time (see `Timeline`), and it may
    // hold them as long as the compositor waits: without saying so, appsrc
    // answers a maximum latency of 0, below the compositor's configured
    // minimum, and the compositor could not configure its latency at all
    // ("Impossible to configure latency", 100 warnings a second) and once
    // stopped producing frames for everyone.
    source.set_min_latency(0);
    source.set_max_latency(-1);
    Ok(source)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> gst::ClockTime {
        gst::ClockTime::from_mseconds(n)
    }

    #[test]
    fn frames_keep_their_spacing_when_they_arrive_a_little_late() {
        let mut timeline = Timeline::default();
        assert_eq!(timeline.place(1000, ms(5000)), ms(5000));
        // 40 ms later by the publisher's clock, arriving 15 ms late: within
        // the playout delay, nothing moves.
        assert_eq!(timeline.place(1040, ms(5055)), ms(5040));
        assert_eq!(timeline.place(1080, ms(5080)), ms(5080));
    }

    #[test]
    fn a_frame_much_later_places_every_frame_after_it_as_late() {
        let mut timeline = Timeline::default();
        timeline.place(1000, ms(5000));
        assert_eq!(timeline.place(1040, ms(5100)), ms(5100), "60 ms late: the spread");
        assert_eq!(timeline.place(1080, ms(5080)), ms(5140), "an in-time frame is placed 60 ms later too");
        assert_eq!(timeline.place(1120, ms(5190)), ms(5180), "70 ms late is within a step of the spread");
    }

    #[test]
    fn audio_packed_behind_its_video_is_placed_with_it_not_dropped_as_late() {
        // A TS muxer sends 8 AAC frames (170 ms) at once, after the video of their time.
        let mut timeline = Timeline::default();
        for frame in 0..6 {
            timeline.place(1000 + frame * 33, ms(5000 + frame as u64 * 33));
        }
        let first_audio = timeline.place(1000, ms(5170));
        assert_eq!(first_audio, ms(5170), "played when it arrives, not 170 ms in the past");
        let video = timeline.place(1200, ms(5200));
        assert_eq!(video - first_audio, ms(200), "and the picture keeps its distance from its sound");
    }

    #[test]
    fn a_frame_that_arrives_sooner_than_expected_moves_the_anchor_so_none_is_early() {
        let mut timeline = Timeline::default();
        timeline.place(1000, ms(5030));
        // The first frame was late by 30 ms: this one shows it.
        assert_eq!(timeline.place(1040, ms(5040)), ms(5040));
        assert_eq!(timeline.place(1080, ms(5090)), ms(5080), "placed by the new anchor");
    }

    #[test]
    fn once_settled_an_early_frame_waits_for_its_time_and_moves_nothing() {
        let mut timeline = Timeline::default();
        timeline.place(0, ms(5000));
        assert_eq!(timeline.place(3000, ms(8000)), ms(8000));
        assert_eq!(timeline.place(3040, ms(8030)), ms(8040), "10 ms early, 3 s in: it waits");
        assert_eq!(timeline.place(3080, ms(8080)), ms(8080), "and the anchor held still");
    }

    #[test]
    fn a_stall_or_a_jump_places_the_publisher_afresh() {
        let mut timeline = Timeline::default();
        timeline.place(1000, ms(5000));
        assert_eq!(timeline.place(1040, ms(7000)), ms(7000), "2 s late: anchored again");
        assert_eq!(timeline.place(90_000, ms(7040)), ms(7040), "a jump ahead");
        assert_eq!(timeline.place(90_040, ms(7085)), ms(7080));
        assert_eq!(timeline.place(0, ms(7100)), ms(7100), "a jump back");
    }
}
