//! Two callers taking turns to talk, the way the active-speaker tests hear
//! them: after a silent lead, a turn every 4 s whose tone lasts 3.5 s (a
//! pause between turns, as people leave), alternately; the one listening
//! makes two 200 ms bursts (a cough, a laugh) into each of the other's turns.
//! Clip times in seconds, for [`super::gated_tone_wav`].

use super::elapsed;
use std::time::SystemTime;

/// Silence at the start of each clip, so that the first turn is recorded by both.
pub const LEAD_SECS: f64 = 2.0;
pub const TURN_SECS: f64 = 4.0;
pub const TONE_SECS: f64 = 3.5;
pub const TURNS: usize = 6;
/// Bursts by the one who listens, into each of the other's turns.
pub const BURST_OFFSETS_SECS: [f64; 2] = [1.5, 2.7];
pub const BURST_SECS: f64 = 0.2;
/// How long a clip lasts: every turn, and a second after.
pub const CLIP_SECS: f64 = LEAD_SECS + TURNS as f64 * TURN_SECS + 1.0;

/// When caller `who` (0: the first to talk, 1: the other) has its tone on:
/// its turns, and its bursts into the other's.
pub fn turn_schedule(who: usize) -> Vec<(f64, f64)> {
    let mut on = Vec::new();
    for turn in 0..TURNS {
        let start = LEAD_SECS + turn as f64 * TURN_SECS;
        if turn % 2 == who {
            on.push((start, start + TONE_SECS));
        } else {
            on.extend(BURST_OFFSETS_SECS.iter().map(|offset| (start + offset, start + offset + BURST_SECS)));
        }
    }
    on
}

/// Joins intervals split by a gap of at most one mixing block (20 ms, and
/// the 20 ms analysis window around it); returns them and where the gaps were
/// (seconds from the first interval's start).
pub fn close_holes(intervals: Vec<(SystemTime, SystemTime)>) -> (Vec<(SystemTime, SystemTime)>, Vec<f64>) {
    const MAX_HOLE: f64 = 0.06;
    let origin = intervals.first().map_or(SystemTime::UNIX_EPOCH, |i| i.0);
    let mut joined: Vec<(SystemTime, SystemTime)> = Vec::new();
    let mut holes = Vec::new();
    for (from, to) in intervals {
        match joined.last_mut() {
            Some(last) if elapsed(last.1, from) <= MAX_HOLE => {
                holes.push((elapsed(origin, last.1) * 1000.0).round() / 1000.0);
                last.1 = to;
            }
            _ => joined.push((from, to)),
        }
    }
    (joined, holes)
}
