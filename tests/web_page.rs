//! The web page at `/` in a real browser: headless Chromium, driven by chromedriver over
//! WebDriver, loads the page from `tutti serve` and is judged by its DOM.
//!
//! ```text
//!   test ──WebDriver (HTTP+JSON)──▶ chromedriver ──▶ headless Chromium ──page, API, HLS──▶ tutti
//!   test ──REST: compositions, participants; callers' RTP─────────────────────────────────▶ tutti
//! ```
//!
//! Why WebDriver rather than `chromium --dump-dom`: a DOM dump is one snapshot taken when a
//! virtual-time budget runs out, and virtual time does not run media playback. Here the page
//! runs in real time while the test polls it, and the protocol needs nothing beyond the reqwest
//! and serde_json the harness already uses.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use crate::common::{Browser, Caller, CallerSpec, Colour, Server, ServerOptions};

const CANVAS: (u64, u64) = (640, 360);
/// The page refreshes every 2 s; a change shows up within one or two refreshes.
const LIST_TIMEOUT: Duration = Duration::from_secs(8);
/// From the page's first load to 2 s of played video: the HLS output writes its first
/// segments, a player that found no playlist yet retries, hls.js buffers.
const PLAYBACK_TIMEOUT: Duration = Duration::from_secs(20);
/// How much video the player must play, in media seconds.
const PLAYED: f64 = 2.0;

/// The page's card for composition `arguments[0]`: its title and participants, or null.
const CARD: &str = r#"
const card = [...document.querySelectorAll("article")].find((a) => a.dataset.compositionId === arguments[0]);
return card && {
  title: card.querySelector("h2").textContent,
  participants: [...card.querySelectorAll("li[data-participant-id]")].map((li) =>
    [li.querySelector(".name").textContent, li.querySelector(".state").textContent]),
};"#;

/// The player of composition `arguments[0]` as its `<output>` reports it, or null. The first call
/// remembers the `<video>`; `same_video` says whether later calls still find that one.
const PLAYER: &str = r#"
const output = [...document.querySelectorAll("output")].find((o) => o.dataset.composition === arguments[0]);
if (!output) return null;
const video = output.parentElement.querySelector("video");
window.firstVideo ??= video;
const { state, engine, width, height, time } = output.dataset;
return {
  state, engine, text: output.textContent,
  width: Number(width), height: Number(height), time: Number(time),
  same_video: video === window.firstVideo,
  refreshes: Number(document.getElementById("compositions").dataset.refreshes),
};"#;

#[test]
fn page_lists_compositions_with_their_participants() -> Result<()> {
    let server = Server::start()?;
    let browser = Browser::start()?;
    browser.open(&server.url("/?player=hls"))?;

    // Created after the page loaded: it has to arrive with a refresh, not a reload.
    let id = server.create_composition(&json!({"name": "Room 4B", "video": video()}))?;
    // Offers only, no senders: the participants stay `connecting`, and no caller processes run.
    let callers = [
        Caller::new(CallerSpec::new("alice", Colour::Red, 500.0))?,
        Caller::new(CallerSpec::new("bob", Colour::Blue, 700.0))?,
    ];
    for (caller, name) in callers.iter().zip(["Alice", "Bob"]) {
        let path = format!("/v1/compositions/{id}/participants");
        let response = server.post_json(&path, &json!({"name": name, "sdp": caller.offer()}))?;
        ensure!(response.status == 201, "adding {name}: {response:?}");
    }

    let expected = json!({"title": "Room 4B", "participants": [["Alice", "connecting"], ["Bob", "connecting"]]});
    browser.wait_for("Room 4B with Alice and Bob connecting", LIST_TIMEOUT, CARD, &id, |card| *card == expected)?;

    let deleted = server.delete(&format!("/v1/compositions/{id}"))?;
    ensure!(deleted.status == 204, "deleting Room 4B: {deleted:?}");
    browser.wait_for("Room 4B to leave the page", LIST_TIMEOUT, CARD, &id, Value::is_null)?;
    Ok(())
}

/// Whether the page shows its token form, and the token this tab keeps.
const TOKEN_FORM: &str = r#"
return { shown: !document.getElementById("token-form").hidden, kept: sessionStorage.getItem("tutti-api-token") };"#;

/// Types `arguments[0]` into the token form and submits it, as a person would.
const ENTER_TOKEN: &str = r#"
document.getElementById("token").value = arguments[0];
document.getElementById("token-form").requestSubmit();
return true;"#;

#[test]
fn page_asks_for_a_token_when_the_api_needs_one_and_then_lists_with_it() -> Result<()> {
    const ADMIN: &str = "web-page-admin-token-0123";
    let server = Server::start_with_options(ServerOptions {
        env: &[("TUTTI_API_TOKENS", ADMIN)],
        token: Some(ADMIN),
        ..ServerOptions::default()
    })?;
    let id = server.create_composition(&json!({"name": "Locked room", "video": video()}))?;
    let browser = Browser::start()?;
    browser.open(&server.url("/?player=hls"))?;
    browser.wait_for("the token form", LIST_TIMEOUT, TOKEN_FORM, "", |f| f["shown"] == true)?;
    ensure!(browser.execute(CARD, &id)?.is_null(), "nothing listed without a token");

    browser.execute(ENTER_TOKEN, "not-the-token-at-all")?;
    browser.wait_for("a wrong token refused", LIST_TIMEOUT, TOKEN_FORM, "", |f| f["shown"] == true && f["kept"].is_null())?;

    browser.execute(ENTER_TOKEN, ADMIN)?;
    let expected = json!({"title": "Locked room", "participants": []});
    browser.wait_for("Locked room listed with the token", LIST_TIMEOUT, CARD, &id, |card| *card == expected)?;
    let form = browser.execute(TOKEN_FORM, "")?;
    ensure!(form == json!({"shown": false, "kept": ADMIN}), "the form hides and the tab keeps the token: {form}");
    Ok(())
}

#[test]
fn page_plays_the_hls_output() -> Result<()> {
    let server = Server::start()?;
    let response = server
        .post_json("/v1/compositions", &json!({"name": "Live", "video": video(), "outputs": [{"kind": "hls"}]}))?;
    let composition = response.json()?;
    let rejected_outputs =
        composition["error"]["message"].as_str().is_some_and(|m| m.contains("unknown field `outputs`"));
    if composition.get("outputs").is_none() && (response.status == 201 || rejected_outputs) {
        eprintln!(
            "SKIPPED: this server has no live outputs yet, so no HLS to play (POST answered {}: {})",
            response.status, response.body
        );
        return Ok(());
    }
    ensure!(response.status == 201, "creating a composition with an HLS output: {response:?}");
    let id = composition["id"].as_str().context("a composition id")?;
    let hls = composition["outputs"].as_array().and_then(|outputs| outputs.iter().find(|o| o["kind"] == "hls"));
    let hls = hls.with_context(|| format!("no HLS output: {composition}"))?;
    let playlist = format!("/hls/{id}/{}/index.m3u8", hls["id"].as_str().unwrap_or_default());
    ensure!(hls["playlist_url"] == playlist, "the HLS output should be at {playlist}: {composition}");
    // After a timeout, whether the server has the playlist tells a page bug from a server one.
    let server_side = || match server.get(&playlist) {
        Ok(response) if response.status == 200 => format!("GET {playlist} answers 200"),
        Ok(response) => format!("GET {playlist} answers {}\n{}", response.status, server.logs()),
        Err(e) => format!("GET {playlist}: {e:#}\n{}", server.logs()),
    };
    // The page opens before the output has written a segment, as a viewer waiting for the
    // show would: the player finds no playlist at first and has to retry.
    let browser = Browser::start()?;
    let opened = Instant::now();
    browser.open(&server.url("/?player=hls"))?;
    let mut red = Caller::new(CallerSpec::new("red", Colour::Red, 500.0))?;
    let mut blue = Caller::new(CallerSpec::new("blue", Colour::Blue, 700.0))?;
    red.join(&server, id)?;
    blue.join(&server, id)?;
    let started = browser
        .wait_for("the player to start playing", PLAYBACK_TIMEOUT, PLAYER, id, |p| p["state"] == "playing")
        .with_context(server_side)?;
    let time_to_play = opened.elapsed();
    let (start_time, start_refreshes) = (number(&started["time"]), number(&started["refreshes"]));
    // A short stall ("waiting") is fine: a stream that has just started has little to buffer.
    let played = browser
        .wait_for(
            &format!("{PLAYED} s of video played, a list refresh meanwhile, and playback going on"),
            PLAYBACK_TIMEOUT,
            PLAYER,
            id,
            |p| {
                number(&p["time"]) >= start_time + PLAYED
                    && number(&p["refreshes"]) > start_refreshes
                    && p["state"] == "playing"
            },
        )
        .with_context(server_side)?;
    eprintln!("playing {time_to_play:.1?} after the page opened; {PLAYED} s of video later: {played}");
    ensure!(played["same_video"] == true, "a refresh replaced the playing video: {played}");
    ensure!(played["engine"] == "hls.js", "Chromium should play through the vendored hls.js: {played}");
    ensure!(
        (number(&played["width"]), number(&played["height"])) == (CANVAS.0 as f64, CANVAS.1 as f64),
        "the video should be the canvas size {CANVAS:?}: {played}"
    );
    Ok(())
}

#[test]
fn page_and_assets_are_served_with_their_types_and_unknown_assets_get_a_json_404() -> Result<()> {
    let server = Server::start()?;
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/style.css", "text/css; charset=utf-8"),
        ("/assets/vendor/hls.min.js", "text/javascript; charset=utf-8"),
    ] {
        let response = server.get(path)?;
        ensure!(response.status == 200 && !response.body.is_empty(), "GET {path}: {}", response.status);
        ensure!(response.header("content-type") == Some(content_type), "GET {path}: {:?}", response.headers);
        ensure!(
            response.header("cache-control").is_some_and(|c| c.contains("max-age")),
            "GET {path}: {:?}",
            response.headers
        );
    }
    let response = server.get("/assets/nope.js")?;
    ensure!(response.status == 404, "GET /assets/nope.js: {response:?}");
    ensure!(response.json()?["error"]["code"] == "not_found", "GET /assets/nope.js: {}", response.body);
    Ok(())
}

fn video() -> Value {
    json!({"width": CANVAS.0, "height": CANVAS.1, "fps": 30})
}

fn number(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}
