//! The integration suite, one test binary: `cargo test --test integration
//! [module::]` runs it (or one file of it). One binary rather than a crate
//! per file, because linking each file against the harness and Tutti's
//! library took two minutes of every clean build.

mod common;

mod active_speaker;
mod api_errors;
mod audio_controls;
mod audio_only;
mod auth;
mod churn;
mod conference;
mod events;
mod harness_selfcheck;
mod hostile_packets;
mod join_leave_race;
mod joins;
mod keyframes;
mod labels;
mod layouts;
mod limits;
mod outputs;
mod relayout_storm;
mod room_systems;
mod rtmp_ingest;
mod rtmp_outputs;
mod rtmps_outputs;
mod rtp_bleed;
mod runs_anywhere;
mod sdp_negotiation;
mod shutdown;
mod sip_baresip;
mod sip_callflow;
mod sip_churn;
mod sip_pin;
mod sip_signalling;
mod speaker_layout;
mod srt_ingest;
mod srtp;
mod watchdogs;
mod web_page;
