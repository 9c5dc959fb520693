//! Property tests of [`negotiate`] and [`Negotiation::answer`]: whatever the
//! offer, negotiation never panics, refuses with a typed [`SdpError`], and
//! any answer it writes is valid SDP that only picks offered payload types
//! and mirrors the offered directions (RFC 3264 6.1).
//!
//! Three sources of offers: arbitrary text, the real offers of
//! `tests/fixtures/sdp/` mutated line by line, and offers generated field by
//! field (codecs, payload types, fmtp, directions, ports, transports,
//! addresses).

use super::*;
use proptest::prelude::*;
use proptest::sample::Index;
use std::path::Path;

const LOCAL: LocalTransport = LocalTransport {
    address: IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)),
    audio_port: Some(20000),
    video_port: Some(20002),
};
const CANVAS: Canvas = Canvas { width: 1280, height: 720, fps: 30 };

/// Negotiates `offer` and checks every property; a failed check panics with
/// the offer and the answer.
fn check_offer(offer: &str) {
    let negotiation = match negotiate(offer, MediaEncryption::Optional) {
        Ok(negotiation) => negotiation,
        Err(error @ (SdpError::Malformed(_) | SdpError::NothingInCommon { .. })) => {
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    let answer = negotiation.answer(&LOCAL, CANVAS, 1);
    check_answer(offer, &negotiation, &answer);
}

fn check_answer(offer_text: &str, negotiation: &Negotiation, answer_text: &str) {
    let context = || format!("offer:\n{offer_text}\nanswer:\n{answer_text}");
    // Negotiation accepted it, so the offer parses the same way here.
    let offer = Session::parse(offer_text.trim_end().as_bytes()).unwrap();
    let answer = Session::parse(answer_text.as_bytes()).unwrap_or_else(|e| panic!("answer is not SDP ({e}): {}", context()));
    assert_eq!(answer.medias.len(), offer.medias.len(), "one answer m-line per offered m-line: {}", context());
    let session_hold = offer.connection.as_ref().is_some_and(|c| c.connection_address.starts_with("0.0.0.0"));

    let mut accepted = 0;
    for (offered, answered) in offer.medias.iter().zip(&answer.medias) {
        assert_eq!(answered.media, offered.media, "m-lines keep their kind and order: {}", context());
        if answered.port == 0 {
            continue;
        }
        accepted += 1;
        let offered_pts: Vec<u8> = offered.fmt.split_whitespace().filter_map(|pt| pt.parse().ok()).collect();
        let answered_pts: Vec<u8> = answered.fmt.split_whitespace().map(|pt| pt.parse().unwrap()).collect();
        let accepted_media = negotiation.accepted().find(|m| m.payload_type == answered_pts[0] && m.kind().to_string() == answered.media);
        let accepted_media = accepted_media.unwrap_or_else(|| panic!("answer PT {} was not negotiated: {}", answered_pts[0], context()));
        // One codec, and the offered telephone-event after it if there was one.
        let expected_pts: Vec<u8> = std::iter::once(accepted_media.payload_type).chain(accepted_media.telephone_event.as_ref().map(|e| e.payload_type)).collect();
        assert_eq!(answered_pts, expected_pts, "{}", context());
        for pt in &answered_pts {
            assert!(offered_pts.contains(pt), "answer PT {pt} was not offered: {}", context());
        }

        let offered_direction = direction_in(&offered.attributes)
            .or(direction_in(&offer.attributes))
            .unwrap_or(Direction::SendRecv);
        let answered_direction = direction_in(&answered.attributes).expect("the answer states every direction");
        let hold = match offered.connections.first() {
            Some(c) => c.connection_address.starts_with("0.0.0.0"),
            None => session_hold,
        };
        // RFC 3264 6.1: never send to a peer that does not receive, never
        // expect media from a peer that does not send.
        assert!(!answered_direction.sends() || offered_direction.receives(), "{}", context());
        assert!(!answered_direction.receives() || offered_direction.sends(), "{}", context());
        if !hold {
            assert_eq!(answered_direction, offered_direction.reversed(), "{}", context());
        }
    }
    let negotiated = usize::from(negotiation.audio.is_some()) + usize::from(negotiation.video.is_some());
    assert_eq!(accepted, negotiated, "{}", context());

    // Tutti's answer is itself an offer Tutti accepts, with the same payload types.
    let again = negotiate(answer_text, MediaEncryption::Optional).unwrap_or_else(|e| panic!("answer not negotiable ({e}): {}", context()));
    let pts = |n: &Negotiation| (n.audio.as_ref().map(|m| m.payload_type), n.video.as_ref().map(|m| m.payload_type));
    assert_eq!(pts(&again), pts(negotiation), "{}", context());
}

fn fixtures() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sdp");
    let mut offers: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "sdp"))
        .map(|path| std::fs::read_to_string(path).unwrap())
        .collect();
    offers.sort();
    assert!(offers.len() >= 20, "the fixtures of {} are missing", dir.display());
    offers
}

/// One edit of an offer, applied line by line so most results stay close to SDP.
#[derive(Clone, Debug)]
enum Mutation {
    DeleteLine(Index),
    DuplicateLine(Index),
    SwapLines(Index, Index),
    ReplaceLine(Index, String),
    InsertLine(Index, String),
    /// Overwrites one character of a line.
    ReplaceChar(Index, Index, char),
    /// Cuts the text at a character.
    Truncate(Index),
}

/// Text that looks like SDP lines, with the values that stress the parsers.
fn sdp_line() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]=[ -~]{0,30}",
        "a=(rtpmap|fmtp|rtcp|rtcp-fb|rtcp-mux|crypto|sendonly|recvonly|inactive|sendrecv):[ -~]{0,20}",
        "m=(audio|video|application) [0-9]{1,6} (RTP/AVP|RTP/AVPF|RTP/SAVP)( [0-9*a-z]{1,4}){0,4}",
        "c=IN IP[46] [0-9a-f.:/]{0,20}",
        any::<String>(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<Index>().prop_map(Mutation::DeleteLine),
        any::<Index>().prop_map(Mutation::DuplicateLine),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (any::<Index>(), sdp_line()).prop_map(|(i, line)| Mutation::ReplaceLine(i, line)),
        (any::<Index>(), sdp_line()).prop_map(|(i, line)| Mutation::InsertLine(i, line)),
        (any::<Index>(), any::<Index>(), any::<char>()).prop_map(|(l, c, ch)| Mutation::ReplaceChar(l, c, ch)),
        any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(offer: &str, mutations: &[Mutation]) -> String {
    let mut lines: Vec<String> = offer.split("\r\n").map(str::to_string).collect();
    for mutation in mutations {
        let n = lines.len();
        match mutation {
            Mutation::DeleteLine(i) if n > 0 => {
                lines.remove(i.index(n));
            }
            Mutation::DuplicateLine(i) if n > 0 => {
                let line = lines[i.index(n)].clone();
                lines.insert(i.index(n), line);
            }
            Mutation::SwapLines(a, b) if n > 0 => lines.swap(a.index(n), b.index(n)),
            Mutation::ReplaceLine(i, line) if n > 0 => lines[i.index(n)] = line.clone(),
            Mutation::InsertLine(i, line) => lines.insert(i.index(n + 1), line.clone()),
            Mutation::ReplaceChar(l, c, ch) if n > 0 => {
                let line = &mut lines[l.index(n)];
                let mut chars: Vec<char> = line.chars().collect();
                if !chars.is_empty() {
                    let at = c.index(chars.len());
                    chars[at] = *ch;
                    *line = chars.into_iter().collect();
                }
            }
            Mutation::Truncate(at) => {
                let text = lines.join("\r\n");
                let cut: String = text.chars().take(at.index(text.chars().count() + 1)).collect();
                lines = cut.split("\r\n").map(str::to_string).collect();
            }
            _ => {}
        }
    }
    lines.join("\r\n")
}

/// An m-line, generated field by field.
#[derive(Clone, Debug)]
struct MlineSpec {
    media: &'static str,
    port: u32,
    proto: &'static str,
    formats: Vec<FormatSpec>,
    direction: Option<&'static str>,
    connection: Option<&'static str>,
    rtcp_mux: bool,
    rtcp: Option<String>,
}

#[derive(Clone, Debug)]
struct FormatSpec {
    /// As written in the m= line: usually a number 0-127, sometimes not.
    token: String,
    rtpmap: Option<String>,
    fmtp: Option<String>,
    feedback: Vec<&'static str>,
}

/// Mostly what real endpoints send, so that most offers get an answer whose
/// properties are then checked; sometimes a value that must be refused.
fn format_spec() -> impl Strategy<Value = FormatSpec> {
    let token = prop_oneof![
        20 => (0u32..=127).prop_map(|pt| pt.to_string()),
        1 => prop::sample::select(vec!["128", "300", "*", "x", "-1", "+96", "096"]).prop_map(str::to_string),
    ];
    let valid_rtpmap = prop::sample::select(vec![
        ("opus", "48000", Some("2")),
        ("OPUS", "48000", Some("2")),
        ("PCMU", "8000", None),
        ("pcma", "8000", None),
        ("G722", "8000", Some("1")),
        ("H264", "90000", None),
        ("h264", "90000", None),
        ("VP8", "90000", None),
        ("VP9", "90000", None),
        ("G729", "8000", None),
        ("telephone-event", "8000", None),
    ]);
    let odd_rtpmap = (
        prop::sample::select(vec!["opus", "H264", "VP8", "", "x/y"]),
        prop::sample::select(vec!["8000", "0", "x", "99999999999", ""]),
        prop::option::of(prop::sample::select(vec!["1", "0", "x", ""])),
    );
    let rtpmap = prop_oneof![4 => valid_rtpmap, 1 => odd_rtpmap];
    let fmtp_param = prop_oneof![
        "packetization-mode=[0-3x]",
        "stereo=[01]",
        "profile-level-id=[0-9a-f]{6}",
        "[a-zA-Z-]{0,10}=?[ -~]{0,8}",
    ];
    let fmtp = prop::option::of((prop::collection::vec(fmtp_param, 0..4), prop::sample::select(vec![";", "; "])));
    let feedback = prop::collection::vec(prop::sample::select(vec!["nack", "nack pli", "ccm fir", "goog-remb", ""]), 0..3);
    (token, prop::option::weighted(0.8, rtpmap), fmtp, feedback).prop_map(|(token, rtpmap, fmtp, feedback)| {
        let rtpmap = rtpmap.map(|(name, clock, channels)| match channels {
            Some(channels) => format!("{token} {name}/{clock}/{channels}"),
            None => format!("{token} {name}/{clock}"),
        });
        let fmtp = fmtp.map(|(params, separator)| format!("{token} {}", params.join(separator)));
        FormatSpec { token, rtpmap, fmtp, feedback }
    })
}

fn mline_spec() -> impl Strategy<Value = MlineSpec> {
    let media = prop::sample::select(vec!["audio", "audio", "audio", "video", "video", "video", "application", "image"]);
    let port = prop_oneof![16 => 1024u32..=65534, 2 => Just(0u32), 1 => 1u32..1024, 1 => Just(65535), 1 => Just(65536)];
    let proto = prop_oneof![
        8 => prop::sample::select(vec!["RTP/AVP", "RTP/AVPF", "rtp/avp"]),
        1 => prop::sample::select(vec!["RTP/SAVP", "UDP/TLS/RTP/SAVPF", "TCP/BFCP", "udptl"]),
    ];
    let direction = prop::option::of(prop::sample::select(vec!["sendrecv", "sendonly", "recvonly", "inactive", "SENDONLY"]));
    let formats = prop_oneof![20 => prop::collection::vec(format_spec(), 1..5), 1 => Just(Vec::new())];
    let rtcp = prop::option::weighted(
        0.2,
        prop_oneof![
            (0u32..=65536).prop_map(|port| port.to_string()),
            (0u32..=65535).prop_map(|port| format!("{port} IN IP4 10.0.0.9")),
            (0u32..=65535).prop_map(|port| format!("{port} IN IP4 not-an-ip")),
            "[ -~]{0,12}",
        ],
    );
    (media, port, proto, formats, direction, prop::option::weighted(0.3, connection()), any::<bool>(), rtcp).prop_map(
        |(media, port, proto, formats, direction, connection, rtcp_mux, rtcp)| MlineSpec {
            media,
            port,
            proto,
            formats,
            direction,
            connection,
            rtcp_mux,
            rtcp,
        },
    )
}

fn connection() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        8 => prop::sample::select(vec!["IN IP4 10.0.0.5", "IN IP4 0.0.0.0"]),
        1 => prop::sample::select(vec!["IN IP4 224.2.1.1/127", "IN IP6 ::1", "IN IP4 host.example", "IN IP4 "]),
    ]
}

/// A whole offer: session-level connection and direction, then the m-lines.
fn structured_offer() -> impl Strategy<Value = String> {
    let direction = prop::option::of(prop::sample::select(vec!["sendrecv", "sendonly", "recvonly", "inactive"]));
    let mlines = prop_oneof![20 => prop::collection::vec(mline_spec(), 1..5), 1 => Just(Vec::new())];
    (prop::option::weighted(0.9, connection()), direction, mlines).prop_map(|(connection, direction, mlines)| {
        let mut sdp = String::from("v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=-\r\n");
        if let Some(c) = connection {
            sdp += &format!("c={c}\r\n");
        }
        sdp += "t=0 0\r\n";
        if let Some(d) = direction {
            sdp += &format!("a={d}\r\n");
        }
        for m in mlines {
            let tokens: Vec<&str> = m.formats.iter().map(|f| f.token.as_str()).collect();
            sdp += &format!("m={} {} {} {}\r\n", m.media, m.port, m.proto, tokens.join(" "));
            if let Some(c) = m.connection {
                sdp += &format!("c={c}\r\n");
            }
            for format in &m.formats {
                if let Some(rtpmap) = &format.rtpmap {
                    sdp += &format!("a=rtpmap:{rtpmap}\r\n");
                }
                if let Some(fmtp) = &format.fmtp {
                    sdp += &format!("a=fmtp:{fmtp}\r\n");
                }
                for fb in &format.feedback {
                    sdp += &format!("a=rtcp-fb:{} {fb}\r\n", format.token);
                }
            }
            if m.rtcp_mux {
                sdp += "a=rtcp-mux\r\n";
            }
            if let Some(rtcp) = &m.rtcp {
                sdp += &format!("a=rtcp:{rtcp}\r\n");
            }
            if let Some(d) = m.direction {
                sdp += &format!("a={d}\r\n");
            }
        }
        sdp
    })
}

/// A codec as an offer writes it, and what Tutti makes of it (`None`: not supported).
type OfferedCodec = (&'static str, Option<&'static str>, Option<Codec>);

const AUDIO_CODECS: [OfferedCodec; 7] = [
    ("opus/48000/2", None, Some(Codec::Audio(AudioCodec::Opus { stereo: false }))),
    ("opus/48000/2", Some("stereo=1"), Some(Codec::Audio(AudioCodec::Opus { stereo: true }))),
    ("PCMU/8000", None, Some(Codec::Audio(AudioCodec::Pcmu))),
    ("PCMA/8000", None, Some(Codec::Audio(AudioCodec::Pcma))),
    ("G722/8000", None, Some(Codec::Audio(AudioCodec::G722))),
    ("G729/8000", Some("annexb=no"), None),
    ("telephone-event/8000", Some("0-16"), None),
];

const VIDEO_CODECS: [OfferedCodec; 6] = [
    ("H264/90000", Some("profile-level-id=42e01f;packetization-mode=1"), Some(Codec::Video(VideoCodec::H264 { packetization_mode: 1 }))),
    ("H264/90000", Some("profile-level-id=42e01f"), Some(Codec::Video(VideoCodec::H264 { packetization_mode: 0 }))),
    ("H264/90000", Some("packetization-mode=2"), None),
    ("VP8/90000", None, Some(Codec::Video(VideoCodec::Vp8))),
    ("VP9/90000", None, None),
    ("H263-1998/90000", None, None),
];

/// An m-line that Tutti must accept: RTP, a usable port, and at least one
/// supported codec among unsupported ones.
fn acceptable_mline() -> impl Strategy<Value = (MediaKind, Vec<OfferedCodec>, Option<&'static str>, bool)> {
    let kind = prop::sample::select(vec![MediaKind::Audio, MediaKind::Video]);
    (kind, prop::sample::select(vec!["sendrecv", "sendonly", "recvonly", "inactive"]), any::<bool>())
        .prop_flat_map(|(kind, direction, rtcp_mux)| {
            let table = match kind {
                MediaKind::Audio => AUDIO_CODECS.to_vec(),
                MediaKind::Video => VIDEO_CODECS.to_vec(),
            };
            let codecs = prop::collection::vec(prop::sample::select(table), 1..5)
                .prop_filter("one supported codec at least", |codecs| codecs.iter().any(|c| c.2.is_some()));
            (Just(kind), codecs, prop::option::of(Just(direction)), Just(rtcp_mux))
        })
}

proptest! {
    #![proptest_config(crate::proptest_config())]

    /// The positive side: an offer with a supported codec on every RTP
    /// m-line is answered, with the first supported codec of the first
    /// m-line of each kind (H.264 mode 1 before mode 0), at the offerer's payload type.
    #[test]
    fn offers_with_a_supported_codec_are_answered_with_the_first_one(
        mlines in prop::collection::vec(acceptable_mline(), 1..4),
        base_port in (1024u16..60000).prop_map(|p| p & !1),
    ) {
        let mut offer = String::from("v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n");
        let mut expected: [Option<(Codec, u8)>; 2] = [None, None];
        for (index, (kind, codecs, direction, rtcp_mux)) in mlines.iter().enumerate() {
            let pts: Vec<u8> = (0..codecs.len() as u8).map(|i| 96 + i).collect();
            let fmt: Vec<String> = pts.iter().map(u8::to_string).collect();
            offer += &format!("m={kind} {} RTP/AVP {}\r\n", base_port + 2 * index as u16, fmt.join(" "));
            for (pt, (rtpmap, fmtp, _)) in pts.iter().zip(codecs) {
                offer += &format!("a=rtpmap:{pt} {rtpmap}\r\n");
                if let Some(fmtp) = fmtp {
                    offer += &format!("a=fmtp:{pt} {fmtp}\r\n");
                }
            }
            if *rtcp_mux {
                offer += "a=rtcp-mux\r\n";
            }
            if let Some(direction) = direction {
                offer += &format!("a={direction}\r\n");
            }
            let slot = &mut expected[usize::from(*kind == MediaKind::Video)];
            if slot.is_none() {
                let supported: Vec<(Codec, u8)> = pts.iter().zip(codecs).filter_map(|(pt, (_, _, codec))| codec.map(|c| (c, *pt))).collect();
                // H.264 mode 1 wins over mode 0 listed before it.
                let mode_1 = supported.iter().find(|(c, _)| *c == Codec::Video(VideoCodec::H264 { packetization_mode: 1 }));
                *slot = match supported.first() {
                    Some((Codec::Video(VideoCodec::H264 { packetization_mode: 0 }), _)) => mode_1.or(supported.first()).copied(),
                    first => first.copied(),
                };
            }
        }
        let negotiation = negotiate(&offer, MediaEncryption::Optional).unwrap_or_else(|e| panic!("refused ({e}):\n{offer}"));
        let chosen = |m: &Option<NegotiatedMedia>| m.as_ref().map(|m| (m.codec, m.payload_type));
        prop_assert_eq!([chosen(&negotiation.audio), chosen(&negotiation.video)], expected, "{}", offer);
        check_answer(&offer, &negotiation, &negotiation.answer(&LOCAL, CANVAS, 1));
    }
}

#[test]
fn every_fixture_satisfies_the_properties() {
    for offer in fixtures() {
        check_offer(&offer);
    }
}

proptest! {
    #![proptest_config(crate::proptest_config())]

    #[test]
    fn arbitrary_text_never_panics(offer in any::<String>()) {
        check_offer(&offer);
    }

    #[test]
    fn arbitrary_sdp_lines_never_panic(lines in prop::collection::vec(sdp_line(), 0..12), crlf in any::<bool>()) {
        let mut offer = String::from("v=0\r\n");
        offer += &lines.join(if crlf { "\r\n" } else { "\n" });
        check_offer(&offer);
    }

    #[test]
    fn mutated_real_offers_hold_the_properties(
        fixture in any::<Index>(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        // Read once per process: the fixtures do not change during a run.
        static FIXTURES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        let fixtures = FIXTURES.get_or_init(fixtures);
        check_offer(&mutate(&fixtures[fixture.index(fixtures.len())], &mutations));
    }

    #[test]
    fn generated_offers_hold_the_properties(offer in structured_offer()) {
        check_offer(&offer);
    }
}
