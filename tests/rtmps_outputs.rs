//! RTMPS outputs end to end, nothing mocked: a CA and server certificates
//! made at run time (rcgen), nginx's stream module terminating TLS in front
//! of nginx-rtmp, `tutti serve` publishing a composition to it, and ffprobe /
//! ffmpeg reading back the plain `rtmp://` side as the judge.
//!
//! ```text
//!  red caller ─► tutti ─► rtmps:// ─► nginx stream (TLS, certificate under test) ─► nginx-rtmp ─► rtmp:// ─► ffprobe/ffmpeg
//! ```
//!
//! Every wait has a timeout; measured figures are printed (`--nocapture`).

use anyhow::{Context, Result, ensure};
use crate::common::*;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime};
use tempfile::TempDir;

const WIDTH: u64 = 640;
const HEIGHT: u64 = 360;
/// A rejected certificate must end the output in `failed` within this.
const FAIL_WITHIN: Duration = Duration::from_secs(5);
/// How long a failed output is watched for a retry it must not make.
const NO_RETRY_WATCH: Duration = Duration::from_secs(4);

/// The TLS fronts nginx runs, by index.
const GOOD: usize = 0;
const EXPIRED: usize = 1;
const OTHER_CA: usize = 2;
const OTHER_NAME: usize = 3;

/// The test CA's certificate and one server certificate per front.
struct Pki {
    _dir: TempDir,
    ca_file: PathBuf,
    fronts: Vec<CertificateFiles>,
}

fn make_pki() -> Result<Pki> {
    let dir = tempfile::tempdir()?;
    let ca = TestCa::new("Tutti test CA");
    let stranger = TestCa::new("A CA nobody told Tutti about");
    let ca_file = ca.write_certificate(&dir.path().join("ca.pem"));
    let fronts = vec![
        ca.issue(dir.path(), "good", &SERVER_NAMES, Validity::Current),
        ca.issue(dir.path(), "expired", &SERVER_NAMES, Validity::Expired),
        stranger.issue(dir.path(), "stranger", &SERVER_NAMES, Validity::Current),
        ca.issue(dir.path(), "elsewhere", &["live.example.com"], Validity::Current),
    ];
    Ok(Pki {
        _dir: dir,
        ca_file,
        fronts,
    })
}

fn ffprobe(url: &str) -> Result<Value> {
    let mut cmd = Command::new("ffprobe");
    cmd.args([
        "-v",
        "error",
        "-rw_timeout",
        "5000000",
        "-print_format",
        "json",
        "-show_streams",
    ])
    .arg(url);
    let out = run_bounded(cmd, Duration::from_secs(15))?;
    ensure!(
        out.status.success(),
        "ffprobe {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// H.264 at the canvas size and AAC, as tutti's broadcast encodes them.
fn check_h264_and_aac(probe: &Value) -> Result<()> {
    let streams = probe["streams"].as_array().context("streams")?;
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .context("no video stream")?;
    ensure!(video["codec_name"] == "h264", "video is {}", video["codec_name"]);
    ensure!(
        video["width"] == WIDTH && video["height"] == HEIGHT,
        "video is {}x{}",
        video["width"],
        video["height"]
    );
    let audio = streams
        .iter()
        .find(|s| s["codec_type"] == "audio")
        .context("no audio stream")?;
    ensure!(audio["codec_name"] == "aac", "audio is {}", audio["codec_name"]);
    Ok(())
}

fn add_output(server: &Server, composition: &str, body: Value) -> Result<String> {
    let response = server.post_json(&format!("/v1/compositions/{composition}/outputs"), &body)?;
    ensure!(response.status == 201, "adding {body}: {response:?}");
    Ok(response.json()?["id"].as_str().context("output id")?.to_string())
}

fn output(server: &Server, composition: &str, id: &str) -> Result<Value> {
    let response = server.get(&format!("/v1/compositions/{composition}/outputs/{id}"))?;
    ensure!(response.status == 200, "GET output {id}: {response:?}");
    response.json()
}

/// Polls until `id` is in `state`; how long that took.
fn wait_for_state(server: &Server, composition: &str, id: &str, state: &str, timeout: Duration) -> Result<Duration> {
    let started = Instant::now();
    wait_until(&format!("output {id} {state}"), timeout, || {
        Ok(output(server, composition, id)?["state"] == state)
    })
    .with_context(|| format!("output now: {}", output(server, composition, id).unwrap_or_default()))?;
    Ok(started.elapsed())
}

/// Fails unless `id` is failed, never retried (one TLS session at its
/// front), and its `last_error` contains `reason`.
fn check_failed_once(
    server: &Server,
    nginx: &Nginx,
    composition: &str,
    id: &str,
    front: usize,
    reason: &str,
) -> Result<()> {
    let output = output(server, composition, id)?;
    ensure!(output["state"] == "failed", "{output}");
    ensure!(output["reconnects"] == 0, "{output}");
    let last_error = output["last_error"].as_str().context("no last_error")?;
    ensure!(
        last_error.contains(reason),
        "last_error {last_error:?} does not say {reason:?}"
    );
    let sessions = nginx.tls_sessions(front);
    ensure!(
        sessions == 1,
        "front {front} saw {sessions} TLS sessions: the output retried"
    );
    Ok(())
}

#[test]
fn with_the_operator_ca_rtmps_goes_live_and_bad_certificates_fail_at_once_saying_why() -> Result<()> {
    let pki = make_pki()?;
    let nginx = Nginx::start_with_tls_fronts(&pki.fronts);
    let ca_file = pki.ca_file.to_str().context("CA path")?;
    let server = Server::start_with(&["--rtmps-ca-file", ca_file])?;
    let id = server.create_composition(&json!({
        "video": {"width": WIDTH, "height": HEIGHT, "fps": 30, "bitrate_kbps": 1000},
        "outputs": [{"kind": "hls"}]
    }))?;
    let mut red = Caller::new(CallerSpec::new("red", Colour::Red, 500.0))?;
    red.join(&server, &id)?;

    let good = add_output(
        &server,
        &id,
        json!({"kind": "rtmp", "url": nginx.rtmps_url(GOOD, "127.0.0.1", "live", "good")}),
    )?;
    let live_after = wait_for_state(&server, &id, &good, "live", Duration::from_secs(10))?;
    let plain = nginx.url("live", "good");
    let started = Instant::now();
    wait_until("the rtmps stream readable at nginx", Duration::from_secs(15), || {
        Ok(ffprobe(&plain).is_ok())
    })?;
    eprintln!(
        "rtmps output live {} ms after the POST; readable as rtmp:// at nginx {} ms after that",
        live_after.as_millis(),
        started.elapsed().as_millis()
    );
    check_h264_and_aac(&ffprobe(&plain)?)?;
    let colours = live_stream_colours(&plain, 30, Rect::FULL.centre(0.5))?;
    let named: Vec<Option<Colour>> = colours.iter().map(|&rgb| Colour::classify(rgb)).collect();
    let red_frames = named.iter().filter(|&&c| c == Some(Colour::Red)).count();
    eprintln!(
        "{red_frames} of {} frames read back through TLS have the red caller's centre",
        named.len()
    );
    // The first frames may precede a keyframe; the last third must be the caller.
    ensure!(
        named[20..].iter().all(|&c| c == Some(Colour::Red)),
        "centre colours read back: {colours:?}"
    );

    let added = Instant::now();
    let added_wall = SystemTime::now();
    let bad = [
        (EXPIRED, "TLS certificate of 127.0.0.1 is not trusted: expired"),
        (OTHER_CA, "TLS certificate of 127.0.0.1 is not trusted: unknown issuer"),
        (
            OTHER_NAME,
            "TLS certificate of 127.0.0.1 is not trusted: issued for another name (live.example.com)",
        ),
    ];
    let mut bad_ids = Vec::new();
    for (front, _) in bad {
        let url = nginx.rtmps_url(front, "127.0.0.1", "live", &format!("bad{front}"));
        bad_ids.push(add_output(&server, &id, json!({"kind": "rtmp", "url": url}))?);
    }
    for (output_id, (front, _)) in bad_ids.iter().zip(bad) {
        wait_for_state(
            &server,
            &id,
            output_id,
            "failed",
            FAIL_WITHIN.saturating_sub(added.elapsed()),
        )?;
        eprintln!(
            "front {front}: failed within {} ms of the POST",
            added.elapsed().as_millis()
        );
    }
    sleep(NO_RETRY_WATCH);
    for (output_id, (front, reason)) in bad_ids.iter().zip(bad) {
        check_failed_once(&server, &nginx, &id, output_id, front, reason)?;
        eprintln!("front {front}: {}", output(&server, &id, output_id)?["last_error"]);
    }

    // Nothing else noticed: the good rtmps output and HLS still live, the stream still readable.
    let outputs = server.get(&format!("/v1/compositions/{id}/outputs"))?.json()?;
    for other in outputs["outputs"]
        .as_array()
        .context("outputs")?
        .iter()
        .filter(|o| !bad_ids.iter().any(|b| o["id"] == *b))
    {
        ensure!(other["state"] == "live", "another output suffered: {other}");
    }
    check_h264_and_aac(&ffprobe(&plain)?)?;
    ensure!(
        nginx.tls_sessions(GOOD) == 0,
        "the good rtmps session ended: {}",
        nginx.logs()
    );
    // Nor did the caller: its composite came back at full rate throughout.
    let watched_until = SystemTime::now();
    let frames = video_frames(&red.stop_receiver()?)?;
    let fps = fps_between(&frames, added_wall - Duration::from_secs(1), watched_until);
    eprintln!("caller's return video while three outputs failed: {fps:.1} fps");
    ensure!(fps >= 29.0, "the caller's return video fell to {fps:.1} fps");
    Ok(())
}

#[test]
fn without_the_ca_file_a_private_cas_certificate_fails_as_unknown_issuer_while_a_dead_port_retries() -> Result<()> {
    let pki = make_pki()?;
    let nginx = Nginx::start_with_tls_fronts(&pki.fronts[..1]);
    let server = Server::start()?;
    let id = server.create_composition(&json!({
        "video": {"width": WIDTH, "height": HEIGHT, "fps": 30, "bitrate_kbps": 1000},
        "outputs": [{"kind": "hls"}]
    }))?;
    let plain = add_output(&server, &id, json!({"kind": "rtmp", "url": nginx.url("live", "plain")}))?;
    wait_for_state(&server, &id, &plain, "live", Duration::from_secs(10))?;
    let posted = Instant::now();
    let secure = add_output(
        &server,
        &id,
        json!({"kind": "rtmp", "url": nginx.rtmps_url(GOOD, "localhost", "live", "secure")}),
    )?;
    // Beside it, a network failure: nothing listens there, so it keeps retrying.
    let closed_port = free_tcp_port()?;
    let unreachable = add_output(
        &server,
        &id,
        json!({"kind": "rtmp", "url": format!("rtmps://127.0.0.1:{closed_port}/live/unreachable")}),
    )?;
    wait_for_state(
        &server,
        &id,
        &secure,
        "failed",
        FAIL_WITHIN.saturating_sub(posted.elapsed()),
    )?;
    let failed_after = posted.elapsed();
    sleep(NO_RETRY_WATCH);
    let unreachable = output(&server, &id, &unreachable)?;
    ensure!(
        unreachable["state"] == "reconnecting",
        "a refused TCP connection must be retried: {unreachable}"
    );
    let network_error = unreachable["last_error"].as_str().unwrap_or_default();
    ensure!(
        network_error.starts_with("TCP connection to 127.0.0.1:"),
        "{unreachable}"
    );
    check_failed_once(
        &server,
        &nginx,
        &id,
        &secure,
        GOOD,
        "TLS certificate of localhost is not trusted: unknown issuer",
    )?;
    eprintln!(
        "unknown CA: failed {} ms after the POST: {}",
        failed_after.as_millis(),
        output(&server, &id, &secure)?["last_error"]
    );
    ensure!(
        output(&server, &id, &plain)?["state"] == "live",
        "the plain rtmp output suffered"
    );
    check_h264_and_aac(&ffprobe(&nginx.url("live", "plain"))?)?;
    Ok(())
}

#[test]
fn a_ca_in_the_system_store_is_trusted_without_the_ca_file() -> Result<()> {
    let pki = make_pki()?;
    let nginx = Nginx::start_with_tls_fronts(&pki.fronts[..1]);
    // SSL_CERT_FILE stands in for the system store, as for openssl and curl.
    let server = Server::start_with_options(ServerOptions {
        env: &[("SSL_CERT_FILE", pki.ca_file.to_str().context("CA path")?)],
        ..ServerOptions::default()
    })?;
    let id = server.create_composition(&json!({
        "video": {"width": WIDTH, "height": HEIGHT, "fps": 30, "bitrate_kbps": 1000},
        "outputs": [{"kind": "rtmp", "url": nginx.rtmps_url(GOOD, "localhost", "live", "system")}]
    }))?;
    let outputs = server.get(&format!("/v1/compositions/{id}/outputs"))?.json()?;
    let secure = outputs["outputs"][0]["id"].as_str().context("output id")?.to_string();
    wait_for_state(&server, &id, &secure, "live", Duration::from_secs(10))?;
    let plain = nginx.url("live", "system");
    wait_until("the rtmps stream readable at nginx", Duration::from_secs(15), || {
        Ok(ffprobe(&plain).is_ok())
    })?;
    check_h264_and_aac(&ffprobe(&plain)?)?;
    Ok(())
}

#[test]
fn an_unusable_ca_file_stops_start_up_naming_the_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let not_pem = dir.path().join("not-a-bundle.pem");
    std::fs::write(&not_pem, "this is not a certificate\n")?;
    let missing = dir.path().join("missing.pem");
    for (path, says) in [
        (&not_pem, "holds no PEM certificate"),
        (&missing, "cannot read the RTMPS CA file"),
    ] {
        let path = path.to_str().context("path")?;
        let error = match Server::start_with(&["--rtmps-ca-file", path]) {
            Ok(_) => anyhow::bail!("tutti started with --rtmps-ca-file {path}"),
            Err(error) => format!("{error:#}"),
        };
        ensure!(error.contains("exited during startup"), "{error}");
        ensure!(
            error.contains(says) && error.contains(path),
            "start-up error does not say {says:?} about {path}: {error}"
        );
    }
    Ok(())
}
