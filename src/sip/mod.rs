//! The SIP adapter: room systems, softphones and PBXs call
//! `sip:ROOM@tutti` and join that composition as a participant like any
//! other.
//!
//! SIP is signalling over the same RTP leg the REST API's callers use: a
//! call becomes an engine `JoinRequest` with the INVITE's SDP offer, and the
//! engine's answer goes back in the 200 OK. Transactions, retransmissions
//! and dialogs are `rsipstack`'s; this adapter decides who may call
//! (`trust`), which composition a call is for (`dispatch`), what a refusal
//! says (`refusal`), and keeps each dialog and its participant together
//! (`calls`), so a BYE removes the participant and a participant removed
//! through the API gets a BYE.

mod calls;
mod dial_out;
mod digest;
mod dispatch;
mod media_control;
mod refusal;
mod server;
mod session_timer;
mod stats;
mod trust;

pub use dispatch::{RouteRule, Rules};
pub use server::{SipServer, start};
pub use stats::SipStats;
