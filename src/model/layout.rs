//! Layout geometry: where each caller's picture goes on the canvas.
//! A pure function of the canvas size and the number of cells, so that a
//! join or a leave is just "compute again and move the pads".

use serde::{Deserialize, Serialize};

/// The most cells a grid has (4x4).
pub const MAX_GRID_CELLS: usize = 16;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayoutKind {
    #[default]
    Grid,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutConfig {
    #[serde(default)]
    pub kind: LayoutKind,
}

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
/// 4:2:0 chroma never straddles a cell border.
pub fn grid(canvas_width: u32, canvas_height: u32, count: usize) -> Vec<Rect> {
    let count = count.min(MAX_GRID_CELLS);
    let (cols, rows) = grid_dimensions(count);
    let edge = |total: u32, parts: u32, index: u32| (total * index / parts) & !1;
    (0..count as u32)
        .map(|i| {
            let (col, row) = (i % cols, i / cols);
            let (x0, x1) = (edge(canvas_width, cols, col), edge(canvas_width, cols, col + 1));
            let (y0, y1) = (edge(canvas_height, rows, row), edge(canvas_height, rows, row + 1));
            let x1 = if col + 1 == cols { canvas_width } else { x1 };
            let y1 = if row + 1 == rows { canvas_height } else { y1 };
            Rect { x: x0, y: y0, width: x1 - x0, height: y1 - y0 }
        })
        .collect()
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
    fn nine_cells_on_720p() {
        let cells = grid(1280, 720, 9);
        assert_eq!(cells[0], r(0, 0, 426, 240));
        assert_eq!(cells[4], r(426, 240, 426, 240));
        assert_eq!(cells[8], r(852, 480, 428, 240));
    }
}
