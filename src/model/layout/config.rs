//! What a producer sets as a composition's layout (`"layout"` at creation,
//! `PUT /v1/compositions/{id}/layout` live): how the callers are arranged,
//! plus what every arrangement shares (labels, the speaker highlight, the
//! background, overlays).
//!
//! JSON is one flat object, `{"kind": "pip", "corner": "top_right", "labels": false}`.
//! It is read into a [`RawLayout`] with every field optional, then checked
//! into a [`LayoutConfig`]: an option of another kind (`strip` on a grid)
//! is an error naming it, not silently ignored.

use serde::{Deserialize, Serialize};

use crate::model::ids::ParticipantId;

/// Regions and overlays a layout takes at most.
pub const MAX_REGIONS: usize = 16;
pub const MAX_OVERLAYS: usize = 8;
/// The widest gap between cells, in pixels.
pub const MAX_GAP: u32 = 64;
/// The longest transition: longer is no longer a transition but a show.
pub const MAX_TRANSITION_MS: u32 = 5000;
pub const DEFAULT_TRANSITION_MS: u32 = 300;
/// A picture-in-picture inset's size, as a fraction of the canvas width.
pub const DEFAULT_PIP_SIZE: f64 = 0.25;
pub const PIP_SIZES: std::ops::RangeInclusive<f64> = 0.05..=0.5;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayoutKind {
    #[default]
    Grid,
    Speaker,
    Pip,
    Single,
    Custom,
}

/// How a picture fills a rectangle of another shape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fit {
    /// All of it, with black bars.
    #[default]
    Contain,
    /// The rectangle filled, the picture's edges cropped.
    Cover,
}

/// Where the speaker layout puts the small pictures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strip {
    #[default]
    Bottom,
    Right,
    /// Only the speaker is shown.
    None,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Corner {
    TopLeft,
    TopRight,
    #[default]
    BottomRight,
    BottomLeft,
}

/// A custom layout's rectangle, in fractions of the canvas.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
    /// Higher is in front.
    #[serde(default)]
    pub z: u32,
    #[serde(default)]
    pub fit: Fit,
    /// Who sits here; `null` takes the next caller in join order that no
    /// other region names.
    #[serde(default)]
    pub participant: Option<ParticipantId>,
}

/// An image (a logo, a lower third) above the callers, in fractions of the
/// canvas; without `height` it keeps the image's aspect ratio.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    /// A file name in the branding directory (PNG or JPEG).
    pub image: String,
    pub x: f64,
    pub y: f64,
    pub width: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<f64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionKind {
    #[default]
    Cut,
    Fade,
}

/// How a `PUT` goes from the old layout to the new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transition {
    pub kind: TransitionKind,
    #[serde(default = "default_transition_ms")]
    pub ms: u32,
}

fn default_transition_ms() -> u32 {
    DEFAULT_TRANSITION_MS
}

/// How the callers are arranged, with each kind's own options.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Arrangement {
    /// Equal cells in join order (1, 2, 2x2, 3x3, 4x4).
    Grid { fit: Fit, hide_without_video: bool, gap: u32 },
    /// One large picture (the pinned participant, else the active speaker)
    /// and the others small in a strip.
    Speaker { strip: Strip, pinned: Option<ParticipantId>, fit: Fit, hide_without_video: bool, gap: u32 },
    /// One caller fills the canvas (`main`, else the active speaker), the
    /// next ones inset in a corner, `size` of the canvas width each.
    Pip { main: Option<ParticipantId>, corner: Corner, size: f64, fit: Fit, hide_without_video: bool },
    /// One caller, full frame (`null` follows the active speaker).
    Single { participant: Option<ParticipantId>, fit: Fit },
    /// Rectangles of the producer's own; callers without one are not shown.
    Custom { regions: Vec<Region> },
}

impl Default for Arrangement {
    fn default() -> Self {
        Arrangement::Grid { fit: Fit::Contain, hide_without_video: false, gap: 0 }
    }
}

impl Arrangement {
    pub fn kind(&self) -> LayoutKind {
        match self {
            Arrangement::Grid { .. } => LayoutKind::Grid,
            Arrangement::Speaker { .. } => LayoutKind::Speaker,
            Arrangement::Pip { .. } => LayoutKind::Pip,
            Arrangement::Single { .. } => LayoutKind::Single,
            Arrangement::Custom { .. } => LayoutKind::Custom,
        }
    }
}

/// A composition's layout, checked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawLayout")]
pub struct LayoutConfig {
    #[serde(flatten)]
    pub arrangement: Arrangement,
    /// Each caller's name drawn in its cell.
    pub labels: bool,
    /// A border around the active speaker's picture.
    pub highlight_speaker: bool,
    /// Where no caller is: `#rrggbb`, or an image file in the branding
    /// directory; `null` is black.
    pub background: Option<String>,
    /// Above the callers, in order (the last in front).
    pub overlays: Vec<Overlay>,
    /// How this layout replaces the one before; only on a `PUT`, not kept.
    #[serde(skip_serializing)]
    pub transition: Option<Transition>,
}

impl Default for LayoutConfig {
    fn default() -> Self {
        LayoutConfig {
            arrangement: Arrangement::default(),
            labels: true,
            highlight_speaker: false,
            background: None,
            overlays: Vec::new(),
            transition: None,
        }
    }
}

impl LayoutConfig {
    pub fn kind(&self) -> LayoutKind {
        self.arrangement.kind()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct InvalidLayout(pub String);

/// The JSON as sent: every field of every kind, all optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLayout {
    #[serde(default)]
    kind: LayoutKind,
    fit: Option<Fit>,
    hide_without_video: Option<bool>,
    gap: Option<u32>,
    strip: Option<Strip>,
    pinned: Option<ParticipantId>,
    main: Option<ParticipantId>,
    corner: Option<Corner>,
    size: Option<f64>,
    participant: Option<ParticipantId>,
    regions: Option<Vec<Region>>,
    labels: Option<bool>,
    highlight_speaker: Option<bool>,
    background: Option<String>,
    overlays: Option<Vec<Overlay>>,
    transition: Option<Transition>,
}

impl TryFrom<RawLayout> for LayoutConfig {
    type Error = InvalidLayout;

    fn try_from(raw: RawLayout) -> Result<LayoutConfig, InvalidLayout> {
        let kind = raw.kind;
        let name = serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        // Options that belong to other kinds: named, not ignored.
        let options: [(&str, bool, &[LayoutKind]); 10] = {
            use LayoutKind::*;
            [
                ("fit", raw.fit.is_some(), &[Grid, Speaker, Pip, Single]),
                ("hide_without_video", raw.hide_without_video.is_some(), &[Grid, Speaker, Pip]),
                ("gap", raw.gap.is_some(), &[Grid, Speaker]),
                ("strip", raw.strip.is_some(), &[Speaker]),
                ("pinned", raw.pinned.is_some(), &[Speaker]),
                ("main", raw.main.is_some(), &[Pip]),
                ("corner", raw.corner.is_some(), &[Pip]),
                ("size", raw.size.is_some(), &[Pip]),
                ("participant", raw.participant.is_some(), &[Single]),
                ("regions", raw.regions.is_some(), &[Custom]),
            ]
        };
        if let Some((option, _, _)) = options.iter().find(|(_, given, kinds)| *given && !kinds.contains(&kind)) {
            return Err(InvalidLayout(format!("`{option}` is not an option of the {name} layout")));
        }
        let fit = raw.fit.unwrap_or_default();
        let hide_without_video = raw.hide_without_video.unwrap_or(false);
        let gap = raw.gap.unwrap_or(0);
        if gap > MAX_GAP {
            return Err(InvalidLayout(format!("gap {gap} is more than {MAX_GAP} pixels")));
        }
        let arrangement = match kind {
            LayoutKind::Grid => Arrangement::Grid { fit, hide_without_video, gap },
            LayoutKind::Speaker => {
                Arrangement::Speaker { strip: raw.strip.unwrap_or_default(), pinned: raw.pinned, fit, hide_without_video, gap }
            }
            LayoutKind::Pip => {
                let size = raw.size.unwrap_or(DEFAULT_PIP_SIZE);
                if !PIP_SIZES.contains(&size) {
                    return Err(InvalidLayout(format!(
                        "size {size} is outside {}..{} (a fraction of the canvas width)",
                        PIP_SIZES.start(),
                        PIP_SIZES.end()
                    )));
                }
                Arrangement::Pip { main: raw.main, corner: raw.corner.unwrap_or_default(), size, fit, hide_without_video }
            }
            LayoutKind::Single => Arrangement::Single { participant: raw.participant, fit },
            LayoutKind::Custom => {
                let regions = raw.regions.unwrap_or_default();
                if regions.len() > MAX_REGIONS {
                    return Err(InvalidLayout(format!("{} regions; a layout takes at most {MAX_REGIONS}", regions.len())));
                }
                for (i, r) in regions.iter().enumerate() {
                    check_fractions(&format!("regions[{i}]"), r.x, r.y, r.width, Some(r.height))?;
                }
                Arrangement::Custom { regions }
            }
        };
        if let Some(background) = &raw.background {
            check_background(background)?;
        }
        let overlays = raw.overlays.unwrap_or_default();
        if overlays.len() > MAX_OVERLAYS {
            return Err(InvalidLayout(format!("{} overlays; a layout takes at most {MAX_OVERLAYS}", overlays.len())));
        }
        for (i, o) in overlays.iter().enumerate() {
            check_image_name(&format!("overlays[{i}].image"), &o.image)?;
            check_fractions(&format!("overlays[{i}]"), o.x, o.y, o.width, o.height)?;
        }
        if let Some(t) = &raw.transition
            && t.ms > MAX_TRANSITION_MS
        {
            return Err(InvalidLayout(format!("transition.ms {} is more than {MAX_TRANSITION_MS}", t.ms)));
        }
        Ok(LayoutConfig {
            arrangement,
            labels: raw.labels.unwrap_or(true),
            highlight_speaker: raw.highlight_speaker.unwrap_or(false),
            background: raw.background,
            overlays,
            transition: raw.transition,
        })
    }
}

/// A rectangle in fractions of the canvas: inside it, and not empty.
fn check_fractions(what: &str, x: f64, y: f64, width: f64, height: Option<f64>) -> Result<(), InvalidLayout> {
    // A little slack so that thirds (0.3333 + 0.6667) add up.
    const SLACK: f64 = 1e-6;
    let inside = |origin: f64, extent: f64| origin >= 0.0 && extent > 0.0 && origin + extent <= 1.0 + SLACK;
    if !inside(x, width) || !height.is_none_or(|h| inside(y, h)) || !(0.0..1.0).contains(&y) {
        return Err(InvalidLayout(format!(
            "{what} must lie inside the canvas: x, y, width and height are fractions of it (0 to 1), width and height above 0"
        )));
    }
    Ok(())
}

/// `#rrggbb`, or an image file name.
fn check_background(background: &str) -> Result<(), InvalidLayout> {
    match background.strip_prefix('#') {
        Some(hex) if hex.len() == 6 && hex.chars().all(|c| c.is_ascii_hexdigit()) => Ok(()),
        Some(_) => Err(InvalidLayout(format!("background {background:?} is not a colour of the form #rrggbb"))),
        None => check_image_name("background", background),
    }
}

/// A plain file name of a PNG or JPEG: nothing that could leave the branding directory.
fn check_image_name(what: &str, name: &str) -> Result<(), InvalidLayout> {
    let plain = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    let lower = name.to_ascii_lowercase();
    let image = [".png", ".jpg", ".jpeg"].iter().any(|ext| lower.ends_with(ext));
    if plain && image {
        Ok(())
    } else {
        Err(InvalidLayout(format!(
            "{what} {name:?} must be a plain file name (letters, digits, '.', '-', '_') ending in .png, .jpg or .jpeg"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(json: &str) -> Result<LayoutConfig, String> {
        serde_json::from_str::<LayoutConfig>(json).map_err(|e| e.to_string())
    }

    #[test]
    fn an_empty_layout_is_a_labelled_grid() {
        let l = layout("{}").unwrap();
        assert_eq!(l, LayoutConfig::default());
        assert_eq!(l.kind(), LayoutKind::Grid);
        assert!(l.labels);
    }

    #[test]
    fn each_kind_takes_its_options_with_defaults() {
        let l = layout(r#"{"kind": "speaker", "strip": "right"}"#).unwrap();
        assert_eq!(
            l.arrangement,
            Arrangement::Speaker { strip: Strip::Right, pinned: None, fit: Fit::Contain, hide_without_video: false, gap: 0 }
        );
        let l = layout(r#"{"kind": "pip", "main": "p1", "labels": false}"#).unwrap();
        assert_eq!(
            l.arrangement,
            Arrangement::Pip {
                main: Some(ParticipantId::from("p1".to_string())),
                corner: Corner::BottomRight,
                size: DEFAULT_PIP_SIZE,
                fit: Fit::Contain,
                hide_without_video: false
            }
        );
        assert!(!l.labels);
        let l = layout(r#"{"kind": "custom", "regions": [{"x": 0, "y": 0, "width": 0.5, "height": 1, "fit": "cover"}]}"#).unwrap();
        let Arrangement::Custom { regions } = &l.arrangement else { panic!("{l:?}") };
        assert_eq!((regions[0].fit, regions[0].z, regions[0].participant.clone()), (Fit::Cover, 0, None));
    }

    #[test]
    fn an_option_of_another_kind_is_named() {
        let e = layout(r#"{"kind": "grid", "strip": "right"}"#).unwrap_err();
        assert!(e.contains("`strip` is not an option of the grid layout"), "{e}");
        let e = layout(r#"{"regions": []}"#).unwrap_err();
        assert!(e.contains("`regions` is not an option of the grid layout"), "{e}");
        let e = layout(r#"{"kind": "grid", "colums": 3}"#).unwrap_err();
        assert!(e.contains("colums"), "{e}");
        assert!(layout(r#"{"kind": "mosaic"}"#).unwrap_err().contains("mosaic"));
    }

    #[test]
    fn out_of_range_values_are_refused() {
        for bad in [
            r#"{"gap": 65}"#,
            r#"{"kind": "pip", "size": 0.9}"#,
            r#"{"kind": "custom", "regions": [{"x": 0.6, "y": 0, "width": 0.5, "height": 1}]}"#,
            r#"{"kind": "custom", "regions": [{"x": 0, "y": 0, "width": 0, "height": 1}]}"#,
            r##"{"background": "#12345"}"##,
            r#"{"background": "../etc/passwd.png"}"#,
            r#"{"background": "logo.gif"}"#,
            r#"{"overlays": [{"image": "logo.png", "x": 0.9, "y": 0, "width": 0.2}]}"#,
            r#"{"transition": {"kind": "fade", "ms": 60000}}"#,
        ] {
            assert!(layout(bad).is_err(), "{bad} was taken");
        }
        assert!(layout(r#"{"kind": "custom", "regions": [{"x": 0.3333333, "y": 0, "width": 0.6666667, "height": 1}]}"#).is_ok());
        assert!(layout(r##"{"background": "#1A2b3c", "overlays": [{"image": "logo.png", "x": 0.85, "y": 0.05, "width": 0.1}]}"##).is_ok());
    }

    #[test]
    fn the_transition_is_read_but_not_kept() {
        let l = layout(r#"{"kind": "single", "transition": {"kind": "fade"}}"#).unwrap();
        assert_eq!(l.transition, Some(Transition { kind: TransitionKind::Fade, ms: DEFAULT_TRANSITION_MS }));
        let json = serde_json::to_value(&l).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "single", "participant": null, "fit": "contain", "labels": true,
                "highlight_speaker": false, "background": null, "overlays": []})
        );
    }

    #[test]
    fn what_is_shown_reads_back_as_the_same_layout() {
        for json in [
            r#"{"kind": "grid", "fit": "cover", "gap": 8, "hide_without_video": true}"#,
            r#"{"kind": "speaker", "strip": "none", "pinned": "p2"}"#,
            r#"{"kind": "pip", "corner": "top_left", "size": 0.3}"#,
            r#"{"kind": "custom", "regions": [{"x": 0.5, "y": 0.5, "width": 0.5, "height": 0.5, "z": 2, "participant": "p1"}]}"#,
        ] {
            let l = layout(json).unwrap();
            let shown = serde_json::to_string(&l).unwrap();
            assert_eq!(layout(&shown).unwrap(), l, "{shown}");
        }
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::proptest_config())]

        /// A bad `layout` in a request is a typed error naming what is wrong, never a panic.
        #[test]
        fn any_layout_json_is_a_config_or_an_error(json in "\\{(\"(kind|strip|gap|size|corner|fit|regions|labels|background)\": ?(\"[a-z_#0-9.]{0,8}\"|[0-9.-]{1,4}|null|true|\\{\\}|\\[\\])(, ?)?){0,4}\\}") {
            match serde_json::from_str::<LayoutConfig>(&json) {
                Ok(config) => {
                    let shown = serde_json::to_string(&config).unwrap();
                    prop_assert_eq!(serde_json::from_str::<LayoutConfig>(&shown).unwrap(), config);
                }
                Err(error) => prop_assert!(!error.to_string().is_empty()),
            }
        }
    }
}
