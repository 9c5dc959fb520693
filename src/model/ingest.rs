//! What a publisher (OBS, ffmpeg, a hardware encoder) sends, once its
//! transport (RTMP's FLV tags, SRT's MPEG-TS) is taken apart: plain values
//! the media side takes whichever way they came.

use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;

/// What a publisher sends, parsed, as the media adapter takes it.
#[derive(Clone, Debug, PartialEq)]
pub enum IngestEvent {
    /// A publisher was accepted for this key (the first time, or again after it dropped).
    Publishing { peer: SocketAddr },
    /// The H.264 decoder configuration (AVCDecoderConfigurationRecord: an
    /// RTMP publisher's AVC sequence header, or what the SRT demuxer built
    /// from the stream's SPS and PPS); sent before the first frame and again
    /// whenever it changes.
    VideoConfig(Bytes),
    /// How the audio is coded; sent before the first audio frame and again
    /// whenever it changes.
    AudioConfig(AudioConfig),
    /// One H.264 access unit in AVC format (4-byte length-prefixed NAL
    /// units), with its decoding and presentation times.
    Video {
        dts_ms: u32,
        pts_ms: i64,
        keyframe: bool,
        data: Bytes,
    },
    /// One raw AAC frame or Opus packet, as the last `AudioConfig` said.
    Audio { pts_ms: u32, data: Bytes },
    /// The publisher sent something Tutti cannot take (HEVC or AV1, audio
    /// other than AAC); it was disconnected. `reason` is a clear sentence for the API.
    Refused { reason: String },
    /// The publisher stopped publishing or its connection ended.
    Ended,
}

/// A publisher's audio coding.
#[derive(Clone, Debug, PartialEq)]
pub enum AudioConfig {
    /// AAC with its AudioSpecificConfig (an RTMP AAC sequence header, or
    /// what the SRT demuxer read from the ADTS headers).
    Aac(Bytes),
    /// Opus (RFC 7845's mapping family 0: mono or stereo), from MPEG-TS.
    Opus { channels: u8 },
}

impl AudioConfig {
    /// As the API's `codec` names it.
    pub fn codec(&self) -> &'static str {
        match self {
            AudioConfig::Aac(_) => "aac",
            AudioConfig::Opus { .. } => "opus",
        }
    }
}

/// Called by the transport: `Publishing` before a publisher's first frame,
/// `Ended` or `Refused` after its last. Video and audio may come from
/// different threads. Hand the event off quickly (to a channel or an
/// appsrc): the next read from the publisher waits for it.
pub type IngestSink = Arc<dyn Fn(IngestEvent) + Send + Sync>;

/// How a publisher participant's publisher reaches Tutti, as the API asked.
#[derive(Clone, PartialEq, Eq)]
pub enum IngestTransport {
    /// FLV over RTMP to the embedded server, the stream key in the path.
    Rtmp,
    /// MPEG-TS over SRT to the participant's own port, the stream key as
    /// the stream id; with SRT's own encryption when a passphrase is given.
    Srt { passphrase: Option<Passphrase> },
}

/// An SRT passphrase: libsrt takes 10 to 79 characters.
#[derive(Clone, PartialEq, Eq)]
pub struct Passphrase(String);

impl Passphrase {
    pub const LENGTHS: std::ops::RangeInclusive<usize> = 10..=79;

    pub fn new(passphrase: &str) -> Result<Passphrase, String> {
        if Self::LENGTHS.contains(&passphrase.chars().count()) {
            Ok(Passphrase(passphrase.to_string()))
        } else {
            Err(format!("an SRT passphrase has {} to {} characters", Self::LENGTHS.start(), Self::LENGTHS.end()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrases_take_libsrts_lengths_and_never_show() {
        assert!(Passphrase::new("short").is_err());
        assert!(Passphrase::new(&"x".repeat(80)).is_err());
        let passphrase = Passphrase::new("ten chars!").unwrap();
        assert_eq!(passphrase.as_str(), "ten chars!");
        assert_eq!(format!("{passphrase:?}"), "Passphrase(…)");
    }
}
