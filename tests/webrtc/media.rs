//! The media around the browser: its fake camera and microphone files, the
//! encoders that feed a [`Peer`] at real-time pace (as Tutti's media side
//! will, from GStreamer streaming threads), and the decoders that judge the
//! frames a peer hands over.
//!
//! ```text
//!  videotestsrc (solid colour) ! vp8enc | x264enc ! appsink ─► peer.write_video
//!  audiotestsrc (sine) ! opusenc ! appsink ─────────────────► peer.write_audio
//!  MediaIn frames ─► appsrc ! vp8dec | h264parse ! avdec_h264 ! RGB appsink ─► centre colours
//!  MediaIn packets ─► appsrc ! opusdec ! F32 mono appsink ─► samples
//! ```

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tutti::webrtc::{Codec, Peer, VideoCodec};

use crate::common::run_bounded;

const FFMPEG_TIMEOUT: Duration = Duration::from_secs(60);
/// Decoding a few seconds of media takes well under a second; a sample that
/// takes this long means the decoder is stuck.
const PULL_TIMEOUT: Duration = Duration::from_secs(10);
/// Decoded pictures are scaled to this for judging their colour.
const JUDGE_SIZE: (usize, usize) = (160, 90);
/// The square at the centre of the picture whose mean colour is judged.
const JUDGE_SQUARE: usize = 16;
pub const AUDIO_RATE: u32 = 48_000;

/// A Y4M file for `--use-file-for-fake-video-capture`: a box of `rgb` at the
/// centre (half the width and height) on faint grey noise that changes every frame.
/// The box is what is judged; the noise makes every frame cost many packets, so
/// lost packets hit video as they would a real camera's.
pub fn camera_file(path: &Path, rgb: [u8; 3], size: (u32, u32)) -> Result<()> {
    let (w, h) = size;
    let noise = format!("nullsrc=s={w}x{h}:r=30,geq=lum='112+random(1)*32':cb=128:cr=128");
    let colour = format!(
        "color=c=0x{:02x}{:02x}{:02x}:s={}x{}:r=30",
        rgb[0],
        rgb[1],
        rgb[2],
        w / 2,
        h / 2
    );
    let overlay = format!("[0][1]overlay=x={}:y={}:shortest=1,format=yuv420p", w / 4, h / 4);
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            &noise,
            "-f",
            "lavfi",
            "-i",
            &colour,
            "-filter_complex",
            &overlay,
            "-t",
            "1",
        ],
        path,
    )
}

/// A WAV file of a sine for `--use-file-for-fake-audio-capture` (Chromium loops it).
pub fn microphone_file(path: &Path, hz: u32) -> Result<()> {
    let sine = format!("sine=frequency={hz}:sample_rate={AUDIO_RATE}:duration=10");
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            &sine,
            "-af",
            "volume=0.5",
            "-ac",
            "1",
            "-c:a",
            "pcm_s16le",
        ],
        path,
    )
}

fn ffmpeg(args: &[&str], output: &Path) -> Result<()> {
    let mut command = Command::new("ffmpeg");
    command
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .arg(output);
    let result = run_bounded(command, FFMPEG_TIMEOUT)?;
    ensure!(
        result.status.success(),
        "ffmpeg making {}: {}",
        output.display(),
        String::from_utf8_lossy(&result.stderr)
    );
    Ok(())
}

/// A live encoder writing to a peer until dropped.
pub struct Encoder {
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
}

impl Encoder {
    /// A solid `rgb` picture of `size` at 30 fps, in `codec`.
    pub fn video(codec: VideoCodec, rgb: [u8; 3], size: (u32, u32), peer: Peer) -> Result<Encoder> {
        let argb = u32::from_be_bytes([0xff, rgb[0], rgb[1], rgb[2]]);
        let encoder = match codec {
            VideoCodec::Vp8 => "vp8enc deadline=1 keyframe-max-dist=90 target-bitrate=600000".to_string(),
            VideoCodec::H264 => "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=90 bitrate=600 \
                 ! video/x-h264,profile=constrained-baseline,stream-format=byte-stream,alignment=au"
                .to_string(),
        };
        let description = format!(
            "videotestsrc is-live=true pattern=solid-color foreground-color={argb} \
             ! video/x-raw,format=I420,width={},height={},framerate=30/1 ! {encoder} ! appsink name=sink sync=false",
            size.0, size.1
        );
        Encoder::start(&description, move |data, timestamp, keyframe| {
            peer.write_video(data, timestamp, keyframe, Instant::now())
        })
    }

    /// A sine of `hz` in 20 ms Opus packets.
    pub fn opus_tone(hz: u32, peer: Peer) -> Result<Encoder> {
        let description = format!(
            "audiotestsrc is-live=true wave=sine freq={hz} volume=0.5 samplesperbuffer=960 \
             ! audio/x-raw,rate={AUDIO_RATE},channels=1 ! opusenc frame-size=20 bitrate=64000 \
             ! appsink name=sink sync=false"
        );
        Encoder::start(&description, move |data, timestamp, _| {
            peer.write_audio(data, timestamp, Instant::now())
        })
    }

    fn start(description: &str, write: impl Fn(Bytes, Duration, bool) + Send + Sync + 'static) -> Result<Encoder> {
        gst::init()?;
        let pipeline = gst::parse::launch(description)
            .with_context(|| format!("building {description}"))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| anyhow::anyhow!("not a pipeline: {description}"))?;
        let sink = appsink(&pipeline)?;
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
                    let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                    let timestamp = Duration::from_nanos(buffer.pts().map_or(0, |t| t.nseconds()));
                    let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
                    write(Bytes::copy_from_slice(&map), timestamp, keyframe);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        pipeline.set_state(gst::State::Playing).context("starting an encoder")?;
        Ok(Encoder { pipeline, sink })
    }

    /// Makes the encoder's next frame a keyframe, with its headers.
    pub fn force_keyframe(&self) {
        let event = gstreamer_video::UpstreamForceKeyUnitEvent::builder()
            .all_headers(true)
            .build();
        self.sink.send_event(event);
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn appsink(pipeline: &gst::Pipeline) -> Result<gst_app::AppSink> {
    pipeline
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .context("the pipeline's appsink")
}

/// The mean colour at the centre of each picture the frames decode to.
pub fn decode_video_colours(codec: Codec, frames: &[(Duration, Bytes)]) -> Result<Vec<[u8; 3]>> {
    let (caps, decoder) = match codec {
        Codec::Vp8 => ("video/x-vp8", "vp8dec"),
        Codec::H264 => (
            "video/x-h264,stream-format=byte-stream,alignment=au",
            "h264parse ! avdec_h264",
        ),
        Codec::Opus => bail!("Opus is not video"),
    };
    let (width, height) = JUDGE_SIZE;
    let description = format!(
        "appsrc name=src format=time caps={caps} ! {decoder} ! videoconvert ! videoscale \
         ! video/x-raw,format=RGB,width={width},height={height} ! appsink name=sink sync=false"
    );
    let samples = run_through(&description, frames)?;
    let mut colours = Vec::with_capacity(samples.len());
    for data in samples {
        let stride = (width * 3).div_ceil(4) * 4;
        let (x0, y0) = ((width - JUDGE_SQUARE) / 2, (height - JUDGE_SQUARE) / 2);
        let mut sum = [0u64; 3];
        for y in y0..y0 + JUDGE_SQUARE {
            for x in x0..x0 + JUDGE_SQUARE {
                let i = y * stride + x * 3;
                for c in 0..3 {
                    sum[c] += u64::from(data[i + c]);
                }
            }
        }
        let n = (JUDGE_SQUARE * JUDGE_SQUARE) as u64;
        colours.push([(sum[0] / n) as u8, (sum[1] / n) as u8, (sum[2] / n) as u8]);
    }
    Ok(colours)
}

/// Opus packets decoded to mono f32 samples at [`AUDIO_RATE`].
pub fn decode_opus(packets: &[(Duration, Bytes)]) -> Result<Vec<f32>> {
    let description = format!(
        "appsrc name=src format=time caps=audio/x-opus,channel-mapping-family=0,rate={AUDIO_RATE},channels=2 \
         ! opusdec ! audioconvert ! audioresample ! audio/x-raw,format=F32LE,rate={AUDIO_RATE},channels=1 \
         ! appsink name=sink sync=false"
    );
    let chunks = run_through(&description, packets)?;
    Ok(chunks
        .iter()
        .flat_map(|c| c.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        .collect())
}

/// H.264 RTP packets (payload type 96, RTP time from 0) of `frames` I420
/// pictures of `size` at 30 fps, frame `n` white where `white(n)` and black
/// elsewhere, with a keyframe every second; each with its time from the first.
pub fn h264_rtp_flashes(size: (u32, u32), frames: u32, white: impl Fn(u32) -> bool) -> Result<Vec<(Duration, Bytes)>> {
    let (width, height) = size;
    let description = format!(
        "appsrc name=src format=time caps=video/x-raw,format=I420,width={width},height={height},framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bitrate=400 \
         ! video/x-h264,profile=constrained-baseline ! rtph264pay pt=96 mtu=1200 timestamp-offset=0 config-interval=-1 \
         ! appsink name=sink sync=false"
    );
    let luma = (width * height) as usize;
    let pictures: Vec<(Duration, Bytes)> = (0..frames)
        .map(|n| {
            let mut picture = vec![if white(n) { 235 } else { 16 }; luma];
            picture.resize(luma * 3 / 2, 128);
            (Duration::from_secs(u64::from(n)) / 30, Bytes::from(picture))
        })
        .collect();
    run_through(&description, &pictures)?
        .into_iter()
        .map(|packet| {
            ensure!(packet.len() > 12, "a short RTP packet");
            let rtp_time = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
            Ok((Duration::from_micros(u64::from(rtp_time) * 100 / 9), Bytes::from(packet)))
        })
        .collect()
}

/// Pushes every input through `description` (appsrc "src" to appsink "sink")
/// and returns what comes out, buffer by buffer.
fn run_through(description: &str, inputs: &[(Duration, Bytes)]) -> Result<Vec<Vec<u8>>> {
    gst::init()?;
    let pipeline = gst::parse::launch(description)
        .with_context(|| format!("building {description}"))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    let src = pipeline
        .by_name("src")
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        .context("the decoder's appsrc")?;
    let sink = appsink(&pipeline)?;
    src.set_max_bytes(0); // unlimited: everything is queued before anything is pulled
    pipeline.set_state(gst::State::Playing)?;
    for (timestamp, data) in inputs {
        let mut buffer = gst::Buffer::from_slice(data.clone());
        buffer
            .get_mut()
            .expect("a new buffer is writable")
            .set_pts(gst::ClockTime::from_nseconds(timestamp.as_nanos() as u64));
        src.push_buffer(buffer).context("pushing to the decoder")?;
    }
    src.end_of_stream().context("ending the decoder's input")?;
    let mut outputs = Vec::new();
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_nseconds(PULL_TIMEOUT.as_nanos() as u64)) {
        let buffer = sample.buffer().context("a sample without a buffer")?;
        outputs.push(buffer.map_readable()?.to_vec());
    }
    let bus = pipeline.bus().context("a pipeline bus")?;
    let error = bus.pop_filtered(&[gst::MessageType::Error]);
    let _ = pipeline.set_state(gst::State::Null);
    if let Some(message) = error
        && let gst::MessageView::Error(e) = message.view()
    {
        bail!("decoding with {description}: {} ({:?})", e.error(), e.debug());
    }
    ensure!(
        sink.is_eos(),
        "the decoder did not finish within {PULL_TIMEOUT:?} of its last output"
    );
    Ok(outputs)
}
