//! Admission by cost: every composition, caller and output carries a CPU cost
//! in cores, and a node refuses what would push its committed cost past its
//! budget instead of letting every composition fall out of real time (LiveKit
//! places work the same way: it accepts while used + pending < 0.8 × cores).
//! The same figures are what a scheduler of many nodes would place work by.
//!
//! The default costs come from `bench/RESULTS.md` (2-core Xeon, release build):
//! - a 1280x720 30 fps composition without callers: 0.60 cores — benchmark 2 §1
//!   fits 0.63 CPU s/s as the intercept of CPU against callers (it carries an
//!   RTMP and an HLS output, costed apart below), and the broadcast x264 encode
//!   alone is 0.32 in benchmark 1;
//! - a video caller: 0.10 cores — benchmark 2 §2, one 720p composition with 4
//!   callers takes 1.00 CPU s/s, (1.00 − 0.60) / 4; benchmark 2 §1's marginal
//!   0.05 per caller is lower because tiles shrink as the grid grows;
//! - an audio-only caller: 0.02 cores — benchmark 2 §3, 1.63 % of a core each;
//! - an output: 0.03 cores — benchmark 1's AAC encode (0.031); the picture's
//!   encode is shared by every output and counted with the composition.
//!
//! A composition's cost scales with pixels × fps against 720p30: benchmark 2 §2
//! measured 0.44 CPU s/s for a 640x360 composition with 4 callers, and the
//! model says 0.15 + 4 × 0.10 = 0.55.

use std::fmt;

/// A CPU cost or a budget, in cores (1.0 = one core busy all the time).
pub type Cores = f64;

const REFERENCE_PIXEL_RATE: f64 = 1280.0 * 720.0 * 30.0;

pub const DEFAULT_COMPOSITION_720P30_COST: Cores = 0.60;
pub const DEFAULT_VIDEO_CALLER_COST: Cores = 0.10;
pub const DEFAULT_AUDIO_CALLER_COST: Cores = 0.02;
pub const DEFAULT_OUTPUT_COST: Cores = 0.03;
/// The share of the node's cores the default budget commits, as LiveKit does:
/// what is left absorbs the API, the kernel's UDP work and estimates that are short.
pub const DEFAULT_BUDGET_SHARE: f64 = 0.8;

/// What each part of the work costs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CostModel {
    /// A 1280x720 30 fps composite (compositing and its one broadcast encode); others scale by pixels × fps.
    pub composition_720p30: Cores,
    /// A caller that sends video (decode, scale into its cell, its return path).
    pub video_caller: Cores,
    /// A caller without video, or in an audio-only composition (Opus decode and its mix-minus encode).
    pub audio_caller: Cores,
    /// An output (its audio encode and muxing; the picture's encode is shared).
    pub output: Cores,
}

impl Default for CostModel {
    fn default() -> Self {
        CostModel {
            composition_720p30: DEFAULT_COMPOSITION_720P30_COST,
            video_caller: DEFAULT_VIDEO_CALLER_COST,
            audio_caller: DEFAULT_AUDIO_CALLER_COST,
            output: DEFAULT_OUTPUT_COST,
        }
    }
}

/// The picture a composition makes, as far as its cost goes; `None` for audio only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Picture {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

impl CostModel {
    /// An audio-only composition costs nothing by itself: its callers' mix-minus is their cost.
    pub fn composition(&self, picture: Option<Picture>) -> Cores {
        picture.map_or(0.0, |p| {
            self.composition_720p30 * f64::from(p.width) * f64::from(p.height) * f64::from(p.fps) / REFERENCE_PIXEL_RATE
        })
    }

    pub fn caller(&self, sends_video: bool) -> Cores {
        if sends_video { self.video_caller } else { self.audio_caller }
    }
}

/// How much a node may commit; `None` means admission is off.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget(Option<Cores>);

impl Budget {
    /// `cores` ≤ 0 turns admission off (benchmarks that push a node past it on purpose).
    pub fn new(cores: Cores) -> Budget {
        Budget(Some(cores).filter(|c| *c > 0.0))
    }

    /// [`DEFAULT_BUDGET_SHARE`] of `available_cores`.
    pub fn share_of(available_cores: usize) -> Budget {
        Budget::new(DEFAULT_BUDGET_SHARE * available_cores as f64)
    }

    pub fn cores(&self) -> Option<Cores> {
        self.0
    }

    /// Accepts `request` on top of `committed`, or says by how much it would overflow.
    pub fn admit(&self, committed: Cores, request: Cores) -> Result<(), OverCapacity> {
        match self.0 {
            // A small tolerance, so that a sum of figures rounded in binary fills its budget exactly.
            Some(budget) if committed + request > budget + 1e-9 => Err(OverCapacity { committed, request, budget }),
            _ => Ok(()),
        }
    }
}

/// A request the node refused: it would have pushed the committed cost past the budget.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
pub struct OverCapacity {
    pub committed: Cores,
    pub request: Cores,
    pub budget: Cores,
}

impl fmt::Display for OverCapacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "this node is at capacity: it has committed {:.2} of its {:.2} CPU cores and this needs {:.2} more",
            self.committed, self.budget, self.request
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HD: Picture = Picture { width: 1280, height: 720, fps: 30 };

    #[test]
    fn a_composition_costs_in_proportion_to_pixels_times_fps() {
        let model = CostModel::default();
        assert!((model.composition(Some(HD)) - 0.60).abs() < 1e-12);
        let quarter = model.composition(Some(Picture { width: 640, height: 360, fps: 30 }));
        assert!((quarter - 0.15).abs() < 1e-12, "{quarter}");
        let half_rate = model.composition(Some(Picture { fps: 15, ..HD }));
        assert!((half_rate - 0.30).abs() < 1e-12, "{half_rate}");
        assert_eq!(model.composition(None), 0.0, "audio only: the callers carry the cost");
    }

    #[test]
    fn video_callers_cost_more_than_audio_callers() {
        let model = CostModel::default();
        assert_eq!(model.caller(true), DEFAULT_VIDEO_CALLER_COST);
        assert_eq!(model.caller(false), DEFAULT_AUDIO_CALLER_COST);
    }

    #[test]
    fn the_default_model_reproduces_the_benchmark() {
        // Benchmark 2 §2: one 720p composition with 4 callers, 1.00 CPU s/s (plus its 2 outputs).
        let model = CostModel::default();
        let four_callers = model.composition(Some(HD)) + 4.0 * model.caller(true) + 2.0 * model.output;
        assert!((four_callers - 1.06).abs() < 1e-9, "{four_callers}");
        // On 2 cores the budget takes one such composition and refuses a second, as the
        // benchmark found (the second 720p composition fell out of real time in 2 passes of 3).
        let budget = Budget::share_of(2);
        assert!(budget.admit(0.0, four_callers).is_ok());
        assert!(budget.admit(four_callers, model.composition(Some(HD))).is_err());
    }

    #[test]
    fn a_budget_admits_up_to_its_limit_and_no_further() {
        let budget = Budget::new(1.0);
        assert!(budget.admit(0.7, 0.3).is_ok(), "exactly full is allowed");
        let refused = budget.admit(0.75, 0.3).unwrap_err();
        assert_eq!(refused, OverCapacity { committed: 0.75, request: 0.3, budget: 1.0 });
        assert!(refused.to_string().contains("0.75 of its 1.00"), "{refused}");
    }

    #[test]
    fn a_budget_of_zero_turns_admission_off() {
        let off = Budget::new(0.0);
        assert_eq!(off.cores(), None);
        assert!(off.admit(1000.0, 1000.0).is_ok());
        assert_eq!(Budget::new(-1.0).cores(), None);
        assert_eq!(Budget::share_of(2).cores(), Some(1.6));
    }
}
