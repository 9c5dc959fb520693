//! Request limits of the HTTP side: the size of a body (413) and the rate of joins
//! (429), both answered in the API's JSON error shape. The node's counts (compositions,
//! participants) and its CPU budget are the engine's to enforce: it alone knows them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use bytes::BytesMut;
use http_body_util::BodyExt;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::ApiError;

/// A token bucket: `rate` per second sustained, `burst` at once.
#[derive(Clone, Debug)]
pub struct RateBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled_at: Instant,
}

impl RateBucket {
    /// Starts full. A `rate` of 0 or less lets everything through.
    pub fn new(rate: f64, burst: u32, now: Instant) -> RateBucket {
        let burst = f64::from(burst.max(1));
        RateBucket { rate, burst, tokens: burst, refilled_at: now }
    }

    /// Takes one token, or says how long until one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let elapsed = now.saturating_duration_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// `Retry-After` is in whole seconds: round up, never 0.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// Is this `POST /v1/compositions/{id}/participants`?
fn is_join(method: &Method, path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').collect();
    method == Method::POST && matches!(segments.as_slice(), ["", "v1", "compositions", id, "participants"] if !id.is_empty())
}

/// The middleware for joins: 429 + `Retry-After` beyond the node's join rate.
pub async fn limit_joins(State(bucket): State<Arc<Mutex<RateBucket>>>, request: Request, next: Next) -> Response {
    if is_join(request.method(), request.uri().path()) {
        let taken = bucket.lock().expect("the join bucket's lock is never held across a panic").take(Instant::now());
        if let Err(wait) = taken {
            let message = "this node takes no more joins per second; retry after Retry-After seconds";
            return ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_joins", message)
                .retry_after(Duration::from_secs(retry_after_secs(wait)))
                .into_response();
        }
    }
    next.run(request).await
}

/// How much of a refused body is still read, and for how long, before the answer: like
/// nginx's lingering close, so that a client still sending gets its 413 rather than a
/// connection reset under its feet (seen with reqwest: about one 2 MB POST in six).
const DRAIN_AT_MOST: usize = 8 * 1024 * 1024;
const DRAIN_FOR: Duration = Duration::from_secs(5);

/// The middleware for bodies: reads the whole body, at most `max` bytes, so that what
/// follows (the idempotency check, the handlers) has it in memory; beyond, 413.
pub async fn limit_body(State(max): State<usize>, request: Request, next: Next) -> Response {
    let too_large = || {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("the request body is larger than {max} bytes"))
            .into_response()
    };
    let (parts, body) = request.into_parts();
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max as u64) {
        drain(body).await;
        return too_large();
    }
    match read_within(body, max).await {
        Ok(body) => next.run(Request::from_parts(parts, Body::from(body))).await,
        Err(BodyError::TooLarge) => too_large(),
        Err(BodyError::Unreadable) => {
            ApiError::new(StatusCode::BAD_REQUEST, "unreadable_body", "the request body could not be read").into_response()
        }
    }
}

enum BodyError {
    TooLarge,
    Unreadable,
}

/// The body, if it is at most `max` bytes; else the rest is drained.
async fn read_within(mut body: Body, max: usize) -> Result<Bytes, BodyError> {
    let mut collected = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| BodyError::Unreadable)?.into_data() else { continue }; // trailers
        if collected.len() + data.len() > max {
            drain(body).await;
            return Err(BodyError::TooLarge);
        }
        collected.extend_from_slice(&data);
    }
    Ok(collected.freeze())
}

/// Reads and drops what is left of `body`, within [`DRAIN_AT_MOST`] and [`DRAIN_FOR`].
async fn drain(mut body: Body) {
    let reading = async {
        let mut drained = 0;
        while drained < DRAIN_AT_MOST {
            match body.frame().await {
                Some(Ok(frame)) => drained += frame.data_ref().map_or(0, Bytes::len),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_FOR, reading).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_bucket_takes_a_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut bucket = RateBucket::new(10.0, 3, t0);
        for _ in 0..3 {
            assert_eq!(bucket.take(t0), Ok(()));
        }
        let wait = bucket.take(t0).unwrap_err();
        assert_eq!(wait, 100 * MS, "one token every 100 ms at 10/s");
        assert_eq!(bucket.take(t0 + 50 * MS), Err(50 * MS));
        assert_eq!(bucket.take(t0 + 100 * MS), Ok(()));
        assert!(bucket.take(t0 + 100 * MS).is_err());
    }

    #[test]
    fn a_bucket_refills_to_its_burst_and_no_more() {
        let t0 = Instant::now();
        let mut bucket = RateBucket::new(10.0, 2, t0);
        assert!(bucket.take(t0).is_ok() && bucket.take(t0).is_ok() && bucket.take(t0).is_err());
        let later = t0 + Duration::from_secs(60);
        assert!(bucket.take(later).is_ok() && bucket.take(later).is_ok());
        assert!(bucket.take(later).is_err(), "an idle minute does not bank 600 joins");
    }

    #[test]
    fn a_rate_of_zero_lets_everything_through() {
        let t0 = Instant::now();
        let mut bucket = RateBucket::new(0.0, 1, t0);
        assert!((0..1000).all(|_| bucket.take(t0).is_ok()));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(100 * MS), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(1001 * MS), 2);
    }

    #[test]
    fn only_posts_of_participants_are_joins() {
        assert!(is_join(&Method::POST, "/v1/compositions/c1/participants"));
        assert!(!is_join(&Method::GET, "/v1/compositions/c1/participants"));
        assert!(!is_join(&Method::POST, "/v1/compositions/c1/outputs"));
        assert!(!is_join(&Method::POST, "/v1/compositions//participants"));
        assert!(!is_join(&Method::POST, "/v1/compositions"));
    }
}
