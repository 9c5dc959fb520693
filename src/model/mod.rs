//! The pure model: no GStreamer, no tokio. Codecs, layout geometry, SDP
//! offer/answer negotiation, which packets are a caller's (RTP source
//! check) and the user-facing configuration of a composition and of each
//! participant in it.
//! Everything here is deterministic and unit-tested next to its code.

pub mod admission;
pub mod branding;
pub mod codec;
pub mod composition;
pub mod controls;
pub mod dtmf;
pub mod event;
pub mod h264;
pub mod health;
pub mod ids;
pub mod ingest;
pub mod ladder;
pub mod layout;
pub mod output;
pub mod pin;
pub mod sdp;
pub mod signalling;
pub mod slate;
pub mod source_check;
pub mod speaker;
