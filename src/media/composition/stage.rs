//! Where the pictures stand on the compositor: each pad's rectangle, z-order
//! and alpha, set at once (a cut) or stepped from where they stand to where
//! the layout wants them (a fade), and the border around the active speaker.
//!
//! A fade is a thread that steps the pads once per canvas frame. The
//! caller's chain is already scaling to the new cell when it starts; while
//! the pad's size differs from the picture's, the compositor scales it (only
//! for the fade's few hundred ms). A newer layout ends an older fade before
//! its next step: both hold the same lock, and the fade gives up once its
//! generation is not the latest.
//!
//! ```text
//!  highlight: videotestsrc (solid, border colour) ─► capsfilter (speaker's cell + border) ─► compositor pad, just below the speaker
//! ```

use gstreamer as gst;
use gstreamer::prelude::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::super::{MediaError, in_canvas_colours, make};
use crate::model::layout::Rect;

/// The speaker's border colour (ARGB): amber, like a tally light.
const HIGHLIGHT_COLOUR: u32 = 0xffff_b000;
/// The border's width: this share of the canvas height, at least 2 px (6 px on 720p).
const HIGHLIGHT_SHARE: u32 = 120;
/// The highlight source's size while nobody is highlighted: it costs nothing.
const IDLE_SIZE: i32 = 16;

/// A compositor pad's place: what a layout sets and a fade steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PadGeometry {
    pub x: i32,
    pub y: i32,
    pub width: i32,
    pub height: i32,
    pub alpha: f64,
    pub zorder: u32,
}

impl PadGeometry {
    /// Shown at `rect`, at compositor z-order `zorder`.
    pub fn shown(rect: Rect, zorder: u32) -> PadGeometry {
        PadGeometry { x: rect.x as i32, y: rect.y as i32, width: rect.width as i32, height: rect.height as i32, alpha: 1.0, zorder }
    }

    fn read(pad: &gst::Pad) -> PadGeometry {
        PadGeometry {
            x: pad.property("xpos"),
            y: pad.property("ypos"),
            width: pad.property("width"),
            height: pad.property("height"),
            alpha: pad.property("alpha"),
            zorder: pad.property("zorder"),
        }
    }

    fn write(&self, pad: &gst::Pad) {
        pad.set_property("xpos", self.x);
        pad.set_property("ypos", self.y);
        pad.set_property("width", self.width);
        pad.set_property("height", self.height);
        pad.set_property("alpha", self.alpha);
        pad.set_property("zorder", self.zorder);
    }

    /// `t` of the way from `self` to `to` (0 to 1), on even pixels; the
    /// z-order is the new one throughout.
    fn towards(&self, to: &PadGeometry, t: f64) -> PadGeometry {
        let step = |a: i32, b: i32| ((f64::from(a) + (f64::from(b) - f64::from(a)) * t).round() as i32) & !1;
        PadGeometry {
            x: step(self.x, to.x),
            y: step(self.y, to.y),
            width: step(self.width, to.width).max(2),
            height: step(self.height, to.height).max(2),
            alpha: self.alpha + (to.alpha - self.alpha) * t,
            zorder: to.zorder,
        }
    }
}

/// Where a pad goes: `None` leaves the canvas (faded out where it stands).
pub struct Move {
    pub pad: gst::Pad,
    pub to: Option<PadGeometry>,
}

/// Applies layouts to the compositor pads; owns the running fade.
#[derive(Default)]
pub struct Stage {
    /// Bumped by every layout applied; a fade steps only while it is its own.
    generation: Arc<Mutex<u64>>,
}

impl Stage {
    /// Moves every pad, at once or over `fade` stepped every `frame`.
    pub fn apply(&self, moves: Vec<Move>, fade: Option<Duration>, frame: Duration) {
        let mut generation = self.generation.lock().expect("stage lock");
        *generation += 1;
        let steps: Vec<(gst::glib::WeakRef<gst::Pad>, PadGeometry, PadGeometry)> = moves
            .into_iter()
            .map(|Move { pad, to }| {
                let from = PadGeometry::read(&pad);
                let to = to.unwrap_or(PadGeometry { alpha: 0.0, ..from });
                // What was not shown appears where it goes, fading in.
                let from = if from.alpha == 0.0 { PadGeometry { alpha: 0.0, ..to } } else { from };
                (pad.downgrade(), from, to)
            })
            .collect();
        let Some(fade) = fade.filter(|f| !f.is_zero()) else {
            for (pad, _, to) in &steps {
                if let Some(pad) = pad.upgrade() {
                    to.write(&pad);
                }
            }
            return;
        };
        let mine = *generation;
        drop(generation);
        let lock = self.generation.clone();
        let count = (fade.as_nanos() / frame.as_nanos().max(1)).max(1) as u32;
        let started = Instant::now();
        let spawned = std::thread::Builder::new().name("layout-fade".into()).spawn(move || {
            for step in 1..=count {
                std::thread::sleep((started + frame * step).saturating_duration_since(Instant::now()));
                let generation = lock.lock().expect("stage lock");
                if *generation != mine {
                    return;
                }
                let t = f64::from(step) / f64::from(count);
                for (pad, from, to) in &steps {
                    let Some(pad) = pad.upgrade() else { continue };
                    let mut now = from.towards(to, t);
                    // What appears or leaves passes behind what moves, not
                    // over it (pads of one z-order blend in pad order).
                    let moves = from.alpha > 0.0 && to.alpha > 0.0;
                    if !moves && step < count {
                        now.zorder = to.zorder.saturating_sub(1);
                    }
                    now.write(&pad);
                }
            }
        });
        if let Err(e) = spawned {
            tracing::warn!("no thread for a layout fade ({e}); cutting instead");
        }
    }
}

/// The border around the active speaker: a solid colour picture on its own
/// compositor pad, a few pixels larger than the speaker's, just below it.
/// Drawn by its own source thread, so no caller's chain draws anything.
pub struct Highlight {
    pub pad: gst::Pad,
    size: gst::Element,
}

impl Highlight {
    /// In `pipeline`, linked to a new `compositor` pad, hidden.
    pub fn build(pipeline: &gst::Pipeline, compositor: &gst::Element, prefix: &str, fps: u32) -> Result<Highlight, MediaError> {
        let source = make("videotestsrc", &format!("{prefix}-highlight"))?;
        source.set_property("is-live", true);
        source.set_property_from_str("pattern", "solid-color");
        source.set_property("foreground-color", HIGHLIGHT_COLOUR);
        let size = make("capsfilter", &format!("{prefix}-highlight-size"))?;
        pipeline.add_many([&source, &size])?;
        gst::Element::link_many([&source, &size])?;
        let pad = compositor
            .request_pad_simple("sink_%u")
            .ok_or_else(|| MediaError::Gst(format!("{} refused a highlight pad", compositor.name())))?;
        pad.set_property("alpha", 0.0f64);
        let highlight = Highlight { pad, size };
        // At the canvas frame rate: a slower live source holds the compositor back.
        highlight.size.set_property("caps", highlight_caps(IDLE_SIZE, IDLE_SIZE, fps));
        highlight.size.static_pad("src").expect("capsfilter has src").link(&highlight.pad)?;
        Ok(highlight)
    }

    /// Where the border goes around `speaker` (a cell of the canvas
    /// `canvas`), z-order `zorder`; `None` when nobody is highlighted.
    pub fn target(speaker: Option<(Rect, u32)>, canvas: (u32, u32)) -> Option<PadGeometry> {
        let (rect, zorder) = speaker?;
        let border = ((canvas.1 / HIGHLIGHT_SHARE) & !1).max(2);
        let x = rect.x.saturating_sub(border);
        let y = rect.y.saturating_sub(border);
        let right = (rect.x + rect.width + border).min(canvas.0);
        let bottom = (rect.y + rect.height + border).min(canvas.1);
        Some(PadGeometry::shown(Rect { x, y, width: right - x, height: bottom - y }, zorder))
    }

    /// Its source makes pictures of the border's size, so that the
    /// compositor copies rather than scales them.
    pub fn resize(&self, to: Option<&PadGeometry>, fps: u32) {
        let (width, height) = to.map_or((IDLE_SIZE, IDLE_SIZE), |g| (g.width, g.height));
        let caps = highlight_caps(width, height, fps);
        if self.size.property::<Option<gst::Caps>>("caps").as_ref() != Some(&caps) {
            self.size.set_property("caps", caps);
        }
    }
}

fn highlight_caps(width: i32, height: i32, fps: u32) -> gst::Caps {
    in_canvas_colours(gst::Caps::builder("video/x-raw").field("format", "I420"))
        .field("width", width)
        .field("height", height)
        .field("framerate", gst::Fraction::new(fps as i32, 1))
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_of_a_fade_lies_between_the_two_places_on_even_pixels() {
        let from = PadGeometry { x: 0, y: 0, width: 640, height: 360, alpha: 1.0, zorder: 2 };
        let to = PadGeometry { x: 640, y: 360, width: 320, height: 180, alpha: 0.0, zorder: 4 };
        assert_eq!(from.towards(&to, 0.0), PadGeometry { zorder: 4, ..from });
        assert_eq!(from.towards(&to, 1.0), to);
        let half = from.towards(&to, 0.5);
        assert_eq!((half.x, half.y, half.width, half.height, half.alpha), (320, 180, 480, 270 & !1, 0.5));
        let third = from.towards(&to, 1.0 / 3.0);
        assert!(third.x % 2 == 0 && third.width % 2 == 0);
    }

    fn compositor_pads(count: usize) -> (gst::Element, Vec<gst::Pad>) {
        gst::init().unwrap();
        let compositor = gst::ElementFactory::make("compositor").build().unwrap();
        let pads: Vec<gst::Pad> = (0..count).map(|_| compositor.request_pad_simple("sink_%u").unwrap()).collect();
        // Hidden until placed, as a composition links them.
        pads.iter().for_each(|pad| pad.set_property("alpha", 0.0f64));
        (compositor, pads)
    }

    const FRAME: Duration = Duration::from_millis(10);

    #[test]
    fn a_cut_places_every_pad_at_once_and_hides_what_leaves() {
        let (_compositor, pads) = compositor_pads(2);
        let stage = Stage::default();
        let place = PadGeometry { x: 2, y: 4, width: 6, height: 8, alpha: 1.0, zorder: 2 };
        stage.apply(vec![Move { pad: pads[0].clone(), to: Some(place) }, Move { pad: pads[1].clone(), to: Some(place) }], None, FRAME);
        assert_eq!(PadGeometry::read(&pads[0]), place);
        stage.apply(vec![Move { pad: pads[0].clone(), to: None }], None, FRAME);
        assert_eq!(PadGeometry::read(&pads[0]), PadGeometry { alpha: 0.0, ..place }, "it leaves where it stood");
    }

    #[test]
    fn a_fade_ends_where_the_layout_wants_and_a_newer_layout_takes_over() {
        let (_compositor, pads) = compositor_pads(2);
        let stage = Stage::default();
        let old = PadGeometry { x: 0, y: 0, width: 640, height: 360, alpha: 1.0, zorder: 2 };
        let new = PadGeometry { x: 320, y: 0, width: 320, height: 180, alpha: 1.0, zorder: 2 };
        stage.apply(vec![Move { pad: pads[0].clone(), to: Some(old) }], None, FRAME);
        stage.apply(vec![Move { pad: pads[0].clone(), to: Some(new) }, Move { pad: pads[1].clone(), to: Some(old) }], Some(FRAME * 40), FRAME);
        // Watched until it ends (bounded): some steps in between, never a jump back.
        let (mut between, mut last_x) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(5);
        while PadGeometry::read(&pads[0]) != new && Instant::now() < deadline {
            let (moving, appearing) = (PadGeometry::read(&pads[0]), PadGeometry::read(&pads[1]));
            assert!(moving.x >= last_x, "{moving:?} went back");
            last_x = moving.x;
            if moving.x > 0 && moving.x < 320 {
                assert!(moving.width > 320 && moving.width < 640, "half way: {moving:?}");
                between += 1;
            }
            if appearing.alpha > 0.0 && appearing.alpha < 1.0 {
                assert_eq!((appearing.x, appearing.width, appearing.zorder), (0, 640, 1), "it fades in in its place, behind");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(between > 5, "only {between} looks at the picture between its places");
        std::thread::sleep(FRAME * 3);
        assert_eq!(PadGeometry::read(&pads[0]), new);
        assert_eq!(PadGeometry::read(&pads[1]), old);

        stage.apply(vec![Move { pad: pads[0].clone(), to: Some(old) }], Some(FRAME * 50), FRAME);
        std::thread::sleep(FRAME * 5);
        stage.apply(vec![Move { pad: pads[0].clone(), to: Some(new) }], None, FRAME);
        std::thread::sleep(FRAME * 5);
        assert_eq!(PadGeometry::read(&pads[0]), new, "the cut stopped the older fade");
    }

    #[test]
    fn the_border_surrounds_the_speaker_inside_the_canvas() {
        let speaker = Rect { x: 0, y: 0, width: 640, height: 360 };
        let border = Highlight::target(Some((speaker, 3)), (1280, 720)).unwrap();
        assert_eq!(border, PadGeometry { x: 0, y: 0, width: 646, height: 366, alpha: 1.0, zorder: 3 });
        let middle = Rect { x: 320, y: 180, width: 640, height: 360 };
        let border = Highlight::target(Some((middle, 1)), (1280, 720)).unwrap();
        assert_eq!((border.x, border.y, border.width, border.height), (314, 174, 652, 372));
        assert_eq!(Highlight::target(None, (1280, 720)), None);
    }
}
