//! File outputs: HLS and recordings, each a part `out-{id}` fed by the
//! broadcast's two fanouts through its ghost pads `video` and `audio`.
//!
//! ```text
//!  [video] ─► queue ─► h264parse (byte-stream) ─► hlssink2          [video] ─► queue ─┐
//!  [audio] ─► queue ───────────────────────────┘                    [audio] ─► queue ─┴► mux (mkv / fragmented mp4) ─► filesink
//! ```

use gstreamer as gst;
use gstreamer::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::super::flow::{FlowCounter, Measure, count_on};
use super::super::part::expose_input;
use super::super::{DROP_IN_SINK_PROBE, MediaError, make};
use crate::model::output::RecordFormat;

/// HLS playlist window, in segments; older segments are deleted.
const HLS_PLAYLIST_SEGMENTS: u32 = 6;
/// How long a recording may take to write its last data when it stops.
const FINALIZE_TIMEOUT: Duration = Duration::from_secs(3);

/// Where file outputs go.
#[derive(Clone, Debug)]
pub struct OutputPaths {
    pub hls_dir: PathBuf,
    pub recordings_dir: PathBuf,
}

pub(super) enum FileKind {
    /// The directory of its playlist and segments, removed when it stops.
    Hls { dir: PathBuf },
    Recording { path: PathBuf },
}

/// A file output's part.
pub(super) struct FileOutput {
    pub(super) bin: gst::Bin,
    pub(super) kind: FileKind,
    /// Where the broadcast's video and audio come in.
    pub(super) video_in: gst::Pad,
    pub(super) audio_in: gst::Pad,
    /// Bytes out of its muxer: what it writes.
    pub(super) written: Arc<FlowCounter>,
}

impl FileOutput {
    /// An HLS part writing `dir/index.m3u8` and its segments.
    pub(super) fn hls(name: &str, dir: PathBuf, target_duration_secs: u32) -> Result<FileOutput, MediaError> {
        std::fs::create_dir_all(&dir).map_err(|e| MediaError::Io { path: dir.clone(), error: e.to_string() })?;
        let n = |role: &str| format!("{name}-{role}");
        let bin = gst::Bin::with_name(name);
        let vqueue = output_queue(&n("vqueue"))?;
        let parse = make("h264parse", &n("parse"))?;
        let bytestream = make("capsfilter", &n("bytestream"))?;
        bytestream.set_property(
            "caps",
            gst::Caps::builder("video/x-h264").field("stream-format", "byte-stream").field("alignment", "au").build(),
        );
        let aqueue = output_queue(&n("aqueue"))?;
        let sink = make("hlssink2", &n("hls"))?;
        sink.set_property("location", dir.join("segment%05d.ts").to_string_lossy().as_ref());
        sink.set_property("playlist-location", dir.join("index.m3u8").to_string_lossy().as_ref());
        sink.set_property("target-duration", target_duration_secs);
        sink.set_property("playlist-length", HLS_PLAYLIST_SEGMENTS);
        sink.set_property("max-files", HLS_PLAYLIST_SEGMENTS + 2);
        bin.add_many([&vqueue, &parse, &bytestream, &aqueue, &sink])?;
        gst::Element::link_many([&vqueue, &parse, &bytestream])?;
        link_to_request(&bytestream, &sink, "video")?;
        link_to_request(&aqueue, &sink, "audio")?;
        Self::finish(bin, FileKind::Hls { dir }, &vqueue, &aqueue)
    }

    /// A recording part writing `path`.
    pub(super) fn recording(name: &str, path: PathBuf, format: RecordFormat) -> Result<FileOutput, MediaError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| MediaError::Io { path: parent.to_owned(), error: e.to_string() })?;
        }
        let n = |role: &str| format!("{name}-{role}");
        let bin = gst::Bin::with_name(name);
        let vqueue = output_queue(&n("vqueue"))?;
        let aqueue = output_queue(&n("aqueue"))?;
        let mux = match format {
            RecordFormat::Matroska => make("matroskamux", &n("mux"))?,
            RecordFormat::FragmentedMp4 => {
                let mux = make("mp4mux", &n("mux"))?;
                // A fragment a second: a killed recording loses at most that.
                mux.set_property("fragment-duration", 1000u32);
                mux
            }
        };
        let sink = make("filesink", &n("file"))?;
        sink.set_property("location", path.to_string_lossy().as_ref());
        sink.set_property("async", false);
        bin.add_many([&vqueue, &aqueue, &mux, &sink])?;
        link_to_request(&vqueue, &mux, "video_%u")?;
        link_to_request(&aqueue, &mux, "audio_%u")?;
        mux.link(&sink)?;
        Self::finish(bin, FileKind::Recording { path }, &vqueue, &aqueue)
    }

    fn finish(bin: gst::Bin, kind: FileKind, vqueue: &gst::Element, aqueue: &gst::Element) -> Result<FileOutput, MediaError> {
        let video_in = expose_input(&bin, vqueue, "sink", "video")?;
        let audio_in = expose_input(&bin, aqueue, "sink", "audio")?;
        start_together(&video_in, &audio_in);
        Ok(FileOutput { bin, kind, video_in, audio_in, written: Arc::default() })
    }

    /// Starts counting what its muxer writes. hlssink2 makes its muxer only
    /// when it starts, so this is called once the part plays.
    pub(super) fn count_written(&self) {
        // "Codec/Muxer": splitmuxsink, itself a "Generic/Bin/Muxer", has no src pad.
        let muxer_src = self
            .bin
            .iterate_recurse()
            .into_iter()
            .flatten()
            .filter(|e| e.factory().is_some_and(|f| f.klass().contains("Codec/Muxer")))
            .find_map(|muxer| muxer.static_pad("src"));
        match muxer_src {
            Some(src) => count_on(&src, self.written.clone(), Measure::Bytes),
            None => tracing::warn!(output = %self.bin.name(), "no muxer found: its bytes will read 0"),
        }
    }

    /// Before it stops (off the engine thread): a recording is finalized, so
    /// that EOS reaches the file and the muxer writes its last data, unless
    /// its part failed and can carry nothing any more.
    pub(super) fn finalize_recording(&self, failed: bool) {
        if let FileKind::Recording { path } = &self.kind
            && !failed
        {
            finalize(&self.bin, [&self.video_in, &self.audio_in], path);
        }
    }

    /// After it stopped: an HLS output's playlist and segments go, and its
    /// composition's directory too once no other HLS output is left in it.
    pub(super) fn remove_hls_files(&self) {
        if let FileKind::Hls { dir } = &self.kind {
            let _ = std::fs::remove_dir_all(dir);
            if let Some(composition_dir) = dir.parent() {
                let _ = std::fs::remove_dir(composition_dir);
            }
        }
    }
}

/// Starts the file's sound with its picture: audio is dropped until the
/// first video frame has come, and then what ends before that frame. The
/// shared encode's video starts later than its audio when it wakes for the
/// first time: its leaky input queue drops the first canvas frames while
/// x264 makes its first ones, and a recording's sound began 65-103 ms
/// before its picture.
fn start_together(video_in: &gst::Pad, audio_in: &gst::Pad) {
    const NO_VIDEO_YET: u64 = u64::MAX;
    let first_video = Arc::new(AtomicU64::new(NO_VIDEO_YET));
    let seen = first_video.clone();
    video_in.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        if let Some(time) = info.buffer().and_then(|b| running_time(pad, b.pts())) {
            let _ = seen.compare_exchange(NO_VIDEO_YET, time.nseconds(), Ordering::SeqCst, Ordering::SeqCst);
        }
        gst::PadProbeReturn::Ok
    });
    audio_in.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let first = first_video.load(Ordering::SeqCst);
        let ends = info.buffer().and_then(|b| running_time(pad, b.pts().map(|pts| pts + b.duration().unwrap_or(gst::ClockTime::ZERO))));
        let early = first == NO_VIDEO_YET || ends.is_some_and(|end| end.nseconds() <= first);
        if early { DROP_IN_SINK_PROBE } else { gst::PadProbeReturn::Ok }
    });
}

/// `time` on the running time of `pad`'s segment: the two streams' stamps
/// are comparable only there.
fn running_time(pad: &gst::Pad, time: Option<gst::ClockTime>) -> Option<gst::ClockTime> {
    let segment = pad.sticky_event::<gst::event::Segment>(0)?;
    segment.segment().downcast_ref::<gst::ClockTime>()?.to_running_time(time?)
}

/// Sends EOS into a recording's inputs and waits (bounded) for it to reach
/// the file. The broadcast no longer feeds them (their links are detached).
fn finalize(bin: &gst::Bin, inputs: [&gst::Pad; 2], path: &Path) {
    let Some(sink) = bin.iterate_elements().into_iter().flatten().find(|e| e.factory().is_some_and(|f| f.name() == "filesink")) else {
        return;
    };
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let sink_pad = sink.static_pad("sink").expect("filesink has a sink pad");
    sink_pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
        if let Some(gst::PadProbeData::Event(event)) = &info.data
            && event.type_() == gst::EventType::Eos
        {
            let _ = done_tx.send(());
        }
        gst::PadProbeReturn::Ok
    });
    for pad in inputs {
        pad.send_event(gst::event::Eos::new());
    }
    if done_rx.recv_timeout(FINALIZE_TIMEOUT).is_err() {
        tracing::warn!(path = %path.display(), "recording did not finalize in time; the file is still playable up to its last fragment");
    }
}

/// The queue at the head of a file output's part. Leaky: a muxer that stops
/// taking data (splitmuxsink inside hlssink2 holds one stream back until the
/// other catches up) must cost that output frames, never block the fanout
/// and freeze the shared encode for every caller and output. Two seconds
/// ride out normal waits.
fn output_queue(name: &str) -> Result<gst::Element, MediaError> {
    let queue = make("queue", name)?;
    queue.set_property("max-size-buffers", 0u32);
    queue.set_property("max-size-bytes", 0u32);
    queue.set_property("max-size-time", gst::ClockTime::from_seconds(2).nseconds());
    queue.set_property_from_str("leaky", "downstream");
    Ok(queue)
}

fn link_to_request(src: &gst::Element, sink: &gst::Element, sink_template: &str) -> Result<(), MediaError> {
    let src_pad = src.static_pad("src").ok_or_else(|| MediaError::Gst(format!("{} has no src pad", src.name())))?;
    let sink_pad = sink
        .request_pad_simple(sink_template)
        .ok_or_else(|| MediaError::Gst(format!("{} refused a {sink_template} pad", sink.name())))?;
    src_pad.link(&sink_pad)?;
    Ok(())
}
