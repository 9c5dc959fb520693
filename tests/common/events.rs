//! An SSE client of `GET /v1/events`: a thread reads `id:`/`data:` blocks
//! into a channel; the test waits for the events it expects, each wait bounded.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use super::server::Server;

/// How long a stream stays open: long enough for any one test; each wait is bounded on its own.
const STREAM_LIFETIME: Duration = Duration::from_secs(90);

pub struct EventStream {
    events: mpsc::Receiver<(u64, Value)>,
    /// Every event read so far, in order.
    pub seen: Vec<Value>,
}

impl EventStream {
    /// Opens `/v1/events{query}`, resuming after `last_event_id` if given.
    pub fn open(server: &Server, query: &str, last_event_id: Option<u64>) -> Result<EventStream> {
        let client = reqwest::blocking::Client::builder().timeout(STREAM_LIFETIME).build()?;
        let mut request = client.get(server.url(&format!("/v1/events{query}")));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send()?;
        ensure!(response.status() == 200, "GET /v1/events{query}: {}", response.status());
        let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
        ensure!(content_type.starts_with("text/event-stream"), "content type {content_type}");
        let (tx, events) = mpsc::channel();
        thread::spawn(move || {
            let (mut id, mut data) = (None, String::new());
            for line in BufReader::new(response).lines() {
                let Ok(line) = line else { return };
                if let Some(value) = line.strip_prefix("id:") {
                    id = value.trim().parse::<u64>().ok();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push_str(value.trim_start());
                } else if line.is_empty() && !data.is_empty() {
                    let event: Value = serde_json::from_str(&data).expect("every event is JSON");
                    if tx.send((id.take().expect("every event has an id"), event)).is_err() {
                        return;
                    }
                    data.clear();
                }
            }
        });
        Ok(EventStream { events, seen: Vec::new() })
    }

    /// Reads events until one satisfies `wanted`, within `timeout`.
    pub fn wait_for(&mut self, timeout: Duration, what: &str, wanted: impl Fn(&Value) -> bool) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (id, event) =
                self.events.recv_timeout(left).with_context(|| format!("no {what} within {timeout:?}; saw {:?}", event_types(&self.seen)))?;
            ensure!(event["seq"] == id, "SSE id {id} and seq {} differ", event["seq"]);
            self.seen.push(event.clone());
            if wanted(&event) {
                return Ok(event);
            }
        }
    }

    /// Takes every event that has arrived so far, without waiting.
    pub fn drain(&mut self) -> Result<&[Value]> {
        while let Ok((id, event)) = self.events.try_recv() {
            ensure!(event["seq"] == id, "SSE id {id} and seq {} differ", event["seq"]);
            self.seen.push(event);
        }
        Ok(&self.seen)
    }
}

/// `seq:type` of each event, to show in a failure.
pub fn event_types(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| format!("{}:{}", e["seq"], e["type"].as_str().unwrap_or("?"))).collect()
}

/// Matches events of one type.
pub fn is(kind: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["type"] == kind
}

/// When the server says an event happened (its `time`, RFC 3339).
pub fn event_time(event: &Value) -> Result<SystemTime> {
    let text = event["time"].as_str().with_context(|| format!("event without a time: {event}"))?;
    let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("event time {text}"))?;
    let nanos = u64::try_from(time.unix_timestamp_nanos()).context("event time before 1970")?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos))
}
