//! ffmpeg as an RTMP publisher (what OBS or a hardware encoder sends): a
//! solid colour and a sine tone as H.264 (with B-frames, as OBS's x264
//! sends by default) and AAC in FLV.

use anyhow::Result;
use std::path::Path;
use std::process::Command;

use super::process::ChildProcess;

pub struct PublisherSpec<'a> {
    /// An ffmpeg colour name (`blue`, `yellow`, …).
    pub colour: &'a str,
    pub tone_hz: f64,
    pub size: (u32, u32),
    pub seconds: u32,
}

/// Publishes `spec` to `url` (`rtmp://host:port/app/key`) in real time.
pub fn rtmp_publisher(url: &str, spec: &PublisherSpec, log: &Path) -> Result<ChildProcess> {
    let (width, height) = spec.size;
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "warning", "-re"])
        .args(["-f", "lavfi", "-i", &format!("color=c={}:s={width}x{height}:r=30", spec.colour)])
        .args(["-f", "lavfi", "-i", &format!("sine=frequency={}:sample_rate=48000", spec.tone_hz)])
        .args(["-t", &spec.seconds.to_string()])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", "30", "-pix_fmt", "yuv420p"])
        .args(["-c:a", "aac", "-b:a", "128k", "-f", "flv", url]);
    ChildProcess::spawn("ffmpeg-publisher", cmd, log)
}
