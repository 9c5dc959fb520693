//! When a publisher tries again, and when it gives up. Pure: the caller
//! supplies the randomness and does the waiting.
//!
//! Failures come in three kinds (see [`super::publisher::PublishError::failure_kind`]):
//! - *network*: nothing answered, or the connection broke. These heal by
//!   themselves (a CDN edge restarts, Wi-Fi returns), so they are retried
//!   forever with exponential backoff.
//! - *refusal*: an RTMP server completed the handshake, looked at our
//!   application and stream key, and said no. Retrying the same request
//!   gets the same answer, so a publisher that has never been live gives up
//!   at once and reports the server's reason. One that *has* been live with
//!   this very URL gets a few more tries, because then the refusal is most
//!   likely transient: the server still holds our previous, half-dead
//!   session ("already publishing"), or is restarting.
//! - *untrusted certificate*: the `rtmps://` server's certificate failed
//!   verification (expired, unknown issuer, another name). Every retry
//!   would be shown the same certificate, and the fix is the operator's
//!   (renew it, or trust its CA), so the publisher gives up at once, live
//!   before or not, and says why instead of retrying in silence.

use std::time::Duration;

pub const DEFAULT_INITIAL_DELAY: Duration = Duration::from_secs(1);
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(30);
pub const DEFAULT_JITTER: f64 = 0.2;
pub const DEFAULT_REFUSALS_TOLERATED_AFTER_LIVE: u32 = 3;

#[derive(Clone, Debug, PartialEq)]
pub struct ReconnectPolicy {
    /// Wait before the first retry; doubles on every failure in a row.
    pub initial_delay: Duration,
    pub max_delay: Duration,
    /// Each wait is scaled by a random factor in `1 ± jitter`, so outputs
    /// that lost the same server do not all come back in the same instant.
    pub jitter: f64,
    /// Refusals in a row accepted from a server we have been live on.
    pub refusals_tolerated_after_live: u32,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            initial_delay: DEFAULT_INITIAL_DELAY,
            max_delay: DEFAULT_MAX_DELAY,
            jitter: DEFAULT_JITTER,
            refusals_tolerated_after_live: DEFAULT_REFUSALS_TOLERATED_AFTER_LIVE,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    Network,
    Refusal,
    UntrustedCertificate,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NextStep {
    /// Try again after `delay`; `attempt` counts retries since the last time live.
    RetryAfter {
        attempt: u32,
        delay: Duration,
    },
    GiveUp,
}

#[derive(Debug)]
pub struct Reconnector {
    policy: ReconnectPolicy,
    failures_in_a_row: u32,
    refusals_in_a_row: u32,
    has_been_live: bool,
}

impl Reconnector {
    pub fn new(policy: ReconnectPolicy) -> Reconnector {
        Reconnector {
            policy,
            failures_in_a_row: 0,
            refusals_in_a_row: 0,
            has_been_live: false,
        }
    }

    pub fn has_been_live(&self) -> bool {
        self.has_been_live
    }

    pub fn on_live(&mut self) {
        self.has_been_live = true;
        self.failures_in_a_row = 0;
        self.refusals_in_a_row = 0;
    }

    /// `jitter_sample` is uniform in `[-1, 1]`.
    pub fn on_failure(&mut self, kind: FailureKind, jitter_sample: f64) -> NextStep {
        match kind {
            FailureKind::UntrustedCertificate => return NextStep::GiveUp,
            FailureKind::Network => self.refusals_in_a_row = 0,
            FailureKind::Refusal => {
                self.refusals_in_a_row += 1;
                let tolerated = if self.has_been_live {
                    self.policy.refusals_tolerated_after_live
                } else {
                    0
                };
                if self.refusals_in_a_row > tolerated {
                    return NextStep::GiveUp;
                }
            }
        }
        self.failures_in_a_row += 1;
        let doublings = (self.failures_in_a_row - 1).min(31);
        let base = self
            .policy
            .initial_delay
            .saturating_mul(1 << doublings)
            .min(self.policy.max_delay);
        let factor = 1.0 + self.policy.jitter * jitter_sample.clamp(-1.0, 1.0);
        NextStep::RetryAfter {
            attempt: self.failures_in_a_row,
            delay: base.mul_f64(factor),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delays(reconnector: &mut Reconnector, n: usize, jitter_sample: f64) -> Vec<Duration> {
        (0..n)
            .map(|_| match reconnector.on_failure(FailureKind::Network, jitter_sample) {
                NextStep::RetryAfter { delay, .. } => delay,
                NextStep::GiveUp => panic!("network failures are always retried"),
            })
            .collect()
    }

    #[test]
    fn network_failures_back_off_from_1s_doubling_to_30s() {
        let mut reconnector = Reconnector::new(ReconnectPolicy::default());
        let secs: Vec<u64> = delays(&mut reconnector, 8, 0.0).iter().map(Duration::as_secs).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let mut low = Reconnector::new(ReconnectPolicy::default());
        let mut high = Reconnector::new(ReconnectPolicy::default());
        assert_eq!(delays(&mut low, 6, -1.0)[5], Duration::from_secs(24));
        assert_eq!(delays(&mut high, 6, 1.0)[5], Duration::from_secs(36));
        assert_eq!(
            delays(&mut Reconnector::new(ReconnectPolicy::default()), 1, 7.0)[0],
            Duration::from_millis(1200)
        );
    }

    #[test]
    fn attempts_count_from_one_and_restart_after_going_live() {
        let mut reconnector = Reconnector::new(ReconnectPolicy::default());
        delays(&mut reconnector, 3, 0.0);
        reconnector.on_live();
        assert_eq!(
            reconnector.on_failure(FailureKind::Network, 0.0),
            NextStep::RetryAfter {
                attempt: 1,
                delay: Duration::from_secs(1)
            }
        );
    }

    #[test]
    fn a_refusal_before_ever_being_live_gives_up_at_once() {
        let mut reconnector = Reconnector::new(ReconnectPolicy::default());
        delays(&mut reconnector, 2, 0.0);
        assert_eq!(reconnector.on_failure(FailureKind::Refusal, 0.0), NextStep::GiveUp);
    }

    #[test]
    fn refusals_after_being_live_are_tolerated_a_few_times_in_a_row() {
        let mut reconnector = Reconnector::new(ReconnectPolicy::default());
        reconnector.on_live();
        for attempt in 1..=3 {
            assert!(matches!(
                reconnector.on_failure(FailureKind::Refusal, 0.0),
                NextStep::RetryAfter { attempt: a, .. } if a == attempt
            ));
        }
        assert_eq!(reconnector.on_failure(FailureKind::Refusal, 0.0), NextStep::GiveUp);
    }

    #[test]
    fn a_network_failure_between_refusals_resets_their_count() {
        let mut reconnector = Reconnector::new(ReconnectPolicy::default());
        reconnector.on_live();
        for _ in 0..3 {
            reconnector.on_failure(FailureKind::Refusal, 0.0);
        }
        reconnector.on_failure(FailureKind::Network, 0.0);
        assert!(matches!(
            reconnector.on_failure(FailureKind::Refusal, 0.0),
            NextStep::RetryAfter { .. }
        ));
    }

    #[test]
    fn an_untrusted_certificate_gives_up_at_once_even_after_being_live() {
        let mut fresh = Reconnector::new(ReconnectPolicy::default());
        assert_eq!(
            fresh.on_failure(FailureKind::UntrustedCertificate, 0.0),
            NextStep::GiveUp
        );
        let mut was_live = Reconnector::new(ReconnectPolicy::default());
        was_live.on_live();
        delays(&mut was_live, 2, 0.0);
        assert_eq!(
            was_live.on_failure(FailureKind::UntrustedCertificate, 0.0),
            NextStep::GiveUp
        );
    }
}
