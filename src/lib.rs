//! Tutti: an MCU and live-stream transcoder on GStreamer.
//!
//! Three rings (see `STYLE.md` of the project):
//! - [`model`]: pure logic (codecs, layout, SDP negotiation, configuration);
//! - [`engine`]: the one actor that owns every composition;
//! - adapters at the edges: [`api`] (HTTP), [`media`] (GStreamer), [`ports`] (UDP sockets).

pub mod api;
pub mod auth;
pub mod config;
pub mod engine;
pub mod events;
pub mod guards;
pub mod idempotency;
pub mod limits;
pub mod media;
pub mod metrics;
pub mod model;
pub mod ports;
pub mod rtmp;
pub mod web;
