//! The web pages: at `/` every composition with its participants and outputs, and its HLS
//! output playing; at `/join/{composition_id}` the guest page, which joins over WebRTC. The files of `assets/` are compiled in, so `tutti` serves them from any
//! working directory and a deployment stays one binary.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const JOIN_HTML: &str = include_str!("../assets/join.html");
const HTML: &str = "text/html; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// What `/assets/{path}` serves: path, media type, contents.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("app.js", JAVASCRIPT, include_bytes!("../assets/app.js")),
    ("join.js", JAVASCRIPT, include_bytes!("../assets/join.js")),
    ("style.css", "text/css; charset=utf-8", include_bytes!("../assets/style.css")),
    ("vendor/hls.min.js", JAVASCRIPT, include_bytes!("../assets/vendor/hls.min.js")),
    ("vendor/hls.js-LICENSE", "text/plain; charset=utf-8", include_bytes!("../assets/vendor/hls.js-LICENSE")),
];

/// Short, because the files change only with the binary and an upgrade should show up soon.
const CACHE_CONTROL: &str = "public, max-age=60";

/// Only this server's scripts, API and playlists. `blob:` is how hls.js hands the video its
/// Media Source and starts its transmuxing worker.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; media-src 'self' blob:; worker-src 'self' blob:";
/// The guest page plays camera and peer-connection streams (`srcObject`), and talks only to this server.
const JOIN_CONTENT_SECURITY_POLICY: &str = "default-src 'self'; media-src 'self' blob: mediastream:";

/// `GET /`, `GET /join/{composition_id}` and `GET /assets/{*path}`. Stateless, so it merges
/// into the API's router; the guest page finds its composition in its own address.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/", get(index)).route("/join/{id}", get(join)).route("/assets/{*path}", get(asset))
}

async fn join() -> impl IntoResponse {
    ([(header::CONTENT_SECURITY_POLICY, JOIN_CONTENT_SECURITY_POLICY)], file(HTML, JOIN_HTML.as_bytes()))
}

async fn index() -> impl IntoResponse {
    ([(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY)], file(HTML, INDEX_HTML.as_bytes()))
}

async fn asset(Path(path): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, ..)| *name == path) {
        Some(&(_, content_type, body)) => file(content_type, body),
        None => {
            // The API's error shape; `api::ApiError` cannot be built outside its module.
            let body = json!({ "error": { "code": "not_found", "message": format!("no asset {path:?}") } });
            (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
        }
    }
}

fn file(content_type: &'static str, body: &'static [u8]) -> Response {
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, CACHE_CONTROL),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    (headers, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_pages_reference_is_embedded() {
        for (page, html, least) in [("index.html", INDEX_HTML, 3), ("join.html", JOIN_HTML, 2)] {
            let referenced: Vec<&str> = html
                .split("\"/assets/")
                .skip(1)
                .map(|rest| &rest[..rest.find('"').expect("a closing quote")])
                .collect();
            assert!(referenced.len() >= least, "{page}: {referenced:?}");
            for path in referenced {
                assert!(ASSETS.iter().any(|(name, ..)| *name == path), "{page} references /assets/{path}, which is not embedded");
            }
        }
    }
}
