//! Layout geometry: where each caller's picture goes on the canvas.
//! Pure functions of the canvas, the callers and the layout, so that a
//! join, a leave or a producer's change is just "compute again and move the pads".

use serde::Serialize;

mod config;
mod placement;

pub use config::{
    Arrangement, Corner, Fit, InvalidLayout, LayoutConfig, LayoutKind, Overlay, Region, Strip, Transition, TransitionKind,
};
pub use placement::{Placement, Seat, place};

/// The most cells a grid has (4x4).
pub const MAX_GRID_CELLS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// Columns and rows of the grid for `count` cells: 1 fills the canvas,
/// 2 side by side, 3-4 in 2x2, 5-9 in 3x3, 10-16 in 4x4.
pub fn grid_dimensions(count: usize) -> (u32, u32) {
    match count {
        0 | 1 => (1, 1),
        2 => (2, 1),
        3..=4 => (2, 2),
        5..=9 => (3, 3),
        _ => (4, 4),
    }
}

/// The cell rectangles for `count` callers, row-major in join order.
/// Cells tile the canvas exactly: the last column and row absorb the
/// remainder of an uneven division. Coordinates and sizes are even so that
/// 4:2:0 chroma never straddles a cell border (sizes are even when the
/// canvas is; the last column and row take an odd canvas's odd pixel).
pub fn grid(canvas_width: u32, canvas_height: u32, count: usize) -> Vec<Rect> {
    placement::tile_grid(Rect { x: 0, y: 0, width: canvas_width, height: canvas_height }, count, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(x: u32, y: u32, width: u32, height: u32) -> Rect {
        Rect { x, y, width, height }
    }

    #[test]
    fn one_caller_fills_the_canvas() {
        assert_eq!(grid(1280, 720, 1), vec![r(0, 0, 1280, 720)]);
    }

    #[test]
    fn two_callers_sit_side_by_side() {
        assert_eq!(grid(1280, 720, 2), vec![r(0, 0, 640, 720), r(640, 0, 640, 720)]);
    }

    #[test]
    fn three_and_four_callers_use_a_2x2_grid_row_major() {
        let four = vec![r(0, 0, 640, 360), r(640, 0, 640, 360), r(0, 360, 640, 360), r(640, 360, 640, 360)];
        assert_eq!(grid(1280, 720, 4), four);
        assert_eq!(grid(1280, 720, 3), four[..3].to_vec());
    }

    #[test]
    fn grid_sizes_step_at_5_and_10() {
        assert_eq!(grid_dimensions(5), (3, 3));
        assert_eq!(grid_dimensions(9), (3, 3));
        assert_eq!(grid_dimensions(10), (4, 4));
        assert_eq!(grid_dimensions(16), (4, 4));
        assert_eq!(grid(1280, 720, 16).len(), 16);
        assert_eq!(grid(1280, 720, 20).len(), MAX_GRID_CELLS);
    }

    #[test]
    fn uneven_canvas_is_tiled_exactly_with_even_edges() {
        for count in 1..=MAX_GRID_CELLS {
            let cells = grid(1278, 718, count);
            let (cols, rows) = grid_dimensions(count);
            let full: Vec<Rect> = grid(1278, 718, (cols * rows) as usize);
            let area: u64 = full.iter().map(|c| u64::from(c.width) * u64::from(c.height)).sum();
            assert_eq!(area, 1278 * 718, "{count} cells must tile the canvas");
            for c in &cells {
                assert_eq!(c.x % 2, 0);
                assert_eq!(c.y % 2, 0);
                assert!(c.x + c.width <= 1278 && c.y + c.height <= 718);
            }
        }
    }

    #[test]
    fn a_canvas_past_a_billion_pixels_high_is_tiled_not_a_panic() {
        let cells = grid(1280, 1 << 30, 10);
        assert_eq!(cells[9], r(320, 1 << 29, 320, 1 << 28));
    }

    #[test]
    fn nine_cells_on_720p() {
        let cells = grid(1280, 720, 9);
        assert_eq!(cells[0], r(0, 0, 426, 240));
        assert_eq!(cells[4], r(426, 240, 426, 240));
        assert_eq!(cells[8], r(852, 480, 428, 240));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::model::composition::CompositionConfig;
    use proptest::prelude::*;

    fn overlap(a: &Rect, b: &Rect) -> bool {
        let (ax1, ay1) = (u64::from(a.x) + u64::from(a.width), u64::from(a.y) + u64::from(a.height));
        let (bx1, by1) = (u64::from(b.x) + u64::from(b.width), u64::from(b.y) + u64::from(b.height));
        u64::from(a.x) < bx1 && u64::from(b.x) < ax1 && u64::from(a.y) < by1 && u64::from(b.y) < ay1
    }

    /// What `grid` promises for any canvas: one cell per caller up to the
    /// cap, inside the canvas, no two overlapping, even edges, and the full
    /// grid covering every pixel.
    fn check_grid(width: u32, height: u32, count: usize) {
        let cells = grid(width, height, count);
        assert_eq!(cells.len(), count.min(MAX_GRID_CELLS), "every caller up to the cap has one cell");
        for (i, cell) in cells.iter().enumerate() {
            assert!(u64::from(cell.x) + u64::from(cell.width) <= u64::from(width), "{cell:?} outside {width}x{height}");
            assert!(u64::from(cell.y) + u64::from(cell.height) <= u64::from(height), "{cell:?} outside {width}x{height}");
            assert!(cell.x % 2 == 0 && cell.y % 2 == 0, "{cell:?}: odd origin");
            if width % 2 == 0 && height % 2 == 0 {
                assert!(cell.width % 2 == 0 && cell.height % 2 == 0, "{cell:?}: odd size on an even canvas");
            }
            for other in &cells[..i] {
                assert!(!overlap(cell, other), "{cell:?} overlaps {other:?}");
            }
        }
        let (cols, rows) = grid_dimensions(count);
        let full = grid(width, height, (cols * rows) as usize);
        let area: u64 = full.iter().map(|c| u64::from(c.width) * u64::from(c.height)).sum();
        assert_eq!(area, u64::from(width) * u64::from(height), "the full grid covers the canvas");
    }

    proptest! {
        #![proptest_config(crate::proptest_config())]

        #[test]
        fn any_canvas_is_tiled_without_overlap(width in any::<u32>(), height in any::<u32>(), count in 0..=MAX_GRID_CELLS + 4) {
            check_grid(width, height, count);
        }

        #[test]
        fn small_canvases_are_tiled_without_overlap(width in 0u32..64, height in 0u32..64, count in 0..=MAX_GRID_CELLS + 4) {
            check_grid(width, height, count);
        }

        /// A canvas that passes validation gives every caller a picture: no
        /// cell is empty.
        #[test]
        fn every_valid_canvas_gives_each_caller_a_visible_cell(width in 0u32..5000, height in 0u32..3000, count in 1..=MAX_GRID_CELLS) {
            let mut config = CompositionConfig::default();
            (config.video.width, config.video.height) = (width, height);
            if config.validate().is_ok() {
                check_grid(width, height, count);
                prop_assert!(grid(width, height, count).iter().all(|c| c.width >= 2 && c.height >= 2));
            }
        }

    }
}
