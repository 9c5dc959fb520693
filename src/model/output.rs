//! Live outputs of a composition (the `outputs` of the API): where the
//! broadcast encode goes. Validation here is pure; the RTMP URL grammar
//! lives with the RTMP code it serves.

use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};

use crate::rtmp::RtmpUrl;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OutputConfig {
    /// Push to an RTMP(S) ingest: `rtmp://host[:port]/app/key`.
    Rtmp { url: String },
    /// HLS served by Tutti at `/hls/{composition_id}/{output_id}/index.m3u8`.
    Hls {},
    /// A file under the recordings directory: `.mkv` (Matroska) or `.mp4`
    /// (fragmented MP4); both stay playable if Tutti is killed mid-way.
    Record { path: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    Rtmp,
    Hls,
    Record,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordFormat {
    Matroska,
    FragmentedMp4,
}

/// An output whose settings have been checked.
#[derive(Clone, Debug)]
pub enum ValidOutput {
    Rtmp(RtmpUrl),
    Hls,
    Record { relative_path: PathBuf, format: RecordFormat },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid output: {0}")]
pub struct InvalidOutput(pub String);

impl OutputConfig {
    pub fn validate(&self) -> Result<ValidOutput, InvalidOutput> {
        match self {
            OutputConfig::Rtmp { url } => {
                url.parse::<RtmpUrl>().map(ValidOutput::Rtmp).map_err(|e| InvalidOutput(e.to_string()))
            }
            OutputConfig::Hls {} => Ok(ValidOutput::Hls),
            OutputConfig::Record { path } => {
                let relative_path = recording_path(path)?;
                let format = match relative_path.extension().and_then(|e| e.to_str()) {
                    Some("mkv") => RecordFormat::Matroska,
                    Some("mp4") => RecordFormat::FragmentedMp4,
                    _ => return Err(InvalidOutput(format!("recording {path:?} must end in .mkv or .mp4"))),
                };
                Ok(ValidOutput::Record { relative_path, format })
            }
        }
    }
}

/// A relative path that stays inside the recordings directory.
fn recording_path(path: &str) -> Result<PathBuf, InvalidOutput> {
    let candidate = Path::new(path);
    let inside = !path.is_empty()
        && candidate.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !inside {
        return Err(InvalidOutput(format!(
            "recording path {path:?} must be relative and stay inside the recordings directory"
        )));
    }
    Ok(candidate.to_path_buf())
}

impl ValidOutput {
    pub fn kind(&self) -> OutputKind {
        match self {
            ValidOutput::Rtmp(_) => OutputKind::Rtmp,
            ValidOutput::Hls => OutputKind::Hls,
            ValidOutput::Record { .. } => OutputKind::Record,
        }
    }

    /// Whether `self` would write where `other` already does: the same
    /// recording file, or the same RTMP stream (the ingest would refuse the
    /// second publisher, or the two would take turns). HLS outputs each have
    /// a directory of their own.
    pub fn collides_with(&self, other: &ValidOutput) -> bool {
        match (self, other) {
            (ValidOutput::Record { relative_path: a, .. }, ValidOutput::Record { relative_path: b, .. }) => {
                let plain = |p: &Path| p.components().filter(|c| *c != Component::CurDir).collect::<PathBuf>();
                plain(a) == plain(b)
            }
            (ValidOutput::Rtmp(a), ValidOutput::Rtmp(b)) => a == b,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<OutputConfig, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn kinds_parse_and_validate() {
        assert!(matches!(parse(r#"{"kind":"hls"}"#).unwrap().validate(), Ok(ValidOutput::Hls)));
        let rtmp = parse(r#"{"kind":"rtmp","url":"rtmp://live.twitch.tv/app/live_123_abc"}"#).unwrap();
        assert!(matches!(rtmp.validate(), Ok(ValidOutput::Rtmp(_))));
        let record = parse(r#"{"kind":"record","path":"shows/today.mkv"}"#).unwrap().validate().unwrap();
        assert!(matches!(record, ValidOutput::Record { format: RecordFormat::Matroska, .. }));
    }

    #[test]
    fn paths_that_escape_are_refused() {
        for path in ["../x.mkv", "/etc/x.mkv", "a/../../x.mkv", "", "x.txt"] {
            let config = OutputConfig::Record { path: path.into() };
            assert!(config.validate().is_err(), "{path}");
        }
    }

    #[test]
    fn two_outputs_collide_only_where_they_would_write_the_same_thing() {
        let valid = |json: &str| parse(json).unwrap().validate().unwrap();
        let record = valid(r#"{"kind":"record","path":"shows/today.mkv"}"#);
        assert!(record.collides_with(&valid(r#"{"kind":"record","path":"./shows/./today.mkv"}"#)));
        assert!(!record.collides_with(&valid(r#"{"kind":"record","path":"shows/today.mp4"}"#)));
        let push = valid(r#"{"kind":"rtmp","url":"rtmp://a.example/live/key1"}"#);
        assert!(push.collides_with(&valid(r#"{"kind":"rtmp","url":"rtmp://a.example:1935/live/key1"}"#)), "same stream, default port spelt out");
        assert!(!push.collides_with(&valid(r#"{"kind":"rtmp","url":"rtmp://a.example/live/key2"}"#)));
        assert!(!valid(r#"{"kind":"hls"}"#).collides_with(&valid(r#"{"kind":"hls"}"#)), "each HLS output has its own directory");
    }

    #[test]
    fn bad_urls_and_fields_are_refused() {
        assert!(OutputConfig::Rtmp { url: "http://x/app/key".into() }.validate().is_err());
        assert!(parse(r#"{"kind":"ftp"}"#).is_err());
        assert!(parse(r#"{"kind":"hls","extra":1}"#).is_err());
    }
}
