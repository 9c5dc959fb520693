//! The bounded queue from the media threads to a publisher task. Pushing
//! never blocks (it runs on GStreamer streaming threads); when the queue is
//! full the rest of the GOP is dropped, audio included, so the destination
//! sees a clean cut and resumes at a keyframe rather than receiving frames
//! whose references are gone.

use super::media::MediaFrame;
use std::sync::Mutex;
use tokio::sync::mpsc;

/// What became of a pushed frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    Queued,
    /// Dropped with the rest of its GOP: the destination is not keeping up.
    Dropped,
    /// The output is stopped or failed; frames go nowhere.
    Closed,
}

pub(crate) struct FrameSender {
    tx: mpsc::Sender<MediaFrame>,
    /// Shared by the video and audio threads, so both stop and resume together.
    gate: Mutex<GopGate>,
}

impl FrameSender {
    pub(crate) fn new(tx: mpsc::Sender<MediaFrame>) -> FrameSender {
        FrameSender {
            tx,
            gate: Mutex::new(GopGate::default()),
        }
    }

    /// Returns the outcome and whether this push started dropping a new GOP.
    pub(crate) fn push(&self, frame: MediaFrame) -> (PushOutcome, bool) {
        let mut gate = self.gate.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !gate.admits(&frame) {
            return (PushOutcome::Dropped, false);
        }
        match self.tx.try_send(frame) {
            Ok(()) => (PushOutcome::Queued, false),
            Err(mpsc::error::TrySendError::Full(_)) => (PushOutcome::Dropped, gate.start_dropping()),
            Err(mpsc::error::TrySendError::Closed(_)) => (PushOutcome::Closed, false),
        }
    }
}

/// Pure: whether frames may enter the queue.
#[derive(Debug, Default)]
struct GopGate {
    dropping: bool,
}

impl GopGate {
    fn admits(&mut self, frame: &MediaFrame) -> bool {
        if self.dropping && frame.is_keyframe() {
            self.dropping = false;
        }
        !self.dropping
    }

    /// The queue was full. True if this starts a new dropped GOP (the one
    /// being dropped may be the keyframe that just reopened the gate).
    fn start_dropping(&mut self) -> bool {
        !std::mem::replace(&mut self.dropping, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn video(keyframe: bool) -> MediaFrame {
        MediaFrame::Video {
            pts_ms: 0,
            dts_ms: 0,
            keyframe,
            data: Bytes::new(),
        }
    }

    fn audio() -> MediaFrame {
        MediaFrame::Audio {
            pts_ms: 0,
            data: Bytes::new(),
        }
    }

    #[test]
    fn when_full_the_rest_of_the_gop_is_dropped_and_counted_once() {
        let (tx, mut rx) = mpsc::channel(2);
        let sender = FrameSender::new(tx);
        assert_eq!(sender.push(video(true)), (PushOutcome::Queued, false));
        assert_eq!(sender.push(video(false)), (PushOutcome::Queued, false));
        assert_eq!(sender.push(video(false)), (PushOutcome::Dropped, true));
        rx.try_recv().unwrap();
        rx.try_recv().unwrap();
        // Room again, but still inside the dropped GOP: audio and video wait for a keyframe.
        assert_eq!(sender.push(audio()), (PushOutcome::Dropped, false));
        assert_eq!(sender.push(video(false)), (PushOutcome::Dropped, false));
        assert_eq!(sender.push(video(true)), (PushOutcome::Queued, false));
        assert_eq!(sender.push(audio()), (PushOutcome::Queued, false));
    }

    #[test]
    fn a_keyframe_meeting_a_full_queue_starts_a_new_dropped_gop() {
        let (tx, _rx) = mpsc::channel(1);
        let sender = FrameSender::new(tx);
        sender.push(video(true));
        assert_eq!(sender.push(video(false)), (PushOutcome::Dropped, true));
        assert_eq!(sender.push(video(true)), (PushOutcome::Dropped, true));
        assert_eq!(sender.push(audio()), (PushOutcome::Dropped, false));
    }

    #[test]
    fn a_closed_queue_says_so() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        assert_eq!(FrameSender::new(tx).push(video(true)), (PushOutcome::Closed, false));
    }
}
