//! What a node takes before it says no, against the real binary: retried POSTs with an
//! `Idempotency-Key` (one participant, one composition, whatever the retries), the body
//! size (413), the join rate (429), the node's counts and its CPU budget (503), each with
//! `Retry-After` where waiting helps, and room again once something is deleted.


use anyhow::{Context, Result};
use crate::common::*;
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, LOCATION, RETRY_AFTER};
use serde_json::{Value, json};

fn small() -> Value {
    json!({"video": {"width": 320, "height": 180, "fps": 15}})
}

fn error_code(response: &HttpResponse) -> String {
    response.json().ok().and_then(|b| b["error"]["code"].as_str().map(str::to_owned)).unwrap_or_default()
}

fn audio_caller(name: &str) -> Result<Caller> {
    Caller::new(CallerSpec { video: None, ..CallerSpec::new(name, Colour::Red, 500.0) })
}

fn video_caller(name: &str) -> Result<Caller> {
    Caller::new(CallerSpec::new(name, Colour::Blue, 700.0))
}

fn join(server: &Server, composition: &str, caller: &Caller) -> Result<HttpResponse> {
    server.post_sdp(&format!("/v1/compositions/{composition}/participants"), &caller.offer())
}

fn participants(server: &Server, composition: &str) -> Result<usize> {
    let listed = server.get(&format!("/v1/compositions/{composition}/participants"))?.json()?;
    Ok(listed["participants"].as_array().context("participants")?.len())
}

fn with_key(server: &Server, path: &str, key: &str) -> reqwest::blocking::RequestBuilder {
    server.request(Method::POST, path).header("Idempotency-Key", key)
}

/// Writes a POST of `sdp` to `path` on a raw connection and closes it without reading a byte
/// of the answer.
fn hang_up_after_sending(server: &Server, path: &str, key: &str, sdp: &str) -> Result<()> {
    use std::io::Write;
    let authority = server.base_url.trim_start_matches("http://");
    let mut connection = std::net::TcpStream::connect(authority).context("connecting to the API")?;
    write!(
        connection,
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/sdp\r\nIdempotency-Key: {key}\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )?;
    connection.shutdown(std::net::Shutdown::Both).context("hanging up")
}

#[test]
fn a_retried_join_with_an_idempotency_key_gets_the_first_answer_and_makes_one_participant() -> Result<()> {
    let server = Server::start()?;
    let id = server.create_composition(&small())?;
    let caller = audio_caller("retry")?;
    let path = format!("/v1/compositions/{id}/participants");
    let post = |key: &str, offer: &str| {
        server.send(with_key(&server, &path, key).header(CONTENT_TYPE, "application/sdp").body(offer.to_owned()))
    };
    let first = post("join-1", &caller.offer())?;
    assert_eq!(first.status, 201, "{first:?}");
    let retry = post("join-1", &caller.offer())?;
    assert_eq!(retry.status, 201, "{retry:?}");
    assert_eq!(retry.header(LOCATION.as_str()), first.header(LOCATION.as_str()), "the same participant");
    assert_eq!(retry.body, first.body, "the same SDP answer, byte for byte");
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(first.header("idempotent-replayed"), None);
    assert_eq!(participants(&server, &id)?, 1);

    let reused = post("join-1", &audio_caller("other")?.offer())?;
    assert_eq!((reused.status, error_code(&reused)), (422, "idempotency_key_reused".into()), "{reused:?}");
    let fresh = post("join-2", &audio_caller("second")?.offer())?;
    assert_eq!(fresh.status, 201, "a new key is a new join");
    assert_eq!(participants(&server, &id)?, 2);
    Ok(())
}

#[test]
fn a_join_whose_client_timed_out_is_finished_and_its_retry_gets_that_participant() -> Result<()> {
    let server = Server::start()?;
    let id = server.create_composition(&small())?;
    let caller = audio_caller("impatient")?;
    let path = format!("/v1/compositions/{id}/participants");
    let key = "join-after-timeout";
    // Hangs up as soon as the request is sent, as a platform whose timeout fired would; the
    // close reaches the server during the join or just after it, and either way the retry
    // must find that one participant. A client timeout of a few milliseconds raced the join
    // instead, which an audio-only join sometimes won (it failed CI).
    hang_up_after_sending(&server, &path, key, &caller.offer())?;
    let retry = server.send(with_key(&server, &path, key).header(CONTENT_TYPE, "application/sdp").body(caller.offer()))?;
    assert_eq!(retry.status, 201, "{retry:?}");
    let listed = server.get(&path)?.json()?;
    let ids: Vec<&str> = listed["participants"].as_array().context("participants")?.iter().filter_map(|p| p["id"].as_str()).collect();
    assert_eq!(ids.len(), 1, "one participant for the try and its retry: {listed}");
    assert!(retry.header(LOCATION.as_str()).is_some_and(|l| l.ends_with(ids[0])), "{retry:?}");
    Ok(())
}

#[test]
fn concurrent_retries_of_a_create_wait_for_the_first_and_make_one_composition() -> Result<()> {
    let server = Server::start()?;
    let answers: Vec<HttpResponse> = std::thread::scope(|scope| {
        let posts: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| server.send(with_key(&server, "/v1/compositions", "create-1").json(&small()))))
            .collect();
        posts.into_iter().map(|p| p.join().expect("no panic")).collect::<Result<_>>()
    })?;
    let ids: Vec<String> = answers.iter().map(|a| a.json().map(|b| b["id"].to_string())).collect::<Result<_>>()?;
    assert!(answers.iter().all(|a| a.status == 201), "{answers:?}");
    assert!(ids.iter().all(|id| *id == ids[0]), "one composition for every retry: {ids:?}");
    assert_eq!(answers.iter().filter(|a| a.header("idempotent-replayed").is_none()).count(), 1, "one ran, two replayed");
    let listed = server.get("/v1/compositions")?.json()?;
    assert_eq!(listed["compositions"].as_array().context("list")?.len(), 1);
    Ok(())
}

#[test]
fn a_body_over_the_limit_gets_413_in_the_api_error_shape() -> Result<()> {
    let server = Server::start()?;
    let two_megabytes = vec![b' '; 2 * 1024 * 1024];
    let declared = server.send(
        server.request(Method::POST, "/v1/compositions").header(CONTENT_TYPE, "application/json").body(two_megabytes.clone()),
    )?;
    assert_eq!((declared.status, error_code(&declared)), (413, "payload_too_large".into()), "{declared:?}");
    // Chunked, without a Content-Length: cut off while it is read.
    let chunked = reqwest::blocking::Body::new(std::io::Cursor::new(two_megabytes));
    let streamed = server.send(server.request(Method::POST, "/v1/compositions").header(CONTENT_TYPE, "application/json").body(chunked))?;
    assert_eq!((streamed.status, error_code(&streamed)), (413, "payload_too_large".into()), "{streamed:?}");
    let listed = server.get("/v1/compositions")?.json()?;
    assert_eq!(listed["compositions"], json!([]));
    Ok(())
}

#[test]
fn a_burst_of_joins_beyond_the_join_rate_gets_429_with_retry_after() -> Result<()> {
    let server = Server::start_with(&["--join-rate", "0.2", "--join-burst", "2"])?;
    let id = server.create_composition(&json!({"audio_only": true}))?;
    let callers: Vec<Caller> = (0..3).map(|i| audio_caller(&format!("burst{i}"))).collect::<Result<_>>()?;
    assert_eq!(join(&server, &id, &callers[0])?.status, 201);
    assert_eq!(join(&server, &id, &callers[1])?.status, 201);
    let refused = join(&server, &id, &callers[2])?;
    assert_eq!((refused.status, error_code(&refused)), (429, "too_many_joins".into()), "{refused:?}");
    // 0.2 joins per second: the next one in at most five seconds.
    let wait: u64 = refused.header(RETRY_AFTER.as_str()).context("Retry-After")?.parse()?;
    assert!((1..=5).contains(&wait), "Retry-After: {wait}");
    assert_eq!(participants(&server, &id)?, 2);
    Ok(())
}

#[test]
fn a_node_at_its_cpu_budget_answers_503_until_a_delete_makes_room() -> Result<()> {
    // A 320x180 15 fps composition costs 0.6 × 1/32 ≈ 0.02 cores, a video caller 0.10:
    // a budget of 0.25 takes the composition and two callers, not a third.
    let server = Server::start_with(&["--cpu-budget", "0.25", "--cost-video-caller", "0.1"])?;
    let id = server.create_composition(&small())?;
    let callers: Vec<Caller> = (0..3).map(|i| video_caller(&format!("cost{i}"))).collect::<Result<_>>()?;
    let first = join(&server, &id, &callers[0])?;
    assert_eq!(first.status, 201, "{first:?}");
    assert_eq!(join(&server, &id, &callers[1])?.status, 201);
    let health = server.get("/healthz")?.json()?;
    assert_eq!((health["cpu_committed_cores"].as_f64(), health["cpu_budget_cores"].as_f64()), (Some(0.22), Some(0.25)), "{health}");

    let refused = join(&server, &id, &callers[2])?;
    assert_eq!((refused.status, error_code(&refused)), (503, "over_capacity".into()), "{refused:?}");
    assert!(refused.header(RETRY_AFTER.as_str()).is_some_and(|s| s.parse::<u64>().is_ok()), "{refused:?}");
    let hd = server.post_json("/v1/compositions", &json!({"video": {"width": 1280, "height": 720, "fps": 30}}))?;
    assert_eq!((hd.status, error_code(&hd)), (503, "over_capacity".into()), "{hd:?}");
    assert_eq!(participants(&server, &id)?, 2);

    let location = first.header(LOCATION.as_str()).context("Location")?;
    assert!(matches!(server.delete(location)?.status, 202 | 204));
    assert_eq!(join(&server, &id, &callers[2])?.status, 201, "room again after a DELETE");
    Ok(())
}

#[test]
fn a_node_at_its_composition_count_answers_503_until_a_delete_makes_room() -> Result<()> {
    let server = Server::start_with(&["--max-compositions", "1", "--max-participants", "1"])?;
    let id = server.create_composition(&small())?;
    let refused = server.post_json("/v1/compositions", &small())?;
    assert_eq!((refused.status, error_code(&refused)), (503, "node_full".into()), "{refused:?}");
    assert!(refused.header(RETRY_AFTER.as_str()).is_some(), "{refused:?}");

    assert_eq!(join(&server, &id, &audio_caller("one")?)?.status, 201);
    let second = join(&server, &id, &audio_caller("two")?)?;
    assert_eq!((second.status, error_code(&second)), (503, "node_full".into()), "{second:?}");

    assert!(matches!(server.delete(&format!("/v1/compositions/{id}"))?.status, 202 | 204));
    server.create_composition(&small())?;
    Ok(())
}
