//! The event adapter: numbers what the engine reports ([`Event`]) and hands
//! it, without ever blocking the engine, to
//! - live subscribers (`GET /v1/events`, Server-Sent Events), through a
//!   broadcast channel, with the last [`HISTORY`] events kept so that a
//!   client that reconnects with `Last-Event-ID` misses nothing;
//! - each webhook's delivery task ([`webhook`]), through a bounded queue.

pub mod webhook;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;
use tokio::sync::{broadcast, mpsc};

use crate::model::event::{Event, EventKind};
use crate::model::ids::CompositionId;

/// Events kept for clients that reconnect; at a few events per second
/// this is minutes of history, enough to ride out a proxy's reconnect.
pub const HISTORY: usize = 1024;

/// Cloneable handle on the one event sequence of the process.
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<Inner>,
}

struct Inner {
    /// Numbering, history and fan-out happen under one lock, so that a new
    /// subscriber's replay and its live stream neither overlap nor leave a gap.
    state: Mutex<BusState>,
    live: broadcast::Sender<Arc<Event>>,
    stats: BusStats,
}

struct BusState {
    next_seq: u64,
    history: VecDeque<Arc<Event>>,
    webhooks: Vec<mpsc::Sender<Arc<Event>>>,
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct BusStats {
    pub published: AtomicU64,
    pub alarms: AtomicU64,
    /// Events a webhook's queue had no room for (its receiver is far behind).
    pub webhook_queue_full: AtomicU64,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new()
    }
}

impl EventBus {
    pub fn new() -> EventBus {
        EventBus {
            inner: Arc::new(Inner {
                state: Mutex::new(BusState { next_seq: 1, history: VecDeque::with_capacity(HISTORY), webhooks: Vec::new() }),
                live: broadcast::channel(HISTORY).0,
                stats: BusStats::default(),
            }),
        }
    }

    /// Numbers and sends one event. Never blocks beyond the bus lock.
    pub fn publish(&self, composition: &CompositionId, what: EventKind) {
        let stats = &self.inner.stats;
        stats.published.fetch_add(1, Ordering::Relaxed);
        if what.is_alarm() {
            stats.alarms.fetch_add(1, Ordering::Relaxed);
        }
        let mut state = self.inner.state.lock().expect("event bus lock");
        let event = Arc::new(Event { seq: state.next_seq, time: OffsetDateTime::now_utc(), composition: composition.clone(), what });
        state.next_seq += 1;
        if state.history.len() == HISTORY {
            state.history.pop_front();
        }
        state.history.push_back(event.clone());
        // No subscriber is not an error.
        let _ = self.inner.live.send(event.clone());
        for queue in &state.webhooks {
            if queue.try_send(event.clone()).is_err() {
                stats.webhook_queue_full.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(seq = event.seq, "a webhook's queue is full: event not delivered to it");
            }
        }
    }

    /// The events after `after` still in the history, and the live stream
    /// of every later one.
    pub fn subscribe(&self, after: Option<u64>) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
        let state = self.inner.state.lock().expect("event bus lock");
        let replay = match after {
            Some(seq) => state.history.iter().filter(|e| e.seq > seq).cloned().collect(),
            None => Vec::new(),
        };
        (replay, self.inner.live.subscribe())
    }

    /// Adds a consumer that gets every event from now on, through a queue
    /// of `capacity`; what does not fit is dropped and counted.
    pub(crate) fn add_webhook_queue(&self, capacity: usize) -> mpsc::Receiver<Arc<Event>> {
        let (tx, rx) = mpsc::channel(capacity);
        self.inner.state.lock().expect("event bus lock").webhooks.push(tx);
        rx
    }

    pub fn stats(&self) -> &BusStats {
        &self.inner.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comp() -> CompositionId {
        CompositionId::from("c".to_string())
    }

    #[test]
    fn events_are_numbered_from_one_without_gaps() {
        let bus = EventBus::new();
        let (_, mut live) = bus.subscribe(None);
        bus.publish(&comp(), EventKind::CompositionCreated { name: None });
        bus.publish(&comp(), EventKind::CompositionDeleted);
        assert_eq!(live.try_recv().unwrap().seq, 1);
        assert_eq!(live.try_recv().unwrap().seq, 2);
        assert_eq!(bus.stats().published.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_reconnecting_subscriber_gets_what_it_missed_then_the_live_stream() {
        let bus = EventBus::new();
        for _ in 0..5 {
            bus.publish(&comp(), EventKind::CompositionDeleted);
        }
        let (replay, mut live) = bus.subscribe(Some(3));
        assert_eq!(replay.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5]);
        bus.publish(&comp(), EventKind::CompositionDeleted);
        assert_eq!(live.try_recv().unwrap().seq, 6);
    }

    #[test]
    fn history_keeps_only_the_newest_events() {
        let bus = EventBus::new();
        for _ in 0..HISTORY + 10 {
            bus.publish(&comp(), EventKind::CompositionDeleted);
        }
        let (replay, _) = bus.subscribe(Some(0));
        assert_eq!(replay.len(), HISTORY);
        assert_eq!(replay[0].seq, 11);
    }

    #[test]
    fn a_full_webhook_queue_drops_and_counts_instead_of_blocking() {
        let bus = EventBus::new();
        let mut queue = bus.add_webhook_queue(2);
        for _ in 0..3 {
            bus.publish(&comp(), EventKind::CompositionDeleted);
        }
        assert_eq!(bus.stats().webhook_queue_full.load(Ordering::Relaxed), 1);
        assert_eq!(queue.try_recv().unwrap().seq, 1);
        assert_eq!(queue.try_recv().unwrap().seq, 2);
    }

    #[test]
    fn alarms_are_counted() {
        let bus = EventBus::new();
        bus.publish(&comp(), EventKind::CompositionFrozen { reason: "x".into() });
        bus.publish(&comp(), EventKind::CompositionRunning);
        assert_eq!(bus.stats().alarms.load(Ordering::Relaxed), 1);
    }
}
