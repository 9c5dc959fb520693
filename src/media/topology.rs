//! Links between parts of a running pipeline that come and go on their own:
//! callers, shared encoders and the composition's fixed core. Removing one
//! part must leave every other part streaming, so each cross link is
//! recorded with its two owners and torn down in a fixed order.

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::model::codec::VideoCodec;
use crate::model::ids::ParticipantId;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The composition's core: compositor, mixers' shared sources, tees.
    Core,
    Participant(ParticipantId),
    Encoder(VideoCodec),
    /// A live output (HLS, recording) by its id.
    Output(String),
}

#[derive(Debug)]
struct CrossLink {
    src: gst::Pad,
    sink: gst::Pad,
    from: Owner,
    to: Owner,
    /// Not linked yet: its sink side was not playing (see `link`).
    pending: bool,
}

/// The elements a part owns, and every link that crosses into or out of it.
#[derive(Debug, Default)]
pub struct Topology {
    links: Vec<CrossLink>,
}

impl Topology {
    /// Links `src` (owned by `from`) to `sink` (owned by `to`) and records it.
    ///
    /// A sink whose element is not playing yet (a part being built) is only
    /// linked by `link_pending`, once that part plays. A running tee linked to
    /// an inactive pad pushes its sticky events there first, gets FLUSHING
    /// back before any probe can drop the buffer, and returns it upstream:
    /// that stops the shared streaming thread for good, and the composite,
    /// an encoder or the broadcast freezes for everyone without an error.
    pub fn link(&mut self, src: &gst::Pad, sink: &gst::Pad, from: Owner, to: Owner) -> Result<(), gst::PadLinkError> {
        let sink_plays = sink.parent_element().is_some_and(|e| e.current_state() == gst::State::Playing);
        if sink_plays {
            src.link(sink)?;
        }
        self.links.push(CrossLink { src: src.clone(), sink: sink.clone(), from, to, pending: !sink_plays });
        Ok(())
    }

    /// Makes the pending links of `owner`: call once its elements play.
    pub fn link_pending(&mut self, owner: &Owner) -> Result<(), gst::PadLinkError> {
        for link in self.links.iter_mut().filter(|l| l.pending && (&l.from == owner || &l.to == owner)) {
            link.src.link(&link.sink)?;
            link.pending = false;
        }
        Ok(())
    }

    /// Detaches `owner` and stops its `elements`, leaving the rest playing:
    /// 1. every link touching it drops buffers, so no shared element pushes
    ///    into a part that is shutting down, nor the reverse;
    /// 2. its elements go to NULL, stopping their streaming threads;
    /// 3. links are undone and request pads given back to their elements;
    /// 4. its elements leave the pipeline.
    pub fn remove(&mut self, owner: &Owner, pipeline: &gst::Pipeline, elements: &[gst::Element]) {
        let (touching, kept): (Vec<CrossLink>, Vec<CrossLink>) =
            std::mem::take(&mut self.links).into_iter().partition(|l| &l.from == owner || &l.to == owner);
        self.links = kept;

        for link in touching.iter().filter(|l| !l.pending) {
            link.src.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST, |_, _| gst::PadProbeReturn::Drop);
        }
        for element in elements {
            let _ = element.set_state(gst::State::Null);
        }
        for link in &touching {
            if !link.pending {
                let _ = link.src.unlink(&link.sink);
            }
            release_if_requested(&link.src);
            release_if_requested(&link.sink);
        }
        for element in elements {
            let _ = pipeline.remove(element);
        }
    }

    /// How many links come out of `from` (e.g. callers fed by an encoder).
    pub fn count_from(&self, from: &Owner) -> usize {
        self.links.iter().filter(|l| &l.from == from).count()
    }
}

fn release_if_requested(pad: &gst::Pad) {
    let requested = pad.pad_template().is_some_and(|t| t.presence() == gst::PadPresence::Request);
    if requested && let Some(element) = pad.parent_element() {
        element.release_request_pad(pad);
    }
}
