//! ffmpeg as an RTMP or SRT publisher (what OBS or a hardware encoder
//! sends): a solid colour and a sine tone as H.264 (with B-frames, as OBS's
//! x264 sends by default) and AAC, in FLV over RTMP or MPEG-TS over SRT.

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

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
