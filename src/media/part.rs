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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use gstreamer as gst;
use gstreamer::prelude::*;

use super::MediaError;
use crate::model::h264;

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
    expose(bin, &static_pad(element, pad_name)?, name)
}

fn static_pad(element: &gst::Element, pad_name: &str) -> Result<gst::Pad, MediaError> {
    element.static_pad(pad_name).ok_or_else(|| MediaError::Gst(format!("{} has no {pad_name} pad", element.name())))
}

/// Exposes an element's static sink pad `pad_name` as the bin's input
/// `name`, for a feed from a shared element (the canvas tee, a fanout):
/// whatever fails inside this part stays inside it (see [`Guard`]).
pub fn expose_input(bin: &gst::Bin, element: &gst::Element, pad_name: &str, name: &str) -> Result<gst::Pad, MediaError> {
    let target = static_pad(element, pad_name)?;
    let (chain, list) = Guard::pair();
    let ghost = gst::GhostPad::builder_with_target(&target)?
        .name(name)
        .chain_function(move |pad, parent, buffer| chain.pass(pad, || gst::ProxyPad::chain_default(pad, parent, buffer)))
        .chain_list_function(move |pad, parent, list_| list.pass(pad, || gst::ProxyPad::chain_list_default(pad, parent, list_)))
        .event_function(Guard::pass_event)
        .build();
    if bin.current_state() > gst::State::Ready {
        ghost.set_active(true)?;
    }
    bin.add_pad(&ghost)?;
    Ok(ghost.upcast())
}

/// Keeps a part's failure from flowing back into the tee that feeds it.
///
/// A tee returns the first failure of any of its src pads to its own
/// streaming thread, which then stops for every subscriber: a caller's
/// subscription refusing the composite's sticky events stopped the shared
/// encode, then through the canvas tee the compositor, every caller's video
/// and every output, for good. So a push the guarded pad fails is answered
/// "not linked" (which a tee with `allow-not-linked` ignores). A part
/// stopping (flushing while its state is locked for its teardown) or
/// finished (EOS) is simply skipped. Any other failure, FLUSHING from a
/// thread of the part that stopped on its own included, cuts the part off
/// for good and is posted on the bus as its error, which the engine reports
/// against its owner. Refused events are not passed back either: a refused
/// caps event shows up as a failed buffer right after.
struct Guard {
    /// Set on the first failure: from then on nothing goes through.
    cut: AtomicBool,
}

impl Guard {
    /// One guard, shared by a pad's chain and chain-list functions.
    fn pair() -> (Arc<Guard>, Arc<Guard>) {
        let guard = Arc::new(Guard { cut: AtomicBool::new(false) });
        (guard.clone(), guard)
    }

    fn pass(
        &self,
        pad: &impl IsA<gst::Pad>,
        push: impl FnOnce() -> Result<gst::FlowSuccess, gst::FlowError>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        if self.cut.load(Ordering::Relaxed) {
            return Err(gst::FlowError::NotLinked);
        }
        match push() {
            Ok(success) => Ok(success),
            Err(gst::FlowError::NotLinked | gst::FlowError::Eos) => Err(gst::FlowError::NotLinked),
            // A part being torn down has its state locked first (see `CompositionMedia::detach`).
            Err(gst::FlowError::Flushing) if owner_of(pad.upcast_ref()).is_none_or(|part| part.is_locked_state()) => {
                Err(gst::FlowError::NotLinked)
            }
            Err(failure) => {
                if !self.cut.swap(true, Ordering::SeqCst) {
                    report_cut_off(pad.upcast_ref(), failure);
                }
                Err(gst::FlowError::NotLinked)
            }
        }
    }

    fn pass_event(pad: &impl IsA<gst::Pad>, parent: Option<&gst::Object>, event: gst::Event) -> bool {
        let what = event.type_();
        if !gst::Pad::event_default(pad, parent, event) {
            tracing::debug!(pad = %pad.upcast_ref::<gst::Pad>().name(), ?what, "a guarded pad's part refused an event");
        }
        true
    }
}

/// Posts a guarded pad's failure on the bus as an error of the part it belongs to.
fn report_cut_off(pad: &gst::Pad, failure: gst::FlowError) {
    let Some(part) = owner_of(pad) else { return };
    let message = format!("{} stopped taking the shared stream at {} ({failure:?}); it was cut off, the rest of the composition goes on", part.name(), pad.name());
    let error = gst::message::Error::builder(gst::StreamError::Failed, &message).src(&part).build();
    let _ = part.post_message(error);
}

/// The part a guarded pad's failure belongs to: an input's own part; for a
/// fanout's subscription (guarded at its ghost pad's internal pad), the
/// subscriber it is linked to, or the fanout's part if none is linked.
fn owner_of(pad: &gst::Pad) -> Option<gst::Element> {
    match pad.parent().and_then(|p| p.downcast::<gst::GhostPad>().ok()) {
        Some(ghost) => ghost.peer().and_then(|p| p.parent_element()).or_else(|| ghost.parent_element()),
        None => pad.parent_element(),
    }
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
    ///
    /// The ghost pad is active and in the bin before the tee's new pad
    /// becomes its target. The tee is streaming: the first buffer it pushes
    /// into a new pad takes that pad's sticky events along, and a ghost pad
    /// not active yet (flushing) refused them, which its internal pad turns
    /// into GST_FLOW_ERROR. A tee returns any pad's error to its streaming
    /// thread, so a caller joining at the wrong millisecond (the ghost was
    /// targeted ~1.5 ms before it was activated) stopped the shared encode,
    /// then the compositor and every caller's video, for good.
    pub fn subscribe(&self) -> Result<gst::Pad, MediaError> {
        let src = self.tee.request_pad_simple("src_%u").ok_or_else(|| MediaError::Gst(format!("{} refused a src pad", self.tee.name())))?;
        // Guarded on the tee's side too: whatever fails past this pad (the
        // ghost, the link, the subscriber) stays out of the tee's thread.
        let (chain, list) = Guard::pair();
        let ghost = gst::GhostPad::builder(gst::PadDirection::Src)
            .name(format!("{}-{}", self.tee.name(), src.name()))
            .proxy_pad_chain_function(move |pad, parent, buffer| chain.pass(pad, || gst::ProxyPad::chain_default(pad, parent, buffer)))
            .proxy_pad_chain_list_function(move |pad, parent, list_| {
                list.pass(pad, || gst::ProxyPad::chain_list_default(pad, parent, list_))
            })
            .proxy_pad_event_function(Guard::pass_event)
            .build();
        let attach = || -> Result<(), MediaError> {
            if self.bin.current_state() > gst::State::Ready {
                ghost.set_active(true)?;
            }
            self.bin.add_pad(&ghost)?;
            ghost.set_target(Some(&src))?;
            Ok(())
        };
        match attach() {
            Ok(()) => Ok(ghost.upcast()),
            Err(e) => {
                self.tee.release_request_pad(&src);
                if ghost.parent().is_some() {
                    let _ = self.bin.remove_pad(&ghost);
                }
                Err(e)
            }
        }
    }
}

/// Stamps what `encoder` gives `by` earlier: its priming, the delay it puts
/// before the first sample it was given. An AAC encoder's priming (21 ms)
/// FLV and MPEG-TS have no way to mark for skipping, nor has RTP Opus's
/// lookahead (6.5 ms, an Ogg file's pre-skip): stamped as given, the sound
/// came that much after its picture in every player and endpoint.
pub fn stamp_earlier(encoder: &gst::Element, by: gst::ClockTime) -> Result<(), MediaError> {
    if by.is_zero() {
        return Ok(());
    }
    let pad = encoder.static_pad("src").ok_or_else(|| MediaError::Gst("the audio encoder has no src pad".into()))?;
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(buffer) = info.buffer_mut() {
            let buffer = buffer.make_mut();
            buffer.set_pts(buffer.pts().map(|t| t.saturating_sub(by)));
            buffer.set_dts(buffer.dts().map(|t| t.saturating_sub(by)));
        }
        gst::PadProbeReturn::Ok
    });
    Ok(())
}

/// Takes the filler data out of the H.264 access units leaving `element`.
/// The broadcast encode pads to strict CBR for CDN ingest; a caller or a
/// browser decodes nothing from the padding and pays for it: at 320x240
/// and 2.5 Mbit/s it was 2.35 of the 2.47 Mbit/s each was sent, and a WHEP
/// viewer's pacer queued it for up to 1.5 s.
pub fn drop_h264_filler(element: &gst::Element) -> Result<(), MediaError> {
    let pad = element.static_pad("src").ok_or_else(|| MediaError::Gst("an H.264 element without a src pad".into()))?;
    pad.add_probe(gst::PadProbeType::BUFFER, |_, info| {
        if let Some(buffer) = info.buffer_mut() {
            let kept = buffer.map_readable().ok().and_then(|map| h264::without_filler(&map));
            if let Some(kept) = kept {
                let mut slimmer = gst::Buffer::from_mut_slice(kept);
                let copied = buffer.copy_into(
                    slimmer.make_mut(),
                    gst::BufferCopyFlags::FLAGS | gst::BufferCopyFlags::TIMESTAMPS | gst::BufferCopyFlags::META,
                    ..,
                );
                if copied.is_ok() {
                    *buffer = slimmer;
                }
            }
        }
        gst::PadProbeReturn::Ok
    });
    Ok(())
}

/// Gives back a pad that was requested for a cross link: a request pad of a
/// shared element (compositor, tee), or a subscriber's ghost pad on a
/// [`Fanout`]'s bin (then the tee's pad behind it too). Static pads stay.
///
/// The requested pad goes first: a tee that pushes into a pad being
/// released takes the result as "not linked", but one pushing into a pad
/// still its own whose ghost was already removed (deactivated, so flushing)
/// takes FLUSHING back and stops its streaming thread for every subscriber.
pub fn release(pad: &gst::Pad) {
    if let Some(ghost) = pad.downcast_ref::<gst::GhostPad>() {
        let target = ghost.target();
        let requested = target.as_ref().is_some_and(is_requested);
        if let Some(target) = target {
            release(&target);
        }
        if requested && let Some(bin) = ghost.parent_element() {
            let _ = bin.remove_pad(ghost);
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

/// Sends a force-key-unit event upstream from `pad`: to an encoder it means
/// "emit a keyframe", to rtpbin's receive side it becomes a PLI/FIR.
pub fn request_keyframe_upstream(pad: &gst::Pad) {
    let event = gstreamer_video::UpstreamForceKeyUnitEvent::builder().all_headers(true).build();
    pad.push_event(event);
}
