//! A caller's picture on its way to the compositor: its video scaled to its
//! cell with its name on it, or its slate, switched live.
//!
//! ```text
//!  decoder ─► convert ─► crop ─► scale ─► cell caps ─► label ─► ┐
//!                                                        input-selector ─► [picture]
//!  slate: appsrc ─► imagefreeze ─► framerate ─────────────────► ┘
//! ```
//!
//! Everything here runs in the caller's own streaming threads: the crop
//! (for `fit: cover`) and scaling,
//! the label (textoverlay renders its text once per change and blends only
//! its own rectangle per frame), and the choice of picture. The slate is a
//! still ([`super::still`]), rendered again on a join, a rename, or a new
//! cell size while it is on screen. A caller whose video shows gets its
//! slate at the new size only when the slate is about to be shown: a layout
//! change resizes every cell at once, and rendering each slate then (a
//! pipeline with a font lookup, ~8 ms of CPU each) competed with the
//! compositor's renegotiation and paused the callers' return video.
//!
//! Which input shows is decided per frame by two pad probes, no timer:
//! each decoded frame notes the time and brings the video back (unless it is
//! muted); each slate frame puts the slate up when the video is muted or
//! has sent nothing for [`VIDEO_STALE_AFTER`], once the slate is at the
//! cell's size (until then the last frame stays). The selector drops what the
//! other input sends, so a switch takes effect at the next frame, with no
//! gap: the compositor keeps showing the last frame until then.

use gstreamer as gst;
use gstreamer::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::still::{Card, Still, render_card, set_plain_text};
use super::{CHROMA_SITE, COLORIMETRY, MediaError, in_canvas_colours, make};
use crate::model::ids::ParticipantId;
use crate::model::layout::Fit;
use crate::model::slate::{initials, slate_colour};

/// A caller whose video brings no frame for this long shows its slate
/// rather than its last frame, frozen. A second: well above the gap between
/// two frames of any sender (5 fps is 200 ms) and a keyframe wait after loss.
pub const VIDEO_STALE_AFTER: Duration = Duration::from_secs(1);

/// The label's text height as a fraction of the cell height, and its floor
/// in pixels (a 4x4 grid of 720p has 180-pixel cells: 15 px).
const LABEL_HEIGHT: f64 = 1.0 / 12.0;
const LABEL_MIN_PX: f64 = 12.0;
/// How much the band behind a label darkens the picture (textoverlay's
/// `shading-value`, 0-255; its default 80 leaves white text on a white
/// picture hard to read).
const LABEL_BAND_SHADING: u32 = 140;

/// A caller's picture: the bin's ghost src pad and what shapes it.
pub struct Picture {
    pub src: gst::Pad,
    /// Crops the video to its cell's shape (`fit: cover`) and sets the size
    /// it is scaled to; `None` for a caller without video.
    shape: Option<Shape>,
    label: Option<Label>,
    choice: Arc<Choice>,
}

/// A caller's name on its picture, and the size it is to be drawn at next.
///
/// GStreamer 1.22's textoverlay sets `font-desc` on its Pango layout without
/// the lock its renderer holds, so a size set from the engine thread while
/// the streaming thread draws the text corrupts the layout (`PangoLayout
/// changed since PangoLayoutIter was created`, then a SIGSEGV: seen once in
/// tests/churn.rs). The size is therefore handed over here and set by a
/// probe in the streaming thread, just before the next frame is drawn.
struct Label {
    overlay: gst::Element,
    next_size_px: Arc<Mutex<Option<u32>>>,
}

impl Label {
    fn new(overlay: gst::Element) -> Label {
        let next_size_px: Arc<Mutex<Option<u32>>> = Arc::default();
        let pending = Arc::downgrade(&next_size_px);
        let target = overlay.downgrade();
        let sink = overlay.static_pad("video_sink").expect("textoverlay has a video_sink pad");
        sink.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            let size = pending.upgrade().and_then(|p| p.lock().expect("label size lock").take());
            if let (Some(px), Some(overlay)) = (size, target.upgrade()) {
                overlay.set_property("font-desc", format!("Sans Bold {px}px"));
                // Its margins grow with it, off the cell's edge.
                overlay.set_property("xpad", (px / 2) as i32);
                overlay.set_property("ypad", (px / 2) as i32);
            }
            gst::PadProbeReturn::Ok
        });
        Label { overlay, next_size_px }
    }

    fn resize(&self, px: u32) {
        *self.next_size_px.lock().expect("label size lock") = Some(px);
    }
}

struct Shape {
    crop: gst::Element,
    cell: gst::Element,
}

/// A caller's slate and what it shows.
struct Slate {
    still: Still,
    card: Mutex<SlateCard>,
}

struct SlateCard {
    name: String,
    colour: [u8; 3],
    /// The cell's size.
    size: Option<(u32, u32)>,
    /// The size of the last render asked for.
    rendered: Option<(u32, u32)>,
}

impl Slate {
    /// Renders the card as it is now.
    fn render(&self) {
        let mut card = self.card.lock().expect("slate card lock");
        let Some((width, height)) = card.size else { return };
        card.rendered = card.size;
        let (name, colour) = (card.name.clone(), card.colour);
        self.still.show_rendered(format!("slate of {name}"), move || {
            render_card(&Card { width, height, colour, headline: &initials(&name), caption: &name })
        });
    }

    /// Whether a slate frame of `frame_size` fits the cell; if it does not,
    /// a render at the cell's size is asked for (once).
    fn fits(&self, frame_size: Option<(u32, u32)>) -> bool {
        let (size, rendered) = {
            let card = self.card.lock().expect("slate card lock");
            (card.size, card.rendered)
        };
        if rendered != size {
            self.render();
        }
        frame_size == size
    }
}

/// Shared by the two probes that pick the picture.
struct Choice {
    selector: gst::Element,
    video_pad: Option<gst::Pad>,
    slate_pad: gst::Pad,
    slate: Slate,
    video_muted: AtomicBool,
    /// Whether the selector shows the video; a lock, not an atomic, so
    /// that the flag and the selector never disagree when both probes race.
    showing_video: Mutex<bool>,
    /// Nanoseconds after `epoch` of the last decoded frame; 0: none yet.
    last_frame: AtomicU64,
    epoch: Instant,
}

impl Picture {
    /// The picture of a caller, built in `bin`: from `decoded` (its video
    /// decoder's output) if it sends video, else its slate only.
    pub fn build(
        bin: &gst::Bin,
        prefix: &str,
        id: &ParticipantId,
        name: &str,
        decoded: Option<&gst::Element>,
        fps: u32,
    ) -> Result<Picture, MediaError> {
        let selector = make("input-selector", &format!("{prefix}-vselect"))?;
        // An input not shown is dropped at once rather than held back to
        // keep pace with the one shown; and no buffer is cached for a switch.
        selector.set_property("sync-streams", false);
        selector.set_property("cache-buffers", false);
        bin.add(&selector)?;
        let slate = Still::build(bin, &format!("{prefix}-slate"), fps)?;
        let slate_pad = link_to_selector(&slate.output, &selector)?;

        let (shape, label, video_pad) = match decoded {
            Some(decoded) => {
                let convert = make("videoconvert", &format!("{prefix}-vconv"))?;
                // Follows the incoming size by itself: a caller changing resolution keeps its crop.
                let crop = make("aspectratiocrop", &format!("{prefix}-vcrop"))?;
                let scale = make("videoscale", &format!("{prefix}-vscale"))?;
                scale.set_property("add-borders", true);
                let cell = make("capsfilter", &format!("{prefix}-vcell"))?;
                let label = make("textoverlay", &format!("{prefix}-label"))?;
                set_plain_text(&label, name);
                label.set_property("auto-resize", false);
                label.set_property_from_str("halignment", "left");
                label.set_property_from_str("valignment", "bottom");
                // The translucent band behind the text and its outline keep
                // it readable on any picture, white or black.
                label.set_property("shaded-background", true);
                label.set_property("shading-value", LABEL_BAND_SHADING);
                label.set_property("draw-outline", true);
                label.set_property("draw-shadow", false);
                super::part::add_chain(bin, &[&convert, &crop, &scale, &cell, &label])?;
                assume_canvas_colours(&convert.static_pad("sink").expect("videoconvert has a sink pad"));
                decoded.link(&convert)?;
                let pad = link_to_selector(&label, &selector)?;
                (Some(Shape { crop, cell }), Some(Label::new(label)), Some(pad))
            }
            None => (None, None, None),
        };
        selector.set_property("active-pad", &slate_pad);
        let src = super::part::expose_static(bin, &selector, "src", "picture")?;
        let choice = Arc::new(Choice {
            selector,
            video_pad,
            slate_pad,
            video_muted: AtomicBool::new(false),
            showing_video: Mutex::new(false),
            last_frame: AtomicU64::new(0),
            epoch: Instant::now(),
            slate: Slate {
                card: Mutex::new(SlateCard { name: name.to_string(), colour: slate_colour(id), size: None, rendered: None }),
                still: slate,
            },
        });
        choice.watch(label.as_ref().map(|l| &l.overlay));
        Ok(Picture { src, shape, label, choice })
    }

    /// Fits the picture to a cell: the video's crop and scale, and if the
    /// size changed, the label's size and the slate (rendered again now if
    /// it is on screen, else when it is next shown). Only what changed is
    /// set, since each change renegotiates the caller's chain: relayouts
    /// that move a caller without resizing it redraw nothing.
    pub fn set_cell(&self, width: u32, height: u32, fit: Fit) {
        if let Some(Shape { crop, cell }) = &self.shape {
            let caps = cell_caps(width, height);
            if cell.property::<Option<gst::Caps>>("caps").as_ref() != Some(&caps) {
                cell.set_property("caps", caps);
            }
            // 0/1 crops nothing: the whole picture, with black bars.
            let aspect = match fit {
                Fit::Contain => gst::Fraction::new(0, 1),
                Fit::Cover => gst::Fraction::new(width as i32, height.max(1) as i32),
            };
            if crop.property::<gst::Fraction>("aspect-ratio") != aspect {
                crop.set_property("aspect-ratio", aspect);
            }
        }
        {
            let mut card = self.choice.slate.card.lock().expect("slate card lock");
            if card.size == Some((width, height)) {
                return;
            }
            card.size = Some((width, height));
        }
        if let Some(label) = &self.label {
            label.resize((f64::from(height) * LABEL_HEIGHT).max(LABEL_MIN_PX).round() as u32);
        }
        if !self.choice.showing_video() {
            self.choice.slate.render();
        }
    }

    /// A new name: on the label and the slate, at once.
    pub fn set_name(&self, name: &str) {
        if let Some(label) = &self.label {
            set_plain_text(&label.overlay, name);
        }
        let renamed = {
            let mut card = self.choice.slate.card.lock().expect("slate card lock");
            let renamed = card.name != name;
            card.name = name.to_string();
            renamed
        };
        if renamed {
            self.choice.slate.render();
        }
    }

    pub fn show_label(&self, shown: bool) {
        if let Some(label) = &self.label {
            label.overlay.set_property("silent", !shown);
        }
    }

    /// Muted video shows the slate from the next slate frame, and the
    /// picture again from the next decoded frame after it is unmuted.
    pub fn set_video_muted(&self, muted: bool) {
        self.choice.video_muted.store(muted, Ordering::SeqCst);
    }
}

impl Choice {
    /// Installs the two probes that pick the picture (see the module doc).
    fn watch(self: &Arc<Self>, video: Option<&gst::Element>) {
        if let Some(video) = video {
            let choice = Arc::downgrade(self);
            video.static_pad("src").expect("textoverlay has a src pad").add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                if let Some(choice) = choice.upgrade() {
                    choice.on_video_frame();
                }
                gst::PadProbeReturn::Ok
            });
        }
        let choice = Arc::downgrade(self);
        self.slate.still.output.static_pad("src").expect("capsfilter has a src pad").add_probe(gst::PadProbeType::BUFFER, move |pad, _| {
            if let Some(choice) = choice.upgrade() {
                choice.on_slate_frame(pad);
            }
            gst::PadProbeReturn::Ok
        });
    }

    fn now(&self) -> u64 {
        // +1: 0 means "no frame yet".
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    fn on_video_frame(&self) {
        self.last_frame.store(self.now(), Ordering::SeqCst);
        if !self.video_muted.load(Ordering::SeqCst) {
            self.show(true);
        }
    }

    /// `pad` carries the slate frame, its caps already sent.
    fn on_slate_frame(&self, pad: &gst::Pad) {
        let last = self.last_frame.load(Ordering::SeqCst);
        let stale = last == 0 || Duration::from_nanos(self.now().saturating_sub(last)) > VIDEO_STALE_AFTER;
        if !(stale || self.video_muted.load(Ordering::SeqCst)) {
            return;
        }
        // Only a switch away from the video waits for the slate's size;
        // a slate on screen is rendered again as soon as its cell changes.
        if self.showing_video() && !self.slate.fits(frame_size(pad)) {
            return;
        }
        self.show(false);
    }

    fn showing_video(&self) -> bool {
        *self.showing_video.lock().expect("choice lock")
    }

    /// Switches the selector if it does not already show that input. The
    /// probes run before the selector's chain, outside its lock, so taking
    /// it here (to set the property) cannot deadlock.
    fn show(&self, video: bool) {
        let pad = match (video, &self.video_pad) {
            (true, Some(pad)) => pad,
            (true, None) => return,
            (false, _) => &self.slate_pad,
        };
        let mut showing_video = self.showing_video.lock().expect("choice lock");
        if *showing_video != video {
            *showing_video = video;
            self.selector.set_property("active-pad", pad);
        }
    }
}

fn frame_size(pad: &gst::Pad) -> Option<(u32, u32)> {
    let caps = pad.current_caps()?;
    let structure = caps.structure(0)?;
    Some((structure.get::<i32>("width").ok()? as u32, structure.get::<i32>("height").ok()? as u32))
}

fn link_to_selector(upstream: &gst::Element, selector: &gst::Element) -> Result<gst::Pad, MediaError> {
    let pad = selector.request_pad_simple("sink_%u").ok_or_else(|| MediaError::Gst("input-selector refused a sink pad".into()))?;
    upstream.static_pad("src").expect("the upstream element has a src pad").link(&pad)?;
    Ok(pad)
}

/// A stream that says nothing of its colorimetry (no VUI colour
/// description: most room systems and many encoders) or of its chroma
/// siting is taken to be in the canvas's, rather than in
/// GStreamer's guess from its height, which made every 720p caller's scale
/// to a smaller cell a matrix conversion. One that says which it is keeps
/// it and is converted once, where it is scaled.
fn assume_canvas_colours(pad: &gst::Pad) {
    pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, |_, info| {
        let Some(gst::PadProbeData::Event(event)) = &mut info.data else { return gst::PadProbeReturn::Ok };
        let gst::EventView::Caps(caps_event) = event.view() else { return gst::PadProbeReturn::Ok };
        let caps = caps_event.caps();
        let Some(structure) = caps.structure(0) else { return gst::PadProbeReturn::Ok };
        let missing: Vec<_> = [("colorimetry", COLORIMETRY), ("chroma-site", CHROMA_SITE)]
            .into_iter()
            .filter(|&(field, _)| !structure.has_field(field))
            .collect();
        if !missing.is_empty() {
            let mut caps = caps.to_owned();
            let structure = caps.make_mut().structure_mut(0).expect("the caps have the structure just read");
            for (field, value) in missing {
                structure.set(field, value);
            }
            *event = gst::event::Caps::new(&caps);
        }
        gst::PadProbeReturn::Ok
    });
}

/// A caller's picture scaled to its cell: I420 like the canvas, square
/// pixels so that videoscale keeps the aspect ratio with black bars.
fn cell_caps(width: u32, height: u32) -> gst::Caps {
    in_canvas_colours(gst::Caps::builder("video/x-raw").field("format", "I420"))
        .field("width", width as i32)
        .field("height", height as i32)
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
        .build()
}
