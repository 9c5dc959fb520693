//! One participant of a composition: a bin `caller-{id}` holding its seat
//! (its picture, its place in the mix, its mix-minus and composite:
//! [`super::seat`]) and its leg (how its media arrives and leaves:
//! [`super::leg`]).

use gstreamer as gst;
use std::time::Duration;

use super::MediaError;
use super::leg::Leg;
use super::leg::publisher::{PublisherHandler, PublisherLeg};
use super::leg::rtp::{JoiningMedium, RtpContext, RtpLeg};
use super::leg::webrtc::{GuestHandler, GuestMedia, WebRtcLeg};
use super::mixer::AudioMix;
use super::profiles::Profiles;
use super::seat::{Seat, SeatBuilder};
use crate::model::controls::ParticipantControls;
use crate::model::ids::ParticipantId;
use crate::model::ingest::IngestSink;

/// What a participant's part needs from its composition.
pub struct JoinContext<'a> {
    pub profiles: &'a Profiles,
    pub mix: &'a AudioMix,
    /// The canvas frame rate; `None` in an audio-only composition.
    pub canvas_fps: Option<u32>,
    /// Whether it starts in the lobby (keying in a PIN): sent no picture until admitted.
    pub in_lobby: bool,
}

/// How a participant's media comes and goes.
pub enum Joining {
    /// RTP on the negotiated media and sockets.
    Rtp { media: Box<(Option<JoiningMedium>, Option<JoiningMedium>)>, context: RtpContext },
    /// An RTMP or SRT publisher, played this long after its frames arrive (at the
    /// earliest); told when it starts, stops or is refused.
    Publisher { playout_delay: Duration, on_change: PublisherHandler },
    /// A browser guest over WebRTC, its frames played this long after they
    /// arrive (at the earliest); told when it connects and leaves.
    WebRtc { media: GuestMedia, playout_delay: Duration, on_change: GuestHandler },
}

/// What a participant's transport is handed, besides its part: where a
/// publisher's frames go, or the handler a guest's offer is answered with.
pub enum Plug {
    Ingest(IngestSink),
    WebRtc(crate::webrtc::PeerHandler),
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
    pub leg: Leg,
}

impl ParticipantMedia {
    /// Builds a participant's bin (not yet in any pipeline). Its picture and
    /// its composite input are ghost pads for the composition to link. A
    /// publisher participant comes with the sink its publisher's media goes to,
    /// a guest with the handler its offer is answered with.
    pub fn build(
        id: &ParticipantId,
        name: &str,
        joining: Joining,
        context: &JoinContext,
    ) -> Result<(ParticipantMedia, Option<Plug>), MediaError> {
        let prefix = super::participant_part_name(id);
        let bin = gst::Bin::with_name(&prefix);
        let mut seat = SeatBuilder::new(&bin, &prefix, (id, name), context.mix, context.canvas_fps, context.in_lobby);
        let (leg, plug) = match joining {
            Joining::Rtp { media, context: rtp } => (Leg::Rtp(Box::new(RtpLeg::build(&bin, id, &mut seat, *media, context.profiles, &rtp)?)), None),
            Joining::Publisher { playout_delay, on_change } => {
                let (leg, sink) = PublisherLeg::build(&bin, &mut seat, context.profiles, playout_delay, on_change)?;
                (Leg::Publisher(leg), Some(Plug::Ingest(sink)))
            }
            Joining::WebRtc { media, playout_delay, on_change } => {
                let (leg, handler) = WebRtcLeg::build(&bin, &mut seat, context.profiles, media, playout_delay, on_change)?;
                (Leg::WebRtc(leg), Some(Plug::WebRtc(handler)))
            }
        };
        let seat = seat.build()?;
        let participant = ParticipantMedia { id: id.clone(), name: name.to_string(), controls: ParticipantControls::default(), bin, seat, leg };
        Ok((participant, plug))
    }
}
