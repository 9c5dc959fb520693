//! What a writer hands the socket task for one peer: a bounded queue that
//! never blocks the writer (a GStreamer streaming thread).
//!
//! ```text
//!  write_video / write_audio ──push──► Outbox (≤ capacity) ──take──► socket task ─► str0m
//!        full? drop and count ─┘   video dropped? later deltas wait for a keyframe,
//!                                   and the task asks the encoder for one
//! ```
//!
//! A dropped audio packet is a 20 ms gap that Opus conceals. A dropped video
//! frame breaks every frame after it until the next keyframe, so those are
//! dropped too rather than sent to a decoder that cannot use them.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::media::MediaKind;

#[derive(Clone, Debug)]
pub struct OutFrame {
    pub kind: MediaKind,
    pub data: Bytes,
    /// Media time, from the writer's own origin.
    pub timestamp: Duration,
    pub keyframe: bool,
    /// When its media time was live: str0m's RTCP sender reports map the RTP
    /// time to it, and the browser plays sound and picture in step by them.
    /// A frame's own, not when it was written: a picture leaves its encoder
    /// later than the sound of the same instant leaves its own.
    pub wallclock: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// The queue was full.
    Full,
    /// A video delta frame after a dropped one, before the next keyframe.
    AwaitingKeyframe,
    /// The peer is gone.
    Closed,
}

#[derive(Debug)]
pub struct Outbox {
    frames: VecDeque<OutFrame>,
    capacity: usize,
    video_awaiting_keyframe: bool,
    keyframe_request: bool,
    closed: bool,
}

impl Outbox {
    pub fn new(capacity: usize) -> Self {
        Outbox {
            frames: VecDeque::with_capacity(capacity),
            capacity,
            video_awaiting_keyframe: false,
            keyframe_request: false,
            closed: false,
        }
    }

    pub fn push(&mut self, frame: OutFrame) -> Push {
        if self.closed {
            return Push::Closed;
        }
        let video = frame.kind == MediaKind::Video;
        if video && self.video_awaiting_keyframe && !frame.keyframe {
            return Push::AwaitingKeyframe;
        }
        if self.frames.len() >= self.capacity {
            if video {
                self.video_awaiting_keyframe = true;
                self.keyframe_request = true;
            }
            return Push::Full;
        }
        if video && frame.keyframe {
            self.video_awaiting_keyframe = false;
        }
        self.frames.push_back(frame);
        Push::Queued
    }

    /// Everything queued, oldest first.
    pub fn take(&mut self) -> VecDeque<OutFrame> {
        std::mem::replace(&mut self.frames, VecDeque::with_capacity(self.capacity))
    }

    /// Whether a video drop asked for a keyframe since the last call.
    pub fn take_keyframe_request(&mut self) -> bool {
        std::mem::take(&mut self.keyframe_request)
    }

    /// Refuses every later push and forgets what is queued.
    pub fn close(&mut self) {
        self.closed = true;
        self.frames.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: MediaKind, keyframe: bool) -> OutFrame {
        OutFrame {
            kind,
            data: Bytes::from_static(b"x"),
            timestamp: Duration::ZERO,
            keyframe,
            wallclock: Instant::now(),
        }
    }

    #[test]
    fn frames_queue_up_to_capacity_and_come_out_in_order() {
        let mut outbox = Outbox::new(2);
        assert_eq!(outbox.push(frame(MediaKind::Video, true)), Push::Queued);
        assert_eq!(outbox.push(frame(MediaKind::Audio, false)), Push::Queued);
        assert_eq!(outbox.push(frame(MediaKind::Audio, false)), Push::Full);
        let kinds: Vec<MediaKind> = outbox.take().into_iter().map(|f| f.kind).collect();
        assert_eq!(kinds, [MediaKind::Video, MediaKind::Audio]);
        assert_eq!(
            outbox.push(frame(MediaKind::Audio, false)),
            Push::Queued,
            "room again after take"
        );
    }

    #[test]
    fn a_dropped_audio_packet_costs_only_itself() {
        let mut outbox = Outbox::new(1);
        outbox.push(frame(MediaKind::Audio, false));
        assert_eq!(outbox.push(frame(MediaKind::Audio, false)), Push::Full);
        outbox.take();
        assert_eq!(outbox.push(frame(MediaKind::Video, false)), Push::Queued);
        assert!(!outbox.take_keyframe_request());
    }

    #[test]
    fn after_a_dropped_video_frame_deltas_wait_for_a_keyframe_which_is_requested_once() {
        let mut outbox = Outbox::new(1);
        outbox.push(frame(MediaKind::Video, true));
        assert_eq!(outbox.push(frame(MediaKind::Video, false)), Push::Full);
        outbox.take();
        assert_eq!(outbox.push(frame(MediaKind::Video, false)), Push::AwaitingKeyframe);
        assert_eq!(
            outbox.push(frame(MediaKind::Audio, false)),
            Push::Queued,
            "audio is not held back"
        );
        assert!(outbox.take_keyframe_request());
        assert!(!outbox.take_keyframe_request());
        outbox.take();
        assert_eq!(outbox.push(frame(MediaKind::Video, true)), Push::Queued);
        outbox.take();
        assert_eq!(outbox.push(frame(MediaKind::Video, false)), Push::Queued);
    }

    #[test]
    fn a_closed_outbox_refuses_everything_and_holds_nothing() {
        let mut outbox = Outbox::new(4);
        outbox.push(frame(MediaKind::Audio, false));
        outbox.close();
        assert_eq!(outbox.push(frame(MediaKind::Video, true)), Push::Closed);
        assert!(outbox.take().is_empty());
    }
}
