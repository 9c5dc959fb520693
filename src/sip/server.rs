//! The SIP user agent: one UDP socket and one TCP listener on the same
//! port, rsipstack's endpoint on them, and three loops on tokio: new
//! transactions (`incoming`), dialog states (`follow_dialogs`) and the
//! engine's events (`follow_engine`).

use anyhow::Context as _;
use ipnet::IpNet;
use rsipstack::EndpointBuilder;
use rsipstack::dialog::dialog::{DialogState, DialogStateSender, TerminatedReason};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::sip::headers::ToTypedHeader;
use rsipstack::sip::{Header, HeadersExt, Method, Request, StatusCode, Transport, Uri, headers};
use rsipstack::transaction::transaction::Transaction;
use rsipstack::transport::tcp_listener::TcpListenerConnection;
use rsipstack::transport::tls::{TlsConfig, TlsListenerConnection};
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::TransportLayer;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::calls::{Call, Calls, Dials};
use super::dial_out::dial;
use super::digest::{Check, Users};
use super::dispatch::{Destination, Room, Rules, route};
use super::media_control::{self, MediaControl};
use super::refusal::Refusal;
use super::session_timer::{self, SessionTimer, TimerAsk};
use super::stats::SipStats;
use super::trust::{source_of, trusted};
use crate::config::{SipSettings, SipTlsFiles, SipUser};
use crate::limits::{RateBucket, retry_after_secs};
use crate::engine::{DialProgress, EngineError, EngineHandle, JoinRequest, OfferRequest};
use crate::events::EventBus;
use crate::model::composition::CompositionConfig;
use crate::model::event::EventKind;
use crate::model::ids::CompositionId;
use crate::model::sdp::crypto::MediaEncryption;
use crate::model::dtmf::dtmf_relay_key;
use crate::model::signalling::{CallDirection, Signalling, SipCall};

const AGENT: &str = concat!("Tutti/", env!("CARGO_PKG_VERSION"));
pub(super) const SDP: &str = "application/sdp";
const MEDIA_CONTROL: &str = "application/media_control+xml";
const DTMF_RELAY: &str = "application/dtmf-relay";
/// What Tutti answers in a dialog; said in `Allow` so SBCs know.
const ALLOWED: [Method; 7] = [Method::Invite, Method::Ack, Method::Bye, Method::Cancel, Method::Options, Method::Info, Method::Update];
/// How long a BYE may take at shutdown before the process goes anyway.
const BYE_DEADLINE: Duration = Duration::from_secs(2);

/// Tutti's Contact for each transport, so in-dialog requests (a BYE, a
/// re-INVITE) come back over the transport the call came in on.
#[derive(Clone)]
pub(super) struct Contacts {
    udp: Uri,
    tcp: Uri,
    tls: Option<Uri>,
}

impl Contacts {
    fn new(public_host: Option<&str>, local: SocketAddr, tls: Option<SocketAddr>) -> anyhow::Result<Contacts> {
        let host = |address: SocketAddr| match public_host {
            Some(host) => format!("{host}:{}", address.port()),
            None => address.to_string(),
        };
        let uri = |text: String| Uri::try_from(text.as_str()).map_err(|e| anyhow::anyhow!("Contact {text:?} (--sip-public-address): {e}"));
        Ok(Contacts {
            udp: uri(format!("sip:tutti@{}", host(local)))?,
            tcp: uri(format!("sip:tutti@{};transport=tcp", host(local)))?,
            tls: tls.map(|address| uri(format!("sip:tutti@{};transport=tls", host(address)))).transpose()?,
        })
    }

    pub(super) fn for_transport(&self, transport: Transport) -> Uri {
        match (transport, &self.tls) {
            (Transport::Tls, Some(tls)) => tls.clone(),
            (Transport::Tcp | Transport::Tls, _) => self.tcp.clone(),
            _ => self.udp.clone(),
        }
    }
}

/// SIP over TLS on its own port, with the configured certificate.
async fn tls_listener(tls: &SipTlsFiles) -> anyhow::Result<TlsListenerConnection> {
    let read = |path: &std::path::Path, what: &str| std::fs::read(path).with_context(|| format!("reading the SIP TLS {what} {}", path.display()));
    let config = TlsConfig { cert: Some(read(&tls.cert, "certificate")?), key: Some(read(&tls.key, "key")?), ..TlsConfig::default() };
    // rsipstack builds its rustls config with the process-wide provider;
    // Tutti's TLS uses ring everywhere.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    std::net::TcpListener::bind(tls.listen).with_context(|| format!("binding SIP over TLS to {}", tls.listen))?;
    TlsListenerConnection::new(tls.listen, None, config).await.context("preparing SIP over TLS")
}

/// The running SIP user agent.
pub struct SipServer {
    local: SocketAddr,
    calls: Calls,
    cancel: CancellationToken,
    stats: Arc<SipStats>,
}

impl SipServer {
    /// Where it listens (UDP and TCP), with the port really bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// What `/metrics` shows of SIP.
    pub fn stats(&self) -> Arc<SipStats> {
        self.stats.clone()
    }

    /// Says goodbye to every caller, then stops listening.
    pub async fn shutdown(&self) {
        let calls = self.calls.all().into_iter().filter_map(|call| self.calls.take(&call.dialog.id()));
        let byes: Vec<_> = calls.map(|call| tokio::spawn(async move { call.dialog.bye().await })).collect();
        let _ = tokio::time::timeout(BYE_DEADLINE, async {
            for bye in byes {
                let _ = bye.await;
            }
        })
        .await;
        self.cancel.cancel();
    }
}

/// What every call's task needs.
#[derive(Clone)]
pub(super) struct UserAgent {
    pub(super) engine: EngineHandle,
    pub(super) dialogs: Arc<DialogLayer>,
    pub(super) calls: Calls,
    pub(super) dials: Dials,
    pub(super) states: DialogStateSender,
    pub(super) contacts: Contacts,
    trusted_networks: Arc<[IpNet]>,
    users: Arc<Users>,
    rules: Arc<Rules>,
    templates: Arc<HashMap<String, CompositionConfig>>,
    /// The ad-hoc rooms SIP made (deleted when their last caller leaves).
    /// Held while a call is routed, so two callers of a new room make one.
    ad_hoc: Arc<tokio::sync::Mutex<HashSet<CompositionId>>>,
    media_encryption: MediaEncryption,
    /// The node's join budget, shared with the API (`--join-rate`).
    joins: Arc<Mutex<RateBucket>>,
    stats: Arc<SipStats>,
    pub(super) outbound_proxy: Option<SocketAddr>,
    /// Who dial-outs authenticate as, when challenged.
    pub(super) credentials: Option<Arc<SipUser>>,
}

/// Starts the SIP user agent, or nothing if SIP is off (`--sip-listen ""`).
pub async fn start(
    settings: &SipSettings,
    media_encryption: MediaEncryption,
    engine: EngineHandle,
    events: EventBus,
    joins: Arc<Mutex<RateBucket>>,
) -> anyhow::Result<Option<SipServer>> {
    let Some(listen) = settings.listen else {
        return Ok(None);
    };
    let cancel = CancellationToken::new();
    let transports = TransportLayer::new(cancel.child_token());
    let udp = UdpConnection::create_connection(listen, None, Some(cancel.child_token()))
        .await
        .with_context(|| format!("binding SIP over UDP to {listen}"))?;
    let local = udp.get_addr().get_socketaddr().context("reading the SIP socket's address")?;
    transports.add_transport(udp.into());
    // TCP on the same port: large offers (five m-lines, SRTP keys) exceed a
    // UDP datagram's comfortable size, and RFC 3261 §18 asks for both.
    // rsipstack binds its listeners later, inside `serve`, and only logs a
    // failure there: a port taken is found here, at start-up, instead.
    std::net::TcpListener::bind(local).with_context(|| format!("binding SIP over TCP to {local}"))?;
    transports.add_transport(TcpListenerConnection::new(local, None).await.context("preparing SIP over TCP")?.into());
    if let Some(tls) = &settings.tls {
        transports.add_transport(tls_listener(tls).await?.into());
    }

    let endpoint = EndpointBuilder::new()
        .with_cancel_token(cancel.clone())
        .with_transport_layer(transports)
        .with_user_agent(AGENT)
        .with_allows(ALLOWED.to_vec())
        .build();
    let incoming = endpoint.incoming_transactions().context("taking the SIP endpoint's transactions")?;
    let dialogs = Arc::new(DialogLayer::new(endpoint.inner.clone()));
    let (states, state_changes) = dialogs.new_dialog_state_channel();
    let contacts = Contacts::new(settings.public_address.as_deref(), local, settings.tls.as_ref().map(|t| t.listen))?;
    let stats = Arc::new(SipStats::default());
    let calls = Calls::new(stats.clone());
    let context = UserAgent {
        engine,
        dialogs,
        calls: calls.clone(),
        dials: Dials::default(),
        states,
        contacts,
        trusted_networks: settings.trusted_networks.clone().into(),
        users: Arc::new(Users::new(&settings.users.iter().map(|u| (u.name.clone(), u.password.clone())).collect::<Vec<_>>())),
        rules: Arc::new(settings.routes.clone()),
        templates: Arc::new(settings.templates.clone()),
        ad_hoc: Arc::default(),
        media_encryption,
        joins,
        stats: stats.clone(),
        outbound_proxy: settings.outbound_proxy,
        credentials: settings.credentials.clone().map(Arc::new),
    };

    let token = cancel.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = endpoint.serve() => tracing::warn!("the SIP endpoint stopped"),
            _ = token.cancelled() => {}
        }
    });
    tokio::spawn(incoming_loop(context.clone(), incoming, cancel.clone()));
    tokio::spawn(follow_dialogs(context.clone(), state_changes, cancel.clone()));
    tokio::spawn(end_expired_sessions(context.clone(), cancel.clone()));
    tokio::spawn(follow_engine(context, events, cancel.clone()));
    tracing::info!(sip = %local, tls = ?settings.tls.as_ref().map(|t| t.listen), "SIP: call sip:{{composition id or name}}@{local} over UDP or TCP");
    Ok(Some(SipServer { local, calls, cancel, stats }))
}

async fn incoming_loop(context: UserAgent, mut incoming: rsipstack::transaction::TransactionReceiver, cancel: CancellationToken) {
    loop {
        let mut tx = tokio::select! {
            tx = incoming.recv() => match tx { Some(tx) => tx, None => return },
            _ = cancel.cancelled() => return,
        };
        let in_dialog = tx.original.to_header().ok().and_then(|to| to.tag().ok().flatten()).is_some();
        if in_dialog {
            match context.dialogs.match_dialog(&tx) {
                Some(mut dialog) => {
                    tokio::spawn(async move {
                        if let Err(e) = dialog.handle(&mut tx).await {
                            tracing::debug!(error = %e, "SIP: in-dialog request");
                        }
                    });
                }
                None if tx.original.method == Method::Ack => {}
                None => reply(&mut tx, StatusCode::CallTransactionDoesNotExist, Vec::new()).await,
            }
            continue;
        }
        match tx.original.method {
            Method::Invite => {
                tokio::spawn(take_call(context.clone(), tx));
            }
            Method::Options => reply(&mut tx, StatusCode::OK, capabilities()).await,
            Method::Ack => {}
            Method::Bye => reply(&mut tx, StatusCode::CallTransactionDoesNotExist, Vec::new()).await,
            _ => reply(&mut tx, StatusCode::MethodNotAllowed, capabilities()).await,
        }
    }
}

/// `Allow` and `Accept`: what an OPTIONS ping, or a refused method, is told.
fn capabilities() -> Vec<Header> {
    let allow = ALLOWED.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", ");
    vec![headers::Allow::from(allow).into(), headers::Accept::from(SDP).into()]
}

async fn reply(tx: &mut Transaction, status: StatusCode, headers: Vec<Header>) {
    if let Err(e) = tx.reply_with(status.clone(), headers, None).await {
        tracing::debug!(error = %e, %status, "SIP: the reply could not be sent");
    }
}

/// The headers of a 2xx that carries SDP: what Tutti takes, the body's
/// type, and the session timer granted, if any.
fn sdp_headers(timer: Option<SessionTimer>) -> Vec<Header> {
    let mut headers = capabilities();
    headers.push(headers::ContentType::from(SDP).into());
    headers.extend(timer.map(|t| session_timer::answer_headers(t.interval())).unwrap_or_default());
    headers
}

/// A new INVITE the engine would not take (no room for it, no codec, …), refused as SIP says it.
async fn refuse_for(context: &UserAgent, tx: &mut Transaction, composition: &CompositionId, call: &SipCall, error: &EngineError) {
    let refusal = Refusal::from(error);
    tracing::info!(%composition, call_id = %call.call_id, status = %refusal.status, %error, "SIP: call refused");
    refuse(context, tx, refusal.status.clone(), refusal.headers(AGENT)).await;
}

/// A final answer other than 200 to a new INVITE, counted by status.
async fn refuse(context: &UserAgent, tx: &mut Transaction, status: StatusCode, headers: Vec<Header>) {
    context.stats.count_refused(u16::from(status.clone()));
    reply(tx, status, headers).await;
}

/// One new INVITE: who calls, for which room, with what offer; then either
/// a participant and a 200 OK with the answer, or a refusal that says why.
async fn take_call(context: UserAgent, mut tx: Transaction) {
    let request = tx.original.clone();
    let _ = tx.send_trying().await;

    let source = source_of(&request);
    if !source.is_some_and(|ip| trusted(ip, &context.trusted_networks)) {
        match context.users.check(&request, SystemTime::now()) {
            Check::Authorized(user) => tracing::info!(source = ?source, %user, "SIP: an authenticated call"),
            Check::Challenge { stale } if !context.users.is_empty() => {
                return refuse(&context, &mut tx, StatusCode::Unauthorized, context.users.challenge(stale, SystemTime::now())).await;
            }
            _ => {
                tracing::warn!(source = ?source, "SIP: a call from outside the trusted networks without a user's password is refused");
                return refuse(&context, &mut tx, StatusCode::Forbidden, Vec::new()).await;
            }
        }
    }
    let composition = match room_of(&context, &request).await {
        Ok(composition) => composition,
        Err(refusal) => {
            tracing::info!(uri = %request.uri, status = %refusal.status, "SIP: a call for no composition");
            return refuse(&context, &mut tx, refusal.status.clone(), refusal.headers(AGENT)).await;
        }
    };
    let transport = tx.connection.as_ref().map(|c| c.transport()).unwrap_or(Transport::Udp);
    if context.media_encryption == MediaEncryption::Required && transport != Transport::Tls {
        // SDES keys ride in the SDP: over UDP or TCP anyone on the path reads them.
        let refusal = Refusal {
            status: StatusCode::NotAcceptableHere,
            warning: Some((399, "media_encryption is required: SRTP keys travel only over TLS; call over TLS (;transport=tls)".into())),
            retry_after: None,
        };
        return refuse(&context, &mut tx, refusal.status.clone(), refusal.headers(AGENT)).await;
    }
    let timer = match session_timer::ask(&request) {
        TimerAsk::TooSmall => return refuse(&context, &mut tx, StatusCode::SessionIntervalTooSmall, session_timer::too_small_headers()).await,
        TimerAsk::Timer(interval) => Some(SessionTimer::new(interval, Instant::now())),
        TimerAsk::None => None,
    };
    let taken = context.joins.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take(Instant::now());
    if let Err(wait) = taken {
        // SIP's 429 is a 503 with Retry-After: an SBC tries again later or elsewhere.
        tracing::warn!(%composition, "SIP: a call over the node's join rate (--join-rate) is refused");
        let retry_after = u32::try_from(retry_after_secs(wait)).unwrap_or(u32::MAX);
        let retry = Refusal { status: StatusCode::ServiceUnavailable, warning: None, retry_after: Some(retry_after) };
        return refuse(&context, &mut tx, retry.status.clone(), retry.headers(AGENT)).await;
    }
    let content_type = request.header_value("Content-Type").unwrap_or_default();
    if request.body.is_empty() {
        return take_late_offer(context, tx, composition, request, transport, timer).await;
    }
    if !content_type.trim().to_ascii_lowercase().starts_with(SDP) {
        let accept = vec![headers::Accept::from(SDP).into()];
        return refuse(&context, &mut tx, StatusCode::UnsupportedMediaType, accept).await;
    }
    let offer = String::from_utf8_lossy(&request.body).into_owned();
    let call = sip_call(&request);
    let join = JoinRequest { name: Some(caller_name(&request)), offer: offer.clone(), signalling: Signalling::Sip(call.clone()) };
    let joined = match context.engine.add_participant(composition.clone(), join).await {
        Ok(joined) => joined,
        Err(error) => return refuse_for(&context, &mut tx, &composition, &call, &error).await,
    };
    let participant = joined.participant.id.clone();
    let contact = context.contacts.for_transport(transport);
    let dialog = match context.dialogs.get_or_create_server_invite(&tx, context.states.clone(), None, Some(contact)) {
        Ok(dialog) => dialog,
        Err(e) => {
            tracing::warn!(error = %e, "SIP: no dialog for the INVITE");
            let _ = context.engine.remove_participant(composition, participant).await;
            return refuse(&context, &mut tx, StatusCode::ServerInternalError, Vec::new()).await;
        }
    };
    // Recorded before the 200 OK and before the transaction runs: a CANCEL
    // or BYE that races the answer then finds the participant to remove.
    context.calls.insert(
        dialog.id(),
        Call { composition: composition.clone(), participant: participant.clone(), dialog: dialog.clone(), offer, answer: joined.answer.clone(), timer },
    );
    if let Err(e) = dialog.accept(Some(sdp_headers(timer)), Some(joined.answer.into_bytes())) {
        tracing::warn!(error = %e, "SIP: the 200 OK could not be sent");
    }
    context.stats.count_answered();
    tracing::info!(%composition, %participant, call_id = %call.call_id, from = %call.from, "SIP: call answered");
    let mut dialog = dialog;
    if let Err(e) = dialog.handle(&mut tx).await {
        tracing::debug!(error = %e, "SIP: INVITE transaction");
    }
}

/// An INVITE without SDP, as PBXs send them (RFC 3261 §13.2.1): Tutti
/// offers in the 200 OK, the caller answers in the ACK, and only then is
/// its media built. An ACK without a usable answer ends the call with a BYE
/// and frees the ports the offer held.
async fn take_late_offer(
    context: UserAgent,
    mut tx: Transaction,
    composition: CompositionId,
    request: Request,
    transport: Transport,
    timer: Option<SessionTimer>,
) {
    let call = sip_call(&request);
    let ask = OfferRequest { name: Some(caller_name(&request)), signalling: Signalling::Sip(call.clone()) };
    let offered = match context.engine.make_offer(composition.clone(), ask).await {
        Ok(offered) => offered,
        Err(error) => return refuse_for(&context, &mut tx, &composition, &call, &error).await,
    };
    let participant = offered.participant;
    let dialog = match context.dialogs.get_or_create_server_invite(&tx, context.states.clone(), None, Some(context.contacts.for_transport(transport))) {
        Ok(dialog) => dialog,
        Err(e) => {
            tracing::warn!(error = %e, "SIP: no dialog for the INVITE");
            let _ = context.engine.remove_participant(composition, participant).await;
            return refuse(&context, &mut tx, StatusCode::ServerInternalError, Vec::new()).await;
        }
    };
    let id = dialog.id();
    // As for an offer in the INVITE: a CANCEL or BYE before the ACK finds
    // the participant, here still an offer, and withdraws it.
    context.calls.insert(
        id.clone(),
        Call {
            composition: composition.clone(),
            participant: participant.clone(),
            dialog: dialog.clone(),
            offer: String::new(),
            answer: offered.offer.clone(),
            timer,
        },
    );
    if let Err(e) = dialog.accept(Some(sdp_headers(timer)), Some(offered.offer.clone().into_bytes())) {
        tracing::warn!(error = %e, "SIP: the 200 OK could not be sent");
    }
    let mut transaction = dialog.clone();
    if let Err(e) = transaction.handle(&mut tx).await {
        tracing::debug!(error = %e, "SIP: INVITE transaction");
    }
    if context.calls.get(&id).is_none() {
        return; // Ended before its ACK; the offer went with it.
    }
    let answer = dialog.last_remote_ack().map(|ack| String::from_utf8_lossy(&ack.body).into_owned()).unwrap_or_default();
    match context.engine.complete_offer(composition.clone(), participant.clone(), answer.clone()).await {
        Ok(_) => {
            context.calls.renegotiated(&id, answer, offered.offer);
            context.stats.count_answered();
            tracing::info!(%composition, %participant, call_id = %call.call_id, from = %call.from, "SIP: call answered (the caller answered Tutti's offer in its ACK)");
        }
        Err(error) => {
            tracing::warn!(%composition, %participant, call_id = %call.call_id, %error, "SIP: the ACK carried no usable answer to Tutti's offer; hanging up");
            // The engine freed the offer's ports with the failed answer.
            if let Some(call) = context.calls.take(&id) {
                hang_up(&context, call);
            }
        }
    }
}

/// The composition the Request-URI's user part names (by id, by name, or
/// by a dial-plan rule), made from a template if a rule says so.
async fn room_of(context: &UserAgent, request: &Request) -> Result<CompositionId, Refusal> {
    let nowhere = || Refusal::status(StatusCode::NotFound);
    let user = request.uri.user().ok_or_else(nowhere)?.to_string();
    let mut ad_hoc = context.ad_hoc.lock().await;
    let known = context.engine.rooms().await.map_err(|e| Refusal::from(&e))?;
    let rooms = known.iter().map(|(id, name)| Room { id, name: name.as_deref() });
    match route(&user, rooms, &context.rules) {
        Destination::Join(id) => Ok(id.clone()),
        Destination::Nowhere => Err(nowhere()),
        Destination::Create { template } => {
            let mut config = context.templates.get(template).cloned().ok_or_else(nowhere)?;
            config.name = Some(user.clone());
            let created = context.engine.create_composition(config).await.map_err(|e| Refusal::from(&e))?;
            tracing::info!(composition = %created.id, name = %user, %template, "SIP: an ad-hoc room made for its first caller");
            ad_hoc.insert(created.id.clone());
            Ok(created.id)
        }
    }
}

/// An ad-hoc room ends with its last caller.
async fn close_if_empty_ad_hoc(context: &UserAgent, composition: &CompositionId) {
    let mut ad_hoc = context.ad_hoc.lock().await;
    if !ad_hoc.contains(composition) {
        return;
    }
    let empty = match context.engine.composition(composition.clone()).await {
        Ok(view) => view.participants.is_empty(),
        Err(_) => true,
    };
    if empty {
        ad_hoc.remove(composition);
        if context.engine.delete_composition(composition.clone()).await.is_ok() {
            tracing::info!(%composition, "SIP: an ad-hoc room closed with its last caller");
        }
    }
}

fn sip_call(request: &Request) -> SipCall {
    SipCall {
        call_id: request.header_value("Call-ID").unwrap_or_default(),
        from: request.header_value("From").unwrap_or_default(),
        to: request.header_value("To").unwrap_or_default(),
        user_agent: request.header_value("User-Agent"),
        direction: CallDirection::Inbound,
    }
}

/// The name a caller shows in its label: its display name, else its user.
fn caller_name(request: &Request) -> String {
    let from = request.from_header().ok().and_then(|f| f.typed().ok());
    let display = from.as_ref().and_then(|f| f.display_name.clone()).map(|n| n.trim().trim_matches('"').to_string());
    display
        .filter(|n| !n.is_empty())
        .or_else(|| from.as_ref().and_then(|f| f.uri.user().map(str::to_string)))
        .unwrap_or_else(|| "SIP caller".to_string())
}

/// Dialog states from rsipstack: a call that ends removes its participant;
/// in-dialog requests are answered.
async fn follow_dialogs(context: UserAgent, mut changes: rsipstack::dialog::dialog::DialogStateReceiver, cancel: CancellationToken) {
    loop {
        let change = tokio::select! {
            change = changes.recv() => match change { Some(change) => change, None => return },
            _ = cancel.cancelled() => return,
        };
        match change {
            DialogState::Terminated(id, reason) => {
                context.dialogs.remove_dialog(&id);
                if let Some(call) = context.calls.take(&id) {
                    tracing::info!(composition = %call.composition, participant = %call.participant, reason = ?reason, "SIP: call ended");
                    let context = context.clone();
                    tokio::spawn(async move {
                        match context.engine.remove_participant(call.composition.clone(), call.participant).await {
                            Ok(_) | Err(EngineError::ParticipantNotFound(..) | EngineError::CompositionNotFound(_)) => {}
                            Err(e) => tracing::warn!(error = %e, "SIP: removing an ended call's participant"),
                        }
                        close_if_empty_ad_hoc(&context, &call.composition).await;
                    });
                } else if !matches!(reason, TerminatedReason::UasBye) {
                    tracing::debug!(%id, ?reason, "SIP: dialog ended");
                }
            }
            DialogState::Early(id, _) => {
                if let Some((composition, participant)) = context.dials.by_call_id(&id.call_id) {
                    let engine = context.engine.clone();
                    tokio::spawn(async move { engine.dial_progressed(composition, participant, DialProgress::Ringing).await });
                }
            }
            DialogState::Options(_, _, handle) => {
                let _ = handle.respond(StatusCode::OK, Some(capabilities()), None).await;
            }
            DialogState::Info(id, request, handle) => {
                let context = context.clone();
                tokio::spawn(async move {
                    let status = info(&context, &id, &request).await;
                    let _ = handle.reply(status).await;
                });
            }
            DialogState::Updated(id, request, handle) => {
                // Off this loop: the engine may take a moment, and other calls' states wait meanwhile.
                let context = context.clone();
                tokio::spawn(async move {
                    let (status, headers, body) = renegotiate(&context, &id, &request).await;
                    let _ = handle.respond(status, Some(headers), body).await;
                });
            }
            DialogState::Refer(_, _, handle)
            | DialogState::Message(_, _, handle)
            | DialogState::Notify(_, _, handle)
            | DialogState::Publish(_, _, handle) => {
                let _ = handle.respond(StatusCode::MethodNotAllowed, Some(capabilities()), None).await;
            }
            _ => {}
        }
    }
}

/// A re-INVITE or UPDATE in a call. One that repeats the offer in force, or
/// carries none, refreshes the session (RFC 4028 keep-alives): the answer
/// in force goes back. A changed offer (hold, resume, a moved address) goes
/// to the engine, whose answer goes back; one the running leg cannot follow
/// (a changed codec) is refused with 488 and a `Warning`, which leaves the
/// call as it was (RFC 3261 §14.2).
async fn renegotiate(context: &UserAgent, id: &rsipstack::dialog::DialogId, request: &Request) -> (StatusCode, Vec<Header>, Option<Vec<u8>>) {
    let Some(call) = context.calls.get(id) else {
        return (StatusCode::CallTransactionDoesNotExist, Vec::new(), None);
    };
    let offer = String::from_utf8_lossy(&request.body).into_owned();
    let headers = sdp_headers(call.timer);
    if offer.trim().is_empty() || same_session(&offer, &call.offer) {
        // A refresh (RFC 4028 §10: one answered 2xx).
        context.calls.refreshed(id, Instant::now());
        return (StatusCode::OK, headers, Some(call.answer.into_bytes()));
    }
    match context.engine.renegotiate(call.composition.clone(), call.participant.clone(), offer.clone()).await {
        Ok(answer) => {
            context.calls.refreshed(id, Instant::now());
            context.calls.renegotiated(id, offer, answer.clone());
            (StatusCode::OK, headers, Some(answer.into_bytes()))
        }
        Err(error) => {
            let refusal = Refusal::from(&error);
            tracing::info!(composition = %call.composition, participant = %call.participant, status = %refusal.status, %error, "SIP: re-offer refused");
            (refusal.status.clone(), refusal.headers(AGENT), None)
        }
    }
}

/// An INFO in a call: a `picture_fast_update` (RFC 5168) asks for a
/// keyframe in the video the caller receives; a `dtmf-relay` body carries a
/// key (a room's PIN). Other bodies are taken and ignored; media control XML
/// or a relayed key that cannot be read is a 400.
async fn info(context: &UserAgent, id: &rsipstack::dialog::DialogId, request: &Request) -> StatusCode {
    let content_type = request.header_value("Content-Type").unwrap_or_default().trim().to_ascii_lowercase();
    let body = String::from_utf8_lossy(&request.body);
    let Some(call) = context.calls.get(id) else { return StatusCode::CallTransactionDoesNotExist };
    let asked = if content_type.starts_with(MEDIA_CONTROL) {
        match media_control::parse(&body) {
            Ok(MediaControl::PictureFastUpdate) => {
                tracing::debug!(participant = %call.participant, "SIP: picture_fast_update");
                context.engine.request_keyframe(call.composition, call.participant).await
            }
            Ok(MediaControl::Other) => return StatusCode::OK,
            Err(e) => {
                tracing::debug!(error = %e, "SIP: INFO");
                return StatusCode::BadRequest;
            }
        }
    } else if content_type.starts_with(DTMF_RELAY) {
        // The fallback for endpoints that cannot send RFC 4733 in their RTP.
        let Some(key) = dtmf_relay_key(&body) else { return StatusCode::BadRequest };
        context.engine.key(call.composition, call.participant, key).await
    } else {
        return StatusCode::OK;
    };
    match asked {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::CallTransactionDoesNotExist,
    }
}

/// Whether a re-offer describes the same session: RFC 3264 §8 says an
/// unchanged offer keeps the o= version; some endpoints bump it anyway, so
/// everything but the o= line is compared.
fn same_session(a: &str, b: &str) -> bool {
    let body = |s: &str| s.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("o=")).map(str::to_string).collect::<Vec<_>>();
    body(a) == body(b)
}

/// Ends, once a second, the calls whose session timer ran out: the caller
/// stopped refreshing (it crashed, or lost its network), so it gets a BYE
/// and its participant goes.
async fn end_expired_sessions(context: UserAgent, cancel: CancellationToken) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = cancel.cancelled() => return,
        }
        for call in context.calls.take_expired(Instant::now()) {
            tracing::warn!(composition = %call.composition, participant = %call.participant, "SIP: the session timer ran out unrefreshed; ending the call");
            let (engine, composition, participant) = (context.engine.clone(), call.composition.clone(), call.participant.clone());
            hang_up(&context, call);
            tokio::spawn(async move { engine.remove_participant(composition, participant).await });
        }
    }
}

/// The engine's events: a dial-out to place; a SIP participant removed
/// through the API, or with its composition, gets a BYE (a CANCEL if it is
/// still ringing).
async fn follow_engine(context: UserAgent, events: EventBus, cancel: CancellationToken) {
    let (_, mut feed) = events.subscribe(None);
    loop {
        let event = tokio::select! {
            event = feed.recv() => event,
            _ = cancel.cancelled() => return,
        };
        match event {
            Ok(event) => {
                match &event.what {
                    EventKind::ParticipantCalling { participant, sip_uri, .. } => {
                        tokio::spawn(dial(context.clone(), event.composition.clone(), participant.clone(), sip_uri.clone()));
                    }
                    EventKind::ParticipantLeft { participant } => {
                        if let Some(call) = context.calls.take_participant(participant) {
                            hang_up(&context, call);
                        } else if let Some((composition, dialog)) = context.dials.take(participant) {
                            tracing::info!(%composition, %participant, "SIP: cancelling a dial-out removed before its answer");
                            tokio::spawn(async move { dialog.cancel().await });
                        }
                    }
                    _ => {}
                }
            }
            // Events were missed: ask the engine which calls still have a participant.
            Err(RecvError::Lagged(_)) => {
                for call in context.calls.all() {
                    let gone = matches!(
                        context.engine.participant(call.composition.clone(), call.participant.clone()).await,
                        Err(EngineError::ParticipantNotFound(..) | EngineError::CompositionNotFound(_))
                    );
                    if gone && let Some(call) = context.calls.take(&call.dialog.id()) {
                        hang_up(&context, call);
                    }
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}

fn hang_up(context: &UserAgent, call: Call) {
    tracing::info!(composition = %call.composition, participant = %call.participant, "SIP: hanging up (BYE)");
    let context = context.clone();
    tokio::spawn(async move {
        if let Err(e) = call.dialog.bye().await {
            tracing::debug!(error = %e, "SIP: BYE");
        }
        close_if_empty_ad_hoc(&context, &call.composition).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refresh_with_a_new_origin_version_is_the_same_session() {
        let a = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        let b = "v=0\r\no=- 1 2 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        let moved = b.replace("4000", "4002");
        assert!(same_session(a, b));
        assert!(!same_session(a, &moved));
    }

    #[test]
    fn a_caller_is_named_by_its_display_name_else_its_user() {
        let invite = |from: &str| {
            Request::try_from(format!(
                "INVITE sip:room@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1\r\n\
                 From: {from};tag=1\r\nTo: <sip:room@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
            ))
            .unwrap()
        };
        assert_eq!(caller_name(&invite("\"Room 4B\" <sip:4b@pbx>")), "Room 4B");
        let call = sip_call(&Request::try_from(
            "INVITE sip:room@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1\r\n\
             From: <sip:a@pbx>;tag=1\r\nTo: <sip:room@127.0.0.1>\r\nCall-ID: c1@pbx\r\nCSeq: 1 INVITE\r\n\
             User-Agent: Polycom/6.4\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap());

        assert_eq!(call.user_agent.as_deref(), Some("Polycom/6.4"));
        assert_eq!(call.call_id, "c1@pbx");
        assert_eq!(caller_name(&invite("<sip:alice@pbx>")), "alice");
    }
}
