//! SDP offer/answer (RFC 3264) for plain RTP endpoints.
//!
//! Parsing and writing go through the `sdp-types` crate; this module only
//! decides: which m-lines Tutti accepts (one audio, and one video: the one
//! marked `a=content:main` when room systems also offer slides), which
//! single codec each accepted m-line uses (the first in the offerer's order
//! that Tutti supports, with the offerer's payload type number; H.264
//! packetization mode 1 before mode 0), what an H.264 caller can decode,
//! whether its `telephone-event` is kept, where media and RTCP go, which
//! direction each side sends in, and whether media is SRTP (keys in
//! [`crypto`]). Everything else room systems offer (BFCP, slides, FECC) is
//! declined with port 0.

pub mod crypto;

use super::codec::{AudioCodec, Codec, MediaKind, VideoCodec, supported_codecs_description};
use super::h264::{DecodeLimit, FrameSize, answered_level};
use crypto::{MasterKey, MediaEncryption, SrtpKeys};
use sdp_types::{Attribute, Connection, Media, Origin, RtpMap, Session, Time};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// What Tutti, as a receiver of Opus, asks of a sender (RFC 7587): in-band
/// FEC, and DTX: a caller who is silent (most of a large room, most of the
/// time) sends a packet every 400 ms instead of 50 a second, and Tutti
/// receives and decodes only what arrives.
pub(crate) const OPUS_RECEIVE_FMTP: &str = "minptime=10;useinbandfec=1;usedtx=1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SdpError {
    /// The text is not a usable SDP offer (HTTP 400).
    #[error("malformed SDP: {0}")]
    Malformed(String),
    /// Nothing in the offer can be accepted (HTTP 415).
    #[error("no media in common: {reason}; Tutti supports {supported}")]
    NothingInCommon { reason: String, supported: String },
}

/// Which way media flows, from Tutti's point of view once negotiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn from_attribute(name: &str) -> Option<Direction> {
        match name {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    pub fn as_attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The answerer's direction for an offered one (RFC 3264 6.1).
    fn reversed(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            other => other,
        }
    }

    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// One accepted m-line: everything the media adapter needs to send and receive it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NegotiatedMedia {
    pub codec: Codec,
    pub payload_type: u8,
    /// Where Tutti sends RTP.
    pub remote_rtp: SocketAddr,
    /// Where Tutti sends RTCP (equal to `remote_rtp` under rtcp-mux).
    pub remote_rtcp: SocketAddr,
    pub rtcp_mux: bool,
    /// Tutti's side of the direction, as written in the answer.
    pub direction: Direction,
    /// RTCP feedback the offerer declared for this payload type
    /// (e.g. "nack pli", "ccm fir"); echoed in the answer.
    pub feedback: Vec<String>,
    pub avpf: bool,
    /// H.264 only: what the caller says it can decode (`None`: no stated
    /// limit, it gets the whole canvas).
    pub decode_limit: Option<DecodeLimit>,
    /// Audio only: the offered RFC 4733 events at the codec's clock rate,
    /// kept in the answer.
    pub telephone_event: Option<TelephoneEvent>,
    /// `Some` on an SRTP (`RTP/SAVP(F)`) m-line: the keys each way.
    pub srtp: Option<SrtpKeys>,
    mline: usize,
}

/// An RFC 4733 `telephone-event` payload (DTMF) the caller offered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TelephoneEvent {
    pub payload_type: u8,
    /// Its fmtp as offered (the events it carries, e.g. `0-15`), echoed.
    pub events: Option<String>,
}

impl NegotiatedMedia {
    pub fn kind(&self) -> MediaKind {
        self.codec.kind()
    }

    /// The composite's size for this caller: `None` for the whole canvas,
    /// else the largest picture its decoder takes (see [`DecodeLimit::fit`]).
    pub fn return_size(&self, canvas: Canvas) -> Option<FrameSize> {
        self.decode_limit?.fit(canvas.width, canvas.height, canvas.fps)
    }
}

/// The result of negotiating an offer: at most one audio and one video
/// stream, plus what is needed to write an answer with as many m-lines as
/// the offer had.
#[derive(Clone, Debug)]
pub struct Negotiation {
    pub audio: Option<NegotiatedMedia>,
    pub video: Option<NegotiatedMedia>,
    offered: Vec<OfferedMline>,
}

#[derive(Clone, Debug)]
struct OfferedMline {
    media: String,
    proto: String,
    first_fmt: String,
}

/// Tutti's side of the transport, known once ports are allocated.
#[derive(Clone, Copy, Debug)]
pub struct LocalTransport {
    pub address: IpAddr,
    pub audio_port: Option<u16>,
    pub video_port: Option<u16>,
}

/// What the answer needs to know of the composite it will carry.
#[derive(Clone, Copy, Debug)]
pub struct Canvas {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

/// Negotiates an offer; `encryption` decides which of plain RTP and SRTP
/// m-lines may be accepted.
pub fn negotiate(offer: &str, encryption: MediaEncryption) -> Result<Negotiation, SdpError> {
    if offer.trim().is_empty() {
        return Err(SdpError::Malformed("the offer is empty".into()));
    }
    // A body whose final line ending was cut (a lone trailing CR, as shell
    // `$(...)` leaves it) is still a whole offer.
    let session = Session::parse(offer.trim_end().as_bytes()).map_err(|e| SdpError::Malformed(e.to_string()))?;
    if session.medias.is_empty() {
        return Err(SdpError::Malformed("the offer has no m= line".into()));
    }

    let session_direction = direction_in(&session.attributes);
    let offered = session
        .medias
        .iter()
        .map(|media| OfferedMline {
            media: media.media.clone(),
            proto: media.proto.clone(),
            first_fmt: media.fmt.split_whitespace().next().unwrap_or("0").to_string(),
        })
        .collect();
    let mut negotiation = Negotiation { audio: None, video: None, offered };
    let mut refusals = Vec::new();

    // The main video is tried first, wherever it is listed: room systems
    // also offer their slides as video, and some list them first.
    let mut order: Vec<usize> = (0..session.medias.len()).collect();
    order.sort_by_key(|&index| video_rank(&session.medias[index]));
    for index in order {
        let media = &session.medias[index];
        let kind = match media.media.as_str() {
            "audio" => MediaKind::Audio,
            "video" => MediaKind::Video,
            other => {
                refusals.push(format!("m-line {} ({other}) is not audio or video", index + 1));
                continue;
            }
        };
        let slot = match kind {
            MediaKind::Audio => &mut negotiation.audio,
            MediaKind::Video => &mut negotiation.video,
        };
        if slot.is_some() {
            let content = media.get_first_attribute_value("content").flatten();
            let content = content.map(|c| format!(" (a=content:{c})")).unwrap_or_default();
            refusals.push(format!("m-line {} is a second {kind} stream{content}", index + 1));
            continue;
        }
        match accept_mline(&session, media, index, kind, session_direction, encryption)? {
            Ok(accepted) => *slot = Some(accepted),
            Err(refusal) => refusals.push(format!("m-line {} ({kind}): {refusal}", index + 1)),
        }
    }

    if negotiation.audio.is_none() && negotiation.video.is_none() {
        return Err(SdpError::NothingInCommon {
            reason: refusals.join("; "),
            supported: supported_codecs_description(),
        });
    }
    Ok(negotiation)
}

/// Which video m-line is the main one (lowest first): RFC 4796
/// `a=content:main`, then one that says nothing, then slides and the rest.
fn video_rank(media: &Media) -> u8 {
    if media.media != "video" {
        return 0;
    }
    match media.get_first_attribute_value("content").flatten() {
        Some(content) if content.split(',').any(|c| c.trim() == "main") => 0,
        None => 1,
        Some(_) => 2,
    }
}

/// `Ok(Err(reason))` is an m-line Tutti declines (answered with port 0);
/// `Err` is an offer too broken to answer at all.
fn accept_mline(
    session: &Session,
    media: &Media,
    index: usize,
    kind: MediaKind,
    session_direction: Option<Direction>,
    encryption: MediaEncryption,
) -> Result<Result<NegotiatedMedia, String>, SdpError> {
    if media.port == 0 {
        return Ok(Err("rejected by the offerer (port 0)".into()));
    }
    let (avpf, encrypted) = match media.proto.to_ascii_uppercase().as_str() {
        "RTP/AVP" => (false, false),
        "RTP/AVPF" => (true, false),
        "RTP/SAVP" => (false, true),
        "RTP/SAVPF" => (true, true),
        other => return Ok(Err(format!("transport {other} is not supported (no DTLS or ICE)"))),
    };
    if let Some(refusal) = encryption.refusal(encrypted) {
        return Ok(Err(refusal));
    }
    // a=crypto on a plain RTP/AVP line is best-effort SRTP (RFC 4568 has no
    // such thing; Polycom does it): answered as plain RTP, without crypto.
    let srtp = if encrypted {
        match crypto::choose(media.get_attribute_values("crypto").flatten()) {
            Ok(offer) => Some(SrtpKeys::answering(offer, MasterKey::random())),
            Err(refusal) => return Ok(Err(refusal)),
        }
    } else {
        None
    };
    let formats = media
        .fmt
        .split_whitespace()
        .map(|f| {
            f.parse::<u8>()
                .ok()
                .filter(|pt| *pt <= 127)
                .ok_or_else(|| SdpError::Malformed(format!("m-line {}: payload type {f:?} is not 0-127", index + 1)))
        })
        .collect::<Result<Vec<u8>, _>>()?;

    let supported: Vec<(Codec, u8)> = formats.iter().filter_map(|&pt| codec_for(media, kind, pt).map(|c| (c, pt))).collect();
    let Some((codec, payload_type)) = preferred(&supported) else {
        let offered: Vec<String> = formats.iter().map(|&pt| describe_format(media, pt)).collect();
        return Ok(Err(format!("none of the offered codecs is supported ({})", offered.join(", "))));
    };

    let connection = media.connections.first().or(session.connection.as_ref()).ok_or_else(|| {
        SdpError::Malformed(format!("m-line {} has no c= line and the session has none", index + 1))
    })?;
    let ip = connection_ip(connection)?;
    let IpAddr::V4(_) = ip else {
        return Ok(Err("IPv6 media addresses are not supported".into()));
    };
    let remote_rtp = SocketAddr::new(ip, media.port);

    let rtcp_mux = media.has_attribute("rtcp-mux");
    let remote_rtcp = if rtcp_mux {
        remote_rtp
    } else {
        match media.get_first_attribute_typed::<sdp_types::Rtcp>() {
            Some(Ok(rtcp)) => {
                let address = match rtcp.connection_address.as_deref() {
                    Some(a) => a
                        .parse::<IpAddr>()
                        .map_err(|_| SdpError::Malformed(format!("a=rtcp address {a:?} is not an IP address")))?,
                    None => ip,
                };
                SocketAddr::new(address, rtcp.port)
            }
            Some(Err(e)) => return Err(SdpError::Malformed(format!("m-line {}: {e}", index + 1))),
            None => SocketAddr::new(ip, media.port.checked_add(1).ok_or_else(|| {
                SdpError::Malformed(format!("m-line {}: RTP port 65535 leaves no room for RTCP", index + 1))
            })?),
        }
    };

    let offered_direction = direction_in(&media.attributes).or(session_direction).unwrap_or(Direction::SendRecv);
    let mut direction = offered_direction.reversed();
    // c=0.0.0.0 is the RFC 2543 way of putting a call on hold: send nothing.
    if ip.is_unspecified() {
        direction = match direction {
            Direction::SendRecv | Direction::RecvOnly => Direction::RecvOnly,
            _ => Direction::Inactive,
        };
    }

    let feedback = media
        .get_attribute_values("rtcp-fb")
        .flatten()
        .filter_map(|v| v.split_once(' '))
        .filter(|(pt, _)| *pt == "*" || pt.parse::<u8>() == Ok(payload_type))
        .map(|(_, fb)| fb.trim().to_string())
        .filter(|fb| matches!(fb.as_str(), "nack" | "nack pli" | "ccm fir"))
        .collect();

    let decode_limit = match codec {
        Codec::Video(VideoCodec::H264 { .. }) => DecodeLimit::from_fmtp(&fmtp_for(media, payload_type)),
        _ => None,
    };
    let telephone_event = match codec {
        Codec::Audio(audio) => telephone_event_for(media, &formats, audio.clock_rate()),
        Codec::Video(_) => None,
    };

    Ok(Ok(NegotiatedMedia {
        codec,
        payload_type,
        remote_rtp,
        remote_rtcp,
        rtcp_mux,
        direction,
        feedback,
        avpf,
        decode_limit,
        telephone_event,
        srtp,
        mline: index,
    }))
}

/// The offerer's first supported codec, except that H.264 packetization
/// mode 1 wins over mode 0 wherever it is listed: room systems list both,
/// in either order, and mode 1 is the encode callers share with the broadcast.
fn preferred(supported: &[(Codec, u8)]) -> Option<(Codec, u8)> {
    const MODE_0: Codec = Codec::Video(VideoCodec::H264 { packetization_mode: 0 });
    const MODE_1: Codec = Codec::Video(VideoCodec::H264 { packetization_mode: 1 });
    let first = *supported.first()?;
    if first.0 == MODE_0
        && let Some(mode_1) = supported.iter().find(|(codec, _)| *codec == MODE_1)
    {
        return Some(*mode_1);
    }
    Some(first)
}

/// The offered `telephone-event` at `clock_rate` (RFC 4733 events run on
/// the audio codec's clock), if any.
fn telephone_event_for(media: &Media, formats: &[u8], clock_rate: u32) -> Option<TelephoneEvent> {
    formats.iter().find_map(|&pt| {
        let map = rtpmap_for(media, pt)?;
        (map.encoding_name.eq_ignore_ascii_case("telephone-event") && map.clock_rate == clock_rate)
            .then(|| TelephoneEvent { payload_type: pt, events: fmtp_value(media, pt).map(str::to_string) })
    })
}

fn connection_ip(connection: &Connection) -> Result<IpAddr, SdpError> {
    // Some endpoints append "/ttl" even for unicast; only the address matters here.
    let address = connection.connection_address.split('/').next().unwrap_or_default();
    address.parse::<IpAddr>().map_err(|_| {
        SdpError::Malformed(format!(
            "c= address {:?} is not a literal IP address (host names are not resolved)",
            connection.connection_address
        ))
    })
}

fn direction_in(attributes: &[Attribute]) -> Option<Direction> {
    attributes.iter().find_map(|a| Direction::from_attribute(&a.attribute.to_ascii_lowercase()))
}

fn rtpmap_for(media: &Media, pt: u8) -> Option<RtpMap> {
    media
        .get_attribute_values("rtpmap")
        .flatten()
        .filter_map(|v| RtpMap::from_str(v).ok())
        .find(|m| m.payload_type == pt)
}

/// The text of `a=fmtp:<pt>` after the payload type.
fn fmtp_value(media: &Media, pt: u8) -> Option<&str> {
    let prefix = format!("{pt} ");
    media.get_attribute_values("fmtp").flatten().find_map(|v| v.strip_prefix(&prefix)).map(str::trim).filter(|v| !v.is_empty())
}

/// The `key=value` parameters of `a=fmtp:<pt>`, keys lower-cased; room
/// systems separate them with `; `.
fn fmtp_for(media: &Media, pt: u8) -> Vec<(String, String)> {
    fmtp_value(media, pt)
        .into_iter()
        .flat_map(|params| params.split(';'))
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

fn codec_for(media: &Media, kind: MediaKind, pt: u8) -> Option<Codec> {
    let (name, clock_rate) = match rtpmap_for(media, pt) {
        Some(map) => (map.encoding_name.to_ascii_uppercase(), map.clock_rate),
        // Static payload types may come without rtpmap (RFC 3551 table 4).
        None => match pt {
            0 => ("PCMU".to_string(), 8000),
            8 => ("PCMA".to_string(), 8000),
            9 => ("G722".to_string(), 8000),
            _ => return None,
        },
    };
    let fmtp = fmtp_for(media, pt);
    let param = |key: &str| fmtp.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let codec = match (kind, name.as_str(), clock_rate) {
        (MediaKind::Audio, "OPUS", 48000) => Codec::Audio(AudioCodec::Opus { stereo: param("stereo") == Some("1") }),
        (MediaKind::Audio, "PCMU", 8000) => Codec::Audio(AudioCodec::Pcmu),
        (MediaKind::Audio, "PCMA", 8000) => Codec::Audio(AudioCodec::Pcma),
        (MediaKind::Audio, "G722", 8000) => Codec::Audio(AudioCodec::G722),
        (MediaKind::Video, "VP8", 90000) => Codec::Video(VideoCodec::Vp8),
        (MediaKind::Video, "H264", 90000) => match param("packetization-mode").unwrap_or("0") {
            "0" => Codec::Video(VideoCodec::H264 { packetization_mode: 0 }),
            "1" => Codec::Video(VideoCodec::H264 { packetization_mode: 1 }),
            // Mode 2 (interleaved) needs a decoding-order buffer Tutti does not have.
            _ => return None,
        },
        _ => return None,
    };
    Some(codec)
}

fn describe_format(media: &Media, pt: u8) -> String {
    match rtpmap_for(media, pt) {
        Some(map) => format!("{}/{}", map.encoding_name, map.clock_rate),
        None => format!("payload type {pt}"),
    }
}

impl Negotiation {
    /// Declines the video m-line (an audio-only composition); an offer with
    /// nothing but video then has nothing in common.
    pub fn without_video(mut self) -> Result<Negotiation, SdpError> {
        if self.video.take().is_some() && self.audio.is_none() {
            return Err(SdpError::NothingInCommon {
                reason: "the composition is audio-only and the offer has no usable audio".into(),
                supported: supported_codecs_description(),
            });
        }
        Ok(self)
    }

    fn accepted(&self) -> impl Iterator<Item = &NegotiatedMedia> {
        self.audio.iter().chain(self.video.iter())
    }

    /// Writes the SDP answer: one m-line per offered m-line, in order;
    /// declined ones with port 0.
    pub fn answer(&self, local: &LocalTransport, canvas: Canvas, session_id: u64) -> String {
        let mut origin = Origin::with_ip_addr(session_id, 1, local.address);
        origin.set_username("tutti");
        let mut session = Session::new(origin, "Tutti");
        session.connection = Some(Connection::from_ip_addr(local.address));
        session.times.push(Time::new(0, 0));

        for (index, offered) in self.offered.iter().enumerate() {
            let accepted = self.accepted().find(|m| m.mline == index);
            let local_port = accepted.and_then(|m| match m.kind() {
                MediaKind::Audio => local.audio_port,
                MediaKind::Video => local.video_port,
            });
            let (Some(m), Some(port)) = (accepted, local_port) else {
                session.medias.push(rejected_mline(offered));
                continue;
            };
            session.medias.push(accepted_mline(m, port, canvas));
        }

        let mut out = Vec::new();
        session.write(&mut out).expect("writing SDP into a Vec cannot fail");
        String::from_utf8(out).expect("sdp-types writes UTF-8")
    }
}

fn rejected_mline(offered: &OfferedMline) -> Media {
    Media {
        media: offered.media.clone(),
        port: 0,
        num_ports: None,
        proto: offered.proto.clone(),
        fmt: offered.first_fmt.clone(),
        media_title: None,
        connections: Vec::new(),
        bandwidths: Vec::new(),
        key: None,
        attributes: Vec::new(),
    }
}

fn accepted_mline(m: &NegotiatedMedia, port: u16, canvas: Canvas) -> Media {
    let pt = m.payload_type;
    let proto = match (m.srtp.is_some(), m.avpf) {
        (false, false) => "RTP/AVP",
        (false, true) => "RTP/AVPF",
        (true, false) => "RTP/SAVP",
        (true, true) => "RTP/SAVPF",
    };
    let fmt = match &m.telephone_event {
        Some(event) => format!("{pt} {}", event.payload_type),
        None => pt.to_string(),
    };
    let mut media = Media {
        media: m.kind().to_string(),
        port,
        num_ports: None,
        proto: proto.to_string(),
        fmt,
        media_title: None,
        connections: Vec::new(),
        bandwidths: Vec::new(),
        key: None,
        attributes: Vec::new(),
    };
    let rtpmap = match m.codec {
        Codec::Audio(a) => match a.rtpmap_channels() {
            Some(channels) => format!("{pt} {}/{}/{channels}", rtpmap_name(m.codec), a.clock_rate()),
            None => format!("{pt} {}/{}", rtpmap_name(m.codec), a.clock_rate()),
        },
        Codec::Video(v) => format!("{pt} {}/{}", rtpmap_name(m.codec), v.clock_rate()),
    };
    media.add_attribute_with_value("rtpmap", rtpmap);
    match m.codec {
        Codec::Video(VideoCodec::H264 { packetization_mode }) => {
            let sent = m.return_size(canvas).unwrap_or(FrameSize { width: canvas.width, height: canvas.height });
            let (level, max_fs, max_mbps) = answered_level(sent, canvas.fps, m.decode_limit.as_ref());
            let sizes: String = [("max-fs", max_fs), ("max-mbps", max_mbps)]
                .into_iter()
                .filter_map(|(key, value)| Some(format!(";{key}={}", value?)))
                .collect();
            // Constrained Baseline: what every H.264 decoder can take.
            media.add_attribute_with_value(
                "fmtp",
                format!("{pt} profile-level-id=42e0{level:02x};packetization-mode={packetization_mode};level-asymmetry-allowed=1{sizes}"),
            );
        }
        Codec::Audio(AudioCodec::Opus { stereo }) => {
            let stereo = u8::from(stereo);
            media.add_attribute_with_value("fmtp", format!("{pt} {OPUS_RECEIVE_FMTP};stereo={stereo};sprop-stereo={stereo}"));
        }
        _ => {}
    }
    if let (Codec::Audio(audio), Some(event)) = (m.codec, &m.telephone_event) {
        media.add_attribute_with_value("rtpmap", format!("{} telephone-event/{}", event.payload_type, audio.clock_rate()));
        if let Some(events) = &event.events {
            media.add_attribute_with_value("fmtp", format!("{} {events}", event.payload_type));
        }
    }
    if m.kind() == MediaKind::Audio {
        media.add_attribute_with_value("ptime", "20");
    }
    for fb in &m.feedback {
        media.add_attribute_with_value("rtcp-fb", format!("{pt} {fb}"));
    }
    if m.rtcp_mux {
        media.add_attribute_from_str("rtcp-mux");
    } else {
        media.add_attribute_with_value("rtcp", port + 1);
    }
    media.add_attribute_from_str(m.direction.as_attribute());
    if let Some(keys) = &m.srtp {
        media.add_attribute_with_value("crypto", keys.answer_attribute());
    }
    media
}

fn rtpmap_name(codec: Codec) -> &'static str {
    match codec {
        Codec::Audio(AudioCodec::Opus { .. }) => "opus",
        other => other.encoding_name(),
    }
}

mod offer;
mod renegotiation;

pub use offer::{offer, read_answer};
pub use renegotiation::{RenegotiationError, with_origin_version};

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    const SIMPLE: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n\
        m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n\
        m=video 4002 RTP/AVPF 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n\
        a=rtcp-fb:96 nack pli\r\na=rtcp-fb:* ccm fir\r\na=rtcp-fb:96 goog-remb\r\n";

    fn local() -> LocalTransport {
        LocalTransport { address: "192.0.2.1".parse().unwrap(), audio_port: Some(20000), video_port: Some(20002) }
    }

    const CANVAS: Canvas = Canvas { width: 1280, height: 720, fps: 30 };

    #[test]
    fn static_payload_type_without_rtpmap_is_understood() {
        let n = negotiate(SIMPLE, MediaEncryption::Optional).unwrap();
        let audio = n.audio.unwrap();
        assert_eq!(audio.codec, Codec::Audio(AudioCodec::Pcmu));
        assert_eq!(audio.payload_type, 0);
        assert_eq!(audio.remote_rtp, "10.0.0.5:4000".parse().unwrap());
        assert_eq!(audio.remote_rtcp, "10.0.0.5:4001".parse().unwrap());
    }

    #[test]
    fn an_opus_answer_asks_the_caller_for_fec_and_dtx() {
        let offer = SIMPLE.replace("RTP/AVP 0 101", "RTP/AVP 111 101").replace(
            "a=rtpmap:101 telephone-event/8000\r\n",
            "a=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n",
        );
        let answer = negotiate(&offer, MediaEncryption::Optional).unwrap().answer(&local(), CANVAS, 7);
        assert!(answer.contains("a=fmtp:111 minptime=10;useinbandfec=1;usedtx=1;stereo=0;sprop-stereo=0\r\n"), "{answer}");
    }

    #[test]
    fn answer_keeps_payload_types_and_gives_our_ports() {
        let n = negotiate(SIMPLE, MediaEncryption::Optional).unwrap();
        let answer = n.answer(&local(), CANVAS, 7);
        assert!(answer.contains("m=audio 20000 RTP/AVP 0 101\r\n"), "{answer}");
        assert!(answer.contains("a=rtpmap:101 telephone-event/8000\r\n"), "{answer}");
        assert!(answer.contains("m=video 20002 RTP/AVPF 96\r\n"), "{answer}");
        assert!(answer.contains("a=fmtp:96 profile-level-id=42e01f;packetization-mode=1"), "{answer}");
        assert!(answer.contains("a=rtcp:20003\r\n"), "{answer}");
        assert!(answer.contains("c=IN IP4 192.0.2.1\r\n"), "{answer}");
        assert!(answer.contains("a=rtcp-fb:96 nack pli\r\n"));
        assert!(answer.contains("a=rtcp-fb:96 ccm fir\r\n"));
        assert!(!answer.contains("goog-remb"), "feedback Tutti does not implement is not echoed");
        // The answer must itself be valid SDP.
        negotiate(&answer, MediaEncryption::Optional).unwrap();
    }

    #[test]
    fn audio_only_declines_video_with_port_zero() {
        let n = negotiate(SIMPLE, MediaEncryption::Optional).unwrap().without_video().unwrap();
        assert!(n.video.is_none());
        let answer = n.answer(&LocalTransport { video_port: None, ..local() }, CANVAS, 7);
        assert!(answer.contains("m=audio 20000 RTP/AVP 0 101\r\n"), "{answer}");
        assert!(answer.contains("m=video 0 RTP/AVPF 96\r\n"), "{answer}");
        let video_only = SIMPLE.replace("m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n", "");
        let err = negotiate(&video_only, MediaEncryption::Optional).unwrap().without_video().unwrap_err();
        assert!(err.to_string().contains("audio-only"), "{err}");
    }

    #[test]
    fn directions_are_reversed() {
        let offer = SIMPLE.replace("m=video 4002 RTP/AVPF 96\r\n", "m=video 4002 RTP/AVPF 96\r\na=sendonly\r\n");
        let n = negotiate(&offer, MediaEncryption::Optional).unwrap();
        assert_eq!(n.video.unwrap().direction, Direction::RecvOnly);
        assert_eq!(n.audio.unwrap().direction, Direction::SendRecv);
    }

    #[test]
    fn rtcp_mux_sends_rtcp_to_the_rtp_port() {
        let offer = SIMPLE.replace("a=rtpmap:101", "a=rtcp-mux\r\na=rtpmap:101");
        let n = negotiate(&offer, MediaEncryption::Optional).unwrap();
        let audio = n.audio.as_ref().unwrap();
        assert!(audio.rtcp_mux);
        assert_eq!(audio.remote_rtcp, audio.remote_rtp);
        let answer = n.answer(&local(), CANVAS, 1);
        assert!(answer.contains("a=rtcp-mux\r\n"));
    }

    #[test]
    fn first_supported_codec_in_offer_order_wins() {
        let offer = "v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n\
            m=audio 4000 RTP/AVP 18 9 0\r\na=rtpmap:18 G729/8000\r\n";
        let n = negotiate(offer, MediaEncryption::Optional).unwrap();
        assert_eq!(n.audio.unwrap().codec, Codec::Audio(AudioCodec::G722));
    }

    #[test]
    fn only_unsupported_codecs_is_nothing_in_common() {
        let offer = "v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n\
            m=audio 4000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n";
        let err = negotiate(offer, MediaEncryption::Optional).unwrap_err();
        assert!(matches!(err, SdpError::NothingInCommon { .. }));
        assert!(err.to_string().contains("G729/8000"), "{err}");
        assert!(err.to_string().contains("opus"), "{err}");
    }

    #[test]
    fn a_cut_final_line_ending_is_tolerated() {
        let cut = SIMPLE.trim_end_matches('\n');
        assert!(cut.ends_with('\r'));
        assert!(negotiate(cut, MediaEncryption::Optional).is_ok());
    }

    const SRTP_ONLY: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n\
        m=audio 4000 RTP/SAVP 0\r\n\
        a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:kgy2/FARejpDBwYaeEiCYx5Lo3t7N4c9HkNiQsdd|2^20|1:4\r\n\
        a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:4mxfCJYOnvaL0mDf0yGVFE3nJMF+jRiPRNusBDoQ\r\n\
        a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:Pl63m3V220qFcYuTKxrKBatbL2UV5gzQ9mSdatzD\r\n\
        m=video 4002 RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n\
        a=crypto:5 AES_CM_128_HMAC_SHA1_80 inline:Pl63m3V220qFcYuTKxrKBatbL2UV5gzQ9mSdatzD\r\n";

    #[test]
    fn an_srtp_offer_is_answered_with_one_crypto_line_of_tuttis_own() {
        let n = negotiate(SRTP_ONLY, MediaEncryption::Optional).unwrap();
        let audio = n.audio.as_ref().unwrap().srtp.as_ref().unwrap();
        assert_eq!((audio.tag, audio.suite), (2, crypto::SrtpSuite::AesCm128HmacSha1_32), "the MKI line is skipped");
        assert_eq!(audio.receive, crypto::parse_crypto("2 AES_CM_128_HMAC_SHA1_32 inline:4mxfCJYOnvaL0mDf0yGVFE3nJMF+jRiPRNusBDoQ").unwrap().key);
        let video = n.video.as_ref().unwrap().srtp.as_ref().unwrap();
        assert_ne!(audio.send, video.send, "a key per m-line");

        let answer = n.answer(&local(), CANVAS, 7);
        assert!(answer.contains("m=audio 20000 RTP/SAVP 0\r\n"), "{answer}");
        assert!(answer.contains("m=video 20002 RTP/SAVPF 96\r\n"), "{answer}");
        assert_eq!(answer.matches("a=crypto:").count(), 2, "{answer}");
        let send = |keys: &SrtpKeys| keys.answer_attribute();
        assert!(answer.contains(&format!("a=crypto:{}\r\n", send(audio))), "{answer}");
        assert!(send(audio).starts_with("2 AES_CM_128_HMAC_SHA1_32 inline:"));
        assert!(answer.contains(&format!("a=crypto:{}\r\n", send(video))), "{answer}");
        assert!(!answer.contains("4mxfCJYOnvaL0mDf0yGVFE3nJMF"), "the caller's key is never echoed: {answer}");
        let printed = format!("{n:?}");
        let tuttis_key = send(audio).rsplit(':').next().unwrap().to_string();
        assert!(!printed.contains("4mxfCJYOnvaL0mDf0yGVFE3nJMF") && !printed.contains(&tuttis_key), "Debug shows no key: {printed}");
        let again = negotiate(&answer, MediaEncryption::Required).unwrap();
        assert_eq!(again.audio.unwrap().srtp.unwrap().receive, audio.send);
    }

    #[test]
    fn srtp_without_a_usable_key_is_declined_with_the_reason() {
        let offer = SRTP_ONLY.replace("a=crypto:2 AES_CM_128_HMAC_SHA1_32", "a=crypto:2 AES_256_CM_HMAC_SHA1_80")
            .replace("a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:Pl63m3V220qFcYuTKxrKBatbL2UV5gzQ9mSdatzD", "a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:short");
        let n = negotiate(&offer, MediaEncryption::Optional).unwrap();
        assert!(n.audio.is_none());
        let answer = n.answer(&local(), CANVAS, 7);
        assert!(answer.contains("m=audio 0 RTP/SAVP 0\r\n"), "{answer}");
        let no_crypto: String = offer.lines().filter(|l| !l.starts_with("a=crypto")).map(|l| format!("{l}\n")).collect();
        let err = negotiate(&no_crypto, MediaEncryption::Optional).unwrap_err().to_string();
        assert!(err.contains("without a=crypto"), "{err}");
    }

    #[test]
    fn the_policy_declines_what_it_forbids() {
        let err = negotiate(SRTP_ONLY, MediaEncryption::Off).unwrap_err();
        assert!(matches!(err, SdpError::NothingInCommon { .. }));
        assert!(err.to_string().contains("media_encryption is off"), "{err}");
        let err = negotiate(SIMPLE, MediaEncryption::Required).unwrap_err();
        assert!(err.to_string().contains("media_encryption is required"), "{err}");
        assert!(negotiate(SIMPLE, MediaEncryption::Off).unwrap().audio.unwrap().srtp.is_none());
        // A mixed offer keeps what the policy allows.
        let mixed = SIMPLE.replace("m=audio 4000 RTP/AVP 0 101", "m=audio 4000 RTP/SAVP 0 101\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:kgy2/FARejpDBwYaeEiCYx5Lo3t7N4c9HkNiQsdd");
        let n = negotiate(&mixed, MediaEncryption::Required).unwrap();
        assert!(n.audio.is_some() && n.video.is_none());
        let n = negotiate(&mixed, MediaEncryption::Off).unwrap();
        assert!(n.audio.is_none() && n.video.is_some());
    }

    #[test]
    fn crypto_on_a_plain_m_line_is_answered_as_plain_rtp() {
        let offer = SIMPLE.replace("m=audio 4000 RTP/AVP 0 101", "m=audio 4000 RTP/AVP 0 101\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:kgy2/FARejpDBwYaeEiCYx5Lo3t7N4c9HkNiQsdd");
        let n = negotiate(&offer, MediaEncryption::Optional).unwrap();
        assert!(n.audio.as_ref().unwrap().srtp.is_none());
        assert!(!n.answer(&local(), CANVAS, 7).contains("a=crypto"));
    }

    const CISCO: &str = include_str!("../../tests/fixtures/sdp/cisco-tandberg-c40-five-mlines.sdp");
    const POLYCOM_CIF: &str = include_str!("../../tests/fixtures/sdp/polycom-realpresence-cif-slides-first.sdp");

    #[test]
    fn room_system_extras_are_declined_as_offered() {
        let answer = negotiate(CISCO, MediaEncryption::Optional).unwrap().answer(&local(), CANVAS, 1);
        let parsed = Session::parse(answer.as_bytes()).unwrap();
        let mlines: Vec<(&str, u16, &str, &str)> =
            parsed.medias.iter().map(|m| (m.media.as_str(), m.port, m.proto.as_str(), m.fmt.as_str())).collect();
        assert_eq!(
            mlines,
            [
                ("audio", 20000, "RTP/AVP", "9 101"),
                ("video", 20002, "RTP/AVP", "97"),
                ("video", 0, "RTP/AVP", "126"),
                ("application", 0, "UDP/BFCP", "*"),
                ("application", 0, "RTP/AVP", "125"),
            ],
            "{answer}"
        );
        assert!(answer.contains("a=fmtp:101 0-15\r\n"), "{answer}");
    }

    #[test]
    fn main_video_is_chosen_by_content_not_order() {
        let n = negotiate(POLYCOM_CIF, MediaEncryption::Optional).unwrap();
        let video = n.video.as_ref().unwrap();
        assert_eq!(video.remote_rtp, "10.20.31.17:3232".parse().unwrap(), "the a=content:main m-line, listed second");
        assert_eq!(video.mline, 2);
        // Without any a=content, the first video m-line stays the main one.
        let n = negotiate(&POLYCOM_CIF.replace("a=content:slides\r\n", "").replace("a=content:main\r\n", ""), MediaEncryption::Optional).unwrap();
        assert_eq!(n.video.unwrap().remote_rtp, "10.20.31.17:3234".parse().unwrap());
    }

    #[test]
    fn a_cif_caller_is_answered_for_what_it_decodes() {
        let n = negotiate(POLYCOM_CIF, MediaEncryption::Optional).unwrap();
        let video = n.video.as_ref().unwrap();
        assert_eq!(video.decode_limit, Some(DecodeLimit { level_idc: 13, max_fs: 396, max_mbps: 11_880 }));
        assert_eq!(video.return_size(CANVAS), Some(FrameSize { width: 416, height: 234 }));
        let answer = n.answer(&local(), CANVAS, 1);
        assert!(answer.contains("a=fmtp:109 profile-level-id=42e00d;packetization-mode=1;level-asymmetry-allowed=1\r\n"), "{answer}");
    }

    #[test]
    fn mode_1_wins_over_mode_0_listed_first() {
        let n = negotiate(CISCO, MediaEncryption::Optional).unwrap();
        assert_eq!(n.video.unwrap().payload_type, 97);
        let only_mode_0 = CISCO.replace("m=video 2348 RTP/AVP 126 97 34", "m=video 2348 RTP/AVP 126 34");
        let video = negotiate(&only_mode_0, MediaEncryption::Optional).unwrap().video.unwrap();
        assert_eq!((video.codec, video.payload_type), (Codec::Video(VideoCodec::H264 { packetization_mode: 0 }), 126));
    }

    #[test]
    fn siren_and_aac_ld_are_declined_as_codecs_and_dtmf_is_kept_beside_the_codec() {
        let audio = negotiate(CISCO, MediaEncryption::Optional).unwrap().audio.unwrap();
        assert_eq!((audio.codec, audio.payload_type), (Codec::Audio(AudioCodec::G722), 9));
        assert_eq!(audio.telephone_event, Some(TelephoneEvent { payload_type: 101, events: Some("0-15".into()) }));
        // Only room-system codecs and DTMF: nothing to take, DTMF is no codec.
        let offer = "v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n\
            m=audio 4000 RTP/AVP 108 111 103 101\r\na=rtpmap:108 MP4A-LATM/90000\r\na=rtpmap:111 G7221/32000\r\n\
            a=rtpmap:103 SIREN14/16000\r\na=rtpmap:101 telephone-event/8000\r\n";
        let err = negotiate(offer, MediaEncryption::Optional).unwrap_err();
        assert!(err.to_string().contains("G7221/32000"), "{err}");
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(negotiate("hello", MediaEncryption::Optional), Err(SdpError::Malformed(_))));
        assert!(matches!(negotiate("", MediaEncryption::Optional), Err(SdpError::Malformed(_))));
    }
}
