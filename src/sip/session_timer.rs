//! SIP session timers (RFC 4028), as the answering side: a caller (or an
//! SBC on its path) that asks for them with `Session-Expires` and
//! `Supported: timer` gets them, with itself as the refresher: it sends a
//! re-INVITE or UPDATE within every interval, which Tutti answers with the
//! session in force (`server::renegotiate`), and a session not refreshed in
//! time is over: Tutti ends it with a BYE, as §10 asks of the side that is
//! not the refresher, rather than keep a dead caller's slot and ports.
//!
//! Tutti is never the refresher: a caller that cannot refresh (no
//! `Supported: timer`) gets no timer at all, so a long meeting is never cut
//! by a refresh that nobody sends.

use std::time::{Duration, Instant};

use rsipstack::sip::{Header, Request, headers};

/// The shortest interval taken (RFC 4028 §5: at least 90 s); a shorter ask is a 422.
pub const MIN_SE_SECS: u32 = 90;

/// What a caller's INVITE asks of the session timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerAsk {
    /// Nothing, or no way for it to refresh: no timer.
    None,
    /// An interval under [`MIN_SE_SECS`]: `422 Session Interval Too Small`.
    TooSmall,
    /// A timer of this interval, refreshed by the caller.
    Timer(Duration),
}

/// Reads `Session-Expires` (or its compact `x`), `Supported` and `Require`.
pub fn ask(request: &Request) -> TimerAsk {
    let named = |name: &str, short: &str| -> Vec<String> {
        request
            .headers
            .iter()
            .filter(|h| h.name().eq_ignore_ascii_case(name) || h.name().eq_ignore_ascii_case(short))
            .map(|h| h.value().to_owned())
            .collect()
    };
    let refreshes = named("Supported", "k").iter().chain(named("Require", "Require").iter()).any(|v| lists(v, "timer"));
    let Some(expires) = named("Session-Expires", "x").into_iter().next() else { return TimerAsk::None };
    decide(&expires, refreshes)
}

/// The decision, on the header's text: `delta-seconds[;refresher=…]`.
fn decide(session_expires: &str, caller_refreshes: bool) -> TimerAsk {
    let Ok(secs) = session_expires.split(';').next().unwrap_or_default().trim().parse::<u32>() else { return TimerAsk::None };
    match (caller_refreshes, secs) {
        (false, _) => TimerAsk::None,
        (true, secs) if secs < MIN_SE_SECS => TimerAsk::TooSmall,
        (true, secs) => TimerAsk::Timer(Duration::from_secs(secs.into())),
    }
}

/// Whether a comma-separated option list names `tag`.
fn lists(value: &str, tag: &str) -> bool {
    value.split(',').any(|t| t.trim().eq_ignore_ascii_case(tag))
}

/// What a 2xx says of a timer of `interval`: the caller refreshes.
pub fn answer_headers(interval: Duration) -> Vec<Header> {
    vec![
        headers::SessionExpires::from(format!("{};refresher=uac", interval.as_secs())).into(),
        headers::Require::from("timer").into(),
        headers::Supported::from("timer").into(),
    ]
}

/// What a 422 says: the shortest interval taken.
pub fn too_small_headers() -> Vec<Header> {
    vec![headers::MinSE::from(MIN_SE_SECS.to_string()).into()]
}

/// One call's timer.
#[derive(Clone, Copy, Debug)]
pub struct SessionTimer {
    interval: Duration,
    refreshed: Instant,
}

impl SessionTimer {
    pub fn new(interval: Duration, now: Instant) -> SessionTimer {
        SessionTimer { interval, refreshed: now }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// A re-INVITE or UPDATE came: the session lives another interval.
    pub fn refresh(&mut self, now: Instant) {
        self.refreshed = now;
    }

    /// Whether the session is over: §10 ends it a little before the
    /// interval runs out (a third of it, at most 32 s), so that the BYE
    /// leaves while both sides still hold the dialog.
    pub fn expired(&self, now: Instant) -> bool {
        let margin = (self.interval / 3).min(Duration::from_secs(32));
        now.saturating_duration_since(self.refreshed) >= self.interval - margin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_that_can_refresh_gets_its_interval_and_a_short_one_a_422() {
        assert_eq!(decide("1800;refresher=uac", true), TimerAsk::Timer(Duration::from_secs(1800)));
        assert_eq!(decide(" 90 ", true), TimerAsk::Timer(Duration::from_secs(90)));
        assert_eq!(decide("60;refresher=uas", true), TimerAsk::TooSmall);
        assert_eq!(decide("1800", false), TimerAsk::None, "it could not refresh: no timer rather than a cut call");
        assert_eq!(decide("soon", true), TimerAsk::None);
    }

    #[test]
    fn the_headers_are_read_in_full_and_compact_forms() {
        let invite = |extra: &str| {
            Request::try_from(format!(
                "INVITE sip:room@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1\r\n\
                 From: <sip:a@pbx>;tag=1\r\nTo: <sip:room@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
            ))
            .unwrap()
        };
        assert_eq!(ask(&invite("Session-Expires: 1800\r\nSupported: replaces, timer\r\n")), TimerAsk::Timer(Duration::from_secs(1800)));
        assert_eq!(ask(&invite("x: 600;refresher=uac\r\nk: timer\r\n")), TimerAsk::Timer(Duration::from_secs(600)));
        assert_eq!(ask(&invite("Session-Expires: 600\r\nRequire: timer\r\n")), TimerAsk::Timer(Duration::from_secs(600)));
        assert_eq!(ask(&invite("Session-Expires: 600\r\nSupported: replaces\r\n")), TimerAsk::None);
        assert_eq!(ask(&invite("Supported: timer\r\n")), TimerAsk::None);
    }

    #[test]
    fn a_session_ends_a_third_of_its_interval_early_at_most_32_s_unless_refreshed() {
        let t0 = Instant::now();
        let mut short = SessionTimer::new(Duration::from_secs(90), t0);
        assert!(!short.expired(t0 + Duration::from_secs(59)));
        assert!(short.expired(t0 + Duration::from_secs(60)));
        short.refresh(t0 + Duration::from_secs(50));
        assert!(!short.expired(t0 + Duration::from_secs(109)));
        assert!(short.expired(t0 + Duration::from_secs(110)));
        let long = SessionTimer::new(Duration::from_secs(1800), t0);
        assert!(!long.expired(t0 + Duration::from_secs(1767)));
        assert!(long.expired(t0 + Duration::from_secs(1768)));
    }
}
