//! A part of a composition's pipeline that comes and goes while the
//! composition plays: a caller, a shared encoder, the broadcast encode, an
//! output. Each is one `gst::Bin` named after its owner (`caller-{id}`,
//! `out-{id}`, `enc-{profile}-…`), added, started, stopped and removed as one
//! element:
//! - a bin changes its children's states sinks first, so no source inside
//!   it can start before what it feeds. A source that did (a mix-minus
//!   `appsrc` started before its payloader and rtpbin) got FLUSHING back,
//!   paused for good, and its caller heard nothing, with no error anywhere;
//! - it stops sinks first too, so a muxer that holds its input threads
//!   (splitmuxsink inside hlssink2 waits for its other stream) lets go before
//!   the queues feeding it are asked to stop their threads;
//! - a bus message maps to its owner through the bin it came from.
//!
//! What crosses from one part to another goes through the bins' ghost pads
//! (see [`super::topology`]); a part that feeds several others does so
//! through a [`Fanout`].

use gstreamer as gst;
use gstreamer::prelude::*;

use super::MediaError;

/// Adds `elements` to `bin` and links them in a chain.
pub fn add_chain(bin: &gst::Bin, elements: &[&gst::Element]) -> Result<(), MediaError> {
    bin.add_many(elements.iter().copied())?;
    gst::Element::link_many(elements.iter().copied())?;
    Ok(())
}

/// Exposes `pad` of an element inside `bin` as the bin's ghost pad `name`.
pub fn expose(bin: &gst::Bin, pad: &gst::Pad, name: &str) -> Result<gst::Pad, MediaError> {
    let ghost = gst::GhostPad::builder_with_target(pad)?.name(name).build();
    // A bin that already plays needs the new pad active before it is added.
    if bin.current_state() > gst::State::Ready {
        ghost.set_active(true)?;
    }
    bin.add_pad(&ghost)?;
    Ok(ghost.upcast())
}

/// Exposes an element's static pad `pad_name` as the bin's ghost pad `name`.
pub fn expose_static(bin: &gst::Bin, element: &gst::Element, pad_name: &str, name: &str) -> Result<gst::Pad, MediaError> {
    let pad = element
        .static_pad(pad_name)
        .ok_or_else(|| MediaError::Gst(format!("{} has no {pad_name} pad", element.name())))?;
    expose(bin, &pad, name)
}

/// A tee inside a part whose every subscriber gets a ghost src pad of its
/// own on the part's bin: the way one encode feeds several callers and
/// outputs that come and go.
#[derive(Clone)]
pub struct Fanout {
    bin: gst::Bin,
    tee: gst::Element,
}

impl Fanout {
    /// A tee named `name`, added to `bin`; its input is for the caller to link.
    pub fn new(bin: &gst::Bin, name: &str) -> Result<Fanout, MediaError> {
        let tee = super::make("tee", name)?;
        // No subscriber yet (or all gone) is normal, not an error.
        tee.set_property("allow-not-linked", true);
        bin.add(&tee)?;
        Ok(Fanout { bin: bin.clone(), tee })
    }

    pub fn tee(&self) -> &gst::Element {
        &self.tee
    }

    /// A new src pad on the part's bin carrying the tee's output.
    pub fn subscribe(&self) -> Result<gst::Pad, MediaError> {
        let src = self.tee.request_pad_simple("src_%u").ok_or_else(|| MediaError::Gst(format!("{} refused a src pad", self.tee.name())))?;
        let name = format!("{}-{}", self.tee.name(), src.name());
        match expose(&self.bin, &src, &name) {
            Ok(ghost) => Ok(ghost),
            Err(e) => {
                self.tee.release_request_pad(&src);
                Err(e)
            }
        }
    }
}

/// Gives back a pad that was requested for a cross link: a request pad of a
/// shared element (compositor, tee), or a subscriber's ghost pad on a
/// [`Fanout`]'s bin (then the tee's pad behind it too). Static pads stay.
pub fn release(pad: &gst::Pad) {
    if let Some(ghost) = pad.downcast_ref::<gst::GhostPad>() {
        let target = ghost.target();
        if let Some(bin) = ghost.parent_element() {
            if target.as_ref().is_some_and(is_requested) {
                let _ = bin.remove_pad(ghost);
            }
        }
        if let Some(target) = target {
            release(&target);
        }
        return;
    }
    if is_requested(pad) && let Some(element) = pad.parent_element() {
        element.release_request_pad(pad);
    }
}

fn is_requested(pad: &gst::Pad) -> bool {
    pad.pad_template().is_some_and(|t| t.presence() == gst::PadPresence::Request)
}
