//! The REST API's answers to bad input, against the real engine and real
//! GStreamer pipelines (the router is served on a free port in-process).
//! Every error is JSON `{"error": {"code", "message"}}` with the right status,
//! and none of them disturbs a caller already in the composition.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use tutti::config::Config;
use tutti::engine::{Engine, EngineHandle, Services};
use tutti::media::profiles::Profiles;
use tutti::ports::PortRange;
use tutti::webrtc::WebRtcServer;

use crate::common::webrtc_offer;

struct Api {
    base: String,
    client: reqwest::Client,
    engine: EngineHandle,
}

/// A free even port with its neighbour free too, for a one-pair RTP range.
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let probe = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = probe.local_addr().unwrap().port() & !1;
        drop(probe);
        if port < 65000
            && UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
            && UdpSocket::bind((Ipv4Addr::LOCALHOST, port + 1)).is_ok()
        {
            return port;
        }
    }
    panic!("no free UDP port pair on loopback");
}

async fn start(rtp_pairs: u16) -> Api {
    start_with(rtp_pairs, None).await
}

/// An engine with a WebRTC server on a free loopback port, or none.
async fn start_with(rtp_pairs: u16, webrtc: Option<Arc<WebRtcServer>>) -> Api {
    gstreamer::init().unwrap();
    let first = free_port_pair();
    let config = Config {
        rtp_ports: PortRange { first, last: first + rtp_pairs * 2 - 1 },
        rtp_bind: Ipv4Addr::LOCALHOST.into(),
        // Outside the source tree: the conflict check records a file.
        recordings_dir: std::env::temp_dir().join(format!("tutti-api-test-recordings-{}", std::process::id())),
        ..Config::default()
    };
    let profiles = Profiles::load(None).unwrap();
    let events = tutti::events::EventBus::new();
    let services = Services {
        runtime: tokio::runtime::Handle::current(),
        rtmps_trust: tutti::rtmp::RtmpsTrust::load(None).unwrap(),
        rtmp_server: None,
        webrtc,
        events: events.clone(),
    };
    let guards = tutti::guards::ApiGuards::new(&config);
    let engine = Engine::start(config, profiles, services);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let telemetry = tutti::api::Telemetry { events, webhooks: Default::default(), sip: Default::default() };
    let app = tutti::api::app(engine.clone(), std::env::temp_dir().join("tutti-api-test-hls"), guards, telemetry);
    tokio::spawn(axum::serve(listener, app).into_future());
    Api { base, client: reqwest::Client::new(), engine }
}

impl Api {
    async fn send(&self, method: reqwest::Method, path: &str, content_type: Option<&str>, body: &str) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let mut request = self.client.request(method, format!("{}{path}", self.base)).body(body.to_string());
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let response = request.send().await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        (status, headers, response.text().await.unwrap())
    }

    async fn post_json(&self, path: &str, body: &str) -> (StatusCode, Value) {
        let (status, _, text) = self.send(reqwest::Method::POST, path, Some("application/json"), body).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (status, _, text) = self.send(reqwest::Method::GET, path, None, "").await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn create(&self) -> String {
        let (status, body) = self.post_json("/v1/compositions", r#"{"video":{"width":320,"height":180,"fps":15}}"#).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_string()
    }
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_else(|| panic!("not an error body: {body}"))
}

const AUDIO_ONLY_OFFER: &str =
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 45000 RTP/AVP 0\r\na=sendrecv\r\n";

#[tokio::test]
async fn composition_lifecycle_and_location_headers() {
    let api = start(4).await;
    assert_eq!(api.get("/healthz").await.0, StatusCode::OK);
    let (status, headers, text) = api.send(reqwest::Method::POST, "/v1/compositions", Some("application/json"), r#"{"name":"Show"}"#).await;
    assert_eq!(status, StatusCode::CREATED);
    let body: Value = serde_json::from_str(&text).unwrap();
    let id = body["id"].as_str().unwrap();
    assert_eq!(headers["location"], format!("/v1/compositions/{id}").as_str());
    assert_eq!(body["video"], json!({"width": 1280, "height": 720, "fps": 30, "bitrate_kbps": 2500, "keyframe_interval_secs": 2}));
    assert_eq!(body["outputs"], json!([]));
    assert_eq!(body["broadcast"], json!({"video_encoders": 1, "audio_encoders": 1, "encoding": false}), "nothing takes the encode yet");
    assert_eq!(body["audio"], json!({"sample_rate": 48000, "channels": 2}));
    assert_eq!(
        body["layout"],
        json!({"kind": "grid", "fit": "contain", "hide_without_video": false, "gap": 0, "labels": true,
            "highlight_speaker": false, "background": null, "overlays": []})
    );
    assert_eq!(body["participants"], json!([]));
    assert_eq!(body["name"], "Show");
    assert!(body["created_at"].as_str().unwrap().starts_with("20"));

    let (_, list) = api.get("/v1/compositions").await;
    assert_eq!(list["compositions"].as_array().unwrap().len(), 1);

    let (status, headers, answer) =
        api.send(reqwest::Method::POST, &format!("/v1/compositions/{id}/participants"), Some("application/sdp"), AUDIO_ONLY_OFFER).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(headers["content-type"], "application/sdp");
    let location = headers["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(&format!("/v1/compositions/{id}/participants/")));
    assert!(answer.contains("m=audio ") && answer.contains("RTP/AVP 0"), "{answer}");

    let (status, participant) = api.get(&location).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(participant["audio"]["codec"], "pcmu");
    assert!(participant["audio"].get("packetization_mode").is_none(), "{participant}");
    assert_eq!(participant["audio"]["packets_received"], 0);
    assert_eq!(participant["audio"]["packets_lost"], 0);
    assert_eq!(participant["audio"]["packets_rejected"], 0);
    assert_eq!(participant["state"], "connecting");
    assert!(participant["video"].is_null());

    let (status, _, _) = api.send(reqwest::Method::DELETE, &location, None, "").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(api.get(&location).await.0, StatusCode::NOT_FOUND);

    let (status, _, _) = api.send(reqwest::Method::DELETE, &format!("/v1/compositions/{id}"), None, "").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = api.get(&format!("/v1/compositions/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "composition_not_found");
    api.engine.shutdown().await;
}

#[tokio::test]
async fn json_participant_gets_a_json_answer_with_its_name() {
    let api = start(2).await;
    let id = api.create().await;
    let body = json!({"name": "Room 4B", "sdp": AUDIO_ONLY_OFFER}).to_string();
    let (status, participant) = api.post_json(&format!("/v1/compositions/{id}/participants"), &body).await;
    assert_eq!(status, StatusCode::CREATED, "{participant}");
    assert_eq!(participant["name"], "Room 4B");
    assert!(participant["sdp"].as_str().unwrap().starts_with("v=0\r\n"));
    assert!(participant["id"].is_string());
    api.engine.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_disturbs_no_one() {
    let api = start(1).await;
    let id = api.create().await;
    let participants = format!("/v1/compositions/{id}/participants");
    let (status, bystander) = api.post_json(&participants, &json!({"name": "Bystander", "sdp": AUDIO_ONLY_OFFER}).to_string()).await;
    assert_eq!(status, StatusCode::CREATED);

    // Malformed JSON, unknown fields, invalid values.
    let (status, body) = api.post_json("/v1/compositions", r#"{"video": {"width": 640,"#).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "invalid_json"));
    let (status, body) = api.post_json("/v1/compositions", r#"{"vidoe": {}}"#).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "invalid_json"));
    assert!(body["error"]["message"].as_str().unwrap().contains("vidoe"), "{body}");
    let (status, body) = api.post_json("/v1/compositions", r#"{"video": {"width": 641}}"#).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "invalid_composition"));
    assert!(body["error"]["message"].as_str().unwrap().contains("even"), "{body}");
    let (status, body) = api.post_json(&participants, r#"{"name": "no offer"}"#).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "invalid_json"));
    // An ingest Tutti does not take, and two ways of joining at once.
    let (status, body) = api.post_json(&participants, r#"{"ingest": "rist"}"#).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "unsupported_ingest"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("\"srt\""), "{body}");
    // A passphrase SRT cannot take, or given to a transport that has none.
    let (status, body) = api.post_json(&participants, r#"{"ingest": "srt", "passphrase": "123456789"}"#).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "invalid_passphrase"), "{body}");
    let (status, body) = api.post_json(&participants, r#"{"ingest": "rtmp", "passphrase": "1234567890"}"#).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "invalid_json"), "{body}");
    let (status, body) = api.post_json(&participants, &json!({"sdp": AUDIO_ONLY_OFFER, "ingest": "rtmp"}).to_string()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "invalid_json"), "{body}");
    // This engine runs without the embedded RTMP server.
    let (status, body) = api.post_json(&participants, r#"{"ingest": "rtmp"}"#).await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "rtmp_disabled"), "{body}");

    // Outputs that cannot be: a recording escaping its directory, a non-RTMP URL, an unknown kind.
    let outputs = format!("/v1/compositions/{id}/outputs");
    for bad in [
        r#"{"kind": "record", "path": "../../etc/passwd.mkv"}"#,
        r#"{"kind": "rtmp", "url": "http://example.com/live/key"}"#,
    ] {
        let (status, body) = api.post_json(&outputs, bad).await;
        assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "invalid_output"), "{bad}: {body}");
    }
    let (status, body) = api.post_json(&outputs, r#"{"kind": "ftp"}"#).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "invalid_json"), "{body}");
    let (status, body) = api.post_json("/v1/compositions", r#"{"outputs": [{"kind": "record", "path": "/abs.mkv"}]}"#).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "invalid_composition"), "{body}");
    let (status, body) = api.get(&format!("{outputs}/nope")).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "output_not_found"));
    // Two outputs writing the same file: the second is a conflict, naming the first.
    let (status, first) = api.post_json(&outputs, r#"{"kind": "record", "path": "same.mkv"}"#).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, body) = api.post_json(&outputs, r#"{"kind": "record", "path": "./same.mkv"}"#).await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "output_conflict"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains(first["id"].as_str().unwrap()), "{body}");

    // Malformed SDP, as SDP and inside JSON.
    let (status, _, text) = api.send(reqwest::Method::POST, &participants, Some("application/sdp"), "hello, I am not SDP").await;
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "malformed_sdp"));
    let no_c = AUDIO_ONLY_OFFER.replace("c=IN IP4 127.0.0.1\r\n", "");
    let (status, body) = api.post_json(&participants, &json!({"sdp": no_c}).to_string()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "malformed_sdp"));
    assert!(body["error"]["message"].as_str().unwrap().contains("c="), "{body}");

    // Nothing in common: 415 listing what Tutti supports.
    let g729 = AUDIO_ONLY_OFFER.replace("RTP/AVP 0", "RTP/AVP 18\r\na=rtpmap:18 G729/8000");
    let (status, _, text) = api.send(reqwest::Method::POST, &participants, Some("application/sdp"), &g729).await;
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((status, error_code(&body)), (StatusCode::UNSUPPORTED_MEDIA_TYPE, "no_common_codec"));
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("G729") && message.contains("opus") && message.contains("VP8"), "{message}");

    // Wrong content type.
    let (status, _, text) = api.send(reqwest::Method::POST, &participants, Some("text/plain"), AUDIO_ONLY_OFFER).await;
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((status, error_code(&body)), (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_content_type"));

    // Unknown ids.
    let (status, body) = api.get("/v1/compositions/nope").await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "composition_not_found"));
    let (status, body) = api.post_json("/v1/compositions/nope/participants", &json!({"sdp": AUDIO_ONLY_OFFER}).to_string()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "composition_not_found"));
    let (status, body) = api.get(&format!("{participants}/nope")).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "participant_not_found"));
    let (status, _, text) = api.send(reqwest::Method::DELETE, &format!("{participants}/nope"), None, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    let (status, body) = api.get("/v2/whatever").await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"));

    // The one RTP port pair is taken by the bystander: 503.
    let (status, _, text) = api.send(reqwest::Method::POST, &participants, Some("application/sdp"), AUDIO_ONLY_OFFER).await;
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((status, error_code(&body)), (StatusCode::SERVICE_UNAVAILABLE, "ports_exhausted"));

    // The bystander is still there, untouched.
    let (status, composition) = api.get(&format!("/v1/compositions/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&Value> = composition["participants"].as_array().unwrap().iter().map(|p| &p["id"]).collect();
    assert_eq!(ids, vec![&bystander["id"]]);

    // Deleting the composition gives its ports back.
    api.send(reqwest::Method::DELETE, &format!("/v1/compositions/{id}"), None, "").await;
    let again = api.create().await;
    let (status, _, text) =
        api.send(reqwest::Method::POST, &format!("/v1/compositions/{again}/participants"), Some("application/sdp"), AUDIO_ONLY_OFFER).await;
    assert_eq!(status, StatusCode::CREATED, "ports were not released: {text}");
    api.engine.shutdown().await;
}

/// Live control refuses what it cannot do, by name, and changes nothing.
#[tokio::test]
async fn bad_layouts_and_participant_updates_are_refused_by_name() {
    let api = start(2).await;
    let id = api.create().await;
    let put = |body: &'static str| {
        let path = format!("/v1/compositions/{id}/layout");
        let api = &api;
        async move {
            let (status, _, text) = api.send(reqwest::Method::PUT, &path, Some("application/json"), body).await;
            (status, serde_json::from_str::<Value>(&text).unwrap_or(Value::Null))
        }
    };
    for (body, fragment) in [
        (r#"{"kind": "grid", "strip": "right"}"#, "`strip` is not an option of the grid layout"),
        (r#"{"kind": "pip", "size": 2}"#, "size 2 is outside"),
        (r#"{"kind": "mosaic"}"#, "mosaic"),
        (r#"{"background": "../../x.png"}"#, "plain file name"),
    ] {
        let (status, error) = put(body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
        assert!(error["error"]["message"].as_str().unwrap().contains(fragment), "{body}: {error}");
    }
    let (_, composition) = api.get(&format!("/v1/compositions/{id}")).await;
    assert_eq!(composition["layout"]["kind"], "grid", "a refused layout changes nothing");
    let (status, layout) = put(r#"{"kind": "speaker", "strip": "right", "transition": {"kind": "fade", "ms": 200}}"#).await;
    assert_eq!(status, StatusCode::OK, "{layout}");
    assert_eq!((layout["kind"].as_str(), layout["strip"].as_str(), layout.get("transition")), (Some("speaker"), Some("right"), None));
    assert_eq!(api.get(&format!("/v1/compositions/{id}/layout")).await.1, layout);

    let (status, joined) = api
        .post_json(&format!("/v1/compositions/{id}/participants"), &json!({"name": "Ann", "sdp": AUDIO_ONLY_OFFER}).to_string())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{joined}");
    let participant = format!("/v1/compositions/{id}/participants/{}", joined["id"].as_str().unwrap());
    let patch = |body: &'static str| {
        let (api, path) = (&api, participant.clone());
        async move {
            let (status, _, text) = api.send(reqwest::Method::PATCH, &path, Some("application/json"), body).await;
            (status, serde_json::from_str::<Value>(&text).unwrap_or(Value::Null))
        }
    };
    for (body, code) in [
        (r#"{"audio": {"volume": 5}}"#, "invalid_participant_update"),
        (r#"{"name": ""}"#, "invalid_participant_update"),
        (r#"{"audio": {"mute": true}}"#, "invalid_json"),
        (r#"{"deaf": "yes"}"#, "invalid_json"),
    ] {
        let (status, error) = patch(body).await;
        assert_eq!((status, error_code(&error)), (StatusCode::BAD_REQUEST, code), "{body}: {error}");
    }
    let (status, updated) = patch(r#"{"name": "Ann B", "audio": {"volume": 0.5}, "deaf": true}"#).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["name"], "Ann B");
    assert_eq!(
        updated["controls"],
        json!({"audio": {"muted": false, "volume": 0.5}, "video": {"muted": false, "hidden": false}, "deaf": true})
    );
    assert_eq!(api.get(&participant).await.1["controls"], updated["controls"]);
    let missing = format!("/v1/compositions/{id}/participants/nobody");
    let (status, _, _) = api.send(reqwest::Method::PATCH, &missing, Some("application/json"), "{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_webrtc_offer_makes_a_guest_and_bad_ones_are_refused_by_name() {
    let loopback = IpAddr::from(Ipv4Addr::LOCALHOST);
    let without = start(2).await;
    let id = without.create().await;
    let path = format!("/v1/compositions/{id}/participants");
    let (status, _, text) = without.send(reqwest::Method::POST, &path, Some("application/sdp"), &webrtc_offer("opus/48000/2", false, "sendrecv", true)).await;
    assert_eq!((status, error_code(&serde_json::from_str(&text).unwrap())), (StatusCode::CONFLICT, "webrtc_disabled"), "{text}");

    let server = Arc::new(WebRtcServer::start(SocketAddr::new(loopback, 0), loopback).unwrap());
    let api = start_with(2, Some(server.clone())).await;
    let id = api.create().await;
    let path = format!("/v1/compositions/{id}/participants");
    for (offer, expected) in [
        (webrtc_offer("opus/48000/2", false, "sendrecv", false), (StatusCode::BAD_REQUEST, "malformed_sdp")),
        (webrtc_offer("PCMU/8000", false, "sendrecv", true), (StatusCode::UNSUPPORTED_MEDIA_TYPE, "no_common_codec")),
    ] {
        let (status, _, text) = api.send(reqwest::Method::POST, &path, Some("application/sdp"), &offer).await;
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!((status, error_code(&body)), expected, "{text}");
    }
    assert_eq!(api.get(&path).await.1["participants"], json!([]), "a refused offer leaves nothing behind");

    // The same URL and answer shapes as an RTP caller's; the transport is read from the offer.
    let body = json!({"name": "Guest", "sdp": webrtc_offer("opus/48000/2", false, "sendrecv", true)}).to_string();
    let (status, answer) = api.post_json(&path, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!((answer["transport"].as_str(), answer["name"].as_str()), (Some("webrtc"), Some("Guest")), "{answer}");
    let sdp = answer["sdp"].as_str().unwrap();
    let candidate = format!("127.0.0.1 {} typ host", server.local_addr().port());
    for line in ["a=ice-lite", "a=fingerprint:sha-256 ", "UDP/TLS/RTP/SAVPF", &candidate] {
        assert!(sdp.contains(line), "the answer lacks {line:?}:\n{sdp}");
    }
    assert_eq!(server.peer_count(), 1);
    let guest = format!("{path}/{}", answer["id"].as_str().unwrap());
    let (status, _, _) = api.send(reqwest::Method::DELETE, &guest, None, "").await;
    assert!(status.is_success(), "DELETE answered {status}");
    assert_eq!(api.get(&path).await.1["participants"], json!([]));
    // Its peer is closed with it (BYE, close_notify), not left to time out.
    for _ in 0..50 {
        if server.peer_count() == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the deleted guest's peer is still open");
}
