//! A live source without a thread of its own: the mixer pushes each block
//! straight downstream from its own threads (`mixer.rs`).
//!
//! Why not `appsrc`: an appsrc hands every buffer to a streaming thread of
//! its own. One per caller woke 50 times a second each to encode one block:
//! at 150 audio-only callers that was 14 000 context switches a second, the
//! largest share of the kernel's time on a virtual machine. Pushed by the
//! mixer's pushing threads (one per core), they take one hand-over per
//! thread and tick instead of one per listener.

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gstreamer as gst;
use std::sync::{LazyLock, OnceLock};

glib::wrapper! {
    pub struct MixFeed(ObjectSubclass<MixFeedImp>) @extends gst::Element, gst::Object;
}

impl MixFeed {
    /// A feed named `name` that sends `caps` before its first buffer.
    pub fn new(name: &str, caps: gst::Caps) -> MixFeed {
        let feed: MixFeed = glib::Object::builder().property("name", name).build();
        feed.imp().caps.set(caps).expect("a new feed has no caps yet");
        feed
    }

    /// Pushes `buffer` downstream from the calling thread. The caller makes
    /// sure only one thread pushes into a feed at a time.
    pub fn push(&self, buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        let pad = &self.imp().src;
        // Sticky events go at the first push after each activation (a
        // deactivated pad forgets them, and a flushing one refuses them).
        if pad.sticky_event::<gst::event::Segment>(0).is_none() {
            let caps = self.imp().caps.get().expect("built with caps").clone();
            let stream_start = gst::event::StreamStart::new(&self.name());
            let segment = gst::event::Segment::new(&gst::FormattedSegment::<gst::ClockTime>::new());
            for event in [stream_start, gst::event::Caps::new(&caps), segment] {
                if !pad.push_event(event) {
                    return Err(gst::FlowError::Flushing);
                }
            }
        }
        pad.push(buffer)
    }
}

pub struct MixFeedImp {
    src: gst::Pad,
    caps: OnceLock<gst::Caps>,
}

#[glib::object_subclass]
impl ObjectSubclass for MixFeedImp {
    const NAME: &'static str = "TuttiMixFeed";
    type Type = MixFeed;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let template = klass.pad_template("src").expect("a src template");
        let src = gst::Pad::builder_from_template(&template)
            .query_function(|pad, parent, query| match query.view_mut() {
                // Live, and its blocks leave when stamped: no latency of its own.
                gst::QueryViewMut::Latency(latency) => {
                    latency.set(true, gst::ClockTime::ZERO, gst::ClockTime::NONE);
                    true
                }
                _ => gst::Pad::query_default(pad, parent, query),
            })
            .build();
        MixFeedImp { src, caps: OnceLock::new() }
    }
}

impl ObjectImpl for MixFeedImp {
    fn constructed(&self) {
        self.parent_constructed();
        self.obj().add_pad(&self.src).expect("a new element takes its pad");
    }
}

impl GstObjectImpl for MixFeedImp {}

impl ElementImpl for MixFeedImp {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new("Tutti mix feed", "Source/Audio",
                "Live audio pushed by Tutti's mixer from its own threads", "Tutti")
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            vec![gst::PadTemplate::new("src", gst::PadDirection::Src, gst::PadPresence::Always, &gst::Caps::new_any())
                .expect("a valid template")]
        });
        TEMPLATES.as_ref()
    }

    fn change_state(&self, transition: gst::StateChange) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        let success = self.parent_change_state(transition)?;
        // A live source: nothing to preroll.
        match transition {
            gst::StateChange::ReadyToPaused | gst::StateChange::PlayingToPaused => Ok(gst::StateChangeSuccess::NoPreroll),
            _ => Ok(success),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn sends_its_caps_and_segment_once_then_every_buffer_from_the_pushing_thread() {
        gst::init().unwrap();
        let caps = gst::Caps::builder("audio/x-raw").field("rate", 48_000i32).build();
        let feed = MixFeed::new("feed", caps.clone());
        let sink = gst::ElementFactory::make("fakesink").property("sync", false).build().unwrap();
        let pipeline = gst::Pipeline::new();
        pipeline.add_many([feed.upcast_ref(), &sink]).unwrap();
        feed.link(&sink).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = seen.clone();
        sink.static_pad("sink").unwrap().add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| {
                let what = match &info.data {
                    Some(gst::PadProbeData::Buffer(_)) => format!("buffer on {:?}", std::thread::current().id()),
                    Some(gst::PadProbeData::Event(event)) => format!("{:?}", event.type_()),
                    _ => String::new(),
                };
                into.lock().unwrap().push(what);
                gst::PadProbeReturn::Ok
            },
        );
        pipeline.set_state(gst::State::Playing).unwrap();
        assert_eq!(feed.current_state(), gst::State::Playing, "a live source does not wait for preroll");
        for _ in 0..3 {
            feed.push(gst::Buffer::with_size(4).unwrap()).unwrap();
        }
        pipeline.set_state(gst::State::Null).unwrap();
        let here = format!("buffer on {:?}", std::thread::current().id());
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen, ["StreamStart", "Caps", "Segment", &here, &here, &here].map(String::from));
        assert_eq!(feed.push(gst::Buffer::with_size(4).unwrap()), Err(gst::FlowError::Flushing));
    }
}
