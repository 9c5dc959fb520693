//! SRTP with keys in the SDP (SDES, RFC 4568), end to end with real media.
//!
//! An SRTP caller (its gst-launch sender encrypts with srtpenc under the key
//! of its offer; its ffmpeg recorder decrypts with the key of Tutti's answer)
//! and a plain RTP caller share one composition: each sees the other in its
//! cell and hears the other and not itself. Then plain RTP and random bytes
//! at the SRTP caller's ports are dropped and counted, and neither caller
//! notices. And `--media-encryption` decides which offers are answered.

use anyhow::{Context, Result, ensure};
use crate::common::*;
use rand::RngCore;
use serde_json::{Value, json};
use std::net::{Ipv4Addr, UdpSocket};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime};

const CANVAS: (u32, u32) = (640, 360);
const SECURE_HZ: f64 = 500.0;
const PLAIN_HZ: f64 = 700.0;
const STRANGER_HZ: f64 = 1300.0;
const ATTACK: Duration = Duration::from_secs(4);
/// Random datagrams per second at each of the SRTP caller's four ports.
const GARBAGE_RATE: u32 = 50;
/// Packets, each with a new SSRC, in the SSRC flood.
const SSRC_FLOOD: u32 = 10_000;


fn stats(server: &Server, location: &str) -> Result<Value> {
    server.get(location)?.json()
}

fn count(body: &Value, medium: &str, field: &str) -> Result<u64> {
    body[medium][field].as_u64().with_context(|| format!("{medium}.{field} is not a count: {body}"))
}

/// In each window, the recording shows both pictures in their cells, and
/// carries the other caller's tone, its own ≥ 30 dB below it, and never the
/// stranger's.
fn judge(caller: &mut Caller, own_hz: f64, other_hz: f64, windows: &[(SystemTime, SystemTime)]) -> Result<()> {
    let name = caller.spec.name.clone();
    if caller.spec.srtp.is_some() {
        // The server's SRTP and (under the _80 suite) SRTCP, checked by ffmpeg's SRTP layer.
        let rtcp = [MediaKind::Audio, MediaKind::Video].map(|kind| caller.rtcp_packets(kind));
        ensure!(rtcp.iter().all(|&n| n > 0), "{name}: no SRTCP from the server: {rtcp:?}");
        ensure!(caller.recorder_srtp_failures() == 0, "{name}: {} of the server's packets failed authentication; SRTCP {rtcp:?}\n{}", caller.recorder_srtp_failures(), caller.logs());
    }
    let recording = caller.stop_receiver()?;
    let frames = video_frames(&recording).with_context(|| format!("decoding {name}'s return video"))?;
    let audio = audio_samples(&recording).with_context(|| format!("decoding {name}'s return audio"))?;
    for &(from, until) in windows {
        let during: Vec<&Frame> = frames.iter().filter(|f| f.wall_time >= from && f.wall_time < until).collect();
        ensure!(during.len() as f64 >= 25.0 * elapsed(from, until), "{name}: only {} frames in {:.1} s", during.len(), elapsed(from, until));
        for frame in &during {
            ensure!(
                side_by_side(frame) == [Some(Colour::Red), Some(Colour::Green)],
                "{name}'s composite at +{:.2} s shows {:?}",
                elapsed(from, frame.wall_time),
                side_by_side(frame)
            );
        }
        let [other, own, stranger] = audio.tone_levels_db(from, until, &[other_hz, own_hz, STRANGER_HZ])?[..] else {
            unreachable!("three frequencies asked")
        };
        eprintln!("{name}: other {other:.1} dBFS, own {own:.1} dBFS, stranger {stranger:.1} dBFS");
        ensure!(other > -30.0, "{name} hears the other caller only at {other:.1} dBFS");
        ensure!(own <= other - 30.0, "{name} hears itself at {own:.1} dBFS, the other at {other:.1} dBFS");
        ensure!(stranger <= other - 30.0, "{name} hears the stranger at {stranger:.1} dBFS");
    }
    Ok(())
}

/// RTP headers that parse, in the negotiated payload type, each with a new random SSRC,
/// `count` of them at `port` over about two seconds.
fn send_ssrc_flood(port: u16, payload_type: u8, count: u32) -> Result<()> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    let mut rng = rand::rng();
    for sequence in 0..count {
        let mut packet = vec![0x80, payload_type];
        packet.extend((sequence as u16).to_be_bytes());
        packet.extend((sequence * 160).to_be_bytes());
        packet.extend(rng.next_u32().to_be_bytes());
        packet.extend([0u8; 160]);
        socket.send_to(&packet, (Ipv4Addr::LOCALHOST, port))?;
        if sequence % 50 == 0 {
            sleep(Duration::from_secs(2) * 50 / count);
        }
    }
    Ok(())
}

/// Random datagrams at `ports` for `duration`, `GARBAGE_RATE` a second at each.
fn send_garbage(ports: &[u16], duration: Duration) -> Result<u64> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    let mut rng = rand::rng();
    let until = Instant::now() + duration;
    let mut sent = 0;
    while Instant::now() < until {
        for &port in ports {
            let mut datagram = vec![0u8; 20 + (rng.next_u32() % 1000) as usize];
            rng.fill_bytes(&mut datagram);
            socket.send_to(&datagram, (Ipv4Addr::LOCALHOST, port))?;
            sent += 1;
        }
        sleep(Duration::from_secs(1) / GARBAGE_RATE);
    }
    Ok(sent)
}

#[test]
fn an_srtp_caller_and_a_plain_caller_see_and_hear_each_other_and_strangers_are_dropped() {
    // Without the source check, the stranger's plain RTP and the random bytes
    // reach srtpdec: SRTP authentication alone must stop them.
    with_server(&["--rtp-source-check", "off"], |server| {
        let composition = server.create_composition(&json!({"video": {"width": CANVAS.0, "height": CANVAS.1, "fps": 30}}))?;
        let mut secure = Caller::new(CallerSpec {
            srtp: Some("AES_CM_128_HMAC_SHA1_80"),
            ..CallerSpec::new("secure", Colour::Red, SECURE_HZ)
        })?;
        let mut plain = Caller::new(CallerSpec::new("plain", Colour::Green, PLAIN_HZ))?;
        let secure_joined = secure.join(server, &composition)?;
        let answer = &secure_joined.answer;
        ensure!(answer.contains(" RTP/SAVP 111\r\n") && answer.contains(" RTP/SAVPF 96\r\n"), "not answered as SRTP:\n{answer}");
        ensure!(answer.matches("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:").count() == 2, "one crypto line per m-line:\n{answer}");
        let plain_joined = plain.join(server, &composition)?;
        ensure!(!plain_joined.answer.contains("SAVP") && !plain_joined.answer.contains("a=crypto"), "{}", plain_joined.answer);

        sleep(Duration::from_secs(3));
        let calm_from = SystemTime::now();
        sleep(Duration::from_secs(3));
        let calm_until = SystemTime::now();

        let before = stats(server, &secure_joined.location)?;
        for medium in ["audio", "video"] {
            ensure!(count(&before, medium, "packets_received")? > 0, "{medium}: nothing decrypted: {before}");
            ensure!(before[medium]["srtp_suite"] == "AES_CM_128_HMAC_SHA1_80", "{before}");
            ensure!(count(&before, medium, "packets_unauthenticated")? == 0, "{medium}: the caller's own packets failed: {before}");
        }
        let plain_stats = stats(server, &plain_joined.location)?;
        ensure!(plain_stats["audio"].get("srtp_suite").is_none() && plain_stats["audio"].get("packets_unauthenticated").is_none(), "{plain_stats}");

        // A stranger sends plain RTP (the SRTP caller's payload types, its own
        // picture and tone) and random bytes to the SRTP caller's four ports.
        let mut stranger = Caller::new(CallerSpec::new("stranger", Colour::Blue, STRANGER_HZ))?;
        stranger.start_sender(answer)?;
        let attack_from = SystemTime::now();
        let ports: Vec<u16> = secure.parse_answer(answer)?.iter().flatten().flat_map(|d| [d.rtp_port, d.rtcp_port]).collect();
        let garbage = send_garbage(&ports, ATTACK)?;
        let attack_until = SystemTime::now();
        stranger.kill_sender();
        sleep(Duration::from_millis(500));

        let after = stats(server, &secure_joined.location)?;
        for medium in ["audio", "video"] {
            let dropped = count(&after, medium, "packets_unauthenticated")?;
            let received = count(&after, medium, "packets_received")? - count(&before, medium, "packets_received")?;
            eprintln!("{medium}: {dropped} packets failed SRTP authentication; {received} of the caller's taken meanwhile");
            ensure!(dropped > 0, "{medium}: nothing counted as unauthenticated after the attack: {after}");
            ensure!(received > 0, "{medium}: the SRTP caller's own media stopped: {after}");
        }
        eprintln!("{garbage} random datagrams sent");
        let metrics = server.get("/metrics")?.body;
        let series: Vec<&str> = metrics.lines().filter(|l| l.starts_with("tutti_participant_packets_unauthenticated_total{")).collect();
        ensure!(series.len() == 2, "one series per SRTP medium, none for the plain caller: {series:?}");
        for line in &series {
            let value: f64 = line.rsplit(' ').next().unwrap_or_default().parse()?;
            ensure!(value > 0.0, "{line}");
        }
        ensure!(server.get("/healthz")?.status == 200, "the server stopped answering");

        // A flood of new SSRCs costs no memory: srtpdec keys only so many per medium
        // (unbounded, each kept ≈ 6 KB: 60 MB for this flood).
        let audio_port = secure.parse_answer(answer)?[0].as_ref().context("audio accepted")?.rtp_port;
        let (rss_before, dropped_before) = (server.footprint()?.rss_kib, count(&stats(server, &secure_joined.location)?, "audio", "packets_unauthenticated")?);
        send_ssrc_flood(audio_port, 111, SSRC_FLOOD)?;
        sleep(Duration::from_millis(500));
        let (rss_after, dropped_after) = (server.footprint()?.rss_kib, count(&stats(server, &secure_joined.location)?, "audio", "packets_unauthenticated")?);
        let grown_kib = rss_after.saturating_sub(rss_before);
        eprintln!("{SSRC_FLOOD} new SSRCs: RSS grew {grown_kib} KiB, {} counted unauthenticated", dropped_after - dropped_before);
        ensure!(grown_kib < 10 * 1024, "a flood of new SSRCs grew the server by {grown_kib} KiB");
        ensure!(dropped_after - dropped_before >= u64::from(SSRC_FLOOD) / 2, "the flood is not counted: {dropped_before} → {dropped_after}");

        judge(&mut secure, SECURE_HZ, PLAIN_HZ, &[(calm_from, calm_until), (attack_from, attack_until)])?;
        judge(&mut plain, PLAIN_HZ, SECURE_HZ, &[(calm_from, calm_until), (attack_from, attack_until)])
    });
}

#[test]
fn the_32_bit_suite_carries_media_both_ways_under_the_default_source_check() {
    with_server(&[], |server| {
        let composition = server.create_composition(&json!({"video": {"width": CANVAS.0, "height": CANVAS.1, "fps": 30}}))?;
        let mut secure = Caller::new(CallerSpec {
            srtp: Some("AES_CM_128_HMAC_SHA1_32"),
            rtcp_mux: true,
            ..CallerSpec::new("secure", Colour::Red, SECURE_HZ)
        })?;
        let mut plain = Caller::new(CallerSpec::new("plain", Colour::Green, PLAIN_HZ))?;
        let joined = secure.join(server, &composition)?;
        ensure!(joined.answer.matches("a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:").count() == 2, "{}", joined.answer);
        plain.join(server, &composition)?;
        sleep(Duration::from_secs(3));
        let from = SystemTime::now();
        sleep(Duration::from_secs(3));
        let until = SystemTime::now();
        let body = stats(server, &joined.location)?;
        for medium in ["audio", "video"] {
            ensure!(body[medium]["srtp_suite"] == "AES_CM_128_HMAC_SHA1_32", "{body}");
            ensure!(count(&body, medium, "packets_unauthenticated")? == 0, "{medium}: {body}");
        }
        judge(&mut secure, SECURE_HZ, PLAIN_HZ, &[(from, until)])?;
        judge(&mut plain, PLAIN_HZ, SECURE_HZ, &[(from, until)])
    });
}

#[test]
fn the_encryption_policy_decides_which_offers_are_answered() {
    for (policy, plain_ok, srtp_ok) in [("required", false, true), ("off", true, false), ("optional", true, true)] {
        with_server(&["--media-encryption", policy], |server| {
            let composition = server.create_composition(&json!({"video": {"width": 320, "height": 180, "fps": 30}}))?;
            let path = format!("/v1/compositions/{composition}/participants");
            for (srtp, accepted) in [(None, plain_ok), (Some("AES_CM_128_HMAC_SHA1_32"), srtp_ok)] {
                let caller = Caller::new(CallerSpec { srtp, ..CallerSpec::new("c", Colour::Red, SECURE_HZ) })?;
                let response = server.post_sdp(&path, &caller.offer())?;
                let what = if srtp.is_some() { "an SRTP offer" } else { "a plain offer" };
                if accepted {
                    ensure!(response.status == 201, "{policy}: {what} got {}: {}", response.status, response.body);
                    let crypto = response.body.matches("a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:").count();
                    ensure!(crypto == if srtp.is_some() { 2 } else { 0 }, "{policy}: {what} answered\n{}", response.body);
                } else {
                    ensure!(response.status == 415, "{policy}: {what} got {}: {}", response.status, response.body);
                    let error = &response.json()?["error"];
                    let message = error["message"].as_str().context("an error without a message")?;
                    ensure!(error["code"].is_string(), "{error}");
                    ensure!(message.contains(&format!("media_encryption is {policy}")), "{policy}: the refusal does not name the policy: {message}");
                }
            }
            Ok(())
        });
    }
}
