//! One participant of a composition: a bin `caller-{id}` holding its seat
//! (its picture, its place in the mix, its mix-minus and composite:
//! [`super::seat`]) and its leg (how its media arrives and leaves:
//! [`super::leg`]).

use gstreamer as gst;

use super::MediaError;
use super::leg::rtp::{JoiningMedium, RtpContext, RtpLeg};
use super::mixer::AudioMix;
use super::seat::{Seat, SeatBuilder};
use crate::model::controls::ParticipantControls;
use crate::model::ids::ParticipantId;

/// What a participant's part needs from its composition.
pub struct JoinContext<'a> {
    pub mix: &'a AudioMix,
    /// The canvas frame rate; `None` in an audio-only composition.
    pub canvas_fps: Option<u32>,
    /// Whether it starts in the lobby (keying in a PIN): sent no picture until admitted.
    pub in_lobby: bool,
    pub rtp: RtpContext<'a>,
}

/// A participant's part of the pipeline.
pub struct ParticipantMedia {
    pub id: ParticipantId,
    /// As shown in its label and slate.
    pub name: String,
    /// What the producer set; the composition applies them.
    pub controls: ParticipantControls,
    pub bin: gst::Bin,
    pub seat: Seat,
    pub leg: RtpLeg,
}

impl ParticipantMedia {
    /// Builds a caller's bin (not yet in any pipeline). Its picture and its
    /// composite input are ghost pads for the composition to link.
    pub fn build(
        id: &ParticipantId,
        name: &str,
        media: (Option<JoiningMedium>, Option<JoiningMedium>),
        context: &JoinContext,
    ) -> Result<ParticipantMedia, MediaError> {
        let prefix = super::participant_part_name(id);
        let bin = gst::Bin::with_name(&prefix);
        let mut seat = SeatBuilder::new(&bin, &prefix, (id, name), context.mix, context.canvas_fps, context.in_lobby);
        let leg = RtpLeg::build(&bin, id, &mut seat, media, &context.rtp)?;
        let seat = seat.build()?;
        Ok(ParticipantMedia { id: id.clone(), name: name.to_string(), controls: ParticipantControls::default(), bin, seat, leg })
    }
}
