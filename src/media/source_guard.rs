//! The RTP source check ([`crate::model::source_check`]) on a caller's
//! sockets: a pad probe on each of its `udpsrc`s decides on every datagram
//! before rtpbin sees it, drops what is not the caller's, and counts both.
//!
//! ```text
//!  udpsrc (RTP) ──probe: check, count, drop──► rtpbin recv_rtp_sink
//!          └─ under rtcp-mux: RTCP ─► appsrc ─► rtpbin recv_rtcp_sink
//!  udpsrc (RTCP) ─probe: check, count, drop──► rtpbin recv_rtcp_sink
//! ```
//!
//! It runs once per packet in the socket's streaming thread: a mutex that
//! only that medium's two sockets ever take, a header read, no allocation
//! besides reading the sender's address.

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_net::NetAddressMeta;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::flow::FlowCounter;
use crate::model::source_check::{Channel, SourceCheck, Verdict};

/// One medium's check and what it decided.
#[derive(Debug)]
pub struct ReceiveGuard {
    check: Mutex<SourceCheck>,
    /// RTP packets taken as the caller's: what `packets_received` shows.
    /// Counted here, where they are accepted, so it only ever grows.
    pub accepted: FlowCounter,
    /// Their bytes, RTP headers included.
    pub accepted_bytes: FlowCounter,
    /// Datagrams dropped by the check, RTP and RTCP.
    pub rejected: FlowCounter,
}

impl ReceiveGuard {
    pub fn new(check: SourceCheck) -> Self {
        ReceiveGuard {
            check: Mutex::new(check),
            accepted: FlowCounter::default(),
            accepted_bytes: FlowCounter::default(),
            rejected: FlowCounter::default(),
        }
    }

    /// Starts checking afresh against a new announced address (a re-offer moved the caller).
    pub fn follow(&self, check: SourceCheck) {
        *self.check.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = check;
    }

    fn decide(&self, channel: Channel, from: Option<SocketAddr>, packet: &[u8]) -> Verdict {
        // A poisoned lock means a panic in `check`, which holds no invariant across calls.
        let mut check = self.check.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        check.check(channel, from, packet, Instant::now())
    }
}

/// What happens to what the check takes on one socket.
pub struct Routing {
    pub channel: Channel,
    /// Whether RTP goes on to rtpbin (no, if the caller was negotiated not to send us media).
    pub keep_rtp: bool,
    /// Under rtcp-mux: where RTCP goes instead (rtpbin's RTCP input).
    pub rtcp_to: Option<gstreamer_app::AppSrc>,
}

/// Puts `guard` on `udpsrc`'s output. udpsrc pushes one buffer per
/// datagram, never a buffer list, so a buffer probe sees every packet.
pub fn guard_socket(udpsrc: &gst::Element, guard: Arc<ReceiveGuard>, routing: Routing) {
    let pad = udpsrc.static_pad("src").expect("udpsrc has a src pad");
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(buffer) = info.buffer() else { return gst::PadProbeReturn::Ok };
        let from = buffer.meta::<NetAddressMeta>().and_then(|meta| {
            meta.addr().downcast::<gio::InetSocketAddress>().ok().map(SocketAddr::from)
        });
        let Ok(map) = buffer.map_readable() else { return gst::PadProbeReturn::Drop };
        let verdict = guard.decide(routing.channel, from, &map);
        drop(map);
        match verdict {
            Verdict::Rtp if routing.keep_rtp => {
                guard.accepted.add(1);
                guard.accepted_bytes.add(buffer.size() as u64);
                gst::PadProbeReturn::Ok
            }
            Verdict::Rtp => gst::PadProbeReturn::Drop,
            Verdict::Rtcp => match &routing.rtcp_to {
                Some(appsrc) => {
                    let _ = appsrc.push_buffer(buffer.copy());
                    gst::PadProbeReturn::Drop
                }
                None => gst::PadProbeReturn::Ok,
            },
            Verdict::Reject(_) => {
                guard.rejected.add(1);
                gst::PadProbeReturn::Drop
            }
        }
    });
}
