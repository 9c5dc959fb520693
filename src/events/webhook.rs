//! Webhooks: every event POSTed as JSON to each configured URL, signed the
//! way Stripe and LiveKit sign theirs, retried with backoff, and never in
//! the engine's way (each URL has its own task and bounded queue).
//!
//! Headers of each POST:
//! - `Tutti-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`:
//!   the receiver recomputes it over the raw body; the timestamp lets it
//!   refuse replays older than it tolerates.
//! - `Tutti-Event-Seq` and `Tutti-Event-Type`: the event's `seq` and `type`.
//!
//! One URL's events go in order: a receiver that is down holds back only
//! its own queue, for at most the [`retry_delay`] schedule, then the event is
//! given up (logged and counted) and the next one goes.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

use super::EventBus;
use crate::model::event::Event;

/// Events waiting per URL before new ones are dropped: a receiver down for
/// the whole retry schedule at a busy node's event rate still fits.
const QUEUE_CAPACITY: usize = 10_000;
/// One delivery attempt, connection included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct WebhookConfig {
    pub urls: Vec<reqwest::Url>,
    /// The HMAC key; receivers verify `Tutti-Signature` with it.
    pub secret: String,
}

/// Counters for `/metrics`, over every URL.
#[derive(Debug, Default)]
pub struct WebhookStats {
    pub delivered: AtomicU64,
    /// Attempts that failed and were retried.
    pub retried: AtomicU64,
    /// Events given up after the last retry, or refused by the receiver.
    pub given_up: AtomicU64,
}

/// Starts one delivery task per URL on the current tokio runtime.
pub fn start(bus: &EventBus, config: WebhookConfig) -> Arc<WebhookStats> {
    let stats = Arc::new(WebhookStats::default());
    let client = reqwest::Client::builder()
        .timeout(ATTEMPT_TIMEOUT)
        .user_agent(concat!("tutti/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("building the webhook HTTP client");
    for url in config.urls {
        let queue = bus.add_webhook_queue(QUEUE_CAPACITY);
        tokio::spawn(deliver_all(queue, client.clone(), url, config.secret.clone(), stats.clone()));
    }
    stats
}

async fn deliver_all(
    mut queue: mpsc::Receiver<Arc<Event>>,
    client: reqwest::Client,
    url: reqwest::Url,
    secret: String,
    stats: Arc<WebhookStats>,
) {
    while let Some(event) = queue.recv().await {
        let body = serde_json::to_vec(&*event).expect("events serialize");
        let mut attempt = 0;
        loop {
            let outcome = post(&client, &url, &secret, &event, &body).await;
            match outcome {
                Outcome::Delivered => {
                    stats.delivered.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Outcome::Refused(status) => {
                    stats.given_up.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%url, seq = event.seq, %status, "webhook receiver refused the event; not retried");
                    break;
                }
                Outcome::Failed(why) => match retry_delay(attempt) {
                    Some(delay) => {
                        stats.retried.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%url, seq = event.seq, attempt, "webhook delivery failed ({why}); retrying in {delay:?}");
                        tokio::time::sleep(delay).await;
                        attempt += 1;
                    }
                    None => {
                        stats.given_up.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%url, seq = event.seq, "webhook delivery failed ({why}); given up after {} attempts", attempt + 1);
                        break;
                    }
                },
            }
        }
    }
}

enum Outcome {
    Delivered,
    /// A 4xx other than 408 and 429: the receiver will not take it, however often asked.
    Refused(reqwest::StatusCode),
    /// No answer, or one worth asking again.
    Failed(String),
}

async fn post(client: &reqwest::Client, url: &reqwest::Url, secret: &str, event: &Event, body: &[u8]) -> Outcome {
    let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let response = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("Tutti-Signature", signature(secret, timestamp, body))
        .header("Tutti-Event-Seq", event.seq)
        .header("Tutti-Event-Type", event.what.name())
        .body(body.to_vec())
        .send()
        .await;
    match response {
        Ok(r) if r.status().is_success() => Outcome::Delivered,
        Ok(r) if r.status().is_client_error() && !matches!(r.status().as_u16(), 408 | 429) => Outcome::Refused(r.status()),
        Ok(r) => Outcome::Failed(format!("HTTP {}", r.status())),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// `t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

/// Wait before retry number `attempt` (from 0), or `None` to give up:
/// 0.5 s doubling to 30 s, eight retries, about 1.5 min in all.
pub fn retry_delay(attempt: u32) -> Option<Duration> {
    const RETRIES: u32 = 8;
    (attempt < RETRIES).then(|| Duration::from_millis(500u64 << attempt.min(6)).min(Duration::from_secs(30)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Reference computed with Python's hmac module.
        assert_eq!(
            signature("whsec_test", 1_700_000_000, br#"{"seq":1}"#),
            "t=1700000000,v1=926c3c48823e4dc937cdb0992313bcbbc472579d779ab54f0d4e09e4049838aa"
        );
    }

    #[test]
    fn retries_back_off_to_thirty_seconds_then_give_up() {
        let delays: Vec<_> = (0..9).map(retry_delay).collect();
        assert_eq!(delays[0], Some(Duration::from_millis(500)));
        assert_eq!(delays[1], Some(Duration::from_secs(1)));
        assert_eq!(delays[5], Some(Duration::from_secs(16)));
        assert_eq!(delays[6], Some(Duration::from_secs(30)));
        assert_eq!(delays[7], Some(Duration::from_secs(30)));
        assert_eq!(delays[8], None);
    }
}
