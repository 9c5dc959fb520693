//! A participant's seat: what the layout and the mixer touch of it, whatever
//! its transport. Its picture on the way to the compositor, its audio into
//! the mix, its mix-minus out of it, and where the encoded composite comes in.
//!
//! ```text
//!        leg (RTP, RTMP)                 seat                     composition
//!  … ─► video decoder ───────► [picture] (scale to cell, label, slate) ─► compositor
//!  … ─► audio decoder ───────► convert ─► resample ─► appsink ─────────► mixing thread
//!  … ◄─ encoder ◄──────────── appsrc (its mix-minus) ◄─────────────────── mixing thread
//!  … ◄─ payloader ◄────────── [composite] ◄────────────────────────────── shared encoder
//! ```
//!
//! A leg ([`super::leg`]) brings its caller's decoded media here and takes
//! the mix-minus and the composite to the far end, in whatever wire format
//! its transport speaks. Everything lives in the participant's one bin.

use gstreamer as gst;
use gstreamer::prelude::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::lipsync::VideoLead;
use super::mixer::AudioMix;
use super::opus::ShareKey;
use super::part::{add_chain, expose_input, request_keyframe_upstream};
use super::picture::Picture;
use super::{MediaError, make};
use crate::model::codec::VideoCodec;
use crate::model::ids::ParticipantId;

/// A participant's place in the picture and in the mix.
pub struct Seat {
    /// Its picture (or its slate) on the way to the compositor; `None` in an
    /// audio-only composition.
    pub picture: Option<Picture>,
    /// How much earlier than stamped the composite shows its picture; read
    /// where its audio enters the mix (`lipsync.rs`).
    pub video_lead: VideoLead,
    /// Where the encoded composite comes in, and in which codec.
    pub composite_in: Option<(VideoCodec, gst::Pad)>,
    /// Off while it is in the lobby: it is sent no picture of the room.
    admitted: Arc<AtomicBool>,
}

impl Seat {
    /// Whether it is still in the lobby (keying in a PIN).
    pub fn in_lobby(&self) -> bool {
        !self.admitted.load(Ordering::SeqCst)
    }

    /// Out of the lobby: it is sent the composite from a keyframe on.
    pub fn admit(&self) {
        if !self.admitted.swap(true, Ordering::SeqCst) {
            self.request_composite_keyframe();
        }
    }

    /// Asks the composite's encoder for a keyframe, for a newcomer.
    pub fn request_composite_keyframe(&self) {
        if let Some((_, pad)) = &self.composite_in {
            request_keyframe_upstream(pad);
        }
    }
}

/// Builds a seat in a participant's bin as its leg hands it media.
pub struct SeatBuilder<'a> {
    bin: &'a gst::Bin,
    /// The participant's part name, `caller-{id}`: its elements' prefix.
    prefix: &'a str,
    id: &'a ParticipantId,
    name: &'a str,
    mix: &'a AudioMix,
    /// The canvas frame rate; `None` in an audio-only composition.
    canvas_fps: Option<u32>,
    seat: Seat,
}

impl<'a> SeatBuilder<'a> {
    pub fn new(
        bin: &'a gst::Bin,
        prefix: &'a str,
        participant: (&'a ParticipantId, &'a str),
        mix: &'a AudioMix,
        canvas_fps: Option<u32>,
        in_lobby: bool,
    ) -> SeatBuilder<'a> {
        let (id, name) = participant;
        let seat = Seat { picture: None, video_lead: VideoLead::default(), composite_in: None, admitted: Arc::new(AtomicBool::new(!in_lobby)) };
        SeatBuilder { bin, prefix, id, name, mix, canvas_fps, seat }
    }

    fn element_name(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// Whether the composition shows pictures (it is not audio-only): a leg
    /// decodes no video otherwise.
    pub fn shows_pictures(&self) -> bool {
        self.canvas_fps.is_some()
    }

    /// The leg's decoded video becomes the participant's picture.
    pub fn video_from(&mut self, decoder: &gst::Element) -> Result<(), MediaError> {
        if let Some(fps) = self.canvas_fps {
            self.seat.picture = Some(Picture::build(self.bin, self.prefix, self.id, self.name, Some(decoder), fps)?);
        }
        Ok(())
    }

    /// The leg's decoded audio goes into the mix, in the mix's format.
    pub fn audio_from(&mut self, decoder: &gst::Element) -> Result<(), MediaError> {
        let convert = make("audioconvert", &self.element_name("aconv"))?;
        let resample = make("audioresample", &self.element_name("aresample"))?;
        let to_mix = self.mix.input(self.id, &self.element_name("ato-mix"), self.seat.video_lead.clone())?;
        add_chain(self.bin, &[&convert, &resample, &to_mix])?;
        decoder.link(&convert)?;
        Ok(())
    }

    /// The live source of what the participant hears, in the mix's format,
    /// for the leg to encode; `share` is its encoder's key (see
    /// [`AudioMix::mix_minus`]).
    pub fn mix_minus(&self, share: Option<ShareKey>) -> Result<gst::Element, MediaError> {
        self.mix.mix_minus(self.id, &self.element_name("amix-minus"), share)
    }

    /// The encoded composite, in `codec`, comes in at `element`'s sink pad
    /// (the leg's payloader, say), through the bin's `composite` pad, which
    /// this returns.
    pub fn composite_to(&mut self, codec: VideoCodec, element: &gst::Element) -> Result<gst::Pad, MediaError> {
        let pad = expose_input(self.bin, element, "sink", "composite")?;
        self.seat.composite_in = Some((codec, pad.clone()));
        Ok(pad)
    }

    /// Whether the participant is out of the lobby; the leg sends it no
    /// picture while this is off.
    pub fn admitted(&self) -> Arc<AtomicBool> {
        self.seat.admitted.clone()
    }

    /// The seat; a participant whose leg brought no video shows its slate.
    pub fn build(mut self) -> Result<Seat, MediaError> {
        if let Some(fps) = self.canvas_fps
            && self.seat.picture.is_none()
        {
            self.seat.picture = Some(Picture::build(self.bin, self.prefix, self.id, self.name, None, fps)?);
        }
        Ok(self.seat)
    }
}
