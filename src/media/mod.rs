//! The GStreamer adapter: the only module that touches `gst`.
//!
//! One pipeline per composition (one clock for every caller in it):
//!
//! ```text
//!  [caller-A]: udpsrc ─► rtpbin ─► depay ─► decoder ─► scale to cell, label (or its slate) ─┐
//!  [caller-B]: …                                                                            │
//!  [caller-H] (RTMP publisher): appsrc ─► h264parse ─► decoder ─► …                         ▼
//!  driver (transparent, live), background still ──────────────────────────────────► compositor ─► overlays ─► tee ─┬─► [comp-{id}-broadcast]: queue ─► H.264 ─► tee ─┬─► RTMP feed, [out-…] (HLS, recordings)
//!                                                                                                                  │                                                └─► [enc-h264-…]: h264parse ─► tee ─► [caller-A], [caller-B] (H.264 mode 1)
//!                                                                                                                  └─► [enc-vp8-…]: queue ─► VP8 ─► tee ─► [caller-C] (VP8, or H.264 mode 0)
//!  [caller-A]: … ─► decoder ─► convert/resample ─► appsink ─┐
//!  [caller-B]: … ─► decoder ─► convert/resample ─► appsink ─┤  mixing thread (mixer.rs), every 20 ms:
//!                                                           ├► appsrc: A + B + … ─► [comp-{id}-broadcast] (AAC)
//!                                                           ├► appsrc: B + … (A's mix-minus) ─► encoder ─► pay ─► rtpbin ─► udpsink   in [caller-A]
//!                                                           └► appsrc: A + … (B's mix-minus) ─► …                                     in [caller-B]
//! ```
//!
//! A caller's part is its seat ([`seat`]: picture, place in the mix,
//! mix-minus, composite), which the compositor and the mixer see, and its
//! leg ([`leg`]: RTP, or an RTMP publisher's), which alone knows the transport.
//!
//! Each bracket is a part: a bin of its own (`caller-{id}`, `enc-{profile}-…`,
//! `comp-{id}-broadcast`, `out-{id}`) that starts and stops as one element,
//! sinks first ([`part`]); the engine never waits on GStreamer without a
//! deadline ([`lifecycle`]). Elements have deterministic names
//! (`caller-{id}-vdec`, …), and a bus message maps to the part it came from.

pub mod composition;
mod flow;
mod leg;
pub mod lifecycle;
mod lipsync;
mod mixer;
mod opus;
mod part;
mod participant;
mod picture;
pub mod prompts;
pub mod profiles;
mod seat;
mod source_guard;
mod srtp;
mod still;
mod topology;

pub use composition::{CompositionMedia, MissingImage, check_images, FileOutputStatus, MediaSettings, OutputPaths, output_part_name, participant_part_name};
pub use lifecycle::{Reaper, ReaperCounts, StopTicket};
pub use leg::publisher::{IngestView, PublisherChange};
pub use leg::webrtc::{Directions, GuestChange, GuestMedia, SentPicture, WebRtcStats};
pub use leg::rtp::{JoiningMedium, MediumStats, ParticipantStats};
pub use leg::{Flow, Leg, Way};
pub use participant::ParticipantMedia;

use std::path::PathBuf;
use std::time::Duration;

use crate::model::ids::{CompositionId, ParticipantId, ViewerId};

/// The one colorimetry of every picture inside a composition: the canvas,
/// the cells, slates, the speaker's border, scaled return encodes; the
/// encoders write it into the stream (VUI) for viewers. Without it each of
/// them got GStreamer's guess from its height (BT.709 above 576 lines,
/// BT.601 below), so scaling a 720p caller into a 360p cell converted the
/// matrix on every frame on videoscale's generic path: 2.2 ms a frame
/// instead of 0.1 ms.
pub const COLORIMETRY: &str = "bt709";

/// The one chroma siting of every picture inside a composition: H.264's
/// default (chroma sample location 0, left), what decoders report. The
/// compositor converts every input whose siting differs from its output's,
/// and without one on the canvas its output had none: each caller's cell
/// was copied into a new frame-sized buffer on a helper thread, every frame.
pub const CHROMA_SITE: &str = "mpeg2";

/// `caps` in the composition's one colorimetry and chroma siting.
pub fn in_canvas_colours(
    caps: gstreamer::caps::Builder<gstreamer::caps::NoFeature>,
) -> gstreamer::caps::Builder<gstreamer::caps::NoFeature> {
    caps.field("colorimetry", COLORIMETRY).field("chroma-site", CHROMA_SITE)
}

/// What a pipeline reports back to the engine, from GStreamer's threads.
#[derive(Debug, Clone)]
pub enum MediaEvent {
    /// An element failed. `part` is the part it belongs to (`caller-{id}`,
    /// `out-{id}`, …), `None` for the composition's core.
    Error { composition: CompositionId, part: Option<String>, element: String, message: String },
    /// Some element's latency changed: the pipeline must recompute it.
    LatencyChanged { composition: CompositionId },
    /// The mix's speaker detector changed its mind: the engine reads who now.
    ActiveSpeakerChanged { composition: CompositionId },
    /// A caller pressed a DTMF key (RFC 4733, in its RTP).
    Key { composition: CompositionId, participant: ParticipantId, key: char },
    /// An RTMP participant's publisher started, stopped or was refused.
    Publisher { composition: CompositionId, participant: ParticipantId, change: PublisherChange },
    /// A WebRTC guest connected or left.
    Guest { composition: CompositionId, participant: ParticipantId, change: GuestChange },
    /// A WHEP viewer lost the picture (`None`), or left for the reason given.
    Viewer { composition: CompositionId, viewer: ViewerId, left: Option<String> },
    /// A teardown handed to the [`Reaper`] is done.
    Stopped { ticket: StopTicket, after: Duration },
}

pub type EventSink = std::sync::Arc<dyn Fn(MediaEvent) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error(transparent)]
    Profile(#[from] profiles::ProfileError),
    #[error("element {factory} is not installed (needed for {name})")]
    MissingElement { factory: String, name: String },
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: String },
    #[error("{part} did not start within {} ms", after.as_millis())]
    StartTimeout { part: String, after: Duration },
    #[error("GStreamer: {0}")]
    Gst(String),
}

impl From<glib::BoolError> for MediaError {
    fn from(e: glib::BoolError) -> Self {
        MediaError::Gst(e.to_string())
    }
}

impl From<gstreamer::StateChangeError> for MediaError {
    fn from(e: gstreamer::StateChangeError) -> Self {
        MediaError::Gst(e.to_string())
    }
}

impl From<gstreamer::PadLinkError> for MediaError {
    fn from(e: gstreamer::PadLinkError) -> Self {
        MediaError::Gst(format!("pad link failed: {e:?}"))
    }
}

use gstreamer::glib;

/// How a sink pad's probe drops a buffer: `Handled`, not `Drop`. gstreamer-rs
/// takes the buffer out of the probe's info to hand it over, and on `Drop`
/// GStreamer 1.22's chain function then unrefs the NULL left behind, logging
/// a CRITICAL per buffer: 80 lines a second from an idle composition, a third
/// of its CPU. `Handled` tells the core that the probe consumed it. (A src
/// pad's push takes `Drop` cleanly.)
const DROP_IN_SINK_PROBE: gstreamer::PadProbeReturn = gstreamer::PadProbeReturn::Handled;

/// Creates an element, naming the missing plugin if it is not installed.
fn make(factory: &str, name: &str) -> Result<gstreamer::Element, MediaError> {
    gstreamer::ElementFactory::make(factory)
        .name(name)
        .build()
        .map_err(|_| MediaError::MissingElement { factory: factory.into(), name: name.into() })
}
