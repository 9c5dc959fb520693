//! A host publishing from OBS or ffmpeg over RTMP becomes a participant:
//! `{"ingest": "rtmp"}` gives it a URL and a stream key, and ffmpeg (with
//! B-frames, as OBS's x264 sends) publishes H.264 and AAC with them. An RTP
//! caller's return stream is the judge: the publisher's colour in its cell,
//! its tone in the caller's mix-minus (in an audio-only composition, its
//! tone only).

use anyhow::{Context, Result, ensure};
use crate::common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, SystemTime};

const CANVAS: (u32, u32) = (640, 360);
const PUBLISHER_TONE_HZ: f64 = 900.0;
const CALLER_TONE_HZ: f64 = 500.0;

/// ffmpeg publishing a solid colour and the publisher's tone to `url`.
fn publish(url: &str, colour: &str, seconds: u32, log: &Path) -> Result<ChildProcess> {
    publisher(url, &PublisherSpec { colour, tone_hz: PUBLISHER_TONE_HZ, size: CANVAS, seconds }, log)
}

fn ingest(server: &Server, location: &str) -> Result<Value> {
    let view = server.get(location)?.json()?;
    Ok(view["ingest"].clone())
}

fn publishing(server: &Server, location: &str) -> Result<bool> {
    Ok(ingest(server, location)?["publishing"].as_bool().unwrap_or(false))
}

#[test]
fn a_publisher_with_its_key_is_seen_and_heard_keeps_its_cell_when_it_comes_back_and_a_wrong_key_is_refused() {
    with_server(&[], |server| {
        let logs = tempfile::tempdir()?;
        let composition = server.create_composition(&json!({"video": {"width": CANVAS.0, "height": CANVAS.1, "fps": 30}}))?;
        let mut caller = Caller::new(CallerSpec::new("red", Colour::Red, CALLER_TONE_HZ))?;
        caller.join(server, &composition)?;

        let PublisherParticipant { location, view, url, stream_key: key } = add_publisher_participant(server, &composition, &json!({"name": "Host", "ingest": "rtmp"}))?;
        ensure!(view["transport"] == "rtmp", "transport: {view}");
        ensure!(url.starts_with("rtmp://127.0.0.1:") && url.ends_with("/ingest"), "ingest url {url}");
        ensure!(key.len() >= 32 && !key.contains('…'), "the POST shows the whole key once: {key}");
        let shown = ingest(server, &location)?;
        let masked = shown["stream_key"].as_str().unwrap_or_default();
        ensure!(masked.ends_with('…') && !masked.contains(&key[4..]), "a GET masks the key: {shown}");
        ensure!(shown["publishing"] == false, "nobody publishes yet: {shown}");

        // The publisher comes; its picture and its sound reach the caller.
        let mut publisher = publish(&format!("{url}/{key}"), "blue", 30, &logs.path().join("blue.log"))?;
        wait_until("the publisher to be publishing", Duration::from_secs(10), || publishing(server, &location))?;
        sleep(Duration::from_secs(3));
        let blue_from = SystemTime::now();
        sleep(Duration::from_secs(2));
        let blue_until = SystemTime::now();
        let rect = server.get(&location)?.json()?["rect"].clone();
        let view = server.get(&location)?.json()?;
        ensure!(view["state"] == "active", "the publishing participant is active: {view}");
        ensure!(view["video"]["codec"] == "h264" && view["audio"]["codec"] == "aac", "its media: {view}");
        ensure!(view["video"]["packets_received"].as_u64().unwrap_or(0) >= 100, "frames counted: {view}");

        // A wrong key is refused, and the publisher publishing goes on.
        let mut stranger = publish(&format!("{url}/{}", "0".repeat(32)), "green", 5, &logs.path().join("stranger.log"))?;
        let refused = stranger.wait_for_exit(Duration::from_secs(8)).context("a publisher with a wrong key was not refused")?;
        ensure!(!refused.success(), "ffmpeg with a wrong key exited {refused}");
        ensure!(publishing(server, &location)?, "a wrong key disturbed the publisher");

        // It drops (killed: its TCP connection ends) and comes back with the same key, in another colour.
        publisher.signal("KILL");
        publisher.wait_for_exit(Duration::from_secs(5));
        wait_until("the publisher's end to show", Duration::from_secs(5), || Ok(!publishing(server, &location)?))?;
        let mut back = publish(&format!("{url}/{key}"), "yellow", 30, &logs.path().join("yellow.log"))?;
        wait_until("the publisher to be back", Duration::from_secs(10), || publishing(server, &location))?;
        sleep(Duration::from_secs(3));
        let yellow_from = SystemTime::now();
        sleep(Duration::from_secs(2));
        let yellow_until = SystemTime::now();
        let view = server.get(&location)?.json()?;
        ensure!(view["rect"] == rect, "the publisher came back to another cell: {} then {}", rect, view["rect"]);
        let participants = server.get(&format!("/v1/compositions/{composition}/participants"))?.json()?;
        ensure!(participants["participants"].as_array().map(Vec::len) == Some(2), "a comeback is the same participant: {participants}");

        // Deleted, its key is refused.
        let deleted = server.delete(&location)?;
        ensure!(deleted.status == 204 || deleted.status == 202, "DELETE answered {}", deleted.status);
        back.wait_for_exit(Duration::from_secs(5)).context("the publisher of a deleted participant stays connected")?;
        let mut late = publish(&format!("{url}/{key}"), "green", 5, &logs.path().join("late.log"))?;
        let refused = late.wait_for_exit(Duration::from_secs(8)).context("the key of a deleted participant was not refused")?;
        ensure!(!refused.success(), "ffmpeg with a deleted participant's key exited {refused}");

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
fn in_an_audio_only_composition_a_publisher_is_heard_and_its_video_left_aside() {
    with_server(&[], |server| {
        let logs = tempfile::tempdir()?;
        let composition = server.create_composition(&json!({"audio_only": true}))?;
        let mut caller = Caller::new(CallerSpec { video: None, ..CallerSpec::new("ear", Colour::Red, CALLER_TONE_HZ) })?;
        caller.join(server, &composition)?;
        let host = add_publisher_participant(server, &composition, &json!({"ingest": "rtmp"}))?;
        let location = host.location.clone();
        let _publisher = publish(&host.publish_url(), "blue", 20, &logs.path().join("publisher.log"))?;
        wait_until("the publisher to be publishing", Duration::from_secs(10), || publishing(server, &location))?;
        sleep(Duration::from_secs(2));
        let from = SystemTime::now();
        sleep(Duration::from_secs(2));
        let until = SystemTime::now();
        let view = server.get(&location)?.json()?;
        ensure!(view["state"] == "active" && view["video"].is_null() && view["rect"].is_null(), "an audio-only publisher: {view}");
        let recording = caller.stop_receiver()?;
        hears_publisher_not_itself(&audio_samples(&recording)?, from, until, PUBLISHER_TONE_HZ, CALLER_TONE_HZ)?;
        Ok(())
    });
}

#[test]
fn a_publisher_that_does_not_come_back_in_time_takes_its_participant_with_it() {
    with_server(&["--publisher-return-secs", "2"], |server| {
        let logs = tempfile::tempdir()?;
        let composition = server.create_composition(&json!({"video": {"width": CANVAS.0, "height": CANVAS.1, "fps": 30}}))?;
        let mut events = EventStream::open(server, &format!("?composition={composition}"), None)?;
        let host = add_publisher_participant(server, &composition, &json!({"ingest": "rtmp"}))?;
        let location = host.location.clone();
        // Three seconds of publishing, then ffmpeg ends: the publisher stops.
        let mut publisher = publish(&host.publish_url(), "blue", 3, &logs.path().join("publisher.log"))?;
        wait_until("the publisher to be publishing", Duration::from_secs(10), || publishing(server, &location))?;
        publisher.wait_for_exit(Duration::from_secs(10)).context("ffmpeg did not end")?;
        let ended = SystemTime::now();
        let view = server.get(&location)?.json()?;
        ensure!(view["last_error"].as_str().is_some_and(|e| e.contains("within 2 s")), "a stopped publisher's participant says how long it waits: {view}");
        wait_until("the participant to leave", Duration::from_secs(5), || Ok(server.get(&location)?.status == 404))?;
        let gone_after = elapsed(ended, SystemTime::now());
        ensure!((1.5..=3.5).contains(&gone_after), "the participant left {gone_after:.1} s after its publisher stopped (waits 2 s)");
        let left = events.wait_for(Duration::from_secs(2), "participant_left", |e| e["type"] == "participant_left")?;
        ensure!(left["participant"] == host.view["id"], "participant_left names another: {left}");
        Ok(())
    });
}
