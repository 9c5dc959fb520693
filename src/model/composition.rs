//! What a user sets for a composition (the body of `POST /v1/compositions`),
//! with defaults and validation.

use super::h264::FrameSize;
use super::layout::{LayoutConfig, MAX_GRID_CELLS};
use super::output::OutputConfig;
use super::pin::Pin;
use serde::{Deserialize, Serialize};

pub const DEFAULT_WIDTH: u32 = 1280;
pub const DEFAULT_HEIGHT: u32 = 720;
pub const DEFAULT_FPS: u32 = 30;
pub const DEFAULT_BITRATE_KBPS: u32 = 2500;
/// What YouTube and Twitch ask for; HLS segments follow it.
pub const DEFAULT_KEYFRAME_INTERVAL_SECS: u32 = 2;
pub const DEFAULT_SAMPLE_RATE: u32 = 48000;
pub const DEFAULT_CHANNELS: u32 = 2;
/// Callers an audio-only composition takes (a video one is bounded by its
/// grid): far above the 16 cells, below what 2 ports per caller and the
/// mixing thread can serve.
pub const MAX_AUDIO_ONLY_PARTICIPANTS: usize = 500;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompositionConfig {
    #[serde(default)]
    pub name: Option<String>,
    /// No canvas and no video at all: callers' video m-lines are declined.
    /// For audio conferences (the Janus AudioBridge / FreeSWITCH case),
    /// which then hold hundreds of callers rather than a grid's 16.
    #[serde(default)]
    pub audio_only: bool,
    /// The most callers it takes at once: a room's capacity. At most (and
    /// by default) one per grid cell with video, or
    /// [`MAX_AUDIO_ONLY_PARTICIPANTS`] audio-only. One more is refused
    /// (409 through the API, 486 Busy Here over SIP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_participants: Option<usize>,
    /// Asked of every caller who dials in over SIP (keyed in by DTMF)
    /// before it joins the room; never shown back.
    #[serde(default, skip_serializing)]
    pub pin: Option<Pin>,
    #[serde(default)]
    pub video: VideoConfig,
    #[serde(default)]
    pub audio: AudioConfig,
    #[serde(default)]
    pub layout: LayoutConfig,
    /// Outputs to start with the composition; shown separately in the API.
    #[serde(default, skip_serializing)]
    pub outputs: Vec<OutputConfig>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VideoConfig {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_kbps: u32,
    pub keyframe_interval_secs: u32,
}

impl VideoConfig {
    pub fn canvas(&self) -> FrameSize {
        FrameSize { width: self.width, height: self.height }
    }
}

impl Default for VideoConfig {
    fn default() -> Self {
        VideoConfig {
            width: DEFAULT_WIDTH,
            height: DEFAULT_HEIGHT,
            fps: DEFAULT_FPS,
            bitrate_kbps: DEFAULT_BITRATE_KBPS,
            keyframe_interval_secs: DEFAULT_KEYFRAME_INTERVAL_SECS,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioConfig {
    pub sample_rate: u32,
    pub channels: u32,
}

impl Default for AudioConfig {
    fn default() -> Self {
        AudioConfig { sample_rate: DEFAULT_SAMPLE_RATE, channels: DEFAULT_CHANNELS }
    }
}

/// Outputs carry the composite picture; audio-only ones have none.
pub const NO_OUTPUTS_WITHOUT_VIDEO: &str = "an audio-only composition has no outputs (RTMP, HLS and recordings carry the composite picture)";

/// The layout places pictures; audio-only ones have none.
pub const NO_LAYOUT_WITHOUT_VIDEO: &str = "an audio-only composition has no layout (it has no picture)";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid composition: {0}")]
pub struct InvalidConfig(pub String);

impl CompositionConfig {
    /// How many callers it takes at once.
    pub fn participant_limit(&self) -> usize {
        self.max_participants.unwrap_or_else(|| self.kind_limit())
    }

    fn kind_limit(&self) -> usize {
        if self.audio_only { MAX_AUDIO_ONLY_PARTICIPANTS } else { MAX_GRID_CELLS }
    }

    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let v = &self.video;
        let bad = |msg: String| Err(InvalidConfig(msg));
        if !(16..=3840).contains(&v.width) || !(16..=2160).contains(&v.height) {
            return bad(format!(
                "video size {}x{} is outside 16x16..3840x2160",
                v.width, v.height
            ));
        }
        if v.width % 2 != 0 || v.height % 2 != 0 {
            return bad(format!("video size {}x{} must be even (4:2:0 chroma)", v.width, v.height));
        }
        if !(1..=60).contains(&v.fps) {
            return bad(format!("video.fps {} is outside 1..60", v.fps));
        }
        if !(100..=50_000).contains(&v.bitrate_kbps) {
            return bad(format!("video.bitrate_kbps {} is outside 100..50000", v.bitrate_kbps));
        }
        if !(1..=10).contains(&v.keyframe_interval_secs) {
            return bad(format!("video.keyframe_interval_secs {} is outside 1..10", v.keyframe_interval_secs));
        }
        if self.audio_only && !self.outputs.is_empty() {
            return bad(NO_OUTPUTS_WITHOUT_VIDEO.into());
        }
        for output in &self.outputs {
            output.validate().map_err(|e| InvalidConfig(e.to_string()))?;
        }
        let a = &self.audio;
        if ![8000, 16000, 24000, 32000, 44100, 48000].contains(&a.sample_rate) {
            return bad(format!(
                "audio.sample_rate {} is not one of 8000, 16000, 24000, 32000, 44100, 48000",
                a.sample_rate
            ));
        }
        if !(1..=2).contains(&a.channels) {
            return bad(format!("audio.channels {} must be 1 or 2", a.channels));
        }
        if let Some(most) = self.max_participants
            && !(1..=self.kind_limit()).contains(&most)
        {
            return bad(format!("max_participants {most} is outside 1..{}", self.kind_limit()));
        }
        if let Some(name) = &self.name
            && name.chars().count() > 200
        {
            return bad("name is longer than 200 characters".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_capacity_is_bounded_by_its_kind() {
        let with = |body: &str| serde_json::from_str::<CompositionConfig>(body).unwrap();
        assert_eq!(with("{}").participant_limit(), MAX_GRID_CELLS);
        assert_eq!(with(r#"{"audio_only": true}"#).participant_limit(), MAX_AUDIO_ONLY_PARTICIPANTS);
        assert_eq!(with(r#"{"max_participants": 2}"#).participant_limit(), 2);
        assert!(with(r#"{"max_participants": 0}"#).validate().is_err());
        assert!(with(r#"{"max_participants": 17}"#).validate().is_err());
        assert!(with(r#"{"audio_only": true, "max_participants": 300}"#).validate().is_ok());
    }

    #[test]
    fn empty_body_takes_every_default() {
        let c: CompositionConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c.video, VideoConfig::default());
        assert_eq!(c.audio.sample_rate, 48000);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn partial_video_keeps_other_defaults() {
        let c: CompositionConfig = serde_json::from_str(r#"{"video":{"width":640,"height":360}}"#).unwrap();
        assert_eq!((c.video.width, c.video.height, c.video.fps), (640, 360, 30));
    }

    #[test]
    fn unknown_fields_are_rejected_by_name() {
        let err = serde_json::from_str::<CompositionConfig>(r#"{"vidoe":{}}"#).unwrap_err();
        assert!(err.to_string().contains("vidoe"), "{err}");
    }

    #[test]
    fn odd_or_huge_sizes_are_invalid() {
        let mut c = CompositionConfig::default();
        c.video.width = 641;
        assert!(c.validate().unwrap_err().0.contains("even"));
        c.video.width = 10_000;
        assert!(c.validate().is_err());
        c = CompositionConfig::default();
        c.audio.channels = 6;
        assert!(c.validate().is_err());
    }

    #[test]
    fn audio_only_takes_no_outputs() {
        let c: CompositionConfig = serde_json::from_str(r#"{"audio_only":true}"#).unwrap();
        assert!(c.audio_only && c.validate().is_ok());
        let c: CompositionConfig = serde_json::from_str(r#"{"audio_only":true,"outputs":[{"kind":"hls"}]}"#).unwrap();
        assert_eq!(c.validate().unwrap_err().0, NO_OUTPUTS_WITHOUT_VIDEO);
    }
}
