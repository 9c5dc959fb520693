//! RTMP: live outputs to ingest servers (YouTube, Twitch, Facebook, nginx-rtmp)
//! and an embedded playback server for local players.
//!
//! The media adapter hands over one encode as plain values ([`StreamHeaders`],
//! [`MediaFrame`]); nothing here touches GStreamer.
//!
//! - Pure cores, tested in memory: [`flv`] (tag bodies, `onMetaData`),
//!   [`url`] (destination URLs, masked keys), [`packager`] (what a session
//!   sends, frame by frame), [`reconnect`] (backoff, giving up),
//!   [`frame_queue`] (dropping whole GOPs when full).
//! - Built once at start-up: [`trust`] (the CAs `rtmps://` servers are
//!   checked against; what a rejected certificate means).
//! - Actors on tokio over rml_rtmp's sans-IO sessions: [`publisher`] (one
//!   task per destination) and [`server`] (one task per player).

pub mod flv;
pub mod frame_queue;
mod handshake;
pub mod media;
pub mod packager;
pub mod publisher;
pub mod reconnect;
pub mod server;
mod stop_signal;
mod transport;
pub mod trust;
pub mod url;

pub use frame_queue::PushOutcome;
pub use handshake::HandshakeFailure;
pub use media::{MediaFrame, StreamHeaders, StreamMetadata};
pub use publisher::{PublishError, PublisherConfig, PublisherHandle, PublisherState, PublisherStats, spawn_publisher};
pub use reconnect::ReconnectPolicy;
pub use server::{RtmpServerConfig, RtmpServerHandle, ServerError, StreamFeed, start_server};
pub use transport::TransportError;
pub use trust::{RtmpsTrust, TrustError};
pub use url::{RtmpUrl, UrlError};
