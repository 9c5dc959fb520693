//! From a checked offer to a str0m instance and its answer: ICE-lite with one
//! host candidate, our ICE credentials, only the codecs the peer takes.
//!
//! ```text
//!  OfferPlan ─► RtcConfig (ICE-lite, Opus + VP8/H.264, BWE if we send video)
//!                 └─► Rtc + host candidate ─► accept_offer ─► answer SDP
//!                                                  └─► Tracks: mid, directions, the codec we send
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;
use rand::distr::Alphanumeric;
use str0m::bwe::Bitrate;
use str0m::change::SdpOffer;
use str0m::format::{Codec as Str0mCodec, FormatParams};
use str0m::media::{Frequency, Mid};
use str0m::{Candidate, IceCreds, Rtc, RtcConfig};

use super::config::PeerConfig;
use super::media::{Codec, MediaKind, VideoCodec};
use super::offer::{OfferError, OfferPlan, SectionPlan};
use super::session::{Sending, Track, our_codec};

/// Where str0m's bandwidth estimate starts for video we send when the
/// peer's config names no bitrate: what a 640x360 VP8 or H.264 picture at
/// 30 fps needs, so probing grows from a usable rate. With a bitrate, it
/// starts there: str0m paces media at 1.1 times its estimate, and one
/// ramping up from below what is sent would hold the picture back for the
/// first seconds.
const INITIAL_BWE_KBPS: u64 = 1_000;
/// What str0m's estimator probes towards when the peer's config names no
/// bitrate: a 1280x720 composite at 30 fps in VP8 or H.264 looks good at
/// about 2.5 Mbit/s.
const DESIRED_BWE_KBPS: u64 = 2_500;
/// How far above the picture's bitrate the estimator probes: room for the
/// sound and headers, and proof that a guest moved to a lower bitrate
/// (`model::ladder`) may step back up.
const DESIRED_BWE_SHARE: f64 = 1.5;
/// How often str0m reports counters (packets, bytes, NACKs) per m-line.
const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// ICE ufrag and password lengths: RFC 8445 §5.3 asks for at least 4
/// characters and 128 bits (22 characters of ice-char); more costs nothing.
const UFRAG_CHARS: usize = 8;
const PASSWORD_CHARS: usize = 24;
/// The payload types we offer H.264 and its RTX on when the browser does not
/// name them first; str0m answers with the browser's own numbers.
const H264_PT: u8 = 108;
const H264_RTX_PT: u8 = 109;
/// Constrained Baseline, level 3.1.
const H264_PROFILE_LEVEL_ID: u32 = 0x42e01f;
/// Opus where str0m and browsers put it; str0m answers with the browser's number.
const OPUS_PT: u8 = 111;

/// A negotiated peer, before the socket task takes it.
pub(crate) struct Negotiated {
    pub rtc: Rtc,
    pub answer: String,
    pub local_ufrag: String,
    pub tracks: Vec<Track>,
}

pub(crate) fn negotiate(
    plan: &OfferPlan,
    config: &PeerConfig,
    candidate: SocketAddr,
    now: Instant,
) -> Result<Negotiated, OfferError> {
    let creds = IceCreds {
        ufrag: random_chars(UFRAG_CHARS),
        pass: random_chars(PASSWORD_CHARS),
    };
    let local_ufrag = creds.ufrag.clone();
    let mut rtc_config = RtcConfig::new()
        .set_ice_lite(true)
        .set_local_ice_credentials(creds)
        .set_stats_interval(Some(STATS_INTERVAL))
        .clear_codecs();
    if plan.audio.is_some() {
        // As for RTP callers (`model::sdp::OPUS_RECEIVE_FMTP`): in-band FEC,
        // and DTX, which a browser uses only when the answer asks for it.
        let opus = FormatParams { min_p_time: Some(10), use_inband_fec: Some(true), use_dtx: Some(true), ..Default::default() };
        rtc_config.codec_config().add_config(OPUS_PT.into(), None, Str0mCodec::Opus, Frequency::FORTY_EIGHT_KHZ, Some(2), opus);
    }
    for codec in &config.video_codecs {
        match codec {
            VideoCodec::Vp8 => rtc_config = rtc_config.enable_vp8(true),
            VideoCodec::H264 => rtc_config.codec_config().add_h264(
                H264_PT.into(),
                Some(H264_RTX_PT.into()),
                true,
                H264_PROFILE_LEVEL_ID,
            ),
        }
    }
    if plan.video.as_ref().is_some_and(|v| v.we_send) {
        let initial_kbps = config.video_bitrate_kbps.map_or(INITIAL_BWE_KBPS, u64::from);
        rtc_config = rtc_config.enable_bwe(Some(Bitrate::kbps(initial_kbps)));
    }
    let sends_video = plan.video.as_ref().is_some_and(|v| v.we_send);
    let mut rtc = rtc_config.build(now);
    if sends_video {
        // Probe for what a good picture needs rather than sit at the start value.
        let desired_kbps = config.video_bitrate_kbps.map_or(DESIRED_BWE_KBPS, |kbps| (f64::from(kbps) * DESIRED_BWE_SHARE) as u64);
        rtc.bwe().set_bitrate(Bitrate::ZERO, Bitrate::kbps(desired_kbps));
    }
    let host = Candidate::host(candidate, "udp").map_err(|e| OfferError::Refused(format!("our ICE candidate: {e}")))?;
    rtc.add_local_candidate(host);
    let offer = SdpOffer::from_sdp_string(&plan.sdp).map_err(|e| OfferError::Unparsable(e.to_string()))?;
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| OfferError::Refused(e.to_string()))?;

    let mut tracks = Vec::new();
    for (kind, section) in [(MediaKind::Audio, &plan.audio), (MediaKind::Video, &plan.video)] {
        let Some(section) = section else { continue };
        tracks.push(track(&rtc, kind, section)?);
    }
    Ok(Negotiated {
        rtc,
        answer: answer.to_sdp_string(),
        local_ufrag,
        tracks,
    })
}

/// The negotiated m-line of a planned section, and the codec we send on it:
/// the first of our configured codecs (our order of preference) the browser
/// also listed.
fn track(rtc: &Rtc, kind: MediaKind, section: &SectionPlan) -> Result<Track, OfferError> {
    let mid = Mid::from(section.mid.as_str());
    let media = rtc
        .media(mid)
        .ok_or_else(|| OfferError::Refused(format!("str0m has no m-line {}", section.mid)))?;
    let negotiated = media.remote_pts();
    let send = section.we_send.then(|| {
        rtc.codec_config()
            .params()
            .iter()
            .filter(|p| negotiated.contains(&p.pt()))
            .find_map(|p| {
                our_codec(p.spec().codec)
                    .filter(|c| c.kind() == kind)
                    .map(|codec| Sending {
                        pt: p.pt(),
                        codec,
                        clock_rate: p.spec().clock_rate.get(),
                    })
            })
    });
    let send = match send {
        Some(None) => {
            return Err(OfferError::Refused(format!("no {kind} codec we send was negotiated")));
        }
        Some(found) => found,
        None => None,
    };
    Ok(Track {
        mid,
        kind,
        receive: section.we_receive,
        send,
        clock: None,
        awaiting_keyframe: kind == MediaKind::Video,
    })
}

pub(crate) fn video_codec(tracks: &[Track]) -> Option<VideoCodec> {
    tracks.iter().find_map(|t| match t.send?.codec {
        Codec::Vp8 => Some(VideoCodec::Vp8),
        Codec::H264 => Some(VideoCodec::H264),
        Codec::Opus => None,
    })
}

fn random_chars(n: usize) -> String {
    rand::rng().sample_iter(Alphanumeric).take(n).map(char::from).collect()
}
