//! A browser guest behind a narrow downlink: the composition sends 1.5 Mbit/s,
//! the guest's link carries 600 kbit/s. Sent the whole bitrate, its picture
//! froze for good (8 frames decoded in 25 s, measured before the ladder
//! existed): packets were lost faster than NACK repaired them. Now Tutti
//! moves it to a lower-bitrate encode of the composite, which it keeps
//! playing. Judged by the browser's own `getStats` and by the API and events.
//!
//! ```text
//!  Chromium (/join page) ◄── relay front ◄── at most 600 kbit/s, 200 ms queue ◄── relay back ◄── Tutti
//!                        ──────────────────────────── everything ───────────────────────────────►
//! ```
//!
//! The page is sent to the relay by rewriting the port of Tutti's candidate
//! in the answer it receives: Tutti is ICE-lite and answers whichever
//! address the browser's checks come from.

use std::net::{SocketAddr, UdpSocket};
use std::thread::sleep;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use crate::common::{EventStream, Netns, Server, in_loopback_netns, is, metric_sample, wait_until};
use crate::webrtc::chromium_with_devices;
use crate::webrtc::relay::LossyRelay;

const CANVAS: (u32, u32) = (640, 360);
const COMPOSITION_KBPS: u32 = 1500;
const DOWNLINK_KBPS: u32 = 600;
const NETNS_TIMEOUT: Duration = Duration::from_secs(240);
/// Chromium's start, the page, getUserMedia; then ICE and DTLS.
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);
/// From connected to moved: the estimate settles (2 s) and falls below what is sent.
const MOVE_TIMEOUT: Duration = Duration::from_secs(15);
/// After the move: the queue of the old bitrate drains, the browser asks for
/// a keyframe of what it lost, the estimate may move it one rung further.
const SETTLE: Duration = Duration::from_secs(6);
/// The window the guest's picture is judged over.
const JUDGED: Duration = Duration::from_secs(8);
/// What a picture that keeps playing decodes at least (30 fps are sent).
const MIN_FPS: f64 = 15.0;
/// The longest the browser may count its picture frozen within the window.
const MAX_FROZEN: Duration = Duration::from_millis(1500);

/// Sends the browser to `arguments[0]` (the relay's port) instead of Tutti's
/// candidate, and keeps its peer connection for [`RECEIVED`].
const THROUGH_RELAY: &str = r#"
const port = arguments[0];
const original = RTCPeerConnection.prototype.setRemoteDescription;
RTCPeerConnection.prototype.setRemoteDescription = function (d) {
  window.guestPc = this;
  return original.call(this, { type: d.type, sdp: d.sdp.replace(/( udp \d+ 127\.0\.0\.1 )\d+( typ host)/g, `$1${port}$2`) });
};
return true;
"#;

/// What the browser received of the room's picture.
const RECEIVED: &str = r#"
const done = arguments[arguments.length - 1];
const pc = window.guestPc;
if (!pc) return done(null);
pc.getStats().then((stats) => {
  let video = null;
  stats.forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "video") video = s; });
  done(video && { frames: video.framesDecoded ?? 0, width: video.frameWidth ?? 0, frozen: video.totalFreezesDuration ?? 0, lost: video.packetsLost ?? 0 });
});
"#;

#[test]
fn a_guest_on_a_narrow_link_is_sent_a_lower_bitrate_picture_that_keeps_playing() -> Result<()> {
    const NAME: &str = "webrtc::slow_link::a_guest_on_a_narrow_link_is_sent_a_lower_bitrate_picture_that_keeps_playing";
    if in_loopback_netns(NAME, NETNS_TIMEOUT)? == Netns::RanInChild {
        return Ok(());
    }
    // A fixed port, so that the relay knows where Tutti is before the browser does.
    let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let server = Server::start_with(&["--webrtc-udp", &port.to_string()])?;
    narrow_link(&server, SocketAddr::from(([127, 0, 0, 1], port))).map_err(|e| anyhow::anyhow!("{e:?}\n--- server log ---\n{}", server.logs()))
}

fn narrow_link(server: &Server, tutti: SocketAddr) -> Result<()> {
    let video = json!({"width": CANVAS.0, "height": CANVAS.1, "fps": 30, "bitrate_kbps": COMPOSITION_KBPS});
    let composition = server.create_composition(&json!({ "video": video }))?;
    let mut events = EventStream::open(server, &format!("?composition={composition}"), None)?;
    let mut relay = LossyRelay::bind(0)?.with_downlink_kbps(DOWNLINK_KBPS);
    relay.forward_to(tutti)?;
    let (browser, _devices) = chromium_with_devices([0, 200, 0], (320, 240), 1000)?;
    browser.open(&server.url(&format!("/join/{composition}?name=Slow")))?;
    browser.wait_for("the preview", JOIN_TIMEOUT, "return !document.getElementById('join').disabled;", "", |ready| ready == true)?;
    browser.execute(THROUGH_RELAY, &relay.front().port().to_string())?;
    browser.execute("document.getElementById('join').click(); return true;", "")?;

    let participants = format!("/v1/compositions/{composition}/participants");
    let mut guest = String::new();
    wait_until("the guest to be active", JOIN_TIMEOUT, || {
        let list = server.get(&participants)?.json()?;
        let active = list["participants"].as_array().and_then(|l| l.iter().find(|p| p["state"] == "active").cloned());
        guest = active.map(|p| p["id"].as_str().unwrap_or_default().to_string()).unwrap_or_default();
        Ok(!guest.is_empty())
    })?;
    let view = |server: &Server| -> Result<Value> { server.get(&format!("{participants}/{guest}"))?.json() };
    let full = view(server)?["webrtc"]["picture"].clone();
    ensure!(full == json!({"bitrate_kbps": COMPOSITION_KBPS, "width": CANVAS.0, "height": CANVAS.1, "reduced": false}), "sent at first: {full}");

    let moved = events.wait_for(MOVE_TIMEOUT, "the guest's picture moved to a lower bitrate", |e| is("participant_picture_rate")(e) && e["participant"] == guest.as_str())?;
    eprintln!("moved: {moved}");
    ensure!(moved["bitrate_kbps"].as_u64().unwrap_or(u64::MAX) < u64::from(DOWNLINK_KBPS), "moved to {moved}");
    ensure!(moved["bandwidth_estimate_kbps"].as_u64().unwrap_or(u64::MAX) < u64::from(COMPOSITION_KBPS), "on the estimate of {moved}");

    sleep(SETTLE);
    let picture = view(server)?["webrtc"]["picture"].clone();
    ensure!(picture["reduced"] == true && picture["bitrate_kbps"].as_u64().unwrap_or(u64::MAX) < u64::from(DOWNLINK_KBPS), "sent now: {picture}");
    let metrics = server.get("/metrics")?.body;
    let sample = |name| metric_sample(&metrics, name, &[("participant", &guest)]);
    let (sent_kbps, estimate_kbps) = (sample("tutti_participant_picture_kbps"), sample("tutti_participant_bandwidth_estimate_kbps"));
    ensure!(sent_kbps.is_some() && sent_kbps == picture["bitrate_kbps"].as_f64(), "/metrics has the guest sent {sent_kbps:?} kbit/s");
    ensure!(estimate_kbps.is_some_and(|e| e > 0.0 && e < f64::from(DOWNLINK_KBPS) * 1.5), "/metrics has the guest's estimate at {estimate_kbps:?} kbit/s");
    let before = browser.execute_async(RECEIVED, "")?;
    sleep(JUDGED);
    let after = browser.execute_async(RECEIVED, "")?;
    let number = |v: &Value, key: &str| v[key].as_f64().context(format!("no {key} in {v}"));
    let fps = (number(&after, "frames")? - number(&before, "frames")?) / JUDGED.as_secs_f64();
    let frozen = number(&after, "frozen")? - number(&before, "frozen")?;
    eprintln!("the guest decodes {fps:.1} fps at {} wide, {frozen:.2} s frozen, {} packets lost in all; sent {picture}", after["width"], after["lost"]);
    ensure!(fps >= MIN_FPS, "the guest's picture plays at {fps:.1} fps (at least {MIN_FPS}): before {before}, after {after}");
    ensure!(frozen <= MAX_FROZEN.as_secs_f64(), "the guest's picture froze {frozen:.2} s of {} s", JUDGED.as_secs());
    // The picture the browser decodes is the rung's size now (the judged window started after the move).
    let current = view(server)?["webrtc"]["picture"].clone();
    let moves: Vec<String> = events
        .drain()?
        .iter()
        .filter(|e| is("participant_picture_rate")(e))
        .map(|e| format!("{} kbit/s on an estimate of {}", e["bitrate_kbps"], e["bandwidth_estimate_kbps"]))
        .collect();
    eprintln!("moves after the first: {moves:?}");
    ensure!(after["width"] == current["width"], "the browser decodes {} wide, the rung is {current}", after["width"]);
    Ok(())
}
