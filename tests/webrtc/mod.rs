//! What the WebRTC browser tests need beside the browser: the page and the
//! loopback HTTP server that hands its offer to Tutti ([`page_server`]), the
//! GStreamer encoders and decoders that judge the media ([`media`]), and a
//! lossy UDP relay ([`relay`]).

mod guests;
pub mod media;
pub mod page_server;
pub mod relay;
mod whip_whep;

/// The guest page: camera and microphone to Tutti, Tutti's media judged.
pub const PAGE: &str = include_str!("page.html");
