//! SRTP on a caller's rtpbin: one srtpdec and one srtpenc per encrypted
//! session, between the sockets and the RTP session:
//!
//! ```text
//!  udpsrc (SRTP) ─► source check ─► rtpbin[ srtpdec ─► session ─► jitter buffer ] ─► …
//!  … ─► pay ─► rtpbin[ session ] ─► srtpenc ─► udpsink (SRTP)
//! ```
//! srtpdec is handed to rtpbin through its `request-rtp(c)p-decoder`
//! signals. srtpenc cannot go the same way: rtpbin 1.22 looks for the
//! encoder's `rtp_src_N` before it requests `rtp_sink_N`, and srtpenc only
//! makes a source pad when its sink pad is requested; so it is linked after
//! rtpbin's send pads instead. A plain caller's rtpbin gets no handler and
//! no element. Packets that fail authentication (a stranger, plain RTP,
//! garbage that passed the source check, a replay) are dropped by srtpdec,
//! which counts them.

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::{MediaError, make};
use crate::model::sdp::crypto::{SrtpKeys, SrtpSuite};

/// The only cipher of the suites Tutti speaks (AES in counter mode).
const CIPHER: &str = "aes-128-icm";
/// SRTCP authenticates with 80 bits whatever the suite (RFC 4568 6.2.2).
const RTCP_AUTH: &str = "hmac-sha1-80";
/// SSRCs srtpdec is given the caller's key for, per medium. srtpdec keeps
/// a libsrtp stream (≈ 4.5 KB) for every SSRC it keys, whether or not its
/// packets authenticate: without a bound, a flood of random SSRCs from
/// whoever holds the source check's latch grew memory by ≈ 6 KB a packet.
/// A caller uses one SSRC at a time and a few over a call.
const MAX_KEYED_SSRCS: usize = 64;

fn rtp_auth(suite: SrtpSuite) -> &'static str {
    match suite.rtp_auth_tag_bits() {
        32 => "hmac-sha1-32",
        _ => "hmac-sha1-80",
    }
}

/// The SRTP elements of one session of a caller's rtpbin.
pub struct SrtpSession {
    decoder: gst::Element,
    encoder: gst::Element,
    /// Packets of SSRCs beyond MAX_KEYED_SSRCS, which srtpdec drops
    /// without counting.
    unkeyed: Arc<AtomicU64>,
    pub suite: SrtpSuite,
}

impl SrtpSession {
    /// Builds the decoder (with the caller's key) and the encoder (with
    /// Tutti's, added to `bin`) for one negotiated m-line.
    pub fn build(keys: &SrtpKeys, bin: &gst::Bin, prefix: &str) -> Result<SrtpSession, MediaError> {
        let decoder = make("srtpdec", &format!("{prefix}srtpdec"))?;
        let receive = gst::Caps::builder("application/x-srtp")
            .field("srtp-key", gst::Buffer::from_slice(keys.receive.bytes().to_vec()))
            .field("srtp-cipher", CIPHER)
            .field("srtp-auth", rtp_auth(keys.suite))
            .field("srtcp-cipher", CIPHER)
            .field("srtcp-auth", RTCP_AUTH)
            .build();
        // The same key for every SSRC the caller uses (SDES keys the m-line),
        // up to MAX_KEYED_SSRCS; packets of any further SSRC are dropped.
        // srtpdec asks again at each packet of an SSRC it has no key for.
        let keyed = AtomicUsize::new(0);
        let unkeyed = Arc::new(AtomicU64::new(0));
        let refused = unkeyed.clone();
        decoder.connect("request-key", false, move |_| {
            let within = keyed.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < MAX_KEYED_SSRCS).then_some(n + 1)).is_ok();
            if !within {
                refused.fetch_add(1, Ordering::Relaxed);
            }
            Some(within.then(|| receive.clone()).to_value())
        });

        let encoder = make("srtpenc", &format!("{prefix}srtpenc"))?;
        encoder.set_property("key", gst::Buffer::from_slice(keys.send.bytes().to_vec()));
        encoder.set_property_from_str("rtp-cipher", CIPHER);
        encoder.set_property_from_str("rtp-auth", rtp_auth(keys.suite));
        encoder.set_property_from_str("rtcp-cipher", CIPHER);
        encoder.set_property_from_str("rtcp-auth", RTCP_AUTH);
        bin.add(&encoder)?;
        Ok(SrtpSession { decoder, encoder, unkeyed, suite: keys.suite })
    }

    /// Encrypts what leaves `plain` (rtpbin's `send_rtp_src_N` for `Packets::Rtp`,
    /// `send_rtcp_src_N` for `Packets::Rtcp`); returns the pad the SRTP comes out of.
    pub fn encrypt(&self, plain: &gst::Pad, packets: Packets, session: u32) -> Result<gst::Pad, MediaError> {
        let kind = match packets {
            Packets::Rtp => "rtp",
            Packets::Rtcp => "rtcp",
        };
        let sink = self
            .encoder
            .request_pad_simple(&format!("{kind}_sink_{session}"))
            .ok_or_else(|| MediaError::Gst(format!("srtpenc refused {kind}_sink_{session}")))?;
        plain.link(&sink)?;
        self.encoder
            .static_pad(&format!("{kind}_src_{session}"))
            .ok_or_else(|| MediaError::Gst(format!("srtpenc made no {kind}_src_{session}")))
    }

    /// SRTP and SRTCP packets dropped: failed authentication or replay, or
    /// of an SSRC beyond the bound.
    /// Where the caller's RTP comes out decrypted (inside rtpbin, before its jitter buffer).
    pub fn decrypted_rtp(&self) -> gst::Pad {
        self.decoder.static_pad("rtp_src").expect("srtpdec has an rtp_src pad")
    }

    pub fn dropped_packets(&self) -> u64 {
        let stats: Option<gst::Structure> = self.decoder.property("stats");
        let failed = stats.and_then(|s| s.get::<u32>("recv-drop-count").ok()).map_or(0, u64::from);
        failed + self.unkeyed.load(Ordering::Relaxed)
    }
}

/// Which packets a pad carries.
#[derive(Clone, Copy)]
pub enum Packets {
    Rtp,
    Rtcp,
}

/// Hands rtpbin the SRTP decoder of each encrypted session (indexed by
/// session number); must be called before any of its pads is requested.
pub fn attach_decoders(rtpbin: &gst::Element, sessions: [Option<&SrtpSession>; 2]) {
    // Weak: rtpbin owns these handlers and, once asked, the decoders too.
    let decoders = sessions.map(|s| s.map(|s| s.decoder.downgrade()));
    for signal in ["request-rtp-decoder", "request-rtcp-decoder"] {
        let decoders = decoders.clone();
        rtpbin.connect(signal, false, move |args| {
            let session = args.get(1).and_then(|v| v.get::<u32>().ok());
            let element = session
                .and_then(|s| decoders.get(s as usize))
                .and_then(|e| e.as_ref())
                .and_then(glib::WeakRef::upgrade);
            // NULL (no element) for a plain session of a mixed call.
            Some(element.to_value())
        });
    }
}
