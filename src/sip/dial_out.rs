//! Dial-out: a participant the API asked Tutti to call
//! (`POST .../participants` with a `sip_uri`). The engine made the offer and
//! holds the ports (it announced `participant_calling`); this sends the
//! INVITE (through `--sip-outbound-proxy`, answering 401/407 with
//! `--sip-username`/`--sip-password`), reports ringing, the failure or the
//! answer, and cancels a call whose participant is removed before it is answered.

use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::sip::{HeadersExt, StatusCodeKind, Transport, Uri};
use rsipstack::transport::SipAddr;

use super::calls::Call;
use super::server::{SDP, UserAgent};
use crate::engine::DialProgress;
use crate::model::ids::{CompositionId, ParticipantId};

pub(super) async fn dial(context: UserAgent, composition: CompositionId, participant: ParticipantId, uri: String) {
    let fail = |reason: String| {
        let (engine, composition, participant) = (context.engine.clone(), composition.clone(), participant.clone());
        async move {
            tracing::info!(%composition, %participant, %reason, "SIP: dial-out failed");
            let _ = engine.dial_progressed(composition, participant, DialProgress::Failed(reason)).await;
        }
    };
    let callee = match Uri::try_from(uri.as_str()) {
        Ok(callee) => callee,
        Err(e) => return fail(format!("the SIP URI cannot be read: {e}")).await,
    };
    let Ok(offer) = context.engine.pending_offer(composition.clone(), participant.clone()).await else {
        return; // Removed before its INVITE left.
    };
    let option = InviteOption {
        caller_display_name: Some("Tutti".into()),
        caller: context.contacts.for_transport(Transport::Udp),
        callee,
        destination: context.outbound_proxy.map(SipAddr::from),
        content_type: Some(SDP.into()),
        offer: Some(offer.clone().into_bytes()),
        contact: context.contacts.for_transport(Transport::Udp),
        credential: context.credentials.as_deref().map(|user| Credential {
            username: user.name.clone(),
            password: user.password.clone(),
            realm: None,
            auth_username: None,
        }),
        // rsipstack's default Call-ID ends in its vendor's domain.
        call_id: Some(format!("{}@tutti", uuid_like())),
        ..Default::default()
    };
    let (dialog, outcome) = match context.dialogs.do_invite_async(option, context.states.clone()) {
        Ok(started) => started,
        Err(e) => return fail(format!("the INVITE could not be sent: {e}")).await,
    };
    tracing::info!(%composition, %participant, %uri, call_id = %dialog.id().call_id, "SIP: dialling out");
    context.dials.insert(participant.clone(), composition.clone(), dialog.clone());
    let dialled = DialProgress::Dialled { call_id: dialog.id().call_id.clone(), from: dialog.snapshot().from.to_string() };
    let _ = context.engine.dial_progressed(composition.clone(), participant.clone(), dialled).await;
    let result = outcome.await;
    // Gone from the table: its participant was removed and it was cancelled.
    let wanted = context.dials.take(&participant).is_some();
    let response = match result {
        Ok(Ok((_, Some(response)))) => response,
        Ok(Ok((_, None))) => return if wanted { fail("no final response to the INVITE".into()).await },
        Ok(Err(e)) => return if wanted { fail(format!("the INVITE failed: {e}")).await },
        Err(e) => return if wanted { fail(format!("the INVITE's task failed: {e}")).await },
    };
    if response.status_code.kind() != StatusCodeKind::Successful {
        return if wanted { fail(response.status_code.to_string()).await };
    }
    if !wanted {
        // Answered as the CANCEL crossed it: rsipstack ends such a call itself.
        return;
    }
    let answer = String::from_utf8_lossy(&response.body).into_owned();
    let user_agent = response.header_value("Server").or_else(|| response.header_value("User-Agent"));
    let _ = context.engine.dial_progressed(composition.clone(), participant.clone(), DialProgress::Answering { user_agent }).await;
    match context.engine.complete_offer(composition.clone(), participant.clone(), answer.clone()).await {
        Ok(_) => {
            let id = dialog.id();
            tracing::info!(%composition, %participant, call_id = %id.call_id, "SIP: dial-out answered");
            context.calls.insert(id, Call { composition, participant, dialog, offer: answer, answer: offer, timer: None });
        }
        Err(error) => {
            // The engine marked it failed (a broken answer); the call ends.
            tracing::warn!(%composition, %participant, %error, "SIP: the dial-out's answer could not be used; hanging up");
            let _ = dialog.bye().await;
        }
    }
}

/// 128 random bits in hex: a Call-ID's unique part.
fn uuid_like() -> String {
    format!("{:032x}", rand::random::<u128>())
}
