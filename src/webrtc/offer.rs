//! Reading a browser's offer before str0m does: is it a WebRTC offer at all,
//! which m-lines carry audio and video, which codecs we take, and which way
//! media may flow once the peer's [`PeerConfig`] has had its say.
//!
//! ```text
//!  offer SDP ──► plan_offer(sdp, config) ──► OfferPlan { audio, video, sdp }
//!                   │                                          │
//!                   └─► OfferError (a sentence for the API)    └─► str0m accept_offer
//! ```
//!
//! str0m answers each m-line with the inverse of the direction offered, so
//! the plan narrows the offer's directions to what the config allows (a
//! `sendrecv` video from a WHIP publisher becomes `sendonly`), and str0m's
//! answer then says `recvonly`. An answer may narrow an offer this way
//! (RFC 3264 §6.1); the browser sees the same SDP it would get from a server
//! that only receives.

use thiserror::Error;

use super::config::PeerConfig;
use super::media::{Codec, MediaKind, VideoCodec};

/// The H.264 profile we take: Constrained Baseline is `profile_idc` 66 (0x42)
/// with `constraint_set1_flag` (0x40 in the profile-iop byte) set, RFC 6184 §8.1.
const H264_BASELINE_PROFILE_IDC: u8 = 0x42;
const H264_CONSTRAINT_SET1: u8 = 0x40;

/// Why an offer is refused, each a sentence an API client can act on.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OfferError {
    #[error("the offer is not SDP we can read: {0}")]
    Unparsable(String),
    #[error("not a WebRTC offer: it has no ICE credentials (a=ice-ufrag and a=ice-pwd)")]
    NoIceCredentials,
    #[error("not a WebRTC offer: it has no DTLS fingerprint (a=fingerprint)")]
    NoFingerprint,
    #[error("not a WebRTC offer: its {kind} m-line uses {proto}, not UDP/TLS/RTP/SAVPF")]
    NotSecureRtp { kind: MediaKind, proto: String },
    #[error("the offer's {kind} has none of the codecs we take ({wanted}); it offers {}", offered.join(", "))]
    NoCodecWeTake {
        kind: MediaKind,
        wanted: String,
        offered: Vec<String>,
    },
    #[error("nothing to exchange: the offer and this peer's configuration leave no media flowing either way")]
    NothingToExchange,
    #[error("the WebRTC server already has its maximum of {0} peers")]
    TooManyPeers(usize),
    #[error("the WebRTC server has stopped")]
    ServerStopped,
    #[error("the offer was refused: {0}")]
    Refused(String),
}

/// What one audio or video m-line will carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SectionPlan {
    pub mid: String,
    /// The browser sends and the config lets us receive.
    pub we_receive: bool,
    /// The browser receives and the config lets us send.
    pub we_send: bool,
    /// The codecs offered that we take, in the offer's order, each once.
    pub codecs: Vec<Codec>,
}

/// The first audio and video m-lines, and the offer rewritten with the
/// narrowed directions (any further audio or video m-line made inactive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfferPlan {
    pub audio: Option<SectionPlan>,
    pub video: Option<SectionPlan>,
    pub sdp: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn parse(attribute: &str) -> Option<Direction> {
        match attribute {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    /// From the offerer's side: it sends, it receives.
    fn new(sends: bool, receives: bool) -> Direction {
        match (sends, receives) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "a=sendrecv",
            Direction::SendOnly => "a=sendonly",
            Direction::RecvOnly => "a=recvonly",
            Direction::Inactive => "a=inactive",
        }
    }
}

/// One m-line and the lines under it, as indices into the offer's lines.
struct Section<'a> {
    kind: Option<MediaKind>,
    port: &'a str,
    proto: &'a str,
    /// Index of the `m=` line; the section runs to the next `m=` line.
    start: usize,
    end: usize,
}

/// Whether an offer is a browser's: one of its m-lines is DTLS-SRTP with
/// RTCP feedback (`UDP/TLS/RTP/SAVPF`), which no plain RTP caller offers.
pub fn is_webrtc_offer(sdp: &str) -> bool {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("m="))
        .any(|m| m.split_whitespace().nth(2).is_some_and(|proto| proto.eq_ignore_ascii_case("UDP/TLS/RTP/SAVPF")))
}

/// Checks an offer and narrows it to what `config` exchanges.
pub fn plan_offer(sdp: &str, config: &PeerConfig) -> Result<OfferPlan, OfferError> {
    let lines: Vec<&str> = sdp
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
        .collect();
    if lines.first() != Some(&"v=0") {
        return Err(OfferError::Unparsable("it does not start with v=0".into()));
    }
    let sections = sections(&lines)?;
    let session = &lines[..sections.first().map_or(lines.len(), |s| s.start)];
    let attribute = |range: &[&str], name: &str| {
        let prefix = format!("a={name}:");
        range.iter().any(|l| l.starts_with(&prefix) && l.len() > prefix.len())
    };
    let anywhere =
        |name: &str| attribute(session, name) || sections.iter().any(|s| attribute(&lines[s.start..s.end], name));
    if !(anywhere("ice-ufrag") && anywhere("ice-pwd")) {
        return Err(OfferError::NoIceCredentials);
    }
    if !anywhere("fingerprint") {
        return Err(OfferError::NoFingerprint);
    }
    let session_direction = session
        .iter()
        .find_map(|l| l.strip_prefix("a=").and_then(Direction::parse));

    let mut plan = OfferPlan {
        audio: None,
        video: None,
        sdp: String::new(),
    };
    // The direction each section gets in the rewritten offer, by section index.
    let mut directions: Vec<Option<Direction>> = vec![None; sections.len()];
    for (index, section) in sections.iter().enumerate() {
        let Some(kind) = section.kind else { continue };
        if section.port == "0" {
            continue; // rejected already by the offerer
        }
        if !section.proto.contains("SAVPF") {
            return Err(OfferError::NotSecureRtp {
                kind,
                proto: section.proto.to_string(),
            });
        }
        let body = &lines[section.start + 1..section.end];
        let slot = match kind {
            MediaKind::Audio => &mut plan.audio,
            MediaKind::Video => &mut plan.video,
        };
        if slot.is_some() {
            directions[index] = Some(Direction::Inactive); // one of each kind per peer
            continue;
        }
        let offered = body
            .iter()
            .find_map(|l| l.strip_prefix("a=").and_then(Direction::parse));
        let offered = offered.or(session_direction).unwrap_or(Direction::SendRecv);
        let (receive, send) = match kind {
            MediaKind::Audio => (config.receive_audio, config.send_audio),
            MediaKind::Video => (config.receive_video, config.send_video),
        };
        let narrowed = Direction::new(offered.sends() && receive, offered.receives() && send);
        directions[index] = Some(narrowed);
        let mid = body.iter().find_map(|l| l.strip_prefix("a=mid:")).unwrap_or_default();
        let (codecs, names) = codecs_we_take(body, kind, config);
        if narrowed != Direction::Inactive && codecs.is_empty() {
            return Err(OfferError::NoCodecWeTake {
                kind,
                wanted: wanted(kind, config),
                offered: names,
            });
        }
        *slot = Some(SectionPlan {
            mid: mid.to_string(),
            we_receive: narrowed.sends(),
            we_send: narrowed.receives(),
            codecs,
        });
    }
    let flows = |s: &Option<SectionPlan>| s.as_ref().is_some_and(|s| s.we_receive || s.we_send);
    if !flows(&plan.audio) && !flows(&plan.video) {
        return Err(OfferError::NothingToExchange);
    }
    plan.sdp = rewrite(&lines, &sections, &directions);
    Ok(plan)
}

fn sections<'a>(lines: &[&'a str]) -> Result<Vec<Section<'a>>, OfferError> {
    let starts: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].starts_with("m=")).collect();
    if starts.is_empty() {
        return Err(OfferError::Unparsable("it has no m= line".into()));
    }
    let mut sections = Vec::with_capacity(starts.len());
    for (n, &start) in starts.iter().enumerate() {
        let fields: Vec<&str> = lines[start][2..].split_whitespace().collect();
        let [media, port, proto, ..] = fields[..] else {
            return Err(OfferError::Unparsable(format!(
                "the m= line {:?} is short",
                lines[start]
            )));
        };
        let kind = match media {
            "audio" => Some(MediaKind::Audio),
            "video" => Some(MediaKind::Video),
            _ => None,
        };
        let end = starts.get(n + 1).copied().unwrap_or(lines.len());
        sections.push(Section {
            kind,
            port,
            proto,
            start,
            end,
        });
    }
    Ok(sections)
}

/// The codecs of an m-line we take (offer order, each once), and the names of
/// everything it offers, for an error.
fn codecs_we_take(body: &[&str], kind: MediaKind, config: &PeerConfig) -> (Vec<Codec>, Vec<String>) {
    let mut codecs = Vec::new();
    let mut names = Vec::new();
    for line in body {
        let Some(rtpmap) = line.strip_prefix("a=rtpmap:") else {
            continue;
        };
        let Some((pt, encoding)) = rtpmap.split_once(' ') else {
            continue;
        };
        let name = encoding.split('/').next().unwrap_or_default();
        let rate = encoding.split('/').nth(1).unwrap_or_default();
        let fmtp = body
            .iter()
            .find_map(|l| l.strip_prefix(&format!("a=fmtp:{pt} ")[..]))
            .unwrap_or_default();
        let codec = match (kind, name.to_ascii_uppercase().as_str(), rate) {
            (MediaKind::Audio, "OPUS", "48000") => Some(Codec::Opus),
            (MediaKind::Video, "VP8", "90000") if config.video_codecs.contains(&VideoCodec::Vp8) => Some(Codec::Vp8),
            (MediaKind::Video, "H264", "90000")
                if config.video_codecs.contains(&VideoCodec::H264) && is_constrained_baseline_mode_1(fmtp) =>
            {
                Some(Codec::H264)
            }
            _ => None,
        };
        if let Some(codec) = codec.filter(|c| !codecs.contains(c)) {
            codecs.push(codec);
        }
        let label = if name.eq_ignore_ascii_case("H264") && !fmtp.is_empty() {
            format!("{name} ({fmtp})")
        } else {
            name.to_string()
        };
        if !matches!(
            name.to_ascii_lowercase().as_str(),
            "rtx" | "red" | "ulpfec" | "flexfec-03"
        ) && !names.contains(&label)
        {
            names.push(label);
        }
    }
    (codecs, names)
}

/// Whether an H.264 fmtp says packetization-mode 1 and Constrained Baseline.
fn is_constrained_baseline_mode_1(fmtp: &str) -> bool {
    let param = |name: &str| {
        fmtp.split(';').find_map(|p| {
            let (key, value) = p.trim().split_once('=')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    };
    let profile = param("profile-level-id").and_then(|id| u32::from_str_radix(id, 16).ok().filter(|_| id.len() == 6));
    let constrained_baseline = profile.is_some_and(|p| {
        let [_, idc, iop, _level] = p.to_be_bytes();
        idc == H264_BASELINE_PROFILE_IDC && iop & H264_CONSTRAINT_SET1 != 0
    });
    constrained_baseline && param("packetization-mode") == Some("1")
}

fn wanted(kind: MediaKind, config: &PeerConfig) -> String {
    match kind {
        MediaKind::Audio => "Opus".to_string(),
        MediaKind::Video => {
            let names: Vec<&str> = config
                .video_codecs
                .iter()
                .map(|c| match c {
                    VideoCodec::Vp8 => "VP8",
                    VideoCodec::H264 => "H.264 Constrained Baseline with packetization-mode=1",
                })
                .collect();
            names.join(", ")
        }
    }
}

/// The offer's lines with each planned section's direction attribute set.
fn rewrite(lines: &[&str], sections: &[Section], directions: &[Option<Direction>]) -> String {
    let mut out = String::with_capacity(lines.iter().map(|l| l.len() + 2).sum::<usize>() + 32);
    let mut push = |line: &str| {
        out.push_str(line);
        out.push_str("\r\n");
    };
    for line in &lines[..sections[0].start] {
        push(line); // a session-level direction only sets a default; each section now has its own
    }
    for (section, direction) in sections.iter().zip(directions) {
        let body = &lines[section.start..section.end];
        match direction {
            None => body.iter().for_each(|l| push(l)),
            Some(direction) => {
                body.iter()
                    .filter(|l| l.strip_prefix("a=").and_then(Direction::parse).is_none())
                    .for_each(|l| push(l));
                push(direction.attribute());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of Chromium's offer for one audio and one video transceiver,
    /// trimmed to what the plan reads.
    fn chromium_offer(audio_direction: &str, video_direction: &str) -> String {
        format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghijkl\r\n\
             a=fingerprint:sha-256 AA:BB\r\na=setup:actpass\r\na=mid:0\r\na={audio_direction}\r\n\
             a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:63 red/48000/2\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96 97 45 102 103 106\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghijkl\r\n\
             a=fingerprint:sha-256 AA:BB\r\na=setup:actpass\r\na=mid:1\r\na={video_direction}\r\n\
             a=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\na=rtpmap:45 AV1/90000\r\n\
             a=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n\
             a=rtpmap:106 H264/90000\r\na=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
             a=rtpmap:103 H264/90000\r\na=fmtp:103 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r\n"
        )
    }

    fn direction_of(sdp: &str, mid: &str) -> Vec<String> {
        let section = sdp
            .split("m=")
            .find(|s| s.contains(&format!("a=mid:{mid}\r\n")))
            .expect("the section");
        section
            .lines()
            .filter(|l| Direction::parse(l.trim_start_matches("a=")).is_some())
            .map(String::from)
            .collect()
    }

    #[test]
    fn a_guest_exchanges_both_kinds_both_ways_with_opus_vp8_and_constrained_baseline_h264() {
        let plan = plan_offer(&chromium_offer("sendrecv", "sendrecv"), &PeerConfig::guest()).unwrap();
        let audio = plan.audio.unwrap();
        let video = plan.video.unwrap();
        assert_eq!((audio.mid.as_str(), audio.we_receive, audio.we_send), ("0", true, true));
        assert_eq!(audio.codecs, vec![Codec::Opus]);
        assert_eq!((video.mid.as_str(), video.we_receive, video.we_send), ("1", true, true));
        // 42001f is plain Baseline and 103 packetization-mode 0: only 106 counts as H.264.
        assert_eq!(video.codecs, vec![Codec::Vp8, Codec::H264]);
        assert_eq!(direction_of(&plan.sdp, "1"), vec!["a=sendrecv"]);
    }

    #[test]
    fn a_publisher_narrows_the_browsers_sendrecv_to_sendonly_so_we_answer_recvonly() {
        let plan = plan_offer(&chromium_offer("sendrecv", "sendrecv"), &PeerConfig::publisher()).unwrap();
        assert_eq!(direction_of(&plan.sdp, "0"), vec!["a=sendonly"]);
        assert_eq!(direction_of(&plan.sdp, "1"), vec!["a=sendonly"]);
        let video = plan.video.unwrap();
        assert!(video.we_receive && !video.we_send);
    }

    #[test]
    fn a_viewer_offered_recvonly_sends_and_receives_nothing() {
        let plan = plan_offer(&chromium_offer("recvonly", "recvonly"), &PeerConfig::viewer()).unwrap();
        let video = plan.video.unwrap();
        assert!(!video.we_receive && video.we_send);
        assert_eq!(direction_of(&plan.sdp, "1"), vec!["a=recvonly"]);
    }

    #[test]
    fn a_viewer_offered_sendonly_has_nothing_to_exchange() {
        let error = plan_offer(&chromium_offer("sendonly", "sendonly"), &PeerConfig::viewer()).unwrap_err();
        assert_eq!(error, OfferError::NothingToExchange);
    }

    #[test]
    fn h264_only_config_takes_only_the_constrained_baseline_payload() {
        let config = PeerConfig::guest().with_video_codecs(&[VideoCodec::H264]);
        let plan = plan_offer(&chromium_offer("sendrecv", "sendrecv"), &config).unwrap();
        assert_eq!(plan.video.unwrap().codecs, vec![Codec::H264]);
    }

    #[test]
    fn an_offer_with_only_codecs_we_do_not_take_is_refused_naming_them() {
        let offer = chromium_offer("sendrecv", "sendrecv")
            .replace("VP8/90000", "VP9/90000")
            .replace("42e01f", "64001f");
        let error = plan_offer(&offer, &PeerConfig::guest()).unwrap_err();
        let OfferError::NoCodecWeTake { kind, offered, .. } = &error else {
            panic!("{error:?}")
        };
        assert_eq!(*kind, MediaKind::Video);
        assert!(
            offered.iter().any(|c| c == "VP9") && offered.iter().any(|c| c == "AV1"),
            "{offered:?}"
        );
        assert!(
            error
                .to_string()
                .starts_with("the offer's video has none of the codecs we take (VP8, H.264"),
            "{error}"
        );
    }

    #[test]
    fn an_offer_without_ice_credentials_or_fingerprint_is_not_webrtc() {
        let offer = chromium_offer("sendrecv", "sendrecv");
        let no_pwd = offer.replace("a=ice-pwd:0123456789abcdefghijkl\r\n", "");
        assert_eq!(
            plan_offer(&no_pwd, &PeerConfig::guest()),
            Err(OfferError::NoIceCredentials)
        );
        let no_fingerprint = offer.replace("a=fingerprint:sha-256 AA:BB\r\n", "");
        assert_eq!(
            plan_offer(&no_fingerprint, &PeerConfig::guest()),
            Err(OfferError::NoFingerprint)
        );
    }

    #[test]
    fn a_plain_rtp_offer_is_not_webrtc() {
        let offer = chromium_offer("sendrecv", "sendrecv").replace("UDP/TLS/RTP/SAVPF", "RTP/AVP");
        let error = plan_offer(&offer, &PeerConfig::guest()).unwrap_err();
        assert!(
            matches!(
                error,
                OfferError::NotSecureRtp {
                    kind: MediaKind::Audio,
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn text_that_is_not_sdp_is_unparsable() {
        for text in ["", "hello", "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n", "v=0\r\nm=audio\r\n"] {
            assert!(
                matches!(plan_offer(text, &PeerConfig::guest()), Err(OfferError::Unparsable(_))),
                "{text:?}"
            );
        }
    }

    #[test]
    fn a_second_video_m_line_is_made_inactive() {
        let offer = chromium_offer("sendrecv", "sendrecv");
        let video = &offer[offer.find("m=video").unwrap()..];
        let offer = format!("{offer}{}", video.replace("a=mid:1", "a=mid:2"));
        let plan = plan_offer(&offer, &PeerConfig::guest()).unwrap();
        assert_eq!(plan.video.unwrap().mid, "1");
        assert_eq!(direction_of(&plan.sdp, "2"), vec!["a=inactive"]);
    }

    #[test]
    fn a_session_level_direction_applies_to_sections_without_their_own() {
        let offer = chromium_offer("sendrecv", "sendrecv")
            .replace("a=sendrecv\r\n", "")
            .replace("t=0 0\r\n", "t=0 0\r\na=recvonly\r\n");
        let plan = plan_offer(&offer, &PeerConfig::guest()).unwrap();
        let audio = plan.audio.unwrap();
        assert!(!audio.we_receive && audio.we_send);
    }
}
