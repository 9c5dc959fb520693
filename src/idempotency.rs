//! Retry-safe POSTs: a POST with an `Idempotency-Key` header is remembered for
//! [`REMEMBERED_FOR`] per (caller's scope, method, path, key), and a retry gets the first
//! answer again — status, headers (`Location`) and body byte for byte, plus
//! `Idempotent-Replayed: true` — instead of a second participant or output. As Stripe does:
//! the same key with another body is a 422; a retry while the first is still running
//! waits for it. Answers that changed nothing and invite a retry (5xx, 429) are not
//! remembered, so a retry after `Retry-After` runs again.
//!
//! The first request runs in a task of its own, so that a client that gives up (the
//! timeout that makes platforms retry) does not cancel the work whose result its retry
//! will ask for.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::api::ApiError;
use crate::auth::Access;

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
const REPLAYED: &str = "idempotent-replayed";
/// Long enough for a platform's retries after a timeout, short enough to keep little.
pub const REMEMBERED_FOR: Duration = Duration::from_secs(10 * 60);
/// Keys remembered at most; the oldest go first.
pub const MAX_KEYS: usize = 10_000;
/// Stripe's limit; a key is meant to be a UUID.
const MAX_KEY_LEN: usize = 255;
/// How long a request waits for the first one with its key; engine commands answer well within.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    scope: String,
    method: Method,
    path: String,
    key: String,
}

/// A finished answer, kept to be replayed.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn response(&self, replayed: bool) -> Response {
        let mut response = Response::new(Body::from(self.body.clone()));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        if replayed {
            response.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
        }
        response
    }

    /// Whether a retry should get this answer or run again.
    fn worth_remembering(&self) -> bool {
        !(self.status.is_server_error() || self.status == StatusCode::TOO_MANY_REQUESTS)
    }
}

type Outcome = watch::Receiver<Option<Arc<Answer>>>;

struct Entry {
    /// Which insertion this is, so a late finish cannot touch a newer entry under the same key.
    serial: u64,
    body_digest: [u8; 32],
    outcome: Outcome,
}

/// The remembered keys, oldest first in `order` (every key lives as long, so oldest = first to expire).
#[derive(Default)]
struct Entries {
    by_key: HashMap<Key, Entry>,
    order: VecDeque<(Instant, Key, u64)>,
    next_serial: u64,
}

impl Entries {
    /// Drops expired keys, and the oldest ones while there are `cap` or more. `order` may
    /// hold keys already forgotten (5xx answers); it is bounded too, to twice `cap`.
    fn forget_old(&mut self, now: Instant, ttl: Duration, cap: usize) {
        while let Some((since, key, serial)) = self.order.front() {
            let full = self.by_key.len() >= cap || self.order.len() > 2 * cap;
            if now.saturating_duration_since(*since) < ttl && !full {
                break;
            }
            if self.by_key.get(key).is_some_and(|e| e.serial == *serial) {
                self.by_key.remove(key);
            }
            self.order.pop_front();
        }
    }

    fn remove(&mut self, key: &Key, serial: u64) {
        if self.by_key.get(key).is_some_and(|e| e.serial == serial) {
            self.by_key.remove(key);
        }
    }
}

/// What to do with a request that carries a key.
enum Lookup {
    /// First with this key: run it and publish through this sender.
    Run(u64, watch::Sender<Option<Arc<Answer>>>),
    /// Seen before with the same body: wait for (or take) its answer.
    Replay(Outcome),
    /// Seen before with another body.
    Mismatch,
}

pub struct IdempotencyStore {
    entries: Mutex<Entries>,
    ttl: Duration,
    cap: usize,
}

impl Default for IdempotencyStore {
    fn default() -> Self {
        IdempotencyStore::new(REMEMBERED_FOR, MAX_KEYS)
    }
}

impl IdempotencyStore {
    pub fn new(ttl: Duration, cap: usize) -> IdempotencyStore {
        IdempotencyStore { entries: Mutex::new(Entries::default()), ttl, cap: cap.max(1) }
    }

    fn lookup(&self, key: &Key, body_digest: [u8; 32], now: Instant) -> Lookup {
        let mut entries = self.entries.lock().expect("the idempotency lock is never held across a panic");
        entries.forget_old(now, self.ttl, self.cap);
        if let Some(entry) = entries.by_key.get(key) {
            return if entry.body_digest == body_digest { Lookup::Replay(entry.outcome.clone()) } else { Lookup::Mismatch };
        }
        let (sender, outcome) = watch::channel(None);
        let serial = entries.next_serial;
        entries.next_serial += 1;
        entries.by_key.insert(key.clone(), Entry { serial, body_digest, outcome });
        entries.order.push_back((now, key.clone(), serial));
        Lookup::Run(serial, sender)
    }

    fn forget(&self, key: &Key, serial: u64) {
        self.entries.lock().expect("the idempotency lock is never held across a panic").remove(key, serial);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap().by_key.len()
    }
}

/// The middleware.
pub async fn replay_retries(State(store): State<Arc<IdempotencyStore>>, request: Request, next: Next) -> Response {
    let Some(key) = request.headers().get(IDEMPOTENCY_KEY) else {
        return next.run(request).await;
    };
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let key = match key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= MAX_KEY_LEN => k.to_owned(),
        _ => {
            let message = format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters");
            return ApiError::new(StatusCode::BAD_REQUEST, "invalid_idempotency_key", message).into_response();
        }
    };
    let scope = request.extensions().get::<Access>().map_or_else(|| "anonymous".to_owned(), Access::scope);
    let key = Key { scope, method: Method::POST, path: request.uri().path().to_owned(), key };
    // The body limit has already buffered the body: this takes it back whole.
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return ApiError::new(StatusCode::BAD_REQUEST, "unreadable_body", "the request body could not be read").into_response();
    };
    let digest: [u8; 32] = Sha256::digest(&body).into();
    let request = Request::from_parts(parts, Body::from(body));

    let (outcome, replayed) = match store.lookup(&key, digest, Instant::now()) {
        Lookup::Mismatch => {
            let message = "this Idempotency-Key was used with another request body; use a new key for a new request";
            return ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused", message).into_response();
        }
        Lookup::Replay(outcome) => (outcome, true),
        Lookup::Run(serial, sender) => {
            let outcome = sender.subscribe();
            let store = store.clone();
            tokio::spawn(async move {
                let answer = Arc::new(buffer(next.run(request).await).await);
                if !answer.worth_remembering() {
                    store.forget(&key, serial);
                }
                sender.send_replace(Some(answer));
            });
            (outcome, false)
        }
    };
    wait_for(outcome, replayed).await
}

async fn buffer(response: Response) -> Answer {
    let (parts, body) = response.into_parts();
    // Our handlers answer small JSON or SDP; a body that cannot be read is not replayable.
    match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => Answer { status: parts.status, headers: parts.headers, body },
        Err(_) => Answer { status: StatusCode::INTERNAL_SERVER_ERROR, headers: HeaderMap::new(), body: Bytes::new() },
    }
}

async fn wait_for(mut outcome: Outcome, replayed: bool) -> Response {
    match tokio::time::timeout(IN_FLIGHT_WAIT, outcome.wait_for(Option::is_some)).await {
        Ok(Ok(answer)) => answer.as_ref().expect("waited for Some").response(replayed),
        Ok(Err(_)) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the first request with this Idempotency-Key failed")
                .into_response()
        }
        Err(_) => {
            let message = "a request with this Idempotency-Key is still running; retry later";
            ApiError::new(StatusCode::CONFLICT, "request_in_progress", message).retry_after(Duration::from_secs(1)).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn key(k: &str) -> Key {
        Key { scope: "admin".into(), method: Method::POST, path: "/v1/compositions".into(), key: k.into() }
    }

    fn answer(status: StatusCode) -> Option<Arc<Answer>> {
        Some(Arc::new(Answer { status, headers: HeaderMap::new(), body: Bytes::from_static(b"{}") }))
    }

    #[test]
    fn a_retry_with_the_same_body_replays_and_another_body_is_refused() {
        let store = IdempotencyStore::new(10 * MINUTE, 100);
        let t0 = Instant::now();
        let Lookup::Run(_, sender) = store.lookup(&key("a"), [1; 32], t0) else { panic!("first use runs") };
        sender.send_replace(answer(StatusCode::CREATED));
        let Lookup::Replay(outcome) = store.lookup(&key("a"), [1; 32], t0 + MINUTE) else { panic!("a retry replays") };
        assert_eq!(outcome.borrow().as_ref().unwrap().status, StatusCode::CREATED);
        assert!(matches!(store.lookup(&key("a"), [2; 32], t0 + MINUTE), Lookup::Mismatch));
        let other_scope = Key { scope: "composition:c1".into(), ..key("a") };
        assert!(matches!(store.lookup(&other_scope, [2; 32], t0), Lookup::Run(..)), "keys are per scope");
    }

    #[test]
    fn keys_are_forgotten_after_their_time() {
        let store = IdempotencyStore::new(10 * MINUTE, 100);
        let t0 = Instant::now();
        assert!(matches!(store.lookup(&key("a"), [1; 32], t0), Lookup::Run(..)));
        assert!(matches!(store.lookup(&key("a"), [1; 32], t0 + 9 * MINUTE), Lookup::Replay(_)));
        assert!(matches!(store.lookup(&key("a"), [2; 32], t0 + 10 * MINUTE), Lookup::Run(..)), "a new request now");
    }

    #[test]
    fn memory_is_bounded_by_forgetting_the_oldest() {
        let store = IdempotencyStore::new(10 * MINUTE, 3);
        let t0 = Instant::now();
        for k in ["a", "b", "c", "d"] {
            assert!(matches!(store.lookup(&key(k), [0; 32], t0), Lookup::Run(..)));
        }
        assert_eq!(store.len(), 3);
        assert!(matches!(store.lookup(&key("d"), [0; 32], t0), Lookup::Replay(_)));
        assert!(matches!(store.lookup(&key("a"), [0; 32], t0), Lookup::Run(..)), "the oldest went first");
    }

    #[test]
    fn a_forgotten_entry_does_not_remove_a_newer_one() {
        let store = IdempotencyStore::new(10 * MINUTE, 100);
        let t0 = Instant::now();
        let Lookup::Run(first, _) = store.lookup(&key("a"), [0; 32], t0) else { panic!() };
        store.forget(&key("a"), first);
        let Lookup::Run(second, _) = store.lookup(&key("a"), [0; 32], t0) else { panic!() };
        store.forget(&key("a"), first);
        assert!(matches!(store.lookup(&key("a"), [0; 32], t0), Lookup::Replay(_)), "{first} != {second}");
    }

    #[test]
    fn refusals_that_invite_a_retry_are_not_worth_remembering() {
        for (status, remembered) in [
            (StatusCode::CREATED, true),
            (StatusCode::BAD_REQUEST, true),
            (StatusCode::NOT_FOUND, true),
            (StatusCode::TOO_MANY_REQUESTS, false),
            (StatusCode::SERVICE_UNAVAILABLE, false),
        ] {
            assert_eq!(answer(status).unwrap().worth_remembering(), remembered, "{status}");
        }
    }
}
