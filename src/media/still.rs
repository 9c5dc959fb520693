//! Still pictures, rendered once and repeated: a caller's slate, the
//! canvas background, overlay images.
//!
//! Rendering (text on a colour, an image decoded and scaled) runs once per
//! change in a throw-away pipeline, off the streaming threads; the live side
//! is `appsrc ─► imagefreeze ─► framerate` and only re-pushes a reference to
//! the same buffer each frame. Drawing text on every frame of a live test
//! source, as the first slate did, cost a text render and blend per frame.
//!
//! ```text
//!  render:  videotestsrc (1 frame) ─► caps ─► textoverlay ×2 ─► appsink      (a slate)
//!           filesrc ─► pngdec/jpegdec ─► convert ─► scale ─► caps ─► appsink (an image)
//!  repeat:  appsrc ─► imagefreeze (live, replaceable) ─► framerate ─► …
//! ```

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app::{AppSink, AppSrc};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{MediaError, in_canvas_colours, make};

/// How long a render may take before it is given up: a decode of a large
/// PNG takes tens of milliseconds here; a stuck one must not pile up threads.
const RENDER_DEADLINE: Duration = Duration::from_secs(5);

/// The live half: repeats the last picture it was shown at the canvas rate.
pub struct Still {
    appsrc: AppSrc,
    /// Its output, for the next element.
    pub output: gst::Element,
    /// Renders asked for so far; a render that finishes after a newer one
    /// was asked for is dropped, so the last change wins. Checked and
    /// pushed under this lock, so an older render cannot slip in after.
    generation: Arc<Mutex<u64>>,
}

impl Still {
    /// Adds `appsrc ─► imagefreeze ─► framerate` to `bin`.
    pub fn build(bin: &gst::Bin, prefix: &str, fps: u32) -> Result<Still, MediaError> {
        let appsrc = make("appsrc", &format!("{prefix}-still"))?;
        appsrc.set_property_from_str("format", "time");
        let freeze = make("imagefreeze", &format!("{prefix}-freeze"))?;
        freeze.set_property("is-live", true);
        freeze.set_property("allow-replace", true);
        let rate = make("capsfilter", &format!("{prefix}-rate"))?;
        // At the canvas rate: a slower live input makes the compositor wait
        // for it and the encoder then drops frames in bursts.
        rate.set_property("caps", gst::Caps::builder("video/x-raw").field("framerate", gst::Fraction::new(fps as i32, 1)).build());
        super::part::add_chain(bin, &[&appsrc, &freeze, &rate])?;
        answer_latency(&rate);
        let appsrc = appsrc.downcast::<AppSrc>().expect("appsrc element is an AppSrc");
        Ok(Still { appsrc, output: rate, generation: Arc::default() })
    }

    /// Renders with `render` on a thread of its own and shows the result;
    /// a failed render is logged and the previous picture stays.
    pub fn show_rendered(&self, what: String, render: impl FnOnce() -> Result<gst::Sample, MediaError> + Send + 'static) {
        let generation = {
            let mut latest = self.generation.lock().expect("still generation lock");
            *latest += 1;
            *latest
        };
        let latest = self.generation.clone();
        let appsrc = self.appsrc.downgrade();
        let spawned = std::thread::Builder::new().name("still-render".into()).spawn(move || match render() {
            Ok(sample) => {
                let latest = latest.lock().expect("still generation lock");
                if *latest == generation
                    && let Some(appsrc) = appsrc.upgrade()
                {
                    // Flushing (a part being torn down) is the only refusal; nothing to do then.
                    let _ = appsrc.push_sample(&sample);
                }
            }
            Err(e) => tracing::warn!(what, "render failed: {e}"),
        });
        if let Err(e) = spawned {
            tracing::warn!("no thread to render a still: {e}");
        }
    }
}

/// A still may be held back for any time: its picture does not change.
/// Answered here because imagefreeze reports a maximum latency of about a
/// frame, which with a caller's jitter buffer upstream of the same selector
/// (or beside it on the compositor) makes the pipeline latency impossible
/// ("max < min") and stalls the compositor.
fn answer_latency(output: &gst::Element) {
    let pad = output.static_pad("src").expect("capsfilter has a src pad");
    pad.add_probe(gst::PadProbeType::QUERY_UPSTREAM, |_, probe| {
        if let Some(gst::PadProbeData::Query(query)) = &mut probe.data
            && let gst::QueryViewMut::Latency(latency) = query.view_mut()
        {
            latency.set(true, gst::ClockTime::ZERO, gst::ClockTime::NONE);
            return gst::PadProbeReturn::Handled;
        }
        gst::PadProbeReturn::Ok
    });
}

/// The text of a slate and where it goes.
pub struct Card<'a> {
    pub width: u32,
    pub height: u32,
    pub colour: [u8; 3],
    /// Large, in the middle.
    pub headline: &'a str,
    /// Smaller, below it.
    pub caption: &'a str,
}

/// One I420 frame of `card`'s colour with its two lines of text.
pub fn render_card(card: &Card) -> Result<gst::Sample, MediaError> {
    let [r, g, b] = card.colour;
    let source = make("videotestsrc", "card-src")?;
    source.set_property("num-buffers", 1i32);
    source.set_property_from_str("pattern", "solid-color");
    source.set_property("foreground-color", u32::from_be_bytes([0xff, r, g, b]));
    let caps = capsfilter("card-caps", raw_caps("I420", card.width, Some(card.height)))?;
    let height = card.height as f64;
    // Sizes in pixels, from the cell height: initials a third of it, the
    // name a tenth (at least legible at the smallest cell).
    let headline = text("card-headline", card.headline, (height * 0.32).max(12.0), 0.42)?;
    let caption = text("card-caption", card.caption, (height * 0.10).max(10.0), 0.80)?;
    render_once(&[source, caps, headline, caption])
}

/// One I420 frame of a flat colour.
pub fn render_colour(width: u32, height: u32, [r, g, b]: [u8; 3]) -> Result<gst::Sample, MediaError> {
    let source = make("videotestsrc", "colour-src")?;
    source.set_property("num-buffers", 1i32);
    source.set_property_from_str("pattern", "solid-color");
    source.set_property("foreground-color", u32::from_be_bytes([0xff, r, g, b]));
    let caps = capsfilter("colour-caps", raw_caps("I420", width, Some(height)))?;
    render_once(&[source, caps])
}

/// A PNG or JPEG file decoded and scaled to `width` × `height` in `format`;
/// without a height, the image's aspect ratio decides it.
pub fn render_image(path: &Path, format: &str, width: u32, height: Option<u32>) -> Result<gst::Sample, MediaError> {
    let source = make("filesrc", "image-src")?;
    source.set_property("location", path);
    let is_png = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
    let decoder = make(if is_png { "pngdec" } else { "jpegdec" }, "image-dec")?;
    let convert = make("videoconvert", "image-convert")?;
    let scale = make("videoscale", "image-scale")?;
    let caps = capsfilter("image-caps", raw_caps(format, width, height))?;
    render_once(&[source, decoder, convert, scale, caps]).map_err(|e| match e {
        MediaError::Gst(error) => MediaError::Io { path: path.to_path_buf(), error },
        other => other,
    })
}

fn raw_caps(format: &str, width: u32, height: Option<u32>) -> gst::Caps {
    let mut caps = gst::Caps::builder("video/x-raw")
        .field("format", format)
        .field("width", width.max(2) as i32)
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1));
    if format == "I420" {
        // As the canvas: a still in other colours is converted on every frame it is shown.
        caps = in_canvas_colours(caps);
    }
    if let Some(height) = height {
        caps = caps.field("height", height.max(2) as i32);
    }
    caps.build()
}

fn capsfilter(name: &str, caps: gst::Caps) -> Result<gst::Element, MediaError> {
    let filter = make("capsfilter", name)?;
    filter.set_property("caps", caps);
    Ok(filter)
}

/// White text with a dark outline, centred at `ypos` (a fraction of the height).
fn text(name: &str, content: &str, size_px: f64, ypos: f64) -> Result<gst::Element, MediaError> {
    let overlay = make("textoverlay", name)?;
    set_plain_text(&overlay, content);
    overlay.set_property("font-desc", format!("Sans Bold {}px", size_px.round() as u32));
    overlay.set_property("auto-resize", false);
    overlay.set_property_from_str("halignment", "center");
    overlay.set_property_from_str("valignment", "position");
    overlay.set_property("ypos", ypos);
    overlay.set_property("shaded-background", false);
    overlay.set_property("draw-shadow", false);
    Ok(overlay)
}

/// Sets a textoverlay's text to `text` as written. User input goes in as a
/// property value, never into a description; and escaped, because
/// textoverlay reads its `text` as Pango markup: a name such as "R&D" would
/// otherwise draw nothing, and "<b>" would change the font.
pub fn set_plain_text(overlay: &gst::Element, text: &str) {
    overlay.set_property("text", gstreamer::glib::markup_escape_text(text).as_str());
}

/// Runs `elements ─► appsink` until its one frame comes out.
fn render_once(elements: &[gst::Element]) -> Result<gst::Sample, MediaError> {
    let pipeline = gst::Pipeline::with_name("render");
    let sink = make("appsink", "render-sink")?;
    // As fast as it renders: there is no clock to keep to.
    sink.set_property("sync", false);
    let mut chain: Vec<&gst::Element> = elements.iter().collect();
    chain.push(&sink);
    pipeline.add_many(chain.iter().copied())?;
    gst::Element::link_many(chain.iter().copied())?;
    let sink = sink.downcast::<AppSink>().expect("appsink element is an AppSink");
    let outcome = pipeline.set_state(gst::State::Playing).map_err(MediaError::from).and_then(|_| {
        sink.try_pull_preroll(gst::ClockTime::from_nseconds(RENDER_DEADLINE.as_nanos() as u64)).ok_or_else(|| {
            let reason = pipeline
                .bus()
                .and_then(|bus| bus.pop_filtered(&[gst::MessageType::Error]))
                .map(|m| match m.view() {
                    gst::MessageView::Error(e) => e.error().to_string(),
                    _ => String::new(),
                })
                .unwrap_or_else(|| format!("no picture within {} s", RENDER_DEADLINE.as_secs()));
            MediaError::Gst(reason)
        })
    });
    let _ = pipeline.set_state(gst::State::Null);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Y, U and V of the pixel at (`x`, `y`) of an I420 sample.
    fn yuv_at(sample: &gst::Sample, x: usize, y: usize) -> [u8; 3] {
        let info = gstreamer_video::VideoInfo::from_caps(sample.caps().expect("caps")).expect("video caps");
        let buffer = sample.buffer().expect("a buffer");
        let map = buffer.map_readable().expect("readable");
        let plane = |i: usize, px: usize, py: usize| map[info.offset()[i] + py * info.stride()[i] as usize + px];
        [plane(0, x, y), plane(1, x / 2, y / 2), plane(2, x / 2, y / 2)]
    }

    fn size(sample: &gst::Sample) -> (u32, u32) {
        let info = gstreamer_video::VideoInfo::from_caps(sample.caps().expect("caps")).expect("video caps");
        (info.width(), info.height())
    }

    #[test]
    fn a_card_is_its_colour_at_the_edges_and_white_text_in_the_middle() {
        gst::init().unwrap();
        let card = Card { width: 320, height: 180, colour: [0x1f, 0x5f, 0xa8], headline: "AL", caption: "Ada Lovelace" };
        let sample = render_card(&card).expect("a rendered card");
        assert_eq!(size(&sample), (320, 180));
        // #1f5fa8 in BT.601 limited range: Y 88, U 170, V 95 (± rounding).
        let [y, u, v] = yuv_at(&sample, 4, 4);
        assert!(y.abs_diff(88) <= 3 && u.abs_diff(170) <= 3 && v.abs_diff(95) <= 3, "corner {:?}", [y, u, v]);
        // Somewhere across the middle row the initials are white (Y near 235).
        let brightest = (0..320).map(|x| yuv_at(&sample, x, 75)[0]).max().expect("a row");
        assert!(brightest > 200, "no text across the middle: brightest Y {brightest}");
    }

    #[test]
    fn a_name_with_markup_characters_is_drawn_as_written() {
        gst::init().unwrap();
        let card = Card { width: 320, height: 180, colour: [0, 0, 0], headline: "R&D <b>", caption: "" };
        let sample = render_card(&card).expect("a rendered card");
        let brightest = (0..320).map(|x| yuv_at(&sample, x, 75)[0]).max().expect("a row");
        assert!(brightest > 200, "\"R&D <b>\" drew nothing: brightest Y {brightest}");
    }

    #[test]
    fn an_image_without_a_height_keeps_its_aspect_ratio() {
        gst::init().unwrap();
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("wide.png");
        let written = std::process::Command::new("ffmpeg")
            .args(["-loglevel", "error", "-f", "lavfi", "-i", "color=c=red:s=200x50", "-frames:v", "1", "-y"])
            .arg(&path)
            .status();
        if !written.is_ok_and(|s| s.success()) {
            eprintln!("skipped: no ffmpeg to make the test image");
            return;
        }
        let sample = render_image(&path, "BGRA", 100, None).expect("a decoded image");
        assert_eq!(size(&sample), (100, 25));
        let missing = render_image(&dir.path().join("missing.png"), "BGRA", 100, None);
        assert!(matches!(missing, Err(MediaError::Io { .. }) | Err(MediaError::Gst(_))), "{missing:?}");
    }
}
