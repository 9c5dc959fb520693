//! Encoder and decoder profiles: the swappable leaves of every pipeline,
//! loaded from `pipelines/encoders.toml` and `pipelines/decoders.toml`.
//!
//! A profile is a bin description written by the operator, never by an API
//! user: parameters that come from requests (bitrate) are set as properties
//! after parsing, never pasted into the text.

use gstreamer as gst;
use gstreamer::prelude::*;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::model::codec::{AudioCodec, VideoCodec};

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not valid TOML: {source}")]
    Toml { path: PathBuf, source: toml::de::Error },
    #[error("{file}: profile [{name}] is missing (needed for {what})")]
    Missing { file: String, name: String, what: &'static str },
    #[error("{file}: profile [{name}] needs GStreamer elements that are not installed: {elements}")]
    MissingElements { file: String, name: String, elements: String },
    #[error("{file}: profile [{name}] does not parse: {message}")]
    Parse { file: String, name: String, message: String },
    #[error("{file}: profile [{name}] must have exactly one unlinked sink pad and one unlinked src pad")]
    Pads { file: String, name: String },
    #[error("{file}: profile [{name}]: element {element:?} has no property {property:?}")]
    Property { file: String, name: String, element: String, property: String },
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
enum BitrateUnit {
    #[serde(rename = "bit/s")]
    BitsPerSecond,
    #[serde(rename = "kbit/s")]
    KilobitsPerSecond,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BitrateBinding {
    element: String,
    property: String,
    unit: BitrateUnit,
}

/// Which property takes the keyframe interval, in frames.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyframeBinding {
    element: String,
    property: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    description: String,
    #[serde(default)]
    bitrate: Option<BitrateBinding>,
    #[serde(default)]
    keyframes: Option<KeyframeBinding>,
}

/// Values set on a profile's elements after parsing.
#[derive(Clone, Copy, Debug, Default)]
pub struct EncoderSettings {
    pub bitrate_kbps: Option<u32>,
    pub keyframe_interval_frames: Option<u32>,
}

/// The broadcast's audio profile: what CDNs ingest (see pipelines/encoders.toml).
/// Its video is the `h264` profile, shared with callers.
const BROADCAST_AUDIO: &str = "broadcast-aac";

#[derive(Debug)]
pub struct Profiles {
    encoders: BTreeMap<String, Profile>,
    decoders: BTreeMap<String, Profile>,
}

const ENCODERS_FILE: &str = "encoders.toml";
const DECODERS_FILE: &str = "decoders.toml";

impl Profiles {
    /// Loads both files and checks every profile Tutti may need.
    /// Requires `gst::init()`.
    pub fn load(dir: &Path) -> Result<Profiles, ProfileError> {
        let profiles = Profiles { encoders: read_table(&dir.join(ENCODERS_FILE))?, decoders: read_table(&dir.join(DECODERS_FILE))? };
        for (file, table, name, what) in profiles.required() {
            let profile = table.get(name).ok_or_else(|| ProfileError::Missing { file: file.into(), name: name.into(), what })?;
            profile.validate(file, name)?;
        }
        Ok(profiles)
    }

    fn required(&self) -> Vec<(&'static str, &BTreeMap<String, Profile>, &'static str, &'static str)> {
        let mut needed = Vec::new();
        for codec in VideoCodec::ALL {
            needed.push((ENCODERS_FILE, &self.encoders, codec.encoder_profile_name(), "video encoding"));
            needed.push((DECODERS_FILE, &self.decoders, codec.decoder_profile_name(), "video decoding"));
        }
        for codec in AudioCodec::ALL {
            needed.push((ENCODERS_FILE, &self.encoders, codec.profile_name(), "audio encoding"));
            needed.push((DECODERS_FILE, &self.decoders, codec.profile_name(), "audio decoding"));
        }
        needed.push((ENCODERS_FILE, &self.encoders, BROADCAST_AUDIO, "the broadcast audio encode"));
        needed
    }

    pub fn video_encoder(&self, codec: VideoCodec, name: &str, settings: EncoderSettings) -> Result<gst::Bin, ProfileError> {
        self.encoder(codec.encoder_profile_name(), name, settings)
    }

    pub fn audio_encoder(&self, codec: AudioCodec, name: &str) -> Result<gst::Bin, ProfileError> {
        self.encoder(codec.profile_name(), name, EncoderSettings::default())
    }

    pub fn broadcast_audio_encoder(&self, name: &str, bitrate_kbps: u32) -> Result<gst::Bin, ProfileError> {
        self.encoder(BROADCAST_AUDIO, name, EncoderSettings { bitrate_kbps: Some(bitrate_kbps), ..Default::default() })
    }

    fn encoder(&self, profile: &str, name: &str, settings: EncoderSettings) -> Result<gst::Bin, ProfileError> {
        self.encoders[profile].instantiate(ENCODERS_FILE, profile, name, settings)
    }

    pub fn video_decoder(&self, codec: VideoCodec, name: &str) -> Result<gst::Bin, ProfileError> {
        let profile = codec.decoder_profile_name();
        let bin = self.decoders[profile].instantiate(DECODERS_FILE, profile, name, EncoderSettings::default())?;
        make_decoders_resilient(&bin);
        Ok(bin)
    }

    pub fn audio_decoder(&self, codec: AudioCodec, name: &str) -> Result<gst::Bin, ProfileError> {
        let profile = codec.profile_name();
        let bin = self.decoders[profile].instantiate(DECODERS_FILE, profile, name, EncoderSettings::default())?;
        make_decoders_resilient(&bin);
        Ok(bin)
    }
}

fn read_table(path: &Path) -> Result<BTreeMap<String, Profile>, ProfileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read { path: path.into(), source })?;
    toml::from_str(&text).map_err(|source| ProfileError::Toml { path: path.into(), source })
}

impl Profile {
    fn parse(&self, file: &str, name: &str) -> Result<gst::Bin, ProfileError> {
        let mut context = gst::ParseContext::new();
        let parsed = gst::parse::bin_from_description_full(
            &self.description,
            true,
            Some(&mut context),
            gst::ParseFlags::FATAL_ERRORS,
        );
        let missing = context.missing_elements();
        if !missing.is_empty() {
            return Err(ProfileError::MissingElements { file: file.into(), name: name.into(), elements: missing.join(", ") });
        }
        let element = parsed.map_err(|e| ProfileError::Parse { file: file.into(), name: name.into(), message: e.to_string() })?;
        let bin = element
            .downcast::<gst::Bin>()
            .map_err(|_| ProfileError::Parse { file: file.into(), name: name.into(), message: "not a bin".into() })?;
        let directions: Vec<gst::PadDirection> = bin.pads().iter().map(|p| p.direction()).collect();
        let count = |d| directions.iter().filter(|&&x| x == d).count();
        if count(gst::PadDirection::Sink) != 1 || count(gst::PadDirection::Src) != 1 {
            return Err(ProfileError::Pads { file: file.into(), name: name.into() });
        }
        Ok(bin)
    }

    fn validate(&self, file: &str, name: &str) -> Result<(), ProfileError> {
        let bin = self.parse(file, name)?;
        let bindings = [
            self.bitrate.as_ref().map(|b| (&b.element, &b.property)),
            self.keyframes.as_ref().map(|k| (&k.element, &k.property)),
        ];
        for (element, property) in bindings.into_iter().flatten() {
            let has_property = bin.by_name(element).is_some_and(|e| e.find_property(property).is_some());
            if !has_property {
                return Err(ProfileError::Property {
                    file: file.into(),
                    name: name.into(),
                    element: element.clone(),
                    property: property.clone(),
                });
            }
        }
        Ok(())
    }

    fn instantiate(&self, file: &str, profile: &str, name: &str, settings: EncoderSettings) -> Result<gst::Bin, ProfileError> {
        let bin = self.parse(file, profile)?;
        bin.set_property("name", name);
        if let (Some(binding), Some(frames)) = (&self.keyframes, settings.keyframe_interval_frames)
            && let Some(element) = bin.by_name(&binding.element)
        {
            element.set_property_from_str(&binding.property, &frames.to_string());
        }
        if let (Some(binding), Some(kbps)) = (&self.bitrate, settings.bitrate_kbps)
            && let Some(element) = bin.by_name(&binding.element)
        {
            let value = match binding.unit {
                BitrateUnit::BitsPerSecond => u64::from(kbps) * 1000,
                BitrateUnit::KilobitsPerSecond => u64::from(kbps),
            };
            // From a string so that int, uint and int64 properties all work.
            element.set_property_from_str(&binding.property, &value.to_string());
        }
        Ok(bin)
    }
}

/// A caller's broken stream must not take its decoder down: keep decoding
/// past errors, drop corrupted frames, and ask for a keyframe when needed
/// (GstVideoDecoder/GstAudioDecoder base-class properties, where present).
fn make_decoders_resilient(bin: &gst::Bin) {
    for element in bin.iterate_recurse().into_iter().flatten() {
        if element.find_property("max-errors").is_some() {
            element.set_property_from_str("max-errors", "-1");
        }
        for flag in ["automatic-request-sync-points", "discard-corrupted-frames"] {
            if element.find_property(flag).is_some() {
                element.set_property(flag, true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_profiles() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines")
    }

    #[test]
    fn shipped_profiles_validate_and_take_bitrate() {
        gst::init().unwrap();
        let profiles = Profiles::load(&repo_profiles()).unwrap();
        let settings = |kbps| EncoderSettings { bitrate_kbps: Some(kbps), keyframe_interval_frames: Some(50) };
        let bin = profiles.video_encoder(VideoCodec::H264 { packetization_mode: 1 }, "enc", settings(1234)).unwrap();
        assert_eq!(bin.by_name("encoder").unwrap().property::<u32>("bitrate"), 1234);
        assert_eq!(bin.by_name("encoder").unwrap().property::<u32>("key-int-max"), 50);
        let vp8 = profiles.video_encoder(VideoCodec::Vp8, "enc", settings(800)).unwrap();
        assert_eq!(vp8.by_name("encoder").unwrap().property::<i32>("target-bitrate"), 800_000);
    }

    #[test]
    fn a_missing_element_is_named() {
        gst::init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let shipped = std::fs::read_to_string(repo_profiles().join(ENCODERS_FILE)).unwrap();
        std::fs::write(dir.path().join(ENCODERS_FILE), shipped.replace("mulawenc", "nosuchencoder")).unwrap();
        std::fs::copy(repo_profiles().join(DECODERS_FILE), dir.path().join(DECODERS_FILE)).unwrap();
        let err = Profiles::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("nosuchencoder") && err.contains("[pcmu]"), "{err}");
    }
}
