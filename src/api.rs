//! The HTTP adapter: REST API under `/v1`, JSON in snake_case.
//! Handlers translate requests into engine commands and engine errors into
//! status codes with a JSON body `{"error": {"code", "message"}}`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::{Access, Auth};
use crate::guards::ApiGuards;
use crate::webrtc::OfferError;
use crate::media::MediaError;
use crate::engine::{CompositionView, DialRequest, EngineError, EngineHandle, JoinRequest, OutputView, ParticipantView, Removal};
use crate::events::EventBus;
use crate::events::webhook::WebhookStats;
use std::sync::Arc;
use crate::model::composition::CompositionConfig;
use crate::model::controls::ParticipantPatch;
use crate::model::layout::LayoutConfig;
use crate::model::output::OutputConfig;
use std::path::PathBuf;
use crate::model::ids::{CompositionId, OutputId, ParticipantId, ViewerId};
use crate::model::ingest::{IngestTransport, Passphrase};
use crate::model::sdp::SdpError;
use crate::model::signalling::Signalling;
use crate::sip::SipStats;

const SDP_CONTENT_TYPE: &str = "application/sdp";
/// When a full node may have room again: calls end and compositions stop within minutes.
const CAPACITY_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// What the API reports besides the engine's state: its events and how
/// their webhooks fare.
#[derive(Clone)]
pub struct Telemetry {
    pub events: EventBus,
    pub webhooks: Arc<WebhookStats>,
    /// Empty when SIP is off.
    pub sip: Arc<SipStats>,
}

pub fn app(engine: EngineHandle, hls_dir: PathBuf, guards: ApiGuards, telemetry: Telemetry) -> Router {
    let events = telemetry.events.clone();
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(move |engine: State<EngineHandle>| metrics(engine, telemetry.clone())))
        .route(
            "/v1/events",
            get(move |access, query, headers: HeaderMap| events_stream(events.clone(), access, query, headers)),
        )
        .route("/v1/compositions", get(list_compositions).post(create_composition))
        .route("/v1/compositions/{id}", get(get_composition).delete(delete_composition))
        .route("/v1/compositions/{id}/tokens", post(issue_composition_token))
        .route("/v1/compositions/{id}/participants", get(list_participants).post(add_participant))
        .route("/v1/compositions/{id}/participants/{pid}", get(get_participant).patch(update_participant).delete(remove_participant))
        .route("/v1/compositions/{id}/whip", post(add_whip))
        // No trickle ICE: Tutti is ICE-lite with its one candidate in the answer, so
        // PATCH gets 405, as RFC 9725 §4.3.1 allows.
        .route("/v1/compositions/{id}/whip/{pid}", delete(remove_participant))
        .route("/v1/compositions/{id}/whep", post(add_viewer))
        .route("/v1/compositions/{id}/whep/{vid}", delete(remove_viewer))
        .route("/v1/compositions/{id}/layout", get(get_layout).put(set_layout))
        .route("/v1/compositions/{id}/outputs", get(list_outputs).post(add_output))
        .route("/v1/compositions/{id}/outputs/{oid}", get(get_output).delete(remove_output))
        .route(
            "/hls/{id}/{oid}/{file}",
            get(move |path: Path<(String, String, String)>| serve_hls(hls_dir.clone(), path)),
        )
        .merge(crate::web::routes())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
        })
        .with_state(engine);
    guards.protect(routes)
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<std::time::Duration>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after: None }
    }

    /// Tells the client when to try again (`Retry-After`, whole seconds).
    pub(crate) fn retry_after(self, wait: std::time::Duration) -> ApiError {
        ApiError { retry_after: Some(wait), ..self }
    }

    fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(wait) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, crate::limits::retry_after_secs(wait).into());
        }
        response
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        let message = e.to_string();
        let (status, code) = match &e {
            EngineError::CompositionNotFound(_) => (StatusCode::NOT_FOUND, "composition_not_found"),
            EngineError::ParticipantNotFound(..) => (StatusCode::NOT_FOUND, "participant_not_found"),
            EngineError::ViewerNotFound(..) => (StatusCode::NOT_FOUND, "viewer_not_found"),
            EngineError::OutputNotFound(..) => (StatusCode::NOT_FOUND, "output_not_found"),
            EngineError::InvalidOutput(_) => (StatusCode::BAD_REQUEST, "invalid_output"),
            EngineError::InvalidConfig(_) => (StatusCode::BAD_REQUEST, "invalid_composition"),
            EngineError::InvalidPatch(_) => (StatusCode::BAD_REQUEST, "invalid_participant_update"),
            EngineError::InvalidLayout(_) => (StatusCode::BAD_REQUEST, "invalid_layout"),
            EngineError::MissingImage(_) => (StatusCode::BAD_REQUEST, "missing_image"),
            EngineError::Sdp(SdpError::Malformed(_)) => (StatusCode::BAD_REQUEST, "malformed_sdp"),
            EngineError::Sdp(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "no_common_codec"),
            EngineError::Renegotiation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unsupported_renegotiation"),
            EngineError::InvalidDialOut(_) => (StatusCode::BAD_REQUEST, "invalid_sip_uri"),
            EngineError::DialOutUnavailable => (StatusCode::CONFLICT, "sip_disabled"),
            EngineError::IngestUnavailable => (StatusCode::CONFLICT, "rtmp_disabled"),
            EngineError::WebRtcUnavailable => (StatusCode::CONFLICT, "webrtc_disabled"),
            EngineError::WebRtcOffer(OfferError::NoCodecWeTake { .. } | OfferError::NothingToExchange) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "no_common_codec")
            }
            EngineError::WebRtcOffer(OfferError::TooManyPeers(_)) => {
                return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "node_full", message).retry_after(CAPACITY_RETRY_AFTER);
            }
            EngineError::WebRtcOffer(OfferError::ServerStopped) => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            EngineError::WebRtcOffer(_) => (StatusCode::BAD_REQUEST, "malformed_sdp"),
            EngineError::NoSdpSession(_) => (StatusCode::CONFLICT, "not_an_rtp_participant"),
            EngineError::PortsExhausted(_) => (StatusCode::SERVICE_UNAVAILABLE, "ports_exhausted"),
            EngineError::CompositionFull(..) => (StatusCode::CONFLICT, "composition_full"),
            EngineError::OutputConflict(..) => (StatusCode::CONFLICT, "output_conflict"),
            EngineError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            EngineError::OverCapacity(_) => {
                return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "over_capacity", message).retry_after(CAPACITY_RETRY_AFTER);
            }
            EngineError::TooManyCompositions(_) | EngineError::TooManyParticipants(_) => {
                return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "node_full", message).retry_after(CAPACITY_RETRY_AFTER);
            }
            EngineError::Media(MediaError::StartTimeout { .. }) => {
                tracing::warn!("{message}");
                (StatusCode::SERVICE_UNAVAILABLE, "start_timeout")
            }
            EngineError::Media(_) => {
                // Internals stay in the log; the client learns only that it failed.
                tracing::error!("media error answering a request: {message}");
                return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "media_error", "the media pipeline failed; see the server log");
            }
        };
        ApiError::new(status, code, message)
    }
}

/// Parses a JSON body with our error shape; an empty body is `{}`.
fn json_body<T: for<'de> Deserialize<'de>>(headers: &HeaderMap, body: &Bytes) -> Result<T, ApiError> {
    // curl's `-d` labels a body form-urlencoded; treat it as the JSON it is.
    if let Some(content_type) = content_type(headers)
        && content_type != "application/json"
        && content_type != "application/x-www-form-urlencoded"
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_content_type",
            format!("expected application/json, got {content_type}"),
        ));
    }
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request("invalid_json", format!("invalid JSON body: {e}")))
}

/// The media type of the request, without parameters, lower-cased.
fn content_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
}

fn created<T: Serialize>(location: String, body: T) -> Response {
    with_location((StatusCode::CREATED, axum::Json(body)).into_response(), &location)
}

fn with_location(mut response: Response, location: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

async fn create_composition(State(engine): State<EngineHandle>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let config: CompositionConfig = json_body(&headers, &body)?;
    let view = engine.create_composition(config).await?;
    Ok(created(format!("/v1/compositions/{}", view.id), view))
}

#[derive(Serialize)]
struct CompositionList {
    compositions: Vec<CompositionView>,
}

/// Only the compositions the caller's token reaches.
async fn list_compositions(
    State(engine): State<EngineHandle>,
    Extension(access): Extension<Access>,
) -> Result<axum::Json<CompositionList>, ApiError> {
    let mut compositions = engine.list_compositions().await?;
    compositions.retain(|c| access.allows(&c.id));
    Ok(axum::Json(CompositionList { compositions }))
}

/// `{"ttl_secs": 3600}`, optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    #[serde(default)]
    ttl_secs: Option<u64>,
}

/// `POST /v1/compositions/{id}/tokens` (admin): a token for this composition only.
async fn issue_composition_token(
    State(engine): State<EngineHandle>,
    Extension(auth): Extension<std::sync::Arc<Auth>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: TokenRequest = json_body(&headers, &body)?;
    let composition = engine.composition(CompositionId::from(id)).await?.id;
    let issued = auth
        .issue(composition, request.ttl_secs, crate::auth::unix_now())
        .map_err(|e| ApiError::bad_request("invalid_ttl", e.to_string()))?;
    Ok((StatusCode::CREATED, axum::Json(issued)).into_response())
}

async fn get_composition(State(engine): State<EngineHandle>, Path(id): Path<String>) -> Result<axum::Json<CompositionView>, ApiError> {
    Ok(axum::Json(engine.composition(CompositionId::from(id)).await?))
}

/// How long `/healthz` waits for the engine before it calls it stuck.
const ENGINE_ANSWER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1);

/// 200 with the engine's own answer; 503 if the engine does not answer
/// within a second (a stuck engine is what this check exists to catch).
async fn healthz(State(engine): State<EngineHandle>) -> Response {
    match tokio::time::timeout(ENGINE_ANSWER_DEADLINE, engine.health()).await {
        Ok(Ok(health)) => axum::Json(health).into_response(),
        Ok(Err(e)) => ApiError::from(e).into_response(),
        Err(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "engine_unresponsive", "the engine did not answer within 1 s")
            .into_response(),
    }
}

/// Prometheus text format (see `metrics.rs`).
async fn metrics(State(engine): State<EngineHandle>, telemetry: Telemetry) -> Result<Response, ApiError> {
    let snapshot = match tokio::time::timeout(ENGINE_ANSWER_DEADLINE, engine.metrics()).await {
        Ok(snapshot) => snapshot?,
        Err(_) => return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "engine_unresponsive", "the engine did not answer within 1 s")),
    };
    let text = crate::metrics::render(&snapshot, telemetry.events.stats(), &telemetry.webhooks, &telemetry.sip);
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// Only this composition's events.
    composition: Option<String>,
}

/// Server-Sent Events, one per engine event: `id:` is its `seq`, `data:`
/// its JSON. A client reconnecting with `Last-Event-ID` first gets what it
/// missed (from the last [`crate::events::HISTORY`] events). A client too
/// slow to keep up is disconnected, to reconnect and catch up that way.
/// A composition token sees its own composition's events only.
async fn events_stream(
    events: EventBus,
    Extension(access): Extension<Access>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    use futures_util::stream::{self, StreamExt};
    use tokio::sync::broadcast::error::RecvError;

    let query = match query {
        Ok(Query(query)) => query,
        Err(e) => return ApiError::bad_request("invalid_query", format!("{e}; the one parameter is `composition`")).into_response(),
    };
    let after = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    let (replay, live) = events.subscribe(after);
    let live = stream::unfold(live, |mut live| async move {
        match live.recv().await {
            Ok(event) => Some((event, live)),
            Err(RecvError::Lagged(missed)) => {
                tracing::info!(missed, "an event stream client fell behind; disconnected so that it catches up");
                None
            }
            Err(RecvError::Closed) => None,
        }
    });
    let composition = match (query.composition.map(CompositionId::from), &access) {
        (Some(asked), access) if !access.allows(&asked) => {
            return ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this token may not watch that composition").into_response();
        }
        (asked, Access::Composition(own)) => asked.or_else(|| Some(own.clone())),
        (asked, Access::Admin) => asked,
    };
    let stream = stream::iter(replay)
        .chain(live)
        .filter(move |event| std::future::ready(composition.as_ref().is_none_or(|c| &event.composition == c)))
        .map(|event| {
            let data = serde_json::to_string(&*event).expect("events serialize");
            Ok::<_, std::convert::Infallible>(SseEvent::default().id(event.seq.to_string()).data(data))
        });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// 204 once the media is stopped and released; 202 when it is gone from the
/// API but its media is still stopping (it did not stop within 0.75 s).
fn removed(removal: Removal) -> StatusCode {
    match removal {
        Removal::Stopped => StatusCode::NO_CONTENT,
        Removal::Stopping => StatusCode::ACCEPTED,
    }
}

async fn delete_composition(State(engine): State<EngineHandle>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    Ok(removed(engine.delete_composition(CompositionId::from(id)).await?))
}

#[derive(Serialize)]
struct ParticipantList {
    participants: Vec<ParticipantView>,
}

async fn list_participants(State(engine): State<EngineHandle>, Path(id): Path<String>) -> Result<axum::Json<ParticipantList>, ApiError> {
    let composition = engine.composition(CompositionId::from(id)).await?;
    Ok(axum::Json(ParticipantList { participants: composition.participants }))
}

/// `{"name": "Room 4B", "sdp": "<offer>"}`, `{"name": "Room 4B", "sip_uri": "sip:room4b@pbx"}`,
/// `{"name": "Host", "ingest": "rtmp"}` or `{"name": "Host", "ingest": "srt", "passphrase": "…"}`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinBody {
    #[serde(default)]
    name: Option<String>,
    /// The caller's SDP offer (a plain RTP participant)…
    #[serde(default)]
    sdp: Option<String>,
    /// …or a SIP URI Tutti dials out to…
    #[serde(default)]
    sip_uri: Option<String>,
    /// …or `"rtmp"` or `"srt"`: a publisher (OBS, ffmpeg) with the stream key the answer gives.
    #[serde(default)]
    ingest: Option<String>,
    /// An SRT publisher's passphrase (SRT's own encryption), if it must give one.
    #[serde(default)]
    passphrase: Option<String>,
}

#[derive(Serialize)]
struct JoinedBody {
    #[serde(flatten)]
    participant: ParticipantView,
    sdp: String,
}

async fn add_participant(
    State(engine): State<EngineHandle>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let composition = CompositionId::from(id);
    if content_type(&headers).as_deref() == Some(SDP_CONTENT_TYPE) {
        let offer = sdp_offer(&headers, &body)?;
        let joined = engine.add_participant(composition.clone(), JoinRequest { name: None, offer, signalling: Signalling::Api }).await?;
        return Ok(sdp_created(&format!("/v1/compositions/{composition}/participants/{}", joined.participant.id), joined.answer));
    }
    let body: JoinBody = json_body(&headers, &body).map_err(|e| match e.status {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_content_type",
            "send the offer as application/sdp, or as application/json {\"name\", \"sdp\"}",
        ),
        _ => e,
    })?;
    let location = |pid: &ParticipantId| format!("/v1/compositions/{composition}/participants/{pid}");
    if body.passphrase.is_some() && body.ingest.as_deref() != Some("srt") {
        return Err(ApiError::bad_request("invalid_json", "\"passphrase\" is for \"ingest\": \"srt\" only"));
    }
    match (body.sdp, body.sip_uri, body.ingest.as_deref()) {
        (Some(offer), None, None) => {
            let joined = engine.add_participant(composition.clone(), JoinRequest { name: body.name, offer, signalling: Signalling::Api }).await?;
            Ok(created(location(&joined.participant.id), JoinedBody { participant: joined.participant, sdp: joined.answer }))
        }
        (None, Some(uri), None) => {
            let participant = engine.dial_out(composition.clone(), DialRequest { name: body.name, uri }).await?;
            Ok(created(location(&participant.id), participant))
        }
        (None, None, Some(ingest)) => {
            let transport = match ingest {
                "rtmp" => IngestTransport::Rtmp,
                "srt" => {
                    let passphrase = body.passphrase.as_deref().map(Passphrase::new).transpose();
                    IngestTransport::Srt { passphrase: passphrase.map_err(|e| ApiError::bad_request("invalid_passphrase", e))? }
                }
                other => return Err(ApiError::bad_request("unsupported_ingest", format!("ingest {other:?} is not available; give \"rtmp\" or \"srt\""))),
            };
            let participant = engine.add_publisher(composition.clone(), body.name, transport).await?;
            Ok(created(location(&participant.id), participant))
        }
        _ => Err(ApiError::bad_request(
            "invalid_json",
            "give one of \"sdp\" (an offer), \"sip_uri\" (a dial-out) or \"ingest\": \"rtmp\" or \"srt\" (a publisher)",
        )),
    }
}

async fn get_participant(
    State(engine): State<EngineHandle>,
    Path((id, pid)): Path<(String, String)>,
) -> Result<axum::Json<ParticipantView>, ApiError> {
    Ok(axum::Json(engine.participant(CompositionId::from(id), ParticipantId::from(pid)).await?))
}

/// `PATCH`: any of `name`, `audio.{muted,volume}`, `video.{muted,hidden}`, `deaf`; answers with the participant.
async fn update_participant(
    State(engine): State<EngineHandle>,
    Path((id, pid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<ParticipantView>, ApiError> {
    let patch: ParticipantPatch = json_body(&headers, &body)?;
    Ok(axum::Json(engine.update_participant(CompositionId::from(id), ParticipantId::from(pid), patch).await?))
}

async fn get_layout(State(engine): State<EngineHandle>, Path(id): Path<String>) -> Result<axum::Json<LayoutConfig>, ApiError> {
    Ok(axum::Json(engine.composition(CompositionId::from(id)).await?.layout))
}

/// `PUT`: the whole new layout; answers with it as now in force.
async fn set_layout(
    State(engine): State<EngineHandle>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<LayoutConfig>, ApiError> {
    let layout: LayoutConfig = json_body(&headers, &body)?;
    Ok(axum::Json(engine.set_layout(CompositionId::from(id), layout).await?))
}

async fn remove_participant(State(engine): State<EngineHandle>, Path((id, pid)): Path<(String, String)>) -> Result<StatusCode, ApiError> {
    Ok(removed(engine.remove_participant(CompositionId::from(id), ParticipantId::from(pid)).await?))
}

/// The offer of a WHIP or WHEP client: `application/sdp`, as RFC 9725 has it.
fn sdp_offer(headers: &HeaderMap, body: &Bytes) -> Result<String, ApiError> {
    if content_type(headers).as_deref() != Some(SDP_CONTENT_TYPE) {
        return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_content_type", "send the SDP offer as application/sdp"));
    }
    String::from_utf8(body.to_vec()).map_err(|_| ApiError::bad_request("malformed_sdp", "the SDP offer is not UTF-8 text"))
}

/// An SDP answer, 201 Created at the session's URL (WHIP, WHEP).
fn sdp_created(location: &str, answer: String) -> Response {
    with_location((StatusCode::CREATED, [(header::CONTENT_TYPE, SDP_CONTENT_TYPE)], answer).into_response(), location)
}

#[derive(Deserialize)]
struct WhipQuery {
    /// The participant's name (its label); WHIP itself carries none.
    name: Option<String>,
}

/// `POST /v1/compositions/{id}/whip` (RFC 9725): a WebRTC publisher (OBS 30+,
/// whipclientsink) that sends its picture and sound and is sent nothing. Its
/// session URL is the `Location`; `DELETE` there ends it.
async fn add_whip(
    State(engine): State<EngineHandle>,
    Path(id): Path<String>,
    Query(query): Query<WhipQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let offer = sdp_offer(&headers, &body)?;
    let joined = engine.add_whip(CompositionId::from(id.clone()), query.name, offer).await?;
    Ok(sdp_created(&format!("/v1/compositions/{id}/whip/{}", joined.participant.id), joined.answer))
}

/// `POST /v1/compositions/{id}/whep`: a viewer sent the programme (the
/// composite and the full mix) from the broadcast's own encode.
async fn add_viewer(State(engine): State<EngineHandle>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let offer = sdp_offer(&headers, &body)?;
    let (viewer, answer) = engine.add_viewer(CompositionId::from(id.clone()), offer).await?;
    Ok(sdp_created(&format!("/v1/compositions/{id}/whep/{viewer}"), answer))
}

async fn remove_viewer(State(engine): State<EngineHandle>, Path((id, vid)): Path<(String, String)>) -> Result<StatusCode, ApiError> {
    engine.remove_viewer(CompositionId::from(id), ViewerId::from(vid)).await?;
    Ok(StatusCode::OK)
}

#[derive(Serialize)]
struct OutputList {
    outputs: Vec<OutputView>,
}

async fn list_outputs(State(engine): State<EngineHandle>, Path(id): Path<String>) -> Result<axum::Json<OutputList>, ApiError> {
    let composition = engine.composition(CompositionId::from(id)).await?;
    Ok(axum::Json(OutputList { outputs: composition.outputs }))
}

async fn add_output(State(engine): State<EngineHandle>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let output: OutputConfig = json_body(&headers, &body)?;
    let composition = CompositionId::from(id);
    let view = engine.add_output(composition.clone(), output).await?;
    Ok(created(format!("/v1/compositions/{composition}/outputs/{}", view.id), view))
}

async fn get_output(State(engine): State<EngineHandle>, Path((id, oid)): Path<(String, String)>) -> Result<axum::Json<OutputView>, ApiError> {
    Ok(axum::Json(engine.output(CompositionId::from(id), OutputId::from(oid)).await?))
}

async fn remove_output(State(engine): State<EngineHandle>, Path((id, oid)): Path<(String, String)>) -> Result<StatusCode, ApiError> {
    Ok(removed(engine.remove_output(CompositionId::from(id), OutputId::from(oid)).await?))
}

/// HLS playlists and segments, with CORS so any page can play them.
/// An HLS output's playlist and segments, from `{hls_dir}/{composition}/{output}/`.
async fn serve_hls(hls_dir: PathBuf, Path((id, oid, file)): Path<(String, String, String)>) -> Result<Response, ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no HLS file {file} for output {oid} of composition {id}"));
    // Only plain names (ids, and what hlssink2 writes): no path can leave the directory.
    let plain = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.') && !s.starts_with('.');
    if ![&id, &oid, &file].into_iter().all(|s| plain(s)) {
        return Err(not_found());
    }
    let (content_type, cache) = match file.rsplit_once('.').map(|(_, ext)| ext) {
        Some("m3u8") => ("application/vnd.apple.mpegurl", "no-cache"),
        Some("ts") => ("video/mp2t", "max-age=60"),
        _ => return Err(not_found()),
    };
    let bytes = tokio::fs::read(hls_dir.join(&id).join(&oid).join(&file)).await.map_err(|_| not_found())?;
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, cache),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        bytes,
    )
        .into_response())
}
