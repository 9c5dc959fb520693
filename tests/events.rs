//! Operators are told and can see: every state change is an event, on
//! `GET /v1/events` (Server-Sent Events) and POSTed to a webhook, signed;
//! `/metrics` is valid Prometheus text (judged by `promtool`) whose figures
//! follow what the media does.
//!
//! One caller's life drives it: it joins and goes active, an HLS output
//! goes live, the caller's media stops (interrupted, then stale), and
//! everything is removed. The webhook receiver is a real HTTP server in
//! Python that checks each signature itself and refuses the first two
//! POSTs, so that Tutti must retry.

use anyhow::{Context, Result, bail, ensure};
use crate::common::*;
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_events_test";
/// The receiver answers 503 to this many POSTs before taking them.
const REFUSED_FIRST: usize = 2;

/// `promtool check metrics` reads the text from stdin and lints its names.
fn promtool_accepts(metrics: &str) -> Result<()> {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running promtool (Debian package prometheus)")?;
    std::io::Write::write_all(&mut promtool.stdin.take().expect("piped"), metrics.as_bytes())?;
    let out = promtool.wait_with_output()?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n{metrics}");
    Ok(())
}

#[test]
fn every_state_change_is_an_event_on_the_stream_and_a_signed_webhook_and_metrics_follow_the_media() {
    let dir = tempfile::tempdir().unwrap();
    let hook_port = free_tcp_port().unwrap();
    let received = dir.path().join("webhooks.jsonl");
    let mut receiver = Command::new("python3");
    receiver
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/webhook_receiver.py"))
        .args([hook_port.to_string(), SECRET.into(), received.display().to_string(), REFUSED_FIRST.to_string()]);
    let _receiver = ChildProcess::spawn("webhook receiver", receiver, &dir.path().join("receiver.log")).unwrap();
    wait_until("the webhook receiver to listen", Duration::from_secs(5), || {
        Ok(std::net::TcpStream::connect(("127.0.0.1", hook_port)).is_ok())
    })
    .unwrap();
    let hook_url = format!("http://127.0.0.1:{hook_port}/hooks/tutti");
    let server =
        Server::start_with(&["--webhook-url", &hook_url, "--webhook-secret", SECRET, "--stale-after-secs", "3"]).unwrap();
    if let Err(e) = caller_life(&server, &received) {
        panic!("{e:?}\n--- server log ---\n{}", server.logs());
    }
}

fn caller_life(server: &Server, received: &std::path::Path) -> Result<()> {
    let mut all = EventStream::open(server, "", None)?;
    let id = server.create_composition(&json!({"video": {"width": 640, "height": 360}}))?;
    all.wait_for(Duration::from_secs(2), "composition_created", |e| e["type"] == "composition_created" && e["composition"] == id)?;
    let mut only_this = EventStream::open(server, &format!("?composition={id}"), None)?;
    let other = server.create_composition(&json!({"video": {"width": 320, "height": 180}}))?;

    let mut caller = Caller::new(CallerSpec::new("ada", Colour::Red, 500.0))?;
    let participant = server.add_participant(&id, &caller.offer())?;
    caller.start_sender(&participant.answer)?;
    let pid = participant.location.rsplit('/').next().unwrap_or_default().to_string();
    let joined = all.wait_for(Duration::from_secs(2), "participant_joined", is("participant_joined"))?;
    ensure!(joined["participant"] == pid.as_str() && joined["name"] == "Caller 1", "{joined}");
    all.wait_for(Duration::from_secs(5), "participant_active", |e| e["type"] == "participant_active" && e["participant"] == pid.as_str())?;

    let output = server.post_json(&format!("/v1/compositions/{id}/outputs"), &json!({"kind": "hls"}))?.json()?;
    let oid = output["id"].as_str().context("output id")?.to_string();
    all.wait_for(Duration::from_secs(2), "output_added", |e| e["type"] == "output_added" && e["kind"] == "hls")?;
    all.wait_for(Duration::from_secs(8), "output_live", |e| e["type"] == "output_live" && e["output"] == oid.as_str())?;

    // What /metrics says now, judged by promtool and against the media. The
    // HLS output can be live within 0.1 s of its POST (the caller's encode is
    // already running), before ten packets have gone either way, a second of
    // composite or a kilobyte of HLS: the counters are judged once the API has
    // seen that much.
    wait_until("ten packets of each medium both ways, 30 composite frames, 1 kB of HLS", Duration::from_secs(5), || {
        let view = server.get(&participant.location)?.json()?;
        let composition = server.get(&format!("/v1/compositions/{id}"))?.json()?;
        let hls_bytes = composition["outputs"].as_array().and_then(|o| o.iter().find(|o| o["id"] == oid.as_str())).map(|o| &o["bytes_sent"]);
        Ok(composition["composite_frames"].as_u64().is_some_and(|n| n > 30)
            && hls_bytes.and_then(|b| b.as_u64()).is_some_and(|n| n > 1000)
            && ["audio", "video"].iter().all(|m| {
                view[m]["packets_received"].as_u64().is_some_and(|n| n > 10) && view[m]["packets_sent"].as_u64().is_some_and(|n| n > 10)
            }))
    })?;
    let metrics = server.get("/metrics")?;
    ensure!(metrics.status == 200, "GET /metrics: {}", metrics.status);
    ensure!(metrics.header("content-type").is_some_and(|t| t.starts_with("text/plain; version=0.0.4")), "{:?}", metrics.headers);
    promtool_accepts(&metrics.body)?;
    let m = &metrics.body;
    let of = |name: &str, labels: &[(&str, &str)]| metric_sample(m, name, labels).with_context(|| format!("no {name} {labels:?} in\n{m}"));
    for media in ["audio", "video"] {
        let labels = [("composition", id.as_str()), ("participant", pid.as_str()), ("media", media)];
        ensure!(of("tutti_participant_packets_received_total", &labels)? > 10.0, "{media} received");
        ensure!(of("tutti_participant_packets_sent_total", &labels)? > 10.0, "{media} sent");
        // Every packet counted is a 12-byte RTP header and a payload. A lone
        // caller's mix-minus is silence, which Opus codes in 3 bytes a
        // packet: 10 such packets are 150 bytes, so a flat byte floor races.
        // The two counters are read a moment apart: one packet of slack.
        for (bytes, packets) in [("bytes_received", "packets_received"), ("bytes_sent", "packets_sent")] {
            let counted = |what: &str| of(&format!("tutti_participant_{what}_total"), &labels);
            let (bytes, packets) = (counted(bytes)?, counted(packets)?);
            ensure!(bytes >= 13.0 * (packets - 1.0), "{media}: {bytes} bytes in {packets} packets");
        }
        ensure!(of("tutti_participant_packets_rejected_total", &labels)? == 0.0, "{media}: nothing rejected");
    }
    ensure!(of("tutti_participants", &[("composition", &id), ("state", "active")])? == 1.0, "one active participant");
    ensure!(of("tutti_participants", &[("composition", &id), ("state", "stale")])? == 0.0, "no stale participant");
    ensure!(of("tutti_composite_frames_total", &[("composition", &id)])? > 30.0, "composite frames");
    ensure!(of("tutti_output_state", &[("output", &oid), ("state", "live")])? == 1.0, "output live");
    ensure!(of("tutti_output_state", &[("output", &oid), ("state", "failed")])? == 0.0, "output not failed");
    ensure!(of("tutti_output_bytes_total", &[("output", &oid), ("kind", "hls")])? > 1000.0, "HLS bytes");
    ensure!(of("tutti_compositions", &[])? == 2.0, "two compositions");
    ensure!(of("tutti_encoder_queue_frames", &[("composition", &id), ("encoder", "broadcast")])? <= 3.0, "queue depth");
    ensure!(of("tutti_broadcast_encoding", &[("composition", &id)])? == 1.0, "the encode at work for its output and caller");
    ensure!(of("tutti_broadcast_encoding", &[("composition", &other)])? == 0.0, "the encode resting with nothing to feed");
    // The process's own figures, as /proc tells them (whole CPU seconds: the collector's unit).
    let rss_bytes = server.footprint()?.rss_kib as f64 * 1024.0;
    let reported_rss = of("process_resident_memory_bytes", &[])?;
    ensure!((reported_rss / rss_bytes - 1.0).abs() < 0.25, "RSS {reported_rss} against /proc's {rss_bytes}");
    ensure!(of("process_cpu_seconds_total", &[])? >= 0.0, "CPU");
    let alarms_before = of("tutti_alarms_total", &[])?;

    caller.kill_sender();
    let interrupted = all.wait_for(Duration::from_secs(4), "participant_interrupted", is("participant_interrupted"))?;
    ensure!(
        interrupted["participant"] == pid.as_str() && interrupted["reason"].as_str().is_some_and(|r| r.contains("arrived from the caller")),
        "{interrupted}"
    );
    all.wait_for(Duration::from_secs(6), "participant_stale", |e| e["type"] == "participant_stale" && e["participant"] == pid.as_str())?;
    let alarms_after = metric_sample(&server.get("/metrics")?.body, "tutti_alarms_total", &[]).context("tutti_alarms_total")?;
    ensure!(alarms_after >= alarms_before + 2.0, "alarms {alarms_before} → {alarms_after}");

    ensure!(server.delete(&format!("/v1/compositions/{id}/outputs/{oid}"))?.status / 100 == 2, "output delete");
    all.wait_for(Duration::from_secs(2), "output_removed", is("output_removed"))?;
    ensure!(server.delete(&participant.location)?.status / 100 == 2, "participant delete");
    all.wait_for(Duration::from_secs(2), "participant_left", is("participant_left"))?;
    ensure!(server.delete(&format!("/v1/compositions/{other}"))?.status / 100 == 2, "delete other");
    ensure!(server.delete(&format!("/v1/compositions/{id}"))?.status / 100 == 2, "delete");
    let last = all.wait_for(Duration::from_secs(2), "composition_deleted", |e| e["type"] == "composition_deleted" && e["composition"] == id)?;

    // One stream sees every event, numbered without a gap, in the order of the caller's life.
    let seqs: Vec<u64> = all.seen.iter().filter_map(|e| e["seq"].as_u64()).collect();
    ensure!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "gap in {seqs:?}");
    let life: Vec<&str> = all.seen.iter().filter(|e| e["composition"] == id).filter_map(|e| e["type"].as_str()).collect();
    let expected = [
        "composition_created", "participant_joined", "participant_active", "output_added", "output_live",
        "participant_interrupted", "participant_stale", "output_removed", "participant_left", "composition_deleted",
    ];
    let mut rest = life.iter();
    for kind in expected {
        ensure!(rest.any(|t| *t == kind), "{kind} missing or out of order in {life:?}");
    }
    ensure!(all.seen.iter().any(|e| e["composition"] == other.as_str()), "the other composition's events are on the unfiltered stream");

    // The filtered stream has this composition's events only, through its deletion.
    only_this.wait_for(Duration::from_secs(2), "composition_deleted (filtered)", is("composition_deleted"))?;
    ensure!(only_this.seen.iter().all(|e| e["composition"] == id), "another composition's event: {:?}", event_types(&only_this.seen));

    // A client that reconnects with Last-Event-ID gets what came after it.
    let mut resumed = EventStream::open(server, "", Some(2))?;
    let first = resumed.wait_for(Duration::from_secs(2), "a replayed event", |_| true)?;
    ensure!(first["seq"] == 3, "replay starts at {first}");

    // Every event reaches the webhook, signed, in order, after Tutti retried the refused ones.
    let last_seq = last["seq"].as_u64().context("seq")?;
    let records = wait_for_webhooks(received, last_seq)?;
    ensure!(records.iter().all(|r| r["signature_valid"] == true), "a bad signature: {records:?}");
    ensure!(records.iter().all(|r| r["content_type"] == "application/json"), "content type");
    ensure!(
        records.iter().all(|r| r["seq_header"] == r["event"]["seq"].to_string() && r["type_header"] == r["event"]["type"]),
        "headers differ from the body"
    );
    let refused: Vec<&Value> = records.iter().filter(|r| r["status"] == 503).collect();
    ensure!(refused.len() == REFUSED_FIRST && refused.iter().all(|r| r["event"]["seq"] == 1), "the first event is retried: {refused:?}");
    let delivered: Vec<u64> = records.iter().filter(|r| r["status"] == 200).filter_map(|r| r["event"]["seq"].as_u64()).collect();
    ensure!(delivered == (1..=last_seq).collect::<Vec<_>>(), "delivered in order, each once: {delivered:?}");
    let delivered_events: Vec<&Value> = records.iter().filter(|r| r["status"] == 200).map(|r| &r["event"]).collect();
    for event in &all.seen {
        ensure!(delivered_events.contains(&event), "{event} on the stream but not the webhook");
    }

    // A bad query is a clear error.
    let bad = server.get("/v1/events?room=1")?;
    ensure!(bad.status == 400 && bad.json()?["error"]["code"] == "invalid_query", "{bad:?}");
    Ok(())
}

/// The receiver's records once it has taken every event up to `last_seq`.
fn wait_for_webhooks(path: &std::path::Path, last_seq: u64) -> Result<Vec<Value>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let records: Vec<Value> = text.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
        if records.iter().any(|r| r["status"] == 200 && r["event"]["seq"] == last_seq) {
            return Ok(records);
        }
        if Instant::now() > deadline {
            bail!("the webhook did not get event {last_seq} within 10 s: {} records", records.len());
        }
        thread::sleep(Duration::from_millis(100));
    }
}
