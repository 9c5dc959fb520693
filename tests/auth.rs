//! A locked API, against the real binary: bearer tokens (admin from the environment,
//! per-composition tokens signed by the server), their scopes, the routes that stay open,
//! and `serve` refusing to open an API without a token beyond loopback.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use crate::common::*;
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-for-the-tests-0123";
const SMALL: &str = r#"{"video": {"width": 320, "height": 180, "fps": 15}}"#;

fn locked_server() -> Result<Server> {
    Server::start_with_options(ServerOptions {
        env: &[("TUTTI_API_TOKENS", &format!("{ADMIN},another-admin-token-4567"))],
        token: Some(ADMIN),
        ..ServerOptions::default()
    })
}

fn small() -> Value {
    serde_json::from_str(SMALL).unwrap()
}

fn error_code(response: &HttpResponse) -> String {
    response.json().ok().and_then(|b| b["error"]["code"].as_str().map(str::to_owned)).unwrap_or_default()
}

/// A request with `token` (or none).
fn call(server: &Server, method: Method, path: &str, token: Option<&str>) -> Result<HttpResponse> {
    let request = server.anonymous(method, path);
    server.send(match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    })
}

fn issue_token(server: &Server, composition: &str, body: Value) -> Result<String> {
    let issued = server.post_json(&format!("/v1/compositions/{composition}/tokens"), &body)?;
    ensure!(issued.status == 201, "issuing a token: {issued:?}");
    let body = issued.json()?;
    ensure!(body["composition_id"] == composition, "{body}");
    ensure!(body["expires_at"].as_str().is_some_and(|t| t.starts_with("20")), "{body}");
    Ok(body["token"].as_str().context("token")?.to_owned())
}

#[test]
fn without_a_valid_token_the_api_answers_401_and_open_routes_stay_open() -> Result<()> {
    let server = locked_server()?;
    let anonymous = call(&server, Method::GET, "/v1/compositions", None)?;
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    assert_eq!(error_code(&anonymous), "unauthorized");
    assert_eq!(anonymous.header(WWW_AUTHENTICATE.as_str()), Some("Bearer realm=\"tutti\""));

    let wrong = call(&server, Method::GET, "/v1/compositions", Some("admin-token-for-the-tests-0124"))?;
    assert_eq!(wrong.status, 401, "{wrong:?}");
    assert_eq!(wrong.header(WWW_AUTHENTICATE.as_str()), Some("Bearer realm=\"tutti\", error=\"invalid_token\""));
    let basic = server.send(server.anonymous(Method::GET, "/v1/compositions").basic_auth("admin", Some(ADMIN)))?;
    assert_eq!(basic.status, 401, "only Bearer: {basic:?}");
    let create = server.send(server.anonymous(Method::POST, "/v1/compositions").json(&small()))?;
    assert_eq!(create.status, 401, "{create:?}");

    // Health, the page and its assets (and HLS: players cannot send headers) need no token.
    assert_eq!(call(&server, Method::GET, "/healthz", None)?.status, 200);
    assert_eq!(call(&server, Method::GET, "/", None)?.status, 200);
    assert_eq!(call(&server, Method::GET, "/assets/app.js", None)?.status, 200);
    let hls = call(&server, Method::GET, "/hls/nope/nope/index.m3u8", None)?;
    assert_eq!((hls.status, error_code(&hls)), (404, "not_found".into()), "open, and simply not there");

    // Either admin token can do everything; none of this left a composition behind.
    let listed = call(&server, Method::GET, "/v1/compositions", Some("another-admin-token-4567"))?;
    assert_eq!(listed.status, 200, "{listed:?}");
    assert_eq!(listed.json()?["compositions"], json!([]));
    let id = server.create_composition(&small())?;
    assert_eq!(server.get(&format!("/v1/compositions/{id}"))?.status, 200);
    assert_eq!(server.delete(&format!("/v1/compositions/{id}"))?.status, 204);
    Ok(())
}

#[test]
fn a_composition_token_reaches_its_composition_and_nothing_else() -> Result<()> {
    let server = locked_server()?;
    let mine = server.create_composition(&small())?;
    let theirs = server.create_composition(&small())?;
    let token = issue_token(&server, &mine, json!({"ttl_secs": 600}))?;
    let with_token = |method: Method, path: &str| call(&server, method, path, Some(&token));

    assert_eq!(with_token(Method::GET, &format!("/v1/compositions/{mine}"))?.status, 200);
    let listed = with_token(Method::GET, "/v1/compositions")?.json()?;
    let ids: Vec<&str> = listed["compositions"].as_array().context("list")?.iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(ids, [mine.as_str()], "the list shows its own composition only");

    for (method, path) in [
        (Method::GET, format!("/v1/compositions/{theirs}")),
        (Method::DELETE, format!("/v1/compositions/{theirs}")),
        (Method::GET, format!("/v1/compositions/{theirs}/participants")),
        (Method::POST, "/v1/compositions".to_owned()),
        (Method::POST, format!("/v1/compositions/{mine}/tokens")),
        (Method::POST, format!("/v1/compositions/{theirs}/tokens")),
    ] {
        let refused = with_token(method.clone(), &path)?;
        assert_eq!((refused.status, error_code(&refused)), (403, "forbidden".into()), "{method} {path}: {refused:?}");
    }
    assert_eq!(server.get(&format!("/v1/compositions/{theirs}"))?.status, 200, "the other composition is untouched");

    // Its event stream is its own composition's, whatever it asks for.
    let watch_theirs = with_token(Method::GET, &format!("/v1/events?composition={theirs}"))?;
    assert_eq!((watch_theirs.status, error_code(&watch_theirs)), (403, "forbidden".into()));
    let stream = server
        .anonymous(Method::GET, "/v1/events")
        .bearer_auth(&token)
        .header("Last-Event-ID", "0")
        .timeout(Duration::from_secs(2))
        .send()?;
    assert_eq!(stream.status(), 200);
    // The replay comes at once; the read then ends at the timeout.
    let seen: Vec<Value> = std::io::BufRead::lines(std::io::BufReader::new(stream))
        .map_while(|line| line.ok())
        .filter_map(|line| line.strip_prefix("data:").map(|d| serde_json::from_str(d.trim()).unwrap()))
        .collect();
    assert!(seen.iter().any(|e| e["type"] == "composition_created"), "its own creation: {seen:?}");
    assert!(seen.iter().all(|e| e["composition"] == mine.as_str()), "another composition's event: {seen:?}");

    // A producer with the token runs its composition: a caller in, out, then the end.
    let caller = Caller::new(CallerSpec { video: None, ..CallerSpec::new("producer", Colour::Red, 500.0) })?;
    let joined = server.send(
        server
            .anonymous(Method::POST, &format!("/v1/compositions/{mine}/participants"))
            .bearer_auth(&token)
            .header(CONTENT_TYPE, "application/sdp")
            .body(caller.offer()),
    )?;
    assert_eq!(joined.status, 201, "{joined:?}");
    let location = joined.header("location").context("Location")?.to_owned();
    assert_eq!(with_token(Method::GET, &location)?.status, 200);
    assert_eq!(with_token(Method::DELETE, &location)?.status, 204);
    assert_eq!(with_token(Method::DELETE, &format!("/v1/compositions/{mine}"))?.status, 204);
    Ok(())
}

#[test]
fn an_expired_or_foreign_composition_token_is_refused() -> Result<()> {
    let server = locked_server()?;
    let id = server.create_composition(&small())?;
    let short_lived = issue_token(&server, &id, json!({"ttl_secs": 1}))?;
    let path = format!("/v1/compositions/{id}");
    assert_eq!(call(&server, Method::GET, &path, Some(&short_lived))?.status, 200);
    // The expiry is in whole seconds: two of them are always past it.
    std::thread::sleep(Duration::from_secs(2));
    let expired = call(&server, Method::GET, &path, Some(&short_lived))?;
    assert_eq!(expired.status, 401, "{expired:?}");
    assert!(expired.json()?["error"]["message"].as_str().is_some_and(|m| m.contains("expired")), "{expired:?}");

    // A token signed by another server (its own random secret) is unknown here.
    let other = locked_server()?;
    let other_id = other.create_composition(&small())?;
    let foreign = issue_token(&other, &other_id, json!({}))?;
    assert_eq!(call(&server, Method::GET, "/v1/compositions", Some(&foreign))?.status, 401);

    let no_such = server.post_json("/v1/compositions/nope/tokens", &json!({}))?;
    assert_eq!((no_such.status, error_code(&no_such)), (404, "composition_not_found".into()));
    let bad_ttl = server.post_json(&format!("/v1/compositions/{id}/tokens"), &json!({"ttl_secs": 0}))?;
    assert_eq!((bad_ttl.status, error_code(&bad_ttl)), (400, "invalid_ttl".into()));
    Ok(())
}

#[test]
fn a_configured_secret_keeps_composition_tokens_valid_across_restarts() -> Result<()> {
    let options = || ServerOptions {
        env: &[("TUTTI_API_TOKENS", ADMIN), ("TUTTI_TOKEN_SECRET", "a-secret-the-tests-share")],
        token: Some(ADMIN),
        ..ServerOptions::default()
    };
    let first = Server::start_with_options(options())?;
    let id = first.create_composition(&small())?;
    let token = issue_token(&first, &id, json!({}))?;
    drop(first);
    let second = Server::start_with_options(options())?;
    // Still a valid token for that composition: it is simply gone (404, not 401).
    let gone = call(&second, Method::GET, &format!("/v1/compositions/{id}"), Some(&token))?;
    assert_eq!((gone.status, error_code(&gone)), (404, "composition_not_found".into()), "{gone:?}");
    Ok(())
}

#[test]
fn serve_refuses_an_open_api_beyond_loopback_unless_told_it_is_on_purpose() -> Result<()> {
    let port = free_tcp_port()?;
    let mut open = Command::new(env!("CARGO_BIN_EXE_tutti"));
    open.args(["serve", "--http", &format!("0.0.0.0:{port}"), "--rtmp-listen", "127.0.0.1:0"]).env_remove("TUTTI_API_TOKENS");
    let refused = run_bounded(open, Duration::from_secs(20))?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    for hint in ["TUTTI_API_TOKENS", "api_tokens", "--insecure-no-auth", &format!("0.0.0.0:{port}")] {
        assert!(stderr.contains(hint), "the message names {hint}: {stderr}");
    }

    let on_purpose =
        Server::start_with_options(ServerOptions { http_host: Some("0.0.0.0"), args: &["--insecure-no-auth"], ..Default::default() })?;
    assert_eq!(call(&on_purpose, Method::GET, "/v1/compositions", None)?.status, 200, "open, as asked");
    drop(on_purpose);

    let with_token = Server::start_with_options(ServerOptions {
        http_host: Some("0.0.0.0"),
        env: &[("TUTTI_API_TOKENS", ADMIN)],
        token: Some(ADMIN),
        ..Default::default()
    })?;
    assert_eq!(call(&with_token, Method::GET, "/v1/compositions", None)?.status, 401);
    assert_eq!(with_token.get("/v1/compositions")?.status, 200);
    Ok(())
}
