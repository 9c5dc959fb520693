//! SIP signalling against SIPp, the SIP test tool carriers use: every
//! message Tutti sends is checked by a scenario (tests/sipp/), and each call
//! is also judged where it matters to a caller: in the API (who is in the
//! room) and in the RTP that reaches the caller's port.

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use crate::common::{Dialog, MediaPort, Server, Sipp, SippRun, TestCa, Validity, free_sip_port, pcmu_offer, wait_until};
use serde_json::{Value, json};

fn participants(server: &Server, composition: &str) -> Result<Vec<Value>> {
    let list = server.get(&format!("/v1/compositions/{composition}/participants"))?.json()?;
    Ok(list["participants"].as_array().cloned().unwrap_or_default())
}

#[test]
fn options_outside_a_dialog_says_what_tutti_takes_over_udp_and_tcp() -> Result<()> {
    let server = Server::start()?;
    for tcp in [false, true] {
        Sipp::play("options.xml", &[], "anyone", server.sip_port, tcp).context(if tcp { "OPTIONS over TCP" } else { "OPTIONS over UDP" })?;
    }
    Ok(())
}

/// RFC 4028: a caller that asks for a session timer and can refresh gets it,
/// as the refresher, in the 200 OK to its INVITE and to its refresh.
#[test]
fn a_caller_asking_for_session_timers_refreshes_them() -> Result<()> {
    let server = Server::start()?;
    server.create_composition(&json!({"name": "board", "audio_only": true}))?;
    let media = MediaPort::bind(false)?;
    Sipp::play("session_timer.xml", &[("BODY", &pcmu_offer(media.rtp_port))], "board", server.sip_port, false)?;
    Ok(())
}

#[test]
fn a_call_by_name_joins_sends_media_survives_keepalives_and_leaves_with_its_bye() -> Result<()> {
    let server = Server::start()?;
    let id = server.create_composition(&json!({"name": "board", "audio_only": true}))?;
    let media = MediaPort::bind(false)?;
    let offer = pcmu_offer(media.rtp_port);
    let middle = Dialog::new().pause(2500).options().refresh(&offer).hang_up();
    let invited = Instant::now();
    let sipp = Sipp::place("call.xml", &[("BODY", &offer), ("MIDDLE", &middle), ("END", "")], "BOARD", server.sip_port, false)?;

    wait_until("the SIP caller to be listed", Duration::from_secs(2), || Ok(participants(&server, &id)?.len() == 1))?;
    let listed = invited.elapsed();
    let caller = participants(&server, &id)?.remove(0);
    ensure!(caller["transport"] == "sip", "transport: {caller}");
    ensure!(caller["name"] == "SIPp Room", "named by its display name: {caller}");
    let sip = &caller["sip"];
    ensure!(sip["call_id"].as_str().is_some_and(|c| c.contains('@')), "call_id: {caller}");
    ensure!(sip["from"].as_str().is_some_and(|f| f.contains("sipp@127.0.0.1")), "from: {caller}");
    ensure!(sip["to"].as_str().is_some_and(|t| t.contains("BOARD@127.0.0.1")), "to: {caller}");
    ensure!(sip["user_agent"] == "SIPp room system", "user_agent: {caller}");
    // Tutti sends the caller its mix-minus (PCMU, 50 packets/s) to the offer's port.
    wait_until("RTP at the caller's port", Duration::from_secs(2), || Ok(media.rtp_packets() > 0))?;
    let first_rtp = invited.elapsed();

    let run = sipp.finish().context("call with OPTIONS and a session refresh, then BYE")?;
    ensure!(run.messages.matches("SIP/2.0 200 OK").count() >= 4, "200 to INVITE, OPTIONS, re-INVITE and BYE:\n{}", run.messages);
    wait_until("the caller to be gone after its BYE", Duration::from_secs(1), || Ok(participants(&server, &id)?.is_empty()))?;
    let packets = media.rtp_packets();
    ensure!(packets >= 100, "about 50 packets/s reached the caller over its 2.5+ s call, got {packets}");
    println!("INVITE → listed in the API {listed:?}, → first RTP at the caller {first_rtp:?}; {packets} RTP packets");
    Ok(())
}

/// A Cisco/Tandberg C40's five m-lines (audio, main video, slides, BFCP,
/// FECC) in a real INVITE: answered with audio and the main video, the three
/// extras declined with port 0, and media flowing to the room's ports.
#[test]
fn a_room_system_invite_with_slides_bfcp_and_fecc_joins_with_the_extras_declined() -> Result<()> {
    let server = Server::start()?;
    let id = server.create_composition(&json!({"name": "boardroom", "video": {"width": 640, "height": 360}}))?;
    let (audio, video) = (MediaPort::bind(false)?, MediaPort::bind(false)?);
    let fixture = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sdp/cisco-tandberg-c40-five-mlines.sdp"))?;
    // Everything on loopback: the room's address, and its ports where Tutti will send.
    let offer = fixture
        .replace("172.16.50.23", "127.0.0.1")
        .replace("m=audio 2346 ", &format!("m=audio {} ", audio.rtp_port))
        .replace("m=video 2348 ", &format!("m=video {} ", video.rtp_port));
    let end = Dialog::new().pause(1500).hang_up();
    let sipp = Sipp::place("call.xml", &[("BODY", &offer), ("MIDDLE", ""), ("END", &end)], "boardroom", server.sip_port, false)?;
    wait_until("RTP at the room's audio and video ports", Duration::from_secs(3), || {
        Ok(audio.rtp_packets() > 10 && video.rtp_packets() > 5)
    })?;
    let room = participants(&server, &id)?.remove(0);
    ensure!(room["audio"]["codec"] == "g722" && room["video"]["codec"] == "h264", "the room's codecs: {room}");
    let run = sipp.finish().context("the room system's call")?;
    // Only Tutti's answer has ports 0; a retransmitted 200 OK repeats the same lines.
    let declined: std::collections::BTreeSet<&str> =
        run.messages.lines().filter(|l| l.starts_with("m=") && l.split_whitespace().nth(1) == Some("0")).collect();
    ensure!(declined.len() == 3, "slides, BFCP and FECC declined with port 0: {declined:?}\n{}", run.messages);
    ensure!(declined.iter().any(|l| l.starts_with("m=application 0 UDP/BFCP")), "BFCP declined with its transport: {declined:?}");
    Ok(())
}

#[test]
fn a_call_by_id_over_tcp_gets_a_bye_when_the_api_removes_it() -> Result<()> {
    let server = Server::start()?;
    let id = server.create_composition(&json!({"audio_only": true}))?;
    let media = MediaPort::bind(false)?;
    let offer = pcmu_offer(media.rtp_port);
    let end = Dialog::new().await_bye(10_000);
    let sipp = Sipp::place("call.xml", &[("BODY", &offer), ("MIDDLE", ""), ("END", &end)], &id, server.sip_port, true)?;
    wait_until("the SIP caller to be listed", Duration::from_secs(2), || Ok(participants(&server, &id)?.len() == 1))?;
    let pid = participants(&server, &id)?[0]["id"].as_str().unwrap_or_default().to_string();
    let deleted = server.delete(&format!("/v1/compositions/{id}/participants/{pid}"))?;
    ensure!(deleted.status == 204 || deleted.status == 202, "DELETE: {}", deleted.status);
    let run = sipp.finish().context("BYE from Tutti after DELETE")?;
    ensure!(run.messages.contains("BYE sip:"), "SIPp received a BYE:\n{}", run.messages);
    Ok(())
}

#[test]
fn refusals_carry_the_status_and_reason_endpoints_act_on() -> Result<()> {
    let server = Server::start()?;
    let id = server.create_composition(&json!({"name": "small", "audio_only": true, "max_participants": 1}))?;
    let media = MediaPort::bind(false)?;
    let offer = pcmu_offer(media.rtp_port);
    let sdp_headers = "      Content-Type: application/sdp";
    let refused = |service: &str, headers: &str, body: &str, status: &str, checks: &str| -> Result<SippRun> {
        Sipp::play(
            "refused.xml",
            &[("HEADERS", headers), ("BODY", body), ("STATUS", status), ("CHECKS", checks)],
            service,
            server.sip_port,
            false,
        )
    };

    refused("lobby", sdp_headers, &offer, "404", "").context("a room nobody created: 404")?;

    let g729 = offer.replace("RTP/AVP 0", "RTP/AVP 18").replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:18 G729/8000");
    let warning = r#"<ereg regexp="305 Tutti/[0-9.]+ \".*G729" search_in="hdr" header="Warning:" check_it="true" assign_to="checked"/>"#;
    refused("small", sdp_headers, &g729, "488", warning).context("no codec in common: 488 with a Warning naming the offer")?;

    let timer = format!("{sdp_headers}\n      Session-Expires: 30\n      Supported: timer");
    let min_se = r#"<ereg regexp="^ *90" search_in="hdr" header="Min-SE:" check_it="true" assign_to="checked"/>"#;
    refused("small", &timer, &offer, "422", min_se).context("a session timer under 90 s: 422 with Min-SE")?;

    let accept = r#"<ereg regexp="application/sdp" search_in="hdr" header="Accept:" check_it="true" assign_to="checked"/>"#;
    refused("small", "      Content-Type: text/plain", "hello", "415", accept).context("a body that is not SDP: 415 with Accept")?;

    // The room's one seat taken, one caller more is busy.
    let first = Sipp::place("call.xml", &[("BODY", &offer), ("MIDDLE", ""), ("END", &Dialog::new().await_bye(10_000))], "small", server.sip_port, false)?;
    wait_until("the first caller to be listed", Duration::from_secs(2), || Ok(participants(&server, &id)?.len() == 1))?;
    let other = MediaPort::bind(false)?;
    refused("small", sdp_headers, &pcmu_offer(other.rtp_port), "486", "").context("a full room: 486 Busy Here")?;
    ensure!(participants(&server, &id)?.len() == 1, "the refused caller left nothing behind");
    let metrics = server.get("/metrics")?.body;
    for line in ["tutti_sip_calls 1", "tutti_sip_calls_answered_total 1"]
        .into_iter()
        .map(str::to_string)
        .chain(["404", "415", "486", "488"].map(|status| format!("tutti_sip_calls_refused_total{{status=\"{status}\"}} 1")))
    {
        ensure!(metrics.lines().any(|l| l == line), "/metrics has `{line}`:\n{}", metrics.lines().filter(|l| l.contains("sip")).collect::<Vec<_>>().join("\n"));
    }
    server.delete(&format!("/v1/compositions/{id}"))?;
    first.finish().context("deleting the composition hangs up its caller")?;

    // A node at its limit asks to be tried again later, as SBCs fail over on 503.
    let full = Server::start_with(&["--max-participants", "1"])?;
    full.create_composition(&json!({"name": "b", "audio_only": true}))?;
    let retry = r#"<ereg regexp=" *[0-9]+" search_in="hdr" header="Retry-After:" check_it="true" assign_to="checked"/>"#;
    told_to_retry(&full, "b", retry).context("a node at --max-participants: 503 with Retry-After")?;

    // INVITEs spend the node's join budget as POSTs do: a flood is refused, not taken.
    let paced = Server::start_with(&["--join-rate", "0.05", "--join-burst", "1"])?;
    let later = r#"<ereg regexp=" *([2-9][0-9]|1[0-9])" search_in="hdr" header="Retry-After:" check_it="true" assign_to="checked"/>"#;
    told_to_retry(&paced, "a", later).context("a call over --join-rate: 503 with Retry-After")
}

/// With one call up in a room "a" of `server`, a call for `room` gets 503 and a `Retry-After` that `checks` accepts.
fn told_to_retry(server: &Server, room: &str, checks: &str) -> Result<()> {
    let a = server.create_composition(&json!({"name": "a", "audio_only": true}))?;
    let (held_media, other) = (MediaPort::bind(false)?, MediaPort::bind(false)?);
    let end = Dialog::new().await_bye(10_000);
    let held = Sipp::place("call.xml", &[("BODY", &pcmu_offer(held_media.rtp_port)), ("MIDDLE", ""), ("END", &end)], "a", server.sip_port, false)?;
    wait_until("the first call to be listed", Duration::from_secs(2), || Ok(participants(server, &a)?.len() == 1))?;
    let headers = "      Content-Type: application/sdp";
    Sipp::play(
        "refused.xml",
        &[("HEADERS", headers), ("BODY", &pcmu_offer(other.rtp_port)), ("STATUS", "503"), ("CHECKS", checks)],
        room,
        server.sip_port,
        false,
    )?;
    drop(held);
    Ok(())
}

#[test]
fn outside_the_trusted_networks_a_caller_proves_a_users_password() -> Result<()> {
    // Loopback is not trusted once networks are named: SIPp on 127.0.0.1 is a stranger.
    let server = Server::start_with(&["--sip-trusted-network", "192.0.2.0/24", "--sip-user", "alice:wonderland"])?;
    let id = server.create_composition(&json!({"name": "vault", "audio_only": true}))?;
    let media = MediaPort::bind(false)?;
    let offer = pcmu_offer(media.rtp_port);
    let await_bye = Dialog::new().await_bye(10_000);
    let caller = Sipp::place(
        "digest.xml",
        &[("USER", "alice"), ("PASSWORD", "wonderland"), ("BODY", &offer), ("STATUS", "200"), ("AFTER", &await_bye)],
        "vault",
        server.sip_port,
        false,
    )?;
    wait_until("alice to be listed", Duration::from_secs(3), || Ok(participants(&server, &id)?.len() == 1))?;
    server.delete(&format!("/v1/compositions/{id}"))?;
    let run = caller.finish().context("401, then the right password: 200")?;
    ensure!(run.messages.contains("WWW-Authenticate: Digest realm=\"tutti\""), "the challenge:\n{}", run.messages);

    let id = server.create_composition(&json!({"name": "vault", "audio_only": true}))?;
    for (user, password) in [("alice", "looking-glass"), ("mallory", "wonderland")] {
        let fills = [("USER", user), ("PASSWORD", password), ("BODY", offer.as_str()), ("STATUS", "403"), ("AFTER", "")];
        Sipp::play("digest.xml", &fills, "vault", server.sip_port, false).with_context(|| format!("{user} with a wrong password: 403"))?;
    }
    ensure!(participants(&server, &id)?.is_empty(), "nobody got in with a wrong password");

    // With no users configured, a stranger is refused outright.
    let closed = Server::start_with(&["--sip-trusted-network", "192.0.2.0/24"])?;
    closed.create_composition(&json!({"name": "vault", "audio_only": true}))?;
    Sipp::play(
        "refused.xml",
        &[("HEADERS", "      Content-Type: application/sdp"), ("BODY", &offer), ("STATUS", "403"), ("CHECKS", "")],
        "vault",
        closed.sip_port,
        false,
    ).context("a stranger where no user may call: 403")?;
    Ok(())
}

#[test]
fn a_dial_plan_routes_numbers_and_makes_ad_hoc_rooms_that_end_with_their_last_caller() -> Result<()> {
    let config = tempfile::Builder::new().suffix(".toml").tempfile()?;
    std::fs::write(
        config.path(),
        r#"
        sip_routes = [
          { match = "exact", pattern = "100", composition = "board" },
          { match = "regex", pattern = "^huddle-[a-z]+$", template = "huddle" },
        ]
        [sip_templates.huddle]
        audio_only = true
        max_participants = 4
        "#,
    )?;
    let server = Server::start_with(&["--config", config.path().to_str().unwrap_or_default()])?;
    let board = server.create_composition(&json!({"name": "board", "audio_only": true}))?;
    let ports: Vec<MediaPort> = (0..3).map(|_| MediaPort::bind(false)).collect::<Result<_>>()?;
    let call = |service: &str, port: &MediaPort, millis: u64| {
        let middle = Dialog::new().pause(millis).hang_up();
        Sipp::place("call.xml", &[("BODY", &pcmu_offer(port.rtp_port)), ("MIDDLE", &middle), ("END", "")], service, server.sip_port, false)
    };
    let to_board = call("100", &ports[0], 1500)?;
    // Two callers of a room nobody made, at the same moment: one room.
    let (red_1, red_2) = (call("huddle-red", &ports[1], 1500)?, call("huddle-red", &ports[2], 1500)?);
    wait_until("the call to 100 in board", Duration::from_secs(3), || Ok(participants(&server, &board)?.len() == 1))?;
    let huddles = || -> Result<Vec<Value>> {
        let list = server.get("/v1/compositions")?.json()?;
        Ok(list["compositions"].as_array().cloned().unwrap_or_default().into_iter().filter(|c| c["name"] == "huddle-red").collect())
    };
    let mut seen = Vec::new();
    let together = wait_until("both huddle callers in one ad-hoc room", Duration::from_secs(3), || {
        let rooms = huddles()?;
        let counts: Vec<usize> = rooms.iter().map(|r| r["participants"].as_array().map_or(0, Vec::len)).collect();
        if seen.last() != Some(&counts) {
            seen.push(counts.clone());
        }
        Ok(counts == [2])
    });
    if let Err(e) = together {
        // Failed once in CI (run 43), not since: what each caller and the server did, for next time.
        let calls: Vec<String> = [red_1, red_2].into_iter().map(|run| format!("{:?}", run.finish().map(|r| r.messages))).collect();
        anyhow::bail!("{e}; participants per huddle room over time: {seen:?}\ncalls: {calls:#?}\n--- server log ---\n{}", server.logs());
    }
    let made = huddles()?.remove(0);
    ensure!(made["audio_only"] == true, "made from the template: {made}");
    for (run, what) in [(to_board, "call to 100"), (red_1, "first huddle caller"), (red_2, "second huddle caller")] {
        run.finish().context(what)?;
    }
    wait_until("the ad-hoc room to close with its last caller", Duration::from_secs(1), || Ok(huddles()?.is_empty()))?;
    ensure!(server.get(&format!("/v1/compositions/{board}"))?.status == 200, "a room made through the API stays");
    Sipp::play(
        "refused.xml",
        &[("HEADERS", "      Content-Type: application/sdp"), ("BODY", &pcmu_offer(ports[0].rtp_port)), ("STATUS", "404"), ("CHECKS", "")],
        "huddle-42",
        server.sip_port,
        false,
    ).context("a number no rule matches: 404")?;
    Ok(())
}

/// A SIP client over TLS that trusts only `ca`: Debian's SIPp is built
/// without TLS, so the test speaks SIP itself, one message at a time.
struct TlsPeer {
    stream: tokio_rustls::rustls::StreamOwned<tokio_rustls::rustls::ClientConnection, TcpStream>,
    local: std::net::SocketAddr,
}

impl TlsPeer {
    fn connect(port: u16, ca_pem: &std::path::Path) -> Result<TlsPeer> {
        use tokio_rustls::rustls::{self, pki_types::CertificateDer, pki_types::pem::PemObject};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_pem)? {
            roots.add(cert?)?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?.to_owned();
        let tcp = TcpStream::connect(("127.0.0.1", port))?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        let local = tcp.local_addr()?;
        let connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name)?;
        Ok(TlsPeer { stream: rustls::StreamOwned::new(connection, tcp), local })
    }

    fn send(&mut self, message: &str) -> Result<()> {
        self.stream.write_all(message.as_bytes())?;
        Ok(())
    }

    /// The next response whose status is not provisional, as text.
    fn final_response(&mut self) -> Result<String> {
        use std::io::Read;
        let mut pending = String::new();
        let mut buf = [0u8; 8192];
        loop {
            while let Some(end) = pending.find("\r\n\r\n") {
                let length: usize = pending[..end]
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                    .unwrap_or(0);
                if pending.len() < end + 4 + length {
                    break;
                }
                let message: String = pending.drain(..end + 4 + length).collect();
                if !message.starts_with("SIP/2.0 1") {
                    return Ok(message);
                }
            }
            let n = self.stream.read(&mut buf)?;
            ensure!(n > 0, "the TLS connection closed");
            pending.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }

    fn request(&self, method: &str, cseq: u32, to_tag: &str, branch: &str, body: &str) -> String {
        let local = self.local;
        let content = if body.is_empty() { String::new() } else { "Content-Type: application/sdp\r\n".into() };
        format!(
            "{method} sip:secure@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK{branch}\r\n\
             From: \"Secure Room\" <sip:room@{local}>;tag=tls1\r\nTo: <sip:secure@127.0.0.1>{to_tag}\r\n\
             Call-ID: tls-call@127.0.0.1\r\nCSeq: {cseq} {method}\r\nContact: <sip:room@{local};transport=tls>\r\n\
             Max-Forwards: 70\r\n{content}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }
}

#[test]
fn a_call_over_tls_joins_and_leaves() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = TestCa::new("Tutti SIP test CA");
    let files = ca.issue(dir.path(), "sip", &["127.0.0.1"], Validity::Current);
    let ca_pem = ca.write_certificate(&dir.path().join("ca.pem"));
    let tls_port = free_sip_port()?;
    let listen = format!("127.0.0.1:{tls_port}");
    let (cert, key) = (files.cert.to_str().unwrap_or_default(), files.key.to_str().unwrap_or_default());
    let server = Server::start_with(&["--sip-tls-listen", &listen, "--sip-tls-cert", cert, "--sip-tls-key", key])?;
    let id = server.create_composition(&json!({"name": "secure", "audio_only": true}))?;
    let media = MediaPort::bind(false)?;
    let offer = pcmu_offer(media.rtp_port);

    let mut peer = TlsPeer::connect(tls_port, &ca_pem)?;
    let options = peer.request("OPTIONS", 1, "", "o1", "");
    peer.send(&options)?;
    ensure!(peer.final_response()?.starts_with("SIP/2.0 200"), "OPTIONS over TLS");
    let invite = peer.request("INVITE", 2, "", "i1", &offer);
    peer.send(&invite)?;
    let answer = peer.final_response()?;
    ensure!(answer.starts_with("SIP/2.0 200"), "INVITE over TLS: {answer}");
    let contact = answer.lines().find(|l| l.starts_with("Contact:")).unwrap_or_default().to_ascii_lowercase();
    ensure!(contact.contains(&format!(":{tls_port};transport=tls")), "in-dialog requests come back over TLS: {answer}");
    let to_tag = answer
        .lines()
        .find(|l| l.starts_with("To:"))
        .and_then(|l| l.split_once(";tag="))
        .map(|(_, tag)| format!(";tag={}", tag.trim()))
        .unwrap_or_default();
    let ack = peer.request("ACK", 2, &to_tag, "a1", "");
    peer.send(&ack)?;
    wait_until("the TLS caller to be listed", Duration::from_secs(2), || Ok(participants(&server, &id)?.len() == 1))?;
    wait_until("RTP at the TLS caller's port", Duration::from_secs(2), || Ok(media.rtp_packets() > 0))?;
    let bye = peer.request("BYE", 3, &to_tag, "b1", "");
    peer.send(&bye)?;
    ensure!(peer.final_response()?.starts_with("SIP/2.0 200"), "BYE over TLS");
    wait_until("the TLS caller to be gone", Duration::from_secs(1), || Ok(participants(&server, &id)?.is_empty()))?;
    Ok(())
}

#[test]
fn with_encryption_required_keys_travel_only_over_tls() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = TestCa::new("Tutti SIP test CA");
    let files = ca.issue(dir.path(), "sip", &["127.0.0.1"], Validity::Current);
    let ca_pem = ca.write_certificate(&dir.path().join("ca.pem"));
    let tls_port = free_sip_port()?;
    let listen = format!("127.0.0.1:{tls_port}");
    let (cert, key) = (files.cert.to_str().unwrap_or_default(), files.key.to_str().unwrap_or_default());
    let server = Server::start_with(&[
        "--media-encryption", "required", "--sip-tls-listen", &listen, "--sip-tls-cert", cert, "--sip-tls-key", key,
    ])?;
    let id = server.create_composition(&json!({"name": "secure", "audio_only": true}))?;
    let media = MediaPort::bind(false)?;
    // 30 bytes of key and salt, base64: what a room system set to "encryption required" offers.
    let srtp_offer = pcmu_offer(media.rtp_port)
        .replace("RTP/AVP 0", "RTP/SAVP 0")
        .replace("a=sendrecv\r\n", "a=sendrecv\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:W8p2ldzs0nBMvIvHKYOvTqkPqAhKJcQTwTUFA3tM\r\n");

    let warning = r#"<ereg regexp="399 Tutti/[0-9.]+ \".*only over TLS" search_in="hdr" header="Warning:" check_it="true" assign_to="checked"/>"#;
    Sipp::play(
        "refused.xml",
        &[("HEADERS", "      Content-Type: application/sdp"), ("BODY", &srtp_offer), ("STATUS", "488"), ("CHECKS", warning)],
        "secure",
        server.sip_port,
        false,
    ).context("SDES keys over UDP under media_encryption = required: 488")?;

    let mut peer = TlsPeer::connect(tls_port, &ca_pem)?;
    let invite = peer.request("INVITE", 1, "", "s1", &srtp_offer);
    peer.send(&invite)?;
    let answer = peer.final_response()?;
    ensure!(answer.starts_with("SIP/2.0 200"), "the same offer over TLS: {answer}");
    ensure!(answer.contains("RTP/SAVP 0") && answer.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"), "answered SRTP: {answer}");
    let to_tag = answer
        .lines()
        .find(|l| l.starts_with("To:"))
        .and_then(|l| l.split_once(";tag="))
        .map(|(_, tag)| format!(";tag={}", tag.trim()))
        .unwrap_or_default();
    let ack = peer.request("ACK", 1, &to_tag, "s2", "");
    peer.send(&ack)?;
    wait_until("the TLS caller to be listed", Duration::from_secs(2), || Ok(participants(&server, &id)?.len() == 1))?;
    let bye = peer.request("BYE", 2, &to_tag, "s3", "");
    peer.send(&bye)?;
    ensure!(peer.final_response()?.starts_with("SIP/2.0 200"), "BYE over TLS");
    Ok(())
}

#[test]
fn garbage_at_the_sip_port_disturbs_no_call() -> Result<()> {
    let server = Server::start()?;
    let id = server.create_composition(&json!({"name": "steady", "audio_only": true}))?;
    let media = MediaPort::bind(false)?;
    let offer = pcmu_offer(media.rtp_port);
    let middle = Dialog::new().pause(4000).options().hang_up();
    let call = Sipp::place("call.xml", &[("BODY", &offer), ("MIDDLE", &middle), ("END", "")], "steady", server.sip_port, false)?;
    wait_until("RTP at the caller's port", Duration::from_secs(3), || Ok(media.rtp_packets() > 10))?;
    media.take_longest_rtp_gap();

    let sip = ("127.0.0.1", server.sip_port);
    let udp = UdpSocket::bind("127.0.0.1:0")?;
    let mut noise = 0x2545_f491_4f6c_dd1du64;
    let mut random_bytes = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                noise ^= noise << 13;
                noise ^= noise >> 7;
                noise ^= noise << 17;
                noise as u8
            })
            .collect()
    };
    let invite = "INVITE sip:steady@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKjunk\r\n\
                  From: <sip:x@y>;tag=1\r\nTo: <sip:steady@127.0.0.1>\r\nCall-ID: junk\r\nCSeq: 1 INVITE\r\n";
    let mut garbage: Vec<Vec<u8>> = (0..200).map(|i| random_bytes(1 + i * 7)).collect();
    garbage.push(invite.as_bytes()[..invite.len() / 2].to_vec()); // truncated mid-header
    garbage.push(invite.replace("Call-ID: junk\r\n", "").into_bytes()); // no Call-ID
    garbage.push(invite.replace("CSeq: 1 INVITE\r\n", "").into_bytes()); // no CSeq
    garbage.push(format!("{invite}Content-Length: 99999\r\n\r\nv=0\r\n").into_bytes()); // a body shorter than said
    garbage.push(format!("{invite}Content-Type: application/sdp\r\nContent-Length: 8\r\n\r\nv=0\r\nm=\r\n").into_bytes()); // broken SDP
    let mut oversized = format!("{invite}Subject: ").into_bytes();
    oversized.extend(std::iter::repeat_n(b'a', 60_000));
    garbage.push(oversized.clone());
    for datagram in &garbage {
        udp.send_to(datagram, sip)?;
    }
    // Over TCP: a flood of 200 KB, and a connection left half-written.
    let mut flood = TcpStream::connect(sip)?;
    flood.set_write_timeout(Some(Duration::from_secs(2)))?;
    let _ = flood.write_all(&oversized.repeat(3));
    let mut half = TcpStream::connect(sip)?;
    half.write_all(&invite.as_bytes()[..40])?;

    Sipp::play("options.xml", &[], "steady", server.sip_port, false).context("OPTIONS answered right after the garbage")?;
    call.finish().context("the call in progress: in-dialog OPTIONS and BYE still answered")?;
    let gap = media.take_longest_rtp_gap();
    ensure!(gap < Duration::from_millis(300), "the caller's RTP went on through the garbage; longest gap {gap:?}");
    wait_until("the caller to be gone after its BYE", Duration::from_secs(1), || Ok(participants(&server, &id)?.is_empty()))?;
    ensure!(server.get("/healthz")?.status == 200, "the server is alive");
    drop((flood, half));
    Ok(())
}
