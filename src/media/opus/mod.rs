//! Tutti's own Opus encoder and decoder elements, `tuttiopusenc` and
//! `tuttiopusdec`: what the default profiles use for every caller's Opus in
//! and out (pipelines/*.toml). They call libopus's one-stream API, which
//! costs a fraction of what GStreamer's opusenc/opusdec pay per frame on a
//! virtual machine (see [`ffi`]). Same defaults as opusenc (generic audio,
//! full band, constrained VBR, complexity 10) and opusdec (PLC with `plc=true`).

mod decoder;
mod encoder;
mod ffi;
mod shared;

pub use shared::{ShareKey, SharedEncode, attach as attach_shared_packet};

use gstreamer as gst;
use gst::glib;
use gst::prelude::*;
use std::sync::OnceLock;

/// The sample rate both elements work at: Opus's own.
const RATE: i32 = 48_000;

/// Registers both elements with GStreamer (once; later calls return the first result).
/// Requires `gst::init()`.
pub fn register() -> Result<(), glib::BoolError> {
    static REGISTERED: OnceLock<Result<(), glib::BoolError>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            shared::register_meta();
            gst::Element::register(None, "tuttiopusdec", gst::Rank::NONE, decoder::OpusDec::static_type())?;
            gst::Element::register(None, "tuttiopusenc", gst::Rank::NONE, encoder::OpusEnc::static_type())
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gstreamer_app as gst_app;
    use std::sync::{Arc, Mutex};

    /// Runs `description` (ending in `appsink name=out`) to its end; every buffer the sink got.
    fn run(description: &str) -> Vec<gst::Buffer> {
        gst::init().unwrap();
        register().unwrap();
        let pipeline = gst::parse::launch(description).unwrap().downcast::<gst::Pipeline>().unwrap();
        let sink = pipeline.by_name("out").unwrap().downcast::<gst_app::AppSink>().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let into = got.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    into.lock().unwrap().push(s.pull_sample().map_err(|_| gst::FlowError::Eos)?.buffer_owned().unwrap());
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        pipeline.set_state(gst::State::Playing).unwrap();
        let bus = pipeline.bus().unwrap();
        let msg = bus
            .timed_pop_filtered(gst::ClockTime::from_seconds(20), &[gst::MessageType::Eos, gst::MessageType::Error])
            .expect("the pipeline ends within 20 s");
        pipeline.set_state(gst::State::Null).unwrap();
        if let gst::MessageView::Error(e) = msg.view() {
            panic!("{description}: {} ({:?})", e.error(), e.debug());
        }
        std::mem::take(&mut *got.lock().unwrap())
    }

    /// The left channel of interleaved stereo S16LE buffers.
    fn left(buffers: &[gst::Buffer]) -> Vec<f64> {
        buffers
            .iter()
            .flat_map(|b| b.map_readable().unwrap().chunks_exact(4).map(|s| i16::from_le_bytes([s[0], s[1]]) as f64).collect::<Vec<_>>())
            .collect()
    }

    /// Power of `hz` in `samples` at 48 kHz, relative to the signal's whole power (Goertzel).
    fn share_at(samples: &[f64], hz: f64) -> f64 {
        let w = 2.0 * std::f64::consts::PI * hz / RATE as f64;
        let (mut s1, mut s2) = (0.0, 0.0);
        for &x in samples {
            let s = x + 2.0 * w.cos() * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
        let total: f64 = samples.iter().map(|x| x * x).sum();
        2.0 * power / (samples.len() as f64 * total)
    }

    const TONE: &str = "audiotestsrc num-buffers=50 samplesperbuffer=960 freq=1000 volume=0.5 \
                        ! audio/x-raw,format=S16LE,rate=48000,channels=2,layout=interleaved";

    #[test]
    fn a_tone_survives_encode_rtp_and_decode() {
        let decoded = run(&format!(
            "{TONE} ! tuttiopusenc bitrate=48000 ! rtpopuspay ! rtpopusdepay ! tuttiopusdec ! appsink name=out sync=false"
        ));
        let samples = left(&decoded);
        assert_eq!(samples.len(), 50 * 960, "one 20 ms frame out per frame in");
        // Past the codec's start-up, nearly all the power is the tone's.
        let share = share_at(&samples[4800..], 1000.0);
        assert!(share > 0.9, "share of 1 kHz {share:.3}");
        let rms = (samples[4800..].iter().map(|x| x * x).sum::<f64>() / (samples.len() - 4800) as f64).sqrt();
        assert!((rms - 0.5 * 32767.0 / 2f64.sqrt()).abs() < 0.1 * 11585.0, "level {rms:.0}");
    }

    #[test]
    fn packets_last_frame_size_and_keep_the_input_timestamps() {
        let packets = run(&format!("{TONE} ! tuttiopusenc frame-size=10 ! appsink name=out sync=false"));
        assert_eq!(packets.len(), 100, "10 ms packets for 1 s");
        for (i, p) in packets.iter().enumerate() {
            assert_eq!(p.pts(), Some(gst::ClockTime::from_mseconds(10 * i as u64)), "packet {i}");
            assert_eq!(p.duration(), Some(gst::ClockTime::from_mseconds(10)), "packet {i}");
        }
    }

    #[test]
    fn short_input_buffers_make_whole_frames() {
        let packets = run("audiotestsrc num-buffers=100 samplesperbuffer=480 \
                           ! audio/x-raw,format=S16LE,rate=48000,channels=2,layout=interleaved \
                           ! tuttiopusenc ! appsink name=out sync=false");
        assert_eq!(packets.len(), 50, "20 ms packets for 1 s of 10 ms buffers");
    }

    #[test]
    fn a_lost_packet_is_concealed_and_garbage_is_dropped() {
        gst::init().unwrap();
        register().unwrap();
        let dec = gst::ElementFactory::make("tuttiopusdec").property("plc", true).build().unwrap();
        let sink = gst_app::AppSink::builder().sync(false).build();
        let pipeline = gst::Pipeline::new();
        let src = gst_app::AppSrc::builder()
            .caps(&gst::Caps::builder("audio/x-opus").field("channel-mapping-family", 0i32).field("channels", 2i32).build())
            .format(gst::Format::Time)
            .build();
        pipeline.add_many([src.upcast_ref(), &dec, sink.upcast_ref()]).unwrap();
        gst::Element::link_many([src.upcast_ref(), &dec, sink.upcast_ref()]).unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let packets = run(&format!("{TONE} ! tuttiopusenc ! appsink name=out sync=false"));
        let ms20 = gst::ClockTime::from_mseconds(20);
        let stamped = |i: usize, buffer: &gst::Buffer| {
            let mut b = buffer.copy();
            b.get_mut().unwrap().set_pts(ms20 * i as u64);
            b
        };
        for (i, p) in packets.iter().take(10).enumerate() {
            src.push_buffer(stamped(i, p)).unwrap();
        }
        let mut out: Vec<gst::Buffer> = (0..10).map(|_| sink.pull_sample().unwrap().buffer_owned().unwrap()).collect();
        // Two packets lost: the depayloader says so with a gap event, in the
        // stream's order (the streaming thread is idle: every buffer is out).
        assert!(src.static_pad("src").unwrap().push_event(gst::event::Gap::builder(ms20 * 10).duration(ms20 * 2).build()));
        // A stranger's bytes where a packet should be, then the next packet.
        src.push_buffer(stamped(12, &gst::Buffer::from_slice([0xffu8; 7]))).unwrap();
        src.push_buffer(stamped(13, &packets[13])).unwrap();
        src.end_of_stream().unwrap();
        while let Ok(sample) = sink.pull_sample() {
            out.push(sample.buffer_owned().unwrap());
        }
        pipeline.set_state(gst::State::Null).unwrap();
        let pts: Vec<_> = out.iter().map(|b| (b.pts().unwrap().mseconds(), b.size() / 4)).collect();
        let concealed = pts.iter().filter(|(t, _)| (200..240).contains(t)).map(|(_, n)| n).sum::<usize>();
        assert_eq!(concealed, 2 * 960, "the gap is filled with 40 ms of concealment: {pts:?}");
        assert!(pts.iter().all(|(t, _)| *t != 240), "the garbage packet gave nothing: {pts:?}");
        assert_eq!(pts.last().unwrap(), &(260, 960), "the packet after it decodes: {pts:?}");
        // The concealment continues the tone rather than going silent.
        let hidden = left(&out.iter().filter(|b| (200..240).contains(&b.pts().unwrap().mseconds())).cloned().collect::<Vec<_>>());
        assert!(share_at(&hidden, 1000.0) > 0.5, "concealment carries the tone");
    }

    /// 20 ms blocks of a 1 kHz tone, S16LE stereo at 48 kHz.
    fn tone_blocks(count: usize) -> Vec<Vec<i16>> {
        (0..count)
            .map(|b| {
                (0..960)
                    .flat_map(|i| {
                        let t = (b * 960 + i) as f64 / RATE as f64;
                        let s = (8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as i16;
                        [s, s]
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_block_that_comes_with_a_shared_packet_is_sent_as_it_through_a_downmix() {
        gst::init().unwrap();
        register().unwrap();
        // What a mono Opus caller's return chain is (media::participant).
        let pipeline = gst::parse::launch(
            "appsrc name=src format=time caps=audio/x-raw,format=S16LE,layout=interleaved,rate=48000,channels=2 \
             ! audioconvert ! audioresample ! audio/x-raw,format=S16LE,rate=48000,channels=1 \
             ! tuttiopusenc bitrate=48000 name=enc ! appsink name=out sync=false",
        )
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let src = pipeline.by_name("src").unwrap().downcast::<gst_app::AppSrc>().unwrap();
        let sink = pipeline.by_name("out").unwrap().downcast::<gst_app::AppSink>().unwrap();
        let key = ShareKey::of(&pipeline.upcast_ref::<gst::Bin>().clone(), 1, std::time::Duration::from_millis(20)).unwrap();
        let mut shared = SharedEncode::new(key).unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let blocks = tone_blocks(30);
        let mut sent_shared = Vec::new();
        for (i, block) in blocks.iter().enumerate() {
            let mut buffer = gst::Buffer::from_mut_slice(block.iter().flat_map(|s| s.to_le_bytes()).collect::<Vec<u8>>());
            let buffer_mut = buffer.get_mut().unwrap();
            buffer_mut.set_pts(gst::ClockTime::from_mseconds(20 * i as u64));
            // Blocks 10-19 come with the shared encode's packet.
            if (10..20).contains(&i) {
                let packet = shared.encode(block, 2).unwrap();
                attach_shared_packet(buffer_mut, &packet);
                sent_shared.push(packet.to_vec());
            }
            src.push_buffer(buffer).unwrap();
        }
        src.end_of_stream().unwrap();
        let mut packets = Vec::new();
        while let Ok(sample) = sink.pull_sample() {
            packets.push(sample.buffer_owned().unwrap().map_readable().unwrap().to_vec());
        }
        pipeline.set_state(gst::State::Null).unwrap();
        assert_eq!(packets.len(), 30, "one packet per block");
        assert_eq!(&packets[10..20], &sent_shared[..], "the shared packets, as they were made");
        assert!(packets[..10].iter().chain(&packets[20..]).all(|p| !sent_shared.contains(p)), "the others its own");
        // The whole stream, shared packets and a restarted encoder included, decodes to the tone.
        let mut decoder = decoder_for_test(1);
        let decoded: Vec<f64> = packets.iter().flat_map(|p| decoder(p)).collect();
        assert_eq!(decoded.len(), 30 * 960);
        for (from, to) in [(4800, 9600), (9600, 19200), (19200, 28800)] {
            let share = share_at(&decoded[from..to], 1000.0);
            assert!(share > 0.9, "samples {from}..{to}: share of 1 kHz {share:.3}");
        }
    }

    /// A libopus decoder at 48 kHz: each packet to its samples (first channel).
    fn decoder_for_test(channels: i32) -> impl FnMut(&[u8]) -> Vec<f64> {
        let mut error = 0;
        // SAFETY: plain constructor, checked; the state lives as long as the closure (leaked in a test).
        let state = unsafe { ffi::opus_decoder_create(RATE, channels, &mut error) };
        assert!(!state.is_null() && error == ffi::OPUS_OK);
        move |packet| {
            let mut pcm = vec![0i16; 5760 * channels as usize];
            // SAFETY: `pcm` holds 5760 frames of `channels` samples.
            let n = unsafe { ffi::opus_decode(state, packet.as_ptr(), packet.len() as i32, pcm.as_mut_ptr(), 5760, 0) };
            assert!(n > 0, "decodes");
            pcm.iter().step_by(channels as usize).take(n as usize).map(|&s| f64::from(s)).collect()
        }
    }
}
