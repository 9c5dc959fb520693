//! One Opus encode of the full mix for every caller who hears exactly the
//! full mix. A caller who contributes nothing to the mix (muted, silent, or
//! sending nothing) hears everyone, so its own mix-minus encode would make
//! the same audio as that of every other caller like it. FreeSWITCH and
//! Janus AudioBridge share that encode; in a room of 200 where a few talk,
//! it is a few encodes plus one rather than 200.
//!
//! The mixer ([`crate::media::mixer`]) makes the packet and hangs it on the
//! block it pushes to each such caller, as a meta; the caller's
//! `tuttiopusenc` sends the packet instead of encoding the block. The block
//! itself is still the full mix, so an encoder that knows nothing of the
//! meta (an operator's own profile) encodes it and is just as right.

use super::encoder::{Encoder, Settings};
use gst::glib;
use gst::prelude::*;
use gstreamer as gst;
use std::time::Duration;

/// The custom meta carrying a shared packet, in its field `packet`.
const META: &str = "TuttiOpusSharedPacket";
const PACKET: &str = "packet";
/// Tagged as audio: audioconvert keeps such metas when it downmixes the
/// block for a mono caller, and drops untagged ones.
const META_TAGS: &[&str] = &["audio"];

/// Registers the meta (with the elements, once).
pub(super) fn register_meta() {
    if !gst::meta::CustomMeta::is_registered(META) {
        gst::meta::CustomMeta::register(META, META_TAGS);
    }
}

/// The shared packet hung on `buffer`, if any.
pub(super) fn packet_for(buffer: &gst::BufferRef) -> Option<glib::Bytes> {
    let meta = gst::meta::CustomMeta::from_buffer(buffer, META).ok()?;
    meta.structure().get::<glib::Bytes>(PACKET).ok()
}

/// Hangs `packet` on `buffer`, for the encoder that will get it.
pub fn attach(buffer: &mut gst::BufferRef, packet: &glib::Bytes) {
    if let Ok(mut meta) = gst::meta::CustomMeta::add(buffer, META) {
        meta.mut_structure().set(PACKET, packet);
    }
}

/// What a caller's Opus encoder makes: callers with the same key can be
/// sent the same packets.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ShareKey {
    settings: Settings,
    channels: usize,
}

impl ShareKey {
    /// The key of the `tuttiopusenc` in `encoder` (an encoder profile's bin,
    /// fed `channels`), if it has one and it makes one packet per `block`.
    pub fn of(encoder: &gst::Bin, channels: u32, block: Duration) -> Option<ShareKey> {
        let opus = encoder.iterate_recurse().into_iter().flatten().find(|element| {
            element.factory().is_some_and(|factory| factory.name() == "tuttiopusenc")
        })?;
        let settings = Settings {
            bitrate: opus.property("bitrate"),
            frame_ms: opus.property("frame-size"),
            complexity: opus.property("complexity"),
        };
        (u128::from(settings.frame_ms) == block.as_millis()).then_some(ShareKey { settings, channels: channels as usize })
    }
}

/// The one encoder of the full mix for the callers of one key.
pub struct SharedEncode {
    encoder: Encoder,
    channels: usize,
}

impl SharedEncode {
    pub fn new(key: ShareKey) -> Result<SharedEncode, String> {
        Ok(SharedEncode { encoder: Encoder::new(key.channels, key.settings)?, channels: key.channels })
    }

    /// Starts over: for a stream that paused (nobody took it for a while).
    pub fn reset(&mut self) {
        self.encoder.reset();
    }

    /// One block of the full mix (interleaved, `mix_channels` channels) as
    /// one packet in the key's channels.
    pub fn encode(&mut self, block: &[i16], mix_channels: usize) -> Result<glib::Bytes, String> {
        let packet = match (mix_channels, self.channels) {
            (2, 1) => {
                let mono: Vec<i16> = block.chunks_exact(2).map(|f| ((i32::from(f[0]) + i32::from(f[1])) / 2) as i16).collect();
                self.encoder.encode(&mono)?
            }
            (1, 2) => self.encoder.encode(&block.iter().flat_map(|&s| [s, s]).collect::<Vec<_>>())?,
            _ => self.encoder.encode(block)?,
        };
        Ok(glib::Bytes::from_owned(packet))
    }
}
