//! `tuttiopusenc`: S16LE at 48 kHz to Opus packets (for rtpopuspay), one
//! packet per `frame-size` ms. Properties (named as opusenc's): `bitrate`
//! (bit/s), `frame-size` (ms), `complexity` (0-10).
//!
//! A frame that comes with a packet already made for it (the audio mix's
//! shared encode, see [`super::shared`]) is sent as that packet, not encoded.

use super::{RATE, ffi, shared};
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_audio::prelude::*;
use gst_audio::subclass::prelude::*;
use gstreamer as gst;
use gstreamer_audio as gst_audio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex};

/// libopus's advice for the output buffer: enough for any packet.
const MAX_PACKET_BYTES: usize = 4000;
const FRAME_SIZES_MS: [u32; 4] = [10, 20, 40, 60];

static CAT: LazyLock<gst::DebugCategory> =
    LazyLock::new(|| gst::DebugCategory::new("tuttiopusenc", gst::DebugColorFlags::empty(), Some("Tutti's Opus encoder")));

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(super) struct Settings {
    pub bitrate: i32,
    pub frame_ms: u32,
    pub complexity: i32,
}

impl Default for Settings {
    /// opusenc's defaults.
    fn default() -> Settings {
        Settings { bitrate: 64_000, frame_ms: 20, complexity: 10 }
    }
}

pub(super) struct Encoder {
    state: *mut ffi::OpusEncoder,
    channels: usize,
    frame_samples: usize,
}

// SAFETY: the libopus state is only touched under the element's mutex.
unsafe impl Send for Encoder {}

impl Encoder {
    pub(super) fn new(channels: usize, settings: Settings) -> Result<Encoder, String> {
        let mut error = 0;
        // SAFETY: plain constructor; the result is checked before use.
        let state = unsafe { ffi::opus_encoder_create(RATE, channels as i32, ffi::OPUS_APPLICATION_AUDIO, &mut error) };
        if state.is_null() || error != ffi::OPUS_OK {
            return Err(ffi::error_text(error));
        }
        let encoder = Encoder { state, channels, frame_samples: (RATE as u32 / 1000 * settings.frame_ms) as usize };
        for (request, value) in [
            (ffi::OPUS_SET_BITRATE_REQUEST, settings.bitrate),
            (ffi::OPUS_SET_BANDWIDTH_REQUEST, ffi::OPUS_BANDWIDTH_FULLBAND),
            (ffi::OPUS_SET_COMPLEXITY_REQUEST, settings.complexity),
        ] {
            // SAFETY: each of these requests takes one opus_int32.
            let code = unsafe { ffi::opus_encoder_ctl(encoder.state, request, value) };
            if code != ffi::OPUS_OK {
                return Err(format!("request {request} = {value}: {}", ffi::error_text(code)));
            }
        }
        Ok(encoder)
    }

    /// One frame of interleaved samples (a shorter one, the last before the
    /// end, is padded with silence) to one packet.
    pub(super) fn encode(&mut self, pcm: &[i16]) -> Result<Vec<u8>, String> {
        let whole = self.frame_samples * self.channels;
        let padded;
        let pcm = if pcm.len() < whole {
            padded = [pcm, &vec![0; whole - pcm.len()]].concat();
            &padded
        } else {
            pcm
        };
        let mut packet = vec![0u8; MAX_PACKET_BYTES];
        // SAFETY: `pcm` holds frame_samples × channels samples, `packet` MAX_PACKET_BYTES bytes.
        let n = unsafe {
            ffi::opus_encode(self.state, pcm.as_ptr(), self.frame_samples as i32, packet.as_mut_ptr(), MAX_PACKET_BYTES as i32)
        };
        if n < 0 {
            return Err(ffi::error_text(n));
        }
        packet.truncate(n as usize);
        Ok(packet)
    }

    /// Forgets the audio it has seen, as if new: for a stream that skipped
    /// frames, whose receiver's decoder holds other history by now.
    pub(super) fn reset(&mut self) {
        // SAFETY: OPUS_RESET_STATE takes no argument.
        unsafe { ffi::opus_encoder_ctl(self.state, ffi::OPUS_RESET_STATE) };
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        // SAFETY: created by opus_encoder_create, destroyed once.
        unsafe { ffi::opus_encoder_destroy(self.state) }
    }
}

#[derive(Default)]
pub struct OpusEncImp {
    settings: Mutex<Settings>,
    encoder: Mutex<Option<Encoder>>,
    /// The latest input buffer, if a packet was made for it elsewhere.
    shared: Mutex<Option<(gst::Buffer, glib::Bytes)>>,
    /// Whether frames went out as shared packets since the encoder last
    /// encoded: its state is stale then, and is reset before it encodes again.
    skipped: AtomicBool,
}

#[glib::object_subclass]
impl ObjectSubclass for OpusEncImp {
    const NAME: &'static str = "TuttiOpusEnc";
    type Type = OpusEnc;
    type ParentType = gst_audio::AudioEncoder;
}

impl ObjectImpl for OpusEncImp {
    fn constructed(&self) {
        self.parent_constructed();
        // The base class hands `handle_frame` a copy of the input without its
        // metas, so a shared packet is picked up here, before it.
        let sink = self.obj().static_pad("sink").expect("an audio encoder has a sink pad");
        let this = self.downgrade();
        sink.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let (Some(this), Some(buffer)) = (this.upgrade(), info.buffer()) {
                *this.shared.lock().unwrap() = shared::packet_for(buffer).map(|packet| (buffer.clone(), packet));
            }
            gst::PadProbeReturn::Ok
        });
    }

    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let defaults = Settings::default();
            vec![
                glib::ParamSpecInt::builder("bitrate")
                    .nick("Bitrate")
                    .blurb("Target bitrate, bit/s")
                    .minimum(4_000)
                    .maximum(650_000)
                    .default_value(defaults.bitrate)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("frame-size")
                    .nick("Frame size")
                    .blurb("Duration of one packet, ms: 10, 20, 40 or 60")
                    .minimum(10)
                    .maximum(60)
                    .default_value(defaults.frame_ms)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecInt::builder("complexity")
                    .nick("Complexity")
                    .blurb("Encoder effort, 0 (least CPU) to 10 (best quality)")
                    .minimum(0)
                    .maximum(10)
                    .default_value(defaults.complexity)
                    .mutable_ready()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = self.settings.lock().unwrap();
        match pspec.name() {
            "bitrate" => settings.bitrate = value.get().expect("type checked upstream"),
            "frame-size" => {
                let ms: u32 = value.get().expect("type checked upstream");
                if FRAME_SIZES_MS.contains(&ms) {
                    settings.frame_ms = ms;
                } else {
                    gst::warning!(CAT, imp = self, "frame-size {ms} ms is not one of {FRAME_SIZES_MS:?}; kept {}", settings.frame_ms);
                }
            }
            "complexity" => settings.complexity = value.get().expect("type checked upstream"),
            other => unreachable!("no property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = self.settings.lock().unwrap();
        match pspec.name() {
            "bitrate" => settings.bitrate.to_value(),
            "frame-size" => settings.frame_ms.to_value(),
            "complexity" => settings.complexity.to_value(),
            other => unreachable!("no property {other}"),
        }
    }
}

impl GstObjectImpl for OpusEncImp {}

impl ElementImpl for OpusEncImp {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new("Tutti Opus encoder", "Codec/Encoder/Audio",
                "Encodes Opus with libopus's one-stream API", "Tutti")
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let sink = gst_audio::AudioCapsBuilder::new_interleaved()
                .format(gst_audio::AudioFormat::S16le)
                .rate(RATE)
                .channels_range(1..=2)
                .build();
            let src = gst::Caps::builder("audio/x-opus")
                .field("rate", RATE)
                .field("channels", gst::IntRange::new(1, 2))
                .field("channel-mapping-family", 0i32)
                .build();
            vec![
                gst::PadTemplate::new("sink", gst::PadDirection::Sink, gst::PadPresence::Always, &sink).unwrap(),
                gst::PadTemplate::new("src", gst::PadDirection::Src, gst::PadPresence::Always, &src).unwrap(),
            ]
        });
        TEMPLATES.as_ref()
    }
}

impl AudioEncoderImpl for OpusEncImp {
    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *self.encoder.lock().unwrap() = None;
        *self.shared.lock().unwrap() = None;
        Ok(())
    }

    fn set_format(&self, info: &gst_audio::AudioInfo) -> Result<(), gst::LoggableError> {
        let settings = *self.settings.lock().unwrap();
        let channels = info.channels() as usize;
        let encoder = Encoder::new(channels, settings).map_err(|e| gst::loggable_error!(CAT, "opus encoder: {e}"))?;
        let obj = self.obj();
        let frame_samples = encoder.frame_samples as i32;
        obj.set_frame_samples_min(frame_samples);
        obj.set_frame_samples_max(frame_samples);
        obj.set_hard_min(true);
        let frame = gst::ClockTime::from_mseconds(settings.frame_ms as u64);
        obj.set_latency(frame, frame);
        let caps = gst::Caps::builder("audio/x-opus")
            .field("rate", RATE)
            .field("channels", channels as i32)
            .field("channel-mapping-family", 0i32)
            .build();
        obj.set_output_format(&caps).map_err(|e| gst::loggable_error!(CAT, "output caps {caps}: {e:?}"))?;
        *self.encoder.lock().unwrap() = Some(encoder);
        Ok(())
    }

    fn handle_frame(&self, buffer: Option<&gst::Buffer>) -> Result<gst::FlowSuccess, gst::FlowError> {
        // None: drain; a frame is never held back.
        let Some(buffer) = buffer else { return Ok(gst::FlowSuccess::Ok) };
        let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
        if let Some(packet) = self.shared_packet_for(&map) {
            drop(map);
            self.skipped.store(true, Ordering::Relaxed);
            let samples = (buffer.size() / 2 / self.encoder.lock().unwrap().as_ref().map_or(1, |e| e.channels)) as i32;
            return self.obj().finish_frame(Some(gst::Buffer::from_slice(packet)), samples);
        }
        let pcm: Vec<i16> = map.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
        drop(map);
        let mut guard = self.encoder.lock().unwrap();
        let encoder = guard.as_mut().ok_or(gst::FlowError::NotNegotiated)?;
        if self.skipped.swap(false, Ordering::Relaxed) {
            encoder.reset();
        }
        let mut packets = Vec::new();
        for frame in pcm.chunks(encoder.frame_samples * encoder.channels) {
            let packet = encoder.encode(frame).map_err(|e| {
                gst::element_imp_error!(self, gst::StreamError::Encode, ["opus_encode: {e}"]);
                gst::FlowError::Error
            })?;
            packets.push((packet, (frame.len() / encoder.channels) as i32));
        }
        drop(guard);
        // One packet per frame: the base class may hand over more than one at once.
        for (packet, samples) in packets {
            self.obj().finish_frame(Some(gst::Buffer::from_mut_slice(packet)), samples)?;
        }
        Ok(gst::FlowSuccess::Ok)
    }
}

impl OpusEncImp {
    /// The shared packet made for exactly this frame, if one was: the frame
    /// is the whole of the buffer it came with (the base class did not
    /// split or join buffers).
    fn shared_packet_for(&self, frame: &[u8]) -> Option<glib::Bytes> {
        let (buffer, packet) = self.shared.lock().unwrap().take()?;
        let same = buffer.map_readable().is_ok_and(|map| map.as_slice() == frame);
        same.then_some(packet)
    }
}

glib::wrapper! {
    pub struct OpusEnc(ObjectSubclass<OpusEncImp>) @extends gst_audio::AudioEncoder, gst::Element, gst::Object;
}
