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
    /// Drops buffers until the part on the far side plays (see `link`).
    gate: Option<gst::PadProbeId>,
}

/// The elements a part owns, and every link that crosses into or out of it.
#[derive(Debug, Default)]
pub struct Topology {
    links: Vec<CrossLink>,
}

impl Topology {
    /// Links `src` (owned by `from`) to `sink` (owned by `to`) and records it.
    ///
    /// The link drops buffers until `open_gates` is called for one of its
    /// owners, once the new part's elements play. Otherwise a running tee
    /// can push into an element still in NULL, get FLUSHING back and pass
    /// it upstream, which stops the shared streaming thread for good: the
    /// composite (or an encoder, or the broadcast) then stalls for everyone.
    pub fn link(&mut self, src: &gst::Pad, sink: &gst::Pad, from: Owner, to: Owner) -> Result<(), gst::PadLinkError> {
        let gate = src.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST, |_, _| gst::PadProbeReturn::Drop);
        if let Err(e) = src.link(sink) {
            if let Some(gate) = gate {
                src.remove_probe(gate);
            }
            return Err(e);
        }
        self.links.push(CrossLink { src: src.clone(), sink: sink.clone(), from, to, gate });
        Ok(())
    }

    /// Lets buffers through every link of `owner` still gated: call once
    /// its elements play.
    pub fn open_gates(&mut self, owner: &Owner) {
        for link in self.links.iter_mut().filter(|l| &l.from == owner || &l.to == owner) {
            if let Some(gate) = link.gate.take() {
                link.src.remove_probe(gate);
            }
        }
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

        for link in &touching {
            link.src.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST, |_, _| gst::PadProbeReturn::Drop);
        }
        for element in elements {
            let _ = element.set_state(gst::State::Null);
        }
        for link in &touching {
            let _ = link.src.unlink(&link.sink);
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
