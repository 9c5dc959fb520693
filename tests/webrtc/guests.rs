//! Browser guests join a composition from the guest page, `/join/{id}`, as a
//! broadcaster's guests would from a link: two headless Chromiums (a green
//! and a blue fake camera, a 1 kHz and a 1.5 kHz fake microphone) and one RTP
//! caller (red, 500 Hz) together. The blue guest's browser offers VP8 alone,
//! as one without H.264 would. Every one of them is judged by what it
//! receives: each sees the others' colours in their cells of the composite
//! at the canvas size, and hears the others' tones and not its own.
//!
//! ```text
//!  Chromium "Green" ─┐ /join/{id}: POST offer ─► Tutti ─ str0m ─ WebRTC leg ─┐
//!  Chromium "Blue" ──┤◄═══ composite (H.264; VP8 to Blue) + mix-minus (Opus) ═┤ composition
//!  RTP caller "red" ─┘◄═══════ composite + mix-minus over plain RTP ══════════┘
//! ```

use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::common::{Browser, Caller, CallerSpec, Colour, Rect, Server, audio_samples, video_frames, wait_until};
use crate::webrtc::{chromium_with_devices, with_server_in_namespace};

const CANVAS: (u32, u32) = (320, 240);
const CALLER_HZ: f64 = 500.0;
/// Both guests, their cameras and microphones, and the video codec each sends and receives.
const GUESTS: [GuestSpec; 2] = [
    GuestSpec { name: "Green", colour: Colour::Green, hz: 1000, codec: "h264" },
    GuestSpec { name: "Blue", colour: Colour::Blue, hz: 1500, codec: "vp8" },
];
/// Two browsers, a caller and the server in one namespace.
const NETNS_TIMEOUT: Duration = Duration::from_secs(240);
/// Chromium's start, the page, getUserMedia.
const PREVIEW_TIMEOUT: Duration = Duration::from_secs(20);
/// From the Join click to both ways of media judged as expected.
const MEDIA_TIMEOUT: Duration = Duration::from_secs(30);
/// Leaving (a click, or closing the page) removes the participant this fast.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How far above the analyser's noise floor a tone that is heard is, and how
/// far below the others a guest's own tone must stay (Web Audio's dB).
const HEARD_DB: f64 = -60.0;
const OWN_TONE_MARGIN_DB: f64 = 25.0;

/// Run in the page with `arguments[0]` = `[rects, frequencies]`: the room's
/// picture (its size, frames shown, the mean colour of each rect, given as
/// fractions of the picture) and its sound (the level at each frequency,
/// from an analyser on the received track), and the page's own quality line.
const JUDGE: &str = r#"
const [rects, frequencies] = JSON.parse(arguments[0]);
const room = document.getElementById("room");
const stream = room.srcObject;
const result = { status: document.getElementById("status").textContent, quality: document.getElementById("quality").textContent };
if (!stream) return result;
const j = window.judge ??= {};
const track = stream.getAudioTracks()[0];
if (track && !j.analyser) {
  j.context = new AudioContext({ sampleRate: 48000 });
  j.context.resume();
  const source = j.context.createMediaStreamSource(new MediaStream([track]));
  j.analyser = j.context.createAnalyser();
  j.analyser.fftSize = 8192;
  j.analyser.smoothingTimeConstant = 0;
  const silent = j.context.createGain();
  silent.gain.value = 0;
  source.connect(j.analyser).connect(silent).connect(j.context.destination);
}
if (j.analyser) {
  const bins = new Float32Array(j.analyser.frequencyBinCount);
  j.analyser.getFloatFrequencyData(bins);
  const hz = j.context.sampleRate / j.analyser.fftSize;
  result.levels = frequencies.map((f) => {
    let level = -200;
    for (let i = Math.round(f / hz) - 2; i <= Math.round(f / hz) + 2; i++) level = Math.max(level, bins[i]);
    return level;
  });
}
const [w, h] = [room.videoWidth, room.videoHeight];
result.width = w;
result.height = h;
result.frames = room.getVideoPlaybackQuality().totalVideoFrames;
if (w > 0) {
  const canvas = j.canvas ??= document.createElement("canvas");
  [canvas.width, canvas.height] = [w, h];
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(room, 0, 0);
  result.colours = rects.map(([x0, y0, x1, y1]) => {
    const [left, top] = [Math.round(x0 * w), Math.round(y0 * h)];
    const pixels = context.getImageData(left, top, Math.max(1, Math.round(x1 * w) - left), Math.max(1, Math.round(y1 * h) - top)).data;
    const sum = [0, 0, 0];
    for (let i = 0; i < pixels.length; i += 4) for (let c = 0; c < 3; c++) sum[c] += pixels[i + c];
    return sum.map((v) => Math.round(v / (pixels.length / 4)));
  });
}
return result;
"#;

#[derive(Clone, Copy)]
struct GuestSpec {
    name: &'static str,
    colour: Colour,
    hz: u32,
    /// Chromium offers both; `vp8` makes this one offer VP8 alone.
    codec: &'static str,
}

/// Run in the guest page before Join: the page's peer connection offers VP8
/// (and its retransmissions) alone for video, as a browser without H.264 does.
const OFFER_VP8_ONLY: &str = r#"
const addTransceiver = RTCPeerConnection.prototype.addTransceiver;
RTCPeerConnection.prototype.addTransceiver = function (trackOrKind, init) {
  const transceiver = addTransceiver.call(this, trackOrKind, init);
  if ((trackOrKind.kind ?? trackOrKind) === "video") {
    transceiver.setCodecPreferences(RTCRtpReceiver.getCapabilities("video").codecs.filter((c) => /\/(VP8|rtx)$/i.test(c.mimeType)));
  }
  return transceiver;
};
return true;
"#;

/// One browser guest on the guest page.
struct Guest {
    name: &'static str,
    colour: Colour,
    hz: u32,
    codec: &'static str,
    browser: Browser,
    _dir: TempDir,
}

impl Guest {
    /// Opens the guest page with a fake camera and microphone, and waits for its preview.
    fn open(server: &Server, composition: &str, GuestSpec { name, colour, hz, codec }: GuestSpec) -> Result<Guest> {
        let (browser, dir) = chromium_with_devices(colour.rgb(), CANVAS, hz)?;
        // A test tone is what noise suppression removes first: sent as it is.
        browser.open(&server.url(&format!("/join/{composition}?name={name}&audio=original")))?;
        browser.wait_for(&format!("{name}'s preview"), PREVIEW_TIMEOUT, "return !document.getElementById('join').disabled;", "", |ready| ready == true)?;
        if codec == "vp8" {
            browser.execute(OFFER_VP8_ONLY, "")?;
        }
        Ok(Guest { name, colour, hz, codec, browser, _dir: dir })
    }

    fn click(&self, button: &str) -> Result<()> {
        self.browser.execute(&format!("document.getElementById('{button}').click(); return true;"), "")?;
        Ok(())
    }
}

/// Everyone's name, colour and tone, the caller first.
fn everyone(guests: &[Guest]) -> Vec<(&str, Colour, f64)> {
    std::iter::once(("red", Colour::Red, CALLER_HZ)).chain(guests.iter().map(|g| (g.name, g.colour, f64::from(g.hz)))).collect()
}

fn judge_guest(guest: &Guest, cells: &[(Rect, Colour)], frequencies: &[f64]) -> Result<Value> {
    let rects: Vec<[f64; 4]> = cells.iter().map(|(r, _)| [r.x0, r.y0, r.x1, r.y1]).collect();
    let own = frequencies.iter().position(|&f| f == f64::from(guest.hz)).context("the guest's own tone")?;
    let arg = json!([rects, frequencies]).to_string();
    guest.browser.wait_for(&format!("{} to see everyone in their cells and hear the others, not itself", guest.name), MEDIA_TIMEOUT, JUDGE, &arg, |r| {
        let colours_match = r["colours"].as_array().is_some_and(|colours| {
            colours.len() == cells.len() && colours.iter().zip(cells).all(|(c, (_, expected))| rgb(c).and_then(Colour::classify) == Some(*expected))
        });
        let levels: Vec<f64> = r["levels"].as_array().map(|l| l.iter().map(|v| v.as_f64().unwrap_or(-200.0)).collect()).unwrap_or_default();
        let others_heard = levels.len() == frequencies.len() && (0..levels.len()).filter(|&i| i != own).all(|i| levels[i] > HEARD_DB);
        let quietest_other = (0..levels.len()).filter(|&i| i != own).map(|i| levels[i]).fold(f64::INFINITY, f64::min);
        let not_itself = levels.get(own).is_some_and(|&l| l < quietest_other - OWN_TONE_MARGIN_DB);
        r["width"] == CANVAS.0 && r["height"] == CANVAS.1 && r["frames"].as_u64().unwrap_or(0) >= 60 && colours_match && others_heard && not_itself
    })
}

fn rgb(value: &Value) -> Option<[u8; 3]> {
    let c = value.as_array()?;
    Some([c.first()?.as_u64()? as u8, c.get(1)?.as_u64()? as u8, c.get(2)?.as_u64()? as u8])
}

fn participants(server: &Server, composition: &str) -> Result<Vec<Value>> {
    let list = server.get(&format!("/v1/compositions/{composition}/participants"))?.json()?;
    Ok(list["participants"].as_array().cloned().unwrap_or_default())
}

#[test]
fn two_browser_guests_and_an_rtp_caller_see_and_hear_each_other() -> Result<()> {
    const NAME: &str = "webrtc::guests::two_browser_guests_and_an_rtp_caller_see_and_hear_each_other";
    with_server_in_namespace(NAME, NETNS_TIMEOUT, guests_and_caller)
}

fn guests_and_caller(server: &Server) -> Result<()> {
    let composition = server.create_composition(&json!({"video": {"width": CANVAS.0, "height": CANVAS.1, "fps": 30}}))?;
    let mut caller = Caller::new(CallerSpec::new("red", Colour::Red, CALLER_HZ))?;
    caller.join_named(server, &composition)?;
    let guests = GUESTS.map(|spec| Guest::open(server, &composition, spec));
    let guests: Vec<Guest> = guests.into_iter().collect::<Result<_>>()?;
    for guest in &guests {
        guest.click("join")?;
    }
    wait_until("both guests to be active participants", MEDIA_TIMEOUT, || {
        let list = participants(server, &composition)?;
        Ok(list.len() == 3 && list.iter().filter(|p| p["transport"] == "webrtc" && p["state"] == "active").count() == 2)
    })?;

    // Where everyone is, by name, and what each must see there.
    let list = participants(server, &composition)?;
    let cells: Vec<(Rect, Colour)> = everyone(&guests)
        .iter()
        .map(|(name, colour, _)| {
            let view = list.iter().find(|p| p["name"] == *name).with_context(|| format!("no participant {name}: {list:?}"))?;
            Ok((Rect::from_api(&view["rect"], CANVAS)?.centre(0.3), *colour))
        })
        .collect::<Result<_>>()?;
    let frequencies: Vec<f64> = everyone(&guests).iter().map(|(_, _, hz)| *hz).collect();
    for guest in &guests {
        let report = judge_guest(guest, &cells, &frequencies).with_context(|| format!("participants: {:?}", participants(server, &composition)))?;
        eprintln!("{} receives {report}", guest.name);
        ensure!(report["quality"].as_str().is_some_and(|q| q.starts_with("320×240")), "the page's quality line: {report}");
    }

    // The RTP caller's return stream: both guests in their cells, both heard, itself not.
    sleep(Duration::from_secs(1));
    let from = SystemTime::now();
    sleep(Duration::from_secs(2));
    let until = SystemTime::now();
    for guest in &guests {
        let view = list.iter().find(|p| p["name"] == guest.name).context("the guest")?;
        let view = server.get(&format!("/v1/compositions/{composition}/participants/{}", view["id"].as_str().unwrap_or_default()))?.json()?;
        eprintln!("{}: {view}", guest.name);
        ensure!(view["video"]["codec"] == guest.codec && view["audio"]["codec"] == "opus", "the guest's codecs: {view}");
        for kind in ["audio", "video"] {
            for way in ["packets_received", "packets_sent"] {
                ensure!(view[kind][way].as_u64().unwrap_or(0) >= 50, "{kind} {way}: {view}");
            }
        }
        ensure!(view["webrtc"]["nacks_sent"].is_u64() && view["webrtc"]["keyframe_requests_received"].is_u64(), "its WebRTC statistics: {view}");
        // A clean link carries the composition's bitrate: no lower-bitrate picture.
        ensure!(view["webrtc"]["picture"]["reduced"] == false && view["webrtc"]["picture"]["width"] == CANVAS.0, "what it is sent: {view}");
    }

    leave(server, &composition, &guests)?;
    let recording = caller.stop_receiver()?;
    judge_caller(&recording, &cells, &frequencies, from, until)
}

/// The first guest clicks Leave; the second closes its page. Both are gone at once.
fn leave(server: &Server, composition: &str, guests: &[Guest]) -> Result<()> {
    guests[0].click("leave")?;
    wait_until("the guest who clicked Leave to be gone", LEAVE_TIMEOUT, || Ok(participants(server, composition)?.len() == 2))?;
    guests[1].browser.open("about:blank")?;
    wait_until("the guest who closed the page to be gone", LEAVE_TIMEOUT, || Ok(participants(server, composition)?.len() == 1))
}

fn judge_caller(recording: &Path, cells: &[(Rect, Colour)], frequencies: &[f64], from: SystemTime, until: SystemTime) -> Result<()> {
    let frames = video_frames(recording)?;
    let window: Vec<_> = frames.iter().filter(|f| f.wall_time >= from && f.wall_time < until).collect();
    ensure!(window.len() >= 40, "only {} frames of the caller's return video in the window", window.len());
    for frame in window {
        let seen: Vec<Option<Colour>> = cells.iter().map(|(rect, _)| frame.colour(*rect)).collect();
        let expected: Vec<Option<Colour>> = cells.iter().map(|(_, c)| Some(*c)).collect();
        ensure!(seen == expected, "the caller sees {seen:?}, expected {expected:?}");
    }
    let samples = audio_samples(recording)?;
    let levels = samples.tone_levels_db(from, until, frequencies)?;
    eprintln!("the caller hears itself at {:.1} dBFS and the guests at {:?}", levels[0], &levels[1..]);
    // Each quarter second's levels, for a failure to say whether a guest faded or dropped out.
    let quarter = Duration::from_millis(250);
    let quarters: Vec<Vec<i64>> = (0..8u32)
        .map(|k| from + quarter * k)
        .take_while(|start| *start + quarter <= until)
        .map(|start| Ok(samples.tone_levels_db(start, start + quarter, frequencies)?.iter().map(|l| l.round() as i64).collect()))
        .collect::<Result<_>>()?;
    for (i, level) in levels.iter().enumerate().skip(1) {
        ensure!(*level > -30.0, "the caller hears guest {i} only at {level:.1} dBFS; by quarter second: {quarters:?}");
        ensure!(levels[0] < level - 30.0, "the caller hears itself: {levels:?}; by quarter second: {quarters:?}");
    }
    Ok(())
}
