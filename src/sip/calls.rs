//! Each live SIP dialog with the participant it became, so that whichever
//! side ends first (a BYE or CANCEL from the caller, a DELETE through the
//! API, a deleted composition) ends the other exactly once: whoever takes a
//! call out of this table ends its other half.

use rsipstack::dialog::DialogId;
use rsipstack::dialog::invite_dialog::InviteDialog;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::session_timer::SessionTimer;
use super::stats::SipStats;
use crate::model::ids::{CompositionId, ParticipantId};

#[derive(Clone)]
pub struct Call {
    pub composition: CompositionId,
    pub participant: ParticipantId,
    pub dialog: InviteDialog,
    /// The caller's SDP and Tutti's in force (its offer and Tutti's answer,
    /// or after a late offer its answer and Tutti's offer): a session
    /// refresh repeats them.
    pub offer: String,
    pub answer: String,
    /// RFC 4028, when the caller asked for it: it refreshes, or the call ends.
    pub timer: Option<SessionTimer>,
}

#[derive(Clone)]
pub struct Calls {
    inner: Arc<Mutex<HashMap<DialogId, Call>>>,
    stats: Arc<SipStats>,
}

impl Calls {
    pub fn new(stats: Arc<SipStats>) -> Calls {
        Calls { inner: Arc::default(), stats }
    }

    pub fn insert(&self, id: DialogId, call: Call) {
        if self.lock().insert(id, call).is_none() {
            self.stats.call_up();
        }
    }

    pub fn get(&self, id: &DialogId) -> Option<Call> {
        self.lock().get(id).cloned()
    }

    /// Records the offer and answer a renegotiation put in force.
    pub fn renegotiated(&self, id: &DialogId, offer: String, answer: String) {
        if let Some(call) = self.lock().get_mut(id) {
            call.offer = offer;
            call.answer = answer;
        }
    }

    /// A re-INVITE or UPDATE came: its session timer starts over.
    pub fn refreshed(&self, id: &DialogId, now: Instant) {
        if let Some(timer) = self.lock().get_mut(id).and_then(|call| call.timer.as_mut()) {
            timer.refresh(now);
        }
    }

    /// Takes out the calls whose session timer ran out unrefreshed: they must end.
    pub fn take_expired(&self, now: Instant) -> Vec<Call> {
        let mut calls = self.lock();
        let expired: Vec<DialogId> =
            calls.iter().filter(|(_, c)| c.timer.is_some_and(|t| t.expired(now))).map(|(id, _)| id.clone()).collect();
        let taken: Vec<Call> = expired.iter().filter_map(|id| calls.remove(id)).collect();
        for _ in &taken {
            self.stats.call_down();
        }
        taken
    }

    /// Takes the call out: the caller ended it, so its participant must go.
    pub fn take(&self, id: &DialogId) -> Option<Call> {
        let call = self.lock().remove(id);
        if call.is_some() {
            self.stats.call_down();
        }
        call
    }

    /// Takes out the call of a participant that left through the API: its
    /// dialog must end.
    pub fn take_participant(&self, participant: &ParticipantId) -> Option<Call> {
        let mut calls = self.lock();
        let id = calls.iter().find(|(_, c)| &c.participant == participant).map(|(id, _)| id.clone())?;
        let call = calls.remove(&id);
        self.stats.call_down();
        call
    }

    pub fn all(&self) -> Vec<Call> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DialogId, Call>> {
        // A panic elsewhere must not take every call down with it.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Dial-outs sent and not yet answered, so that a participant removed
/// meanwhile gets a CANCEL and a 180 finds whom it is for.
#[derive(Clone, Default)]
pub struct Dials {
    inner: Arc<Mutex<HashMap<ParticipantId, (CompositionId, InviteDialog)>>>,
}

impl Dials {
    pub fn insert(&self, participant: ParticipantId, composition: CompositionId, dialog: InviteDialog) {
        self.lock().insert(participant, (composition, dialog));
    }

    /// Takes a dial-out out: its INVITE got its final response, or its
    /// participant went and it must be cancelled.
    pub fn take(&self, participant: &ParticipantId) -> Option<(CompositionId, InviteDialog)> {
        self.lock().remove(participant)
    }

    /// The dial-out whose INVITE has this Call-ID.
    pub fn by_call_id(&self, call_id: &str) -> Option<(CompositionId, ParticipantId)> {
        self.lock().iter().find(|(_, (_, d))| d.id().call_id == call_id).map(|(p, (c, _))| (c.clone(), p.clone()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ParticipantId, (CompositionId, InviteDialog)>> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
