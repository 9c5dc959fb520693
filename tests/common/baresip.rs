//! A real softphone: Debian's baresip 1.0.0 (`baresip-core`, `baresip-ffmpeg`),
//! one process with a config directory of its own, driven over its `ctrl_tcp`
//! control socket.
//!
//! ```text
//!   tone.wav (aufile) ──G.722──▶ ┐                      ┌──▶ sndfile: dump-…-dec.wav (what it hears)
//!   clip.mp4 (avformat) ──H.264──▶ Tutti (SIP + RTP) ─────┤
//!                                                       └──▶ snapshot: PNG of a received frame
//!   harness ──ctrl_tcp (netstring JSON)──▶ dial / hangup / snapshot_recv; events come back
//! ```
//!
//! What Debian's 1.0.0 needs, found by trying (see `config`):
//! - `net_interface 127.0.0.1`: otherwise it puts the machine's first interface
//!   address in its SDP and sends media from there (`lo` by name is refused).
//! - `aufile` plays the WAV once, at the audio codec's own rate and channel count
//!   (G.722: 16 kHz mono), and stops at its end.
//! - `avformat` rewinds the clip at its end but sends nothing for a second before
//!   it starts again (Tutti then shows the caller's slate). So the tone and the
//!   clip each last longer than any test (`MEDIA_SECS`).
//! - `sndfile` writes `dump-<time>-dec.wav` (decoded received audio) and `-enc.wav`
//!   into `snd_path`, completed when the call ends.
//! - `snapshot_recv PATH` saves the next decoded received frame as PNG and logs
//!   `png: wrote PATH`; it may be asked before the call is up, which times the first frame.
//! - `ctrl_tcp` answers each command with `{"response":true,"ok":…,"token":…}` and
//!   reports `CALL_ESTABLISHED` (200 OK received) and `CALL_CLOSED` (with the reason).
//! - An account's `audio_codecs=G722` looks for `G722/8000/1` (the RTP clock) and
//!   finds nothing; `G722/16000/1` is the name that matches.
//! - The menu module must be loaded: it registers `dial` and `hangup`;
//!   `statmode_default off` keeps its status line (redrawn ten times a second) out of the log.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use tempfile::TempDir;

use super::analysis::{Audio, Colour, Frame, audio_samples, picture_frame};
use super::caller::{TONE_AMPLITUDE, tone_wav};
use super::net::{free_sip_port, free_tcp_port};
use super::process::{ChildProcess, file_tail, run_bounded, wait_until};

/// G.722's sample rate: what `aufile` insists the WAV has.
const AUDIO_RATE: u32 = 16_000;
/// Longer than any test runs: `aufile` plays its file once, `avformat` pauses to rewind.
const MEDIA_SECS: u32 = 120;
const CLIP_SIZE: &str = "320x240";
const CLIP_FPS: u32 = 25;
/// Where it takes its RTP ports: Linux's ephemeral range, where callers' ports live,
/// clear of the servers' RTP ranges below it (see `server_rtp_range`); baresip's own
/// default (1024-49152) would take ports from them.
const RTP_PORTS: &str = "32768-60999";
/// From start to "baresip is ready." (modules loaded, sockets bound).
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// A command's answer on the control socket.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// From `dial` to the 200 OK, or to a refusal.
const CALL_SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// A `snapshot_recv` is served by the next decoded frame.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(3);
/// SIGTERM makes baresip hang up (BYE) and write its files before it exits.
const STOP_GRACE: Duration = Duration::from_secs(3);
const LOG_FILE: &str = "baresip.log";

/// Who a softphone is: the name in its From header, its picture and its tone.
#[derive(Clone, Debug)]
pub struct BaresipSpec {
    pub name: String,
    pub colour: Colour,
    pub tone_hz: f64,
    /// Its account's `mediaenc`, e.g. `srtp-mand` (SDES keys, nothing but SRTP).
    pub media_encryption: Option<&'static str>,
    /// Answers incoming calls by itself (a dial-out's callee).
    pub auto_answer: bool,
}

impl BaresipSpec {
    pub fn new(name: &str, colour: Colour, tone_hz: f64) -> Self {
        Self { name: name.to_owned(), colour, tone_hz, media_encryption: None, auto_answer: false }
    }
}

/// When a call was placed and when its 200 OK arrived (harness clock).
#[derive(Clone, Copy, Debug)]
pub struct Dialled {
    pub invited_at: SystemTime,
    pub answered_at: SystemTime,
}

/// A running baresip. Dropped, it gets SIGTERM (it hangs up), then SIGKILL after a
/// bounded wait; if the test is panicking its log is printed and its directory kept.
pub struct Baresip {
    pub spec: BaresipSpec,
    /// Its SIP port on 127.0.0.1 (UDP and TCP).
    pub sip_port: u16,
    process: ChildProcess,
    control: Control,
    dir: Option<TempDir>,
    /// PNGs asked for so far: each gets a file of its own.
    snapshots: u32,
    /// The control message index at which the current call was dialled.
    call_from: usize,
    /// Where the current call's first received frame is saved.
    first_frame: PathBuf,
}

impl Baresip {
    /// Writes the tone, the clip and the config, and starts baresip on free ports.
    pub fn start(spec: BaresipSpec) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix(&format!("tutti-baresip-{}-", spec.name)).tempdir()?;
        let tone = dir.path().join("tone.wav");
        tone_wav(&tone, spec.tone_hz, TONE_AMPLITUDE, f64::from(MEDIA_SECS), AUDIO_RATE)?;
        let clip = dir.path().join("clip.mp4");
        solid_clip(&clip, spec.colour)?;
        fs::write(dir.path().join("accounts"), account(&spec))?;

        // The ports were free a moment ago; should another process take one first,
        // baresip says so in its log and it is tried again on new ones.
        const ATTEMPTS: usize = 3;
        let log = dir.path().join(LOG_FILE);
        let mut attempt = 1;
        let (process, sip_port, control_port) = loop {
            let (sip_port, control_port) = (free_sip_port()?, free_tcp_port()?);
            fs::write(dir.path().join("config"), config(&spec, dir.path(), &tone, &clip, sip_port, control_port))?;
            let mut cmd = Command::new("baresip");
            cmd.arg("-f").arg(dir.path());
            let mut process = ChildProcess::spawn("baresip", cmd, &log)?;
            match wait_ready(&mut process, &log) {
                Ok(()) => break (process, sip_port, control_port),
                Err(e) if attempt == ATTEMPTS => return Err(e),
                Err(_) => attempt += 1,
            }
        };
        let control = Control::connect(control_port)?;
        let first_frame = dir.path().join("first-frame.png");
        Ok(Self { spec, sip_port, process, control, dir: Some(dir), snapshots: 0, call_from: 0, first_frame })
    }

    /// Calls `uri` and waits for the 200 OK. The first received frame is saved as it
    /// arrives (see [`Baresip::first_frame_at`]).
    pub fn dial(&mut self, uri: &str) -> Result<Dialled> {
        let invited_at = SystemTime::now();
        let first_frame = self.next_picture();
        let (answered_at, event) = self.place_call(uri, Some(&first_frame))?;
        self.first_frame = first_frame;
        ensure!(event["type"] == "CALL_ESTABLISHED", "{} calling {uri}: {}", self.spec.name, event["param"]);
        Ok(Dialled { invited_at, answered_at })
    }

    /// Waits for an incoming call (a dial-out from Tutti) to be answered, by itself
    /// (`auto_answer`); returns when.
    pub fn wait_answered(&mut self, timeout: Duration) -> Result<SystemTime> {
        self.call_from = self.control.seen.len();
        let (at, _) = self.control.wait_for_event(0, timeout, |e| e["type"] == "CALL_ESTABLISHED")?;
        Ok(at)
    }

    /// Calls `uri`, expecting a refusal; returns it as baresip reports it ("404 Not Found").
    pub fn dial_refused(&mut self, uri: &str) -> Result<String> {
        let (_, event) = self.place_call(uri, None)?;
        ensure!(event["type"] == "CALL_CLOSED", "{} calling {uri}: {event} where a refusal was expected", self.spec.name);
        Ok(event["param"].as_str().unwrap_or_default().to_owned())
    }

    /// Sends `dial` (and asks for the first received frame to be saved as `first_frame`),
    /// then waits for the call to be answered or closed.
    fn place_call(&mut self, uri: &str, first_frame: Option<&Path>) -> Result<(SystemTime, Value)> {
        self.call_from = self.control.seen.len();
        self.control.command("dial", uri)?;
        if let Some(path) = first_frame {
            self.control.command("snapshot_recv", &path.to_string_lossy())?;
        }
        self.control.wait_for_event(self.call_from, CALL_SETUP_TIMEOUT, |e| {
            e["type"] == "CALL_ESTABLISHED" || e["type"] == "CALL_CLOSED"
        })
    }

    /// Presses `keys` on the keypad, a quarter of a second apart: sent as
    /// RFC 4733 `telephone-event` in its RTP, as its answer allows.
    pub fn press(&mut self, keys: &str) -> Result<()> {
        for key in keys.chars() {
            self.control.command("sndcode", &key.to_string())?;
            thread::sleep(Duration::from_millis(250));
        }
        Ok(())
    }

    /// When the call's first frame from Tutti was decoded (its PNG written).
    pub fn first_frame_at(&self) -> Result<SystemTime> {
        self.wait_written(&self.first_frame)?;
        Ok(fs::metadata(&self.first_frame)?.modified()?)
    }

    /// The next received frame, decoded (see `picture_frame`), stamped when it was saved.
    pub fn snapshot(&mut self) -> Result<Frame> {
        let path = self.next_picture();
        self.control.command("snapshot_recv", &path.to_string_lossy())?;
        self.wait_written(&path)?;
        picture_frame(&path, fs::metadata(&path)?.modified()?)
    }

    /// Hangs up (BYE), waits for the call to close, and returns when it was asked to.
    pub fn hang_up(&mut self) -> Result<SystemTime> {
        let from = self.control.seen.len();
        let asked_at = SystemTime::now();
        self.control.command("hangup", "")?;
        self.control.wait_for_event(from, COMMAND_TIMEOUT, |e| e["type"] == "CALL_CLOSED")?;
        Ok(asked_at)
    }

    /// Waits for the call to be closed by the other side; returns when, and why
    /// (baresip's words, e.g. "Connection reset by peer").
    pub fn wait_closed(&mut self, timeout: Duration) -> Result<(SystemTime, String)> {
        let (at, event) = self.control.wait_for_event(self.call_from, timeout, |e| e["type"] == "CALL_CLOSED")?;
        Ok((at, event["param"].as_str().unwrap_or_default().to_owned()))
    }

    /// What it heard in its (ended) call: the decoded audio `sndfile` wrote, its first
    /// sample placed at `answered_at` (decoding starts with the 200 OK's answer).
    pub fn received_audio(&self, answered_at: SystemTime) -> Result<Audio> {
        let dump = fs::read_dir(self.dir())?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .find(|path| path.file_name().is_some_and(|n| n.to_string_lossy().ends_with("-dec.wav")))
            .with_context(|| format!("{}: sndfile wrote no received audio\n{}", self.spec.name, self.logs()))?;
        Ok(Audio { start: answered_at, ..audio_samples(&dump)? })
    }

    /// Everything baresip has logged so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.path(LOG_FILE)).unwrap_or_default()).into_owned()
    }

    /// The tail of its log.
    pub fn logs(&self) -> String {
        format!("----- baresip {} -----\n{}", self.spec.name, file_tail(&self.path(LOG_FILE)))
    }

    /// Waits for baresip to log that it wrote `path` (it writes the PNG in one go).
    fn wait_written(&self, path: &Path) -> Result<()> {
        let line = format!("png: wrote {}", path.display());
        wait_until(&format!("{}: {line}", self.spec.name), SNAPSHOT_TIMEOUT, || Ok(self.log().contains(&line)))
    }

    /// A new file name for a received frame.
    fn next_picture(&mut self) -> PathBuf {
        self.snapshots += 1;
        self.path(&format!("received-{}.png", self.snapshots))
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("the directory lives as long as baresip").path()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        self.process.stop("TERM", STOP_GRACE);
        if std::thread::panicking() {
            let logs = self.logs();
            let kept = self.dir.take().map(TempDir::keep);
            eprintln!("baresip {}: files kept in {kept:?}\n{logs}", self.spec.name);
        }
    }
}

/// One account, never registered (`regint=0`), answering by itself only as a
/// dial-out's callee, with one audio and one video codec so that what is negotiated
/// is known, and SRTP if the spec asks.
fn account(spec: &BaresipSpec) -> String {
    let name = &spec.name;
    let answer = if spec.auto_answer { "auto" } else { "manual" };
    let encryption = spec.media_encryption.map(|e| format!(";mediaenc={e}")).unwrap_or_default();
    format!("\"{name}\" <sip:{name}@127.0.0.1>;regint=0;answermode={answer};audio_codecs=G722/16000/1;video_codecs=H264{encryption}\n")
}

/// The whole config: only the modules the tests use, every socket on 127.0.0.1.
fn config(spec: &BaresipSpec, dir: &Path, tone: &Path, clip: &Path, sip_port: u16, control_port: u16) -> String {
    let (dir, tone, clip) = (dir.display(), tone.display(), clip.display());
    let srtp = if spec.media_encryption.is_some() { "module srtp.so\n" } else { "" };
    format!(
        "poll_method epoll
net_interface 127.0.0.1
sip_listen 127.0.0.1:{sip_port}
call_max_calls 1
audio_source aufile,{tone}
audio_player aubridge,nil
audio_alert aubridge,nil
video_source avformat,{clip}
video_display fakevideo,nil
video_size {CLIP_SIZE}
video_fps {CLIP_FPS}
video_bitrate 500000
rtcp_mux no
rtp_ports {RTP_PORTS}
module_path /usr/lib/baresip/modules
module g722.so
module aufile.so
module aubridge.so
module avcodec.so
module avformat.so
module fakevideo.so
module sndfile.so
module snapshot.so
module ctrl_tcp.so
{srtp}module_app account.so
module_app menu.so
ctrl_tcp_listen 127.0.0.1:{control_port}
snd_path {dir}
statmode_default off
"
    )
}

/// A `MEDIA_SECS` H.264 clip of `colour` alone (3000 frames of a few bytes: made in a second).
fn solid_clip(path: &Path, colour: Colour) -> Result<()> {
    let [r, g, b] = colour.rgb();
    let source = format!("color=c=0x{r:02x}{g:02x}{b:02x}:s={CLIP_SIZE}:r={CLIP_FPS}:d={MEDIA_SECS}");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", &source])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-y"])
        .arg(path);
    let output = run_bounded(cmd, Duration::from_secs(30))?;
    ensure!(output.status.success(), "ffmpeg colour clip: {}", String::from_utf8_lossy(&output.stderr));
    Ok(())
}

/// Waits for "baresip is ready." and fails if a socket could not be bound.
fn wait_ready(process: &mut ChildProcess, log: &Path) -> Result<()> {
    wait_until("baresip to be ready", READY_TIMEOUT, || {
        let text = file_tail(log);
        if let Some(status) = process.exit_status() {
            bail!("baresip exited ({status})\n{text}");
        }
        // A module that cannot listen is only a warning to baresip.
        if text.contains("Address already in use") {
            bail!("baresip could not bind a port\n{text}");
        }
        Ok(text.contains("baresip is ready."))
    })
}

/// The `ctrl_tcp` socket: commands out, netstring JSON answers and events in
/// (read by a thread, stamped with the time they arrived).
struct Control {
    stream: TcpStream,
    incoming: mpsc::Receiver<(SystemTime, Value)>,
    /// Every message read so far, in order.
    seen: Vec<(SystemTime, Value)>,
    tokens: u64,
}

impl Control {
    fn connect(port: u16) -> Result<Self> {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).with_context(|| format!("connecting to ctrl_tcp on {port}"))?;
        let mut reader = stream.try_clone()?;
        let (tx, incoming) = mpsc::channel();
        // Ends when baresip closes the socket (it exits) or the Control is dropped.
        thread::spawn(move || {
            while let Ok(message) = read_netstring(&mut reader) {
                let Ok(value) = serde_json::from_slice(&message) else { continue };
                if tx.send((SystemTime::now(), value)).is_err() {
                    return;
                }
            }
        });
        Ok(Self { stream, incoming, seen: Vec::new(), tokens: 0 })
    }

    /// Sends a command and waits for its answer, which must be ok.
    fn command(&mut self, command: &str, params: &str) -> Result<Value> {
        self.tokens += 1;
        let token = format!("{command}-{}", self.tokens);
        let body = json!({"command": command, "params": params, "token": token}).to_string();
        self.stream.write_all(format!("{}:{body},", body.len()).as_bytes())?;
        let from = self.seen.len();
        let (_, answer) = self.wait_for(from, COMMAND_TIMEOUT, &format!("the answer to {command}"), |m| {
            m["response"] == true && m["token"] == token.as_str()
        })?;
        ensure!(answer["ok"] == true, "baresip refused {command} {params}: {answer}");
        Ok(answer)
    }

    /// The first event from message `from` on that `wanted` accepts.
    fn wait_for_event(&mut self, from: usize, timeout: Duration, wanted: impl Fn(&Value) -> bool) -> Result<(SystemTime, Value)> {
        self.wait_for(from, timeout, "a call event", |m| m["event"] == true && wanted(m))
    }

    fn wait_for(&mut self, from: usize, timeout: Duration, what: &str, wanted: impl Fn(&Value) -> bool) -> Result<(SystemTime, Value)> {
        let deadline = Instant::now() + timeout;
        let mut index = from;
        loop {
            while let Some(message) = self.seen.get(index) {
                if wanted(&message.1) {
                    return Ok(message.clone());
                }
                index += 1;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let message = self.incoming.recv_timeout(left).with_context(|| {
                let types: Vec<String> = self.seen.iter().map(|(_, m)| m["type"].as_str().unwrap_or("response").to_owned()).collect();
                format!("no {what} from baresip within {timeout:?}; it said {types:?}")
            })?;
            self.seen.push(message);
        }
    }
}

/// One netstring (`LEN:BYTES,`), as ctrl_tcp frames its JSON.
fn read_netstring(reader: &mut impl Read) -> Result<Vec<u8>> {
    let mut length = 0usize;
    let mut byte = [0u8; 1];
    loop {
        reader.read_exact(&mut byte)?;
        match byte[0] {
            b':' => break,
            digit @ b'0'..=b'9' if length < 10_000_000 => length = length * 10 + usize::from(digit - b'0'),
            other => bail!("not a netstring: byte {other:#x} in its length"),
        }
    }
    let mut message = vec![0u8; length + 1];
    reader.read_exact(&mut message)?;
    ensure!(message.pop() == Some(b','), "a netstring without its closing comma");
    Ok(message)
}
