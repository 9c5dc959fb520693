//! What the media adapter hands to RTMP outputs: one broadcast encode as
//! plain values, no GStreamer types.
//!
//! Headers and frames travel separately on purpose. Headers are *state*
//! (the latest value wins, every new connection or player needs it, it must
//! never be dropped); frames are a *stream* (ordered, and droppable a whole
//! GOP at a time when a destination cannot keep up).

use bytes::Bytes;

/// Everything a player needs before the first frame: `onMetaData` and the two
/// codec configurations. Set it before the first frame and again whenever it
/// changes; outputs re-send it on every (re)connect by themselves.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamHeaders {
    pub metadata: StreamMetadata,
    /// The AVCDecoderConfigurationRecord: `codec_data` of
    /// `video/x-h264,stream-format=avc,alignment=au`.
    pub avc_decoder_config: Option<Bytes>,
    /// The AudioSpecificConfig: `codec_data` of
    /// `audio/mpeg,mpegversion=4,stream-format=raw`.
    pub aac_audio_specific_config: Option<Bytes>,
}

/// The facts about the encode that `onMetaData` announces.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamMetadata {
    pub width: u32,
    pub height: u32,
    pub frame_rate: f64,
    pub video_bitrate_kbps: u32,
    pub audio_bitrate_kbps: u32,
    pub audio_sample_rate: u32,
    pub audio_channels: u32,
}

/// One encoded frame, timestamps in milliseconds of the encode's running time.
#[derive(Clone, Debug, PartialEq)]
pub enum MediaFrame {
    /// One H.264 access unit as AVCC (length-prefixed) NAL units.
    Video {
        pts_ms: u64,
        dts_ms: u64,
        keyframe: bool,
        data: Bytes,
    },
    /// One raw AAC frame (no ADTS header).
    Audio { pts_ms: u64, data: Bytes },
}

impl MediaFrame {
    pub fn is_keyframe(&self) -> bool {
        matches!(self, MediaFrame::Video { keyframe: true, .. })
    }
}
