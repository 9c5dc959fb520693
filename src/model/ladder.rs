//! What a WebRTC guest on a poor link is sent: the composite at a lower
//! bitrate (and, lowest, at half the size), chosen from the bandwidth
//! estimate of its peer. A guest whose link cannot carry the composition's
//! bitrate would otherwise lose packets faster than NACK repairs them, and
//! its picture freezes for good.
//!
//! The ladder has a few fixed rungs, shared by every guest on the same one
//! (one encode per rung, not per guest). The choice is deliberate in both
//! directions: down only when the estimate is below what the guest is
//! actually sent now (the estimator drops below the sent rate only on loss or
//! growing delay; on a clean link it stays above, whatever the rung's nominal
//! bitrate, which a still picture never fills), up only when the estimate has room
//! for the next rung with a margin, and not sooner than [`UP_AFTER`] after
//! the last change, so that a link at the edge does not flap.

use std::time::Duration;

use super::h264::FrameSize;

/// What the guest's sound and the packets' headers take beside the picture:
/// Opus at ~32 kbit/s plus RTP, SRTP and UDP over both kinds.
pub const BESIDE_PICTURE_KBPS: u64 = 64;
/// How much more than a rung (and what goes beside it) the estimate must be
/// to step up to it.
const UP_MARGIN: f64 = 1.25;
/// A rung fits a link if it and what goes beside it take at most this share of the estimate.
const FIT_SHARE: f64 = 0.9;
/// The least time on a rung before stepping up: the estimator probes above
/// what it is sent, and a probe alone is no proof.
pub const UP_AFTER: Duration = Duration::from_secs(8);
/// The least time on a rung before stepping further down: the estimate must
/// first see what the last step did.
pub const DOWN_AFTER: Duration = Duration::from_secs(4);
/// An estimate is not acted on sooner after the peer connects: it starts
/// from a guess and takes the first feedback to mean anything.
pub const SETTLE: Duration = Duration::from_secs(2);
/// The least bitrate of a rung: below this, a picture is not worth sending.
const MIN_RUNG_KBPS: u32 = 100;

/// One step of the ladder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rung {
    /// 0 is the composition's own encode; higher is lower.
    pub index: usize,
    pub bitrate_kbps: u32,
    /// `None`: the whole canvas; else the composite scaled down to this.
    pub size: Option<FrameSize>,
}

impl Rung {
    pub fn is_full(&self) -> bool {
        self.index == 0
    }

    /// The size of its picture on a composition of `canvas`.
    pub fn frame(&self, canvas: FrameSize) -> FrameSize {
        self.size.unwrap_or(canvas)
    }
}

/// The rungs for a composition sending `full_kbps` at `canvas`, best first:
/// the whole bitrate, a half, and a quarter and an eighth at half the size
/// (a quarter of the pixels for a quarter of the bits keeps each pixel's share).
pub fn rungs(full_kbps: u32, canvas: FrameSize) -> Vec<Rung> {
    let half = FrameSize { width: even(canvas.width / 2), height: even(canvas.height / 2) };
    let steps = [(1, None), (2, None), (4, Some(half)), (8, Some(half))];
    let mut rungs: Vec<Rung> = Vec::new();
    for (divisor, size) in steps {
        let bitrate_kbps = (full_kbps / divisor).max(MIN_RUNG_KBPS.min(full_kbps));
        if rungs.last().is_some_and(|last| last.bitrate_kbps == bitrate_kbps) {
            break;
        }
        rungs.push(Rung { index: rungs.len(), bitrate_kbps, size });
    }
    rungs
}

fn even(n: u32) -> u32 {
    (n & !1).max(2)
}

/// What one guest's link looks like at one moment.
#[derive(Clone, Copy, Debug)]
pub struct LinkReading {
    /// The estimator's figure; 0 before it has one.
    pub estimate_kbps: u64,
    /// The picture's bitrate as sent over the last second.
    pub sent_kbps: u64,
    /// The guest reported losses (NACKs) over the last second. The delay
    /// part of the estimate also falls when the sender's or receiver's CPU
    /// is saturated (two browsers and Tutti on two cores, measured: 1.1–1.8
    /// Mbit/s on a clean loopback sending 2); only a link that loses
    /// packets is taken for a poor one.
    pub losing: bool,
    /// Since the peer connected.
    pub connected_for: Duration,
    /// Since the guest was last moved (or connected).
    pub on_rung_for: Duration,
}

/// What `rung` takes of a link, with the sound and headers beside it.
pub fn needs_kbps(rung: &Rung) -> u64 {
    u64::from(rung.bitrate_kbps) + BESIDE_PICTURE_KBPS
}

/// What the estimator is to probe towards for a guest on rung `index`:
/// enough to prove that the rung above fits, or for the top rung some room
/// above it.
pub fn probe_target_kbps(rungs: &[Rung], index: usize) -> u64 {
    match index.checked_sub(1).and_then(|above| rungs.get(above)) {
        Some(above) => (needs_kbps(above) as f64 * UP_MARGIN) as u64,
        None => rungs.first().map_or(0, |top| needs_kbps(top) * 3 / 2),
    }
}

/// The rung the guest is to be sent from now on, `current` among `rungs`.
pub fn choose(rungs: &[Rung], current: usize, link: LinkReading) -> usize {
    if link.estimate_kbps == 0 || link.connected_for < SETTLE || rungs.is_empty() {
        return current;
    }
    let current = current.min(rungs.len() - 1);
    let needs = |rung: &Rung| needs_kbps(rung) as f64;
    let estimate = link.estimate_kbps as f64;
    // The estimate is below what it is sent, and packets are lost: the link is congested.
    if link.losing && estimate < (link.sent_kbps + BESIDE_PICTURE_KBPS) as f64 {
        if link.on_rung_for < DOWN_AFTER {
            return current;
        }
        let fits = rungs[current + 1..].iter().find(|r| needs(r) <= estimate * FIT_SHARE);
        return fits.map_or(rungs.len() - 1, |r| r.index);
    }
    if current > 0 && link.on_rung_for >= UP_AFTER && needs(&rungs[current - 1]) * UP_MARGIN <= estimate {
        return current - 1;
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANVAS: FrameSize = FrameSize { width: 1280, height: 720 };

    /// A reading of a guest sent its rung's whole bitrate.
    fn reading(estimate_kbps: u64, on_rung_secs: u64) -> LinkReading {
        sending(1500, estimate_kbps, on_rung_secs)
    }

    fn sending(sent_kbps: u64, estimate_kbps: u64, on_rung_secs: u64) -> LinkReading {
        LinkReading { estimate_kbps, sent_kbps, losing: true, connected_for: Duration::from_secs(30), on_rung_for: Duration::from_secs(on_rung_secs) }
    }

    #[test]
    fn the_ladder_halves_the_bitrate_and_then_the_size() {
        let rungs = rungs(2500, CANVAS);
        let half = Some(FrameSize { width: 640, height: 360 });
        let steps: Vec<(u32, Option<FrameSize>)> = rungs.iter().map(|r| (r.bitrate_kbps, r.size)).collect();
        assert_eq!(steps, vec![(2500, None), (1250, None), (625, half), (312, half)]);
        assert!(rungs.iter().enumerate().all(|(i, r)| r.index == i));
    }

    #[test]
    fn a_low_composition_bitrate_has_fewer_rungs_and_none_below_the_floor() {
        let bitrates: Vec<u32> = rungs(300, CANVAS).iter().map(|r| r.bitrate_kbps).collect();
        assert_eq!(bitrates, vec![300, 150, 100]);
        assert_eq!(rungs(100, CANVAS).len(), 1);
    }

    #[test]
    fn a_clean_link_keeps_the_whole_picture_even_when_the_estimate_dips_below_the_rung_above() {
        let rungs = rungs(1500, CANVAS);
        // 2112 is under what 2500 would need, but above what it is sent.
        assert_eq!(choose(&rungs, 0, reading(2112, 60)), 0);
        assert_eq!(choose(&rungs, 0, reading(1600, 60)), 0);
    }

    #[test]
    fn a_still_picture_that_sends_less_than_its_rung_is_not_moved_by_a_low_estimate() {
        let rungs = rungs(2500, CANVAS);
        assert_eq!(choose(&rungs, 0, sending(300, 900, 60)), 0);
        // The same estimate while the picture moves and fills its bitrate.
        assert_eq!(choose(&rungs, 0, sending(2400, 900, 60)), 2);
    }

    #[test]
    fn a_low_estimate_without_losses_is_a_busy_cpu_not_a_poor_link() {
        let rungs = rungs(2500, CANVAS);
        assert_eq!(choose(&rungs, 0, LinkReading { losing: false, ..sending(2000, 1100, 60) }), 0);
    }

    #[test]
    fn a_congested_link_goes_straight_to_the_rung_that_fits() {
        let rungs = rungs(1500, CANVAS);
        // 543 kbit/s: 750 does not fit, 375 does (375 + 64 <= 0.9 * 543).
        assert_eq!(choose(&rungs, 0, reading(543, 60)), 2);
        // Nothing fits: the lowest rung.
        assert_eq!(choose(&rungs, 0, reading(150, 60)), 3);
    }

    #[test]
    fn no_step_down_before_the_last_one_shows_and_none_before_the_estimate_settles() {
        let rungs = rungs(1500, CANVAS);
        assert_eq!(choose(&rungs, 1, sending(750, 300, 1)), 1);
        let early = LinkReading { estimate_kbps: 300, sent_kbps: 1500, losing: true, connected_for: Duration::from_secs(1), on_rung_for: Duration::from_secs(1) };
        assert_eq!(choose(&rungs, 0, early), 0);
        assert_eq!(choose(&rungs, 0, reading(0, 60)), 0, "no estimate yet");
    }

    #[test]
    fn stepping_up_waits_and_needs_room_with_a_margin() {
        let rungs = rungs(1500, CANVAS);
        // On 375 with 600 measured: 750 + 64 needs 1018 with the margin.
        assert_eq!(choose(&rungs, 2, sending(375, 600, 60)), 2);
        assert_eq!(choose(&rungs, 2, sending(375, 1100, 3)), 2, "too soon");
        assert_eq!(choose(&rungs, 2, sending(375, 1100, 10)), 1);
        assert_eq!(choose(&rungs, 1, sending(750, 5000, 10)), 0, "one rung at a time");
    }
}
