//! The spoken prompts a caller hears before it is in the room (the PIN
//! entry's), shipped in `assets/prompts/` as Opus in Ogg and built into the
//! binary, so that no install layout can lose them. Each is decoded once
//! per mix format, in a throw-away pipeline, to samples the mixing thread
//! plays instead of the caller's mix-minus (see `mixer.rs`).
//!
//! ```text
//!  appsrc (the .ogg) ─► oggdemux ─► opusdec ─► audioconvert ─► audioresample ─► caps (mix format) ─► appsink
//! ```

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app::{AppSink, AppSrc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::mixer::MixFormat;
use super::{MediaError, make};

/// How long a decode may take: a few seconds of Opus take milliseconds.
const DECODE_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Prompt {
    /// "Please enter the meeting PIN, followed by the pound key."
    EnterPin,
    /// "That PIN is not correct. Please try again."
    WrongPin,
    /// "That PIN is not correct. Goodbye."
    Rejected,
    /// "No PIN was entered. Goodbye."
    TimedOut,
}

impl Prompt {
    fn ogg(self) -> &'static [u8] {
        match self {
            Prompt::EnterPin => include_bytes!("../../assets/prompts/enter-pin.ogg"),
            Prompt::WrongPin => include_bytes!("../../assets/prompts/wrong-pin.ogg"),
            Prompt::Rejected => include_bytes!("../../assets/prompts/rejected.ogg"),
            Prompt::TimedOut => include_bytes!("../../assets/prompts/timed-out.ogg"),
        }
    }
}

type Decoded = HashMap<(Prompt, u32, u32), Arc<[i16]>>;

/// `prompt` as interleaved S16 samples in `format`, decoded on first use.
pub fn samples(prompt: Prompt, format: MixFormat) -> Result<Arc<[i16]>, MediaError> {
    static DECODED: OnceLock<Mutex<Decoded>> = OnceLock::new();
    let key = (prompt, format.rate, format.channels);
    let cache = DECODED.get_or_init(Mutex::default);
    if let Some(samples) = cache.lock().expect("prompt cache lock").get(&key) {
        return Ok(samples.clone());
    }
    let samples: Arc<[i16]> = decode(prompt.ogg(), format)?.into();
    cache.lock().expect("prompt cache lock").insert(key, samples.clone());
    Ok(samples)
}

fn decode(ogg: &'static [u8], format: MixFormat) -> Result<Vec<i16>, MediaError> {
    let pipeline = gst::Pipeline::with_name("prompt-decode");
    let src = make("appsrc", "prompt-src")?;
    let elements = [
        src.clone(),
        make("oggdemux", "prompt-demux")?,
        make("opusdec", "prompt-dec")?,
        make("audioconvert", "prompt-convert")?,
        make("audioresample", "prompt-resample")?,
        make("capsfilter", "prompt-caps")?,
        make("appsink", "prompt-sink")?,
    ];
    elements[5].set_property("caps", format.caps());
    pipeline.add_many(&elements)?;
    // oggdemux's pad appears once it has read the stream's headers.
    gst::Element::link_many(&elements[..2])?;
    let opusdec = elements[2].clone();
    elements[1].connect_pad_added(move |_, pad| {
        let _ = pad.link(&opusdec.static_pad("sink").expect("opusdec has a sink pad"));
    });
    gst::Element::link_many(&elements[2..])?;
    let sink = elements[6].clone().downcast::<AppSink>().expect("appsink is an AppSink");
    sink.set_sync(false);
    let src = src.downcast::<AppSrc>().expect("appsrc is an AppSrc");
    src.push_buffer(gst::Buffer::from_slice(ogg)).map_err(|e| MediaError::Gst(format!("prompt: {e}")))?;
    let _ = src.end_of_stream();
    pipeline.set_state(gst::State::Playing).map_err(|e| MediaError::Gst(format!("prompt decode: {e}")))?;
    let mut samples = Vec::new();
    let deadline = std::time::Instant::now() + DECODE_DEADLINE;
    let result = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match sink.try_pull_sample(gst::ClockTime::from_nseconds(left.as_nanos() as u64)) {
            Some(sample) => {
                let Some(buffer) = sample.buffer() else { continue };
                let map = buffer.map_readable().map_err(|e| MediaError::Gst(e.to_string()))?;
                samples.extend(map.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])));
            }
            None if sink.is_eos() && !samples.is_empty() => break Ok(samples),
            None => break Err(MediaError::Gst("a prompt did not decode in time".into())),
        }
    };
    let _ = pipeline.set_state(gst::State::Null);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_prompt_decodes_to_seconds_of_speech_in_the_mix_format() {
        gst::init().unwrap();
        for prompt in [Prompt::EnterPin, Prompt::WrongPin, Prompt::Rejected, Prompt::TimedOut] {
            for format in [MixFormat { rate: 48_000, channels: 2 }, MixFormat { rate: 16_000, channels: 1 }] {
                let samples = samples(prompt, format).unwrap();
                let secs = samples.len() as f64 / f64::from(format.rate * format.channels);
                assert!((2.5..6.0).contains(&secs), "{prompt:?} at {format:?}: {secs:.2} s");
                let peak = samples.iter().map(|s| s.unsigned_abs()).max().unwrap();
                assert!(peak > 3000, "{prompt:?} is near silence (peak {peak})");
            }
        }
    }
}
