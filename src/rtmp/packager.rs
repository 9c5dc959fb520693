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
    last_video_ms: u32,
    last_audio_ms: u32,
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
                tags.extend(header_tags(headers, timestamp_ms));
                self.sent_headers = Some(headers.clone());
            }
            self.waiting_for_keyframe = false;
        } else if self.waiting_for_keyframe {
            return tags;
        }
        let origin_ms = self.origin_ms.expect("set by the keyframe that ended the wait");
        let timestamp_ms = session_time(dts_ms, origin_ms).max(self.last_video_ms);
        self.last_video_ms = timestamp_ms;
        let composition_time_ms = pts_ms as i64 - dts_ms as i64;
        tags.push(FlvTag::Video {
            timestamp_ms,
            body: flv::avc_nalu(keyframe, composition_time_ms, data),
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
            timestamp_ms,
            body: flv::aac_raw(data),
        }]
    }
}

/// RTMP timestamps are 32-bit milliseconds that wrap (after 49 days).
fn session_time(source_ms: u64, origin_ms: u64) -> u32 {
    source_ms.saturating_sub(origin_ms) as u32
}

fn header_tags(headers: &StreamHeaders, timestamp_ms: u32) -> Vec<FlvTag> {
    let mut tags = vec![FlvTag::Metadata(flv::on_metadata(&headers.metadata))];
    if let Some(record) = &headers.avc_decoder_config {
        tags.push(FlvTag::Video {
            timestamp_ms,
            body: flv::avc_sequence_header(record),
        });
    }
    if let Some(config) = &headers.aac_audio_specific_config {
        tags.push(FlvTag::Audio {
            timestamp_ms,
            body: flv::aac_sequence_header(config),
        });
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::media::StreamMetadata;

    fn headers(sps: u8) -> StreamHeaders {
        StreamHeaders {
            metadata: StreamMetadata {
                width: 640,
                height: 360,
                frame_rate: 30.0,
                video_bitrate_kbps: 800,
                audio_bitrate_kbps: 128,
                audio_sample_rate: 48000,
                audio_channels: 2,
            },
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
