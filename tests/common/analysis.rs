//! Judging a recording: decoded by ffmpeg, timed by the wall clock the recorder stamped.
//!
//! Timestamps in a recording are absolute system-clock times (see `Caller::start_receiver`),
//! so a `Frame::wall_time` or an `Audio` window compares directly with `SystemTime::now()`
//! taken by a test around a request.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};

use super::process::{run_bounded, text_tail};

/// Frames are scaled to this size for analysis: enough for colour regions, small in memory.
pub const THUMB_WIDTH: usize = 160;
pub const THUMB_HEIGHT: usize = 90;
/// Audio is decoded to mono f32 at this rate.
pub const AUDIO_RATE: u32 = 48000;
const DECODE_TIMEOUT: Duration = Duration::from_secs(60);
/// ffmpeg's RTP input may hand over the very first H.264 access unit without a timestamp,
/// which Matroska stores as 0. Anything stamped before this (2001) is such an untimed frame.
const EARLIEST_WALL_TIME_SECS: f64 = 1e9;

/// Signed seconds from `from` to `to` (negative if `to` is earlier).
pub fn elapsed(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// Named colours the callers show and the classifier recognises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Colour {
    Red,
    Green,
    Blue,
    Yellow,
    Cyan,
    Magenta,
    White,
    Black,
}

impl Colour {
    const ALL: [Colour; 8] = [
        Colour::Red,
        Colour::Green,
        Colour::Blue,
        Colour::Yellow,
        Colour::Cyan,
        Colour::Magenta,
        Colour::White,
        Colour::Black,
    ];
    /// How far (Euclidean, 0-255 per channel) a measured colour may be from a named one.
    /// Codec and YUV round trips move a flat colour by < 20; the closest two names are 255
    /// apart, and a slate's palette colour (see [`near`]) is over 60 from every name.
    const TOLERANCE: f64 = 60.0;

    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [255, 0, 0],
            Colour::Green => [0, 255, 0],
            Colour::Blue => [0, 0, 255],
            Colour::Yellow => [255, 255, 0],
            Colour::Cyan => [0, 255, 255],
            Colour::Magenta => [255, 0, 255],
            Colour::White => [255, 255, 255],
            Colour::Black => [0, 0, 0],
        }
    }

    /// The named colour `rgb` is, if it is close enough to one.
    pub fn classify(rgb: [u8; 3]) -> Option<Colour> {
        let distance = |c: Colour| {
            c.rgb().iter().zip(rgb).map(|(&a, b)| (f64::from(a) - f64::from(b)).powi(2)).sum::<f64>().sqrt()
        };
        Colour::ALL
            .into_iter()
            .map(|c| (c, distance(c)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .filter(|&(_, d)| d <= Colour::TOLERANCE)
            .map(|(c, _)| c)
    }
}

/// A region of the picture in fractions of its width and height (0..1, origin top left).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rect {
    pub x0: f64,
    pub y0: f64,
    pub x1: f64,
    pub y1: f64,
}

impl Rect {
    pub const FULL: Rect = Rect { x0: 0.0, y0: 0.0, x1: 1.0, y1: 1.0 };

    /// Cell (`col`, `row`) of a `cols` x `rows` grid.
    pub fn cell(cols: u32, rows: u32, col: u32, row: u32) -> Rect {
        let (w, h) = (1.0 / f64::from(cols), 1.0 / f64::from(rows));
        Rect { x0: f64::from(col) * w, y0: f64::from(row) * h, x1: f64::from(col + 1) * w, y1: f64::from(row + 1) * h }
    }

    /// A participant's `rect` as the API shows it (pixels of a `canvas` of that size).
    pub fn from_api(rect: &serde_json::Value, canvas: (u32, u32)) -> Result<Rect> {
        let field = |name: &str| rect[name].as_f64().with_context(|| format!("rect without {name}: {rect}"));
        let (x, y, w, h) = (field("x")?, field("y")?, field("width")?, field("height")?);
        let (cw, ch) = (f64::from(canvas.0), f64::from(canvas.1));
        Ok(Rect { x0: x / cw, y0: y / ch, x1: (x + w) / cw, y1: (y + h) / ch })
    }

    /// The middle `fraction` of this region, keeping clear of borders and scaling blur.
    pub fn centre(self, fraction: f64) -> Rect {
        let (dx, dy) = ((self.x1 - self.x0) * (1.0 - fraction) / 2.0, (self.y1 - self.y0) * (1.0 - fraction) / 2.0);
        Rect { x0: self.x0 + dx, y0: self.y0 + dy, x1: self.x1 - dx, y1: self.y1 - dy }
    }
}

/// One decoded video frame.
#[derive(Clone)]
pub struct Frame {
    /// When the recorder read the frame's first packet.
    pub wall_time: SystemTime,
    /// The frame's size as sent.
    pub width: u32,
    pub height: u32,
    pub keyframe: bool,
    /// RGB24 pixels, scaled to `THUMB_WIDTH` x `THUMB_HEIGHT`.
    pub rgb: Vec<u8>,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Frame {{ {:?}, {}x{}, key: {}, centre: {:?} }}",
            self.wall_time,
            self.width,
            self.height,
            self.keyframe,
            self.mean_color(Rect::FULL.centre(0.5))
        )
    }
}

impl Frame {
    /// Mean RGB over `rect` (at least one pixel).
    pub fn mean_color(&self, rect: Rect) -> [u8; 3] {
        let pixels = |from: f64, to: f64, size: usize| {
            let start = ((from * size as f64) as usize).min(size - 1);
            start..((to * size as f64).round() as usize).clamp(start + 1, size)
        };
        let (xs, ys) = (pixels(rect.x0, rect.x1, THUMB_WIDTH), pixels(rect.y0, rect.y1, THUMB_HEIGHT));
        let mut sum = [0u64; 3];
        for y in ys.clone() {
            for x in xs.clone() {
                let pixel = &self.rgb[(y * THUMB_WIDTH + x) * 3..][..3];
                sum.iter_mut().zip(pixel).for_each(|(s, &v)| *s += u64::from(v));
            }
        }
        let count = (xs.len() * ys.len()) as u64;
        sum.map(|s| (s / count) as u8)
    }

    /// The named colour of `rect`, if its mean is close to one.
    pub fn colour(&self, rect: Rect) -> Option<Colour> {
        Colour::classify(self.mean_color(rect))
    }
}

/// Decodes the first video stream of a recording into timed frames.
pub fn video_frames(path: &Path) -> Result<Vec<Frame>> {
    let mut cmd = Command::new("ffmpeg");
    // showinfo (before scaling, so it reports the size as sent) prints each frame's
    // timestamp and key flag, in the order the raw frames come out; passthrough keeps
    // ffmpeg from dropping or duplicating frames to make a constant rate.
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "info", "-copyts", "-i"])
        .arg(path)
        .args(["-map", "0:v:0", "-vf", &format!("showinfo,scale={THUMB_WIDTH}:{THUMB_HEIGHT}:flags=area")])
        .args(["-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]);
    let output = run_bounded(cmd, DECODE_TIMEOUT)?;
    let log = String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.success(), "decoding video of {}: {}", path.display(), text_tail(&log));
    let time_base = log
        .lines()
        .find_map(|line| line.split("config in time_base: ").nth(1))
        .and_then(|rest| rest.split(',').next())
        .and_then(parse_ratio)
        .with_context(|| format!("no showinfo time base in: {}", text_tail(&log)))?;
    let infos = log.lines().filter(|line| line.contains("] n:")).map(parse_showinfo).collect::<Result<Vec<_>>>()?;
    let frame_bytes = THUMB_WIDTH * THUMB_HEIGHT * 3;
    ensure!(
        infos.len() * frame_bytes == output.stdout.len(),
        "{} showinfo lines but {} bytes of frames",
        infos.len(),
        output.stdout.len()
    );
    Ok(infos
        .into_iter()
        .zip(output.stdout.chunks_exact(frame_bytes))
        .filter_map(|(info, rgb)| {
            let secs = info.pts as f64 * time_base;
            (secs >= EARLIEST_WALL_TIME_SECS).then(|| Frame {
                wall_time: UNIX_EPOCH + Duration::from_secs_f64(secs),
                width: info.width,
                height: info.height,
                keyframe: info.keyframe,
                rgb: rgb.to_vec(),
            })
        })
        .collect())
}

/// A still picture (a PNG a softphone saved) as a [`Frame`] taken at `wall_time`.
pub fn picture_frame(path: &Path, wall_time: SystemTime) -> Result<Frame> {
    // The size as sent, from the PNG header: signature, IHDR length and type, width, height.
    let header = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    ensure!(header.len() >= 24 && header.starts_with(b"\x89PNG") && &header[12..16] == b"IHDR", "{} is not a PNG", path.display());
    let size = |at: usize| u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-i"])
        .arg(path)
        .args(["-vf", &format!("scale={THUMB_WIDTH}:{THUMB_HEIGHT}:flags=area"), "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]);
    let output = run_bounded(cmd, DECODE_TIMEOUT)?;
    ensure!(output.status.success(), "decoding {}: {}", path.display(), String::from_utf8_lossy(&output.stderr));
    ensure!(output.stdout.len() == THUMB_WIDTH * THUMB_HEIGHT * 3, "{}: {} bytes of pixels", path.display(), output.stdout.len());
    Ok(Frame { wall_time, width: size(16), height: size(20), keyframe: true, rgb: output.stdout })
}

/// The mean colour of `rect` in each of the first `count` decoded frames of
/// a live stream (`rtmp://…`), which carries no wall clock to time them by.
pub fn live_stream_colours(url: &str, count: usize, rect: Rect) -> Result<Vec<[u8; 3]>> {
    let colours = decoded_colours(url, Some(count), rect)?;
    ensure!(colours.len() == count, "{url}: {} frames decoded of {count}", colours.len());
    Ok(colours)
}

/// The mean colour of `rect` in every frame of a file whose timestamps are
/// not wall-clock times (a recording of Tutti's: running time).
pub fn file_colours(path: &Path, rect: Rect) -> Result<Vec<[u8; 3]>> {
    decoded_colours(path.to_str().context("a path in UTF-8")?, None, rect)
}

fn decoded_colours(input: &str, count: Option<usize>, rect: Rect) -> Result<Vec<[u8; 3]>> {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-rw_timeout", "5000000", "-i", input]).args(["-map", "0:v:0"]);
    if let Some(count) = count {
        cmd.args(["-frames:v", &count.to_string()]);
    }
    cmd.args(["-vf", &format!("scale={THUMB_WIDTH}:{THUMB_HEIGHT}:flags=area")])
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]);
    let output = run_bounded(cmd, DECODE_TIMEOUT)?;
    ensure!(output.status.success(), "decoding {input}: {}", text_tail(&String::from_utf8_lossy(&output.stderr)));
    let frame_bytes = THUMB_WIDTH * THUMB_HEIGHT * 3;
    ensure!(output.stdout.len() % frame_bytes == 0, "{input}: {} bytes is no whole number of frames", output.stdout.len());
    Ok(output
        .stdout
        .chunks_exact(frame_bytes)
        .map(|rgb| {
            let frame = Frame {
                wall_time: SystemTime::now(),
                width: THUMB_WIDTH as u32,
                height: THUMB_HEIGHT as u32,
                keyframe: false,
                rgb: rgb.to_vec(),
            };
            frame.mean_color(rect)
        })
        .collect())
}

struct FrameInfo {
    pts: i64,
    width: u32,
    height: u32,
    keyframe: bool,
}

/// Parses `[Parsed_showinfo_0 @ 0x..] n:   3 pts:1795287710353 pts_time:... s:320x240 ... iskey:0 ...`.
fn parse_showinfo(line: &str) -> Result<FrameInfo> {
    let field = |key: &str| {
        line.split(&format!(" {key}:"))
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .with_context(|| format!("no {key}: in showinfo line {line}"))
    };
    let (width, height) = field("s")?.split_once('x').context("bad s:")?;
    Ok(FrameInfo {
        pts: field("pts")?.parse()?,
        width: width.parse()?,
        height: height.parse()?,
        keyframe: field("iskey")? == "1",
    })
}

fn parse_ratio(text: &str) -> Option<f64> {
    let (num, den) = text.trim().split_once('/')?;
    Some(num.parse::<f64>().ok()? / den.parse::<f64>().ok()?)
}

/// Frames per second among `frames` with `t0 <= wall_time < t1`. A count, so +-1 frame:
/// use windows of 2 s or more to tell 29 from 30 fps.
pub fn fps_between(frames: &[Frame], t0: SystemTime, t1: SystemTime) -> f64 {
    let count = frames.iter().filter(|f| f.wall_time >= t0 && f.wall_time < t1).count();
    count as f64 / elapsed(t0, t1)
}

/// A recording's audio as one mono track at `AUDIO_RATE`, gaps filled with silence, so sample
/// `i` was heard at `start + i / rate`.
pub struct Audio {
    /// When the recorder read the first packet.
    pub start: SystemTime,
    pub rate: u32,
    pub samples: Vec<f32>,
}

impl Audio {
    pub fn end(&self) -> SystemTime {
        self.start + Duration::from_secs_f64(self.samples.len() as f64 / f64::from(self.rate))
    }

    /// The samples heard from `t0` to `t1`; an error if that is not inside the recording,
    /// so a test cannot mistake "not recorded" for "silent".
    pub fn window(&self, t0: SystemTime, t1: SystemTime) -> Result<&[f32]> {
        let index = |t| elapsed(self.start, t) * f64::from(self.rate);
        let (i0, i1) = (index(t0), index(t1));
        ensure!(
            0.0 <= i0 && i0 < i1 && i1 <= self.samples.len() as f64,
            "window {:.3}..{:.3} s is outside the recorded audio 0..{:.3} s (relative to its start)",
            elapsed(self.start, t0),
            elapsed(self.start, t1),
            elapsed(self.start, self.end())
        );
        Ok(&self.samples[i0 as usize..i1 as usize])
    }

    /// The level of the tone at `freq` between `t0` and `t1`, in dB relative to a full-scale sine.
    pub fn tone_level_db(&self, t0: SystemTime, t1: SystemTime, freq: f64) -> Result<f64> {
        Ok(tone_level_db(self.window(t0, t1)?, self.rate, freq))
    }

    /// The median of the tone's levels over 100 ms windows from `t0` to `t1`
    /// (dBFS): the level it is heard at, unmoved by a glitch (a hole or a skip,
    /// which also breaks the phase a single long window relies on) in one window.
    pub fn tone_level_median_db(&self, t0: SystemTime, t1: SystemTime, freq: f64) -> Result<f64> {
        let window = self.window(t0, t1)?;
        let mut levels: Vec<f64> = window.chunks_exact(self.rate as usize / 10).map(|w| tone_level_db(w, self.rate, freq)).collect();
        ensure!(!levels.is_empty(), "less than 100 ms of audio between the two instants");
        levels.sort_by(f64::total_cmp);
        Ok(levels[levels.len() / 2])
    }

    /// When the tone at `freq` is on: the intervals where its level, over
    /// 20 ms windows every 5 ms, is above `threshold_db` (dBFS). Each edge is
    /// placed at the middle of the first window past it: within ±10 ms.
    pub fn tone_intervals(&self, freq: f64, threshold_db: f64) -> Vec<(SystemTime, SystemTime)> {
        let (window, hop) = (self.rate as usize / 50, self.rate as usize / 200);
        let at = |index: usize| self.start + Duration::from_secs_f64((index + window / 2) as f64 / f64::from(self.rate));
        let mut intervals = Vec::new();
        let mut on_since = None;
        let mut index = 0;
        while index + window <= self.samples.len() {
            let on = tone_level_db(&self.samples[index..index + window], self.rate, freq) > threshold_db;
            match (on, on_since) {
                (true, None) => on_since = Some(at(index)),
                (false, Some(since)) => {
                    intervals.push((since, at(index)));
                    on_since = None;
                }
                _ => {}
            }
            index += hop;
        }
        if let Some(since) = on_since {
            intervals.push((since, self.end()));
        }
        intervals
    }

    /// The level of each tone in `freqs` between `t0` and `t1` (dBFS), in the same order.
    pub fn tone_levels_db(&self, t0: SystemTime, t1: SystemTime, freqs: &[f64]) -> Result<Vec<f64>> {
        let window = self.window(t0, t1)?;
        Ok(freqs.iter().map(|&f| tone_level_db(window, self.rate, f)).collect())
    }
}

/// The H.264 `level_idc` of a recording's first video stream, as its SPS says (13: level 1.3).
pub fn h264_level(path: &Path) -> Result<u32> {
    let mut probe = Command::new("ffprobe");
    probe.args(["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=codec_name,level", "-of", "json"]).arg(path);
    let probed = run_bounded(probe, DECODE_TIMEOUT)?;
    ensure!(probed.status.success(), "probing {}: {}", path.display(), String::from_utf8_lossy(&probed.stderr));
    let info: serde_json::Value = serde_json::from_slice(&probed.stdout)?;
    let stream = &info["streams"][0];
    ensure!(stream["codec_name"] == "h264", "not H.264: {stream}");
    let level = stream["level"].as_u64().context("no level")?;
    Ok(u32::try_from(level)?)
}

/// Decodes the first audio stream of a recording (see `Audio`).
pub fn audio_samples(path: &Path) -> Result<Audio> {
    let mut probe = Command::new("ffprobe");
    probe
        .args(["-v", "error", "-select_streams", "a:0", "-read_intervals", "%+#20"])
        .args(["-show_entries", "stream=channels,time_base:packet=pts", "-of", "json"])
        .arg(path);
    let probed = run_bounded(probe, DECODE_TIMEOUT)?;
    ensure!(probed.status.success(), "probing {}: {}", path.display(), String::from_utf8_lossy(&probed.stderr));
    let info: serde_json::Value = serde_json::from_slice(&probed.stdout)?;
    let stream = &info["streams"][0];
    let channels = stream["channels"].as_u64().context("no audio stream")?;
    let time_base = stream["time_base"].as_str().and_then(parse_ratio).context("no audio time base")?;
    // The first packet with a timestamp (one received before the stream's
    // first RTCP sender report may have none).
    let first_pts = info["packets"]
        .as_array()
        .and_then(|packets| packets.iter().find_map(|p| p["pts"].as_i64()))
        .context("no audio packet")?;

    // Average the channels (`-ac 1` would add them up, +3 dB for a stereo copy of a mono
    // source); async=1 inserts silence where packets did not arrive, keeping the timeline.
    let mix = (0..channels).map(|c| format!("{}*c{c}", 1.0 / channels as f64)).collect::<Vec<_>>().join("+");
    let filter = format!("pan=mono|c0={mix},aresample={AUDIO_RATE}:async=1");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-copyts", "-i"])
        .arg(path)
        .args(["-map", "0:a:0", "-af", &filter, "-f", "f32le", "pipe:1"]);
    let output = run_bounded(cmd, DECODE_TIMEOUT)?;
    ensure!(
        output.status.success(),
        "decoding audio of {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.stdout.is_empty() {
        bail!("no audio decoded from {}", path.display());
    }
    let samples = output.stdout.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Ok(Audio { start: UNIX_EPOCH + Duration::from_secs_f64(first_pts as f64 * time_base), rate: AUDIO_RATE, samples })
}

/// The level of the sine at `freq` in `samples`, in dB relative to a full-scale sine
/// (amplitude 1.0 gives 0 dB; -200 dB for nothing at all).
///
/// Goertzel filter (a single DFT bin at exactly `freq`) over a Hann window, whose coherent
/// gain of 0.5 is divided out so the amplitude comes out right. A tone k bins away (a bin is
/// 1 / window length: 10 Hz for 100 ms) leaks in at about -20 log10(pi k^3) dB: -45 dB at 4
/// bins, -70 dB at 10, -110 dB at 50. So keep tones 100+ Hz apart and windows 100+ ms long.
pub fn tone_level_db(samples: &[f32], rate: u32, freq: f64) -> f64 {
    let n = samples.len();
    if n < 2 {
        return -200.0;
    }
    let omega = 2.0 * std::f64::consts::PI * freq / f64::from(rate);
    let coeff = 2.0 * omega.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for (i, &x) in samples.iter().enumerate() {
        let hann = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / (n - 1) as f64).cos();
        let s0 = f64::from(x) * hann + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let magnitude = (s1 * s1 + s2 * s2 - coeff * s1 * s2).max(0.0).sqrt();
    // A sine of amplitude A gives |X| = A * n/2 * (coherent gain 0.5).
    let amplitude = magnitude / (n as f64 * 0.25);
    20.0 * amplitude.max(1e-10).log10()
}

/// Whether `rgb` is within `tolerance` (Euclidean, 0-255 per channel) of `expected`: for
/// colours that are not one of the named [`Colour`]s, such as a slate's.
pub fn near(rgb: [u8; 3], expected: [u8; 3], tolerance: f64) -> bool {
    rgb.iter().zip(expected).map(|(&a, b)| (f64::from(a) - f64::from(b)).powi(2)).sum::<f64>().sqrt() <= tolerance
}

/// What tesseract (Debian's `tesseract-ocr`) reads in `rect` of the first frame of
/// `recording` stamped at or after `at`, decoded at full size. Words come back separated
/// by single spaces.
pub fn read_text(recording: &Path, at: SystemTime, rect: Rect) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let png = dir.path().join("frame.png");
    let secs = at.duration_since(UNIX_EPOCH)?.as_secs_f64();
    let crop = format!(
        "crop=w=iw*{w}:h=ih*{h}:x=iw*{x}:y=ih*{y}",
        w = rect.x1 - rect.x0,
        h = rect.y1 - rect.y0,
        x = rect.x0,
        y = rect.y0
    );
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-copyts", "-i"])
        .arg(recording)
        // Grey and negated: tesseract reads dark text on light best, and labels are white.
        .args(["-map", "0:v:0", "-vf", &format!("select='gte(t\\,{secs:.3})',{crop},format=gray,negate"), "-frames:v", "1", "-y"])
        .arg(&png);
    let output = run_bounded(cmd, DECODE_TIMEOUT)?;
    ensure!(output.status.success() && png.exists(), "no frame at {secs:.3} in {}: {}", recording.display(), text_tail(&String::from_utf8_lossy(&output.stderr)));
    let mut cmd = Command::new("tesseract");
    // Sparse text: a label or a slate is a few words anywhere in the picture.
    cmd.arg(&png).args(["stdout", "--psm", "11"]);
    let output = run_bounded(cmd, DECODE_TIMEOUT)?;
    ensure!(output.status.success(), "tesseract: {}", text_tail(&String::from_utf8_lossy(&output.stderr)));
    Ok(String::from_utf8_lossy(&output.stdout).split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The colours of two callers side by side (a 2x1 grid, in join order).
pub fn side_by_side(frame: &Frame) -> [Option<Colour>; 2] {
    [0, 1].map(|col| frame.colour(Rect::cell(2, 1, col, 0).centre(0.33)))
}
