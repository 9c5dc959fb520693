//! Keyframes on demand, at the RTP/RTCP packet level: the test is the
//! caller, with its own UDP sockets, so it sees exactly what Tutti sends.
//! - A PLI or FIR from a caller makes the shared encoder emit an IDR at once.
//! - A caller whose video starts gets a PLI from Tutti right away, even when
//!   what it sends is garbage, and garbage harms nothing.

use anyhow::{Context, Result, bail, ensure};
use crate::common::*;
use serde_json::json;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const OUR_SSRC: u32 = 0x7e57_0001;

/// Where the answer says to send video RTP, and RTCP.
fn answer_video_ports(answer: &str) -> Result<(u16, u16)> {
    let session = sdp_types::Session::parse(answer.as_bytes()).map_err(|e| anyhow::anyhow!("answer: {e}"))?;
    let video = session.medias.iter().find(|m| m.media == "video").context("no video m-line")?;
    let rtcp = video
        .get_first_attribute_value("rtcp")
        .flatten()
        .and_then(|v| v.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or(video.port + 1);
    Ok((video.port, rtcp))
}

fn offer(rtp_port: u16, direction: &str) -> String {
    format!(
        "v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=video {rtp_port} RTP/AVPF 96\r\na=rtpmap:96 H264/90000\r\n\
         a=fmtp:96 packetization-mode=1;profile-level-id=42e01f\r\n\
         a=rtcp-fb:96 nack pli\r\na=rtcp-fb:96 ccm fir\r\na={direction}\r\n"
    )
}

/// Does this RTP packet start an IDR picture (H.264 packetization mode 1)?
/// Keyframes come as SPS + PPS + IDR, possibly behind an access unit delimiter.
fn starts_idr(packet: &[u8]) -> bool {
    let Some(payload) = packet.get(12..) else { return false };
    let is_key = |nal_type: u8| matches!(nal_type, 5 | 7);
    match payload.first().map(|n| n & 0x1f) {
        Some(24) => {
            // STAP-A: NAL units, each behind a 2-byte size.
            let mut rest = &payload[1..];
            while rest.len() > 2 {
                let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                if rest.get(2).is_some_and(|n| is_key(n & 0x1f)) {
                    return true;
                }
                rest = rest.get(2 + size..).unwrap_or_default();
            }
            false
        }
        // FU-A with the start bit set.
        Some(28) => payload.get(1).is_some_and(|h| h & 0x80 != 0 && h & 0x1f == 5),
        Some(nal_type) => is_key(nal_type),
        None => false,
    }
}

fn ssrc(packet: &[u8]) -> u32 {
    u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]])
}

/// A compound RTCP packet: an empty receiver report, then `feedback`.
fn compound(feedback: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x80, 201, 0, 1];
    packet.extend(OUR_SSRC.to_be_bytes());
    packet.extend(feedback);
    packet
}

fn pli(media_ssrc: u32) -> Vec<u8> {
    let mut fb = vec![0x81, 206, 0, 2];
    fb.extend(OUR_SSRC.to_be_bytes());
    fb.extend(media_ssrc.to_be_bytes());
    compound(&fb)
}

fn fir(media_ssrc: u32, sequence: u8) -> Vec<u8> {
    let mut fb = vec![0x84, 206, 0, 4];
    fb.extend(OUR_SSRC.to_be_bytes());
    fb.extend(0u32.to_be_bytes());
    fb.extend(media_ssrc.to_be_bytes());
    fb.extend([sequence, 0, 0, 0]);
    compound(&fb)
}

/// Receives RTP until `deadline`, returning the arrival times of IDR starts and the sender SSRC.
fn watch_idrs(socket: &UdpSocket, for_how_long: Duration) -> Result<(Vec<Instant>, Option<u32>)> {
    let end = Instant::now() + for_how_long;
    let mut idrs = Vec::new();
    let mut sender = None;
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let Ok(n) = socket.recv(&mut buf) else { continue };
        if n < 13 || is_rtcp(&buf[..n]) {
            continue;
        }
        sender = Some(ssrc(&buf[..n]));
        if starts_idr(&buf[..n]) && idrs.last().is_none_or(|t: &Instant| t.elapsed() > Duration::from_millis(100)) {
            idrs.push(Instant::now());
        }
    }
    Ok((idrs, sender))
}

/// Sends `request` to Tutti when the encoder is mid-GOP and returns how
/// long the next IDR took to arrive.
fn keyframe_delay(rtp: &UdpSocket, rtcp: &UdpSocket, to: SocketAddr, request: &dyn Fn(u32) -> Vec<u8>) -> Result<Duration> {
    let (idrs, sender) = watch_idrs(rtp, Duration::from_millis(2500))?;
    let sender = sender.context("no RTP from Tutti")?;
    let last = *idrs.last().context("no keyframe in 2.5 s")?;
    // The shared encoder's own GOP is 2 s: ask 0.5 s after a keyframe, so
    // that a keyframe within 300 ms can only be the answer.
    let ask_at = last + Duration::from_millis(500);
    let (_, _) = watch_idrs(rtp, ask_at.saturating_duration_since(Instant::now()))?;
    let asked = Instant::now();
    rtcp.send_to(&request(sender), to)?;
    let (idrs, _) = watch_idrs(rtp, Duration::from_millis(600))?;
    let first = idrs.first().with_context(|| "no keyframe within 600 ms of the request")?;
    Ok(first.duration_since(asked))
}

#[test]
fn a_pli_or_fir_from_a_caller_gets_a_keyframe_at_once() -> Result<()> {
    let server = Server::start()?;
    let id = server.create_composition(&json!({"video": {"width": 320, "height": 180}}))?;
    let (rtp, rtcp) = bind_rtp_pair()?;
    let port = rtp.local_addr()?.port();
    let joined = server.add_participant(&id, &offer(port, "recvonly"))?;
    let (_, tutti_rtcp) = answer_video_ports(&joined.answer)?;
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, tutti_rtcp));

    let after_pli = keyframe_delay(&rtp, &rtcp, to, &pli)?;
    eprintln!("keyframe {} ms after a PLI", after_pli.as_millis());
    ensure!(after_pli <= Duration::from_millis(300), "keyframe came {after_pli:?} after the PLI");
    let after_fir = keyframe_delay(&rtp, &rtcp, to, &|ssrc| fir(ssrc, 1))?;
    eprintln!("keyframe {} ms after a FIR", after_fir.as_millis());
    ensure!(after_fir <= Duration::from_millis(300), "keyframe came {after_fir:?} after the FIR");
    Ok(())
}

#[test]
fn a_new_video_caller_is_asked_for_a_keyframe_and_garbage_harms_nothing() -> Result<()> {
    let server = Server::start()?;
    let id = server.create_composition(&json!({"video": {"width": 320, "height": 180}}))?;
    let (rtp, rtcp) = bind_rtp_pair()?;
    let joined = server.add_participant(&id, &offer(rtp.local_addr()?.port(), "sendrecv"))?;
    let (tutti_rtp, _) = answer_video_ports(&joined.answer)?;
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, tutti_rtp));

    // Valid RTP headers around payloads that are not H.264 at all, then plain junk.
    let started = Instant::now();
    for seq in 0..50u16 {
        let mut packet = vec![0x80, 96];
        packet.extend(seq.to_be_bytes());
        packet.extend((u32::from(seq) * 3000).to_be_bytes());
        packet.extend(OUR_SSRC.to_be_bytes());
        packet.extend([0x41, 0xde, 0xad, 0xbe, 0xef, 0x00, 0xff]);
        rtp.send_to(&packet, to)?;
        rtp.send_to(b"\xff\x00 not rtp at all", to)?;
        std::thread::sleep(Duration::from_millis(10));
    }

    // Tutti's RTCP reaches our RTCP port: find a PLI about our SSRC.
    rtcp.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut buf = [0u8; 1500];
    let pli_after = loop {
        if started.elapsed() > Duration::from_secs(3) {
            bail!("no PLI from Tutti within 3 s of our first packet");
        }
        let Ok(n) = rtcp.recv(&mut buf) else { continue };
        let mut offset = 0;
        let mut found = false;
        while offset + 12 <= n {
            let (fmt, pt) = (buf[offset] & 0x1f, buf[offset + 1]);
            let words = usize::from(u16::from_be_bytes([buf[offset + 2], buf[offset + 3]]));
            let media = u32::from_be_bytes(buf[offset + 8..offset + 12].try_into()?);
            found |= pt == 206 && (fmt == 1 || fmt == 4) && (media == OUR_SSRC || fmt == 4);
            offset += (words + 1) * 4;
        }
        if found {
            break started.elapsed();
        }
    };
    eprintln!("PLI {} ms after our first packet", pli_after.as_millis());
    ensure!(pli_after <= Duration::from_secs(1), "PLI took {pli_after:?}");

    // The server and the participant are still there and counting.
    let participant = server.get(&joined.location)?.json()?;
    ensure!(participant["video"]["packets_received"].as_u64().unwrap_or(0) > 0, "no packets counted: {participant}");
    ensure!(server.get("/healthz")?.status == 200, "the server is not healthy after garbage");
    Ok(())
}
