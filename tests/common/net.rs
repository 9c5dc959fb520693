//! Ports picked at run time on 127.0.0.1, and the caller's receive ports.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use rand::Rng;

const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A TCP port that was free a moment ago.
pub fn free_tcp_port() -> Result<u16> {
    Ok(TcpListener::bind((LOCALHOST, 0))?.local_addr()?.port())
}

/// An even UDP port `p` with `p + 1` also bound: the RTP/RTCP pair convention (RFC 3550).
/// The sockets are returned still bound, so nobody can take them.
pub fn bind_rtp_pair() -> Result<(UdpSocket, UdpSocket)> {
    for _ in 0..200 {
        let rtp = UdpSocket::bind((LOCALHOST, 0))?;
        let port = rtp.local_addr()?.port();
        if port % 2 == 0
            && let Ok(rtcp) = UdpSocket::bind((LOCALHOST, port + 1))
        {
            return Ok((rtp, rtcp));
        }
    }
    bail!("no free even/odd UDP port pair found")
}

/// An even UDP port whose successor is free too, released for a child process to bind
/// (ffmpeg's RTP input always binds port + 1 for RTCP).
pub fn free_rtp_pair_port() -> Result<u16> {
    Ok(bind_rtp_pair()?.0.local_addr()?.port())
}

/// A single UDP port that was free a moment ago, released for a child process to bind.
pub fn free_udp_port() -> Result<u16> {
    Ok(UdpSocket::bind((LOCALHOST, 0))?.local_addr()?.port())
}

/// A port free for both UDP and TCP on loopback, as SIP listens on both.
pub fn free_sip_port() -> Result<u16> {
    for _ in 0..50 {
        let udp = UdpSocket::bind((LOCALHOST, 0))?;
        let port = udp.local_addr()?.port();
        if std::net::TcpListener::bind((LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no port free for both UDP and TCP in 50 tries")
}

/// Whether some process has a UDP socket bound to `port`. Reads /proc instead of trying to
/// bind, because a probing bind could make the child's own bind fail.
pub fn udp_port_bound(port: u16) -> bool {
    let suffix = format!(":{port:04X}");
    ["/proc/net/udp", "/proc/net/udp6"].iter().any(|table| {
        std::fs::read_to_string(table).is_ok_and(|text| {
            // Each row: "sl local_address rem_address ..."; local_address is HEXIP:HEXPORT.
            text.lines().skip(1).any(|row| row.split_whitespace().nth(1).is_some_and(|local| local.ends_with(&suffix)))
        })
    })
}

/// Whether some TCP connection to `port` on this host is established (read from /proc,
/// as [`udp_port_bound`] does): to tell that a client really used TCP.
pub fn tcp_connected_to(port: u16) -> bool {
    const ESTABLISHED: &str = "01";
    let suffix = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table).is_ok_and(|text| {
            // Each row: "sl local_address rem_address st ...".
            text.lines().skip(1).any(|row| {
                let fields: Vec<&str> = row.split_whitespace().collect();
                fields.get(2).is_some_and(|remote| remote.ends_with(&suffix)) && fields.get(3) == Some(&ESTABLISHED)
            })
        })
    })
}

const SERVER_RTP_FIRST: u16 = 20_000;
const SERVER_RTP_LAST: u16 = 32_000;
/// The blocks of server RTP ports this process holds now, by slot.
static SERVER_RTP_SLOTS: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// A block of UDP ports for one server, all free when it was picked, never
/// handed to two servers of this process at once (the suite is one process:
/// a block goes back when its server is dropped). It lies below Linux's
/// ephemeral range (32768+), where the callers' OS-picked ports live, so a
/// server and the callers never compete for a port.
pub struct RtpPortBlock {
    pub first: u16,
    pub last: u16,
    slot: u16,
}

pub fn server_rtp_range(len: u16) -> Result<RtpPortBlock> {
    let slots = (SERVER_RTP_LAST - SERVER_RTP_FIRST) / len;
    let mut held = SERVER_RTP_SLOTS.lock().unwrap();
    let mut tried = HashSet::new();
    while tried.len() < slots as usize {
        let slot = rand::rng().random_range(0..slots);
        if !tried.insert(slot) || held.contains(&slot) {
            continue;
        }
        let first = SERVER_RTP_FIRST + slot * len;
        let all_free = (first..first + len).all(|p| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, p)).is_ok());
        if all_free {
            held.push(slot);
            return Ok(RtpPortBlock { first, last: first + len - 1, slot });
        }
    }
    bail!("no free block of {len} UDP ports in {SERVER_RTP_FIRST}-{SERVER_RTP_LAST}")
}

impl Drop for RtpPortBlock {
    fn drop(&mut self) {
        SERVER_RTP_SLOTS.lock().unwrap().retain(|&slot| slot != self.slot);
    }
}

/// RTP and RTCP sharing a port are told apart by the second byte (RFC 5761 section 4):
/// RTCP packet types 192-223 never collide with RTP marker + payload type in practice.
pub fn is_rtcp(packet: &[u8]) -> bool {
    packet.len() >= 8 && (192..=223).contains(&packet[1])
}

/// Where demultiplexed packets go (port 0: nobody listening, drop them), and what RTP came.
#[derive(Default)]
struct Routes {
    /// The recorder's (ffmpeg's) RTP port.
    recorder: AtomicU16,
    /// The port the sender's rtpbin reads RTCP (RR, PLI, FIR) on.
    sender_rtcp: AtomicU16,
    rtp_packets: AtomicU64,
    rtcp_packets: AtomicU64,
    first_rtp: Mutex<Option<SystemTime>>,
    last_rtp: Mutex<Option<SystemTime>>,
    /// The longest time between two RTP packets since it was last taken.
    longest_rtp_gap: Mutex<Duration>,
    /// Every RTP SSRC seen, in order of first appearance.
    ssrcs: Mutex<Vec<u32>>,
    /// Every RTP packet's arrival, in order.
    arrivals: Mutex<Vec<RtpArrival>>,
}

/// One RTP packet that reached a [`MediaPort`].
#[derive(Clone, Copy, Debug)]
pub struct RtpArrival {
    pub at: SystemTime,
    /// It starts an H.264 IDR picture (what a decoder can start from).
    pub starts_h264_idr: bool,
}

/// Whether an RTP packet carries the start of an H.264 IDR slice (RFC 6184):
/// a single NAL unit of type 5, a STAP-A holding one, or the first FU-A fragment of one.
pub fn starts_h264_idr(packet: &[u8]) -> bool {
    const IDR: u8 = 5;
    let Some(&first) = packet.first() else { return false };
    let csrcs = usize::from(first & 0x0f) * 4;
    let mut offset = 12 + csrcs;
    if first & 0x10 != 0 {
        let Some(words) = packet.get(offset + 2..offset + 4) else { return false };
        offset += 4 + usize::from(u16::from_be_bytes([words[0], words[1]])) * 4;
    }
    let Some(payload) = packet.get(offset..) else { return false };
    match payload.first().map(|b| b & 0x1f) {
        Some(IDR) => true,
        // STAP-A: 2-byte sizes, each followed by a NAL unit.
        Some(24) => {
            let mut rest = &payload[1..];
            while rest.len() > 2 {
                let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                if rest.get(2).is_some_and(|nal| nal & 0x1f == IDR) {
                    return true;
                }
                rest = rest.get(2 + size..).unwrap_or_default();
            }
            false
        }
        // FU-A: the start bit and the fragmented unit's type in the second byte.
        Some(28) => payload.get(1).is_some_and(|fu| fu & 0x80 != 0 && fu & 0x1f == IDR),
        _ => false,
    }
}

/// The receive port(s) a caller advertises for one m-line, owned by the harness for the
/// caller's whole life.
///
/// A real endpoint is one process that reads RTP and RTCP on these ports. Here the sender
/// (gst-launch) and the recorder (ffmpeg) are separate processes, so a small relay thread per
/// socket forwards RTCP to the sender (so PLI/FIR reach its encoder) and RTP to the recorder.
/// This also makes rtcp-mux work (both arrive on one port) and lets the harness note when RTP
/// arrived, independently of the recorder.
pub struct MediaPort {
    /// The advertised RTP port (the m= line's port).
    pub rtp_port: u16,
    /// The advertised RTCP port: `rtp_port` when rtcp-mux is used, else `rtp_port + 1`.
    pub rtcp_port: u16,
    routes: Arc<Routes>,
    stop: Arc<AtomicBool>,
    relays: Vec<JoinHandle<()>>,
}

impl MediaPort {
    pub fn bind(rtcp_mux: bool) -> Result<Self> {
        let (rtp, rtcp) = bind_rtp_pair()?;
        let rtp_port = rtp.local_addr()?.port();
        let sockets = if rtcp_mux { vec![rtp] } else { vec![rtp, rtcp] };
        let routes = Arc::new(Routes::default());
        let stop = Arc::new(AtomicBool::new(false));
        let relays = sockets
            .into_iter()
            .map(|socket| {
                // The timeout bounds how long Drop waits for the thread to notice `stop`.
                socket.set_read_timeout(Some(Duration::from_millis(50)))?;
                let (routes, stop) = (routes.clone(), stop.clone());
                Ok(thread::spawn(move || relay(socket, &routes, &stop)))
            })
            .collect::<Result<_>>()
            .context("starting relay threads")?;
        let rtcp_port = if rtcp_mux { rtp_port } else { rtp_port + 1 };
        Ok(Self { rtp_port, rtcp_port, routes, stop, relays })
    }

    pub fn forward_rtp_to(&self, recorder_port: u16) {
        self.routes.recorder.store(recorder_port, Ordering::SeqCst);
    }

    /// Where RTCP goes: the sender's rtpbin (or an SRTP caller's recorder, which checks SRTCP).
    pub fn forward_rtcp_to(&self, sender_rtcp_port: u16) {
        self.routes.sender_rtcp.store(sender_rtcp_port, Ordering::SeqCst);
    }

    pub fn rtp_packets(&self) -> u64 {
        self.routes.rtp_packets.load(Ordering::SeqCst)
    }

    pub fn rtcp_packets(&self) -> u64 {
        self.routes.rtcp_packets.load(Ordering::SeqCst)
    }

    pub fn first_rtp_at(&self) -> Option<SystemTime> {
        *self.routes.first_rtp.lock().unwrap()
    }

    pub fn last_rtp_at(&self) -> Option<SystemTime> {
        *self.routes.last_rtp.lock().unwrap()
    }

    /// Every RTP SSRC that reached the port, in order of first appearance.
    pub fn rtp_ssrcs(&self) -> Vec<u32> {
        self.routes.ssrcs.lock().unwrap().clone()
    }

    /// Every RTP packet that reached the port so far, in order of arrival.
    pub fn rtp_arrivals(&self) -> Vec<RtpArrival> {
        self.routes.arrivals.lock().unwrap().clone()
    }

    /// The longest silence between two RTP packets since the previous call (or since the
    /// first packet), and starts measuring afresh.
    pub fn take_longest_rtp_gap(&self) -> Duration {
        std::mem::take(&mut *self.routes.longest_rtp_gap.lock().unwrap())
    }
}

impl Drop for MediaPort {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for relay in self.relays.drain(..) {
            let _ = relay.join();
        }
    }
}

fn relay(socket: UdpSocket, routes: &Routes, stop: &AtomicBool) {
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        // Errors are the read timeout (time to check `stop`) or a stray ICMP report.
        let Ok((len, _)) = socket.recv_from(&mut buf) else { continue };
        let packet = &buf[..len];
        let target = if is_rtcp(packet) {
            routes.rtcp_packets.fetch_add(1, Ordering::SeqCst);
            routes.sender_rtcp.load(Ordering::SeqCst)
        } else {
            let now = SystemTime::now();
            routes.rtp_packets.fetch_add(1, Ordering::SeqCst);
            if let Some(ssrc) = packet.get(8..12).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])) {
                let mut ssrcs = routes.ssrcs.lock().unwrap();
                if !ssrcs.contains(&ssrc) {
                    ssrcs.push(ssrc);
                }
            }
            routes.arrivals.lock().unwrap().push(RtpArrival { at: now, starts_h264_idr: starts_h264_idr(packet) });
            routes.first_rtp.lock().unwrap().get_or_insert(now);
            if let Some(previous) = routes.last_rtp.lock().unwrap().replace(now) {
                let gap = now.duration_since(previous).unwrap_or_default();
                let mut longest = routes.longest_rtp_gap.lock().unwrap();
                *longest = (*longest).max(gap);
            }
            routes.recorder.load(Ordering::SeqCst)
        };
        if target != 0 {
            let _ = socket.send_to(packet, SocketAddr::from((LOCALHOST, target)));
        }
    }
}
