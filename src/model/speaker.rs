//! Who is talking: from the level of each caller's audio, block by block,
//! whether it is speaking, and the one active speaker the layouts follow.
//! Pure: levels in, decisions out. The mixing thread measures the levels
//! and feeds them here every 20 ms block (`src/media/mixer.rs`).
//!
//! Per caller:
//! - its **level** in dBov as RFC 6464 defines it (0 is a full-scale square
//!   wave, a full-scale sine is -3, digital silence -127), measured on what
//!   it sends, before its volume;
//! - its **noise floor**: the lowest level over the last 4 to 5 s (minimum
//!   statistics, as in Martin's noise estimators), so that a fan or a noisy
//!   room sets its own floor; capped at [`FLOOR_CEILING_DBOV`], so that a
//!   caller loud from its very first block is not taken as all noise;
//! - a block is **voiced** when it is [`SPEECH_MARGIN_DB`] above that floor
//!   (and louder than [`QUIETEST_SPEECH_DBOV`]);
//! - **speaking** after [`ONSET`] of voiced blocks in a row, until
//!   [`HANGOVER`] without one (the pauses between words do not end it).
//!
//! The **active speaker**, in the spirit of Jitsi's dominant speaker
//! identification (Volfin and Cohen, 2013): a challenger replaces the
//! current speaker only on speech activity over a longer time scale than a
//! word, and only when it clearly exceeds the current speaker's. Here the
//! activity is the voiced time over the last [`DECISION_WINDOW`]: a caller
//! takes over once it is speaking with at least [`TAKEOVER`] of it, and at
//! least [`CLEAR_LEAD`] more than the current speaker. So a cough, a breath
//! or any burst shorter than [`TAKEOVER`] never switches; two callers taking
//! turns switch about 0.65 s after the new one starts; a caller talking over
//! the current speaker takes over only once the current one stops. Nobody
//! talking keeps the last speaker. A caller nobody hears (muted, or at
//! volume 0) is never a candidate, and loses the place at once if it had it;
//! its level and `speaking` still say what it sends (a producer sees that a
//! muted caller is trying to talk).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use super::ids::ParticipantId;

/// The level of digital silence, and of a caller with no audio this block.
pub const SILENCE_DBOV: f64 = -127.0;
/// How far back the noise floor looks, in sub-windows of a second.
const FLOOR_SUBWINDOW: Duration = Duration::from_secs(1);
const FLOOR_SUBWINDOWS: usize = 5;
/// The highest a noise floor is taken to be: above it, a caller is loud from
/// the start rather than noisy. Active speech is about -26 dBov (ITU-T
/// P.56), its syllables louder: with the margin, -33 dBov still counts.
pub const FLOOR_CEILING_DBOV: f64 = -45.0;
/// How far above its noise floor a block must be to count as voice.
pub const SPEECH_MARGIN_DB: f64 = 12.0;
/// Quieter than this is never voice, whatever the floor (codec noise over
/// digital silence).
pub const QUIETEST_SPEECH_DBOV: f64 = -60.0;
/// Voiced blocks in a row before a caller is speaking.
pub const ONSET: Duration = Duration::from_millis(60);
/// Time without a voiced block before a caller is no longer speaking.
pub const HANGOVER: Duration = Duration::from_millis(400);
/// The time scale over which callers' speech is compared.
pub const DECISION_WINDOW: Duration = Duration::from_secs(1);
/// Voiced time within the window a caller needs to become the active speaker.
pub const TAKEOVER: Duration = Duration::from_millis(600);
/// How much more voiced time than the current speaker a challenger needs.
pub const CLEAR_LEAD: Duration = Duration::from_millis(300);
/// The level shown in the API is the RMS over this long.
const SHOWN_LEVEL_WINDOW: Duration = Duration::from_millis(100);

/// RMS level of interleaved S16 samples in dBov (RFC 6464), -127..0.
pub fn level_dbov(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return SILENCE_DBOV;
    }
    let energy: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (energy / samples.len() as f64).sqrt() / 32768.0;
    if rms == 0.0 { SILENCE_DBOV } else { (20.0 * rms.log10()).clamp(SILENCE_DBOV, 0.0) }
}

/// One caller's block as the detector sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockLevel {
    /// What it sends, before its volume ([`SILENCE_DBOV`] without a block).
    pub dbov: f64,
    /// Whether anyone hears it: not muted, volume above 0.
    pub audible: bool,
}

/// What the detector says of one caller now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TalkerState {
    /// Its RMS level over the last 100 ms.
    pub level_dbov: f64,
    pub speaking: bool,
}

/// Every caller's speech, and the active speaker; fed one block at a time.
pub struct SpeakerDetector {
    scales: Scales,
    talkers: HashMap<ParticipantId, Talker>,
    /// Callers first seen earlier win ties.
    next_order: u64,
    active: Option<ParticipantId>,
}

/// The durations above, in blocks.
#[derive(Clone, Copy)]
struct Scales {
    floor_subwindow: u32,
    onset: u32,
    hangover: u32,
    window: usize,
    takeover: u32,
    lead: u32,
    shown_level: usize,
}

struct Talker {
    order: u64,
    /// The power (1.0 = 0 dBov) of the blocks of the shown level, newest last.
    powers: VecDeque<f64>,
    floor: NoiseFloor,
    voiced_run: u32,
    unvoiced_run: u32,
    speaking: bool,
    /// Voiced or not, for the blocks of the decision window, newest last.
    recent: VecDeque<bool>,
    voiced_recent: u32,
    audible: bool,
}

/// The lowest level per sub-window, over the last few.
struct NoiseFloor {
    minima: VecDeque<f64>,
    current: f64,
    blocks_in_current: u32,
}

impl NoiseFloor {
    fn new() -> NoiseFloor {
        NoiseFloor { minima: VecDeque::with_capacity(FLOOR_SUBWINDOWS), current: f64::INFINITY, blocks_in_current: 0 }
    }

    fn observe(&mut self, dbov: f64, subwindow_blocks: u32) {
        self.current = self.current.min(dbov);
        self.blocks_in_current += 1;
        if self.blocks_in_current == subwindow_blocks {
            if self.minima.len() == FLOOR_SUBWINDOWS - 1 {
                self.minima.pop_front();
            }
            self.minima.push_back(self.current);
            self.current = f64::INFINITY;
            self.blocks_in_current = 0;
        }
    }

    fn level(&self) -> f64 {
        self.minima.iter().copied().fold(self.current, f64::min)
    }
}

fn blocks(duration: Duration, block: Duration) -> u32 {
    (duration.as_nanos() / block.as_nanos()).max(1) as u32
}

impl SpeakerDetector {
    /// A detector fed one block of `block` every call of [`observe`](Self::observe).
    pub fn new(block: Duration) -> SpeakerDetector {
        SpeakerDetector {
            scales: Scales {
                floor_subwindow: blocks(FLOOR_SUBWINDOW, block),
                onset: blocks(ONSET, block),
                hangover: blocks(HANGOVER, block),
                window: blocks(DECISION_WINDOW, block) as usize,
                takeover: blocks(TAKEOVER, block),
                lead: blocks(CLEAR_LEAD, block),
                shown_level: blocks(SHOWN_LEVEL_WINDOW, block) as usize,
            },
            talkers: HashMap::new(),
            next_order: 0,
            active: None,
        }
    }

    /// One block of every caller (a caller left out keeps its state; one
    /// never seen before starts here). Says whether the active speaker changed.
    pub fn observe<'a>(&mut self, levels: impl IntoIterator<Item = (&'a ParticipantId, BlockLevel)>) -> bool {
        let scales = self.scales;
        for (id, level) in levels {
            if !self.talkers.contains_key(id) {
                self.next_order += 1;
                self.talkers.insert(id.clone(), Talker::new(self.next_order, &scales));
            }
            self.talkers.get_mut(id).expect("inserted above").observe(level, &scales);
        }
        self.choose_active()
    }

    /// Forgets a caller that left. Says whether the active speaker changed.
    pub fn remove(&mut self, id: &ParticipantId) -> bool {
        self.talkers.remove(id);
        if self.active.as_ref() == Some(id) {
            self.active = None;
            return true;
        }
        false
    }

    pub fn active(&self) -> Option<&ParticipantId> {
        self.active.as_ref()
    }

    /// `None` for a caller never fed (one that sends no audio).
    pub fn talker(&self, id: &ParticipantId) -> Option<TalkerState> {
        let talker = self.talkers.get(id)?;
        let power = talker.powers.iter().sum::<f64>() / talker.powers.len().max(1) as f64;
        let level_dbov = if power > 0.0 { (10.0 * power.log10()).clamp(SILENCE_DBOV, 0.0) } else { SILENCE_DBOV };
        Some(TalkerState { level_dbov, speaking: talker.speaking })
    }

    fn choose_active(&mut self) -> bool {
        let candidate = self
            .talkers
            .iter()
            .filter(|(_, t)| t.audible && t.speaking && t.voiced_recent >= self.scales.takeover)
            .max_by_key(|(_, t)| (t.voiced_recent, std::cmp::Reverse(t.order)));
        let current = self.active.as_ref().and_then(|id| self.talkers.get(id)).filter(|t| t.audible);
        let next = match (current, candidate) {
            (Some(current), Some((id, challenger))) if challenger.voiced_recent >= current.voiced_recent + self.scales.lead => Some(id),
            (Some(_), _) => self.active.as_ref(),
            // Nobody had it, or the one who had it is no longer heard.
            (None, candidate) => candidate.map(|(id, _)| id),
        };
        if next == self.active.as_ref() {
            return false;
        }
        self.active = next.cloned();
        true
    }
}

impl Talker {
    fn new(order: u64, scales: &Scales) -> Talker {
        Talker {
            order,
            powers: VecDeque::with_capacity(scales.shown_level),
            floor: NoiseFloor::new(),
            voiced_run: 0,
            unvoiced_run: 0,
            speaking: false,
            recent: VecDeque::with_capacity(scales.window),
            voiced_recent: 0,
            audible: true,
        }
    }

    fn observe(&mut self, level: BlockLevel, scales: &Scales) {
        let dbov = level.dbov.clamp(SILENCE_DBOV, 0.0);
        self.audible = level.audible;
        if self.powers.len() == scales.shown_level {
            self.powers.pop_front();
        }
        self.powers.push_back(if dbov <= SILENCE_DBOV { 0.0 } else { 10f64.powf(dbov / 10.0) });

        self.floor.observe(dbov, scales.floor_subwindow);
        let threshold = (self.floor.level().min(FLOOR_CEILING_DBOV) + SPEECH_MARGIN_DB).max(QUIETEST_SPEECH_DBOV);
        let voiced = dbov >= threshold;
        if voiced {
            self.voiced_run += 1;
            self.unvoiced_run = 0;
        } else {
            self.voiced_run = 0;
            self.unvoiced_run += 1;
        }
        if self.voiced_run >= scales.onset {
            self.speaking = true;
        } else if self.unvoiced_run >= scales.hangover {
            self.speaking = false;
        }

        if self.recent.len() == scales.window && self.recent.pop_front() == Some(true) {
            self.voiced_recent -= 1;
        }
        self.recent.push_back(voiced);
        self.voiced_recent += u32::from(voiced);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: Duration = Duration::from_millis(20);
    const TALK_DBOV: f64 = -20.0;

    fn id(name: &str) -> ParticipantId {
        ParticipantId::from(name.to_string())
    }

    fn heard(dbov: f64) -> BlockLevel {
        BlockLevel { dbov, audible: true }
    }

    /// A deterministic level wobbling ±`spread` dB around `mean` (a room's noise).
    struct Noise {
        state: u64,
        mean: f64,
        spread: f64,
    }

    impl Noise {
        fn new(mean: f64, spread: f64) -> Noise {
            Noise { state: 0x2545_f491_4f6c_dd1d, mean, spread }
        }

        fn next(&mut self) -> f64 {
            self.state = self.state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let unit = (self.state >> 11) as f64 / (1u64 << 53) as f64;
            self.mean + self.spread * (2.0 * unit - 1.0)
        }
    }

    /// Feeds `seconds` of blocks; `level(name, t)` gives each caller's level
    /// at `t` seconds from the start of this run. Returns the active speaker
    /// after each block, with the time it was decided at.
    fn run(
        detector: &mut SpeakerDetector,
        names: &[&str],
        seconds: f64,
        mut level: impl FnMut(&str, f64) -> BlockLevel,
    ) -> Vec<(f64, Option<ParticipantId>)> {
        let ids: Vec<ParticipantId> = names.iter().map(|n| id(n)).collect();
        let count = (seconds / BLOCK.as_secs_f64()).round() as usize;
        (0..count)
            .map(|i| {
                let t = i as f64 * BLOCK.as_secs_f64();
                let levels: Vec<(&ParticipantId, BlockLevel)> = ids.iter().zip(names).map(|(id, n)| (id, level(n, t))).collect();
                detector.observe(levels);
                (t, detector.active().cloned())
            })
            .collect()
    }

    /// When the active speaker first became `who`, in seconds.
    fn first_active(history: &[(f64, Option<ParticipantId>)], who: &str) -> Option<f64> {
        history.iter().find(|(_, a)| a.as_ref() == Some(&id(who))).map(|(t, _)| *t)
    }

    fn switches(history: &[(f64, Option<ParticipantId>)]) -> usize {
        history.windows(2).filter(|w| w[0].1 != w[1].1).count()
    }

    #[test]
    fn levels_are_rms_in_dbov_as_rfc_6464_defines_them() {
        assert_eq!(level_dbov(&[i16::MAX, i16::MIN, i16::MAX, i16::MIN]).round(), 0.0, "full-scale square");
        let sine = |amplitude: f64| -> Vec<i16> {
            (0..960).map(|i| (amplitude * 32767.0 * (2.0 * std::f64::consts::PI * 500.0 * i as f64 / 48000.0).sin()) as i16).collect()
        };
        assert!((level_dbov(&sine(1.0)) + 3.01).abs() < 0.05, "full-scale sine: {}", level_dbov(&sine(1.0)));
        assert!((level_dbov(&sine(0.4)) + 10.97).abs() < 0.05, "the test tone: {}", level_dbov(&sine(0.4)));
        assert_eq!(level_dbov(&[0; 960]), SILENCE_DBOV);
        assert_eq!(level_dbov(&[]), SILENCE_DBOV);
        assert!((level_dbov(&[1, 0, 0, 0]) + 96.33).abs() < 0.01, "one LSB is still far above -127");
    }

    #[test]
    fn a_caller_who_starts_talking_becomes_the_speaker_after_the_takeover() {
        let mut detector = SpeakerDetector::new(BLOCK);
        let history = run(&mut detector, &["alice", "bob"], 3.0, |who, t| {
            heard(if who == "alice" && t >= 1.0 { TALK_DBOV } else { SILENCE_DBOV })
        });
        let at = first_active(&history, "alice").expect("alice became the speaker");
        assert!((at - 1.0 - TAKEOVER.as_secs_f64()).abs() < 0.03, "after {:.2} s of talk", at - 1.0);
        assert_eq!(switches(&history), 1);
        assert_eq!(detector.talker(&id("alice")).map(|t| t.speaking), Some(true));
        assert_eq!(detector.talker(&id("bob")).map(|t| t.speaking), Some(false));
    }

    #[test]
    fn speaking_starts_after_the_onset_and_outlasts_the_pauses_between_words() {
        let mut detector = SpeakerDetector::new(BLOCK);
        let alice = id("alice");
        // Silence, then words of 300 ms with 150 ms pauses, then silence.
        let level = |t: f64| {
            let words = (1.0..4.0).contains(&t) && (t - 1.0) % 0.45 < 0.3;
            heard(if words { TALK_DBOV } else { SILENCE_DBOV })
        };
        let mut speaking = Vec::new();
        for i in 0..300 {
            let t = i as f64 * 0.02;
            detector.observe([(&alice, level(t))]);
            speaking.push((t, detector.talker(&alice).unwrap().speaking));
        }
        let started = speaking.iter().find(|(_, s)| *s).unwrap().0;
        assert!((started - 1.0 - (ONSET - BLOCK).as_secs_f64()).abs() < 0.005, "speaking from {started:.2} s");
        let last_word_ends = 1.0 + 0.45 * 6.0 + 0.3;
        for (t, s) in &speaking {
            if (started..last_word_ends).contains(t) {
                assert!(s, "not speaking in a pause at {t:.2} s");
            }
        }
        let stopped = speaking.iter().rev().find(|(_, s)| *s).unwrap().0 + 0.02;
        assert!((stopped - last_word_ends - HANGOVER.as_secs_f64()).abs() < 0.03, "stopped at {stopped:.2} s");
    }

    #[test]
    fn callers_taking_turns_switch_within_a_second_of_each_onset() {
        let mut detector = SpeakerDetector::new(BLOCK);
        // Alice talks in the first 4 s of every 8, Bob in the other 4.
        let history = run(&mut detector, &["alice", "bob"], 32.0, |who, t| {
            let alice_turn = t % 8.0 < 4.0;
            heard(if (who == "alice") == alice_turn { TALK_DBOV } else { SILENCE_DBOV })
        });
        assert_eq!(switches(&history), 8, "one switch per turn");
        for turn in 1..8 {
            let onset = turn as f64 * 4.0;
            let who = if turn % 2 == 0 { "alice" } else { "bob" };
            let at = history.iter().find(|(t, a)| *t >= onset && a.as_ref() == Some(&id(who))).unwrap().0;
            // Bob needs 0.6 s of talk and 0.3 s more than Alice over the last second.
            assert!((0.6..0.75).contains(&(at - onset)), "turn {turn}: {who} after {:.2} s", at - onset);
        }
    }

    #[test]
    fn bursts_shorter_than_the_takeover_never_switch() {
        for burst in [0.1, 0.2, 0.3, 0.5] {
            let mut detector = SpeakerDetector::new(BLOCK);
            // Alice talks for 2 s, then nobody; Bob coughs every second from
            // 1.5 s to 6 s, then twice 200 ms long and 100 ms apart at 8 s.
            let coughs = |t: f64| {
                ((1.5..6.0).contains(&t) && (t - 1.5) % 1.0 < burst) || (8.0..8.2).contains(&t) || (8.3..8.5).contains(&t)
            };
            let history = run(&mut detector, &["alice", "bob"], 12.0, |who, t| {
                let talks = if who == "alice" { t < 2.0 } else { coughs(t) };
                heard(if talks { TALK_DBOV } else { SILENCE_DBOV })
            });
            assert!(history.iter().all(|(_, a)| a.as_ref() != Some(&id("bob"))), "Bob's {burst} s bursts took over");
            assert_eq!(detector.active(), Some(&id("alice")), "the last speaker keeps it through the silence");
        }
    }

    #[test]
    fn the_speaker_keeps_it_while_talked_over_and_loses_it_when_it_stops() {
        let mut detector = SpeakerDetector::new(BLOCK);
        // Alice talks 0..6 s; Bob joins in at 2 s and goes on to 9 s.
        let history = run(&mut detector, &["alice", "bob"], 9.0, |who, t| {
            let talks = if who == "alice" { t < 6.0 } else { t >= 2.0 };
            heard(if talks { TALK_DBOV } else { SILENCE_DBOV })
        });
        assert!(history.iter().filter(|(t, _)| (0.6..6.0).contains(t)).all(|(_, a)| a.as_ref() == Some(&id("alice"))));
        let at = first_active(&history, "bob").unwrap();
        assert!((6.0..6.5).contains(&at), "Bob took over {:.2} s after Alice stopped", at - 6.0);
    }

    #[test]
    fn a_noisy_room_is_not_speaking_but_a_voice_over_it_is() {
        for room_dbov in [-70.0, -55.0, -45.0, -38.0] {
            let mut detector = SpeakerDetector::new(BLOCK);
            let mut noise = Noise::new(room_dbov, 4.0);
            // The room alone for 8 s: never speaking, never the speaker.
            let history = run(&mut detector, &["room"], 8.0, |_, _| heard(noise.next()));
            let talker = detector.talker(&id("room")).unwrap();
            assert!(!talker.speaking, "a room at {room_dbov} dBov is speaking");
            assert_eq!(switches(&history), 0, "a room at {room_dbov} dBov took over");
            assert!((talker.level_dbov - room_dbov).abs() < 4.0, "shown level {} for a room at {room_dbov}", talker.level_dbov);
            // Someone talks in it: 16 dB above the room, or at the usual level if louder.
            let voice = (room_dbov + 16.0).max(TALK_DBOV);
            let history = run(&mut detector, &["room"], 2.0, |_, t| heard(if t >= 0.5 { voice } else { noise.next() }));
            assert!(detector.talker(&id("room")).unwrap().speaking, "a voice at {voice} over a room at {room_dbov}");
            let at = first_active(&history, "room").expect("the voice took over");
            assert!((at - 0.5 - (TAKEOVER - BLOCK).as_secs_f64()).abs() < 0.005, "{at:.2} s");
        }
    }

    #[test]
    fn a_room_that_gets_noisier_stops_speaking_once_its_floor_has_followed() {
        let mut detector = SpeakerDetector::new(BLOCK);
        let mut quiet = Noise::new(-65.0, 3.0);
        let mut loud = Noise::new(-50.0, 3.0);
        run(&mut detector, &["room"], 6.0, |_, _| heard(quiet.next()));
        // A fan comes on 15 dB louder: voice-like at first, noise once the floor has followed.
        let mut speaking = Vec::new();
        for i in 0..400 {
            detector.observe([(&id("room"), heard(loud.next()))]);
            speaking.push((i as f64 * 0.02, detector.talker(&id("room")).unwrap().speaking));
        }
        let last = speaking.iter().rev().find(|(_, s)| *s).map_or(0.0, |(t, _)| *t);
        let window = (FLOOR_SUBWINDOWS as f64) * FLOOR_SUBWINDOW.as_secs_f64();
        assert!(last <= window + HANGOVER.as_secs_f64(), "still speaking {last:.2} s after the fan came on");
        assert!(!speaking[399].1);
    }

    #[test]
    fn a_caller_loud_from_its_first_block_is_speaking() {
        let mut detector = SpeakerDetector::new(BLOCK);
        let history = run(&mut detector, &["tone"], 2.0, |_, _| heard(-11.0));
        assert!(detector.talker(&id("tone")).unwrap().speaking);
        let at = first_active(&history, "tone").expect("the tone took over");
        assert!((at - (TAKEOVER - BLOCK).as_secs_f64()).abs() < 0.005, "after 0.6 s of voiced blocks: {at:.2} s");
    }

    #[test]
    fn a_caller_nobody_hears_never_becomes_the_speaker_but_its_level_shows() {
        let mut detector = SpeakerDetector::new(BLOCK);
        let history = run(&mut detector, &["alice", "muted"], 4.0, |who, _| BlockLevel { dbov: TALK_DBOV, audible: who != "muted" });
        assert!(history.iter().all(|(_, a)| a.as_ref() != Some(&id("muted"))));
        let muted = detector.talker(&id("muted")).unwrap();
        assert!(muted.speaking && (muted.level_dbov - TALK_DBOV).abs() < 0.1, "what it sends still shows: {muted:?}");

        // Muting the speaker hands the place over to whoever qualifies, or to nobody.
        let history = run(&mut detector, &["alice", "muted"], 1.0, |who, _| BlockLevel { dbov: TALK_DBOV, audible: who == "muted" });
        assert_eq!(history[0].1, Some(id("muted")), "Alice muted: the other one, talking all along, at once");
        let history = run(&mut detector, &["alice", "muted"], 1.0, |_, _| BlockLevel { dbov: TALK_DBOV, audible: false });
        assert_eq!(history[0].1, None, "both muted: nobody");
        // Unmuted, a caller qualifies again like anyone.
        run(&mut detector, &["alice", "muted"], 1.0, |who, _| BlockLevel { dbov: TALK_DBOV, audible: who == "alice" });
        assert_eq!(detector.active(), Some(&id("alice")));
    }

    #[test]
    fn a_speaker_who_leaves_leaves_the_place_empty_until_someone_qualifies() {
        let mut detector = SpeakerDetector::new(BLOCK);
        run(&mut detector, &["alice", "bob"], 2.0, |who, _| heard(if who == "alice" { TALK_DBOV } else { SILENCE_DBOV }));
        assert_eq!(detector.active(), Some(&id("alice")));
        assert!(!detector.remove(&id("bob")), "another caller leaving changes nothing");
        assert!(detector.remove(&id("alice")));
        assert_eq!((detector.active(), detector.talker(&id("alice"))), (None, None));
        run(&mut detector, &["carol"], 1.0, |_, _| heard(TALK_DBOV));
        assert_eq!(detector.active(), Some(&id("carol")));
    }

    #[test]
    fn ties_go_to_the_caller_seen_first() {
        let mut detector = SpeakerDetector::new(BLOCK);
        run(&mut detector, &["first", "second"], 1.0, |_, _| heard(TALK_DBOV));
        assert_eq!(detector.active(), Some(&id("first")));
    }

    #[test]
    fn the_shown_level_is_the_rms_of_the_last_100_ms() {
        let mut detector = SpeakerDetector::new(BLOCK);
        let alice = id("alice");
        assert_eq!(detector.talker(&alice), None, "a caller never fed has no level");
        detector.observe([(&alice, heard(SILENCE_DBOV))]);
        assert_eq!(detector.talker(&alice).unwrap().level_dbov, SILENCE_DBOV);
        let mut shown = Vec::new();
        for dbov in [TALK_DBOV; 6].into_iter().chain([SILENCE_DBOV; 5]) {
            detector.observe([(&alice, heard(dbov))]);
            shown.push((detector.talker(&alice).unwrap().level_dbov * 10.0).round() / 10.0);
        }
        // A new caller's first blocks are averaged over what it has sent (one
        // silent, then 1, 2, 3, 4 loud); then four loud blocks in five are 1 dB
        // below the level, one is 7 dB below, none is silence.
        assert_eq!(shown, vec![-23.0, -21.8, -21.2, -21.0, -20.0, -20.0, -21.0, -22.2, -24.0, -27.0, SILENCE_DBOV]);
    }
}
