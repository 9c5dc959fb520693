//! What a producer sets on one participant while it is in a composition
//! (`PATCH /v1/compositions/{id}/participants/{pid}`): its name, how it is
//! heard, how it is seen, and whether it hears anything.
//!
//! A patch names only what changes; [`ParticipantPatch::apply`] checks all
//! of it first, so that a bad field changes nothing.

use serde::{Deserialize, Serialize};

/// The loudest gain a caller can be given: +12 dB.
pub const MAX_VOLUME: f64 = 4.0;
/// Names are drawn in a cell and shown in the API; longer is a mistake.
pub const MAX_NAME_CHARS: usize = 200;

/// A participant's controls as they stand; `controls` in its view.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ParticipantControls {
    pub audio: AudioControls,
    pub video: VideoControls,
    /// It receives silence (a caller the producer put on hold).
    pub deaf: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AudioControls {
    /// Nobody hears it: not the others, not the outputs.
    pub muted: bool,
    /// Its gain in everyone's mix and the outputs, 0.0 to 4.0 (1.0 as sent).
    pub volume: f64,
}

impl Default for AudioControls {
    fn default() -> Self {
        AudioControls { muted: false, volume: 1.0 }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VideoControls {
    /// Its slate is shown instead of its picture.
    pub muted: bool,
    /// It leaves the layout; the others are laid out without it.
    pub hidden: bool,
}

impl AudioControls {
    /// The linear gain its samples are mixed with.
    pub fn gain(&self) -> f64 {
        if self.muted { 0.0 } else { self.volume }
    }
}

/// The body of a PATCH: any subset of the fields.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantPatch {
    pub name: Option<String>,
    pub audio: Option<AudioPatch>,
    pub video: Option<VideoPatch>,
    pub deaf: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioPatch {
    pub muted: Option<bool>,
    pub volume: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoPatch {
    pub muted: Option<bool>,
    pub hidden: Option<bool>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid participant update: {0}")]
pub struct InvalidPatch(pub String);

impl ParticipantPatch {
    /// Applies the patch to `name` and `controls`, or changes nothing and
    /// says what is wrong.
    pub fn apply(&self, name: &mut String, controls: &mut ParticipantControls) -> Result<(), InvalidPatch> {
        let new_name = match &self.name {
            Some(n) if n.trim().is_empty() => return Err(InvalidPatch("name is empty".into())),
            Some(n) if n.chars().count() > MAX_NAME_CHARS => {
                return Err(InvalidPatch(format!("name is longer than {MAX_NAME_CHARS} characters")));
            }
            Some(n) => Some(n.trim().to_string()),
            None => None,
        };
        if let Some(volume) = self.audio.as_ref().and_then(|a| a.volume)
            && !(0.0..=MAX_VOLUME).contains(&volume)
        {
            return Err(InvalidPatch(format!("audio.volume {volume} is outside 0.0..{MAX_VOLUME}")));
        }
        if let Some(n) = new_name {
            *name = n;
        }
        if let Some(audio) = &self.audio {
            controls.audio.muted = audio.muted.unwrap_or(controls.audio.muted);
            controls.audio.volume = audio.volume.unwrap_or(controls.audio.volume);
        }
        if let Some(video) = &self.video {
            controls.video.muted = video.muted.unwrap_or(controls.video.muted);
            controls.video.hidden = video.hidden.unwrap_or(controls.video.hidden);
        }
        controls.deaf = self.deaf.unwrap_or(controls.deaf);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(json: &str) -> ParticipantPatch {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_patch_changes_only_what_it_names() {
        let (mut name, mut controls) = ("Alice".to_string(), ParticipantControls::default());
        patch(r#"{"audio": {"volume": 0.5}}"#).apply(&mut name, &mut controls).unwrap();
        assert_eq!(controls.audio, AudioControls { muted: false, volume: 0.5 });
        patch(r#"{"audio": {"muted": true}, "video": {"hidden": true}, "deaf": true, "name": " Bob "}"#)
            .apply(&mut name, &mut controls)
            .unwrap();
        assert_eq!(name, "Bob");
        assert_eq!(controls.audio, AudioControls { muted: true, volume: 0.5 }, "the volume stays");
        assert_eq!(controls.video, VideoControls { muted: false, hidden: true });
        assert!(controls.deaf);
        assert_eq!(controls.audio.gain(), 0.0, "muted is silent whatever the volume");
    }

    #[test]
    fn a_bad_field_changes_nothing() {
        let (mut name, mut controls) = ("Alice".to_string(), ParticipantControls::default());
        let error = patch(r#"{"name": "Bob", "audio": {"muted": true, "volume": 4.5}}"#).apply(&mut name, &mut controls).unwrap_err();
        assert!(error.0.contains("audio.volume 4.5"), "{error}");
        assert_eq!((name.as_str(), controls), ("Alice", ParticipantControls::default()));
        assert!(patch(r#"{"name": "  "}"#).apply(&mut name, &mut ParticipantControls::default()).is_err());
        assert!(patch(r#"{"audio": {"volume": -0.1}}"#).apply(&mut name, &mut ParticipantControls::default()).is_err());
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let error = serde_json::from_str::<ParticipantPatch>(r#"{"audio": {"mute": true}}"#).unwrap_err();
        assert!(error.to_string().contains("mute"), "{error}");
        assert!(serde_json::from_str::<ParticipantPatch>(r#"{"audio": {"volume": "loud"}}"#).is_err());
    }

    #[test]
    fn controls_show_as_the_patch_names_them() {
        let json = serde_json::to_value(ParticipantControls::default()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"audio": {"muted": false, "volume": 1.0}, "video": {"muted": false, "hidden": false}, "deaf": false})
        );
    }
}
