//! Integration-test harness for Tutti.
//!
//! - [`Server`]: `tutti serve` on free ports, its REST API, its log on failure.
//! - [`Caller`]: a legacy RTP endpoint described by a [`CallerSpec`]: an SDP offer, a
//!   gst-launch sender (solid colour + sine tone) and an ffmpeg recorder of what comes back.
//! - [`Baresip`]: a real softphone (Debian's baresip) that dials in over SIP with a tone
//!   and a solid colour, and records what it hears and sees.
//! - [`EventStream`]: `GET /v1/events` read as Server-Sent Events.
//! - [`Browser`]: headless Chromium driven over WebDriver.
//! - [`in_loopback_netns`]: a test body run in a network namespace with only loopback.
//! - [`Nginx`]: nginx-rtmp on a free port, optionally behind TLS fronts
//!   presenting certificates of a [`TestCa`] made at run time.
//! - [`video_frames`], [`audio_samples`] and friends: judge a recording by its decoded pixels
//!   and tones, with every frame and sample placed on the system clock.
//!
//! Everything is bounded: each wait has a timeout and each child process dies with its owner.
//!
//! A typical test:
//!
//! ```ignore
//! let server = Server::start()?;
//! let id = server.create_composition(&json!({"video": {"width": 640, "height": 360, "fps": 30}}))?;
//! let mut alice = Caller::new(CallerSpec::new("alice", Colour::Red, 500.0))?;
//! let mut bob = Caller::new(CallerSpec { audio: Some(AudioCodec::Pcmu), ..CallerSpec::new("bob", Colour::Blue, 700.0) })?;
//! alice.join(&server, &id)?; // recorder, POST offer, sender
//! bob.join(&server, &id)?;
//! let joined = SystemTime::now();
//! thread::sleep(Duration::from_secs(3));
//! let frames = video_frames(&alice.stop_receiver()?)?;
//! // ... frames[i].colour(Rect::cell(2, 1, 1, 0).centre(0.5)) == Some(Colour::Blue),
//! // fps_between(&frames, t0, t1) >= 29.0, audio.tone_levels_db(t0, t1, &[500.0, 700.0])?
//! ```
//!
//! Keep tone frequencies 100+ Hz apart and not harmonics of each other (500, 700, 1100, 1300).

mod analysis;
mod baresip;
mod browser;
mod caller;
mod events;
mod net;
mod netns;
mod nginx;
mod pki;
mod process;
mod publisher;
mod server;
mod sipp;
pub mod turns;
mod webrtc_offer;

pub use analysis::*;
pub use baresip::{Baresip, BaresipSpec};
pub use browser::Browser;
pub use caller::*;
pub use events::{EventStream, event_time, event_types, is};
pub use net::{MediaPort, RtpArrival, bind_rtp_pair, free_sip_port, free_tcp_port, is_rtcp, tcp_connected_to};
#[allow(unused_imports)] // see netns.rs
pub use netns::{Netns, in_loopback_netns};
pub use nginx::{INSTALL_HINT, Nginx};
pub use pki::{CertificateFiles, SERVER_NAMES, TestCa, Validity};
pub use process::{ChildProcess, cpu_seconds, run_bounded, wait_until};
pub use publisher::{
    PublisherParticipant, PublisherSpec, Seen, add_publisher_participant, hears_publisher_not_itself, judge_publisher_beside_red_caller, publisher,
};
pub use server::*;
pub use sipp::{Dialog, Sipp, SippRun, pcmu_offer};
pub use webrtc_offer::webrtc_offer;
