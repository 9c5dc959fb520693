//! `tuttiopusdec`: Opus packets (from rtpopusdepay) to S16LE at 48 kHz.
//! A packet lost (a gap, with the base class's `plc=true`) is concealed by
//! libopus; a packet libopus cannot decode is dropped with a warning, since
//! one bad packet from a caller must not end its call.

use super::{RATE, ffi};
use gst::glib;
use gst::subclass::prelude::*;
use gst_audio::prelude::*;
use gst_audio::subclass::prelude::*;
use gstreamer as gst;
use gstreamer_audio as gst_audio;
use std::sync::{LazyLock, Mutex};

/// The longest packet Opus has: 120 ms at 48 kHz.
const MAX_FRAME_SAMPLES: usize = 5760;
/// PLC makes whole 2.5 ms steps.
const PLC_STEP_SAMPLES: u64 = 120;

static CAT: LazyLock<gst::DebugCategory> =
    LazyLock::new(|| gst::DebugCategory::new("tuttiopusdec", gst::DebugColorFlags::empty(), Some("Tutti's Opus decoder")));

struct Decoder {
    state: *mut ffi::OpusDecoder,
    channels: usize,
    pcm: Vec<i16>,
}

// SAFETY: the libopus state is only touched under the element's mutex.
unsafe impl Send for Decoder {}

impl Decoder {
    fn new(channels: usize) -> Result<Decoder, String> {
        let mut error = 0;
        // SAFETY: plain constructor; the result is checked before use.
        let state = unsafe { ffi::opus_decoder_create(RATE, channels as i32, &mut error) };
        if state.is_null() || error != ffi::OPUS_OK {
            return Err(ffi::error_text(error));
        }
        Ok(Decoder { state, channels, pcm: vec![0; MAX_FRAME_SAMPLES * channels] })
    }

    /// Decodes one packet (None: conceals `samples` lost ones); the samples
    /// per channel written to `self.pcm`, or libopus's error.
    fn decode(&mut self, packet: Option<&[u8]>, samples: usize) -> Result<usize, String> {
        let (data, len) = match packet {
            Some(p) => (p.as_ptr(), p.len() as i32),
            None => (std::ptr::null(), 0),
        };
        let frame = if packet.is_some() { MAX_FRAME_SAMPLES } else { samples.min(MAX_FRAME_SAMPLES) };
        // SAFETY: `pcm` holds MAX_FRAME_SAMPLES × channels samples, and `frame` ≤ MAX_FRAME_SAMPLES.
        let n = unsafe { ffi::opus_decode(self.state, data, len, self.pcm.as_mut_ptr(), frame as i32, 0) };
        if n < 0 { Err(ffi::error_text(n)) } else { Ok(n as usize) }
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: created by opus_decoder_create, destroyed once.
        unsafe { ffi::opus_decoder_destroy(self.state) }
    }
}

#[derive(Default)]
pub struct OpusDecImp {
    decoder: Mutex<Option<Decoder>>,
}

#[glib::object_subclass]
impl ObjectSubclass for OpusDecImp {
    const NAME: &'static str = "TuttiOpusDec";
    type Type = OpusDec;
    type ParentType = gst_audio::AudioDecoder;
}

impl ObjectImpl for OpusDecImp {}

impl GstObjectImpl for OpusDecImp {}

impl ElementImpl for OpusDecImp {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new("Tutti Opus decoder", "Codec/Decoder/Audio",
                "Decodes Opus with libopus's one-stream API", "Tutti")
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let sink = gst::Caps::builder("audio/x-opus").field("channel-mapping-family", 0i32).build();
            let src = gst_audio::AudioCapsBuilder::new_interleaved()
                .format(gst_audio::AudioFormat::S16le)
                .rate(RATE)
                .channels_range(1..=2)
                .build();
            vec![
                gst::PadTemplate::new("sink", gst::PadDirection::Sink, gst::PadPresence::Always, &sink).unwrap(),
                gst::PadTemplate::new("src", gst::PadDirection::Src, gst::PadPresence::Always, &src).unwrap(),
            ]
        });
        TEMPLATES.as_ref()
    }
}

impl AudioDecoderImpl for OpusDecImp {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        // The base class's full reset at start clears it.
        self.obj().set_plc_aware(true);
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *self.decoder.lock().unwrap() = None;
        Ok(())
    }

    fn set_format(&self, caps: &gst::Caps) -> Result<(), gst::LoggableError> {
        // Stereo unless the stream says mono: libopus renders either from any packet.
        let channels = caps.structure(0).and_then(|s| s.get::<i32>("channels").ok()).unwrap_or(2).clamp(1, 2) as usize;
        let decoder = Decoder::new(channels).map_err(|e| gst::loggable_error!(CAT, "opus_decoder_create: {e}"))?;
        let info = gst_audio::AudioInfo::builder(gst_audio::AudioFormat::S16le, RATE as u32, channels as u32)
            .build()
            .map_err(|e| gst::loggable_error!(CAT, "output format: {e}"))?;
        self.obj().set_output_format(&info).map_err(|e| gst::loggable_error!(CAT, "setting the output format: {e:?}"))?;
        *self.decoder.lock().unwrap() = Some(decoder);
        Ok(())
    }

    fn handle_frame(&self, buffer: Option<&gst::Buffer>) -> Result<gst::FlowSuccess, gst::FlowError> {
        // None: drain; nothing is held back.
        let Some(buffer) = buffer else { return Ok(gst::FlowSuccess::Ok) };
        let mut guard = self.decoder.lock().unwrap();
        let decoder = guard.as_mut().ok_or(gst::FlowError::NotNegotiated)?;
        let decoded = if buffer.size() == 0 {
            // A gap the base class hands over for concealment, in whole 2.5 ms steps.
            let samples = buffer.duration().map_or(0, |d| d.nseconds() * RATE as u64 / 1_000_000_000);
            let samples = samples / PLC_STEP_SAMPLES * PLC_STEP_SAMPLES;
            if samples == 0 {
                drop(guard);
                return self.obj().finish_frame(None, 1);
            }
            decoder.decode(None, samples as usize)
        } else {
            let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
            decoder.decode(Some(&map), 0)
        };
        let samples = match decoded {
            Ok(n) => n,
            Err(e) => {
                gst::warning!(CAT, imp = self, "dropping a packet libopus cannot decode ({} bytes): {e}", buffer.size());
                drop(guard);
                return self.obj().finish_frame(None, 1);
            }
        };
        let bytes: Vec<u8> = decoder.pcm[..samples * decoder.channels].iter().flat_map(|s| s.to_le_bytes()).collect();
        drop(guard);
        self.obj().finish_frame(Some(gst::Buffer::from_mut_slice(bytes)), 1)
    }
}

glib::wrapper! {
    pub struct OpusDec(ObjectSubclass<OpusDecImp>) @extends gst_audio::AudioDecoder, gst::Element, gst::Object;
}
