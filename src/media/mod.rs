//! The GStreamer adapter: the only module that touches `gst`.
//!
//! One pipeline per composition (one clock for every caller in it):
//!
//! ```text
//!  caller A: udpsrc ─► rtpbin ─► funnel ─► depay ─► decoder ───────────────┐
//!  caller B: ...                                                           ▼
//!  driver (transparent, live) ─────────────────────────────────────► compositor ─► tee ─► queue ─► encoder(H264) ─► tee ─► (outputs: broadcast.rs)
//!                                                                                    │                                └──► h264parse ─► tee ─► pay ─► rtpbin ─► udpsink  (A, B… on H.264 mode 1)
//!                                                                                    └──► queue ─► encoder(VP8)  ─► tee ─► pay ─► …       (callers on VP8, or H.264 mode 0)
//!  caller A: … ─► decoder ─► convert/resample ─► appsink ─┐
//!  caller B: … ─► decoder ─► convert/resample ─► appsink ─┤  mixing thread (mixer.rs), every 20 ms:
//!                                                         ├► appsrc: A + B + … ─► (outputs)
//!                                                         ├► appsrc: B + … (A's mix-minus) ─► encoder ─► pay ─► rtpbin ─► udpsink
//!                                                         └► appsrc: A + … (B's mix-minus) ─► …
//! ```
//!
//! Elements have deterministic names (`comp-{id}-…`, `caller-{id}-…`,
//! `enc-{codec}-…`) so a bus message names the resource that owns it.

pub mod composition;
mod mixer;
mod participant;
pub mod profiles;
mod topology;

pub use composition::{CompositionMedia, FileOutputStatus, MediaSettings, OutputPaths};
pub use participant::{MediumStats, ParticipantStats};

use crate::model::ids::CompositionId;

/// What a pipeline reports back to the engine, from GStreamer's threads.
#[derive(Debug, Clone)]
pub enum MediaEvent {
    /// An element failed. `element` is its path, which starts with the
    /// name of the caller or encoder that owns it.
    Error { composition: CompositionId, element: String, message: String },
    /// Some element's latency changed: the pipeline must recompute it.
    LatencyChanged { composition: CompositionId },
}

pub type EventSink = std::sync::Arc<dyn Fn(MediaEvent) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error(transparent)]
    Profile(#[from] profiles::ProfileError),
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

/// Creates an element, naming the missing plugin if it is not installed.
fn make(factory: &str, name: &str) -> Result<gstreamer::Element, MediaError> {
    gstreamer::ElementFactory::make(factory)
        .name(name)
        .build()
        .map_err(|_| MediaError::Gst(format!("element {factory} is not installed (needed for {name})")))
}
