//! What the WebRTC browser tests need beside the browser: the page and the
//! loopback HTTP server that hands its offer to Tutti ([`page_server`]), the
//! GStreamer encoders and decoders that judge the media ([`media`]), and a
//! lossy UDP relay ([`relay`]).

mod guests;
mod slow_link;
pub mod media;
pub mod page_server;
pub mod relay;
mod whip_whep;

/// The guest page: camera and microphone to Tutti, Tutti's media judged.
pub const PAGE: &str = include_str!("page.html");

use anyhow::Result;
use tempfile::TempDir;

use crate::common::{Browser, Netns, Server, in_loopback_netns};

/// Runs test `name` (its full path) in the loopback-only namespace against a
/// server of its own; a failure carries the server's log.
pub fn with_server_in_namespace(name: &str, timeout: std::time::Duration, test: impl FnOnce(&Server) -> Result<()>) -> Result<()> {
    if in_loopback_netns(name, timeout)? == Netns::RanInChild {
        return Ok(());
    }
    let server = Server::start()?;
    test(&server).map_err(|e| anyhow::anyhow!("{e:?}\n--- server log ---\n{}", server.logs()))
}

/// Headless Chromium that may use loopback for WebRTC and plays sound
/// without a click, with `extra` flags.
pub fn chromium(extra: &[String]) -> Result<Browser> {
    let mut args = vec!["--allow-loopback-in-peer-connection".to_string(), "--autoplay-policy=no-user-gesture-required".to_string()];
    args.extend_from_slice(extra);
    Browser::start_with_args(&args)
}

/// Chromium whose camera shows a `rgb` box on noise at `size` and whose
/// microphone plays `hz` (see [`media::camera_file`]), granted without
/// asking; the files live in the directory returned with it.
pub fn chromium_with_devices(rgb: [u8; 3], size: (u32, u32), hz: u32) -> Result<(Browser, TempDir)> {
    let dir = tempfile::Builder::new().prefix("tutti-devices-").tempdir()?;
    let (camera, microphone) = (dir.path().join("camera.y4m"), dir.path().join("microphone.wav"));
    media::camera_file(&camera, rgb, size)?;
    media::microphone_file(&microphone, hz)?;
    let browser = chromium(&[
        "--use-fake-ui-for-media-stream".to_string(),
        "--use-fake-device-for-media-stream".to_string(),
        format!("--use-file-for-fake-video-capture={}", camera.display()),
        format!("--use-file-for-fake-audio-capture={}", microphone.display()),
    ])?;
    Ok((browser, dir))
}
