//! Decides what one RTMP session (a connection to a destination, or one
//! player of the embedded server) sends, frame by frame. Pure: no socket,
//! no clock.
//!
//! - Nothing goes out before a keyframe, and the first keyframe is preceded
//!   by metadata and the sequence headers, so every session is decodable
//!   from its first byte.
//! - Timestamps are rebased so the session starts at 0 (what players and
//!   ingest servers expect of a fresh publish) and each track is kept
//!   non-decreasing, so a jittery source cannot make a server drop frames.
//! - Headers that change are sent again just before the next keyframe,
//!   which is the first frame that may depend on them.
//! - After a gap (frames dropped upstream), the session waits for the next
//!   keyframe instead of sending frames that reference missing ones.

use super::flv;
use super::media::{MediaFrame, StreamHeaders};
use bytes::Bytes;
use rml_rtmp::sessions::StreamMetadata as RtmpMetadata;

/// One RTMP message the session must send, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum FlvTag {
    Metadata(RtmpMetadata),
    Video { timestamp_ms: u32, body: Bytes },
    Audio { timestamp_ms: u32, body: Bytes },
}

#[derive(Debug, Default)]
pub struct Packager {
    /// The newest headers from the source.
    headers: Option<StreamHeaders>,
    /// The headers this session has sent, to notice a change.
    sent_headers: Option<StreamHeaders>,
    /// Source time (ms) that maps to session time 0; set by the first keyframe.
    origin_ms: Option<u64>,
    waiting_for_keyframe: bool,
    /// Session time of each track's last frame, before RTMP's 32-bit wrap.
    last_video_ms: u64,
    last_audio_ms: u64,
}

impl Packager {
    pub fn new() -> Packager {
        Packager {
            waiting_for_keyframe: true,
            ..Packager::default()
        }
    }

    pub fn set_headers(&mut self, headers: StreamHeaders) {
        self.headers = Some(headers);
    }

    /// Frames were lost before reaching this session: resume at the next keyframe.
    pub fn skip_to_next_keyframe(&mut self) {
        self.waiting_for_keyframe = true;
    }

    /// The tags to send for `frame`: none, the frame, or (before a keyframe)
    /// metadata and sequence headers followed by the frame.
    pub fn package(&mut self, frame: &MediaFrame) -> Vec<FlvTag> {
        match frame {
            MediaFrame::Video {
                pts_ms,
                dts_ms,
                keyframe,
                data,
            } => self.video(*pts_ms, *dts_ms, *keyframe, data),
            MediaFrame::Audio { pts_ms, data } => self.audio(*pts_ms, data),
        }
    }

    fn video(&mut self, pts_ms: u64, dts_ms: u64, keyframe: bool, data: &[u8]) -> Vec<FlvTag> {
        let mut tags = Vec::new();
        if keyframe {
            let Some(headers) = self.headers.as_ref().filter(|h| h.avc_decoder_config.is_some()) else {
                // A keyframe cannot be decoded without its SPS/PPS: wait for headers.
                return tags;
            };
            let origin_ms = *self.origin_ms.get_or_insert(dts_ms);
            let timestamp_ms = session_time(dts_ms, origin_ms).max(self.last_video_ms);
            if self.sent_headers.as_ref() != Some(headers) {
                // Audio may run ahead of the picture: its header must not take its track back in time.
                self.last_audio_ms = self.last_audio_ms.max(timestamp_ms);
                tags.extend(header_tags(headers, rtmp_time(timestamp_ms), rtmp_time(self.last_audio_ms)));
                self.sent_headers = Some(headers.clone());
            }
            self.waiting_for_keyframe = false;
        } else if self.waiting_for_keyframe {
            return tags;
        }
        let origin_ms = self.origin_ms.expect("set by the keyframe that ended the wait");
        let timestamp_ms = session_time(dts_ms, origin_ms).max(self.last_video_ms);
        self.last_video_ms = timestamp_ms;
        tags.push(FlvTag::Video {
            timestamp_ms: rtmp_time(timestamp_ms),
            body: flv::avc_nalu(keyframe, composition_time_ms(pts_ms, dts_ms), data),
        });
        tags
    }

    fn audio(&mut self, pts_ms: u64, data: &[u8]) -> Vec<FlvTag> {
        let audio_header_sent = self
            .sent_headers
            .as_ref()
            .is_some_and(|h| h.aac_audio_specific_config.is_some());
        let Some(origin_ms) = self.origin_ms else {
            return Vec::new();
        };
        // Audio from before the first picture belongs to no one in this session.
        if self.waiting_for_keyframe || !audio_header_sent || pts_ms < origin_ms {
            return Vec::new();
        }
        let timestamp_ms = session_time(pts_ms, origin_ms).max(self.last_audio_ms);
        self.last_audio_ms = timestamp_ms;
        vec![FlvTag::Audio {
            timestamp_ms: rtmp_time(timestamp_ms),
            body: flv::aac_raw(data),
        }]
    }
}

/// Milliseconds since the session's first keyframe. Kept in 64 bits so that
/// "never earlier than the last frame" still holds once RTMP time wraps.
fn session_time(source_ms: u64, origin_ms: u64) -> u64 {
    source_ms.saturating_sub(origin_ms)
}

/// RTMP timestamps are 32-bit milliseconds that wrap after 49.7 days; a
/// receiver compares them modulo 2^32, so the wrap is the truncation.
fn rtmp_time(session_ms: u64) -> u32 {
    session_ms as u32
}

/// `pts - dts`, saturated to `i64`: timestamps are `u64`, and casting them
/// to `i64` first could overflow or flip the sign.
fn composition_time_ms(pts_ms: u64, dts_ms: u64) -> i64 {
    let offset = i128::from(pts_ms) - i128::from(dts_ms);
    i64::try_from(offset).unwrap_or(if offset > 0 { i64::MAX } else { i64::MIN })
}

fn header_tags(headers: &StreamHeaders, video_ms: u32, audio_ms: u32) -> Vec<FlvTag> {
    let mut tags = vec![FlvTag::Metadata(flv::on_metadata(&headers.metadata))];
    if let Some(record) = &headers.avc_decoder_config {
        tags.push(FlvTag::Video {
            timestamp_ms: video_ms,
            body: flv::avc_sequence_header(record),
        });
    }
    if let Some(config) = &headers.aac_audio_specific_config {
        tags.push(FlvTag::Audio {
            timestamp_ms: audio_ms,
            body: flv::aac_sequence_header(config),
        });
    }
    tags
}

/// The stream the packager tests (plain and property) describe.
#[cfg(test)]
fn metadata() -> crate::rtmp::media::StreamMetadata {
    crate::rtmp::media::StreamMetadata {
        width: 640,
        height: 360,
        frame_rate: 30.0,
        video_bitrate_kbps: 800,
        audio_bitrate_kbps: 128,
        audio_sample_rate: 48000,
        audio_channels: 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(sps: u8) -> StreamHeaders {
        StreamHeaders {
            metadata: metadata(),
            avc_decoder_config: Some(Bytes::from(vec![1, 0x42, 0, sps])),
            aac_audio_specific_config: Some(Bytes::from_static(&[0x11, 0x90])),
        }
    }

    fn video(dts_ms: u64, keyframe: bool) -> MediaFrame {
        MediaFrame::Video {
            pts_ms: dts_ms,
            dts_ms,
            keyframe,
            data: Bytes::from_static(&[0, 0, 0, 1, 9]),
        }
    }

    fn audio(pts_ms: u64) -> MediaFrame {
        MediaFrame::Audio {
            pts_ms,
            data: Bytes::from_static(&[0x21]),
        }
    }

    /// (kind, timestamp) of each tag, with sequence headers told apart.
    fn summary(tags: &[FlvTag]) -> Vec<(&'static str, u32)> {
        tags.iter()
            .map(|tag| match tag {
                FlvTag::Metadata(_) => ("meta", 0),
                FlvTag::Video { timestamp_ms, body } if body[1] == 0 => ("avc-header", *timestamp_ms),
                FlvTag::Video { timestamp_ms, body } if body[0] == 0x17 => ("key", *timestamp_ms),
                FlvTag::Video { timestamp_ms, .. } => ("inter", *timestamp_ms),
                FlvTag::Audio { timestamp_ms, body } if body[1] == 0 => ("aac-header", *timestamp_ms),
                FlvTag::Audio { timestamp_ms, .. } => ("audio", *timestamp_ms),
            })
            .collect()
    }

    fn run(packager: &mut Packager, frames: &[MediaFrame]) -> Vec<(&'static str, u32)> {
        frames.iter().flat_map(|f| summary(&packager.package(f))).collect()
    }

    #[test]
    fn session_starts_at_a_keyframe_with_metadata_and_headers_at_time_zero() {
        let mut packager = Packager::new();
        packager.set_headers(headers(1));
        let sent = run(
            &mut packager,
            &[
                audio(5000),
                video(5010, false),
                video(5043, true),
                audio(5050),
                video(5076, false),
            ],
        );
        assert_eq!(
            sent,
            vec![
                ("meta", 0),
                ("avc-header", 0),
                ("aac-header", 0),
                ("key", 0),
                ("audio", 7),
                ("inter", 33)
            ]
        );
    }

    #[test]
    fn nothing_is_sent_before_the_avc_record_is_known() {
        let mut packager = Packager::new();
        assert!(run(&mut packager, &[video(0, true), audio(10)]).is_empty());
        packager.set_headers(headers(1));
        assert_eq!(run(&mut packager, &[video(33, false), video(66, true)])[3], ("key", 0));
    }

    #[test]
    fn audio_older_than_the_first_keyframe_is_dropped() {
        let mut packager = Packager::new();
        packager.set_headers(headers(1));
        let sent = run(&mut packager, &[video(1000, true), audio(990), audio(1010)]);
        assert_eq!(&sent[4..], &[("audio", 10)]);
    }

    #[test]
    fn each_track_stays_monotonic_when_the_source_jitters() {
        let mut packager = Packager::new();
        packager.set_headers(headers(1));
        let sent = run(
            &mut packager,
            &[
                video(100, true),
                audio(130),
                audio(120),
                video(166, false),
                video(150, false),
            ],
        );
        assert_eq!(
            &sent[4..],
            &[("audio", 30), ("audio", 30), ("inter", 66), ("inter", 66)]
        );
    }

    #[test]
    fn changed_headers_are_sent_again_before_the_next_keyframe_only() {
        let mut packager = Packager::new();
        packager.set_headers(headers(1));
        run(&mut packager, &[video(0, true)]);
        packager.set_headers(headers(2));
        let sent = run(&mut packager, &[video(33, false), video(66, true)]);
        assert_eq!(
            sent,
            vec![
                ("inter", 33),
                ("meta", 0),
                ("avc-header", 66),
                ("aac-header", 66),
                ("key", 66)
            ]
        );
    }

    #[test]
    fn unchanged_headers_are_not_repeated() {
        let mut packager = Packager::new();
        packager.set_headers(headers(1));
        run(&mut packager, &[video(0, true)]);
        packager.set_headers(headers(1));
        assert_eq!(run(&mut packager, &[video(1000, true)]), vec![("key", 1000)]);
    }

    #[test]
    fn after_a_gap_the_session_waits_for_a_keyframe_and_keeps_its_clock() {
        let mut packager = Packager::new();
        packager.set_headers(headers(1));
        run(&mut packager, &[video(0, true), video(33, false)]);
        packager.skip_to_next_keyframe();
        let sent = run(
            &mut packager,
            &[video(66, false), audio(70), video(1000, true), audio(1010)],
        );
        assert_eq!(sent, vec![("key", 1000), ("audio", 1010)]);
    }

    #[test]
    fn audio_waits_for_its_audio_specific_config() {
        let mut packager = Packager::new();
        let mut video_only = headers(1);
        video_only.aac_audio_specific_config = None;
        packager.set_headers(video_only);
        assert_eq!(
            run(&mut packager, &[video(0, true), audio(10)]),
            vec![("meta", 0), ("avc-header", 0), ("key", 0)]
        );
        packager.set_headers(headers(1));
        let sent = run(&mut packager, &[audio(20), video(1000, true), audio(1010)]);
        assert_eq!(
            sent,
            vec![
                ("meta", 0),
                ("avc-header", 1000),
                ("aac-header", 1000),
                ("key", 1000),
                ("audio", 1010)
            ]
        );
    }

    #[test]
    fn session_time_wraps_at_32_bits_instead_of_sticking_at_the_wrap() {
        let mut packager = Packager::new();
        packager.set_headers(headers(1));
        let before_wrap = (1 << 32) - 5;
        let sent = run(&mut packager, &[video(0, true), video(before_wrap, false), video((1 << 32) + 10, false)]);
        assert_eq!(&sent[3..], &[("key", 0), ("inter", before_wrap as u32), ("inter", 10)]);
    }

    #[test]
    fn a_repeated_audio_header_never_takes_the_audio_track_back_in_time() {
        let mut packager = Packager::new();
        packager.set_headers(headers(1));
        run(&mut packager, &[video(0, true), audio(500)]);
        packager.set_headers(headers(2));
        let sent = run(&mut packager, &[video(100, true), audio(520)]);
        assert_eq!(sent, vec![("meta", 0), ("avc-header", 100), ("aac-header", 500), ("key", 100), ("audio", 520)]);
    }

    #[test]
    fn timestamps_beyond_i64_give_a_saturated_composition_offset_not_a_panic() {
        let mut packager = Packager::new();
        packager.set_headers(headers(1));
        let frame = |pts_ms, dts_ms| MediaFrame::Video { pts_ms, dts_ms, keyframe: true, data: Bytes::new() };
        // Once an overflow in `pts as i64 - dts as i64`, once the wrong sign.
        for (pts_ms, dts_ms) in [(1 << 63, 671_954_596_243_033_007), (1 << 63, 0)] {
            let tags = packager.package(&frame(pts_ms, dts_ms));
            let Some(FlvTag::Video { body, .. }) = tags.last() else { panic!("no frame: {tags:?}") };
            assert_eq!(&body[2..5], &[0x7f, 0xff, 0xff], "pts {pts_ms} dts {dts_ms}");
        }
    }

    #[test]
    fn composition_offset_is_pts_minus_dts() {
        let mut packager = Packager::new();
        packager.set_headers(headers(1));
        let tags = packager.package(&MediaFrame::Video {
            pts_ms: 1066,
            dts_ms: 1000,
            keyframe: true,
            data: Bytes::from_static(&[0]),
        });
        let FlvTag::Video { body, timestamp_ms: 0 } = &tags[3] else {
            panic!("expected the keyframe at 0: {tags:?}")
        };
        assert_eq!(&body[2..5], &[0, 0, 66]);
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::rtmp::flv::{AudioTag, VideoTag, read_audio_tag, read_video_tag};
    use proptest::prelude::*;

    /// What the source does to a session, in order.
    #[derive(Clone, Debug)]
    enum Event {
        Headers { avc: Option<Vec<u8>>, aac: Option<Vec<u8>> },
        Gap,
        Video { pts_ms: u64, dts_ms: u64, keyframe: bool, data: Vec<u8> },
        Audio { pts_ms: u64, data: Vec<u8> },
    }

    fn headers(avc: &Option<Vec<u8>>, aac: &Option<Vec<u8>>) -> StreamHeaders {
        StreamHeaders {
            metadata: metadata(),
            avc_decoder_config: avc.clone().map(Bytes::from),
            aac_audio_specific_config: aac.clone().map(Bytes::from),
        }
    }

    fn payload() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(any::<u8>(), 0..8)
    }

    fn config() -> impl Strategy<Value = Option<Vec<u8>>> {
        prop::option::weighted(0.8, prop::collection::vec(any::<u8>(), 1..8))
    }

    /// How the source's clock moves from one frame to the next.
    #[derive(Clone, Copy, Debug)]
    enum Clock {
        /// Only forward, by a frame's worth or by up to 24 days at once.
        Monotonic,
        /// Back and forth, by a frame's worth or by hours (never 2^31 ms, the
        /// most that 32-bit RTMP time can tell apart, in a whole session).
        Jittery,
        /// Any value at all.
        Arbitrary,
    }

    const MAX_EVENTS: usize = 48;

    fn events(clock_kind: Clock) -> impl Strategy<Value = Vec<Event>> {
        const HALF_RTMP_RANGE: i64 = 1 << 31;
        // Small enough that no two frames of a track are 2^31 ms apart.
        const JUMP: i64 = HALF_RTMP_RANGE / MAX_EVENTS as i64;
        let step = match clock_kind {
            Clock::Monotonic => prop_oneof![9 => 0i64..100, 1 => 0..HALF_RTMP_RANGE].boxed(),
            Clock::Jittery => prop_oneof![9 => -100i64..100, 1 => -JUMP..JUMP].boxed(),
            Clock::Arbitrary => any::<i64>().boxed(),
        };
        let event = prop_oneof![
            1 => (config(), config()).prop_map(|(avc, aac)| (Event::Headers { avc, aac }, 0)),
            1 => Just((Event::Gap, 0)),
            8 => (step.clone(), prop_oneof![0u64..200, any::<u64>()], prop::bool::weighted(0.2), payload()).prop_map(
                |(step, delay, keyframe, data)| (Event::Video { pts_ms: delay, dts_ms: 0, keyframe, data }, step)
            ),
            8 => (step, payload()).prop_map(|(step, data)| (Event::Audio { pts_ms: 0, data }, step)),
        ];
        (any::<u64>(), prop::collection::vec(event, 1..MAX_EVENTS)).prop_map(move |(start, events)| {
            // Start anywhere, but where a monotonic clock cannot overflow.
            let mut clock = match clock_kind {
                Clock::Monotonic => start % (u64::MAX / 2),
                _ => start,
            };
            events
                .into_iter()
                .map(|(event, step)| {
                    let mut tick = || {
                        clock = match clock_kind {
                            Clock::Arbitrary => step as u64,
                            _ => clock.saturating_add_signed(step),
                        };
                        clock
                    };
                    match event {
                        // pts = dts + a B-frame delay, or anything at all.
                        Event::Video { pts_ms: delay, keyframe, data, .. } => {
                            let dts_ms = tick();
                            Event::Video { pts_ms: dts_ms.wrapping_add(delay), dts_ms, keyframe, data }
                        }
                        Event::Audio { data, .. } => Event::Audio { pts_ms: tick(), data },
                        other => other,
                    }
                })
                .collect()
        })
    }

    /// Runs `events` through a packager, checking each tag as it comes out;
    /// returns (source ms, session ms) of every audio and video frame sent.
    fn check_session(events: &[Event], clock: Clock) -> Vec<(u64, u32)> {
        // 32-bit RTMP time tells "later" from "earlier" only within half its
        // range; a monotonic source is checked exactly by its caller instead.
        let check_order = matches!(clock, Clock::Jittery);
        let mut packager = Packager::new();
        let mut current: Option<StreamHeaders> = None;
        // What a player of this session has received so far.
        let (mut avc_sent, mut aac_sent, mut metadata_seen) = (None::<Bytes>, None::<Bytes>, false);
        let (mut last_video, mut last_audio) = (None::<u32>, None::<u32>);
        let mut waiting_for_keyframe = true;
        let mut sent = Vec::new();
        for event in events {
            let (frame, source_ms) = match event {
                Event::Headers { avc, aac } => {
                    let h = headers(avc, aac);
                    packager.set_headers(h.clone());
                    current = Some(h);
                    continue;
                }
                Event::Gap => {
                    packager.skip_to_next_keyframe();
                    waiting_for_keyframe = true;
                    continue;
                }
                Event::Video { pts_ms, dts_ms, keyframe, data } => (
                    MediaFrame::Video { pts_ms: *pts_ms, dts_ms: *dts_ms, keyframe: *keyframe, data: Bytes::from(data.clone()) },
                    *dts_ms,
                ),
                Event::Audio { pts_ms, data } => (MediaFrame::Audio { pts_ms: *pts_ms, data: Bytes::from(data.clone()) }, *pts_ms),
            };
            let tags = packager.package(&frame);
            for (index, tag) in tags.iter().enumerate() {
                match tag {
                    FlvTag::Metadata(_) => metadata_seen = true,
                    FlvTag::Video { timestamp_ms, body } => {
                        assert!(metadata_seen, "metadata comes first: {tags:?}");
                        if let Some(last) = last_video.filter(|_| check_order) {
                            assert!(timestamp_ms.wrapping_sub(last) < 1 << 31, "video went back from {last} to {timestamp_ms}");
                        }
                        last_video = Some(*timestamp_ms);
                        let (tag_keyframe, offset, payload) = match read_video_tag(body).expect("AVC") {
                            VideoTag::AvcDecoderConfig(record) => {
                                let expected = current.as_ref().and_then(|h| h.avc_decoder_config.clone());
                                assert_eq!(Some(record), expected, "the current AVC record");
                                avc_sent = expected;
                                continue;
                            }
                            VideoTag::AvcAccessUnit { keyframe, composition_time_ms, data } => (keyframe, composition_time_ms, data),
                            VideoTag::Ignored => panic!("the packager sent a body a player ignores: {body:?}"),
                        };
                        let MediaFrame::Video { pts_ms, dts_ms, keyframe, data } = &frame else { panic!("video tag for audio") };
                        assert_eq!(index, tags.len() - 1, "the frame comes after its headers");
                        assert!(avc_sent.is_some(), "a frame before the AVC record");
                        if *keyframe {
                            let current_avc = current.as_ref().and_then(|h| h.avc_decoder_config.clone());
                            assert_eq!(avc_sent, current_avc, "a keyframe goes with the current AVC record");
                        }
                        assert!(*keyframe || !waiting_for_keyframe, "an inter frame after a gap");
                        waiting_for_keyframe = false;
                        assert_eq!(tag_keyframe, *keyframe);
                        let expected_offset = (i128::from(*pts_ms) - i128::from(*dts_ms)).clamp(-(1 << 23), (1 << 23) - 1);
                        assert_eq!(i128::from(offset), expected_offset);
                        assert_eq!(payload, data);
                        sent.push((source_ms, *timestamp_ms));
                    }
                    FlvTag::Audio { timestamp_ms, body } => {
                        assert!(metadata_seen, "metadata comes first: {tags:?}");
                        if let Some(last) = last_audio.filter(|_| check_order) {
                            assert!(timestamp_ms.wrapping_sub(last) < 1 << 31, "audio went back from {last} to {timestamp_ms}");
                        }
                        last_audio = Some(*timestamp_ms);
                        let payload = match read_audio_tag(body).expect("AAC") {
                            AudioTag::AacAudioSpecificConfig(config) => {
                                let expected = current.as_ref().and_then(|h| h.aac_audio_specific_config.clone());
                                assert_eq!(Some(config), expected, "the current AudioSpecificConfig");
                                aac_sent = expected;
                                continue;
                            }
                            AudioTag::AacFrame(frame) => frame,
                            AudioTag::Ignored => panic!("the packager sent a body a player ignores: {body:?}"),
                        };
                        let MediaFrame::Audio { data, .. } = &frame else { panic!("audio tag for video") };
                        assert!(aac_sent.is_some(), "audio before its AudioSpecificConfig");
                        assert!(!waiting_for_keyframe, "audio before the picture it goes with");
                        assert_eq!(payload, data);
                        sent.push((source_ms, *timestamp_ms));
                    }
                }
            }
        }
        sent
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]

        #[test]
        fn any_source_gives_well_formed_tags(events in events(Clock::Arbitrary)) {
            check_session(&events, Clock::Arbitrary);
        }

        #[test]
        fn a_jittery_source_gives_each_track_monotonic(events in events(Clock::Jittery)) {
            check_session(&events, Clock::Jittery);
        }

        #[test]
        fn a_monotonic_source_keeps_its_spacing_rebased_to_zero(events in events(Clock::Monotonic)) {
            let sent = check_session(&events, Clock::Monotonic);
            if let Some(&(origin, first)) = sent.first() {
                prop_assert_eq!(first, 0, "the session starts at 0");
                for (source_ms, session_ms) in sent {
                    // Exact: a monotonic source needs no clamping; RTMP time wraps at 2^32.
                    prop_assert_eq!(session_ms, (source_ms - origin) as u32);
                }
            }
        }
    }
}
