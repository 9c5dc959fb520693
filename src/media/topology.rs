//! Links between parts of a running pipeline that come and go on their own:
//! callers, shared encoders, outputs and the composition's fixed core.
//! Removing one part must leave every other part streaming, so each cross
//! link is recorded with its two owners, and undone by the part's teardown.

use gstreamer as gst;
use gstreamer::prelude::*;

use super::part;
use crate::model::ids::{OutputId, ParticipantId};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The composition's core: compositor, canvas tee, broadcast encode.
    Core,
    Participant(ParticipantId),
    /// A shared return encoder, by its bin's name.
    Encoder(String),
    Output(OutputId),
    /// The WHEP viewers' part.
    Viewers,
    /// A lower-bitrate picture for WebRTC guests on poor links, by its bin's name.
    Reduced(String),
}

#[derive(Debug)]
pub struct CrossLink {
    src: gst::Pad,
    sink: gst::Pad,
    from: Owner,
    to: Owner,
    /// Not linked yet: its sink side was not playing (see `link`).
    pending: bool,
}

/// Every link that crosses from one part into another.
#[derive(Debug, Default)]
pub struct Topology {
    links: Vec<CrossLink>,
}

impl Topology {
    /// Links `src` (owned by `from`) to `sink` (owned by `to`) and records it.
    ///
    /// A sink whose part is not playing yet (a part being built) is only
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

    /// Makes the pending links of `owner`: call once its part plays.
    pub fn link_pending(&mut self, owner: &Owner) -> Result<(), gst::PadLinkError> {
        for link in self.links.iter_mut().filter(|l| l.pending && (&l.from == owner || &l.to == owner)) {
            link.src.link(&link.sink)?;
            link.pending = false;
        }
        Ok(())
    }

    /// Takes every link touching `owner` out of the topology. From now on
    /// they carry no buffer in either direction (a probe drops them where
    /// they leave their source), so no shared element pushes into a part
    /// that is shutting down, nor the reverse. Non-blocking: undoing them
    /// ([`undo`]) is the teardown's job, off the engine thread.
    pub fn detach(&mut self, owner: &Owner) -> Vec<CrossLink> {
        let (touching, kept): (Vec<CrossLink>, Vec<CrossLink>) =
            std::mem::take(&mut self.links).into_iter().partition(|l| &l.from == owner || &l.to == owner);
        self.links = kept;
        for link in touching.iter().filter(|l| !l.pending) {
            drop_buffers(&link.src);
        }
        touching
    }

    /// Takes every link out, as `detach` does for one part: the whole
    /// composition is stopping.
    pub fn detach_all(&mut self) -> Vec<CrossLink> {
        let links = std::mem::take(&mut self.links);
        for link in links.iter().filter(|l| !l.pending) {
            drop_buffers(&link.src);
        }
        links
    }

    /// Where the recorded link from `src` goes (a caller's compositor pad, say).
    pub fn peer_of(&self, src: &gst::Pad) -> Option<gst::Pad> {
        self.links.iter().find(|l| &l.src == src).map(|l| l.sink.clone())
    }

    /// How many links come out of `from` (e.g. callers fed by an encoder).
    pub fn count_from(&self, from: &Owner) -> usize {
        self.links.iter().filter(|l| &l.from == from).count()
    }
}

fn drop_buffers(src: &gst::Pad) {
    src.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST, |_, _| gst::PadProbeReturn::Drop);
}

/// Unlinks detached links and gives their request pads back to the shared
/// elements. Done before the part stops: releasing an aggregator's pad
/// flushes it, which wakes a streaming thread of the part that waits there
/// (a serialized query waits until the compositor has taken everything
/// queued on its pad), so that the part's own pads can then deactivate.
pub fn undo(links: &[CrossLink]) {
    for link in links {
        if !link.pending {
            let _ = link.src.unlink(&link.sink);
        }
        part::release(&link.src);
        part::release(&link.sink);
    }
}
