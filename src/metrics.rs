//! `GET /metrics`: what the engine, the event bus and the webhooks know, in
//! Prometheus's text format, following its naming rules (`tutti_…_total`
//! for counters, base units in names, identity in labels `composition`,
//! `participant`, `output`, `media`), plus the standard `process_*` metrics
//! (CPU seconds, resident memory, open fds).
//!
//! Everything is read at scrape time from one engine snapshot into a fresh
//! registry: nothing is kept between scrapes, so a participant that left
//! has no series left behind.

use prometheus::core::Collector;
use prometheus::{Encoder, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use std::sync::atomic::Ordering;

use crate::engine::{MetricsSnapshot, OutputState, ParticipantState};
use crate::events::BusStats;
use crate::events::webhook::WebhookStats;
use crate::sip::SipStats;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const PARTICIPANT_STATES: [ParticipantState; 5] = [
    ParticipantState::Connecting,
    ParticipantState::Active,
    ParticipantState::Interrupted,
    ParticipantState::Stale,
    ParticipantState::AwaitingPin,
];
const OUTPUT_STATES: [OutputState; 6] = [
    OutputState::Connecting,
    OutputState::Live,
    OutputState::Reconnecting,
    OutputState::Stalled,
    OutputState::Failed,
    OutputState::Stopped,
];

/// The text of one scrape.
pub fn render(snapshot: &MetricsSnapshot, bus: &BusStats, webhooks: &WebhookStats, sip: &SipStats) -> String {
    let registry = Registry::new();
    let families = Families { registry: &registry };

    let compositions = families.gauge("tutti_compositions", "Compositions on this node.", &[]);
    compositions.with_label_values(&[] as &[&str]).set(snapshot.compositions.len() as i64);
    let frozen = families.gauge("tutti_composition_frozen", "1 while the composition's compositor produces no frames.", &["composition"]);
    let encoding = families.gauge(
        "tutti_broadcast_encoding",
        "1 while a composition's broadcast encode is at work (an output, a caller sharing it or a player takes it).",
        &["composition"],
    );
    let frames = families.counter("tutti_composite_frames_total", "Frames the compositor produced.", &["composition"]);
    let own_encodes = families.gauge("tutti_mix_minus_own_encodes", "Callers whose mix-minus audio is encoded for them alone.", &["composition"]);
    let shared_encodes = families.gauge(
        "tutti_mix_minus_shared",
        "Callers who put nothing audible into the mix and are sent its one shared encode.",
        &["composition"],
    );
    let late = families.counter(
        "tutti_composite_frames_late_total",
        "Composite frames produced after they should have been on air.",
        &["composition"],
    );
    let viewers = families.gauge("tutti_viewers", "WHEP viewers watching the composition's programme.", &["composition"]);
    let participants = families.gauge("tutti_participants", "Participants by state.", &["composition", "state"]);
    let received = families.counter("tutti_participant_packets_received_total", "RTP packets received from a participant.", MEDIUM_LABELS);
    let sent = families.counter("tutti_participant_packets_sent_total", "RTP packets sent to a participant.", MEDIUM_LABELS);
    let lost = families.counter("tutti_participant_packets_lost_total", "RTP packets from a participant that never arrived.", MEDIUM_LABELS);
    let rejected = families.counter(
        "tutti_participant_packets_rejected_total",
        "Datagrams at a participant's ports that the RTP source check dropped (not its media).",
        MEDIUM_LABELS,
    );
    let unauthenticated = families.counter(
        "tutti_participant_packets_unauthenticated_total",
        "Packets at an SRTP participant's ports that failed SRTP authentication and were dropped.",
        MEDIUM_LABELS,
    );
    let bytes_received =
        families.counter("tutti_participant_bytes_received_total", "RTP bytes received from a participant.", MEDIUM_LABELS);
    let bytes_sent = families.counter("tutti_participant_bytes_sent_total", "RTP bytes sent to a participant.", MEDIUM_LABELS);
    let jitter = families.float_gauge("tutti_participant_jitter_seconds", "Interarrival jitter of a participant's RTP (RFC 3550).", MEDIUM_LABELS);
    let audio_level = families.float_gauge(
        "tutti_participant_audio_level_dbov",
        "Level of the audio a participant sends, in dBov (RFC 6464: -127 silence, 0 the loudest).",
        &["composition", "participant"],
    );
    let speaking = families.gauge("tutti_participant_speaking", "1 while a participant is talking.", &["composition", "participant"]);
    let estimate = families.gauge(
        "tutti_participant_bandwidth_estimate_kbps",
        "What the bandwidth estimator lets Tutti send a WebRTC guest (0 until known).",
        &["composition", "participant"],
    );
    let picture_kbps = families.gauge(
        "tutti_participant_picture_kbps",
        "The bitrate of the composite sent to a WebRTC guest: the composition's, or less on a link that carries less.",
        &["composition", "participant"],
    );
    let output_state = families.gauge(
        "tutti_output_state",
        "1 for the state an output is in, 0 for the others.",
        &["composition", "output", "kind", "state"],
    );
    let output_bytes = families.counter(
        "tutti_output_bytes_total",
        "Bytes an output sent (RTMP) or wrote (HLS, recordings).",
        &["composition", "output", "kind"],
    );
    let reconnects = families.counter("tutti_output_reconnects_total", "Times an RTMP output reconnected.", &["composition", "output", "kind"]);
    let dropped_gops = families.counter(
        "tutti_output_dropped_gops_total",
        "Whole GOPs an RTMP output dropped because its destination could not keep up.",
        &["composition", "output", "kind"],
    );

    for c in &snapshot.compositions {
        let id = c.id.as_str();
        if let (Some(produced), Some(produced_late)) = (c.composite_frames, c.composite_frames_late) {
            frozen.with_label_values(&[id]).set(i64::from(c.state == "frozen"));
            encoding.with_label_values(&[id]).set(i64::from(c.broadcast.encoding));
            frames.with_label_values(&[id]).inc_by(produced);
            late.with_label_values(&[id]).inc_by(produced_late);
        }
        own_encodes.with_label_values(&[id]).set(c.mix_minus.own_encodes as i64);
        shared_encodes.with_label_values(&[id]).set(c.mix_minus.shared as i64);
        viewers.with_label_values(&[id]).set(c.viewers as i64);
        for state in PARTICIPANT_STATES {
            let n = c.participants.iter().filter(|p| p.state == state).count();
            participants.with_label_values(&[id, label(&state).as_str()]).set(n as i64);
        }
        for p in &c.participants {
            if let Some(level) = p.audio_level_dbov {
                audio_level.with_label_values(&[id, p.id.as_str()]).set(level);
                speaking.with_label_values(&[id, p.id.as_str()]).set(i64::from(p.speaking));
            }
            if let Some(webrtc) = &p.webrtc {
                estimate.with_label_values(&[id, p.id.as_str()]).set(webrtc.bandwidth_estimate_kbps as i64);
                if let Some(picture) = webrtc.picture {
                    picture_kbps.with_label_values(&[id, p.id.as_str()]).set(i64::from(picture.bitrate_kbps));
                }
            }
            for (media, stats) in [("audio", &p.audio), ("video", &p.video)] {
                let Some(stats) = stats else { continue };
                let labels = [id, p.id.as_str(), media];
                received.with_label_values(&labels).inc_by(stats.packets_received);
                sent.with_label_values(&labels).inc_by(stats.packets_sent);
                bytes_received.with_label_values(&labels).inc_by(stats.bytes_received);
                bytes_sent.with_label_values(&labels).inc_by(stats.bytes_sent);
                lost.with_label_values(&labels).inc_by(stats.packets_lost);
                rejected.with_label_values(&labels).inc_by(stats.packets_rejected);
                if let Some(dropped) = stats.packets_unauthenticated {
                    unauthenticated.with_label_values(&labels).inc_by(dropped);
                }
                jitter.with_label_values(&labels).set(stats.jitter_ms / 1000.0);
            }
        }
        for o in &c.outputs {
            let kind = label(&o.kind);
            let labels = [id, o.id.as_str(), kind.as_str()];
            for state in OUTPUT_STATES {
                let state_label = label(&state);
                output_state.with_label_values(&[id, o.id.as_str(), kind.as_str(), state_label.as_str()]).set(i64::from(o.state == state));
            }
            output_bytes.with_label_values(&labels).inc_by(o.bytes_sent);
            reconnects.with_label_values(&labels).inc_by(o.reconnects);
            dropped_gops.with_label_values(&labels).inc_by(o.dropped_gops);
        }
    }

    let queues = families.gauge(
        "tutti_encoder_queue_frames",
        "Frames waiting for a video encoder; at the queue's size the encoder cannot keep up.",
        &["composition", "encoder"],
    );
    for (composition, encoder, waiting) in &snapshot.encoder_queues {
        queues.with_label_values(&[composition.as_str(), encoder]).set(i64::from(*waiting));
    }

    let health = &snapshot.health;
    families.gauge("tutti_parts_stopping", "Parts (callers, outputs, compositions) whose media is still stopping.", &[])
        .with_label_values(&[] as &[&str])
        .set(health.parts_stopping as i64);
    families.gauge("tutti_parts_stuck", "Parts that did not stop in time and were left to finish.", &[])
        .with_label_values(&[] as &[&str])
        .set(health.parts_stuck as i64);
    families.counter("tutti_events_total", "Events published (API, webhooks).", &[])
        .with_label_values(&[] as &[&str])
        .inc_by(bus.published.load(Ordering::Relaxed));
    families.counter("tutti_alarms_total", "Watchdog alarms and failures: frozen, interrupted, stale, stalled, failed.", &[])
        .with_label_values(&[] as &[&str])
        .inc_by(bus.alarms.load(Ordering::Relaxed));
    let deliveries = families.counter("tutti_webhook_deliveries_total", "Webhook delivery outcomes.", &["result"]);
    for (result, n) in [
        ("delivered", webhooks.delivered.load(Ordering::Relaxed)),
        ("retried", webhooks.retried.load(Ordering::Relaxed)),
        ("given_up", webhooks.given_up.load(Ordering::Relaxed)),
        ("queue_full", bus.webhook_queue_full.load(Ordering::Relaxed)),
    ] {
        deliveries.with_label_values(&[result]).inc_by(n);
    }

    families.gauge("tutti_sip_calls", "SIP calls up now.", &[]).with_label_values(&[] as &[&str]).set(sip.active());
    families.counter("tutti_sip_calls_answered_total", "SIP calls answered 200 OK.", &[])
        .with_label_values(&[] as &[&str])
        .inc_by(sip.answered());
    let refused = families.counter("tutti_sip_calls_refused_total", "INVITEs refused, by SIP status (401 challenges included).", &["status"]);
    for (status, n) in sip.refused() {
        refused.with_label_values(&[status.to_string().as_str()]).inc_by(n);
    }

    registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self())).expect("registered once");
    let mut text = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut text).expect("encoding into memory");
    String::from_utf8(text).expect("the text format is UTF-8")
}

const MEDIUM_LABELS: &[&str] = &["composition", "participant", "media"];

/// A state or kind as the API writes it (snake_case).
fn label<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// Creates metric families in the scrape's registry. Names and labels are
/// constants of this file, so a failure to register is a bug.
struct Families<'a> {
    registry: &'a Registry,
}

impl Families<'_> {
    fn register<C: Collector + Clone + 'static>(&self, collector: C) -> C {
        self.registry.register(Box::new(collector.clone())).expect("metric names are unique and valid");
        collector
    }

    fn counter(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter"))
    }

    fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge"))
    }

    fn float_gauge(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        self.register(GaugeVec::new(Opts::new(name, help), labels).expect("valid gauge"))
    }
}
