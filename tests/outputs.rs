//! Live outputs end to end: Tutti pushes a composition to a real nginx-rtmp
//! (Debian's module), serves HLS, records files and plays on its embedded
//! RTMP server, all from one encode. ffprobe/ffmpeg judge what comes out.

use anyhow::{Context, Result, bail, ensure};
use crate::common::*;
use serde_json::{Value, json};
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime};

const WIDTH: u64 = 640;
const HEIGHT: u64 = 360;

fn ffprobe(input: &str, extra: &[&str]) -> Result<Value> {
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-rw_timeout", "5000000", "-print_format", "json", "-show_streams", "-show_format"])
        .args(extra)
        .arg(input);
    let out = run_bounded(cmd, Duration::from_secs(15))?;
    ensure!(out.status.success(), "ffprobe {input}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn stream<'a>(probe: &'a Value, codec_type: &str) -> Result<&'a Value> {
    probe["streams"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["codec_type"] == codec_type))
        .with_context(|| format!("no {codec_type} stream in {probe}"))
}

/// H.264 at the canvas size and frame rate, AAC 48 kHz stereo.
fn check_broadcast(probe: &Value, what: &str) -> Result<()> {
    let video = stream(probe, "video")?;
    ensure!(video["codec_name"] == "h264", "{what}: video is {}", video["codec_name"]);
    ensure!(video["width"] == WIDTH && video["height"] == HEIGHT, "{what}: {}x{}", video["width"], video["height"]);
    let rate = video["avg_frame_rate"].as_str().or(video["r_frame_rate"].as_str()).unwrap_or("0/1");
    let (num, den) = rate.split_once('/').context("frame rate")?;
    let fps = num.parse::<f64>()? / den.parse::<f64>()?.max(1.0);
    ensure!((fps - 30.0).abs() < 1.0, "{what}: {fps} fps");
    let audio = stream(probe, "audio")?;
    ensure!(audio["codec_name"] == "aac", "{what}: audio is {}", audio["codec_name"]);
    ensure!(audio["sample_rate"] == "48000" && audio["channels"] == 2, "{what}: audio {} Hz x{}", audio["sample_rate"], audio["channels"]);
    Ok(())
}

fn outputs(server: &Server, composition: &str) -> Result<Vec<Value>> {
    let body = server.get(&format!("/v1/compositions/{composition}/outputs"))?.json()?;
    Ok(body["outputs"].as_array().context("outputs")?.clone())
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> Result<bool>) -> Result<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if done()? {
            return Ok(start.elapsed());
        }
        sleep(Duration::from_millis(100));
    }
    bail!("{what}: not within {timeout:?}")
}

/// Records `seconds` of a live stream and checks its timestamps: monotonic
/// per stream, and a duration within 10% of the wall time it took.
fn check_live_timing(url: &str, dir: &Path, seconds: u64) -> Result<()> {
    let file = dir.join("capture.flv");
    let started = Instant::now();
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-y", "-rw_timeout", "5000000", "-i", url, "-t", &seconds.to_string(), "-c", "copy"]).arg(&file);
    let out = run_bounded(cmd, Duration::from_secs(seconds + 15))?;
    ensure!(out.status.success(), "capturing {url}: {}", String::from_utf8_lossy(&out.stderr));
    let wall = started.elapsed().as_secs_f64();

    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-print_format", "json", "-show_entries", "packet=stream_index,dts_time,pts_time"]).arg(&file);
    let out = run_bounded(cmd, Duration::from_secs(15))?;
    let packets: Value = serde_json::from_slice(&out.stdout)?;
    let packets = packets["packets"].as_array().context("packets")?;
    let mut last = [f64::MIN; 2];
    let (mut first, mut end) = (f64::MAX, f64::MIN);
    for p in packets {
        let index = p["stream_index"].as_u64().unwrap_or(0).min(1) as usize;
        let dts: f64 = p["dts_time"].as_str().unwrap_or("0").parse()?;
        ensure!(dts >= last[index], "{url}: stream {index} timestamps go back ({} then {dts})", last[index]);
        last[index] = dts;
        first = first.min(dts);
        end = end.max(dts);
    }
    let duration = end - first;
    eprintln!("{url}: {duration:.2} s of media in {wall:.2} s of capture ({} packets)", packets.len());
    // ffmpeg's own start-up (probing) is part of the wall time, not of the media.
    ensure!(duration >= seconds as f64 * 0.9 && duration <= seconds as f64 * 1.1, "{url}: {duration:.2} s of media for -t {seconds}");
    Ok(())
}

#[test]
fn one_encode_feeds_nginx_twice_hls_recordings_and_the_embedded_server() -> Result<()> {
    let nginx = Nginx::start();
    let mut server = Server::start()?;
    let body = server.post_json(
        "/v1/compositions",
        &json!({
            "name": "show",
            "video": {"width": WIDTH, "height": HEIGHT, "fps": 30, "bitrate_kbps": 1500},
            "outputs": [
                {"kind": "rtmp", "url": nginx.url("live", "one-secret-key")},
                {"kind": "rtmp", "url": nginx.url("live", "two")},
                {"kind": "hls"},
                {"kind": "record", "path": "show/killed.mkv"},
                {"kind": "record", "path": "show/stopped.mp4"},
            ]
        }),
    )?;
    ensure!(body.status == 201, "POST composition: {}", body.body);
    let composition = body.json()?;
    let id = composition["id"].as_str().context("id")?.to_string();
    let shown_url = composition["outputs"][0]["url"].as_str().context("rtmp url")?;
    ensure!(!shown_url.contains("one-secret-key"), "the stream key is shown in full: {shown_url}");

    let mut red = Caller::new(CallerSpec::new("red", Colour::Red, 500.0))?;
    red.join(&server, &id)?;

    // Time from the POST to the first frame readable at nginx.
    let live = wait_for("both RTMP outputs live", Duration::from_secs(10), || {
        Ok(outputs(&server, &id)?.iter().filter(|o| o["kind"] == "rtmp").all(|o| o["state"] == "live"))
    })?;
    let one = nginx.url("live", "one-secret-key");
    let readable = wait_for("a frame readable at nginx", Duration::from_secs(15), || Ok(ffprobe(&one, &[]).is_ok()))?;
    eprintln!(
        "RTMP outputs live {} ms after the POST; first frame readable at nginx {} ms after it",
        live.as_millis(),
        (live + readable).as_millis()
    );


    let composition = server.get(&format!("/v1/compositions/{id}"))?.json()?;
    ensure!(
        composition["broadcast"] == json!({"video_encoders": 1, "audio_encoders": 1, "encoding": true}),
        "five outputs must share one encode: {}",
        composition["broadcast"]
    );

    check_broadcast(&ffprobe(&one, &[])?, "nginx live/one")?;
    check_broadcast(&ffprobe(&nginx.url("live", "two"), &[])?, "nginx live/two")?;
    let capture_dir = tempfile::tempdir()?;
    check_live_timing(&one, capture_dir.path(), 4)?;

    // HLS: playlist and every listed segment, with the right headers.
    let hls = composition["outputs"].as_array().and_then(|o| o.iter().find(|o| o["kind"] == "hls")).context("the HLS output")?;
    let playlist_url = hls["playlist_url"].as_str().context("playlist_url")?.to_owned();
    let hls_dir = playlist_url.trim_end_matches("index.m3u8");
    ensure!(playlist_url == format!("/hls/{id}/{}/index.m3u8", hls["id"].as_str().unwrap_or_default()), "playlist at {playlist_url}");
    let playlist = server.get(&playlist_url)?;
    ensure!(playlist.status == 200, "GET {playlist_url}: {}", playlist.status);
    ensure!(playlist.header("content-type") == Some("application/vnd.apple.mpegurl"), "playlist type {:?}", playlist.header("content-type"));
    ensure!(playlist.header("access-control-allow-origin") == Some("*"), "no CORS on the playlist");
    ensure!(playlist.body.starts_with("#EXTM3U"), "not a playlist: {}", playlist.body);
    let segments: Vec<&str> = playlist.body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    ensure!(segments.len() >= 2, "only {} segments listed", segments.len());
    for segment in &segments {
        let response = server.get(&format!("{hls_dir}{segment}"))?;
        ensure!(response.header("content-type") == Some("video/mp2t"), "{segment}: type {:?}", response.header("content-type"));
        let path = capture_dir.path().join(segment);
        std::fs::write(&path, server.get_bytes(&format!("{hls_dir}{segment}"))?)?;
        let probe = ffprobe(path.to_str().context("path")?, &[])?;
        check_broadcast(&probe, segment)?;
    }
    ensure!(server.get(&format!("{hls_dir}../../../etc/passwd"))?.status == 404, "HLS paths must stay in their directory");

    // The embedded RTMP server plays the same composition.
    let play = composition["rtmp_play_url"].as_str().context("rtmp_play_url")?;
    check_broadcast(&ffprobe(play, &[])?, "embedded server")?;

    // A recording stopped through the API is finalized: complete and playable.
    let stopped = outputs(&server, &id)?
        .into_iter()
        .find(|o| o["path"] == "show/stopped.mp4")
        .context("mp4 output")?;
    let response = server.delete(&format!("/v1/compositions/{id}/outputs/{}", stopped["id"].as_str().unwrap_or_default()))?;
    ensure!(response.status == 204, "DELETE output: {}", response.status);
    let mp4 = server.recordings_dir().join("show/stopped.mp4");
    let probe = ffprobe(mp4.to_str().context("path")?, &[])?;
    check_broadcast(&probe, "stopped.mp4")?;
    let duration: f64 = probe["format"]["duration"].as_str().unwrap_or("0").parse()?;
    ensure!(duration > 3.0, "stopped.mp4 holds only {duration} s");
    ensure!(ffprobe(&one, &[]).is_ok(), "removing one output disturbed another");

    // A recording whose server is killed mid-way is still readable.
    sleep(Duration::from_secs(1));
    server.kill();
    let mkv = server.recordings_dir().join("show/killed.mkv");
    let probe = ffprobe(mkv.to_str().context("path")?, &["-count_frames"])?;
    let frames: u64 = stream(&probe, "video")?["nb_read_frames"].as_str().unwrap_or("0").parse()?;
    ensure!(frames > 90, "the killed recording decodes only {frames} frames");
    eprintln!("recording killed with SIGKILL: {frames} frames decodable");
    drop(red);
    Ok(())
}

#[test]
fn a_dead_cdn_reconnects_and_disturbs_nothing() -> Result<()> {
    let mut nginx = Nginx::start();
    let server = Server::start()?;
    // Accepts TCP and never answers; and a port where nothing listens.
    let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let silent_port = silent.local_addr()?.port();
    let closed_port = free_tcp_port()?;
    let id = server.create_composition(&json!({
        "video": {"width": WIDTH, "height": HEIGHT, "fps": 30, "bitrate_kbps": 1000},
        "outputs": [
            {"kind": "rtmp", "url": nginx.url("live", "show")},
            {"kind": "rtmp", "url": format!("rtmp://127.0.0.1:{silent_port}/live/silent")},
            {"kind": "rtmp", "url": format!("rtmp://127.0.0.1:{closed_port}/live/closed")},
        ]
    }))?;
    let mut red = Caller::new(CallerSpec::new("red", Colour::Red, 500.0))?;
    red.join(&server, &id)?;
    let state = |index: usize| -> Result<Value> { Ok(outputs(&server, &id)?[index].clone()) };
    wait_for("the nginx output live", Duration::from_secs(10), || Ok(state(0)?["state"] == "live"))?;
    let url = nginx.url("live", "show");
    wait_for("readable at nginx", Duration::from_secs(15), || Ok(ffprobe(&url, &[]).is_ok()))?;

    let killed = SystemTime::now();
    nginx.kill();
    wait_for("the output noticing", Duration::from_secs(10), || Ok(state(0)?["state"] == "reconnecting"))?;
    sleep(Duration::from_secs(5).saturating_sub(killed.elapsed()?));
    nginx.launch();
    let back = Instant::now();
    let relive = wait_for("live again", Duration::from_secs(40), || Ok(state(0)?["state"] == "live"))?;
    let readable = wait_for("readable again", Duration::from_secs(40), || Ok(ffprobe(&url, &[]).is_ok()))?;
    let output = state(0)?;
    eprintln!(
        "after nginx came back: live again in {} ms, readable in {} ms; reconnects = {}",
        relive.as_millis(),
        (relive + readable).as_millis(),
        output["reconnects"]
    );
    ensure!(output["reconnects"].as_u64().unwrap_or(0) >= 1, "reconnects not counted: {output}");
    // The product's backoff (1 s doubling, +-20%) retries ~7 s after a drop,
    // i.e. ~2 s after a 5 s outage ends; ffprobe then needs ~2 s to probe.
    let readable_after_return = back.elapsed();
    ensure!(readable_after_return <= Duration::from_secs(8), "readable again only {readable_after_return:?} after nginx returned");
    let recovered = SystemTime::now();

    for index in [1, 2] {
        let output = state(index)?;
        ensure!(
            output["state"] == "reconnecting" || output["state"] == "connecting",
            "an unreachable destination shows {}",
            output["state"]
        );
        ensure!(!output["last_error"].is_null(), "no last_error for an unreachable destination: {output}");
    }

    // The caller's return video never paused while the outputs struggled.
    let frames = video_frames(&red.stop_receiver()?)?;
    let fps = fps_between(&frames, killed - Duration::from_secs(1), recovered);
    eprintln!("caller's return video during the outage: {fps:.1} fps");
    ensure!(fps >= 29.0, "the caller's return video fell to {fps:.1} fps during the CDN outage");
    drop(silent);
    Ok(())
}

#[test]
fn a_full_disk_fails_one_recording_and_nothing_else() -> Result<()> {
    let server = Server::start()?;
    // /dev/full answers every write with ENOSPC: a disk that is full.
    std::fs::create_dir_all(server.recordings_dir())?;
    std::os::unix::fs::symlink("/dev/full", server.recordings_dir().join("full.mkv"))?;
    let id = server.create_composition(&json!({
        "video": {"width": 320, "height": 180, "fps": 30, "bitrate_kbps": 500},
        "outputs": [{"kind": "record", "path": "full.mkv"}, {"kind": "record", "path": "fine.mkv"}, {"kind": "hls"}]
    }))?;
    let mut red = Caller::new(CallerSpec::new("red", Colour::Red, 500.0))?;
    red.join(&server, &id)?;
    let failed_after = wait_for("the full-disk recording failing", Duration::from_secs(10), || {
        Ok(outputs(&server, &id)?.iter().any(|o| o["path"] == "full.mkv" && o["state"] == "failed"))
    })?;
    let failed = SystemTime::now();
    wait_for("the other outputs live", Duration::from_secs(10), || {
        Ok(outputs(&server, &id)?.iter().filter(|o| o["path"] != "full.mkv").all(|o| o["state"] == "live"))
    })?;
    sleep(Duration::from_secs(3).saturating_sub(failed.elapsed()?));
    let all = outputs(&server, &id)?;
    let full = all.iter().find(|o| o["path"] == "full.mkv").context("full.mkv")?;
    eprintln!("full disk: failed after {} ms with {}", failed_after.as_millis(), full["last_error"]);
    ensure!(!full["last_error"].is_null(), "no reason given: {full}");
    for other in all.iter().filter(|o| o["path"] != "full.mkv") {
        ensure!(other["state"] == "live", "another output suffered: {other}");
    }
    let fine = server.recordings_dir().join("fine.mkv");
    let before = std::fs::metadata(&fine)?.len();
    let window_start = SystemTime::now();
    sleep(Duration::from_secs(2));
    ensure!(std::fs::metadata(&fine)?.len() > before, "the other recording stopped growing");
    let frames = video_frames(&red.stop_receiver()?)?;
    let fps = fps_between(&frames, window_start, window_start + Duration::from_secs(2));
    ensure!(fps >= 29.0, "the caller's return video fell to {fps:.1} fps when a recording failed");
    Ok(())
}

/// HLS is written a GOP at a time, so its bytes stand still for a whole
/// keyframe interval between writes: with 4 s GOPs a 2 s watchdog called a
/// healthy output `stalled` every GOP (and with 2 s GOPs now and then,
/// which failed the full-disk test above one run in two).
#[test]
fn an_hls_output_with_long_gops_is_never_called_stalled() -> Result<()> {
    let server = Server::start()?;
    let mut events = EventStream::open(&server, "", None)?;
    let id = server.create_composition(&json!({
        "video": {"width": 320, "height": 180, "fps": 30, "bitrate_kbps": 300, "keyframe_interval_secs": 4},
        "outputs": [{"kind": "hls"}]
    }))?;
    let mut red = Caller::new(CallerSpec::new("red", Colour::Red, 500.0))?;
    red.join(&server, &id)?;
    wait_for("HLS live", Duration::from_secs(15), || Ok(outputs(&server, &id)?[0]["state"] == "live"))?;
    // Three GOPs; the API is read ten times a second.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(12) {
        let hls = outputs(&server, &id)?.remove(0);
        ensure!(hls["state"] == "live", "a healthy HLS output read {} after {:?}: {hls}", hls["state"], watched.elapsed());
        sleep(Duration::from_millis(100));
    }
    let hls = outputs(&server, &id)?.remove(0);
    let playlist = server.get(hls["playlist_url"].as_str().context("playlist_url")?)?.body;
    let durations: Vec<f64> = playlist.lines().filter_map(|l| l.strip_prefix("#EXTINF:")?.split(',').next()?.parse().ok()).collect();
    ensure!(durations.len() >= 2, "{} segments after 12 s: {playlist}", durations.len());
    ensure!(durations.iter().skip(1).all(|d| (d - 4.0).abs() < 0.2), "segments are not one 4 s GOP each: {durations:?}");
    let stalled: Vec<&Value> = events.drain()?.iter().filter(|e| e["type"] == "output_stalled").collect();
    ensure!(stalled.is_empty(), "output_stalled was announced: {stalled:?}");
    drop(red);
    Ok(())
}

/// The broadcast encode (x264 and AAC) runs only while something takes it:
/// an idle composition paid 0.09 CPU s/s for it. It rests with a caller that
/// has an encode of its own, wakes within a second for a recording, rests
/// again when the recording stops, and a second recording after the pause is
/// as whole as the first: the caller's colour and tone from its first second,
/// sound and picture starting together. A player of the embedded server wakes
/// it too.
#[test]
fn the_broadcast_encode_rests_while_nothing_takes_it_and_wakes_whole() -> Result<()> {
    let server = Server::start()?;
    let id = server.create_composition(&json!({"video": {"width": WIDTH, "height": HEIGHT, "fps": 30}}))?;
    // A VP8 caller gets an encode of its own, not the broadcast's.
    let mut red = Caller::new(CallerSpec { video: Some(VideoCodec::Vp8), ..CallerSpec::new("red", Colour::Red, 500.0) })?;
    red.join(&server, &id)?;
    let composition = || server.get(&format!("/v1/compositions/{id}"))?.json();
    let encoding = || -> Result<bool> { Ok(composition()?["broadcast"]["encoding"] == true) };
    sleep(Duration::from_secs(1));
    ensure!(!encoding()?, "encoding for nobody: {}", composition()?["broadcast"]);

    let mut recordings = Vec::new();
    for name in ["first.mkv", "second.mkv"] {
        let created = server.post_json(&format!("/v1/compositions/{id}/outputs"), &json!({"kind": "record", "path": name}))?;
        ensure!(created.status == 201, "POST output: {}", created.body);
        let output = created.json()?["id"].as_str().context("output id")?.to_string();
        wait_for("the encode at work for the recording", Duration::from_secs(1), encoding)?;
        sleep(Duration::from_secs(3));
        let stopped = server.delete(&format!("/v1/compositions/{id}/outputs/{output}"))?;
        ensure!(stopped.status == 204, "DELETE output: {}", stopped.status);
        wait_for("the encode resting again", Duration::from_secs(1), || Ok(!encoding()?))?;
        recordings.push(server.recordings_dir().join(name));
        sleep(Duration::from_secs(1));
    }
    for path in &recordings {
        let file = path.to_str().context("path")?;
        let colours = file_colours(path, Rect::FULL.centre(0.3))?;
        ensure!(colours.len() >= 75, "{file}: {} frames in 3 s", colours.len());
        let not_red = colours.iter().filter(|&&c| Colour::classify(c) != Some(Colour::Red)).count();
        ensure!(not_red == 0, "{file}: {not_red} of {} frames do not show red", colours.len());
        let probe = ffprobe(file, &[])?;
        let start = |kind| -> Result<f64> { Ok(stream(&probe, kind)?["start_time"].as_str().unwrap_or("nan").parse()?) };
        let apart = (start("video")? - start("audio")?).abs();
        ensure!(apart < 0.1, "{file}: sound starts {apart:.3} s away from the picture (video {:.3}, audio {:.3})", start("video")?, start("audio")?);
        let audio = audio_samples(path)?;
        let from = audio.start + Duration::from_millis(500);
        let level = audio.tone_level_median_db(from, from + Duration::from_secs(2), 500.0)?;
        ensure!(level > -20.0, "{file}: red's tone at {level:.1} dBFS");
        eprintln!("{file}: {} frames, sound {apart:.3} s from picture, tone at {level:.1} dBFS", colours.len());
    }

    let play = composition()?["rtmp_play_url"].as_str().context("rtmp_play_url")?.to_string();
    let colours = live_stream_colours(&play, 30, Rect::FULL.centre(0.3))?;
    ensure!(colours.iter().all(|&c| Colour::classify(c) == Some(Colour::Red)), "the player saw {colours:?}");
    wait_for("the encode resting once the player left", Duration::from_secs(2), || Ok(!encoding()?))?;
    drop(red);
    Ok(())
}
