//! What the SIP user agent counts for `/metrics`: calls answered, calls
//! refused by status (a spike of 403s is a misconfigured trunk, of 488s an
//! endpoint with codecs Tutti lacks), and the calls up now.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct SipStats {
    answered: AtomicU64,
    active: AtomicI64,
    refused: Mutex<BTreeMap<u16, u64>>,
}

impl SipStats {
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    pub fn active(&self) -> i64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Refusals so far, by status code.
    pub fn refused(&self) -> BTreeMap<u16, u64> {
        self.refused.lock().map(|m| m.clone()).unwrap_or_default()
    }

    pub(super) fn count_answered(&self) {
        self.answered.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_refused(&self, status: u16) {
        if let Ok(mut refused) = self.refused.lock() {
            *refused.entry(status).or_default() += 1;
        }
    }

    pub(super) fn call_up(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn call_down(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }
}
