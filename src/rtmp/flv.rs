//! FLV tag bodies as RTMP carries them (video and audio messages are FLV tag
//! bodies without the tag header), and the `onMetaData` properties.
//!
//! Reference: Adobe "Video File Format Specification" v10.1, annex E.4.2-E.4.3.

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
const AVC_SEQUENCE_HEADER: u8 = 0;
const AVC_NALU: u8 = 1;
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

/// Reading bodies back, for tests: what a player's demuxer sees.
#[cfg(test)]
pub(crate) mod read {
    /// (frame type, codec id, AVC packet type, composition time, payload)
    pub fn video_body(body: &[u8]) -> (u8, u8, u8, i32, &[u8]) {
        assert!(body.len() >= 5, "a video body has a 5-byte header: {body:?}");
        // Sign-extend the 24-bit big-endian composition time.
        let composition_time = i32::from_be_bytes([body[2], body[3], body[4], 0]) >> 8;
        (body[0] >> 4, body[0] & 0x0f, body[1], composition_time, &body[5..])
    }

    /// (sound format, flags, AAC packet type, payload)
    pub fn audio_body(body: &[u8]) -> (u8, u8, u8, &[u8]) {
        assert!(body.len() >= 2, "an AAC body has a 2-byte header: {body:?}");
        (body[0] >> 4, body[0] & 0x0f, body[1], &body[2..])
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::proptest_config())]

        #[test]
        fn avc_bodies_carry_their_header_and_the_access_unit_verbatim(
            keyframe in any::<bool>(),
            composition_time_ms in prop_oneof![-100_000i64..100_000, any::<i64>()],
            access_unit in prop::collection::vec(any::<u8>(), 0..2048),
        ) {
            let body = avc_nalu(keyframe, composition_time_ms, &access_unit);
            prop_assert_eq!(body.len(), 5 + access_unit.len());
            let (frame_type, codec, packet_type, offset, payload) = read::video_body(&body);
            prop_assert_eq!(frame_type, if keyframe { FRAME_TYPE_KEY } else { FRAME_TYPE_INTER });
            prop_assert_eq!(codec, AVC_CODEC_ID);
            prop_assert_eq!(packet_type, AVC_NALU);
            let clamped = composition_time_ms.clamp(*COMPOSITION_TIME_RANGE.start(), *COMPOSITION_TIME_RANGE.end());
            prop_assert_eq!(i64::from(offset), clamped);
            prop_assert_eq!(payload, &access_unit[..]);
        }

        #[test]
        fn sequence_headers_carry_the_configuration_verbatim(config in prop::collection::vec(any::<u8>(), 0..512)) {
            let video = avc_sequence_header(&config);
            prop_assert_eq!(read::video_body(&video), (FRAME_TYPE_KEY, AVC_CODEC_ID, AVC_SEQUENCE_HEADER, 0, &config[..]));
            let audio = aac_sequence_header(&config);
            prop_assert_eq!(read::audio_body(&audio), (AAC_SOUND_FORMAT, 0x0f, AAC_SEQUENCE_HEADER, &config[..]));
        }

        #[test]
        fn aac_bodies_carry_the_frame_verbatim(frame in prop::collection::vec(any::<u8>(), 0..2048)) {
            let body = aac_raw(&frame);
            prop_assert_eq!(body.len(), 2 + frame.len());
            prop_assert_eq!(read::audio_body(&body), (AAC_SOUND_FORMAT, 0x0f, AAC_RAW, &frame[..]));
        }
    }
}
