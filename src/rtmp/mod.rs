//! RTMP: live outputs to ingest servers (YouTube, Twitch, Facebook, nginx-rtmp),
//! and an embedded server that local players play from and publishers (OBS,
//! ffmpeg) send to.
//!
//! The media adapter hands over one encode as plain values ([`StreamHeaders`],
//! [`MediaFrame`]) and takes what publishers send the same way
//! ([`IngestEvent`]); nothing here touches GStreamer.
//!
//! - Pure cores, tested in memory: [`flv`] (tag bodies written and read,
//!   `onMetaData`), [`ingest`] (stream keys, which publisher owns one),
//!   [`url`] (destination URLs, masked keys), [`packager`] (what a session
//!   sends, frame by frame), [`reconnect`] (backoff, giving up),
//!   [`frame_queue`] (dropping whole GOPs when full).
//! - Built once at start-up: [`trust`] (the CAs `rtmps://` servers are
//!   checked against; what a rejected certificate means).
//! - Actors on tokio over rml_rtmp's sans-IO sessions: [`publisher`] (one
//!   task per destination) and [`server`] (one task per player or publisher).

pub mod flv;
pub mod frame_queue;
mod handshake;
pub mod ingest;
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
pub use ingest::{IngestEvent, IngestRegistration, IngestSink};
pub use media::{MediaFrame, StreamHeaders, StreamMetadata};
pub use publisher::{PublishError, PublisherConfig, PublisherHandle, PublisherState, PublisherStats, spawn_publisher};
pub use reconnect::ReconnectPolicy;
pub use server::{RtmpServerConfig, RtmpServerHandle, ServerError, StreamFeed, start_server};
pub use transport::TransportError;
pub use trust::{RtmpsTrust, TrustError};
pub use url::{RtmpUrl, UrlError, mask_stream_key};
