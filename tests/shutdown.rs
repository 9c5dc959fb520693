//! SIGTERM stops Tutti cleanly: it exits with success and gives back every
//! port (RTP, HTTP, RTMP), even with a caller and a recording running.

use anyhow::{Context, Result, ensure};
use crate::common::*;
use serde_json::json;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};

#[test]
fn sigterm_exits_cleanly_and_releases_every_port() -> Result<()> {
    let mut server = Server::start()?;
    let composition = server.post_json(
        "/v1/compositions",
        &json!({"video": {"width": 320, "height": 180}, "outputs": [{"kind": "record", "path": "last.mkv"}]}),
    )?;
    let composition = composition.json()?;
    let id = composition["id"].as_str().context("id")?;
    let rtmp_port: u16 = composition["rtmp_play_url"]
        .as_str()
        .and_then(|u| u.split(':').nth(2))
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .context("rtmp_play_url")?;
    let http_port: u16 = server.base_url.rsplit(':').next().context("port")?.parse()?;
    let mut caller = Caller::new(CallerSpec::new("red", Colour::Red, 500.0))?;
    let answer = caller.join(&server, id)?.answer;
    let rtp_ports: Vec<u16> = answer
        .lines()
        .filter_map(|l| l.strip_prefix("m="))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    ensure!(rtp_ports.len() == 2, "expected audio and video ports in {answer}");
    std::thread::sleep(std::time::Duration::from_secs(2));

    let status = server.terminate();
    ensure!(status.success(), "tutti exited with {status} on SIGTERM\n{}", server.logs());
    for port in rtp_ports {
        UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).with_context(|| format!("RTP port {port} still taken"))?;
        UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port + 1)).with_context(|| format!("RTCP port {} still taken", port + 1))?;
    }
    TcpListener::bind((Ipv4Addr::LOCALHOST, http_port)).context("HTTP port still taken")?;
    TcpListener::bind((Ipv4Addr::LOCALHOST, rtmp_port)).context("RTMP port still taken")?;
    // The recording was finalized on the way out.
    let recording = server.recordings_dir().join("last.mkv");
    ensure!(std::fs::metadata(&recording).map(|m| m.len()).unwrap_or(0) > 10_000, "no recording at {}", recording.display());
    Ok(())
}
