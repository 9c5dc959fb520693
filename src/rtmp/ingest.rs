//! Ingest: OBS or ffmpeg publish to `rtmp://host:port/ingest/<stream_key>`,
//! and what they send reaches the sink the media side registered for that
//! key, parsed, as plain values.
//!
//! ```text
//!  register_ingest(key, sink) ─► IngestKeys: key ─► IngestSlot { sink, owner }
//!                                                      ▲ claim    │ deliver (while owner)
//!  publisher ─► server connection ─► flv::read_*_tag ─► IngestPublisher ─► sink
//! ```
//!
//! One publisher per key at a time, and the newest wins (as MediaMTX's
//! `overridePublisher`): an OBS reconnecting after a half-dead TCP connection
//! must not be locked out by its own ghost. The sink hears one consistent
//! story per key: `Publishing`, media, then `Ended` or `Refused` only when
//! the key's *current* publisher goes; a replaced publisher falls silent.
//!
//! Nothing here does I/O: the server's connection task feeds it, and the
//! handover is tested in memory below.

use super::flv::{self, AudioTag, UnsupportedCodec, VideoTag};
use super::server::ServerError;
pub use crate::model::ingest::{IngestEvent, IngestSink};
use crate::model::ingest::AudioConfig;
use bytes::Bytes;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// The RTMP application publishers connect to.
pub const INGEST_APP: &str = "ingest";

/// What a publisher's video message means for the sink; `None` when it
/// carries nothing to hand on.
pub(super) fn video_event(timestamp_ms: u32, body: &Bytes) -> Option<IngestEvent> {
    match flv::read_video_tag(body) {
        Ok(VideoTag::AvcDecoderConfig(record)) => Some(IngestEvent::VideoConfig(record)),
        Ok(VideoTag::AvcAccessUnit {
            keyframe,
            composition_time_ms,
            data,
        }) => Some(IngestEvent::Video {
            dts_ms: timestamp_ms,
            pts_ms: i64::from(timestamp_ms) + i64::from(composition_time_ms),
            keyframe,
            data,
        }),
        Ok(VideoTag::Ignored) => None,
        Err(unsupported) => Some(refusal(unsupported)),
    }
}

/// What a publisher's audio message means for the sink; `None` when it
/// carries nothing to hand on.
pub(super) fn audio_event(timestamp_ms: u32, body: &Bytes) -> Option<IngestEvent> {
    match flv::read_audio_tag(body) {
        Ok(AudioTag::AacAudioSpecificConfig(config)) => Some(IngestEvent::AudioConfig(AudioConfig::Aac(config))),
        Ok(AudioTag::AacFrame(data)) => Some(IngestEvent::Audio {
            pts_ms: timestamp_ms,
            data,
        }),
        Ok(AudioTag::Ignored) => None,
        Err(unsupported) => Some(refusal(unsupported)),
    }
}

fn refusal(UnsupportedCodec(codec): UnsupportedCodec) -> IngestEvent {
    IngestEvent::Refused {
        reason: format!("the publisher sent {codec}; Tutti takes H.264 video and AAC audio over RTMP"),
    }
}

/// Stream keys are secrets that travel in URLs: keep them to characters no
/// client or proxy rewrites.
fn is_valid_key(key: &str) -> bool {
    !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

/// The registered stream keys.
#[derive(Default)]
pub(super) struct IngestKeys {
    slots: Mutex<HashMap<String, Arc<IngestSlot>>>,
}

impl IngestKeys {
    pub(super) fn register(self: &Arc<Self>, key: &str, sink: IngestSink) -> Result<IngestRegistration, ServerError> {
        if !is_valid_key(key) {
            return Err(ServerError::BadIngestKey);
        }
        let mut slots = self.slots();
        if slots.contains_key(key) {
            return Err(ServerError::IngestKeyExists);
        }
        let slot = Arc::new(IngestSlot {
            sink,
            owner: watch::Sender::new(Owner::Vacant),
            publishers_seen: AtomicU64::new(0),
            handover: Mutex::new(()),
        });
        slots.insert(key.to_string(), slot.clone());
        Ok(IngestRegistration {
            keys: self.clone(),
            key: key.to_string(),
            slot,
        })
    }

    /// The slot of `key`, if it is registered.
    pub(super) fn find(&self, key: &str) -> Option<Arc<IngestSlot>> {
        self.slots().get(key).cloned()
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<String, Arc<IngestSlot>>> {
        self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Accepts publishers with one stream key until dropped. Dropping it
/// disconnects the current publisher without telling the sink `Ended`.
pub struct IngestRegistration {
    keys: Arc<IngestKeys>,
    key: String,
    slot: Arc<IngestSlot>,
}

impl Drop for IngestRegistration {
    fn drop(&mut self) {
        self.keys.slots().remove(&self.key);
        // The publisher's connection watches this and hangs up; a connection
        // that found the slot just before cannot claim it any more.
        self.slot.owner.send_replace(Owner::Unregistered);
    }
}

impl fmt::Debug for IngestRegistration {
    // The key is a secret: never in a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IngestRegistration").finish_non_exhaustive()
    }
}

/// Who may deliver to a key's sink right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    Vacant,
    Publisher(u64),
    Unregistered,
}

/// One registered key: its sink and which connection publishes on it.
pub(super) struct IngestSlot {
    sink: IngestSink,
    /// Connections watch it to learn they were replaced or unregistered.
    owner: watch::Sender<Owner>,
    publishers_seen: AtomicU64,
    /// Held while the sink runs or the key changes hands, so a replaced
    /// publisher's last frame cannot reach the sink after its successor's
    /// `Publishing`. Not held by `IngestRegistration::drop`, so a sink may
    /// drop its registration from inside a call.
    handover: Mutex<()>,
}

impl IngestSlot {
    /// Makes `peer` the key's publisher, replacing any other, and tells the
    /// sink. `None` when the key was unregistered meanwhile.
    pub(super) fn claim(self: &Arc<Self>, peer: SocketAddr) -> Option<IngestPublisher> {
        let _handover = self.handover();
        let id = self.publishers_seen.fetch_add(1, Ordering::Relaxed);
        let claimed = self.owner.send_if_modified(|owner| {
            if *owner == Owner::Unregistered {
                return false;
            }
            *owner = Owner::Publisher(id);
            true
        });
        if !claimed {
            return None;
        }
        (self.sink)(IngestEvent::Publishing { peer });
        Some(IngestPublisher {
            slot: self.clone(),
            id,
            owner: self.owner.subscribe(),
            finished: false,
        })
    }

    fn handover(&self) -> MutexGuard<'_, ()> {
        self.handover.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Why a publisher's connection lost its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum Superseded {
    #[error("another publisher took over the stream key")]
    TakenOver,
    #[error("the stream key was unregistered")]
    Unregistered,
}

/// One connection's hold on a key. Dropping it tells the sink `Ended`,
/// unless the key has moved on.
pub(super) struct IngestPublisher {
    slot: Arc<IngestSlot>,
    id: u64,
    owner: watch::Receiver<Owner>,
    finished: bool,
}

impl IngestPublisher {
    /// Hands `event` to the sink while this connection is the key's publisher.
    pub(super) fn deliver(&self, event: IngestEvent) {
        let _handover = self.slot.handover();
        if self.is_owner() {
            (self.slot.sink)(event);
        }
    }

    /// Resolves once another publisher took over or the key was unregistered.
    /// Cancel-safe.
    pub(super) async fn superseded(&mut self) -> Superseded {
        let me = Owner::Publisher(self.id);
        match self.owner.wait_for(|owner| *owner != me).await.map(|owner| *owner) {
            Ok(Owner::Unregistered) | Err(_) => Superseded::Unregistered,
            Ok(_) => Superseded::TakenOver,
        }
    }

    /// Tells the sink why the connection is being closed, and lets the key go.
    pub(super) fn refuse(mut self, reason: String) {
        self.finish(IngestEvent::Refused { reason });
    }

    fn finish(&mut self, last: IngestEvent) {
        self.finished = true;
        let _handover = self.slot.handover();
        if self.is_owner() {
            (self.slot.sink)(last);
            self.slot.owner.send_replace(Owner::Vacant);
        }
    }

    fn is_owner(&self) -> bool {
        // Copied out: a watch guard must not be held while the sink runs.
        let owner = *self.slot.owner.borrow();
        owner == Owner::Publisher(self.id)
    }
}

impl Drop for IngestPublisher {
    // However the connection ends (it stopped, closed, went silent, the
    // server shut down), the sink hears `Ended` once.
    fn drop(&mut self) {
        if !self.finished {
            self.finish(IngestEvent::Ended);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    /// A registered key whose sink records what it hears.
    fn recorded_key(keys: &Arc<IngestKeys>, key: &str) -> (IngestRegistration, Arc<Mutex<Vec<IngestEvent>>>) {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let sink_heard = heard.clone();
        let registration = keys
            .register(key, Arc::new(move |event| sink_heard.lock().unwrap().push(event)))
            .unwrap();
        (registration, heard)
    }

    fn frame(n: u8) -> IngestEvent {
        IngestEvent::Audio {
            pts_ms: u32::from(n),
            data: Bytes::from(vec![n]),
        }
    }

    #[test]
    fn keys_are_letters_digits_dashes_and_underscores() {
        let keys = Arc::new(IngestKeys::default());
        let sink: IngestSink = Arc::new(|_| {});
        assert!(keys.register("obs-Studio_1", sink.clone()).is_ok());
        for bad in ["", "a b", "a/b", "a?b", "a.b", "clé"] {
            assert!(
                matches!(keys.register(bad, sink.clone()), Err(ServerError::BadIngestKey)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_key_is_registered_once_and_free_again_after_its_registration_drops() {
        let keys = Arc::new(IngestKeys::default());
        let sink: IngestSink = Arc::new(|_| {});
        let first = keys.register("key", sink.clone()).unwrap();
        assert!(matches!(keys.register("key", sink.clone()), Err(ServerError::IngestKeyExists)));
        drop(first);
        assert!(keys.find("key").is_none());
        assert!(keys.register("key", sink).is_ok());
    }

    #[test]
    fn errors_and_debug_output_never_show_the_key() {
        let keys = Arc::new(IngestKeys::default());
        let sink: IngestSink = Arc::new(|_| {});
        let registration = keys.register("s3cret", sink.clone()).unwrap();
        assert!(!format!("{registration:?}").contains("s3cret"));
        let exists = keys.register("s3cret", sink.clone()).unwrap_err();
        let invalid = keys.register("s3cret!", sink).unwrap_err();
        assert!(!exists.to_string().contains("s3cret"), "{exists}");
        assert!(!invalid.to_string().contains("s3cret"), "{invalid}");
    }

    #[test]
    fn a_publisher_is_announced_delivers_and_ends_once() {
        let keys = Arc::new(IngestKeys::default());
        let (_registration, heard) = recorded_key(&keys, "key");
        let publisher = keys.find("key").unwrap().claim(peer(1)).unwrap();
        publisher.deliver(frame(1));
        drop(publisher);
        let expected = vec![IngestEvent::Publishing { peer: peer(1) }, frame(1), IngestEvent::Ended];
        assert_eq!(*heard.lock().unwrap(), expected);
    }

    #[tokio::test]
    async fn a_replaced_publisher_falls_silent_and_learns_it_was_taken_over() {
        let keys = Arc::new(IngestKeys::default());
        let (_registration, heard) = recorded_key(&keys, "key");
        let slot = keys.find("key").unwrap();
        let mut old = slot.claim(peer(1)).unwrap();
        let new = slot.claim(peer(2)).unwrap();
        old.deliver(frame(1));
        new.deliver(frame(2));
        assert_eq!(old.superseded().await, Superseded::TakenOver);
        drop(old);
        drop(new);
        let expected = vec![
            IngestEvent::Publishing { peer: peer(1) },
            IngestEvent::Publishing { peer: peer(2) },
            frame(2),
            IngestEvent::Ended,
        ];
        assert_eq!(*heard.lock().unwrap(), expected);
    }

    #[test]
    fn a_refused_publisher_is_not_also_ended() {
        let keys = Arc::new(IngestKeys::default());
        let (_registration, heard) = recorded_key(&keys, "key");
        let publisher = keys.find("key").unwrap().claim(peer(1)).unwrap();
        publisher.refuse("no".to_string());
        let expected = vec![
            IngestEvent::Publishing { peer: peer(1) },
            IngestEvent::Refused { reason: "no".to_string() },
        ];
        assert_eq!(*heard.lock().unwrap(), expected);
    }

    #[tokio::test]
    async fn unregistering_silences_the_publisher_and_stops_new_claims() {
        let keys = Arc::new(IngestKeys::default());
        let (registration, heard) = recorded_key(&keys, "key");
        let slot = keys.find("key").unwrap();
        let mut publisher = slot.claim(peer(1)).unwrap();
        drop(registration);
        publisher.deliver(frame(1));
        assert_eq!(publisher.superseded().await, Superseded::Unregistered);
        drop(publisher);
        assert!(slot.claim(peer(2)).is_none(), "a connection that found the slot before the drop");
        assert_eq!(*heard.lock().unwrap(), vec![IngestEvent::Publishing { peer: peer(1) }]);
    }

    #[test]
    fn a_sink_may_drop_its_own_registration() {
        let keys = Arc::new(IngestKeys::default());
        let registration: Arc<Mutex<Option<IngestRegistration>>> = Arc::default();
        let held = registration.clone();
        let sink: IngestSink = Arc::new(move |event| {
            if matches!(event, IngestEvent::Refused { .. }) {
                held.lock().unwrap().take();
            }
        });
        *registration.lock().unwrap() = Some(keys.register("key", sink).unwrap());
        let publisher = keys.find("key").unwrap().claim(peer(1)).unwrap();
        publisher.refuse("no".to_string());
        assert!(keys.find("key").is_none());
    }

    #[test]
    fn media_maps_to_events_with_pts_from_the_composition_time() {
        let keyframe = Bytes::from_static(&[0x17, 0x01, 0xff, 0xff, 0xd8, 0, 0, 0, 1, 0x65]);
        assert_eq!(
            video_event(1000, &keyframe),
            Some(IngestEvent::Video {
                dts_ms: 1000,
                pts_ms: 960,
                keyframe: true,
                data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
            })
        );
        assert_eq!(video_event(0, &Bytes::from_static(&[0x17, 0x02, 0, 0, 0])), None);
        assert_eq!(
            audio_event(23, &Bytes::from_static(&[0xaf, 0x01, 0x21])),
            Some(IngestEvent::Audio {
                pts_ms: 23,
                data: Bytes::from_static(&[0x21]),
            })
        );
    }

    #[test]
    fn unsupported_media_is_refused_with_a_sentence_naming_it() {
        let hevc = Bytes::from_static(b"\x90hvc1");
        let reason = "the publisher sent HEVC (Enhanced RTMP); Tutti takes H.264 video and AAC audio over RTMP";
        assert_eq!(video_event(0, &hevc), Some(IngestEvent::Refused { reason: reason.to_string() }));
        let Some(IngestEvent::Refused { reason }) = audio_event(0, &Bytes::from_static(&[0x2f, 0xff])) else {
            panic!("MP3 accepted")
        };
        assert!(reason.starts_with("the publisher sent MP3;"), "{reason}");
    }
}
