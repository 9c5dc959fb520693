//! Where each caller sits: a pure function of the callers (in join order,
//! with what a layout needs to know of each), the active speaker, the canvas
//! and the arrangement. Media moves the compositor pads to what it returns;
//! the API shows it.
//!
//! Every rectangle has even coordinates (and even sizes on an even canvas),
//! so 4:2:0 chroma never straddles an edge. A caller missing from the result
//! is not shown.

use serde::Serialize;
use std::collections::HashSet;

use super::{Arrangement, Corner, Fit, MAX_GRID_CELLS, Rect, Region, Strip, grid_dimensions};
use crate::model::ids::ParticipantId;

/// The speaker layout's strip takes this share of the canvas height (at the
/// bottom) or width (on the right): four pictures of the canvas's shape fill it.
const STRIP_SLOTS: u32 = 4;
/// A picture-in-picture inset's distance from the canvas edge and from the
/// next inset, as a share of the canvas width (32 px on 1280).
const PIP_MARGIN_SHARE: u32 = 40;

/// What a layout needs to know of one caller.
#[derive(Clone, Debug)]
pub struct Seat {
    pub id: ParticipantId,
    /// It sends us video and the producer has not muted it (else its slate
    /// is shown); `hide_without_video` leaves it out.
    pub has_video: bool,
    /// The producer hid it: it leaves every layout.
    pub hidden: bool,
}

/// Where one caller's picture goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Placement {
    #[serde(flatten)]
    pub rect: Rect,
    /// Higher is in front.
    pub z: u32,
    /// How the picture fills the rectangle (media's business, not the API's).
    #[serde(skip)]
    pub fit: Fit,
}

/// Each shown caller's placement, at most once each; callers not in the
/// list are not shown.
pub fn place(
    width: u32,
    height: u32,
    arrangement: &Arrangement,
    seats: &[Seat],
    active_speaker: Option<&ParticipantId>,
) -> Vec<(ParticipantId, Placement)> {
    let canvas = Rect { x: 0, y: 0, width, height };
    let visible = |hide_without_video: bool| -> Vec<&ParticipantId> {
        seats.iter().filter(|s| !s.hidden && (s.has_video || !hide_without_video)).map(|s| &s.id).collect()
    };
    let flat = |rects: Vec<(&ParticipantId, Rect)>, z: u32, fit: Fit| {
        rects
            .into_iter()
            .filter(|(_, rect)| rect.width > 0 && rect.height > 0)
            .map(|(id, rect)| (id.clone(), Placement { rect, z, fit }))
            .collect::<Vec<_>>()
    };
    match arrangement {
        Arrangement::Grid { fit, hide_without_video, gap } => {
            let shown = visible(*hide_without_video);
            let cells = tile_grid(inset(canvas, even(*gap)), shown.len(), even(*gap));
            flat(shown.into_iter().zip(cells).collect(), 0, *fit)
        }
        Arrangement::Speaker { strip, pinned, fit, hide_without_video, gap } => {
            let shown = visible(*hide_without_video);
            let Some((main, others)) = star(&shown, pinned.as_ref(), active_speaker) else { return Vec::new() };
            let (main_rect, strip_rects) = speaker(canvas, *strip, others.len(), even(*gap));
            let mut placed = vec![(main, main_rect)];
            placed.extend(others.into_iter().zip(strip_rects));
            flat(placed, 0, *fit)
        }
        Arrangement::Pip { main, corner, size, fit, hide_without_video } => {
            let shown = visible(*hide_without_video);
            let Some((main, others)) = star(&shown, main.as_ref(), active_speaker) else { return Vec::new() };
            let mut placed = flat(vec![(main, canvas)], 0, *fit);
            for (i, (id, rect)) in others.into_iter().zip(pip_insets(canvas, *corner, *size)).enumerate() {
                placed.extend(flat(vec![(id, rect)], 1 + i as u32, *fit));
            }
            placed
        }
        Arrangement::Single { participant, fit } => {
            let shown = visible(false);
            let Some((main, _)) = star(&shown, participant.as_ref(), active_speaker) else { return Vec::new() };
            flat(vec![(main, canvas)], 0, *fit)
        }
        Arrangement::Custom { regions } => custom(canvas, regions, &visible(false)),
    }
}

/// The one caller a speaker, pip or single layout is about (`chosen` if
/// shown, else the active speaker if shown, else the first to join), and
/// the others in join order.
fn star<'a>(
    shown: &[&'a ParticipantId],
    chosen: Option<&ParticipantId>,
    active_speaker: Option<&ParticipantId>,
) -> Option<(&'a ParticipantId, Vec<&'a ParticipantId>)> {
    let find = |wanted: Option<&ParticipantId>| wanted.and_then(|w| shown.iter().copied().find(|id| *id == w));
    let main = find(chosen).or_else(|| find(active_speaker)).or_else(|| shown.first().copied())?;
    Some((main, shown.iter().copied().filter(|id| *id != main).collect()))
}

/// `count` equal cells row-major in `area`, `gap` apart: the grid of
/// [`super::grid`] with room between the cells.
pub(super) fn tile_grid(area: Rect, count: usize, gap: u32) -> Vec<Rect> {
    let count = count.min(MAX_GRID_CELLS);
    let (cols, rows) = grid_dimensions(count);
    (0..count as u32)
        .map(|i| {
            let (x, width) = split(area.x, area.width, cols, gap, i % cols);
            let (y, height) = split(area.y, area.height, rows, gap, i / cols);
            Rect { x, y, width, height }
        })
        .collect()
}

/// Part `index` of `parts` equal parts of `length` from `start`, `gap`
/// apart: its start and length. Starts are even when `start` and `gap` are;
/// the last part ends exactly at `start + length`.
fn split(start: u32, length: u32, parts: u32, gap: u32, index: u32) -> (u32, u32) {
    // In 64 bits: `length * index` overflows u32 for canvases past 2^30 pixels.
    let edge = |i: u32| (((u64::from(length) + u64::from(gap)) * u64::from(i) / u64::from(parts)) as u32) & !1;
    let from = edge(index).min(length);
    let to = if index + 1 == parts { length } else { edge(index + 1).saturating_sub(gap).min(length) };
    (start + from, to.saturating_sub(from))
}

/// The main picture and `others` strip pictures of the speaker layout.
fn speaker(canvas: Rect, strip: Strip, others: usize, gap: u32) -> (Rect, Vec<Rect>) {
    let inner = inset(canvas, gap);
    if others == 0 || strip == Strip::None {
        return (inner, Vec::new());
    }
    let others = others.min(MAX_GRID_CELLS - 1) as u32;
    let slots = others.max(STRIP_SLOTS);
    // Along the strip: the pictures centred, each a slot wide.
    let along = |start: u32, length: u32| -> Vec<(u32, u32)> {
        let (_, slot) = split(0, length, slots, gap, 0);
        let span = u64::from(slot + gap) * u64::from(others) - u64::from(gap);
        let offset = (u64::from(length).saturating_sub(span) / 2) as u32 & !1;
        (0..others).map(|i| (start + offset + i * (slot + gap), slot)).collect()
    };
    match strip {
        Strip::Bottom => {
            let across = even(inner.height / STRIP_SLOTS);
            let main = Rect { height: inner.height.saturating_sub(across + gap), ..inner };
            let y = inner.y + inner.height - across;
            (main, along(inner.x, inner.width).into_iter().map(|(x, width)| Rect { x, y, width, height: across }).collect())
        }
        Strip::Right | Strip::None => {
            let across = even(inner.width / STRIP_SLOTS);
            let main = Rect { width: inner.width.saturating_sub(across + gap), ..inner };
            let x = inner.x + inner.width - across;
            (main, along(inner.y, inner.height).into_iter().map(|(y, height)| Rect { x, y, width: across, height }).collect())
        }
    }
}

/// Insets of the canvas's shape, `size` of its width each, stacked from
/// `corner` along the side as far as they fit.
fn pip_insets(canvas: Rect, corner: Corner, size: f64) -> Vec<Rect> {
    let margin = even(canvas.width / PIP_MARGIN_SHARE);
    let width = even((f64::from(canvas.width) * size) as u32);
    let height = even((u64::from(width) * u64::from(canvas.height) / u64::from(canvas.width.max(1))) as u32);
    if width == 0 || height == 0 || width + 2 * margin > canvas.width {
        return Vec::new();
    }
    let left = matches!(corner, Corner::TopLeft | Corner::BottomLeft);
    let top = matches!(corner, Corner::TopLeft | Corner::TopRight);
    let x = if left { margin } else { even(canvas.width - margin - width) };
    let step = height + margin;
    let fits = canvas.height.saturating_sub(margin) / step;
    (0..fits)
        .map(|i| {
            let y = if top { margin + i * step } else { even(canvas.height - (i + 1) * step) };
            Rect { x, y, width, height }
        })
        .collect()
}

/// The producer's regions: a named caller where it is shown, else nothing;
/// an unnamed region takes the next caller in join order that no region
/// names. Each caller at most once (the first region naming it).
fn custom(canvas: Rect, regions: &[Region], shown: &[&ParticipantId]) -> Vec<(ParticipantId, Placement)> {
    let named: HashSet<&ParticipantId> = regions.iter().filter_map(|r| r.participant.as_ref()).collect();
    let mut free = shown.iter().copied().filter(|id| !named.contains(id));
    let mut taken = HashSet::new();
    let mut placed = Vec::new();
    for region in regions {
        let who = match &region.participant {
            Some(id) => shown.iter().copied().find(|s| *s == id),
            None => free.next(),
        };
        let rect = fractions(canvas, region);
        if let Some(id) = who
            && rect.width > 0
            && rect.height > 0
            && taken.insert(id)
        {
            placed.push((id.clone(), Placement { rect, z: region.z, fit: region.fit }));
        }
    }
    placed
}

/// A region's rectangle in pixels, edges on even pixels, inside the canvas.
fn fractions(canvas: Rect, region: &Region) -> Rect {
    let edge = |fraction: f64, total: u32| {
        if fraction >= 1.0 - 1e-6 { total } else { even((fraction.max(0.0) * f64::from(total)).round() as u32).min(total) }
    };
    let (x0, x1) = (edge(region.x, canvas.width), edge(region.x + region.width, canvas.width));
    let (y0, y1) = (edge(region.y, canvas.height), edge(region.y + region.height, canvas.height));
    Rect { x: x0, y: y0, width: x1.saturating_sub(x0), height: y1.saturating_sub(y0) }
}

fn inset(rect: Rect, by: u32) -> Rect {
    Rect {
        x: rect.x + by.min(rect.width / 2),
        y: rect.y + by.min(rect.height / 2),
        width: rect.width.saturating_sub(2 * by),
        height: rect.height.saturating_sub(2 * by),
    }
}

fn even(value: u32) -> u32 {
    value & !1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::layout::LayoutConfig;

    fn id(name: &str) -> ParticipantId {
        ParticipantId::from(name.to_string())
    }

    fn seats(names: &[&str]) -> Vec<Seat> {
        names.iter().map(|n| Seat { id: id(n), has_video: true, hidden: false }).collect()
    }

    fn arrangement(json: &str) -> Arrangement {
        serde_json::from_str::<LayoutConfig>(json).unwrap().arrangement
    }

    fn r(x: u32, y: u32, width: u32, height: u32) -> Rect {
        Rect { x, y, width, height }
    }

    /// (who, rect, z) on a 1280x720 canvas.
    fn layout(json: &str, seats: &[Seat], speaker: Option<&str>) -> Vec<(String, Rect, u32)> {
        let speaker = speaker.map(id);
        place(1280, 720, &arrangement(json), seats, speaker.as_ref())
            .into_iter()
            .map(|(id, p)| (id.to_string(), p.rect, p.z))
            .collect()
    }

    fn who(placed: &[(String, Rect, u32)]) -> Vec<&str> {
        placed.iter().map(|(id, _, _)| id.as_str()).collect()
    }

    #[test]
    fn a_grid_without_gap_is_the_plain_grid() {
        let placed = layout(r#"{"kind": "grid"}"#, &seats(&["a", "b", "c"]), None);
        let rects: Vec<Rect> = placed.iter().map(|p| p.1).collect();
        assert_eq!(rects, super::super::grid(1280, 720, 3));
        assert_eq!(who(&placed), ["a", "b", "c"]);
    }

    #[test]
    fn a_grid_gap_leaves_room_around_and_between_cells() {
        let placed = layout(r#"{"kind": "grid", "gap": 16}"#, &seats(&["a", "b"]), None);
        assert_eq!(placed[0].1, r(16, 16, 616, 688));
        assert_eq!(placed[1].1, r(648, 16, 616, 688));
        let odd = layout(r#"{"kind": "grid", "gap": 7}"#, &seats(&["a", "b"]), None);
        assert_eq!(odd[0].1, r(6, 6, 630, 708), "an odd gap is taken down to even");
    }

    #[test]
    fn hidden_callers_leave_and_hide_without_video_drops_slates() {
        let mut s = seats(&["a", "b", "c"]);
        s[0].hidden = true;
        s[1].has_video = false;
        assert_eq!(who(&layout(r#"{"kind": "grid"}"#, &s, None)), ["b", "c"]);
        assert_eq!(who(&layout(r#"{"kind": "grid", "hide_without_video": true}"#, &s, None)), ["c"]);
        assert_eq!(layout(r#"{"kind": "grid", "hide_without_video": true}"#, &s, None)[0].1, r(0, 0, 1280, 720));
        // Nobody with video left: an empty canvas.
        s[2].hidden = true;
        assert!(layout(r#"{"kind": "grid", "hide_without_video": true}"#, &s, None).is_empty());
    }

    #[test]
    fn the_speaker_is_pinned_else_active_else_first() {
        let s = seats(&["a", "b", "c"]);
        let main = |json: &str, speaker: Option<&str>| layout(json, &s, speaker)[0].0.clone();
        assert_eq!(main(r#"{"kind": "speaker"}"#, None), "a");
        assert_eq!(main(r#"{"kind": "speaker"}"#, Some("c")), "c");
        assert_eq!(main(r#"{"kind": "speaker", "pinned": "b"}"#, Some("c")), "b");
        assert_eq!(main(r#"{"kind": "speaker", "pinned": "gone"}"#, Some("zz")), "a", "absent ids fall through");
    }

    #[test]
    fn the_bottom_strip_centres_the_others_under_the_speaker() {
        let placed = layout(r#"{"kind": "speaker"}"#, &seats(&["a", "b", "c"]), Some("b"));
        assert_eq!(who(&placed), ["b", "a", "c"]);
        assert_eq!(placed[0].1, r(0, 0, 1280, 540));
        // Two of four slots of 320x180, centred.
        assert_eq!(placed[1].1, r(320, 540, 320, 180));
        assert_eq!(placed[2].1, r(640, 540, 320, 180));
    }

    #[test]
    fn the_right_strip_stacks_the_others_and_none_shows_only_the_speaker() {
        let placed = layout(r#"{"kind": "speaker", "strip": "right", "gap": 8}"#, &seats(&["a", "b", "c", "d", "e", "f"]), None);
        assert_eq!(placed[0].1, r(8, 8, 940, 704));
        let strip: Vec<Rect> = placed[1..].iter().map(|p| p.1).collect();
        assert_eq!(strip.len(), 5, "five slots when five wait");
        for (i, cell) in strip.iter().enumerate() {
            assert_eq!(*cell, r(956, 8 + i as u32 * 142, 316, 134));
        }
        let alone = layout(r#"{"kind": "speaker", "strip": "none"}"#, &seats(&["a", "b"]), Some("b"));
        assert_eq!(alone, vec![("b".to_string(), r(0, 0, 1280, 720), 0)]);
        let one = layout(r#"{"kind": "speaker"}"#, &seats(&["a"]), None);
        assert_eq!(one[0].1, r(0, 0, 1280, 720), "nobody for the strip: the speaker fills the canvas");
    }

    #[test]
    fn pip_insets_stack_from_the_corner_above_the_main_picture() {
        let placed = layout(r#"{"kind": "pip"}"#, &seats(&["a", "b", "c"]), None);
        assert_eq!(placed[0], ("a".to_string(), r(0, 0, 1280, 720), 0));
        assert_eq!(placed[1], ("b".to_string(), r(928, 508, 320, 180), 1));
        assert_eq!(placed[2], ("c".to_string(), r(928, 296, 320, 180), 2));
        let top_left = layout(r#"{"kind": "pip", "corner": "top_left", "size": 0.5, "main": "c"}"#, &seats(&["a", "b", "c"]), Some("b"));
        assert_eq!(who(&top_left), ["c", "a"]);
        assert_eq!(top_left[1].1, r(32, 32, 640, 360));
        assert_eq!(top_left.len(), 2, "a second half-size inset does not fit under the first");
        let follows = layout(r#"{"kind": "pip"}"#, &seats(&["a", "b", "c"]), Some("c"));
        assert_eq!(who(&follows), ["c", "a", "b"]);
    }

    #[test]
    fn single_shows_one_caller_full_frame() {
        let s = seats(&["a", "b"]);
        assert_eq!(layout(r#"{"kind": "single"}"#, &s, None), vec![("a".into(), r(0, 0, 1280, 720), 0)]);
        assert_eq!(layout(r#"{"kind": "single"}"#, &s, Some("b"))[0].0, "b");
        assert_eq!(layout(r#"{"kind": "single", "participant": "a"}"#, &s, Some("b"))[0].0, "a");
        assert!(layout(r#"{"kind": "single"}"#, &[], None).is_empty());
    }

    #[test]
    fn custom_regions_take_named_then_unnamed_callers_in_join_order() {
        let json = r#"{"kind": "custom", "regions": [
            {"x": 0, "y": 0, "width": 0.5, "height": 1},
            {"x": 0.5, "y": 0, "width": 0.5, "height": 0.5, "participant": "a", "z": 3, "fit": "cover"},
            {"x": 0.5, "y": 0.5, "width": 0.5, "height": 0.5},
            {"x": 0.25, "y": 0.25, "width": 0.5, "height": 0.5, "participant": "absent"}]}"#;
        let placed = place(1280, 720, &arrangement(json), &seats(&["a", "b", "c", "d"]), None);
        let shown: Vec<(String, Rect, u32, Fit)> = placed.iter().map(|(id, p)| (id.to_string(), p.rect, p.z, p.fit)).collect();
        assert_eq!(
            shown,
            vec![
                ("b".into(), r(0, 0, 640, 720), 0, Fit::Contain),
                ("a".into(), r(640, 0, 640, 360), 3, Fit::Cover),
                ("c".into(), r(640, 360, 640, 360), 0, Fit::Contain),
            ],
            "d has no region, `absent` shows nothing"
        );
    }

    #[test]
    fn a_caller_named_twice_is_shown_once_and_thirds_reach_the_edge() {
        let json = r#"{"kind": "custom", "regions": [
            {"x": 0, "y": 0, "width": 0.3333333, "height": 1, "participant": "a"},
            {"x": 0.3333333, "y": 0, "width": 0.6666667, "height": 1, "participant": "a"}]}"#;
        let placed = layout(json, &seats(&["a", "b"]), None);
        assert_eq!(placed, vec![("a".into(), r(0, 0, 426, 720), 0)]);
        let json = r#"{"kind": "custom", "regions": [{"x": 0.3333333, "y": 0, "width": 0.6666667, "height": 1}]}"#;
        assert_eq!(layout(json, &seats(&["a"]), None)[0].1, r(426, 0, 854, 720));
    }

    #[test]
    fn a_hidden_caller_named_by_a_region_leaves_it_empty() {
        let mut s = seats(&["a", "b"]);
        s[0].hidden = true;
        let json = r#"{"kind": "custom", "regions": [{"x": 0, "y": 0, "width": 1, "height": 1, "participant": "a"}]}"#;
        assert!(layout(json, &s, None).is_empty());
    }

    #[test]
    fn the_api_shows_a_placement_as_its_rectangle_and_z() {
        let p = Placement { rect: r(2, 4, 6, 8), z: 1, fit: Fit::Cover };
        assert_eq!(serde_json::to_value(p).unwrap(), serde_json::json!({"x": 2, "y": 4, "width": 6, "height": 8, "z": 1}));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::model::layout::LayoutConfig;
    use proptest::prelude::*;

    fn overlap(a: &Rect, b: &Rect) -> bool {
        a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height
    }

    fn arrangements() -> impl Strategy<Value = Arrangement> {
        let fit = prop_oneof![Just("contain"), Just("cover")];
        let who = prop_oneof![Just("null".to_string()), (0..8u8).prop_map(|i| format!("\"p{i}\""))];
        let region = (0..10u32, 0..10u32, 1..=10u32, 1..=10u32, 0..4u32, who.clone()).prop_map(|(x, y, w, h, z, who)| {
            let (w, h) = (w.min(10 - x).max(1), h.min(10 - y).max(1));
            let (x, y) = (x.min(9), y.min(9));
            format!(r#"{{"x": {}, "y": {}, "width": {}, "height": {}, "z": {z}, "participant": {who}}}"#, x as f64 / 10.0, y as f64 / 10.0, w as f64 / 10.0, h as f64 / 10.0)
        });
        prop_oneof![
            (fit.clone(), any::<bool>(), 0..=64u32).prop_map(|(f, h, g)| format!(r#"{{"kind": "grid", "fit": "{f}", "hide_without_video": {h}, "gap": {g}}}"#)),
            (prop_oneof![Just("bottom"), Just("right"), Just("none")], who.clone(), any::<bool>(), 0..=64u32)
                .prop_map(|(s, p, h, g)| format!(r#"{{"kind": "speaker", "strip": "{s}", "pinned": {p}, "hide_without_video": {h}, "gap": {g}}}"#)),
            (prop_oneof![Just("top_left"), Just("top_right"), Just("bottom_left"), Just("bottom_right")], who.clone(), 5..=50u32, any::<bool>())
                .prop_map(|(c, m, s, h)| format!(r#"{{"kind": "pip", "corner": "{c}", "main": {m}, "size": {}, "hide_without_video": {h}}}"#, f64::from(s) / 100.0)),
            who.clone().prop_map(|p| format!(r#"{{"kind": "single", "participant": {p}}}"#)),
            proptest::collection::vec(region, 0..6).prop_map(|r| format!(r#"{{"kind": "custom", "regions": [{}]}}"#, r.join(", "))),
        ]
        .prop_map(|json| serde_json::from_str::<LayoutConfig>(&json).unwrap().arrangement)
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]

        /// What every layout promises: each caller at most once and never a
        /// hidden one, every rectangle inside the canvas, not empty, on even
        /// pixels; pictures of the same z never overlap except in custom
        /// regions (the producer's to choose).
        #[test]
        fn every_layout_keeps_its_promises(
            arrangement in arrangements(),
            half_width in 8u32..=1920,
            half_height in 8u32..=1080,
            flags in proptest::collection::vec((any::<bool>(), any::<bool>()), 0..12),
            speaker in proptest::option::of(0..10u8),
        ) {
            let (width, height) = (half_width * 2, half_height * 2);
            let seats: Vec<Seat> = flags.iter().enumerate()
                .map(|(i, &(has_video, hidden))| Seat { id: ParticipantId::from(format!("p{i}")), has_video, hidden })
                .collect();
            let speaker = speaker.map(|i| ParticipantId::from(format!("p{i}")));
            let placed = place(width, height, &arrangement, &seats, speaker.as_ref());
            let mut seen = HashSet::new();
            for (i, (id, p)) in placed.iter().enumerate() {
                prop_assert!(seen.insert(id.clone()), "{id} shown twice");
                let seat = seats.iter().find(|s| &s.id == id).expect("only seated callers are placed");
                prop_assert!(!seat.hidden, "{id} is hidden");
                let r = p.rect;
                prop_assert!(r.width > 0 && r.height > 0, "{r:?} is empty");
                prop_assert!(r.x + r.width <= width && r.y + r.height <= height, "{r:?} outside {width}x{height}");
                prop_assert!(r.x % 2 == 0 && r.y % 2 == 0 && r.width % 2 == 0 && r.height % 2 == 0, "{r:?} not even");
                if !matches!(arrangement, Arrangement::Custom { .. }) {
                    for (other, q) in &placed[..i] {
                        prop_assert!(q.z != p.z || !overlap(&q.rect, &r), "{id} {r:?} overlaps {other} {:?}", q.rect);
                    }
                }
            }
            // Whoever could be shown in a grid, up to its 16 cells, is shown.
            if let Arrangement::Grid { hide_without_video, gap, .. } = arrangement {
                let eligible = seats.iter().filter(|s| !s.hidden && (s.has_video || !hide_without_video)).count();
                let roomy = width >= 8 * (gap + 2) && height >= 8 * (gap + 2);
                prop_assert!(!roomy || placed.len() == eligible.min(MAX_GRID_CELLS));
            }
            // A kind about one caller always shows one while anyone is shown.
            if let Arrangement::Single { .. } = arrangement {
                prop_assert_eq!(placed.len(), usize::from(seats.iter().any(|s| !s.hidden)));
            }
        }
    }
}
