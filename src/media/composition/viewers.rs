//! WHEP viewers of a composition: one part, `whep-{id}`, built with the first
//! viewer and gone with the last, that sends every viewer the programme.
//! No encode is made per viewer: the picture is the broadcast's own H.264
//! (what H.264 callers at the canvas size share), and the sound one Opus
//! encode of the full mix that every viewer gets.
//!
//! ```text
//!  [broadcast H.264, shared return encode] ─► appsink ─┬─► Peer::write_video (viewer 1)
//!                                                       └─► …             (viewer n)
//!  appsrc (full mix) ─► convert ─► resample ─► Opus ─► appsink ─► Peer::write_audio (each viewer)
//! ```

use gstreamer as gst;
use gstreamer::prelude::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::super::leg::rtp::audio_encode_chain;
use super::super::leg::webrtc::{SENT_AUDIO, frame_sink};
use super::super::mixer::AudioMix;
use super::super::part::{add_chain, expose_input, request_keyframe_upstream};
use super::super::profiles::Profiles;
use super::super::MediaError;
use crate::model::ids::ViewerId;
use crate::webrtc::Peer;

/// Viewers that join or lose a frame ask for a keyframe of the broadcast
/// encode, which every output and H.264 caller gets too: at most this often.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// The viewers' part and who watches.
pub(super) struct Viewers {
    pub bin: gst::Bin,
    peers: Arc<Mutex<Vec<(ViewerId, Peer)>>>,
    /// Where the broadcast's picture comes in; `None` in an audio-only composition.
    pub video_in: Option<gst::Pad>,
    last_keyframe_request: Mutex<Option<Instant>>,
}

impl Viewers {
    /// Builds the part (not yet in the pipeline); `with_video` for a composition with a picture.
    pub fn build(name: &str, mix: &AudioMix, profiles: &Profiles, with_video: bool) -> Result<Viewers, MediaError> {
        let bin = gst::Bin::with_name(name);
        let peers: Arc<Mutex<Vec<(ViewerId, Peer)>>> = Arc::default();
        let video_in = if with_video {
            let to = peers.clone();
            let sink = frame_sink(&format!("{name}-vout"), move |frame, time, keyframe, wallclock| {
                for (_, peer) in to.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter() {
                    peer.write_video(frame.clone(), time, keyframe, wallclock);
                }
            })?;
            bin.add(&sink)?;
            Some(expose_input(&bin, &sink, "sink", "video")?)
        } else {
            None
        };
        let mut chain = vec![mix.viewers_mix(&format!("{name}-amix"))?];
        chain.extend(audio_encode_chain(profiles, SENT_AUDIO, &format!("{name}-"))?);
        let to = peers.clone();
        chain.push(frame_sink(&format!("{name}-aout"), move |packet, time, _, wallclock| {
            for (_, peer) in to.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter() {
                peer.write_audio(packet.clone(), time, wallclock);
            }
        })?);
        add_chain(&bin, &chain.iter().collect::<Vec<_>>())?;
        Ok(Viewers { bin, peers, video_in, last_keyframe_request: Mutex::default() })
    }

    /// A new viewer: it starts at the next keyframe, asked for now.
    pub fn add(&self, id: ViewerId, peer: Peer) {
        self.peers.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push((id, peer));
        self.request_keyframe();
    }

    /// Takes a viewer out and hangs up on it; whether any are left.
    pub fn remove(&self, id: &ViewerId) -> bool {
        let mut peers = self.peers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(index) = peers.iter().position(|(viewer, _)| viewer == id) {
            peers.remove(index).1.close();
        }
        !peers.is_empty()
    }

    pub fn has(&self, id: &ViewerId) -> bool {
        self.peers.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter().any(|(viewer, _)| viewer == id)
    }

    pub fn count(&self) -> usize {
        self.peers.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }

    /// A viewer lost our picture (or joined): a keyframe, at most once per
    /// [`KEYFRAME_REQUEST_INTERVAL`] whatever the number of viewers asking.
    pub fn request_keyframe(&self) {
        let Some(pad) = &self.video_in else { return };
        let mut last = self.last_keyframe_request.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.is_none_or(|at| at.elapsed() >= KEYFRAME_REQUEST_INTERVAL) {
            *last = Some(Instant::now());
            request_keyframe_upstream(pad);
        }
    }
}

impl Drop for Viewers {
    fn drop(&mut self) {
        for (_, peer) in self.peers.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).drain(..) {
            peer.close();
        }
    }
}
