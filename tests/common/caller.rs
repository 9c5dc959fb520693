//! A legacy RTP endpoint ("caller"): its SDP offer, a gst-launch sender and an ffmpeg recorder.
//!
//! Process layout of one caller:
//!
//! ```text
//!   server ──RTP + RTCP──▶ offer's ports, owned by the harness (`MediaPort` relay threads)
//!                            ├── RTP ──────────────────▶ ffmpeg recorder ──▶ recording-N.mkv
//!                            └── RTCP (RR, PLI, FIR) ──▶ gst-launch sender's rtpbin
//!   gst-launch sender: solid colour + sine ──RTP + RTCP──▶ the answer's ports
//! ```
//!
//! The harness, not a child process, owns the ports advertised in the offer (see `MediaPort`),
//! so the sender and the recorder can be stopped and restarted independently, rtcp-mux works,
//! and the server's RTCP reaches the sender's encoder whichever port it arrives on.
//!
//! An SRTP caller (`CallerSpec::srtp`) offers `RTP/SAVP(F)` with a key of its own on each
//! m= line; its sender encrypts with srtpenc, and its recorder (ffmpeg, which reads
//! `a=crypto` in its SDP file) decrypts with the key of Tutti's answer, so it starts after
//! the answer. Under `AES_CM_128_HMAC_SHA1_80` the server's SRTCP goes to the recorder, whose
//! SRTP layer checks it ("HMAC mismatch" in its log otherwise); never to the sender (srtpdec
//! would need the server's SSRC in advance), which relies on its periodic keyframes. ffmpeg
//! reads `AES_CM_128_HMAC_SHA1_32` as a 32-bit tag on SRTCP too, where RFC 4568, libsrtp and
//! SIP endpoints keep 80 bits, so under that suite the SRTCP is not handed to it.

use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sdp_types::{Rtcp, Session};
use tempfile::TempDir;

use super::analysis::Colour;
use super::net::{MediaPort, free_rtp_pair_port, free_udp_port, udp_port_bound};
use super::process::{ChildProcess, file_tail, wait_until};
use super::server::{Participant, Server};

/// Bound on waiting for a child process to bind its UDP ports.
const CHILD_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// SIGINT grace periods: gst-launch -e needs to push EOS (RTCP BYE), ffmpeg to write its trailer.
const SENDER_STOP_GRACE: Duration = Duration::from_secs(2);
const RECEIVER_STOP_GRACE: Duration = Duration::from_secs(5);
/// What a caller's recorder receives at an instant was stamped up to about
/// this much before it: Tutti stamps the mix with when its audio arrived
/// (its queue wait and the jitter buffer's are behind it) and each
/// composite frame with its slot. Stopped the moment a measurement window
/// ended, a recorder held the window's audio only 12-22 ms past its end,
/// and in one CI run 25 ms short of it; so it records this much longer.
const IN_FLIGHT: Duration = Duration::from_millis(200);
/// Peak amplitude of the sender's sine, 0.4 = -8 dBFS: loud, but no mixer clipping for a few callers.
pub const TONE_AMPLITUDE: f64 = 0.4;
pub const VIDEO_FPS: u32 = 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    /// The media name on an m= line.
    pub fn sdp_name(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoCodec {
    /// H.264 constrained baseline, packetization-mode=1 (FU-A and STAP-A allowed).
    H264Pm1,
    /// H.264 constrained baseline, packetization-mode=0 (one NAL unit per packet: the encoder
    /// is told to keep slices below the MTU).
    H264Pm0,
    Vp8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AudioCodec {
    /// 48 kHz, sent mono.
    Opus,
    /// G.711 µ-law, 8 kHz mono.
    Pcmu,
    /// G.711 A-law, 8 kHz mono.
    Pcma,
    /// 16 kHz mono (RTP clock 8000, RFC 3551).
    G722,
}

/// One row of the codec table: what the offer, the sender and the recorder need to know.
struct Codec {
    kind: MediaKind,
    /// The payload type offered: dynamic for H.264/VP8/Opus, static for G.711/G.722.
    payload_type: u8,
    rtpmap: &'static str,
    fmtp: Option<&'static str>,
    /// gst-launch fragment from raw media to RTP packets; `{pt}` and `{keyint}` are filled in.
    encoder: &'static str,
    /// Raw sample rate the audio encoder takes (for G.722 not the RTP clock rate); 0 for video.
    sample_rate: u32,
}

impl VideoCodec {
    fn codec(self) -> &'static Codec {
        match self {
            VideoCodec::H264Pm1 => &Codec {
                kind: MediaKind::Video,
                payload_type: 96,
                rtpmap: "H264/90000",
                fmtp: Some("profile-level-id=42e01f;packetization-mode=1"),
                encoder: "x264enc tune=zerolatency speed-preset=ultrafast key-int-max={keyint} \
                          ! video/x-h264,profile=constrained-baseline \
                          ! rtph264pay pt={pt} mtu=1200 config-interval=-1 aggregate-mode=zero-latency",
                sample_rate: 0,
            },
            VideoCodec::H264Pm0 => &Codec {
                kind: MediaKind::Video,
                payload_type: 96,
                rtpmap: "H264/90000",
                fmtp: Some("profile-level-id=42e01f;packetization-mode=0"),
                encoder: "x264enc tune=zerolatency speed-preset=ultrafast key-int-max={keyint} \
                          option-string=slice-max-size=1000 \
                          ! video/x-h264,profile=constrained-baseline \
                          ! rtph264pay pt={pt} mtu=1400 config-interval=-1 aggregate-mode=none",
                sample_rate: 0,
            },
            VideoCodec::Vp8 => &Codec {
                kind: MediaKind::Video,
                payload_type: 97,
                rtpmap: "VP8/90000",
                fmtp: None,
                encoder: "vp8enc deadline=1 keyframe-max-dist={keyint} ! rtpvp8pay pt={pt} mtu=1200",
                sample_rate: 0,
            },
        }
    }
}

impl AudioCodec {
    fn codec(self) -> &'static Codec {
        match self {
            AudioCodec::Opus => &Codec {
                kind: MediaKind::Audio,
                payload_type: 111,
                rtpmap: "opus/48000/2",
                fmtp: Some("minptime=10;useinbandfec=1"),
                encoder: "opusenc frame-size=20 ! rtpopuspay pt={pt}",
                sample_rate: 48000,
            },
            AudioCodec::Pcmu => &Codec {
                kind: MediaKind::Audio,
                payload_type: 0,
                rtpmap: "PCMU/8000",
                fmtp: None,
                encoder: "mulawenc ! rtppcmupay pt={pt}",
                sample_rate: 8000,
            },
            AudioCodec::Pcma => &Codec {
                kind: MediaKind::Audio,
                payload_type: 8,
                rtpmap: "PCMA/8000",
                fmtp: None,
                encoder: "alawenc ! rtppcmapay pt={pt}",
                sample_rate: 8000,
            },
            AudioCodec::G722 => &Codec {
                kind: MediaKind::Audio,
                payload_type: 9,
                rtpmap: "G722/8000",
                fmtp: None,
                encoder: "avenc_g722 ! rtpg722pay pt={pt}",
                sample_rate: 16000,
            },
        }
    }
}

impl Codec {
    /// The m= section for this codec on `port` (without rtcp/direction attributes); used both
    /// for the offer and for the SDP file that tells the recorder what to expect.
    fn media_section(&self, port: u16, fmtp: Option<&str>) -> String {
        let pt = self.payload_type;
        let proto = match self.kind {
            MediaKind::Audio => "RTP/AVP",
            // AVPF because the offer carries a=rtcp-fb (RFC 4585).
            MediaKind::Video => "RTP/AVPF",
        };
        let media = self.kind.sdp_name();
        let mut section = format!("m={media} {port} {proto} {pt}\r\na=rtpmap:{pt} {}\r\n", self.rtpmap);
        if let Some(fmtp) = fmtp {
            write!(section, "a=fmtp:{pt} {fmtp}\r\n").unwrap();
        }
        match self.kind {
            MediaKind::Audio => section.push_str("a=ptime:20\r\n"),
            MediaKind::Video => {
                for feedback in ["nack", "nack pli", "ccm fir"] {
                    write!(section, "a=rtcp-fb:{pt} {feedback}\r\n").unwrap();
                }
            }
        }
        section
    }
}

/// What a caller is: its identity on screen and on the mix, and how it speaks RTP.
#[derive(Clone, Debug)]
pub struct CallerSpec {
    pub name: String,
    /// The solid colour of its picture.
    pub colour: Colour,
    /// The frequency of its sine tone.
    pub tone_hz: f64,
    /// The tone's peak amplitude (1.0 = full scale).
    pub tone_amplitude: f64,
    /// A mono WAV file sent once, in real time, instead of the endless tone
    /// (see [`gated_tone_wav`]); audio only.
    pub audio_clip: Option<PathBuf>,
    pub video: Option<VideoCodec>,
    pub audio: Option<AudioCodec>,
    /// Picture size sent (the brief's choices are 320x240 and 640x480).
    pub video_size: (u32, u32),
    /// Frames between forced keyframes; a PLI/FIR from the server forces one in between.
    pub keyframe_interval: u32,
    /// Offer a=rtcp-mux (RTP and RTCP on one port) instead of a=rtcp:<port+1>.
    pub rtcp_mux: bool,
    /// The local address the sender sends from (`None`: the system's choice, 127.0.0.1).
    /// Any 127.x.y.z works on Linux loopback: a sender "from another host".
    pub send_from: Option<IpAddr>,
    /// The H.264 fmtp offered instead of the codec's own, as a room system writes
    /// what it decodes (a level, `max-fs`, `max-mbps`); what is sent is unchanged.
    pub video_fmtp: Option<&'static str>,
    /// Also offer what room systems always send after audio and main video (a slides
    /// video, UDP/BFCP, H.224 far-end camera control), the main video marked
    /// `a=content:main`: the answer must decline each extra with port 0.
    pub room_system_extras: bool,
    /// SRTP only, with this suite (`AES_CM_128_HMAC_SHA1_80` or `_32`) on every m= line.
    pub srtp: Option<&'static str>,
    /// An Opus sender that uses DTX when the answer asks for it (`usedtx=1`),
    /// as a browser does: in a pause it sends a packet every 400 ms, not 50 a
    /// second (libopus's DTX, and rtpopuspay leaves out the empty frames).
    pub opus_dtx: bool,
}

impl CallerSpec {
    /// H.264 (packetization-mode 1) 320x240 + Opus, a keyframe every 2 s, no rtcp-mux.
    pub fn new(name: &str, colour: Colour, tone_hz: f64) -> Self {
        Self {
            name: name.to_owned(),
            colour,
            tone_hz,
            tone_amplitude: TONE_AMPLITUDE,
            audio_clip: None,
            video: Some(VideoCodec::H264Pm1),
            audio: Some(AudioCodec::Opus),
            video_size: (320, 240),
            keyframe_interval: 2 * VIDEO_FPS,
            rtcp_mux: false,
            send_from: None,
            video_fmtp: None,
            room_system_extras: false,
            srtp: None,
            opus_dtx: false,
        }
    }
}

/// What [`CallerSpec::room_system_extras`] adds after a caller's own m= lines, as a
/// Cisco room system writes it (port 9, discard: nothing may ever be sent there).
const ROOM_SYSTEM_EXTRAS: &str = "m=video 9 RTP/AVP 97\r\na=rtpmap:97 H264/90000\r\n\
    a=fmtp:97 profile-level-id=428016;max-mbps=245000;max-fs=8160;packetization-mode=1\r\na=content:slides\r\na=label:13\r\na=sendrecv\r\n\
    m=application 9 UDP/BFCP *\r\na=floorctrl:c-s\r\na=confid:1\r\na=floorid:2 mstrm:13\r\na=userid:1\r\n\
    m=application 9 RTP/AVP 125\r\na=rtpmap:125 H224/4800\r\na=sendrecv\r\n";
/// The media of those extra m= lines, in order.
const ROOM_SYSTEM_EXTRA_MEDIA: [&str; 3] = ["video", "application", "application"];

/// One offered m= line and the harness-owned ports it advertises.
struct MediaLine {
    codec: &'static Codec,
    port: MediaPort,
    /// The SRTP master key and salt it offers (used only by an SRTP caller).
    srtp_key: [u8; 30],
}

/// Where the answer asks one of our streams to be sent.
#[derive(Debug)]
pub struct Destination {
    pub addr: IpAddr,
    pub rtp_port: u16,
    pub rtcp_port: u16,
    pub payload_type: u8,
    /// The answer's `a=crypto` value (`<tag> <suite> inline:<key>`), on an SRTP m= line.
    pub crypto: Option<String>,
    /// The answer's fmtp for `payload_type` asks the sender for DTX (`usedtx=1`, RFC 7587).
    pub usedtx: bool,
}

struct Recorder {
    process: ChildProcess,
    /// ffmpeg's RTP port for each m= line.
    ports: Vec<u16>,
    output: PathBuf,
}

impl Recorder {
    /// Stops ffmpeg so that it completes the file.
    fn finish(&mut self) {
        // SIGINT only takes effect when ffmpeg's current read returns, which it never does
        // once nothing arrives any more (a second SIGINT would abort the file writes too).
        // An RTCP BYE on every stream is how ffmpeg's RTP input ends cleanly: it is read
        // even from a silent stream, and the demuxer reports end of file.
        let bye_sent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).is_ok_and(|socket| {
            self.ports.iter().all(|&port| socket.send_to(&RTCP_BYE, (Ipv4Addr::LOCALHOST, port)).is_ok())
        });
        if !bye_sent || self.process.wait_for_exit(RECEIVER_STOP_GRACE).is_none() {
            self.process.stop("INT", RECEIVER_STOP_GRACE);
        }
    }
}

/// Spawns the command `command` builds and waits until the child has bound the UDP ports it
/// was given. Those were picked free and released just before, so another process may take
/// one first; the child then exits, and it is tried again on new ports.
fn spawn_binding_ports(
    name: &str,
    log: &Path,
    mut command: impl FnMut() -> Result<(Command, Vec<u16>)>,
) -> Result<(ChildProcess, Vec<u16>)> {
    const ATTEMPTS: usize = 3;
    let mut attempt = 1;
    loop {
        let (cmd, ports) = command()?;
        let mut child = ChildProcess::spawn(name, cmd, log)?;
        let bound = wait_until(&format!("{name} to bind UDP ports {ports:?}"), CHILD_READY_TIMEOUT, || {
            if let Some(status) = child.exit_status() {
                bail!("{name} exited ({status})\n{}", file_tail(log));
            }
            Ok(ports.iter().all(|&port| udp_port_bound(port)))
        });
        match bound {
            Ok(()) => return Ok((child, ports)),
            Err(e) if attempt == ATTEMPTS => return Err(e),
            Err(_) => attempt += 1,
        }
    }
}

/// A compound RTCP packet (RFC 3550 6.1: an empty receiver report, then a BYE), 16 bytes as
/// ffmpeg ignores anything shorter than an RTP header. Each part: V=2, count, packet type,
/// length in 32-bit words - 1, SSRC.
const RTCP_BYE: [u8; 16] = [0x80, 201, 0, 1, 0x7e, 0x57, 0xb7, 0xe0, 0x81, 203, 0, 1, 0x7e, 0x57, 0xb7, 0xe0];

/// A live caller: owns its advertised ports from creation, and at most one sender and one
/// recorder at a time. Dropping it kills both; if the test is panicking it prints their logs
/// and keeps its temp dir (recordings included).
pub struct Caller {
    /// Colour, tone, size and keyframe interval may be changed between `start_sender` calls;
    /// codecs and rtcp-mux are fixed by the offer.
    pub spec: CallerSpec,
    /// In offer order: audio first, then video.
    media: Vec<MediaLine>,
    session_id: u64,
    dir: Option<TempDir>,
    sender: Option<ChildProcess>,
    recorder: Option<Recorder>,
    recordings: u32,
    /// The answer's `a=crypto` values in m= line order, for an SRTP caller's recorder.
    answer_crypto: Vec<Option<String>>,
}

impl Caller {
    pub fn new(spec: CallerSpec) -> Result<Self> {
        static SESSIONS: AtomicU64 = AtomicU64::new(1);
        let codecs = [spec.audio.map(AudioCodec::codec), spec.video.map(VideoCodec::codec)];
        let media = codecs
            .into_iter()
            .flatten()
            .map(|codec| Ok(MediaLine { codec, port: MediaPort::bind(spec.rtcp_mux)?, srtp_key: rand::random() }))
            .collect::<Result<Vec<_>>>()?;
        ensure!(!media.is_empty(), "caller {} has neither audio nor video", spec.name);
        let dir = tempfile::Builder::new().prefix(&format!("tutti-caller-{}-", spec.name)).tempdir()?;
        let epoch_secs = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?.as_secs();
        let session_id = epoch_secs * 1000 + SESSIONS.fetch_add(1, Ordering::SeqCst);
        Ok(Self { spec, media, session_id, dir: Some(dir), sender: None, recorder: None, recordings: 0, answer_crypto: Vec::new() })
    }

    /// The SDP offer: RTP (or SRTP) to the harness-owned ports on 127.0.0.1, one codec per m= line.
    pub fn offer(&self) -> String {
        let mut sdp = self.session_header(&self.spec.name);
        for line in &self.media {
            let video = line.codec.kind == MediaKind::Video;
            let fmtp = if video { self.spec.video_fmtp.or(line.codec.fmtp) } else { line.codec.fmtp };
            let crypto = self.spec.srtp.map(|suite| format!("1 {suite} inline:{}", BASE64.encode(line.srtp_key)));
            sdp += &self.media_section(line, line.port.rtp_port, fmtp, crypto);
            if self.spec.rtcp_mux {
                sdp += "a=rtcp-mux\r\n";
            } else {
                write!(sdp, "a=rtcp:{}\r\n", line.port.rtcp_port).unwrap();
            }
            if video && self.spec.room_system_extras {
                sdp += "a=content:main\r\n";
            }
            sdp += "a=sendrecv\r\n";
        }
        if self.spec.room_system_extras {
            sdp += ROOM_SYSTEM_EXTRAS;
        }
        sdp
    }

    /// Starts the recorder, posts the offer, starts the sender: the usual way to join.
    pub fn join(&mut self, server: &Server, composition_id: &str) -> Result<Participant> {
        self.join_with(|offer| server.add_participant(composition_id, offer))
    }

    /// As [`Caller::join`], posting the offer as JSON with the spec's name as the
    /// participant's name (what its label and slate show).
    pub fn join_named(&mut self, server: &Server, composition_id: &str) -> Result<Participant> {
        let name = self.spec.name.clone();
        self.join_with(|offer| server.add_named_participant(composition_id, &name, offer))
    }

    /// The recorder starts before the offer is posted, so no keyframe is missed; an SRTP
    /// caller's only once the answer gives Tutti's keys.
    fn join_with(&mut self, post: impl FnOnce(&str) -> Result<Participant>) -> Result<Participant> {
        if self.spec.srtp.is_none() {
            self.start_receiver()?;
        }
        let participant = post(&self.offer())?;
        if self.spec.srtp.is_some() {
            self.answer_crypto = self.parse_answer(&participant.answer)?.into_iter().map(|d| d.and_then(|d| d.crypto)).collect();
            self.start_receiver()?;
        }
        self.start_sender(&participant.answer)?;
        Ok(participant)
    }

    /// Starts sending the test picture and tone where `answer` says, through an rtpbin that
    /// also reads the RTCP arriving at our advertised RTCP port (PLI/FIR force a keyframe).
    /// Rejected m= lines (port 0) are not sent. Also used to restart after `stop_sender`.
    pub fn start_sender(&mut self, answer: &str) -> Result<()> {
        if let Some(sender) = &mut self.sender {
            ensure!(sender.exit_status().is_some(), "caller {}: sender already running", self.spec.name);
        }
        let destinations = self.parse_answer(answer)?;
        ensure!(destinations.iter().any(Option::is_some), "the answer rejected every m= line:\n{answer}");
        let (sender, _) = spawn_binding_ports("gst-launch", &self.path("sender.log"), || {
            let (cmd, rtcp_ports) = self.sender_command(&destinations)?;
            // Routed before the sender starts, so not even the server's first PLI is lost.
            let recorder_rtcp = |index: usize| self.recorder.as_ref().and_then(|r| r.ports.get(index)).map(|p| p + 1);
            let sending = self.media.iter().zip(&destinations).enumerate().filter(|(_, (_, to))| to.is_some());
            for ((index, (line, _)), &port) in sending.zip(&rtcp_ports) {
                let srtcp_check = recorder_rtcp(index).filter(|_| self.spec.srtp == Some("AES_CM_128_HMAC_SHA1_80"));
                line.port.forward_rtcp_to(srtcp_check.unwrap_or(port));
            }
            Ok((cmd, rtcp_ports))
        })?;
        self.sender = Some(sender);
        Ok(())
    }

    /// Hangs up politely: EOS, so rtpbin sends RTCP BYE (bounded wait, then SIGKILL).
    pub fn stop_sender(&mut self) {
        if let Some(mut sender) = self.sender.take() {
            sender.stop("INT", SENDER_STOP_GRACE);
        }
        self.media.iter().for_each(|line| line.port.forward_rtcp_to(0));
    }

    /// Goes silent abruptly, as a crashed or unplugged endpoint would: no BYE.
    pub fn kill_sender(&mut self) {
        if let Some(mut sender) = self.sender.take() {
            sender.kill();
        }
        self.media.iter().for_each(|line| line.port.forward_rtcp_to(0));
    }

    /// Starts recording what arrives at the offer's ports. It needs no answer: the server
    /// sends the offered payload types, and starting before the offer is posted means the
    /// first keyframe cannot be missed (the recorder cannot ask for another).
    ///
    /// The recorder is ffmpeg reading an SDP file, with `-use_wallclock_as_timestamps 1`: each
    /// packet is stamped with the system clock when ffmpeg reads it, `-copyts` keeps those
    /// absolute times in the Matroska file (1 ms resolution), and video is stream-copied and
    /// audio turned into PCM so ffmpeg's read loop never lags behind the socket.
    pub fn start_receiver(&mut self) -> Result<()> {
        ensure!(self.recorder.is_none(), "caller {}: receiver already running", self.spec.name);
        self.recordings += 1;
        let output = self.path(&format!("recording-{}.mkv", self.recordings));
        let sdp_path = self.path(&format!("recorder-{}.sdp", self.recordings));
        let (process, ports) =
            spawn_binding_ports("ffmpeg", &self.path("receiver.log"), || self.recorder_command(&sdp_path, &output))?;
        for (line, &port) in self.media.iter().zip(&ports) {
            line.port.forward_rtp_to(port);
        }
        self.recorder = Some(Recorder { process, ports, output });
        Ok(())
    }

    /// Stops the recorder so that the file is complete (bounded wait) and returns its path.
    pub fn stop_receiver(&mut self) -> Result<PathBuf> {
        let mut recorder = self.recorder.take().context("no receiver running")?;
        std::thread::sleep(IN_FLIGHT);
        if self.spec.srtp.is_some() {
            // The plain RTCP BYE that ends a recording fails SRTP authentication in ffmpeg;
            // SIGINT while the server's packets still arrive (each read returns) ends it as cleanly.
            recorder.process.stop("INT", RECEIVER_STOP_GRACE);
            self.media.iter().for_each(|line| line.port.forward_rtp_to(0));
        } else {
            self.media.iter().for_each(|line| line.port.forward_rtp_to(0));
            recorder.finish();
        }
        let size = fs::metadata(&recorder.output).map(|m| m.len()).unwrap_or(0);
        ensure!(size > 0, "recorder wrote nothing\n{}", self.logs());
        Ok(recorder.output)
    }

    /// When the first RTP packet of `kind` reached our advertised port (harness clock).
    pub fn first_rtp_at(&self, kind: MediaKind) -> Option<SystemTime> {
        self.line(kind)?.port.first_rtp_at()
    }

    /// When the latest RTP packet of `kind` reached our advertised port.
    pub fn last_rtp_at(&self, kind: MediaKind) -> Option<SystemTime> {
        self.line(kind)?.port.last_rtp_at()
    }

    /// The longest silence between two RTP packets of `kind` since the previous call.
    pub fn take_longest_rtp_gap(&self, kind: MediaKind) -> Option<Duration> {
        Some(self.line(kind)?.port.take_longest_rtp_gap())
    }

    /// Every SSRC of `kind` that reached our advertised port, in order of first appearance.
    pub fn rtp_ssrcs(&self, kind: MediaKind) -> Vec<u32> {
        self.line(kind).map_or_else(Vec::new, |line| line.port.rtp_ssrcs())
    }

    /// How many RTCP packets of `kind` reached our advertised ports so far.
    pub fn rtcp_packets(&self, kind: MediaKind) -> u64 {
        self.line(kind).map_or(0, |line| line.port.rtcp_packets())
    }

    /// How many SRTP or SRTCP packets from the server an SRTP caller's recorder (ffmpeg)
    /// could not authenticate, as its log says.
    pub fn recorder_srtp_failures(&self) -> usize {
        fs::read_to_string(self.path("receiver.log")).unwrap_or_default().matches("HMAC mismatch").count()
    }

    /// How many RTP packets of `kind` reached our advertised port so far.
    pub fn rtp_packets(&self, kind: MediaKind) -> u64 {
        self.line(kind).map_or(0, |line| line.port.rtp_packets())
    }

    /// The tails of the sender's and the recorder's logs.
    pub fn logs(&self) -> String {
        ["sender.log", "receiver.log"]
            .iter()
            .map(|name| format!("----- caller {} {name} -----\n{}", self.spec.name, file_tail(&self.path(name))))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// gst-launch sending to `destinations` through one rtpbin session per accepted m= line,
    /// each reading RTCP on a fresh port; returns those ports in m= line order.
    fn sender_command(&self, destinations: &[Option<Destination>]) -> Result<(Command, Vec<u16>)> {
        let mut pipeline = String::from("rtpbin name=rtp");
        let mut rtcp_ports = Vec::new();
        for (session, (line, destination)) in self.media.iter().zip(destinations).enumerate() {
            let Some(to) = destination else { continue };
            let rtcp_in = free_udp_port()?;
            rtcp_ports.push(rtcp_in);
            let mut encoder = line
                .codec
                .encoder
                .replace("{pt}", &to.payload_type.to_string())
                .replace("{keyint}", &self.spec.keyframe_interval.to_string());
            if self.spec.opus_dtx && to.usedtx && line.codec.rtpmap.starts_with("opus/") {
                encoder = encoder.replace("opusenc ", "opusenc dtx=true ").replace("rtpopuspay ", "rtpopuspay dtx=true ");
            }
            let bind = self.spec.send_from.map(|ip| format!(" bind-address={ip}")).unwrap_or_default();
            let udpsink = |port: u16| format!("udpsink host={} port={port}{bind} sync=false async=false", to.addr);
            write!(pipeline, " {source} ! {encoder} ! rtp.send_rtp_sink_{session}", source = self.raw_source(line.codec)).unwrap();
            match self.spec.srtp {
                None => write!(
                    pipeline,
                    " rtp.send_rtp_src_{session} ! {rtp_out} \
                      rtp.send_rtcp_src_{session} ! {rtcp_out} \
                      udpsrc address=127.0.0.1 port={rtcp_in} caps=application/x-rtcp ! rtp.recv_rtcp_sink_{session}",
                    rtp_out = udpsink(to.rtp_port),
                    rtcp_out = udpsink(to.rtcp_port),
                ),
                Some(suite) => write!(
                    pipeline,
                    " srtpenc name=srtp{session} key={key} rtp-cipher=aes-128-icm rtp-auth={auth} \
                      rtcp-cipher=aes-128-icm rtcp-auth=hmac-sha1-80 \
                      rtp.send_rtp_src_{session} ! srtp{session}.rtp_sink_{session} srtp{session}.rtp_src_{session} ! {rtp_out} \
                      rtp.send_rtcp_src_{session} ! srtp{session}.rtcp_sink_{session} srtp{session}.rtcp_src_{session} ! {rtcp_out} \
                      udpsrc address=127.0.0.1 port={rtcp_in} ! fakesink",
                    key = line.srtp_key.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                    auth = if suite.ends_with("_32") { "hmac-sha1-32" } else { "hmac-sha1-80" },
                    rtp_out = udpsink(to.rtp_port),
                    rtcp_out = udpsink(to.rtcp_port),
                ),
            }
            .unwrap();
        }
        let mut cmd = Command::new("gst-launch-1.0");
        // gst-launch quotes each argument as one token, so the description goes word by word
        // (no element property here contains a space).
        cmd.arg("-e").args(pipeline.split_whitespace());
        Ok((cmd, rtcp_ports))
    }

    /// ffmpeg recording every offered m= line from fresh ports (see `start_receiver`);
    /// returns those ports in m= line order.
    fn recorder_command(&self, sdp_path: &Path, output: &Path) -> Result<(Command, Vec<u16>)> {
        let ports = self.media.iter().map(|_| free_rtp_pair_port()).collect::<Result<Vec<_>>>()?;
        let mut sdp = self.session_header("recorder");
        for (index, (line, &port)) in self.media.iter().zip(&ports).enumerate() {
            let crypto = self.answer_crypto.get(index).cloned().flatten();
            ensure!(self.spec.srtp.is_none() || crypto.is_some(), "an SRTP caller records with the answer's keys");
            sdp += &self.media_section(line, port, line.codec.fmtp, crypto);
        }
        fs::write(sdp_path, sdp)?;
        let mut cmd = Command::new("ffmpeg");
        cmd.args(["-hide_banner", "-nostdin", "-nostats", "-loglevel", "info"])
            .args(["-protocol_whitelist", "file,udp,rtp"])
            .args(["-use_wallclock_as_timestamps", "1"])
            // No reordering buffer: the wall-clock stamp is taken when the demuxer hands a
            // packet over, so holding packets back on a gap would delay their stamps (and
            // loopback never reorders).
            .args(["-reorder_queue_size", "0"])
            .arg("-i")
            .arg(sdp_path)
            .args(["-map", "0", "-c:v", "copy", "-c:a", "pcm_s16le", "-copyts", "-f", "matroska", "-y"])
            .arg(output);
        Ok((cmd, ports))
    }

    /// `line`'s m= section on `port`: RTP/SAVP(F) with `crypto` if given.
    fn media_section(&self, line: &MediaLine, port: u16, fmtp: Option<&str>, crypto: Option<String>) -> String {
        let section = line.codec.media_section(port, fmtp);
        match crypto {
            None => section,
            Some(crypto) => section.replacen(" RTP/AVP", " RTP/SAVP", 1) + &format!("a=crypto:{crypto}\r\n"),
        }
    }

    fn line(&self, kind: MediaKind) -> Option<&MediaLine> {
        self.media.iter().find(|line| line.codec.kind == kind)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.as_ref().expect("the temp dir lives as long as the caller").path().join(name)
    }

    fn session_header(&self, session_name: &str) -> String {
        format!(
            "v=0\r\no=- {} 1 IN IP4 127.0.0.1\r\ns={session_name}\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n",
            self.session_id
        )
    }

    /// The gst-launch source for `codec`'s kind: live solid colour or live sine.
    fn raw_source(&self, codec: &Codec) -> String {
        let spec = &self.spec;
        match codec.kind {
            MediaKind::Video => {
                let [r, g, b] = spec.colour.rgb();
                let (width, height) = spec.video_size;
                format!(
                    "videotestsrc is-live=true pattern=solid-color foreground-color=0xff{r:02x}{g:02x}{b:02x} \
                     ! video/x-raw,width={width},height={height},framerate={VIDEO_FPS}/1"
                )
            }
            MediaKind::Audio => {
                let rate = codec.sample_rate;
                // 20 ms buffers, so the G.711/G.722 payloaders send 20 ms packets as a=ptime says.
                match &spec.audio_clip {
                    // clocksync plays the file at the pace of the clock, as a live source would.
                    Some(clip) => format!(
                        "filesrc location={} ! wavparse ! audioconvert ! audioresample \
                         ! audio/x-raw,format=S16LE,rate={rate},channels=1 \
                         ! audiobuffersplit output-buffer-duration=1/50 ! clocksync",
                        clip.display()
                    ),
                    None => format!(
                        "audiotestsrc is-live=true wave=sine freq={} volume={} samplesperbuffer={} \
                         ! audio/x-raw,format=S16LE,rate={rate},channels=1",
                        spec.tone_hz,
                        spec.tone_amplitude,
                        rate / 50
                    ),
                }
            }
        }
    }

    /// Matches the answer's m= lines to ours (same order, RFC 3264) and finds where to send
    /// (`None` for a declined m= line). A room system's extras must all be declined.
    pub fn parse_answer(&self, answer: &str) -> Result<Vec<Option<Destination>>> {
        let session = Session::parse(answer.as_bytes()).with_context(|| format!("unparsable answer:\n{answer}"))?;
        let extras: &[&str] = if self.spec.room_system_extras { &ROOM_SYSTEM_EXTRA_MEDIA } else { &[] };
        ensure!(
            session.medias.len() == self.media.len() + extras.len(),
            "the answer has {} m= lines, the offer {}:\n{answer}",
            session.medias.len(),
            self.media.len() + extras.len()
        );
        for (media, expected) in session.medias[self.media.len()..].iter().zip(extras) {
            ensure!(
                media.media == *expected && media.port == 0,
                "a room system's extra m={expected} was answered m={} {}:\n{answer}",
                media.media,
                media.port
            );
        }
        let session_addr = session.connection.as_ref().map(|c| c.connection_address.clone());
        self.media
            .iter()
            .zip(&session.medias)
            .map(|(line, media)| {
                let expected = line.codec.kind.sdp_name();
                ensure!(media.media == expected, "answer m={} where the offer had m={expected}", media.media);
                if media.port == 0 {
                    return Ok(None);
                }
                let addr = media
                    .connections
                    .first()
                    .map(|c| c.connection_address.clone())
                    .or(session_addr.clone())
                    .context("answer without c= line")?;
                let addr: IpAddr = addr.parse().with_context(|| format!("answer c= address {addr}"))?;
                let rtcp_port = if media.has_attribute("rtcp-mux") {
                    media.port
                } else if let Some(rtcp) = media.get_first_attribute_typed::<Rtcp>() {
                    rtcp.map_err(|e| anyhow::anyhow!("answer a=rtcp: {e:?}"))?.port
                } else {
                    media.port + 1
                };
                let payload_type = media
                    .fmt
                    .split_whitespace()
                    .next()
                    .and_then(|pt| pt.parse().ok())
                    .with_context(|| format!("answer m= line without a payload type: {}", media.fmt))?;
                let crypto = media.get_attribute_values("crypto").flatten().next().map(str::to_owned);
                let usedtx = media
                    .get_attribute_values("fmtp")
                    .flatten()
                    .filter_map(|v| v.strip_prefix(&format!("{payload_type} ")))
                    .any(|params| params.split(';').any(|p| p.trim() == "usedtx=1"));
                Ok(Some(Destination { addr, rtp_port: media.port, rtcp_port, payload_type, crypto, usedtx }))
            })
            .collect()
    }
}

/// Writes a mono 48 kHz WAV of `seconds`: a sine of `tone_hz` at peak
/// `amplitude` during each `(from, to)` interval (seconds from its start),
/// silence elsewhere. Made by ffmpeg's `aevalsrc`.
pub fn gated_tone_wav(path: &Path, tone_hz: f64, amplitude: f64, seconds: f64, on: &[(f64, f64)]) -> Result<()> {
    ensure!(!on.is_empty(), "a clip without any tone");
    let gate = on.iter().map(|(from, to)| format!("between(t,{from},{to})")).collect::<Vec<_>>().join("+");
    aevalsrc_wav(path, &format!("{amplitude}*sin(2*PI*{tone_hz}*t)*({gate})"), 48000, seconds)
}

/// Writes a mono WAV of `seconds` at `rate`: a sine of `tone_hz` at peak `amplitude`
/// throughout (for a softphone that plays a file at its codec's rate).
pub fn tone_wav(path: &Path, tone_hz: f64, amplitude: f64, seconds: f64, rate: u32) -> Result<()> {
    aevalsrc_wav(path, &format!("{amplitude}*sin(2*PI*{tone_hz}*t)"), rate, seconds)
}

/// Writes the mono 16-bit WAV that ffmpeg's `aevalsrc` makes of `samples` (an expression of t).
fn aevalsrc_wav(path: &Path, samples: &str, rate: u32, seconds: f64) -> Result<()> {
    let expression = format!("aevalsrc=exprs='{samples}':s={rate}:d={seconds}");
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", &expression])
        .args(["-c:a", "pcm_s16le", "-y"])
        .arg(path);
    let output = super::process::run_bounded(cmd, Duration::from_secs(30))?;
    ensure!(output.status.success(), "ffmpeg aevalsrc: {}", String::from_utf8_lossy(&output.stderr));
    Ok(())
}

impl Drop for Caller {
    fn drop(&mut self) {
        self.kill_sender();
        if let Some(mut recorder) = self.recorder.take() {
            recorder.finish();
        }
        if std::thread::panicking() {
            let logs = self.logs();
            let kept = self.dir.take().map(TempDir::keep);
            eprintln!("caller {}: files kept in {kept:?}\n{logs}", self.spec.name);
        }
    }
}
