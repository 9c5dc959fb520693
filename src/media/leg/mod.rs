//! Legs: how a participant's media arrives and leaves. A leg decodes what
//! its caller sends into the participant's seat ([`super::seat`]) and takes
//! the seat's mix-minus and composite to the caller in its transport's
//! format; the mixer and the compositor never see which transport it is.
//! - [`rtp`]: plain RTP (or SRTP) with SDP, from the API or over SIP.

pub mod rtp;
