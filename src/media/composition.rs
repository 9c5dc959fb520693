//! A composition's pipeline: the fixed core (compositor, audio mix thread)
//! built at creation, callers and shared encoders added and removed live,
//! and the broadcast encode with its outputs ([`broadcast`]).

mod broadcast;

pub use broadcast::{FileOutputStatus, OutputKey, OutputPaths};

use gstreamer as gst;
use gstreamer::prelude::*;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use super::participant::{
    CellLink, MediumState, ParticipantMedia, depayloader, mark_packet, payloader, rtp_caps, session_for,
};
use super::mixer::{AudioMix, MixFormat};
use super::profiles::{EncoderSettings, Profiles};
use super::topology::{Owner, Topology};
use super::{EventSink, MediaError, MediaEvent, make};
use crate::model::codec::{AudioCodec, Codec, MediaKind, VideoCodec};
use crate::model::composition::CompositionConfig;
use crate::model::ids::{CompositionId, ParticipantId};
use crate::model::layout;
use crate::model::sdp::NegotiatedMedia;
use crate::ports::PortPair;

#[derive(Clone, Debug)]
pub struct MediaSettings {
    pub jitter_buffer: Duration,
}

/// Colour of the slate shown for a caller without video (ARGB).
const SLATE_COLOUR: u32 = 0xff2b_2f36;

/// A caller's negotiated medium with the sockets Tutti answered with.
pub struct JoiningMedium {
    pub negotiated: NegotiatedMedia,
    pub ports: PortPair,
}

pub struct CompositionMedia {
    id: CompositionId,
    pipeline: gst::Pipeline,
    /// None in an audio-only composition.
    canvas: Option<VideoCore>,
    /// Every caller's mix-minus and the broadcast's full mix.
    mix: AudioMix,
    config: CompositionConfig,
    profiles: Arc<Profiles>,
    settings: MediaSettings,
    topology: Topology,
    encoders: HashMap<VideoCodec, SharedEncoder>,
    /// In join order, which is also the layout order.
    participants: Vec<ParticipantMedia>,
    broadcast: Option<broadcast::Broadcast>,
    /// One per file output, tripped from the bus when its branch fails.
    fuses: Fuses,
}

/// Output key → tripped? A failing file output (disk full, say) must not
/// send its error back up the shared encode: once its fuse trips, the tee
/// drops what it would push into that branch. Tripped from the bus handler,
/// which runs synchronously in the failing thread, before the next buffer.
type Fuses = Arc<std::sync::Mutex<HashMap<String, Arc<std::sync::atomic::AtomicBool>>>>;

/// The compositor and the tee that hands its canvas to the encoders.
struct VideoCore {
    compositor: gst::Element,
    tee: gst::Element,
}

/// One encode of the composite, fanned out to every caller using its codec.
struct SharedEncoder {
    elements: Vec<gst::Element>,
    tee: gst::Element,
}

impl CompositionMedia {
    pub fn new(
        id: CompositionId,
        config: CompositionConfig,
        profiles: Arc<Profiles>,
        settings: MediaSettings,
        events: EventSink,
        player: Option<crate::rtmp::StreamFeed>,
    ) -> Result<CompositionMedia, MediaError> {
        let pipeline = gst::Pipeline::with_name(&format!("comp-{id}"));
        let n = |role: &str| format!("comp-{id}-{role}");
        let upstream_latency = settings.jitter_buffer + Duration::from_millis(20);

        let canvas = if config.audio_only { None } else { Some(build_video_core(&pipeline, &config, &n, upstream_latency)?) };
        let mix = AudioMix::start(&format!("mix-{id}"), mix_format(&config), &pipeline)?;

        let fuses = Fuses::default();
        watch_bus(&pipeline, id.clone(), events, fuses.clone());
        pipeline.set_state(gst::State::Playing)?;

        let mut media = CompositionMedia {
            id,
            pipeline,
            canvas,
            mix,
            config,
            profiles,
            settings,
            topology: Topology::default(),
            encoders: HashMap::new(),
            participants: Vec::new(),
            broadcast: None,
            fuses,
        };
        if media.canvas.is_some() {
            media.build_broadcast(player)?;
        }
        Ok(media)
    }

    pub fn id(&self) -> &CompositionId {
        &self.id
    }

    pub fn participant(&self, id: &ParticipantId) -> Option<&ParticipantMedia> {
        self.participants.iter().find(|p| &p.id == id)
    }

    /// Recomputes the pipeline latency after an element reported a change.
    pub fn recalculate_latency(&self) {
        let _ = self.pipeline.recalculate_latency();
    }

    /// Adds a caller to the running pipeline. On error nothing of it stays.
    pub fn add_participant(
        &mut self,
        id: ParticipantId,
        name: &str,
        audio: Option<JoiningMedium>,
        video: Option<JoiningMedium>,
    ) -> Result<(), MediaError> {
        let mut elements = Vec::new();
        let owner = Owner::Participant(id.clone());
        let result = self
            .build_participant(&id, name, audio, video, &mut elements)
            .and_then(|participant| Ok(self.topology.link_pending(&owner).map(|()| participant)?));
        match result {
            Ok(participant) => {
                // The newcomer needs a keyframe of the composite right away.
                if let Some(pay) = self.pipeline.by_name(&format!("caller-{id}-vpay")) {
                    request_keyframe_upstream(&pay.static_pad("sink").expect("payloader has a sink pad"));
                }
                self.participants.push(participant);
                self.relayout();
                Ok(())
            }
            Err(e) => {
                self.mix.remove(&id);
                self.topology.remove(&owner, &self.pipeline, &elements);
                self.drop_unused_encoders();
                Err(e)
            }
        }
    }

    fn build_participant(
        &mut self,
        id: &ParticipantId,
        name: &str,
        audio: Option<JoiningMedium>,
        video: Option<JoiningMedium>,
        elements: &mut Vec<gst::Element>,
    ) -> Result<ParticipantMedia, MediaError> {
        let owner = Owner::Participant(id.clone());
        let prefix = format!("caller-{id}");
        let n = |role: &str| format!("{prefix}-{role}");
        let add = |elements: &mut Vec<gst::Element>, pipeline: &gst::Pipeline, e: gst::Element| -> Result<gst::Element, MediaError> {
            pipeline.add(&e)?;
            elements.push(e.clone());
            Ok(e)
        };

        let rtpbin = add(elements, &self.pipeline, make("rtpbin", &n("rtpbin"))?)?;
        rtpbin.set_property("latency", self.settings.jitter_buffer.as_millis() as u32);
        // AVPF timing lets a PLI leave at once rather than at the next regular RTCP report.
        rtpbin.set_property_from_str("rtp-profile", "avpf");
        rtpbin.set_property("do-lost", true);

        let mut participant = ParticipantMedia {
            id: id.clone(),
            rtpbin: rtpbin.clone(),
            elements: Vec::new(),
            cell: None,
            video_encoder: None,
            audio: None,
            video: None,
            _leases: Vec::new(),
        };
        let mut funnels: [Option<gst::Element>; 2] = [None, None];

        for medium in [audio, video].into_iter().flatten() {
            let JoiningMedium { negotiated, ports } = medium;
            let kind = negotiated.kind();
            let session = session_for(kind);
            let tag = match kind {
                MediaKind::Audio => "a",
                MediaKind::Video => "v",
            };
            let rtp_socket = gio_socket(ports.rtp.into())?;
            let rtcp_socket = if negotiated.rtcp_mux { rtp_socket.clone() } else { gio_socket(ports.rtcp.into())? };
            participant._leases.push(ports.lease);
            let last_packet_ms = Arc::new(AtomicU64::new(0));

            // Receive: RTP (and muxed RTCP) on the RTP socket, RTCP on its own.
            let receives = negotiated.direction.receives();
            if receives || negotiated.rtcp_mux {
                let src = add(elements, &self.pipeline, make("udpsrc", &n(&format!("{tag}rtp-in")))?)?;
                src.set_property("socket", &rtp_socket);
                src.set_property("close-socket", false);
                src.set_property("caps", rtp_caps(&negotiated));
                link_to_request(&src, &rtpbin, &format!("recv_rtp_sink_{session}"))?;
                let rtcp_in = if negotiated.rtcp_mux {
                    let appsrc = add(elements, &self.pipeline, make("appsrc", &n(&format!("{tag}rtcp-demux")))?)?;
                    appsrc.set_property("caps", gst::Caps::new_empty_simple("application/x-rtcp"));
                    appsrc.set_property("is-live", true);
                    appsrc.set_property("do-timestamp", true);
                    appsrc.set_property_from_str("format", "time");
                    split_muxed_rtcp(&src, &appsrc, receives);
                    appsrc
                } else {
                    let rtcp = add(elements, &self.pipeline, make("udpsrc", &n(&format!("{tag}rtcp-in")))?)?;
                    rtcp.set_property("socket", &rtcp_socket);
                    rtcp.set_property("close-socket", false);
                    rtcp.set_property("caps", gst::Caps::new_empty_simple("application/x-rtcp"));
                    rtcp
                };
                link_to_request(&rtcp_in, &rtpbin, &format!("recv_rtcp_sink_{session}"))?;
            } else {
                let rtcp = add(elements, &self.pipeline, make("udpsrc", &n(&format!("{tag}rtcp-in")))?)?;
                rtcp.set_property("socket", &rtcp_socket);
                rtcp.set_property("close-socket", false);
                rtcp.set_property("caps", gst::Caps::new_empty_simple("application/x-rtcp"));
                link_to_request(&rtcp, &rtpbin, &format!("recv_rtcp_sink_{session}"))?;
            }

            if receives {
                let funnel = add(elements, &self.pipeline, make("funnel", &n(&format!("{tag}funnel")))?)?;
                let depay = add(elements, &self.pipeline, depayloader(negotiated.codec, &n(&format!("{tag}depay")))?)?;
                funnel.link(&depay)?;
                funnels[session as usize] = Some(funnel);
                match negotiated.codec {
                    Codec::Video(codec) => {
                        let decoder = self.profiles.video_decoder(codec, &n("vdec"))?.upcast::<gst::Element>();
                        let decoder = add(elements, &self.pipeline, decoder)?;
                        depay.link(&decoder)?;
                        participant.cell = Some(self.link_to_compositor(&decoder, &prefix, &owner, elements)?);
                    }
                    Codec::Audio(codec) => {
                        let decoder = self.profiles.audio_decoder(codec, &n("adec"))?.upcast::<gst::Element>();
                        let decoder = add(elements, &self.pipeline, decoder)?;
                        let convert = add(elements, &self.pipeline, make("audioconvert", &n("aconv"))?)?;
                        let resample = add(elements, &self.pipeline, make("audioresample", &n("aresample"))?)?;
                        let to_mix = add(elements, &self.pipeline, self.mix.input(id, &n("ato-mix"))?)?;
                        gst::Element::link_many([&depay, &decoder, &convert, &resample, &to_mix])?;
                    }
                }
            }

            // Send: the composite or the mix-minus, to the offer's address.
            if negotiated.direction.sends() {
                let pay = add(elements, &self.pipeline, payloader(negotiated.codec, negotiated.payload_type, &n(&format!("{tag}pay")))?)?;
                match negotiated.codec {
                    Codec::Video(codec) => {
                        let tee = self.encoder_for(codec)?;
                        self.link_request_tracked(&tee, &pay, Owner::Encoder(codec), owner.clone())?;
                        participant.video_encoder = Some(codec);
                    }
                    Codec::Audio(codec) => {
                        let mix_minus = add(elements, &self.pipeline, self.mix.mix_minus(id, &n("amix-minus"))?)?;
                        let chain = self.audio_encode_chain(codec, &n(""))?;
                        for e in &chain {
                            add(elements, &self.pipeline, e.clone())?;
                        }
                        let mut all = vec![mix_minus];
                        all.extend(chain);
                        all.push(pay.clone());
                        gst::Element::link_many(all.iter())?;
                    }
                }
                link_to_request(&pay, &rtpbin, &format!("send_rtp_sink_{session}"))?;
                let sink = add(elements, &self.pipeline, udp_sink(&n(&format!("{tag}rtp-out")), &rtp_socket, negotiated.remote_rtp)?)?;
                let src = rtpbin
                    .static_pad(&format!("send_rtp_src_{session}"))
                    .ok_or_else(|| MediaError::Gst(format!("rtpbin has no send_rtp_src_{session}")))?;
                src.link(&sink.static_pad("sink").expect("udpsink has a sink pad"))?;
            }

            let rtcp_out = add(elements, &self.pipeline, udp_sink(&n(&format!("{tag}rtcp-out")), &rtcp_socket, negotiated.remote_rtcp)?)?;
            let rtcp_src = rtpbin
                .request_pad_simple(&format!("send_rtcp_src_{session}"))
                .ok_or_else(|| MediaError::Gst(format!("rtpbin refused send_rtcp_src_{session}")))?;
            rtcp_src.link(&rtcp_out.static_pad("sink").expect("udpsink has a sink pad"))?;

            let state = MediumState { negotiated, last_packet_ms };
            match kind {
                MediaKind::Audio => participant.audio = Some(state),
                MediaKind::Video => participant.video = Some(state),
            }
        }

        if participant.cell.is_none() && self.canvas.is_some() {
            participant.cell = Some(self.add_slate(name, &n("slate"), &owner, elements)?);
        }

        route_incoming_streams(
            &rtpbin,
            funnels,
            [&participant.audio, &participant.video].map(|m| m.as_ref().map(|m| m.last_packet_ms.clone())),
        );

        participant.elements = elements.clone();
        // Downstream first: a source (the mix-minus appsrc, fed by the mixing
        // thread from the moment it exists) that plays before the elements
        // after it gets FLUSHING back and pauses for good; that caller then
        // never hears anything.
        for element in elements.iter().rev() {
            element.sync_state_with_parent()?;
        }
        Ok(participant)
    }

    /// Removes a caller; the others keep streaming and the grid re-lays out.
    pub fn remove_participant(&mut self, id: &ParticipantId) -> bool {
        let Some(index) = self.participants.iter().position(|p| &p.id == id) else { return false };
        let participant = self.participants.remove(index);
        self.mix.remove(id);
        self.topology.remove(&Owner::Participant(id.clone()), &self.pipeline, &participant.elements);
        self.drop_unused_encoders();
        self.relayout();
        true
    }

    /// Stops the pipeline and releases every element, socket and port.
    pub fn shutdown(mut self) {
        self.stop_outputs();
        self.mix.stop();
        let _ = self.pipeline.set_state(gst::State::Null);
        self.participants.clear();
        self.encoders.clear();
        if let Some(bus) = self.pipeline.bus() {
            bus.unset_sync_handler();
        }
    }

    /// Moves every caller's picture to its grid cell, in join order.
    fn relayout(&self) {
        let v = &self.config.video;
        let cells = layout::grid(v.width, v.height, self.participants.len());
        for (participant, cell) in self.participants.iter().zip(cells) {
            let Some(link) = &participant.cell else { continue };
            link.size.set_property("caps", cell_caps(cell.width, cell.height));
            link.pad.set_property("xpos", cell.x as i32);
            link.pad.set_property("ypos", cell.y as i32);
            link.pad.set_property("alpha", 1.0f64);
            tracing::debug!(composition = %self.id, participant = %participant.id, pad = %link.pad.name(), ?cell, "cell");
        }
        // A caller beyond the 16 cells of the largest grid is not shown.
        for participant in self.participants.iter().skip(layout::MAX_GRID_CELLS) {
            if let Some(link) = &participant.cell {
                link.pad.set_property("alpha", 0.0f64);
            }
        }
    }

    /// Scales `upstream`'s picture to its cell (aspect ratio kept, black
    /// bars) and links it to a new compositor pad. Scaling happens here, in
    /// the caller's own streaming thread, so callers scale in parallel and
    /// the compositor only blends pictures already at their cell size.
    fn link_to_compositor(
        &mut self,
        upstream: &gst::Element,
        prefix: &str,
        owner: &Owner,
        elements: &mut Vec<gst::Element>,
    ) -> Result<CellLink, MediaError> {
        let convert = make("videoconvert", &format!("{prefix}-vconv"))?;
        let scale = make("videoscale", &format!("{prefix}-vscale"))?;
        scale.set_property("add-borders", true);
        let cell = make("capsfilter", &format!("{prefix}-vcell"))?;
        for e in [&convert, &scale, &cell] {
            self.pipeline.add(e)?;
            elements.push(e.clone());
        }
        gst::Element::link_many([upstream, &convert, &scale, &cell])?;
        let pad = self
            .video_core()?
            .compositor
            .request_pad_simple("sink_%u")
            .ok_or_else(|| MediaError::Gst("compositor refused a pad".into()))?;
        // Hidden until relayout gives it a cell.
        pad.set_property("alpha", 0.0f64);
        let src = cell.static_pad("src").expect("capsfilter has a src pad");
        self.topology.link(&src, &pad, owner.clone(), Owner::Core)?;
        Ok(CellLink { pad, size: cell })
    }

    /// A dark slate with the caller's name, for a caller that sends no video.
    fn add_slate(&mut self, name: &str, element_name: &str, owner: &Owner, elements: &mut Vec<gst::Element>) -> Result<CellLink, MediaError> {
        let source = make("videotestsrc", &format!("{element_name}-src"))?;
        source.set_property("is-live", true);
        source.set_property_from_str("pattern", "solid-color");
        source.set_property("foreground-color", SLATE_COLOUR);
        let caps = make("capsfilter", &format!("{element_name}-caps"))?;
        // At the canvas frame rate: a slower live source makes the
        // compositor wait for it and the encoder then drops frames in bursts.
        caps.set_property(
            "caps",
            gst::Caps::builder("video/x-raw")
                .field("width", 320)
                .field("height", 180)
                .field("framerate", gst::Fraction::new(self.config.video.fps as i32, 1))
                .build(),
        );
        let text = make("textoverlay", &format!("{element_name}-text"))?;
        // User input goes in as a property value, never into a description.
        text.set_property("text", name);
        text.set_property_from_str("halignment", "center");
        text.set_property_from_str("valignment", "center");
        text.set_property("font-desc", "Sans Bold 14");
        text.set_property("shaded-background", false);
        for e in [&source, &caps, &text] {
            self.pipeline.add(e)?;
            elements.push(e.clone());
        }
        gst::Element::link_many([&source, &caps, &text])?;
        self.link_to_compositor(&text, element_name, owner, elements)
    }

    fn link_request_tracked(&mut self, tee: &gst::Element, downstream: &gst::Element, from: Owner, to: Owner) -> Result<(), MediaError> {
        let src = tee.request_pad_simple("src_%u").ok_or_else(|| MediaError::Gst(format!("{} refused a src pad", tee.name())))?;
        let sink = downstream
            .static_pad("sink")
            .or_else(|| downstream.request_pad_simple("sink_%u"))
            .ok_or_else(|| MediaError::Gst(format!("{} has no sink pad", downstream.name())))?;
        self.topology.link(&src, &sink, from, to)?;
        Ok(())
    }

    /// The encoder tee for `codec`, creating the shared encoder on first use.
    ///
    /// Callers on H.264 packetization-mode 1 get the broadcast's own encode
    /// (Constrained Baseline, which every H.264 endpoint and CDN takes):
    /// one x264 for callers and outputs alike, instead of two encoding the
    /// same canvas. Their branch only re-frames it for RTP (byte-stream,
    /// SPS/PPS before every IDR). Other codecs get an encoder of their own.
    fn encoder_for(&mut self, codec: VideoCodec) -> Result<gst::Element, MediaError> {
        if let Some(encoder) = self.encoders.get(&codec) {
            return Ok(encoder.tee.clone());
        }
        let name = format!("enc-{}-{}", codec.encoder_profile_name(), self.id);
        let broadcast_video = self.broadcast_video().filter(|_| codec == VideoCodec::H264 { packetization_mode: 1 });
        let mut elements = Vec::new();
        let source = match broadcast_video {
            Some(encoded) => encoded,
            None => {
                let queue = make("queue", &format!("{name}-queue"))?;
                // A slow encoder drops composite frames rather than holding up the compositor.
                queue.set_property("max-size-buffers", 2u32);
                queue.set_property("max-size-bytes", 0u32);
                queue.set_property("max-size-time", 0u64);
                queue.set_property_from_str("leaky", "downstream");
                let encoder = self.profiles.video_encoder(codec, &format!("{name}-bin"), self.encoder_settings())?;
                elements.extend([queue, encoder.upcast()]);
                self.video_core()?.tee.clone()
            }
        };
        if let VideoCodec::H264 { .. } = codec {
            // SPS/PPS once per IDR access unit, before its first slice.
            // rtph264pay's own insertion puts them before every IDR slice,
            // which splits multi-slice pictures into two access units for
            // decoders such as FFmpeg's (ITU-T H.264 7.4.1.2.3).
            let parse = make("h264parse", &format!("{name}-parse"))?;
            parse.set_property("config-interval", -1i32);
            let au = make("capsfilter", &format!("{name}-au"))?;
            au.set_property(
                "caps",
                gst::Caps::builder("video/x-h264").field("stream-format", "byte-stream").field("alignment", "au").build(),
            );
            elements.extend([parse, au]);
        }
        let tee = make("tee", &format!("{name}-out"))?;
        tee.set_property("allow-not-linked", true);
        elements.push(tee.clone());
        self.pipeline.add_many(&elements)?;
        gst::Element::link_many(&elements)?;
        self.link_request_tracked(&source, &elements[0], Owner::Core, Owner::Encoder(codec))?;
        for e in elements.iter().rev() {
            e.sync_state_with_parent()?;
        }
        self.topology.link_pending(&Owner::Encoder(codec))?;
        self.encoders.insert(codec, SharedEncoder { elements, tee: tee.clone() });
        Ok(tee)
    }

    fn video_core(&self) -> Result<&VideoCore, MediaError> {
        self.canvas.as_ref().ok_or_else(|| MediaError::Gst("an audio-only composition has no video".into()))
    }

    fn drop_unused_encoders(&mut self) {
        let unused: Vec<VideoCodec> =
            self.encoders.keys().copied().filter(|c| self.topology.count_from(&Owner::Encoder(*c)) == 0).collect();
        for codec in unused {
            if let Some(encoder) = self.encoders.remove(&codec) {
                self.topology.remove(&Owner::Encoder(codec), &self.pipeline, &encoder.elements);
            }
        }
    }

    fn encoder_settings(&self) -> EncoderSettings {
        let v = &self.config.video;
        EncoderSettings { bitrate_kbps: Some(v.bitrate_kbps), keyframe_interval_frames: Some(v.fps * v.keyframe_interval_secs) }
    }

    /// Mix format → the codec's rate and channels → encoder bin.
    fn audio_encode_chain(&self, codec: AudioCodec, prefix: &str) -> Result<Vec<gst::Element>, MediaError> {
        let (rate, channels) = codec.raw_format();
        let convert = make("audioconvert", &format!("{prefix}aenc-conv"))?;
        let resample = make("audioresample", &format!("{prefix}aenc-resample"))?;
        let caps = make("capsfilter", &format!("{prefix}aenc-caps"))?;
        caps.set_property(
            "caps",
            gst::Caps::builder("audio/x-raw")
                .field("format", "S16LE")
                .field("rate", rate as i32)
                .field("channels", channels as i32)
                .build(),
        );
        let encoder = self.profiles.audio_encoder(codec, &format!("{prefix}aenc"))?.upcast::<gst::Element>();
        Ok(vec![convert, resample, caps, encoder])
    }
}

impl Drop for CompositionMedia {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn canvas_caps_for(config: &CompositionConfig) -> gst::Caps {
    let v = &config.video;
    gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field("width", v.width as i32)
        .field("height", v.height as i32)
        .field("framerate", gst::Fraction::new(v.fps as i32, 1))
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
        .build()
}

/// A caller's picture scaled to its cell: I420 like the canvas, square
/// pixels so that videoscale keeps the aspect ratio with black bars.
fn cell_caps(width: u32, height: u32) -> gst::Caps {
    gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field("width", width as i32)
        .field("height", height as i32)
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
        .build()
}

fn mix_format(config: &CompositionConfig) -> MixFormat {
    MixFormat { rate: config.audio.sample_rate, channels: config.audio.channels }
}

/// The compositor, paced by a tiny transparent live source so that the
/// canvas keeps its frame rate with no caller at all.
fn build_video_core(
    pipeline: &gst::Pipeline,
    config: &CompositionConfig,
    n: &dyn Fn(&str) -> String,
    upstream_latency: Duration,
) -> Result<VideoCore, MediaError> {
    let driver = make("videotestsrc", &n("driver"))?;
    driver.set_property("is-live", true);
    driver.set_property_from_str("pattern", "black");
    let driver_caps = make("capsfilter", &n("driver-caps"))?;
    driver_caps.set_property(
        "caps",
        gst::Caps::builder("video/x-raw")
            .field("width", 16)
            .field("height", 16)
            .field("framerate", gst::Fraction::new(config.video.fps as i32, 1))
            .build(),
    );
    let compositor = make("compositor", &n("compositor"))?;
    compositor.set_property_from_str("background", "black");
    compositor.set_property_from_str("start-time-selection", "first");
    compositor.set_property("min-upstream-latency", upstream_latency.as_nanos() as u64);
    let canvas_caps = make("capsfilter", &n("canvas-caps"))?;
    canvas_caps.set_property("caps", canvas_caps_for(config));
    let tee = make("tee", &n("video"))?;
    tee.set_property("allow-not-linked", true);

    pipeline.add_many([&driver, &driver_caps, &compositor, &canvas_caps, &tee])?;
    gst::Element::link_many([&driver, &driver_caps])?;
    let driver_pad = compositor.request_pad_simple("sink_%u").ok_or_else(|| MediaError::Gst("compositor pad".into()))?;
    // Fully transparent: it only paces the compositor, it never shows.
    driver_pad.set_property("alpha", 0.0f64);
    driver_caps.static_pad("src").expect("capsfilter has src").link(&driver_pad)?;
    gst::Element::link_many([&compositor, &canvas_caps, &tee])?;
    Ok(VideoCore { compositor, tee })
}

fn udp_sink(name: &str, socket: &gio::Socket, to: std::net::SocketAddr) -> Result<gst::Element, MediaError> {
    let sink = make("udpsink", name)?;
    sink.set_property("socket", socket);
    sink.set_property("close-socket", false);
    sink.set_property("host", to.ip().to_string());
    sink.set_property("port", i32::from(to.port()));
    // The compositor and mixers already pace the media; the network must not wait.
    sink.set_property("sync", false);
    sink.set_property("async", false);
    Ok(sink)
}

fn gio_socket(fd: OwnedFd) -> Result<gio::Socket, MediaError> {
    gio::Socket::from_fd(fd).map_err(|e| MediaError::Gst(format!("socket: {e}")))
}

/// Links a new src pad of `tee` to `downstream`'s sink pad (its static one,
/// or a new request pad of an aggregator).
fn link_request(tee: &gst::Element, downstream: &gst::Element) -> Result<(), MediaError> {
    let src = tee.request_pad_simple("src_%u").ok_or_else(|| MediaError::Gst(format!("{} refused a src pad", tee.name())))?;
    let sink = downstream
        .static_pad("sink")
        .or_else(|| downstream.request_pad_simple("sink_%u"))
        .ok_or_else(|| MediaError::Gst(format!("{} has no sink pad", downstream.name())))?;
    src.link(&sink)?;
    Ok(())
}

fn link_to_request(upstream: &gst::Element, rtpbin: &gst::Element, pad_name: &str) -> Result<(), MediaError> {
    let sink = rtpbin.request_pad_simple(pad_name).ok_or_else(|| MediaError::Gst(format!("rtpbin refused {pad_name}")))?;
    upstream.static_pad("src").expect("source element has a src pad").link(&sink)?;
    Ok(())
}

/// Under rtcp-mux (RFC 5761) RTP and RTCP share one socket: RTCP packet
/// types 192-223 show as RTP payload types 64-95, which RTP must not use.
/// RTCP goes to rtpbin's RTCP input through `appsrc`; RTP stays, unless this
/// caller was negotiated not to send us media.
fn split_muxed_rtcp(udpsrc: &gst::Element, rtcp_in: &gst::Element, keep_rtp: bool) {
    let appsrc = rtcp_in.clone().downcast::<gstreamer_app::AppSrc>().expect("appsrc element is an AppSrc");
    let pad = udpsrc.static_pad("src").expect("udpsrc has a src pad");
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(buffer) = info.buffer() else { return gst::PadProbeReturn::Ok };
        let is_rtcp = buffer
            .map_readable()
            .ok()
            .and_then(|map| map.get(1).copied())
            .is_some_and(|second| (192..=223).contains(&second));
        if is_rtcp {
            let _ = appsrc.push_buffer(buffer.copy());
            return gst::PadProbeReturn::Drop;
        }
        if keep_rtp { gst::PadProbeReturn::Ok } else { gst::PadProbeReturn::Drop }
    });
}

/// Links each stream rtpbin finds (one per SSRC) into the medium's funnel,
/// so a caller that restarts with a new SSRC keeps its decoder and cell.
fn route_incoming_streams(rtpbin: &gst::Element, funnels: [Option<gst::Element>; 2], last_packet: [Option<Arc<AtomicU64>>; 2]) {
    rtpbin.connect_pad_added(move |_, pad| {
        let name = pad.name();
        let Some(session) = name.strip_prefix("recv_rtp_src_").and_then(|rest| rest.split('_').next()).and_then(|s| s.parse::<usize>().ok()) else {
            return;
        };
        let Some(Some(funnel)) = funnels.get(session) else { return };
        let Some(sink) = funnel.request_pad_simple("sink_%u") else { return };
        if pad.link(&sink).is_err() {
            return;
        }
        if let Some(Some(last)) = last_packet.get(session) {
            let last = last.clone();
            pad.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST, move |_, _| {
                mark_packet(&last);
                gst::PadProbeReturn::Ok
            });
        }
        if session == super::participant::VIDEO_SESSION as usize {
            // A new video stream: ask its sender for a keyframe now rather
            // than waiting for its next scheduled one.
            request_keyframe_upstream(&sink);
        }
    });
}

/// Sends a force-key-unit event upstream from `pad`: to an encoder it means
/// "emit a keyframe", to rtpbin's receive side it becomes a PLI/FIR.
fn request_keyframe_upstream(pad: &gst::Pad) {
    let event = gstreamer_video::UpstreamForceKeyUnitEvent::builder().all_headers(true).build();
    pad.push_event(event);
}

fn watch_bus(pipeline: &gst::Pipeline, id: CompositionId, events: EventSink, fuses: Fuses) {
    let bus = pipeline.bus().expect("a pipeline has a bus");
    bus.set_sync_handler(move |_, message| {
        use gst::MessageView;
        match message.view() {
            MessageView::Error(err) => {
                let element = message.src().map(|s| s.path_string().to_string()).unwrap_or_default();
                for (key, fuse) in fuses.lock().expect("fuses lock").iter() {
                    if element.contains(&format!("out-{key}-")) {
                        fuse.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                }
                events(MediaEvent::Error {
                    composition: id.clone(),
                    element,
                    message: format!("{} ({})", err.error(), err.debug().map(|d| d.to_string()).unwrap_or_default()),
                })
            }
            MessageView::Warning(w) => tracing::debug!(
                composition = %id,
                element = %message.src().map(|s| s.path_string().to_string()).unwrap_or_default(),
                "GStreamer warning: {}",
                w.error()
            ),
            MessageView::Latency(_) => events(MediaEvent::LatencyChanged { composition: id.clone() }),
            _ => {}
        }
        gst::BusSyncReply::Drop
    });
}
