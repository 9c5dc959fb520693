//! Encoder and decoder profiles: the swappable leaves of every pipeline.
//! `pipelines/encoders.toml` and `pipelines/decoders.toml` are compiled in,
//! so the binary runs from any directory; `--pipelines DIR` replaces each
//! half whose file DIR holds (a DIR with only `encoders.toml` swaps the
//! encoders and keeps the built-in decoders).
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
    #[error("{dir} holds neither {ENCODERS_FILE} nor {DECODERS_FILE} (--pipelines)")]
    NoProfilesIn { dir: PathBuf },
    #[error("{file} is not valid TOML: {source}")]
    Toml { file: String, source: toml::de::Error },
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
    #[error("registering Tutti's own elements (tuttiopusenc, tuttiopusdec): {0}")]
    Register(String),
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
    /// Samples of silence the encoder puts before the first one it was given.
    #[serde(default)]
    priming_samples: u32,
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
/// The decoder of RTMP publishers' AAC.
const AAC_DECODER: &str = "aac";

#[derive(Debug)]
pub struct Profiles {
    encoders: Table,
    decoders: Table,
}

/// One file's profiles, and where they came from (for errors and logs).
#[derive(Debug)]
struct Table {
    origin: String,
    profiles: BTreeMap<String, Profile>,
}

const ENCODERS_FILE: &str = "encoders.toml";
const DECODERS_FILE: &str = "decoders.toml";
const BUILT_IN_ENCODERS: &str = include_str!("../../pipelines/encoders.toml");
const BUILT_IN_DECODERS: &str = include_str!("../../pipelines/decoders.toml");

impl Profiles {
    /// The built-in profiles, each file that `overrides` holds replacing its
    /// built-in half; then checks every profile Tutti may need. Registers
    /// Tutti's own elements first, so that a profile may name them.
    /// Requires `gst::init()`.
    pub fn load(overrides: Option<&Path>) -> Result<Profiles, ProfileError> {
        super::opus::register().map_err(|e| ProfileError::Register(e.to_string()))?;
        let (encoders, decoders) = match overrides {
            None => (None, None),
            Some(dir) => {
                let found = (read_override(&dir.join(ENCODERS_FILE))?, read_override(&dir.join(DECODERS_FILE))?);
                if let (None, None) = found {
                    return Err(ProfileError::NoProfilesIn { dir: dir.into() });
                }
                found
            }
        };
        let profiles = Profiles {
            encoders: Table::parse(encoders, ENCODERS_FILE, BUILT_IN_ENCODERS)?,
            decoders: Table::parse(decoders, DECODERS_FILE, BUILT_IN_DECODERS)?,
        };
        for (table, name, what) in profiles.required() {
            let profile = table.profiles.get(name).ok_or_else(|| ProfileError::Missing { file: table.origin.clone(), name: name.into(), what })?;
            profile.validate(&table.origin, name)?;
        }
        Ok(profiles)
    }

    /// Where the encoders and the decoders came from, for the start-up log.
    pub fn origins(&self) -> String {
        format!("encoders from {}, decoders from {}", self.encoders.origin, self.decoders.origin)
    }

    fn required(&self) -> Vec<(&Table, &'static str, &'static str)> {
        let mut needed = Vec::new();
        for codec in VideoCodec::ALL {
            needed.push((&self.encoders, codec.encoder_profile_name(), "video encoding"));
            needed.push((&self.decoders, codec.decoder_profile_name(), "video decoding"));
        }
        for codec in AudioCodec::ALL {
            needed.push((&self.encoders, codec.profile_name(), "audio encoding"));
            needed.push((&self.decoders, codec.profile_name(), "audio decoding"));
        }
        needed.push((&self.encoders, BROADCAST_AUDIO, "the broadcast audio encode"));
        needed.push((&self.decoders, AAC_DECODER, "RTMP publishers' audio decoding"));
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

    /// How long the broadcast audio encoder's priming lasts at `rate`.
    pub fn broadcast_audio_priming(&self, rate: u32) -> gst::ClockTime {
        self.priming(BROADCAST_AUDIO, rate)
    }

    /// How long the priming of a caller's audio encoder for `codec` lasts.
    pub fn audio_priming(&self, codec: AudioCodec) -> gst::ClockTime {
        self.priming(codec.profile_name(), codec.raw_format().0)
    }

    fn priming(&self, profile: &str, rate: u32) -> gst::ClockTime {
        let samples = self.encoders.profiles.get(profile).map_or(0, |p| p.priming_samples);
        gst::ClockTime::from_nseconds(u64::from(samples) * 1_000_000_000 / u64::from(rate.max(1)))
    }

    fn encoder(&self, profile: &str, name: &str, settings: EncoderSettings) -> Result<gst::Bin, ProfileError> {
        self.encoders.instantiate(profile, name, settings)
    }

    pub fn video_decoder(&self, codec: VideoCodec, name: &str) -> Result<gst::Bin, ProfileError> {
        self.decoder(codec.decoder_profile_name(), name)
    }

    pub fn audio_decoder(&self, codec: AudioCodec, name: &str) -> Result<gst::Bin, ProfileError> {
        self.decoder(codec.profile_name(), name)
    }

    /// AAC, as RTMP publishers send it (raw frames, with their AudioSpecificConfig).
    pub fn aac_decoder(&self, name: &str) -> Result<gst::Bin, ProfileError> {
        self.decoder(AAC_DECODER, name)
    }

    fn decoder(&self, profile: &str, name: &str) -> Result<gst::Bin, ProfileError> {
        let bin = self.decoders.instantiate(profile, name, EncoderSettings::default())?;
        make_decoders_resilient(&bin);
        Ok(bin)
    }
}

/// The file's text and path, or `None` if there is no such file.
fn read_override(path: &Path) -> Result<Option<(String, PathBuf)>, ProfileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some((text, path.into()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ProfileError::Read { path: path.into(), source }),
    }
}

impl Table {
    fn parse(file: Option<(String, PathBuf)>, name: &str, built_in: &str) -> Result<Table, ProfileError> {
        let (text, origin) = match file {
            Some((text, path)) => (text, path.display().to_string()),
            None => (built_in.to_string(), format!("the built-in {name}")),
        };
        let profiles = toml::from_str(&text).map_err(|source| ProfileError::Toml { file: origin.clone(), source })?;
        Ok(Table { origin, profiles })
    }

    /// `profile` is one of [`Profiles::required`], checked by [`Profiles::load`].
    fn instantiate(&self, profile: &str, name: &str, settings: EncoderSettings) -> Result<gst::Bin, ProfileError> {
        self.profiles[profile].instantiate(&self.origin, profile, name, settings)
    }
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

    #[test]
    fn built_in_profiles_validate_and_take_bitrate() {
        gst::init().unwrap();
        let profiles = Profiles::load(None).unwrap();
        assert_eq!(profiles.origins(), "encoders from the built-in encoders.toml, decoders from the built-in decoders.toml");
        let settings = |kbps| EncoderSettings { bitrate_kbps: Some(kbps), keyframe_interval_frames: Some(50) };
        let bin = profiles.video_encoder(VideoCodec::H264 { packetization_mode: 1 }, "enc", settings(1234)).unwrap();
        assert_eq!(bin.by_name("encoder").unwrap().property::<u32>("bitrate"), 1234);
        assert_eq!(bin.by_name("encoder").unwrap().property::<u32>("key-int-max"), 50);
        let vp8 = profiles.video_encoder(VideoCodec::Vp8, "enc", settings(800)).unwrap();
        assert_eq!(vp8.by_name("encoder").unwrap().property::<i32>("target-bitrate"), 800_000);
    }

    #[test]
    fn a_missing_element_is_named_with_its_file() {
        gst::init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ENCODERS_FILE), BUILT_IN_ENCODERS.replace("mulawenc", "nosuchencoder")).unwrap();
        let err = Profiles::load(Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("nosuchencoder") && err.contains("[pcmu]"), "{err}");
        assert!(err.contains(&dir.path().join(ENCODERS_FILE).display().to_string()), "{err}");
    }

    #[test]
    fn a_directory_with_one_file_overrides_only_its_half() {
        gst::init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let decoders = dir.path().join(DECODERS_FILE);
        std::fs::write(&decoders, BUILT_IN_DECODERS.replace("avdec_h264 thread-type=slice", "avdec_h264 name=custom")).unwrap();
        let profiles = Profiles::load(Some(dir.path())).unwrap();
        assert_eq!(profiles.origins(), format!("encoders from the built-in encoders.toml, decoders from {}", decoders.display()));
        let decoder = profiles.video_decoder(VideoCodec::H264 { packetization_mode: 1 }, "dec").unwrap();
        assert!(decoder.by_name("custom").is_some(), "the override's description is used");
    }

    #[test]
    fn a_directory_holding_neither_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Profiles::load(Some(&dir.path().join("pipelnies"))).unwrap_err();
        assert!(matches!(err, ProfileError::NoProfilesIn { .. }), "{err}");
        assert!(err.to_string().contains("pipelnies"), "{err}");
    }
}
