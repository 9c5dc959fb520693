//! Tutti: an MCU and live-stream transcoder on GStreamer.
//!
//! Three rings (see `STYLE.md` of the project):
//! - [`model`]: pure logic (codecs, layout, SDP negotiation, configuration);
//! - [`engine`]: the one actor that owns every composition;
//! - adapters at the edges: [`api`] (HTTP), [`media`] (GStreamer), [`ports`] (UDP sockets),
//!   [`rtmp`] and [`webrtc`] (browsers, over str0m).

pub mod api;
pub mod auth;
pub mod config;
pub mod engine;
pub mod events;
pub mod guards;
pub mod idempotency;
pub mod limits;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod model;
pub mod ports;
pub mod rtmp;
pub mod sip;
pub mod srt;
pub mod web;
pub mod webrtc;

/// The configuration every property test shares: thousands of cases (proptest's
/// default 256 rarely reaches the odd branches of a parser), `PROPTEST_CASES`
/// to run more, and no regression files: each failure found becomes a plain
/// unit test named for the behaviour.
#[cfg(test)]
pub(crate) fn proptest_config() -> proptest::test_runner::Config {
    const CASES: u32 = 4096;
    let cases = match std::env::var("PROPTEST_CASES") {
        Ok(cases) => cases.parse().expect("PROPTEST_CASES is a number"),
        Err(_) => CASES,
    };
    proptest::test_runner::Config { cases, failure_persistence: None, ..proptest::test_runner::Config::default() }
}
