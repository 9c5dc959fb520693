//! Tutti as the offerer (RFC 3264 §5): for a caller that sends an INVITE
//! without SDP (a late offer, as PBXs do) Tutti offers every codec it
//! supports on ports it has already allocated, and reads the caller's answer
//! into the same [`Negotiation`] an offer from the caller gives.

use super::{Canvas, LocalTransport, Negotiation, OPUS_RECEIVE_FMTP, SdpError, negotiate};
use super::crypto::MediaEncryption;
use crate::model::codec::{AudioCodec, Codec, MediaKind, VideoCodec};
use crate::model::h264::level_idc;
use sdp_types::{Connection, Media, Origin, Session, Time};

/// What Tutti offers, in its order of preference, under these payload types.
const AUDIO_OFFER: [(u8, AudioCodec); 4] =
    [(111, AudioCodec::Opus { stereo: false }), (9, AudioCodec::G722), (0, AudioCodec::Pcmu), (8, AudioCodec::Pcma)];
const VIDEO_OFFER: [(u8, VideoCodec); 3] = [
    (96, VideoCodec::H264 { packetization_mode: 1 }),
    (97, VideoCodec::H264 { packetization_mode: 0 }),
    (98, VideoCodec::Vp8),
];

/// Tutti's offer: an audio m-line, and a video one if `local` has a video
/// port, each with every codec Tutti supports, sendrecv.
pub fn offer(local: &LocalTransport, canvas: Canvas, session_id: u64) -> String {
    let mut origin = Origin::with_ip_addr(session_id, 1, local.address);
    origin.set_username("tutti");
    let mut session = Session::new(origin, "Tutti");
    session.connection = Some(Connection::from_ip_addr(local.address));
    session.times.push(Time::new(0, 0));
    if let Some(port) = local.audio_port {
        let mut media = mline(MediaKind::Audio, port, AUDIO_OFFER.iter().map(|(pt, _)| *pt));
        for (pt, codec) in AUDIO_OFFER {
            match codec.rtpmap_channels() {
                Some(channels) => media.add_attribute_with_value("rtpmap", format!("{pt} {}/{}/{channels}", rtpmap_name(codec), codec.clock_rate())),
                None => media.add_attribute_with_value("rtpmap", format!("{pt} {}/{}", rtpmap_name(codec), codec.clock_rate())),
            }
            if let AudioCodec::Opus { .. } = codec {
                media.add_attribute_with_value("fmtp", format!("{pt} {OPUS_RECEIVE_FMTP}"));
            }
        }
        media.add_attribute_with_value("ptime", "20");
        finish(&mut session, media, port);
    }
    if let Some(port) = local.video_port {
        let mut media = mline(MediaKind::Video, port, VIDEO_OFFER.iter().map(|(pt, _)| *pt));
        let level = level_idc(canvas.width, canvas.height, canvas.fps);
        for (pt, codec) in VIDEO_OFFER {
            media.add_attribute_with_value("rtpmap", format!("{pt} {}/90000", codec.encoding_name()));
            if let VideoCodec::H264 { packetization_mode } = codec {
                media.add_attribute_with_value(
                    "fmtp",
                    format!("{pt} profile-level-id=42e0{level:02x};packetization-mode={packetization_mode};level-asymmetry-allowed=1"),
                );
            }
            media.add_attribute_with_value("rtcp-fb", format!("{pt} nack pli"));
            media.add_attribute_with_value("rtcp-fb", format!("{pt} ccm fir"));
        }
        finish(&mut session, media, port);
    }
    let mut out = Vec::new();
    session.write(&mut out).expect("writing SDP into a Vec cannot fail");
    String::from_utf8(out).expect("sdp-types writes UTF-8")
}

fn mline(kind: MediaKind, port: u16, payload_types: impl Iterator<Item = u8>) -> Media {
    Media {
        media: kind.to_string(),
        port,
        num_ports: None,
        proto: "RTP/AVP".to_string(),
        fmt: payload_types.map(|pt| pt.to_string()).collect::<Vec<_>>().join(" "),
        media_title: None,
        connections: Vec::new(),
        bandwidths: Vec::new(),
        key: None,
        attributes: Vec::new(),
    }
}

fn finish(session: &mut Session, mut media: Media, port: u16) {
    media.add_attribute_with_value("rtcp", port + 1);
    media.add_attribute_from_str("sendrecv");
    session.medias.push(media);
}

fn rtpmap_name(codec: AudioCodec) -> &'static str {
    match codec {
        AudioCodec::Opus { .. } => "opus",
        other => other.encoding_name(),
    }
}

/// Reads the caller's answer to [`offer`] (made with the same `local`):
/// the m-lines Tutti offered, in its order, each either declined (port 0)
/// or with a codec Tutti offered under the payload type it offered it
/// with. The codec is the offer's: an answer need not repeat the fmtp.
pub fn read_answer(local: &LocalTransport, answer: &str) -> Result<Negotiation, SdpError> {
    // Tutti offered plain RTP: an answer can only be plain RTP.
    let mut negotiation = negotiate(answer, MediaEncryption::Off)?;
    let offered: Vec<MediaKind> =
        [(local.audio_port, MediaKind::Audio), (local.video_port, MediaKind::Video)].into_iter().filter_map(|(p, k)| p.map(|_| k)).collect();
    let answered: Vec<&str> = negotiation.offered.iter().map(|m| m.media.as_str()).collect();
    if answered != offered.iter().map(|k| if *k == MediaKind::Audio { "audio" } else { "video" }).collect::<Vec<_>>() {
        return Err(SdpError::Malformed(format!("the answer's m-lines {answered:?} are not the offer's {offered:?}")));
    }
    if let Some(audio) = &mut negotiation.audio {
        let (_, codec) = AUDIO_OFFER.iter().find(|(pt, _)| *pt == audio.payload_type).ok_or_else(|| not_offered(audio.payload_type))?;
        let stereo = matches!(audio.codec, Codec::Audio(AudioCodec::Opus { stereo: true }));
        audio.codec = Codec::Audio(match codec {
            AudioCodec::Opus { .. } => AudioCodec::Opus { stereo },
            other => *other,
        });
    }
    if let Some(video) = &mut negotiation.video {
        let (_, codec) = VIDEO_OFFER.iter().find(|(pt, _)| *pt == video.payload_type).ok_or_else(|| not_offered(video.payload_type))?;
        if video.codec.encoding_name() != codec.encoding_name() {
            return Err(not_offered(video.payload_type));
        }
        video.codec = Codec::Video(*codec);
    }
    Ok(negotiation)
}

fn not_offered(payload_type: u8) -> SdpError {
    SdpError::Malformed(format!("the answer picks payload type {payload_type}, which is not what Tutti offered under it"))
}

#[cfg(test)]
mod tests {
    use super::super::Direction;
    use super::*;

    const CANVAS: Canvas = Canvas { width: 1280, height: 720, fps: 30 };

    fn local() -> LocalTransport {
        LocalTransport { address: "192.0.2.1".parse().unwrap(), audio_port: Some(20000), video_port: Some(20002) }
    }

    #[test]
    fn the_offer_carries_every_codec_on_the_allocated_ports() {
        let offer = offer(&local(), CANVAS, 5);
        assert!(offer.contains("m=audio 20000 RTP/AVP 111 9 0 8\r\n"), "{offer}");
        assert!(offer.contains("m=video 20002 RTP/AVP 96 97 98\r\n"), "{offer}");
        assert!(offer.contains("a=fmtp:96 profile-level-id=42e01f;packetization-mode=1"), "{offer}");
        assert!(offer.contains("a=rtpmap:98 VP8/90000\r\n"), "{offer}");
        assert!(offer.contains("a=rtcp:20003\r\n") && offer.contains("a=sendrecv\r\n"), "{offer}");
        // Tutti's own offer is one Tutti would accept.
        let n = negotiate(&offer, MediaEncryption::Optional).unwrap();
        assert_eq!(n.audio.unwrap().codec, Codec::Audio(AudioCodec::Opus { stereo: false }));
    }

    #[test]
    fn an_audio_only_offer_has_one_mline() {
        let offer = offer(&LocalTransport { video_port: None, ..local() }, CANVAS, 5);
        assert!(!offer.contains("m=video"), "{offer}");
    }

    #[test]
    fn an_answer_is_read_with_the_offers_codecs() {
        let answer = "v=0\r\no=pbx 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n\
            m=audio 7000 RTP/AVP 0\r\na=sendrecv\r\nm=video 7002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";
        let n = read_answer(&local(), answer).unwrap();
        assert_eq!(n.audio.as_ref().unwrap().codec, Codec::Audio(AudioCodec::Pcmu));
        assert_eq!(n.audio.as_ref().unwrap().remote_rtp, "10.0.0.9:7000".parse().unwrap());
        let video = n.video.unwrap();
        assert_eq!(video.codec, Codec::Video(VideoCodec::H264 { packetization_mode: 1 }), "the fmtp of the offer's payload type");
        assert_eq!(video.direction, Direction::SendRecv);
    }

    #[test]
    fn a_declined_video_is_no_video() {
        let answer = "v=0\r\no=pbx 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n\
            m=audio 7000 RTP/AVP 9\r\nm=video 0 RTP/AVP 96\r\n";
        let n = read_answer(&local(), answer).unwrap();
        assert_eq!(n.audio.unwrap().codec, Codec::Audio(AudioCodec::G722));
        assert!(n.video.is_none());
    }

    #[test]
    fn an_answer_that_is_not_one_to_this_offer_is_refused() {
        let base = "v=0\r\no=pbx 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n";
        let only_audio = format!("{base}m=audio 7000 RTP/AVP 0\r\n");
        assert!(matches!(read_answer(&local(), &only_audio), Err(SdpError::Malformed(_))));
        let wrong_pt = format!("{base}m=audio 7000 RTP/AVP 101\r\na=rtpmap:101 PCMU/8000\r\nm=video 0 RTP/AVP 96\r\n");
        assert!(matches!(read_answer(&local(), &wrong_pt), Err(SdpError::Malformed(_))));
        let vp8_as_h264 = format!("{base}m=audio 7000 RTP/AVP 0\r\nm=video 7002 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n");
        assert!(matches!(read_answer(&local(), &vp8_as_h264), Err(SdpError::Malformed(_))));
        assert!(read_answer(&local(), "").is_err());
        assert!(read_answer(&local(), "garbage").is_err());
    }
}
