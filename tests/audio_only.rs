//! Audio-only compositions (an audio conference, the Janus AudioBridge /
//! FreeSWITCH case): no canvas, video m-lines declined, no outputs, and
//! more callers than a grid's 16, each hearing everyone but itself.

use anyhow::{Context, Result, ensure};
use crate::common::*;
use serde_json::json;
use std::thread::sleep;
use std::time::{Duration, SystemTime};

/// Callers that join without sending, beyond the grid's 16.
const SILENT_CALLERS: usize = 15;

/// An offer from a caller whose ports nobody reads: it only takes a seat.
fn seat_offer(index: usize, with_video: bool) -> String {
    let base = 40000 + 4 * index;
    let mut sdp = format!(
        "v=0\r\no=- {index} 1 IN IP4 127.0.0.1\r\ns=seat\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {base} RTP/AVP 0\r\na=sendrecv\r\n"
    );
    if with_video {
        sdp += &format!("m=video {} RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\n", base + 2);
    }
    sdp
}

#[test]
fn an_audio_conference_mixes_everyone_but_yourself_beyond_sixteen_callers() {
    let server = Server::start().unwrap();
    if let Err(e) = conference(&server) {
        panic!("{e:?}\n--- server log ---\n{}", server.logs());
    }
}

fn conference(server: &Server) -> Result<()> {
    // Outputs carry the composite picture: an audio-only composition has none.
    let refused = server.post_json("/v1/compositions", &json!({"audio_only": true, "outputs": [{"kind": "hls"}]}))?;
    ensure!(refused.status == 400 && refused.body.contains("audio-only"), "outputs on an audio-only composition: {refused:?}");

    let composition = server.create_composition(&json!({"audio_only": true}))?;
    let view = server.get(&format!("/v1/compositions/{composition}"))?.json()?;
    ensure!(view["audio_only"] == true && view.get("video").is_none(), "the view of an audio-only composition: {view}");
    ensure!(view.get("rtmp_play_url").is_none(), "nothing to play without a picture: {view}");
    let output = server.post_json(&format!("/v1/compositions/{composition}/outputs"), &json!({"kind": "hls"}))?;
    ensure!(output.status == 400, "POST of an output to an audio-only composition: {output:?}");

    // Video is declined with port 0; an offer of video alone has nothing in common.
    let seated = server.add_participant(&composition, &seat_offer(0, true))?;
    ensure!(seated.answer.contains("m=video 0 "), "video not declined:\n{}", seated.answer);
    let video_only = seat_offer(1, true).replace("m=audio 40004 RTP/AVP 0\r\na=sendrecv\r\n", "");
    let refused = server.post_sdp(&format!("/v1/compositions/{composition}/participants"), &video_only)?;
    ensure!(refused.status == 415, "a video-only offer to an audio-only composition: {refused:?}");
    for index in 1..SILENT_CALLERS {
        server.add_participant(&composition, &seat_offer(index, false))?;
    }

    // Three talkers over three codecs: 18 participants in all, more than a grid holds.
    let tones = [500.0, 700.0, 1100.0];
    let codecs = [AudioCodec::Opus, AudioCodec::Pcmu, AudioCodec::G722];
    let mut callers = Vec::new();
    for (index, (tone, codec)) in tones.iter().zip(codecs).enumerate() {
        let mut caller = Caller::new(CallerSpec {
            video: None,
            audio: Some(codec),
            ..CallerSpec::new(&format!("talker{index}"), Colour::White, *tone)
        })?;
        caller.join(server, &composition)?;
        callers.push(caller);
    }
    let view = server.get(&format!("/v1/compositions/{composition}"))?.json()?;
    let count = view["participants"].as_array().map(Vec::len).unwrap_or(0);
    ensure!(count == SILENT_CALLERS + tones.len(), "{count} participants listed");

    sleep(Duration::from_secs(3));
    let from = SystemTime::now();
    sleep(Duration::from_secs(2));
    let until = SystemTime::now();

    for (index, caller) in callers.iter_mut().enumerate() {
        let name = caller.spec.name.clone();
        let recording = caller.stop_receiver()?;
        let audio = audio_samples(&recording).with_context(|| format!("decoding {name}'s return audio"))?;
        let levels = audio.tone_levels_db(from, until, &tones)?;
        eprintln!("{name}: tone levels {levels:?} dBFS (own: {} Hz)", tones[index]);
        for (other, level) in levels.iter().enumerate().filter(|(i, _)| *i != index) {
            ensure!(*level > -30.0, "{name} hears {} Hz only at {level:.1} dBFS: {levels:?}", tones[other]);
            ensure!(levels[index] <= level - 30.0, "{name} hears itself at {:.1} dBFS: {levels:?}", levels[index]);
        }
    }
    Ok(())
}
