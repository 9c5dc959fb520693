//! ffmpeg as an RTMP or SRT publisher (what OBS or a hardware encoder
//! sends): a solid colour and a sine tone as H.264 (with B-frames, as OBS's
//! x264 sends by default) and AAC, in FLV over RTMP or MPEG-TS over SRT.

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use super::analysis::{Audio, Colour, audio_samples, side_by_side, video_frames};
use super::process::ChildProcess;
use super::server::Server;

/// A participant made with `"ingest": "rtmp"` or `"srt"`, as the POST answered it.
pub struct PublisherParticipant {
    pub location: String,
    /// The POST's answer, the stream key whole.
    pub view: Value,
    /// `rtmp://host:port/ingest`, or `srt://host:port?streamid=<key>`.
    pub url: String,
    pub stream_key: String,
}

impl PublisherParticipant {
    /// Where its publisher sends: an SRT URL carries the key already, an
    /// RTMP one takes it as the stream name.
    pub fn publish_url(&self) -> String {
        if self.url.starts_with("srt://") { self.url.clone() } else { format!("{}/{}", self.url, self.stream_key) }
    }
}

/// POSTs `body` (with `"ingest"`) as a participant of `composition`.
pub fn add_publisher_participant(server: &Server, composition: &str, body: &Value) -> Result<PublisherParticipant> {
    let created = server.post_json(&format!("/v1/compositions/{composition}/participants"), body)?;
    ensure!(created.status == 201, "POST {body} answered {}: {}", created.status, created.body);
    let location = created.header("location").context("201 without Location")?.to_string();
    let view = created.json()?;
    let url = view["ingest"]["url"].as_str().context("no ingest url")?.to_string();
    let stream_key = view["ingest"]["stream_key"].as_str().context("no stream key")?.to_string();
    Ok(PublisherParticipant { location, view, url, stream_key })
}

pub struct PublisherSpec<'a> {
    /// An ffmpeg colour name (`blue`, `yellow`, …).
    pub colour: &'a str,
    pub tone_hz: f64,
    pub size: (u32, u32),
    pub seconds: u32,
}

/// Publishes `spec` to `url` in real time: FLV to `rtmp://host:port/app/key`,
/// MPEG-TS to `srt://host:port?streamid=key`.
pub fn publisher(url: &str, spec: &PublisherSpec, log: &Path) -> Result<ChildProcess> {
    let format = if url.starts_with("srt://") { "mpegts" } else { "flv" };
    let (width, height) = spec.size;
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "warning", "-re"])
        .args(["-f", "lavfi", "-i", &format!("color=c={}:s={width}x{height}:r=30", spec.colour)])
        .args(["-f", "lavfi", "-i", &format!("sine=frequency={}:sample_rate=48000", spec.tone_hz)])
        .args(["-t", &spec.seconds.to_string()])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", "30", "-pix_fmt", "yuv420p"])
        .args(["-c:a", "aac", "-b:a", "128k", "-f", format, url]);
    ChildProcess::spawn("ffmpeg-publisher", cmd, log)
}

/// A stretch of an RTP caller's return stream, and the publisher's colour in it.
pub struct Seen {
    pub from: SystemTime,
    pub until: SystemTime,
    pub colour: Colour,
}

/// Judges the return stream of a red RTP caller (left cell) recorded at
/// `recording` against a publisher beside it: in each stretch, every frame
/// (40 at least) shows the publisher's colour in its cell, and the caller
/// hears the publisher's tone and not its own.
pub fn judge_publisher_beside_red_caller(recording: &Path, seen: &[Seen], publisher_hz: f64, caller_hz: f64) -> Result<()> {
    let frames = video_frames(recording)?;
    let audio = audio_samples(recording)?;
    for Seen { from, until, colour } in seen {
        let window: Vec<_> = frames.iter().filter(|f| f.wall_time >= *from && f.wall_time < *until).collect();
        ensure!(window.len() >= 40, "only {} frames of the caller's return video in the window", window.len());
        for frame in window {
            let cells = side_by_side(frame);
            ensure!(cells == [Some(Colour::Red), Some(*colour)], "the caller sees {cells:?}, expected red and the publisher's {colour:?}");
        }
        hears_publisher_not_itself(&audio, *from, *until, publisher_hz, caller_hz)?;
    }
    Ok(())
}

/// The caller whose return audio is `audio` hears the publisher's tone
/// (above −30 dBFS) and its own 30 dB below it, from `from` to `until`.
pub fn hears_publisher_not_itself(audio: &Audio, from: SystemTime, until: SystemTime, publisher_hz: f64, caller_hz: f64) -> Result<()> {
    let levels = audio.tone_levels_db(from, until, &[publisher_hz, caller_hz])?;
    eprintln!("the caller hears the publisher at {:.1} dBFS and itself at {:.1}", levels[0], levels[1]);
    ensure!(levels[0] > -30.0, "the caller hears the publisher's tone only at {:.1} dBFS", levels[0]);
    ensure!(levels[1] < levels[0] - 30.0, "the caller hears itself: {levels:?}");
    Ok(())
}
