//! A composition's branding: the background under the callers and the
//! overlay images above them, both changed live on a layout `PUT`.
//!
//! ```text
//!  driver ────────────────────────────────────────► ┐
//!  background: appsrc ─► imagefreeze ─► framerate ─► compositor (zorder 0, under every caller) ─► probe: blend overlays ─► canvas caps
//!  [caller-…] ────────────────────────────────────► ┘
//! ```
//!
//! The background is a still ([`crate::media::still`]) rendered once at the
//! canvas size, on its own compositor pad, present from the start so that
//! it sorts under every caller; it shows only while a background is set.
//! Overlays are not pads: the canvas is I420, and the compositor converts
//! each pad to it, which would lose a logo's alpha. They are decoded once to
//! BGRA overlay rectangles and blended with their alpha by
//! `GstVideoOverlayComposition` onto each output frame, touching only their
//! own rectangles.

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_video as gst_video;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::media::still::{Still, render_colour, render_image};
use crate::media::MediaError;
use crate::model::branding::{self, Background};
use crate::model::layout::{LayoutConfig, Overlay};

/// An image a layout names that is not in the branding directory.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("image {0:?} is not in the branding directory")]
pub struct MissingImage(pub String);

/// Checks that every image `layout` shows is a file in `dir`.
pub fn check_images(layout: &LayoutConfig, dir: &Path) -> Result<(), MissingImage> {
    match branding::images(layout).find(|name| !dir.join(name).is_file()) {
        Some(name) => Err(MissingImage(name.to_string())),
        None => Ok(()),
    }
}

pub struct Branding {
    dir: PathBuf,
    width: u32,
    height: u32,
    background: Still,
    background_pad: gst::Pad,
    /// What the canvas probe blends; `None` without overlays.
    overlays: Arc<Mutex<Option<gst_video::VideoOverlayComposition>>>,
    /// Overlay renders asked for; only the latest is shown.
    overlay_generation: Arc<AtomicU64>,
}

impl Branding {
    /// Adds the background's still to `pipeline` on a pad of `compositor`,
    /// and the overlay blend on the compositor's output.
    pub fn build(
        pipeline: &gst::Pipeline,
        compositor: &gst::Element,
        prefix: &str,
        canvas: &gst::Caps,
        fps: u32,
        dir: PathBuf,
    ) -> Result<Branding, MediaError> {
        let info = gst_video::VideoInfo::from_caps(canvas).map_err(|e| MediaError::Gst(format!("canvas caps: {e}")))?;
        let background = Still::build(pipeline.upcast_ref(), &format!("{prefix}-background"), fps)?;
        let background_pad = compositor
            .request_pad_simple("sink_%u")
            .ok_or_else(|| MediaError::Gst(format!("{} refused a background pad", compositor.name())))?;
        background_pad.set_property("zorder", 0u32);
        background_pad.set_property("alpha", 0.0f64);
        background.output.static_pad("src").expect("capsfilter has a src pad").link(&background_pad)?;

        let overlays: Arc<Mutex<Option<gst_video::VideoOverlayComposition>>> = Arc::default();
        let blend = overlays.clone();
        let (width, height) = (info.width(), info.height());
        let out = compositor.static_pad("src").expect("compositor has a src pad");
        out.add_probe(gst::PadProbeType::BUFFER, move |_, probe| {
            let composition = blend.lock().expect("overlays lock");
            if let (Some(composition), Some(gst::PadProbeData::Buffer(buffer))) = (composition.as_ref(), &mut probe.data)
                && let Ok(mut frame) = gst_video::VideoFrameRef::from_buffer_ref_writable(buffer.make_mut(), &info)
                && let Err(e) = composition.blend(&mut frame)
            {
                tracing::debug!("overlay blend: {e}");
            }
            gst::PadProbeReturn::Ok
        });
        Ok(Branding {
            dir,
            width,
            height,
            background,
            background_pad,
            overlays,
            overlay_generation: Arc::default(),
        })
    }

    /// Shows `layout`'s background and overlays, rendered off this thread;
    /// the previous ones stay until the new ones are ready. The engine has
    /// checked that the images exist ([`check_images`]).
    pub fn apply(&self, layout: &LayoutConfig) {
        let (width, height) = (self.width, self.height);
        match branding::background(layout) {
            None => self.background_pad.set_property("alpha", 0.0f64),
            Some(background) => {
                let path = match &background {
                    Background::Image(name) => Some(self.dir.join(name)),
                    Background::Colour(_) => None,
                };
                self.background.show_rendered("background".into(), move || match (background, path) {
                    (Background::Colour(rgb), _) => render_colour(width, height, rgb),
                    (Background::Image(_), Some(path)) => render_image(&path, "I420", width, Some(height)),
                    (Background::Image(name), None) => Err(MediaError::Gst(format!("no path for {name}"))),
                });
                self.background_pad.set_property("alpha", 1.0f64);
            }
        }
        self.apply_overlays(layout.overlays.clone());
    }

    fn apply_overlays(&self, overlays: Vec<Overlay>) {
        let generation = self.overlay_generation.fetch_add(1, Ordering::SeqCst) + 1;
        let latest = self.overlay_generation.clone();
        let shown = self.overlays.clone();
        let (dir, width, height) = (self.dir.clone(), self.width, self.height);
        let render = move || {
            let rendered = if overlays.is_empty() { Ok(None) } else { overlay_composition(&dir, &overlays, width, height).map(Some) };
            match rendered {
                Ok(composition) => {
                    // Checked under the lock it stores under: an older render
                    // finishing after a newer one cannot replace it.
                    let mut shown = shown.lock().expect("overlays lock");
                    if latest.load(Ordering::SeqCst) == generation {
                        *shown = composition;
                    }
                }
                Err(e) => tracing::warn!("overlays not shown: {e}"),
            }
        };
        if let Err(e) = std::thread::Builder::new().name("overlay-render".into()).spawn(render) {
            tracing::warn!("no thread to render overlays: {e}");
        }
    }
}

/// The overlays decoded and scaled to their rectangles on a `width` ×
/// `height` canvas, in order (the last in front).
fn overlay_composition(
    dir: &Path,
    overlays: &[Overlay],
    width: u32,
    height: u32,
) -> Result<gst_video::VideoOverlayComposition, MediaError> {
    let px = |fraction: f64, total: u32| (fraction * f64::from(total)).round() as u32;
    let mut rectangles = Vec::with_capacity(overlays.len());
    for overlay in overlays {
        let sample = render_image(&dir.join(&overlay.image), "BGRA", px(overlay.width, width), overlay.height.map(|h| px(h, height)))?;
        let info = sample
            .caps()
            .and_then(|caps| gst_video::VideoInfo::from_caps(caps).ok())
            .ok_or_else(|| MediaError::Gst(format!("{}: no picture size", overlay.image)))?;
        let mut buffer = sample.buffer_owned().ok_or_else(|| MediaError::Gst(format!("{}: no picture", overlay.image)))?;
        gst_video::VideoMeta::add(
            buffer.make_mut(),
            gst_video::VideoFrameFlags::empty(),
            gst_video::VideoFormat::Bgra,
            info.width(),
            info.height(),
        )?;
        rectangles.push(gst_video::VideoOverlayRectangle::new_raw(
            &buffer,
            px(overlay.x, width) as i32,
            px(overlay.y, height) as i32,
            info.width(),
            info.height(),
            gst_video::VideoOverlayFormatFlags::empty(),
        ));
    }
    Ok(gst_video::VideoOverlayComposition::new(rectangles.iter())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_image_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("logo.png"), b"not checked here").expect("write");
        let layout: LayoutConfig = serde_json::from_str(
            r#"{"background": "stage.png", "overlays": [{"image": "logo.png", "x": 0, "y": 0, "width": 0.1}]}"#,
        )
        .expect("valid layout");
        assert_eq!(check_images(&layout, dir.path()), Err(MissingImage("stage.png".into())));
        std::fs::write(dir.path().join("stage.png"), b"").expect("write");
        assert_eq!(check_images(&layout, dir.path()), Ok(()));
    }
}
