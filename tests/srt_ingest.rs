//! A host publishing from OBS, ffmpeg or a hardware encoder over SRT becomes
//! a participant: `{"ingest": "srt"}` gives it an `srt://` URL on a port of
//! its own with its stream key as the stream id, and ffmpeg publishes
//! MPEG-TS (H.264 with B-frames, AAC) there. An RTP caller's return stream
//! is the judge: the publisher's colour in its cell, its tone in the
//! caller's mix-minus; Opus (without video) is taken too. One publisher at
//! a time: a second with the right key is refused while the first publishes.

use anyhow::{Context, Result, ensure};
use crate::common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, SystemTime};

const CANVAS: (u32, u32) = (640, 360);
const PUBLISHER_TONE_HZ: f64 = 1100.0;
const CALLER_TONE_HZ: f64 = 500.0;
/// From connecting to publishing: SRT's handshake, then the first PAT, PMT and keyframe.
const PUBLISHING_TIMEOUT: Duration = Duration::from_secs(10);
/// A refused SRT caller gives up at once; ffmpeg's own connect timeout is longer.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(8);

fn publish(url: &str, colour: &str, seconds: u32, log: &Path) -> Result<ChildProcess> {
    publisher(url, &PublisherSpec { colour, tone_hz: PUBLISHER_TONE_HZ, size: CANVAS, seconds }, log)
}

fn ingest(server: &Server, location: &str) -> Result<Value> {
    Ok(server.get(location)?.json()?["ingest"].clone())
}

fn publishing(server: &Server, location: &str) -> Result<bool> {
    Ok(ingest(server, location)?["publishing"].as_bool().unwrap_or(false))
}

/// `url` with its stream id replaced.
fn with_stream_id(url: &str, stream_id: &str) -> String {
    let base = url.split_once("?streamid=").map_or(url, |(base, _)| base);
    format!("{base}?streamid={stream_id}")
}

/// A publisher to `url` that must be refused: ffmpeg fails to connect.
fn refused(url: &str, log: &Path) -> Result<()> {
    let mut stranger = publish(url, "green", 5, log)?;
    let status = stranger.wait_for_exit(REFUSAL_TIMEOUT).with_context(|| format!("a publisher to {url} was not refused"))?;
    ensure!(!status.success(), "ffmpeg publishing to {url} exited {status}");
    Ok(())
}

#[test]
fn an_srt_publisher_with_its_key_is_seen_and_heard_keeps_its_cell_when_it_comes_back_and_a_wrong_key_is_refused() {
    with_server(&[], |server| {
        let logs = tempfile::tempdir()?;
        let composition = server.create_composition(&json!({"video": {"width": CANVAS.0, "height": CANVAS.1, "fps": 30}}))?;
        let mut caller = Caller::new(CallerSpec::new("red", Colour::Red, CALLER_TONE_HZ))?;
        caller.join(server, &composition)?;

        let host = add_publisher_participant(server, &composition, &json!({"name": "Host", "ingest": "srt"}))?;
        let (location, key) = (host.location.clone(), host.stream_key.clone());
        ensure!(host.view["transport"] == "srt", "transport: {}", host.view);
        ensure!(key.len() >= 32 && !key.contains('…'), "the POST shows the whole key once: {key}");
        ensure!(
            host.url.starts_with("srt://127.0.0.1:") && host.url.ends_with(&format!("?streamid={key}")),
            "the SRT URL carries the key as its stream id: {}",
            host.url
        );
        let shown = ingest(server, &location)?;
        let masked_url = shown["url"].as_str().unwrap_or_default();
        ensure!(!masked_url.contains(&key[4..]) && masked_url.ends_with('…'), "a GET masks the key in the URL: {shown}");
        ensure!(shown["publishing"] == false && shown["encrypted"] == false, "nobody publishes yet, unencrypted: {shown}");

        // A wrong key is refused before anyone publishes, and after.
        refused(&with_stream_id(&host.url, &"0".repeat(32)), &logs.path().join("stranger1.log"))?;
        ensure!(!publishing(server, &location)?, "a wrong key made the participant publishing");

        let mut publisher = publish(&host.publish_url(), "blue", 30, &logs.path().join("blue.log"))?;
        wait_until("the publisher to be publishing", PUBLISHING_TIMEOUT, || publishing(server, &location))?;
        sleep(Duration::from_secs(3));
        let blue_from = SystemTime::now();
        sleep(Duration::from_secs(2));
        let blue_until = SystemTime::now();
        let view = server.get(&location)?.json()?;
        let rect = view["rect"].clone();
        ensure!(view["state"] == "active", "the publishing participant is active: {view}");
        ensure!(view["video"]["codec"] == "h264" && view["audio"]["codec"] == "aac", "its media: {view}");
        ensure!(view["video"]["packets_received"].as_u64().unwrap_or(0) >= 100, "frames counted: {view}");

        refused(&with_stream_id(&host.url, "guess"), &logs.path().join("stranger2.log"))?;
        ensure!(publishing(server, &location)?, "a wrong key disturbed the publisher");
        // A second publisher with the right key is refused too, rather than
        // taken and never shown.
        refused(&host.publish_url(), &logs.path().join("second.log"))?;
        ensure!(publishing(server, &location)?, "a second publisher disturbed the first");

        // It drops (killed) and comes back with the same URL, in another colour.
        publisher.signal("KILL");
        publisher.wait_for_exit(Duration::from_secs(5));
        wait_until("the publisher's end to show", Duration::from_secs(10), || Ok(!publishing(server, &location)?))?;
        let mut back = publish(&host.publish_url(), "yellow", 30, &logs.path().join("yellow.log"))?;
        wait_until("the publisher to be back", PUBLISHING_TIMEOUT, || publishing(server, &location))?;
        sleep(Duration::from_secs(3));
        let yellow_from = SystemTime::now();
        sleep(Duration::from_secs(2));
        let yellow_until = SystemTime::now();
        let view = server.get(&location)?.json()?;
        ensure!(view["rect"] == rect, "the publisher came back to another cell: {} then {}", rect, view["rect"]);
        let participants = server.get(&format!("/v1/compositions/{composition}/participants"))?.json()?;
        ensure!(participants["participants"].as_array().map(Vec::len) == Some(2), "a comeback is the same participant: {participants}");

        // Deleted, its publisher is cut off and its key refused.
        let deleted = server.delete(&location)?;
        ensure!(deleted.status == 204 || deleted.status == 202, "DELETE answered {}", deleted.status);
        back.wait_for_exit(Duration::from_secs(10)).context("the publisher of a deleted participant stays connected")?;
        refused(&host.publish_url(), &logs.path().join("late.log"))?;

        let recording = caller.stop_receiver()?;
        let seen = [
            Seen { from: blue_from, until: blue_until, colour: Colour::Blue },
            Seen { from: yellow_from, until: yellow_until, colour: Colour::Yellow },
        ];
        judge_publisher_beside_red_caller(&recording, &seen, PUBLISHER_TONE_HZ, CALLER_TONE_HZ)?;
        Ok(())
    });
}

#[test]
fn an_srt_participant_with_a_passphrase_lets_in_only_a_publisher_that_gives_it() {
    with_server(&[], |server| {
        let logs = tempfile::tempdir()?;
        let composition = server.create_composition(&json!({"video": {"width": CANVAS.0, "height": CANVAS.1, "fps": 30}}))?;
        let short = server.post_json(&format!("/v1/compositions/{composition}/participants"), &json!({"ingest": "srt", "passphrase": "short"}))?;
        ensure!(short.status == 400 && short.body.contains("invalid_passphrase"), "a 5-character passphrase: {} {}", short.status, short.body);

        let passphrase = "correct-horse-battery";
        let host = add_publisher_participant(server, &composition, &json!({"ingest": "srt", "passphrase": passphrase}))?;
        ensure!(host.view["ingest"]["encrypted"] == true && !host.view.to_string().contains(passphrase), "the passphrase is never shown: {}", host.view);
        refused(&host.publish_url(), &logs.path().join("none.log"))?;
        refused(&format!("{}&passphrase=wrong-horse-battery", host.publish_url()), &logs.path().join("wrong.log"))?;
        ensure!(!publishing(server, &host.location)?, "a publisher without the passphrase got in");

        let _publisher = publish(&format!("{}&passphrase=correct-horse-battery", host.publish_url()), "blue", 20, &logs.path().join("right.log"))?;
        wait_until("the publisher with the passphrase to be publishing", PUBLISHING_TIMEOUT, || publishing(server, &host.location))?;
        wait_until("its frames to arrive", Duration::from_secs(5), || {
            let view = server.get(&host.location)?.json()?;
            Ok(view["video"]["packets_received"].as_u64().unwrap_or(0) >= 30 && view["state"] == "active")
        })?;
        Ok(())
    });
}

#[test]
fn an_srt_publisher_sending_opus_alone_is_heard_and_its_end_is_seen() {
    with_server(&[], |server| {
        let logs = tempfile::tempdir()?;
        let composition = server.create_composition(&json!({"audio_only": true}))?;
        let mut caller = Caller::new(CallerSpec { video: None, ..CallerSpec::new("ear", Colour::Red, CALLER_TONE_HZ) })?;
        caller.join(server, &composition)?;
        let host = add_publisher_participant(server, &composition, &json!({"ingest": "srt"}))?;
        // Opus in MPEG-TS and no video at all: the listener's video branch never gets a stream.
        let mut cmd = std::process::Command::new("ffmpeg");
        cmd.args(["-hide_banner", "-nostdin", "-loglevel", "warning", "-re"])
            .args(["-f", "lavfi", "-i", &format!("sine=frequency={PUBLISHER_TONE_HZ}:sample_rate=48000"), "-t", "30"])
            .args(["-c:a", "libopus", "-b:a", "64k", "-f", "mpegts", &host.publish_url()]);
        let mut publisher = ChildProcess::spawn("ffmpeg-opus", cmd, &logs.path().join("opus.log"))?;
        wait_until("the publisher to be publishing", PUBLISHING_TIMEOUT, || publishing(server, &host.location))?;
        sleep(Duration::from_secs(2));
        let from = SystemTime::now();
        sleep(Duration::from_secs(2));
        let until = SystemTime::now();
        let view = server.get(&host.location)?.json()?;
        ensure!(view["state"] == "active" && view["audio"]["codec"] == "opus", "an Opus publisher: {view}");

        publisher.signal("KILL");
        publisher.wait_for_exit(Duration::from_secs(5));
        // libsrt notices a silent peer after its 5 s idle timeout.
        wait_until("the publisher's end to show", Duration::from_secs(10), || Ok(!publishing(server, &host.location)?))?;

        let recording = caller.stop_receiver()?;
        hears_publisher_not_itself(&audio_samples(&recording)?, from, until, PUBLISHER_TONE_HZ, CALLER_TONE_HZ)?;
        Ok(())
    });
}
