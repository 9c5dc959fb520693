//! A SIP call's life after the answer, played by SIPp (`tests/sipp/`)
//! against a real Tutti, judged by the RTP that reaches the ports its
//! offers point to (owned by the test) and by the API and events.
//!
//! Run alone: `flock /tmp/tutti-media.lock cargo test --test integration sip_callflow:: -- --test-threads=1`

use anyhow::{Result, ensure};
use crate::common::*;
use serde_json::json;
use std::time::{Duration, SystemTime};

/// How long each phase of the call lasts (SIPp's default pause).
const PHASE: Duration = Duration::from_millis(2000);
/// After an answer, how long packets already on their way may still arrive.
const IN_FLIGHT: Duration = Duration::from_millis(200);
/// After an answer, how long until media must flow at full rate.
const SETTLE: Duration = Duration::from_millis(500);
/// What "flowing" means over a window: half the rates Tutti sends at
/// (PCMU every 20 ms: 50 packets/s; the composite at 30 fps: 30 packets/s or more).
const AUDIO_PACKETS_PER_SEC: f64 = 25.0;
const VIDEO_PACKETS_PER_SEC: f64 = 15.0;
/// How soon a keyframe must follow a `picture_fast_update` (or a resume).
const KEYFRAME_WITHIN: Duration = Duration::from_millis(500);

fn count(arrivals: &[RtpArrival], from: SystemTime, to: SystemTime) -> usize {
    arrivals.iter().filter(|a| a.at >= from && a.at < to).count()
}

fn first_idr_after(arrivals: &[RtpArrival], from: SystemTime) -> Option<Duration> {
    arrivals.iter().find(|a| a.starts_h264_idr && a.at >= from).and_then(|a| a.at.duration_since(from).ok())
}

fn flows(arrivals: &[RtpArrival], from: SystemTime, to: SystemTime, per_sec: f64) -> bool {
    let secs = to.duration_since(from).unwrap_or_default().as_secs_f64();
    count(arrivals, from, to) as f64 >= per_sec * secs
}

/// A room system joins, holds (`a=sendonly`), resumes, moves its media to
/// other ports, offers a codec change by UPDATE, asks twice for a keyframe
/// by INFO, and hangs up. Tutti answers the hold `recvonly` and sends it
/// nothing while keeping it listed and placed, sends again on resume
/// starting with a keyframe, follows the move at once, refuses the codec
/// change 488 with the call going on unchanged, and answers each
/// `picture_fast_update` with an IDR within half a second, though its
/// keyframe interval is 10 s.
#[test]
fn a_room_system_holds_resumes_moves_and_asks_for_keyframes() -> Result<()> {
    let server = Server::start()?;
    let id = server.create_composition(&json!({
        "name": "callflow", "video": {"width": 320, "height": 180, "fps": 30, "keyframe_interval_secs": 10}
    }))?;
    let mut events = EventStream::open(&server, &format!("?composition={id}"), None)?;
    let [audio1, video1, audio2, video2] = [(); 4].map(|_| MediaPort::bind(false));
    let (audio1, video1, audio2, video2) = (audio1?, video1?, audio2?, video2?);
    let keys = [
        ("audio1", audio1.rtp_port.to_string()),
        ("video1", video1.rtp_port.to_string()),
        ("audio2", audio2.rtp_port.to_string()),
        ("video2", video2.rtp_port.to_string()),
    ];
    let sipp = Sipp::call(&server, "call_life.xml", "callflow", &keys, PHASE, Duration::from_secs(40))?;

    // On hold: still listed, still placed, shown as held.
    let held = events.wait_for(Duration::from_secs(10), "participant_held", is("participant_held"))?;
    let pid = held["participant"].as_str().unwrap_or_default().to_string();
    let view = server.get(&format!("/v1/compositions/{id}/participants/{pid}"))?.json()?;
    ensure!(view["on_hold"] == true, "{view}");
    ensure!(view["transport"] == "sip" && view["rect"].is_object(), "a held caller keeps its cell: {view}");
    ensure!(view["audio"]["direction"] == "recvonly" && view["video"]["direction"] == "recvonly", "{view}");
    events.wait_for(PHASE * 2, "participant_resumed", is("participant_resumed"))?;
    let view = server.get(&format!("/v1/compositions/{id}/participants/{pid}"))?.json()?;
    ensure!(view["on_hold"] == false && view["audio"]["direction"] == "sendrecv", "{view}");

    let run = sipp.finish()?;
    events.wait_for(Duration::from_secs(5), "participant_left", is("participant_left"))?;
    let (a1, v1, a2, v2) = (audio1.rtp_arrivals(), video1.rtp_arrivals(), audio2.rtp_arrivals(), video2.rtp_arrivals());
    let report = |what: &str| format!("{what}\nsteps: {:?}\n{}", run.steps, server.logs());

    // Before the hold, both ways at the first ports.
    let (answered, hold_sent) = (run.at("answered")?, run.at("hold_sent")?);
    ensure!(flows(&a1, answered + SETTLE, hold_sent, AUDIO_PACKETS_PER_SEC), "{}", report("no audio before the hold"));
    ensure!(flows(&v1, answered + SETTLE, hold_sent, VIDEO_PACKETS_PER_SEC), "{}", report("no video before the hold"));

    // On hold: nothing at all.
    let (held, resume_sent) = (run.at("held")?, run.at("resume_sent")?);
    let during_hold = (count(&a1, held + IN_FLIGHT, resume_sent), count(&v1, held + IN_FLIGHT, resume_sent));
    ensure!(during_hold == (0, 0), "{}", report(&format!("Tutti sent a held caller (audio, video) packets: {during_hold:?}")));

    // Resumed: again, from a keyframe.
    let (resumed, move_sent) = (run.at("resumed")?, run.at("move_sent")?);
    ensure!(flows(&a1, resumed + SETTLE, move_sent, AUDIO_PACKETS_PER_SEC), "{}", report("no audio after resuming"));
    ensure!(flows(&v1, resumed + SETTLE, move_sent, VIDEO_PACKETS_PER_SEC), "{}", report("no video after resuming"));
    let resume_keyframe = first_idr_after(&v1, resume_sent);
    ensure!(resume_keyframe.is_some_and(|d| d <= KEYFRAME_WITHIN), "{}", report(&format!("keyframe after resuming: {resume_keyframe:?}")));

    // Moved: only the new ports, through the refused codec change and to the end.
    let (moved, bye_sent) = (run.at("moved")?, run.at("bye_sent")?);
    let at_old = (count(&a1, moved + IN_FLIGHT, bye_sent), count(&v1, moved + IN_FLIGHT, bye_sent));
    ensure!(at_old == (0, 0), "{}", report(&format!("RTP still reached the old ports after the move: {at_old:?}")));
    ensure!(flows(&a2, moved + SETTLE, bye_sent, AUDIO_PACKETS_PER_SEC), "{}", report("no audio at the new port"));
    ensure!(flows(&v2, moved + SETTLE, bye_sent, VIDEO_PACKETS_PER_SEC), "{}", report("no video at the new port"));
    ensure!(run.messages.contains("SIP/2.0 488") && run.messages.contains("changing the audio codec"), "the codec change was not refused");

    // Each picture_fast_update: an IDR soon after (two 1.5 s apart cannot both be the 10 s schedule's).
    for step in ["fast_update_1", "fast_update_2"] {
        let delay = first_idr_after(&v2, run.at(step)?);
        println!("{step}: IDR after {delay:?}");
        ensure!(delay.is_some_and(|d| d <= KEYFRAME_WITHIN), "{}", report(&format!("{step}: first IDR after {delay:?}")));
    }
    println!("keyframe after resume: {resume_keyframe:?}");
    Ok(())
}

/// A PBX's late offer: an INVITE without SDP. Tutti offers every codec in
/// its 200 OK, the PBX answers in the ACK (PCMU, H.264), and only then does
/// the participant join, with the answer's codecs, and media flow to the
/// answer's ports.
#[test]
fn a_late_offer_is_answered_in_the_ack_and_media_flows() -> Result<()> {
    let server = Server::start()?;
    let id = server.create_composition(&json!({"name": "late", "video": {"width": 320, "height": 180, "fps": 30}}))?;
    let mut events = EventStream::open(&server, &format!("?composition={id}"), None)?;
    let (audio, video) = (MediaPort::bind(false)?, MediaPort::bind(false)?);
    let keys = [("audio1", audio.rtp_port.to_string()), ("video1", video.rtp_port.to_string())];
    let sipp = Sipp::call(&server, "late_offer.xml", "late", &keys, PHASE, Duration::from_secs(20))?;

    let joined = events.wait_for(Duration::from_secs(10), "participant_joined", is("participant_joined"))?;
    let pid = joined["participant"].as_str().unwrap_or_default().to_string();
    let view = server.get(&format!("/v1/compositions/{id}/participants/{pid}"))?.json()?;
    ensure!(view["name"] == "PBX" && view["transport"] == "sip", "{view}");
    ensure!(view["audio"]["codec"] == "pcmu" && view["video"]["codec"] == "h264" && view["video"]["packetization_mode"] == 1, "{view}");

    let run = sipp.finish()?;
    events.wait_for(Duration::from_secs(5), "participant_left", is("participant_left"))?;
    let (answered, bye_sent) = (run.at("answered")?, run.at("bye_sent")?);
    let (a, v) = (audio.rtp_arrivals(), video.rtp_arrivals());
    let report = |what: &str| format!("{what}\nsteps: {:?}\n{}", run.steps, server.logs());
    ensure!(flows(&a, answered + SETTLE, bye_sent, AUDIO_PACKETS_PER_SEC), "{}", report("no audio after the ACK's answer"));
    ensure!(flows(&v, answered + SETTLE, bye_sent, VIDEO_PACKETS_PER_SEC), "{}", report("no video after the ACK's answer"));
    let first = a.first().map(|p| p.at.duration_since(answered).unwrap_or_default());
    println!("late offer: first audio {first:?} after the ACK");
    Ok(())
}

/// A late offer whose ACK carries no answer: Tutti hangs up with a BYE (the
/// scenario fails without it), nobody joins, and the ports its offer held
/// are free again.
#[test]
fn a_late_offer_without_an_answer_ends_with_a_bye_and_frees_its_ports() -> Result<()> {
    let server = Server::start()?;
    let id = server.create_composition(&json!({"name": "late", "video": {"width": 320, "height": 180, "fps": 30}}))?;
    let mut events = EventStream::open(&server, &format!("?composition={id}"), None)?;
    let sipp = Sipp::call(&server, "late_offer_no_answer.xml", "late", &[], PHASE, Duration::from_secs(20))?;
    sipp.finish()?;
    wait_until("the offer's ports to be free", Duration::from_secs(2), || Ok(server.bound_rtp_ports().is_empty()))?;
    let participants = server.get(&format!("/v1/compositions/{id}/participants"))?.json()?;
    ensure!(participants["participants"].as_array().is_some_and(|p| p.is_empty()), "{participants}");
    let seen = events.drain()?;
    ensure!(!event_types(seen).iter().any(|t| t == "participant_joined"), "{seen:?}");
    Ok(())
}

/// Dials `sip:room4b@` a SIPp UAS playing `scenario`: the composition, the
/// events, the UAS and the `POST` answer.
fn dial_out(server: &Server, scenario: &str, keys: &[(&str, String)]) -> Result<(String, EventStream, Sipp, serde_json::Value)> {
    let id = server.create_composition(&json!({"name": "dial", "video": {"width": 320, "height": 180, "fps": 30}}))?;
    let events = EventStream::open(server, &format!("?composition={id}"), None)?;
    let port = free_sip_port()?;
    let uas = Sipp::answer(scenario, port, keys, PHASE, Duration::from_secs(40))?;
    // SIPp binds its port in its first tens of milliseconds; an INVITE
    // before that is retransmitted (T1 = 500 ms), so no wait is needed.
    let response = server.post_json(
        &format!("/v1/compositions/{id}/participants"),
        &json!({"name": "Room 4B", "sip_uri": format!("sip:room4b@127.0.0.1:{port}")}),
    )?;
    ensure!(response.status == 201, "POST dial-out: {} {}", response.status, response.body);
    let participant = response.json()?;
    ensure!(participant["state"] == "calling" && participant["transport"] == "sip", "{participant}");
    Ok((id, events, uas, participant))
}

/// A dial-out that is answered: `calling`, then `ringing` on the 180, then
/// the participant joins with the callee's answer and Tutti's media flows
/// to the ports it names; a DELETE hangs up with a BYE (the UAS waits for it).
#[test]
fn a_dial_out_rings_is_answered_and_hangs_up_on_delete() -> Result<()> {
    let server = Server::start()?;
    let (audio, video) = (MediaPort::bind(false)?, MediaPort::bind(false)?);
    let keys = [("audio1", audio.rtp_port.to_string()), ("video1", video.rtp_port.to_string())];
    let (id, mut events, uas, participant) = dial_out(&server, "dial_out_answer.xml", &keys)?;
    let pid = participant["id"].as_str().unwrap_or_default().to_string();
    events.wait_for(Duration::from_secs(10), "participant_ringing", is("participant_ringing"))?;
    let joined = events.wait_for(Duration::from_secs(10), "participant_joined", is("participant_joined"))?;
    ensure!(joined["participant"] == pid.as_str(), "{joined}");
    let answered = SystemTime::now();
    std::thread::sleep(Duration::from_millis(1500));
    let view = server.get(&format!("/v1/compositions/{id}/participants/{pid}"))?.json()?;
    ensure!(view["audio"]["codec"] == "pcmu" && view["video"]["codec"] == "h264" && view["rect"].is_object(), "{view}");
    let (a, v) = (audio.rtp_arrivals(), video.rtp_arrivals());
    let now = SystemTime::now();
    ensure!(flows(&a, answered + SETTLE, now, AUDIO_PACKETS_PER_SEC), "no audio to the callee\n{}", server.logs());
    ensure!(flows(&v, answered + SETTLE, now, VIDEO_PACKETS_PER_SEC), "no video to the callee\n{}", server.logs());
    let deleted = server.delete(&format!("/v1/compositions/{id}/participants/{pid}"))?;
    ensure!(deleted.status == 204 || deleted.status == 202, "DELETE: {}", deleted.status);
    uas.finish()?; // It ends only on Tutti's BYE.
    Ok(())
}

/// A dial-out to a busy room system: the participant stays listed as
/// `failed` with the SIP status in `last_error`, and `participant_failed` says it.
#[test]
fn a_busy_dial_out_fails_with_486() -> Result<()> {
    let server = Server::start()?;
    let (id, mut events, uas, participant) = dial_out(&server, "dial_out_busy.xml", &[])?;
    let pid = participant["id"].as_str().unwrap_or_default().to_string();
    let failed = events.wait_for(Duration::from_secs(10), "participant_failed", is("participant_failed"))?;
    ensure!(failed["reason"].as_str().is_some_and(|r| r.starts_with("486")), "{failed}");
    uas.finish()?;
    let view = server.get(&format!("/v1/compositions/{id}/participants/{pid}"))?.json()?;
    ensure!(view["state"] == "failed" && view["last_error"].as_str().is_some_and(|e| e.contains("486")), "{view}");
    ensure!(server.delete(&format!("/v1/compositions/{id}/participants/{pid}"))?.status == 204);
    Ok(())
}

/// A DELETE while the callee rings sends a CANCEL (the UAS waits for it and
/// answers 487), and the ports of Tutti's offer are free again.
#[test]
fn deleting_a_ringing_dial_out_cancels_it() -> Result<()> {
    let server = Server::start()?;
    let (id, mut events, uas, participant) = dial_out(&server, "dial_out_cancel.xml", &[])?;
    let pid = participant["id"].as_str().unwrap_or_default().to_string();
    events.wait_for(Duration::from_secs(10), "participant_ringing", is("participant_ringing"))?;
    ensure!(server.get(&format!("/v1/compositions/{id}/participants/{pid}"))?.json()?["state"] == "ringing");
    ensure!(server.delete(&format!("/v1/compositions/{id}/participants/{pid}"))?.status == 204);
    uas.finish()?; // It ends only on Tutti's CANCEL.
    wait_until("the offer's ports to be free", Duration::from_secs(2), || Ok(server.bound_rtp_ports().is_empty()))?;
    Ok(())
}

/// A dial-out through `--sip-outbound-proxy` to a URI whose host is
/// unreachable (TEST-NET): the proxy challenges with 407, Tutti answers with
/// `--sip-username`/`--sip-password` (SIPp checks the digest; wrong
/// credentials would get 403 and a failed participant), and the call is answered.
#[test]
fn a_dial_out_goes_through_the_outbound_proxy_and_answers_its_digest_challenge() -> Result<()> {
    let proxy = free_sip_port()?;
    let proxy_address = format!("127.0.0.1:{proxy}");
    let server = Server::start_with(&["--sip-outbound-proxy", &proxy_address, "--sip-username", "tutti", "--sip-password", "secret"])?;
    let id = server.create_composition(&json!({"name": "dial", "video": {"width": 320, "height": 180, "fps": 30}}))?;
    let mut events = EventStream::open(&server, &format!("?composition={id}"), None)?;
    let (audio, video) = (MediaPort::bind(false)?, MediaPort::bind(false)?);
    let keys = [("audio1", audio.rtp_port.to_string()), ("video1", video.rtp_port.to_string())];
    let uas = Sipp::answer("dial_out_proxy_auth.xml", proxy, &keys, PHASE, Duration::from_secs(40))?;
    let response = server.post_json(&format!("/v1/compositions/{id}/participants"), &json!({"sip_uri": "sip:room4b@192.0.2.10:5060"}))?;
    ensure!(response.status == 201, "{} {}", response.status, response.body);
    let pid = response.json()?["id"].as_str().unwrap_or_default().to_string();
    let outcome = events.wait_for(Duration::from_secs(10), "participant_joined or participant_failed", |e| {
        is("participant_joined")(e) || is("participant_failed")(e)
    })?;
    ensure!(outcome["type"] == "participant_joined", "{outcome}\n{}", server.logs());
    wait_until("RTP at the callee", Duration::from_secs(3), || Ok(audio.rtp_packets() > 10 && video.rtp_packets() > 10))?;
    ensure!(server.delete(&format!("/v1/compositions/{id}/participants/{pid}"))?.status != 404);
    uas.finish()?;
    Ok(())
}
