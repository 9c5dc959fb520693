//! A room's PIN and a caller keying it in, as pure logic: the engine feeds
//! it the caller's keys and the clock, and acts on what it answers (admit,
//! play a prompt, hang up).
//!
//! The rules are those of conference bridges callers know (FreeSWITCH's
//! `pin`, Zoom's and Webex's dial-in): the caller hears a prompt, types
//! the digits and `#`; the right digits admit it at once, even before the
//! `#`; `*` starts over; a pause of [`SUBMIT_AFTER`] after some digits
//! counts as `#`; three wrong PINs, or no right one within
//! [`ENTRY_TIMEOUT`], end the call. A caller who types nothing hears the
//! prompt again every [`REPROMPT_AFTER`].

use serde::{Deserialize, Deserializer};
use std::time::{Duration, Instant};

/// Wrong PINs before the call is ended.
pub const MAX_ATTEMPTS: u32 = 3;
/// A pause after some digits that submits them, for callers who do not press `#`.
pub const SUBMIT_AFTER: Duration = Duration::from_secs(5);
/// Silence (no key) after which the prompt is played again.
pub const REPROMPT_AFTER: Duration = Duration::from_secs(15);
/// How long a caller may take to get in at all.
pub const ENTRY_TIMEOUT: Duration = Duration::from_secs(60);
/// Digits kept while typing: a caller leaning on a key does not grow memory.
const MAX_TYPED: usize = 32;

/// A room's PIN: 4 to 12 digits.
#[derive(Clone, PartialEq, Eq)]
pub struct Pin(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("pin must be 4 to 12 digits (0-9)")]
pub struct InvalidPin;

impl Pin {
    pub fn new(digits: &str) -> Result<Pin, InvalidPin> {
        let valid = (4..=12).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
        valid.then(|| Pin(digits.to_owned())).ok_or(InvalidPin)
    }

    /// Whether `typed` is the PIN, in time independent of where they differ.
    fn is(&self, typed: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), typed.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
    }
}

/// Never printed: logs and `Debug` output show that a PIN is set, not which.
impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pin(****)")
    }
}

impl<'de> Deserialize<'de> for Pin {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Pin, D::Error> {
        let digits = String::deserialize(deserializer)?;
        Pin::new(&digits).map_err(serde::de::Error::custom)
    }
}

/// What the engine does after a key or a tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinStep {
    /// Nothing to do yet.
    Typing,
    /// The right PIN: into the room.
    Admitted,
    /// A wrong PIN, with this many tries left: say so and listen again.
    Wrong { attempts_left: u32 },
    /// The last wrong PIN: say so and hang up.
    Rejected,
    /// No key for a while: play the prompt again.
    Reprompt,
    /// No right PIN within [`ENTRY_TIMEOUT`]: hang up.
    TimedOut,
}

/// One caller keying in a PIN.
#[derive(Debug)]
pub struct PinEntry {
    pin: Pin,
    typed: String,
    wrong: u32,
    started: Instant,
    /// The last key, or the last prompt played: what the pauses count from.
    last_activity: Instant,
    /// Whether a key came since then (a pause after keys submits them;
    /// one without keys re-prompts).
    typed_since_activity: bool,
    done: bool,
}

impl PinEntry {
    pub fn new(pin: Pin, now: Instant) -> PinEntry {
        PinEntry { pin, typed: String::new(), wrong: 0, started: now, last_activity: now, typed_since_activity: false, done: false }
    }

    /// A key the caller pressed (`0`–`9`, `*`, `#`; others are ignored).
    pub fn key(&mut self, key: char, now: Instant) -> PinStep {
        if self.done {
            return PinStep::Typing;
        }
        self.last_activity = now;
        match key {
            '0'..='9' => {
                if self.typed.len() < MAX_TYPED {
                    self.typed.push(key);
                }
                self.typed_since_activity = true;
                if self.pin.is(&self.typed) { self.finish(PinStep::Admitted) } else { PinStep::Typing }
            }
            '#' if !self.typed.is_empty() => self.submit(),
            '*' => {
                self.typed.clear();
                self.typed_since_activity = false;
                PinStep::Typing
            }
            _ => PinStep::Typing,
        }
    }

    /// The clock moved on: a pause may submit, re-prompt or end the entry.
    pub fn tick(&mut self, now: Instant) -> PinStep {
        if self.done {
            return PinStep::Typing;
        }
        if now.saturating_duration_since(self.started) >= ENTRY_TIMEOUT {
            return self.finish(PinStep::TimedOut);
        }
        let quiet = now.saturating_duration_since(self.last_activity);
        if self.typed_since_activity && !self.typed.is_empty() && quiet >= SUBMIT_AFTER {
            self.last_activity = now;
            return self.submit();
        }
        if !self.typed_since_activity && quiet >= REPROMPT_AFTER {
            self.last_activity = now;
            return PinStep::Reprompt;
        }
        PinStep::Typing
    }

    /// Wrong PINs so far.
    pub fn wrong_attempts(&self) -> u32 {
        self.wrong
    }

    fn submit(&mut self) -> PinStep {
        self.typed.clear();
        self.typed_since_activity = false;
        self.wrong += 1;
        if self.wrong >= MAX_ATTEMPTS {
            return self.finish(PinStep::Rejected);
        }
        PinStep::Wrong { attempts_left: MAX_ATTEMPTS - self.wrong }
    }

    fn finish(&mut self, step: PinStep) -> PinStep {
        self.done = true;
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_entry(pin: &str) -> (PinEntry, Instant) {
        let t0 = Instant::now();
        (PinEntry::new(Pin::new(pin).unwrap(), t0), t0)
    }

    fn keys(entry: &mut PinEntry, keys: &str, at: Instant) -> Vec<PinStep> {
        keys.chars().map(|k| entry.key(k, at)).collect()
    }

    #[test]
    fn pins_are_four_to_twelve_digits_and_never_printed() {
        assert!(Pin::new("1234").is_ok() && Pin::new("123456789012").is_ok());
        for bad in ["123", "1234567890123", "12a4", "", "12 34", "１２３４"] {
            assert_eq!(Pin::new(bad), Err(InvalidPin), "{bad:?}");
        }
        assert_eq!(format!("{:?}", Pin::new("4711").unwrap()), "Pin(****)");
        let parsed: Pin = serde_json::from_str("\"4711\"").unwrap();
        assert!(parsed.is("4711"));
        assert!(serde_json::from_str::<Pin>("4711").is_err(), "a number, not a string: leading zeros would be lost");
    }

    #[test]
    fn the_right_digits_admit_at_once_without_waiting_for_the_pound_key() {
        let (mut entry, t0) = new_entry("4711");
        assert_eq!(keys(&mut entry, "4711", t0), [PinStep::Typing, PinStep::Typing, PinStep::Typing, PinStep::Admitted]);
        assert_eq!(entry.key('#', t0), PinStep::Typing, "nothing after the end");
        assert_eq!(entry.tick(t0 + ENTRY_TIMEOUT * 2), PinStep::Typing);
    }

    #[test]
    fn three_wrong_pins_end_the_call_and_star_starts_over() {
        let (mut entry, t0) = new_entry("4711");
        assert_eq!(keys(&mut entry, "12#", t0).last(), Some(&PinStep::Wrong { attempts_left: 2 }));
        assert_eq!(keys(&mut entry, "99*47", t0).last(), Some(&PinStep::Typing), "* cleared the 99");
        assert_eq!(keys(&mut entry, "11", t0).last(), Some(&PinStep::Admitted));

        let (mut entry, t0) = new_entry("4711");
        assert_eq!(entry.key('#', t0), PinStep::Typing, "# with nothing typed is no attempt");
        assert_eq!(keys(&mut entry, "1#", t0).last(), Some(&PinStep::Wrong { attempts_left: 2 }));
        assert_eq!(keys(&mut entry, "47122#", t0).last(), Some(&PinStep::Wrong { attempts_left: 1 }));
        assert_eq!(keys(&mut entry, "0000#", t0).last(), Some(&PinStep::Rejected));
        assert_eq!(entry.wrong_attempts(), 3);
        assert_eq!(keys(&mut entry, "4711", t0).last(), Some(&PinStep::Typing), "too late");
    }

    #[test]
    fn a_pause_after_digits_submits_them_and_a_pause_without_reprompts() {
        let (mut entry, t0) = new_entry("4711");
        assert_eq!(entry.tick(t0 + REPROMPT_AFTER - Duration::from_millis(1)), PinStep::Typing);
        let reprompted = t0 + REPROMPT_AFTER;
        assert_eq!(entry.tick(reprompted), PinStep::Reprompt);
        assert_eq!(entry.tick(reprompted + Duration::from_secs(1)), PinStep::Typing, "once per pause");
        let typed = reprompted + Duration::from_secs(2);
        entry.key('4', typed);
        assert_eq!(entry.tick(typed + SUBMIT_AFTER - Duration::from_millis(1)), PinStep::Typing);
        assert_eq!(entry.tick(typed + SUBMIT_AFTER), PinStep::Wrong { attempts_left: 2 });
        assert_eq!(entry.tick(typed + SUBMIT_AFTER + Duration::from_secs(1)), PinStep::Typing, "submitted once");
    }

    #[test]
    fn no_right_pin_within_the_entry_timeout_ends_the_call() {
        let (mut entry, t0) = new_entry("4711");
        entry.key('1', t0 + ENTRY_TIMEOUT - Duration::from_secs(1));
        assert_eq!(entry.tick(t0 + ENTRY_TIMEOUT), PinStep::TimedOut);
        assert_eq!(entry.key('4', t0 + ENTRY_TIMEOUT), PinStep::Typing);
    }

    #[test]
    fn typed_digits_are_bounded() {
        let (mut entry, t0) = new_entry("4711");
        for _ in 0..10_000 {
            entry.key('9', t0);
        }
        assert_eq!(entry.typed.len(), MAX_TYPED);
    }
}
