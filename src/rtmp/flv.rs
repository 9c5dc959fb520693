//! FLV tag bodies as RTMP carries them (video and audio messages are FLV tag
//! bodies without the tag header): written for outputs, read back from
//! publishers; and the `onMetaData` properties.
//!
//! References: Adobe "Video File Format Specification" v10.1, annex
//! E.4.2-E.4.3; Veovera "Enhanced RTMP" v2 (the ExHeader bit and FourCCs).

use super::media::StreamMetadata;
use bytes::{BufMut, Bytes, BytesMut};
use rml_rtmp::sessions::StreamMetadata as RtmpMetadata;

/// `CodecID` 7 in the FLV video tag header.
pub const AVC_CODEC_ID: u8 = 7;
/// `SoundFormat` 10 in the FLV audio tag header.
pub const AAC_SOUND_FORMAT: u8 = 10;
/// Announced as `encoder` in `onMetaData`.
pub const ENCODER_NAME: &str = "Tutti";

const FRAME_TYPE_KEY: u8 = 1;
const FRAME_TYPE_INTER: u8 = 2;
/// Carries no picture (seek markers, for example).
const FRAME_TYPE_COMMAND: u8 = 5;
/// Enhanced RTMP: set in byte 0 when a FourCC, not a legacy codec id, follows.
const VIDEO_EX_HEADER: u8 = 0x80;
const AVC_SEQUENCE_HEADER: u8 = 0;
const AVC_NALU: u8 = 1;
/// Frame type and codec, packet type, 24-bit composition time.
const AVC_HEADER_BYTES: usize = 5;
/// Enhanced RTMP: SoundFormat 9 means a FourCC follows.
const AUDIO_EX_HEADER_SOUND_FORMAT: u8 = 9;
const AAC_SEQUENCE_HEADER: u8 = 0;
const AAC_RAW: u8 = 1;
/// SoundFormat 10 (AAC), 44 kHz, 16-bit, stereo: the spec says AAC always
/// carries these flags; the real rate and channels are in the
/// AudioSpecificConfig.
const AAC_AUDIO_TAG_HEADER: u8 = (AAC_SOUND_FORMAT << 4) | (3 << 2) | (1 << 1) | 1;

/// The range of FLV's signed 24-bit composition time offset.
const COMPOSITION_TIME_RANGE: std::ops::RangeInclusive<i64> = -(1 << 23)..=(1 << 23) - 1;

/// Video body carrying the AVCDecoderConfigurationRecord.
pub fn avc_sequence_header(decoder_config: &[u8]) -> Bytes {
    video_body(FRAME_TYPE_KEY, AVC_SEQUENCE_HEADER, 0, decoder_config)
}

/// Video body carrying one access unit of AVCC NAL units. The composition
/// time offset (`pts - dts`) is clamped to what 24 signed bits hold.
pub fn avc_nalu(keyframe: bool, composition_time_ms: i64, access_unit: &[u8]) -> Bytes {
    let frame_type = if keyframe { FRAME_TYPE_KEY } else { FRAME_TYPE_INTER };
    let offset = composition_time_ms.clamp(*COMPOSITION_TIME_RANGE.start(), *COMPOSITION_TIME_RANGE.end());
    video_body(frame_type, AVC_NALU, offset as i32, access_unit)
}

/// Audio body carrying the AudioSpecificConfig.
pub fn aac_sequence_header(audio_specific_config: &[u8]) -> Bytes {
    audio_body(AAC_SEQUENCE_HEADER, audio_specific_config)
}

/// Audio body carrying one raw AAC frame.
pub fn aac_raw(frame: &[u8]) -> Bytes {
    audio_body(AAC_RAW, frame)
}

/// The `onMetaData` properties, in the form rml_rtmp's sessions serialize
/// (`@setDataFrame` for a publisher, plain `onMetaData` for a player).
pub fn on_metadata(metadata: &StreamMetadata) -> RtmpMetadata {
    RtmpMetadata {
        video_width: Some(metadata.width),
        video_height: Some(metadata.height),
        video_codec_id: Some(u32::from(AVC_CODEC_ID)),
        video_frame_rate: Some(metadata.frame_rate as f32),
        video_bitrate_kbps: Some(metadata.video_bitrate_kbps),
        audio_codec_id: Some(u32::from(AAC_SOUND_FORMAT)),
        audio_bitrate_kbps: Some(metadata.audio_bitrate_kbps),
        audio_sample_rate: Some(metadata.audio_sample_rate),
        audio_channels: Some(metadata.audio_channels),
        audio_is_stereo: Some(metadata.audio_channels == 2),
        encoder: Some(ENCODER_NAME.to_string()),
    }
}

/// What a publisher's video tag body holds, as far as Tutti takes it.
#[derive(Clone, Debug, PartialEq)]
pub enum VideoTag {
    /// The AVCDecoderConfigurationRecord of an AVC sequence header.
    AvcDecoderConfig(Bytes),
    /// One access unit of AVCC (length-prefixed) NAL units.
    AvcAccessUnit {
        keyframe: bool,
        /// `pts - dts`, signed.
        composition_time_ms: i32,
        data: Bytes,
    },
    /// Nothing a decoder needs: an end of sequence, a command frame, or a
    /// body too short to hold its header.
    Ignored,
}

/// What a publisher's audio tag body holds, as far as Tutti takes it.
#[derive(Clone, Debug, PartialEq)]
pub enum AudioTag {
    AacAudioSpecificConfig(Bytes),
    /// One raw AAC frame.
    AacFrame(Bytes),
    /// An empty or truncated body, or an AAC packet type that does not exist.
    Ignored,
}

/// A codec Tutti does not take, named the way people know it ("HEVC
/// (Enhanced RTMP)", "MP3").
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct UnsupportedCodec(pub String);

/// Reads a publisher's video tag body; `body` is sliced, not copied.
pub fn read_video_tag(body: &Bytes) -> Result<VideoTag, UnsupportedCodec> {
    let Some(&first) = body.first() else {
        return Ok(VideoTag::Ignored);
    };
    if first & VIDEO_EX_HEADER != 0 {
        let codec = match body.get(1..5) {
            Some(b"hvc1") => "HEVC (Enhanced RTMP)".to_string(),
            Some(b"av01") => "AV1 (Enhanced RTMP)".to_string(),
            Some(b"vp09") => "VP9 (Enhanced RTMP)".to_string(),
            // Readable in principle, but no encoder Tutti meets needs it: keep one H.264 path.
            Some(b"avc1") => "H.264 in Enhanced RTMP framing".to_string(),
            Some(fourcc) => format!("video FourCC {:?} (Enhanced RTMP)", String::from_utf8_lossy(fourcc)),
            None => "video with a truncated Enhanced RTMP header".to_string(),
        };
        return Err(UnsupportedCodec(codec));
    }
    let (frame_type, codec_id) = (first >> 4, first & 0x0f);
    if frame_type == FRAME_TYPE_COMMAND {
        return Ok(VideoTag::Ignored);
    }
    if codec_id != AVC_CODEC_ID {
        return Err(UnsupportedCodec(legacy_video_codec_name(codec_id)));
    }
    if body.len() < AVC_HEADER_BYTES {
        return Ok(VideoTag::Ignored);
    }
    // Sign-extend the 24-bit big-endian composition time.
    let composition_time_ms = i32::from_be_bytes([body[2], body[3], body[4], 0]) >> 8;
    let payload = body.slice(AVC_HEADER_BYTES..);
    Ok(match body[1] {
        AVC_SEQUENCE_HEADER => VideoTag::AvcDecoderConfig(payload),
        AVC_NALU => VideoTag::AvcAccessUnit {
            keyframe: frame_type == FRAME_TYPE_KEY,
            composition_time_ms,
            data: payload,
        },
        // 2 is the end of a sequence; a decoder learns nothing from it.
        _ => VideoTag::Ignored,
    })
}

/// Reads a publisher's audio tag body; `body` is sliced, not copied.
pub fn read_audio_tag(body: &Bytes) -> Result<AudioTag, UnsupportedCodec> {
    let Some(&first) = body.first() else {
        return Ok(AudioTag::Ignored);
    };
    let sound_format = first >> 4;
    if sound_format != AAC_SOUND_FORMAT {
        return Err(UnsupportedCodec(sound_format_name(sound_format, body)));
    }
    let Some(&packet_type) = body.get(1) else {
        return Ok(AudioTag::Ignored);
    };
    let payload = body.slice(2..);
    Ok(match packet_type {
        AAC_SEQUENCE_HEADER => AudioTag::AacAudioSpecificConfig(payload),
        AAC_RAW => AudioTag::AacFrame(payload),
        _ => AudioTag::Ignored,
    })
}

/// Names from the FLV spec's `CodecID` table; 12 is the unofficial HEVC id
/// some Chinese CDNs and older ffmpeg forks use.
fn legacy_video_codec_name(codec_id: u8) -> String {
    match codec_id {
        1 => "JPEG video".to_string(),
        2 => "Sorenson H.263".to_string(),
        3 => "Screen Video".to_string(),
        4 => "On2 VP6".to_string(),
        5 => "On2 VP6 with alpha".to_string(),
        6 => "Screen Video 2".to_string(),
        12 => "HEVC (non-standard FLV codec id 12)".to_string(),
        other => format!("video codec id {other}"),
    }
}

/// Names from the FLV spec's `SoundFormat` table, or the Enhanced RTMP
/// FourCC that follows format 9.
fn sound_format_name(sound_format: u8, body: &[u8]) -> String {
    match sound_format {
        0 | 3 => "linear PCM".to_string(),
        1 => "ADPCM".to_string(),
        2 | 14 => "MP3".to_string(),
        4..=6 => "Nellymoser".to_string(),
        7 => "G.711 A-law".to_string(),
        8 => "G.711 mu-law".to_string(),
        11 => "Speex".to_string(),
        AUDIO_EX_HEADER_SOUND_FORMAT => match body.get(1..5) {
            Some(b"Opus") => "Opus (Enhanced RTMP)".to_string(),
            Some(b"mp4a") => "AAC in Enhanced RTMP framing".to_string(),
            Some(fourcc) => format!("audio FourCC {:?} (Enhanced RTMP)", String::from_utf8_lossy(fourcc)),
            None => "audio with a truncated Enhanced RTMP header".to_string(),
        },
        other => format!("sound format {other}"),
    }
}

fn video_body(frame_type: u8, packet_type: u8, composition_time_ms: i32, payload: &[u8]) -> Bytes {
    let mut body = BytesMut::with_capacity(5 + payload.len());
    body.put_u8((frame_type << 4) | AVC_CODEC_ID);
    body.put_u8(packet_type);
    // Signed 24-bit big-endian: the low three bytes of the two's complement.
    body.put_slice(&composition_time_ms.to_be_bytes()[1..]);
    body.put_slice(payload);
    body.freeze()
}

fn audio_body(packet_type: u8, payload: &[u8]) -> Bytes {
    let mut body = BytesMut::with_capacity(2 + payload.len());
    body.put_u8(AAC_AUDIO_TAG_HEADER);
    body.put_u8(packet_type);
    body.put_slice(payload);
    body.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start of an AVCDecoderConfigurationRecord (version 1, Baseline
    /// 3.1, one 2-byte SPS); the body copies it verbatim, so this is enough.
    const AVC_RECORD: [u8; 11] = [0x01, 0x42, 0xc0, 0x1f, 0xff, 0xe1, 0x00, 0x02, 0x67, 0x42, 0x01];
    /// AAC-LC, 48 kHz, stereo.
    const AAC_LC_48K_STEREO: [u8; 2] = [0x11, 0x90];

    #[test]
    fn avc_sequence_header_is_keyframe_avc_packet_type_0_then_the_record() {
        let body = avc_sequence_header(&AVC_RECORD);
        let mut expected = vec![0x17, 0x00, 0x00, 0x00, 0x00];
        expected.extend_from_slice(&AVC_RECORD);
        assert_eq!(&body[..], &expected[..]);
    }

    #[test]
    fn avc_keyframe_nalu_carries_packet_type_1_and_its_composition_offset() {
        let body = avc_nalu(true, 66, &[0, 0, 0, 1, 0x65]);
        assert_eq!(&body[..], &[0x17, 0x01, 0x00, 0x00, 0x42, 0, 0, 0, 1, 0x65]);
    }

    #[test]
    fn avc_inter_frame_has_frame_type_2() {
        let body = avc_nalu(false, 0, &[0, 0, 0, 1, 0x41]);
        assert_eq!(&body[..], &[0x27, 0x01, 0x00, 0x00, 0x00, 0, 0, 0, 1, 0x41]);
    }

    #[test]
    fn negative_composition_offset_is_24_bit_twos_complement() {
        let body = avc_nalu(false, -1, &[]);
        assert_eq!(&body[..], &[0x27, 0x01, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn composition_offset_beyond_24_bits_is_clamped_not_wrapped() {
        assert_eq!(&avc_nalu(false, 1 << 30, &[])[2..], &[0x7f, 0xff, 0xff]);
        assert_eq!(&avc_nalu(false, -(1 << 30), &[])[2..], &[0x80, 0x00, 0x00]);
    }

    #[test]
    fn aac_sequence_header_is_0xaf_0x00_then_the_audio_specific_config() {
        assert_eq!(&aac_sequence_header(&AAC_LC_48K_STEREO)[..], &[0xaf, 0x00, 0x11, 0x90]);
    }

    #[test]
    fn aac_raw_frame_is_0xaf_0x01_then_the_frame() {
        assert_eq!(&aac_raw(&[0x21, 0x10, 0x04])[..], &[0xaf, 0x01, 0x21, 0x10, 0x04]);
    }

    fn video(bytes: &[u8]) -> Result<VideoTag, UnsupportedCodec> {
        read_video_tag(&Bytes::copy_from_slice(bytes))
    }

    fn audio(bytes: &[u8]) -> Result<AudioTag, UnsupportedCodec> {
        read_audio_tag(&Bytes::copy_from_slice(bytes))
    }

    fn unsupported(codec: &str) -> UnsupportedCodec {
        UnsupportedCodec(codec.to_string())
    }

    #[test]
    fn an_avc_sequence_header_reads_as_the_decoder_config() {
        let mut body = vec![0x17, 0x00, 0x00, 0x00, 0x00];
        body.extend_from_slice(&AVC_RECORD);
        assert_eq!(video(&body), Ok(VideoTag::AvcDecoderConfig(Bytes::copy_from_slice(&AVC_RECORD))));
    }

    #[test]
    fn an_avc_keyframe_reads_with_its_positive_composition_time() {
        let body = [0x17, 0x01, 0x00, 0x00, 0x42, 0, 0, 0, 1, 0x65];
        let expected = VideoTag::AvcAccessUnit {
            keyframe: true,
            composition_time_ms: 66,
            data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
        };
        assert_eq!(video(&body), Ok(expected));
    }

    #[test]
    fn an_avc_inter_frame_reads_with_its_negative_composition_time() {
        // -40 as 24-bit two's complement.
        let body = [0x27, 0x01, 0xff, 0xff, 0xd8, 0, 0, 0, 1, 0x41];
        let expected = VideoTag::AvcAccessUnit {
            keyframe: false,
            composition_time_ms: -40,
            data: Bytes::from_static(&[0, 0, 0, 1, 0x41]),
        };
        assert_eq!(video(&body), Ok(expected));
    }

    #[test]
    fn avc_end_of_sequence_and_command_frames_are_ignored() {
        assert_eq!(video(&[0x17, 0x02, 0x00, 0x00, 0x00]), Ok(VideoTag::Ignored));
        assert_eq!(video(&[0x57, 0x00]), Ok(VideoTag::Ignored));
    }

    #[test]
    fn enhanced_rtmp_video_is_refused_naming_its_codec() {
        // ExHeader | keyframe | PacketType 0 (sequence start), then the FourCC.
        assert_eq!(video(b"\x90hvc1\x01\x02"), Err(unsupported("HEVC (Enhanced RTMP)")));
        assert_eq!(video(b"\x91av01"), Err(unsupported("AV1 (Enhanced RTMP)")));
        assert_eq!(video(b"\x90vp09"), Err(unsupported("VP9 (Enhanced RTMP)")));
        assert_eq!(video(b"\x90avc1"), Err(unsupported("H.264 in Enhanced RTMP framing")));
    }

    #[test]
    fn legacy_video_codecs_other_than_avc_are_refused() {
        assert_eq!(video(&[0x1c, 0x00, 0x00, 0x00, 0x00]), Err(unsupported("HEVC (non-standard FLV codec id 12)")));
        assert_eq!(video(&[0x24, 0x00]), Err(unsupported("On2 VP6")));
    }

    #[test]
    fn aac_config_and_raw_frames_read_as_such() {
        assert_eq!(
            audio(&[0xaf, 0x00, 0x11, 0x90]),
            Ok(AudioTag::AacAudioSpecificConfig(Bytes::copy_from_slice(&AAC_LC_48K_STEREO)))
        );
        assert_eq!(
            audio(&[0xaf, 0x01, 0x21, 0x10, 0x04]),
            Ok(AudioTag::AacFrame(Bytes::from_static(&[0x21, 0x10, 0x04])))
        );
    }

    #[test]
    fn audio_other_than_aac_is_refused_naming_it() {
        assert_eq!(audio(&[0x2f, 0xff, 0xfb]), Err(unsupported("MP3")));
        assert_eq!(audio(b"\x90Opus"), Err(unsupported("Opus (Enhanced RTMP)")));
    }

    #[test]
    fn empty_and_truncated_bodies_are_ignored_without_panicking() {
        assert_eq!(video(&[]), Ok(VideoTag::Ignored));
        assert_eq!(video(&[0x17]), Ok(VideoTag::Ignored));
        assert_eq!(video(&[0x17, 0x01, 0x00, 0x00]), Ok(VideoTag::Ignored));
        assert_eq!(audio(&[]), Ok(AudioTag::Ignored));
        assert_eq!(audio(&[0xaf]), Ok(AudioTag::Ignored));
        // An ExHeader cut short is still not H.264 in classic FLV.
        assert_eq!(video(&[0x90, b'h']), Err(unsupported("video with a truncated Enhanced RTMP header")));
    }

    #[test]
    fn on_metadata_announces_avc_aac_and_the_encode() {
        let metadata = StreamMetadata {
            width: 1280,
            height: 720,
            frame_rate: 30.0,
            video_bitrate_kbps: 2500,
            audio_bitrate_kbps: 128,
            audio_sample_rate: 48000,
            audio_channels: 2,
        };
        let properties = on_metadata(&metadata);
        assert_eq!(
            properties,
            RtmpMetadata {
                video_width: Some(1280),
                video_height: Some(720),
                video_codec_id: Some(7),
                video_frame_rate: Some(30.0),
                video_bitrate_kbps: Some(2500),
                audio_codec_id: Some(10),
                audio_bitrate_kbps: Some(128),
                audio_sample_rate: Some(48000),
                audio_channels: Some(2),
                audio_is_stereo: Some(true),
                encoder: Some("Tutti".to_string()),
            }
        );
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::proptest_config())]

        #[test]
        fn avc_bodies_read_back_as_written(
            keyframe in any::<bool>(),
            composition_time_ms in prop_oneof![-100_000i64..100_000, any::<i64>()],
            access_unit in prop::collection::vec(any::<u8>(), 0..2048),
        ) {
            let body = avc_nalu(keyframe, composition_time_ms, &access_unit);
            prop_assert_eq!(body.len(), 5 + access_unit.len());
            let clamped = composition_time_ms.clamp(*COMPOSITION_TIME_RANGE.start(), *COMPOSITION_TIME_RANGE.end());
            prop_assert_eq!(
                read_video_tag(&body),
                Ok(VideoTag::AvcAccessUnit { keyframe, composition_time_ms: clamped as i32, data: Bytes::from(access_unit) })
            );
        }

        #[test]
        fn sequence_headers_read_back_as_written(config in prop::collection::vec(any::<u8>(), 0..512)) {
            let config = Bytes::from(config);
            prop_assert_eq!(read_video_tag(&avc_sequence_header(&config)), Ok(VideoTag::AvcDecoderConfig(config.clone())));
            prop_assert_eq!(read_audio_tag(&aac_sequence_header(&config)), Ok(AudioTag::AacAudioSpecificConfig(config)));
        }

        #[test]
        fn aac_frames_read_back_as_written(frame in prop::collection::vec(any::<u8>(), 0..2048)) {
            let body = aac_raw(&frame);
            prop_assert_eq!(body.len(), 2 + frame.len());
            prop_assert_eq!(read_audio_tag(&body), Ok(AudioTag::AacFrame(Bytes::from(frame))));
        }

        #[test]
        fn any_body_reads_without_panicking(body in prop::collection::vec(any::<u8>(), 0..16)) {
            let body = Bytes::from(body);
            let _ = read_video_tag(&body);
            let _ = read_audio_tag(&body);
        }
    }
}
