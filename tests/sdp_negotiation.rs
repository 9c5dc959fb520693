//! SDP offer/answer against offers shaped like real endpoints' (Linphone,
//! baresip, Polycom, Cisco, Tandberg, ffmpeg, GStreamer, softphones, SBCs)
//! and broken ones. Expectations live in tests/fixtures/sdp/manifest.toml.
//! Pure negotiation, no media: runs without the media lock.

use serde::Deserialize;
use std::path::Path;
use tutti::model::codec::{Codec, VideoCodec};
use tutti::model::sdp::crypto::MediaEncryption;
use tutti::model::sdp::{Canvas, LocalTransport, NegotiatedMedia, SdpError, negotiate};

#[derive(Deserialize)]
struct Manifest {
    offer: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    file: String,
    outcome: String,
    audio: Option<Expected>,
    video: Option<Expected>,
    rejected_mlines: Option<usize>,
    /// The m-lines answered with a port, counted from 1 in offer order.
    accepted_mlines: Option<Vec<usize>>,
    /// What the composite is scaled to for this caller on a 1280x720 canvas
    /// at 30 fps ("416x234"); absent: the whole canvas.
    return_size: Option<String>,
}

#[derive(Deserialize)]
struct Expected {
    pt: u8,
    codec: String,
    remote: String,
    rtcp: String,
    rtcp_mux: bool,
    direction: String,
    packetization_mode: Option<u8>,
    /// Audio: the telephone-event payload type kept in the answer.
    telephone_event: Option<u8>,
    /// H.264: the decode limit read from the fmtp (level_idc, max-fs, max-mbps).
    level: Option<u8>,
    max_fs: Option<u64>,
    max_mbps: Option<u64>,
    /// The SRTP suite, on an SRTP m-line.
    srtp: Option<String>,
}

/// The API's codec name, and the packetization mode shown next to it.
fn codec_name(codec: Codec) -> (&'static str, Option<u8>) {
    let mode = match codec {
        Codec::Video(VideoCodec::H264 { packetization_mode }) => Some(packetization_mode),
        _ => None,
    };
    (codec.name(), mode)
}

fn check(file: &str, kind: &str, got: Option<&NegotiatedMedia>, want: Option<&Expected>) {
    match (got, want) {
        (None, None) => {}
        (Some(got), Some(want)) => {
            let (codec, mode) = codec_name(got.codec);
            assert_eq!(codec, want.codec, "{file} {kind}: codec");
            assert_eq!(got.payload_type, want.pt, "{file} {kind}: payload type");
            assert_eq!(got.remote_rtp.to_string(), want.remote, "{file} {kind}: RTP destination");
            assert_eq!(got.remote_rtcp.to_string(), want.rtcp, "{file} {kind}: RTCP destination");
            assert_eq!(got.rtcp_mux, want.rtcp_mux, "{file} {kind}: rtcp-mux");
            assert_eq!(got.direction.as_attribute(), want.direction, "{file} {kind}: direction");
            assert_eq!(mode, want.packetization_mode, "{file} {kind}: packetization mode");
            assert_eq!(got.telephone_event.as_ref().map(|e| e.payload_type), want.telephone_event, "{file} {kind}: telephone-event");
            if let Some(level) = want.level {
                let limit = got.decode_limit.unwrap_or_else(|| panic!("{file} {kind}: no decode limit read"));
                assert_eq!((limit.level_idc, Some(limit.max_fs), Some(limit.max_mbps)), (level, want.max_fs, want.max_mbps), "{file} {kind}: decode limit");
            }
            assert_eq!(got.srtp.as_ref().map(|k| k.suite.name()), want.srtp.as_deref(), "{file} {kind}: SRTP suite");
        }
        (got, want) => panic!("{file} {kind}: accepted {:?}, expected {}", got.map(|m| m.codec), want.map_or("none", |w| w.codec.as_str())),
    }
}

#[test]
fn real_world_offers_negotiate_as_the_manifest_says() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sdp");
    let manifest: Manifest = toml::from_str(&std::fs::read_to_string(dir.join("manifest.toml")).unwrap()).unwrap();
    assert!(manifest.offer.len() >= 25, "the fixture set shrank");
    let local = LocalTransport { address: "203.0.113.7".parse().unwrap(), audio_port: Some(20000), video_port: Some(20002) };
    let canvas = Canvas { width: 1280, height: 720, fps: 30 };

    for case in &manifest.offer {
        let text = String::from_utf8_lossy(&std::fs::read(dir.join(&case.file)).unwrap()).into_owned();
        let result = negotiate(&text, MediaEncryption::Optional);
        match case.outcome.as_str() {
            "answer" => {
                let n = result.unwrap_or_else(|e| panic!("{}: expected an answer, got {e}", case.file));
                check(&case.file, "audio", n.audio.as_ref(), case.audio.as_ref());
                check(&case.file, "video", n.video.as_ref(), case.video.as_ref());
                let return_size = n.video.as_ref().and_then(|v| v.return_size(canvas)).map(|s| format!("{}x{}", s.width, s.height));
                assert_eq!(return_size, case.return_size, "{}: the composite's size for this caller", case.file);

                let answer = n.answer(&local, canvas, 42);
                let offer = sdp_types::Session::parse(text.as_bytes()).unwrap();
                let parsed = sdp_types::Session::parse(answer.as_bytes())
                    .unwrap_or_else(|e| panic!("{}: the answer does not parse: {e}\n{answer}", case.file));
                assert_eq!(parsed.medias.len(), offer.medias.len(), "{}: one answer m-line per offered m-line", case.file);
                let rejected = parsed.medias.iter().filter(|m| m.port == 0).count();
                assert_eq!(Some(rejected), case.rejected_mlines, "{}: rejected m-lines\n{answer}", case.file);
                if let Some(accepted) = &case.accepted_mlines {
                    let answered: Vec<usize> = parsed.medias.iter().enumerate().filter(|(_, m)| m.port != 0).map(|(i, _)| i + 1).collect();
                    assert_eq!(&answered, accepted, "{}: accepted m-lines\n{answer}", case.file);
                }
                for (offered, answered) in offer.medias.iter().zip(&parsed.medias) {
                    assert_eq!(offered.media, answered.media, "{}: m-line order", case.file);
                    let pts: Vec<&str> = answered.fmt.split_whitespace().collect();
                    assert!(pts.iter().all(|pt| offered.fmt.split_whitespace().any(|f| f == *pt)), "{}: answer PTs come from the offer\n{answer}", case.file);
                    if answered.port == 0 {
                        // Declined as offered: same media and transport (BFCP's `*` included).
                        assert_eq!(answered.proto, offered.proto, "{}: a declined m-line keeps its transport\n{answer}", case.file);
                        assert_eq!(pts.len(), 1, "{}: a declined m-line names one format\n{answer}", case.file);
                    } else {
                        // One a=crypto line on an SRTP m-line, none on a plain one.
                        let crypto_lines = answered.attributes.iter().filter(|a| a.attribute == "crypto").count();
                        let srtp = answered.proto.starts_with("RTP/SAVP");
                        assert_eq!(srtp, offered.proto.starts_with("RTP/SAVP"), "{}: protection as offered", case.file);
                        assert_eq!(crypto_lines, usize::from(srtp), "{}: a=crypto lines\n{answer}", case.file);
                        let accepted = [&n.audio, &n.video].into_iter().flatten().find(|m| m.kind().to_string() == answered.media).unwrap();
                        let expected: Vec<String> = std::iter::once(accepted.payload_type)
                            .chain(accepted.telephone_event.as_ref().map(|e| e.payload_type))
                            .map(|pt| pt.to_string())
                            .collect();
                        assert_eq!(pts, expected, "{}: one codec per accepted m-line, and its telephone-event\n{answer}", case.file);
                    }
                }
                if let Some(event) = n.audio.as_ref().and_then(|a| a.telephone_event.as_ref()) {
                    let fmtp = event.events.as_ref().map(|e| format!("a=fmtp:{} {e}\r\n", event.payload_type));
                    assert!(fmtp.is_none_or(|f| answer.contains(&f)), "{}: telephone-event's fmtp is echoed\n{answer}", case.file);
                }
            }
            "bad_sdp" => assert!(
                matches!(result, Err(SdpError::Malformed(_))),
                "{}: expected malformed, got {:?}",
                case.file,
                result.map(|n| (n.audio.map(|m| m.codec), n.video.map(|m| m.codec)))
            ),
            "unsupported" => {
                let err = result.err().unwrap_or_else(|| panic!("{}: expected no media in common", case.file));
                assert!(matches!(err, SdpError::NothingInCommon { .. }), "{}: got {err}", case.file);
                assert!(err.to_string().contains("H264/90000"), "{}: the error lists what Tutti supports: {err}", case.file);
            }
            // A room system's SRTP-only offer: audio and main video answered
            // SRTP, the extras never taken for media.
            "srtp" => {
                let n = result.unwrap_or_else(|e| panic!("{}: an SRTP-only offer is answered: {e}", case.file));
                let srtp = |m: &Option<tutti::model::sdp::NegotiatedMedia>| m.as_ref().is_some_and(|m| m.srtp.is_some());
                assert!(srtp(&n.audio) && srtp(&n.video), "{}: audio and main video, both SRTP", case.file);
                let answer = n.answer(&local, canvas, 42);
                let parsed = sdp_types::Session::parse(answer.as_bytes()).unwrap();
                let rejected = parsed.medias.iter().filter(|m| m.port == 0).count();
                assert_eq!(Some(rejected), case.rejected_mlines, "{}: rejected m-lines\n{answer}", case.file);
            }
            other => panic!("{}: unknown outcome {other}", case.file),
        }
    }
}
