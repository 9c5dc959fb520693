//! The codecs Tutti speaks on the RTP side, with the facts the rest of the
//! system needs about each: RTP encoding names, clock rates, static payload
//! types and the raw-media format the encoder expects.

use serde::Serialize;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Audio,
    Video,
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AudioCodec {
    /// `stereo` is the receiver's `stereo=1` fmtp preference (RFC 7587).
    Opus { stereo: bool },
    Pcmu,
    Pcma,
    G722,
}

/// H.264 packetization mode 0 needs every NAL unit in one RTP packet, so it
/// takes an encoder configured for small slices: the two modes are distinct
/// encodes, not just distinct payloaders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    H264 { packetization_mode: u8 },
    Vp8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    Audio(AudioCodec),
    Video(VideoCodec),
}

impl AudioCodec {
    pub const ALL: [AudioCodec; 4] = [
        AudioCodec::Opus { stereo: false },
        AudioCodec::Pcmu,
        AudioCodec::Pcma,
        AudioCodec::G722,
    ];

    /// Encoding name as written in `a=rtpmap` and in GStreamer RTP caps.
    pub fn encoding_name(self) -> &'static str {
        match self {
            AudioCodec::Opus { .. } => "OPUS",
            AudioCodec::Pcmu => "PCMU",
            AudioCodec::Pcma => "PCMA",
            AudioCodec::G722 => "G722",
        }
    }

    /// RTP clock rate. G.722 keeps 8000 for historical reasons (RFC 3551 4.5.2)
    /// although it samples at 16 kHz.
    pub fn clock_rate(self) -> u32 {
        match self {
            AudioCodec::Opus { .. } => 48000,
            AudioCodec::Pcmu | AudioCodec::Pcma | AudioCodec::G722 => 8000,
        }
    }

    /// Channel count written after the clock rate in `a=rtpmap`, if any.
    pub fn rtpmap_channels(self) -> Option<u32> {
        match self {
            AudioCodec::Opus { .. } => Some(2),
            _ => None,
        }
    }

    pub fn static_payload_type(self) -> Option<u8> {
        match self {
            AudioCodec::Pcmu => Some(0),
            AudioCodec::Pcma => Some(8),
            AudioCodec::G722 => Some(9),
            AudioCodec::Opus { .. } => None,
        }
    }

    /// Sample rate and channel count of the raw audio the encoder takes.
    pub fn raw_format(self) -> (u32, u32) {
        match self {
            AudioCodec::Opus { stereo } => (48000, if stereo { 2 } else { 1 }),
            AudioCodec::Pcmu | AudioCodec::Pcma => (8000, 1),
            AudioCodec::G722 => (16000, 1),
        }
    }

    /// Profile name in `pipelines/` (see `media::profiles`).
    pub fn profile_name(self) -> &'static str {
        match self {
            AudioCodec::Opus { .. } => "opus",
            AudioCodec::Pcmu => "pcmu",
            AudioCodec::Pcma => "pcma",
            AudioCodec::G722 => "g722",
        }
    }
}

impl VideoCodec {
    pub const ALL: [VideoCodec; 3] = [
        VideoCodec::H264 { packetization_mode: 1 },
        VideoCodec::H264 { packetization_mode: 0 },
        VideoCodec::Vp8,
    ];

    pub fn encoding_name(self) -> &'static str {
        match self {
            VideoCodec::H264 { .. } => "H264",
            VideoCodec::Vp8 => "VP8",
        }
    }

    pub fn clock_rate(self) -> u32 {
        90000
    }

    /// Decoder profile name: both H.264 modes decode the same way.
    pub fn decoder_profile_name(self) -> &'static str {
        match self {
            VideoCodec::H264 { .. } => "h264",
            VideoCodec::Vp8 => "vp8",
        }
    }

    pub fn encoder_profile_name(self) -> &'static str {
        match self {
            VideoCodec::H264 { packetization_mode: 0 } => "h264-single-nal",
            VideoCodec::H264 { .. } => "h264",
            VideoCodec::Vp8 => "vp8",
        }
    }
}

impl Codec {
    pub fn kind(self) -> MediaKind {
        match self {
            Codec::Audio(_) => MediaKind::Audio,
            Codec::Video(_) => MediaKind::Video,
        }
    }

    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Audio(c) => c.encoding_name(),
            Codec::Video(c) => c.encoding_name(),
        }
    }

    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Audio(c) => c.clock_rate(),
            Codec::Video(c) => c.clock_rate(),
        }
    }

    /// The codec's name as the API shows it; its parameters are fields of their own.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Audio(c) => c.profile_name(),
            Codec::Video(c) => c.decoder_profile_name(),
        }
    }
}

/// Human-readable list of what Tutti accepts, for 415 errors.
pub fn supported_codecs_description() -> String {
    "audio: opus/48000/2, PCMU/8000, PCMA/8000, G722/8000; video: H264/90000 \
     (packetization-mode 0 or 1), VP8/90000; transport: RTP/AVP or RTP/AVPF"
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_names_are_lower_case_without_parameters() {
        let names: Vec<_> = AudioCodec::ALL.map(Codec::Audio).into_iter().chain(VideoCodec::ALL.map(Codec::Video)).map(Codec::name).collect();
        assert_eq!(names, ["opus", "pcmu", "pcma", "g722", "h264", "h264", "vp8"]);
    }

    #[test]
    fn g722_samples_at_16k_but_clocks_at_8k() {
        assert_eq!(AudioCodec::G722.clock_rate(), 8000);
        assert_eq!(AudioCodec::G722.raw_format(), (16000, 1));
    }
}
