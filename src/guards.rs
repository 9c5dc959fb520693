//! What stands between a request and a handler, in this order:
//!
//! ```text
//! request ─▶ require_token ─▶ limit_body ─▶ replay_retries ─▶ limit_joins ─▶ route
//!            401/403           413           422/replay         429
//!            (auth.rs)         (limits.rs)   (idempotency.rs)   (limits.rs)
//! ```
//!
//! Tokens first, so that nobody unknown makes the server read a body; the body before
//! the idempotency check, which compares bodies; replays before the join rate, so that a
//! retry does not spend a join.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Extension};
use axum::{Router, middleware};

use crate::auth::{self, Auth};
use crate::config::Config;
use crate::idempotency::{self, IdempotencyStore};
use crate::limits::{self, RateBucket};

#[derive(Clone)]
pub struct ApiGuards {
    auth: Arc<Auth>,
    idempotency: Arc<IdempotencyStore>,
    joins: Arc<Mutex<RateBucket>>,
    max_body_bytes: usize,
}

impl ApiGuards {
    pub fn new(config: &Config) -> ApiGuards {
        let limits = &config.limits;
        ApiGuards {
            auth: Arc::new(Auth::new(&config.access)),
            idempotency: Arc::new(IdempotencyStore::default()),
            joins: Arc::new(Mutex::new(RateBucket::new(limits.join_rate, limits.join_burst, Instant::now()))),
            max_body_bytes: limits.max_body_bytes,
        }
    }

    /// The node's join budget (`--join-rate`, `--join-burst`), which SIP
    /// calls spend too: an INVITE flood is as many joins as a POST flood.
    pub fn joins(&self) -> Arc<Mutex<RateBucket>> {
        self.joins.clone()
    }

    pub fn requires_tokens(&self) -> bool {
        self.auth.required()
    }

    /// Wraps every route of `router`, its fallbacks included. Handlers find the caller's
    /// [`auth::Access`] and the [`Auth`] (to sign composition tokens) in the extensions.
    pub fn protect(self, router: Router) -> Router {
        router
            .layer(middleware::from_fn_with_state(self.joins, limits::limit_joins))
            .layer(middleware::from_fn_with_state(self.idempotency, idempotency::replay_retries))
            // The body is already read within the limit; the extractors must not cut it shorter.
            .layer(DefaultBodyLimit::max(self.max_body_bytes))
            .layer(middleware::from_fn_with_state(self.max_body_bytes, limits::limit_body))
            .layer(middleware::from_fn_with_state(self.auth.clone(), auth::require_token))
            .layer(Extension(self.auth))
    }
}
