//! The composite at a lower bitrate for WebRTC guests whose link cannot carry
//! the composition's (see `model::ladder`). One part per rung in use,
//! `rung{n}-{id}`, fed by a shared return encode at that rung's bitrate and
//! size, and sending it to every guest on that rung; built with the first
//! such guest, gone with the last.
//!
//! ```text
//!  canvas ─► [encode at the rung's bitrate and size] ─► appsink ─┬─► PictureSwitch (guest 1) ─► Peer::write_video
//!                                                               └─► …             (guest n)
//! ```

use gstreamer as gst;
use gstreamer::prelude::*;
use std::sync::{Arc, Mutex};

use super::super::MediaError;
use super::super::leg::webrtc::{PictureSwitch, frame_sink};
use super::super::part::{expose_input, request_keyframe_upstream};
use crate::model::ids::ParticipantId;
use crate::model::ladder::Rung;

type Guests = Arc<Mutex<Vec<(ParticipantId, Arc<PictureSwitch>)>>>;

/// One rung's part and the guests it sends to.
pub(super) struct ReducedPicture {
    pub bin: gst::Bin,
    pub rung: Rung,
    /// Where its encode's picture comes in.
    pub video_in: gst::Pad,
    guests: Guests,
}

impl ReducedPicture {
    /// Builds the part (not yet in the pipeline).
    pub fn build(name: &str, rung: Rung) -> Result<ReducedPicture, MediaError> {
        let bin = gst::Bin::with_name(name);
        let guests = Guests::default();
        let to = guests.clone();
        let sink = frame_sink(&format!("{name}-vout"), move |frame, time, keyframe, wallclock| {
            for (_, picture) in to.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter() {
                picture.deliver(rung.index, frame.clone(), time, keyframe, wallclock);
            }
        })?;
        bin.add(&sink)?;
        let video_in = expose_input(&bin, &sink, "sink", "video")?;
        Ok(ReducedPicture { bin, rung, video_in, guests })
    }

    fn guests(&self) -> std::sync::MutexGuard<'_, Vec<(ParticipantId, Arc<PictureSwitch>)>> {
        self.guests.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A guest moving to this rung: it is sent this encode from its next
    /// keyframe, asked for now.
    pub fn add(&self, id: &ParticipantId, picture: &Arc<PictureSwitch>) {
        let mut guests = self.guests();
        if !guests.iter().any(|(guest, _)| guest == id) {
            guests.push((id.clone(), picture.clone()));
        }
        picture.want(self.rung.index, Some(self.video_in.clone()));
        request_keyframe_upstream(&self.video_in);
    }

    /// Lets go of the guests that left or are sent another rung now (not
    /// those still waiting for the other rung's keyframe); whether any are left.
    pub fn keep_current(&self) -> bool {
        let index = self.rung.index;
        let mut guests = self.guests();
        guests.retain(|(_, picture)| {
            let (current, wanted) = picture.sources();
            current == index || wanted == index
        });
        !guests.is_empty()
    }

    pub fn remove(&self, id: &ParticipantId) {
        self.guests().retain(|(guest, _)| guest != id);
    }
}
