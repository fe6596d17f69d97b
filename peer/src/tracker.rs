//! The edge tracker (docs/protocol.md §3.3), from a peer's side: announce what this peer
//! holds, signed with its identity key ([`chorus_core::announce`]), and ask for up to 10 peers
//! holding a track, in one round trip each. The bodies are [`chorus_core::api`]'s types.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chorus_core::TrackId;
use chorus_core::announce::SignedAnnounce;
use chorus_core::api::{Announce, AnnounceAnswer, ErrorBody, MAX_PEERS_TAKEN, TrackerAnswer};
use chorus_core::error::Chain;
use chorus_core::route::{self, Route};
use chorus_core::url::BaseUrl;
use chorus_http::client::{ClientError, HttpClient};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};

pub use chorus_core::holdings::{Holdings, Plan, SOON};

/// Why a tracker request failed. Every one is worth retrying later.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrackerError {
    /// The request did not get an answer (connect, timeout, transport).
    #[error("asking the tracker at {edge}")]
    Request {
        /// The edge's base URL.
        edge: BaseUrl,
        /// Why.
        #[source]
        source: ClientError,
    },
    /// The tracker answered with an error status.
    #[error("the tracker at {edge} answered {status}: {error}")]
    Refused {
        /// The edge's base URL.
        edge: BaseUrl,
        /// Its answer.
        status: http::StatusCode,
        /// Its JSON error's text (at most 200 bytes), or the start of a body that is not one.
        error: String,
        /// The edge's clock, when the error is about time.
        now: Option<u64>,
    },
    /// The announce could not be signed (the key cannot sign).
    #[error("signing the announce")]
    Sign(#[source] Box<chorus_core::announce::AnnounceError>),
    /// The tracker's answer is not the JSON the protocol names.
    #[error("the tracker at {edge} sent a malformed answer")]
    Malformed {
        /// The edge's base URL.
        edge: BaseUrl,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// The tracker takes at most this many addresses per peer.
pub use chorus_core::api::MAX_ADDRS;
/// Most relays taken from one answer.
pub use chorus_core::api::MAX_RELAYS;
/// …and this many tracks per announce.
pub use chorus_core::api::MAX_TRACKS_PER_ANNOUNCE as MAX_TRACKS;

fn request(method: http::Method, path: &str, token: Option<&str>, body: bytes::Bytes) -> http::Request<bytes::Bytes> {
    let mut req = http::Request::new(body);
    *req.method_mut() = method;
    // Paths are built here from validated ids: they always parse.
    *req.uri_mut() = http::Uri::try_from(path).unwrap_or_default();
    let headers = req.headers_mut();
    if let Some(v) = token.and_then(|t| http::HeaderValue::try_from(format!("Bearer {t}")).ok()) {
        headers.insert(http::header::AUTHORIZATION, v);
    }
    if !req.body().is_empty() {
        req.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    }
    req
}

/// Sends `req` to the tracker at `edge`; an answer other than 2xx is an error.
async fn ask(
    http: &HttpClient,
    edge: &BaseUrl,
    req: http::Request<bytes::Bytes>,
) -> Result<bytes::Bytes, TrackerError> {
    let failed = |source| TrackerError::Request { edge: edge.clone(), source };
    let mut conn = http.connect(edge, false).await.map_err(failed)?;
    let r = conn.send(req).await.map_err(failed)?;
    if r.status().is_success() {
        return Ok(r.into_body());
    }
    let body = r.body();
    let (error, now) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => (e.error, e.now),
        Err(_) => (String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(), None),
    };
    let error = error.chars().take(200).collect();
    Err(TrackerError::Refused { edge: edge.clone(), status: r.status(), error, now })
}

/// What a node's announcer carries from one round to the next: the tracks it provides on
/// Kademlia, and per tracker what it has named ([`Holdings`]).
#[derive(Debug, Clone, Default)]
pub struct Announced {
    provided: Vec<TrackId>,
    per_edge: std::collections::HashMap<String, Holdings>,
}

/// How a round of announces went, which sets when the next comes (see [`every_reannounce`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// Every tracker took it: the next in one period.
    Taken,
    /// Every tracker took it, and held tracks wait their first turn: the next [`SOON`].
    More,
    /// Some tracker refused it or did not answer: again soon, backing off.
    Refused,
}

/// Announces to every one of `edges`' trackers what this node plays ([`crate::Peer::playing`])
/// and what `store` holds, as [`Holdings`] plans it per tracker (each holding named once, then
/// every [`HELD_REANNOUNCE`](chorus_core::api::HELD_REANNOUNCE), those a tracker did not list
/// much later, evicted ones dropped), provides them on Kademlia and withdraws from it those no
/// longer held; reports each tracker's answer as `report` says, and returns the state for the
/// next round and how this one went. A consume-only node announces nothing.
pub async fn announce_held(
    http: &HttpClient,
    peer: &crate::Peer,
    store: std::sync::Arc<dyn crate::Store>,
    edges: &[BaseUrl],
    token: Option<&str>,
    mut state: Announced,
    report: Report,
) -> (Announced, Round) {
    if peer.consume_only() {
        return (state, Round::Taken);
    }
    // A directory listing: on the blocking pool.
    let tracks = tokio::task::spawn_blocking(move || store.tracks()).await.unwrap_or_default();
    for gone in state.provided.iter().filter(|t| !tracks.contains(t)) {
        peer.unprovide(gone.clone());
    }
    for t in &tracks {
        peer.provide(t.clone());
    }
    state.provided.clone_from(&tracks);
    let playing: Vec<TrackId> = peer.playing().into_iter().filter(|t| tracks.contains(t)).collect();
    let addrs = peer.public_addrs().await;
    let circuit = addrs.iter().any(|a| a.iter().any(|p| matches!(p, libp2p::multiaddr::Protocol::P2pCircuit)));
    let mut round = Round::Taken;
    for edge in edges {
        let holdings = state.per_edge.entry(edge.to_string()).or_default();
        let plan = holdings.plan(std::time::Instant::now(), &playing, &tracks);
        let r = announce(http, edge, peer.identity(), &addrs, &plan, token).await;
        match &r {
            Ok(answer) => {
                holdings.taken(std::time::Instant::now(), &plan, &answer.unlisted, &answer.unknown);
                if plan.more && round == Round::Taken {
                    round = Round::More;
                }
            }
            Err(_) => round = Round::Refused,
        }
        // A node that only announces (a seeder) learns the edge's relays from no answer of its
        // own: when an announce fails and it holds no circuit (behind a NAT, its addresses are
        // not the one the edge sees), one peer query tells it the relays, and the node reserves
        // a circuit on one once it seems unreachable.
        // A 400 to this node's own well-formed announce means none of its addresses is on the
        // address the edge saw: it is behind a NAT.
        if !circuit
            && matches!(&r, Err(TrackerError::Refused { status, .. }) if *status == http::StatusCode::BAD_REQUEST)
        {
            peer.seen_elsewhere();
        }
        if r.is_err()
            && !circuit
            && let Some(t) = tracks.first()
            && let Ok(Ok(answer)) = tokio::time::timeout(Duration::from_secs(5), peers(http, edge, t, token)).await
        {
            peer.add_relays(answer.relays);
        }
        let (played, held, dropped) = (plan.tracks.len(), plan.held.len(), plan.dropped.len());
        match (r, report) {
            (Ok(a), Report::Operator) => {
                tracing::info!(%edge, played, held, dropped, unlisted = a.unlisted.len(), unknown = a.unknown.len(), "announced");
            }
            (Ok(a), Report::Quiet) => {
                tracing::debug!(%edge, played, held, dropped, unlisted = a.unlisted.len(), unknown = a.unknown.len(), "announced");
            }
            (Err(e), Report::Operator) => tracing::warn!(%edge, error = %Chain(&e), "announce failed; will retry"),
            (Err(e), Report::Quiet) => tracing::debug!(%edge, error = %Chain(&e), "announce failed; will retry"),
        }
    }
    (state, round)
}

/// Tells every one of `edges`' trackers at once that this node plays `track` (a client
/// whose first segment of it is in: listeners who start it next find this one without waiting
/// for the next round). Best effort.
pub async fn announce_playing(
    http: &HttpClient,
    peer: &crate::Peer,
    edges: &[BaseUrl],
    token: Option<&str>,
    track: &TrackId,
) {
    if peer.consume_only() {
        return;
    }
    peer.play(track.clone());
    peer.provide(track.clone());
    let addrs = peer.public_addrs().await;
    let plan = Plan::playing(vec![track.clone()]);
    for edge in edges {
        if let Err(e) = announce(http, edge, peer.identity(), &addrs, &plan, token).await {
            tracing::debug!(%edge, error = %Chain(&e), "announce failed; the next round retries");
        }
    }
}

/// How an announcer reports each tracker's answer (a failed announce is retried at the next
/// round either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// A library inside someone's application (the client): every answer at debug level, for
    /// the application to turn on.
    Quiet,
    /// An operator's node (`chorus peer`, the demo's seeders): successes at info, failures at
    /// warn.
    Operator,
}

/// The first wait after a round that not every tracker took; it doubles after each such round,
/// up to [`REANNOUNCE`](chorus_core::api::REANNOUNCE).
pub const RETRY_FIRST: Duration = Duration::from_secs(1);

/// The one re-announce schedule of every announcer (the client, `chorus peer`, the demo's
/// seeders): `round(state)` at once when `at_once` (else after one period), then every
/// [`REANNOUNCE`](chorus_core::api::REANNOUNCE), until `stop` resolves or a round returns
/// `None`. A round returns the state it carries to the next (what was announced) and how it
/// went ([`Round`]): after one that some tracker refused or did not answer, the next comes
/// [`RETRY_FIRST`] later, doubling while they keep failing (a node that announced before it
/// knew all its addresses, or an edge restarting, is listed within seconds rather than a
/// period later); while a large cache goes in, [`SOON`] later. `stop` ends a round in progress too: a dead edge can hold one for its whole
/// request timeout.
pub async fn every_reannounce<T, S, R, F>(at_once: bool, stop: S, mut state: T, mut round: R)
where
    S: std::future::Future<Output = ()>,
    R: FnMut(T) -> F,
    F: std::future::Future<Output = Option<(T, Round)>>,
{
    tokio::pin!(stop);
    let mut wait = if at_once { Duration::ZERO } else { chorus_core::api::REANNOUNCE };
    let mut retry = RETRY_FIRST;
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(wait) => {}
        }
        let taken;
        (state, taken) = tokio::select! {
            () = &mut stop => return,
            next = round(state) => match next {
                Some(s) => s,
                None => return,
            },
        };
        (wait, retry) = match taken {
            Round::Taken => (chorus_core::api::REANNOUNCE, RETRY_FIRST),
            Round::More => (SOON, RETRY_FIRST),
            Round::Refused => (retry, (retry * 2).min(chorus_core::api::REANNOUNCE)),
        };
    }
}

/// Addresses worth announcing: not unspecified (`0.0.0.0`), at most [`MAX_ADDRS`], each
/// ending in `/p2p/<peer>`.
#[must_use]
pub fn announceable(peer: PeerId, addrs: &[Multiaddr]) -> Vec<Multiaddr> {
    addrs
        .iter()
        .filter(|a| !a.iter().any(|p| matches!(p, libp2p::multiaddr::Protocol::Ip4(ip) if ip.is_unspecified())))
        .take(MAX_ADDRS)
        .map(|a| a.clone().with_p2p(peer).unwrap_or_else(|a| a))
        .collect()
}

/// A relay's addresses worth offering to clients: [`announceable`], without loopback ones when
/// there are others (a relay that offered `127.0.0.1` first cost every node behind a NAT a
/// failed reservation and a 10 s wait before the next).
#[must_use]
pub fn relay_offer(peer: PeerId, addrs: &[Multiaddr]) -> Vec<Multiaddr> {
    use libp2p::multiaddr::Protocol;
    let loopback = |a: &Multiaddr| {
        a.iter().any(|p| {
            matches!(p, Protocol::Ip4(ip) if ip.is_loopback()) || matches!(p, Protocol::Ip6(ip) if ip.is_loopback())
        })
    };
    let all = announceable(peer, addrs);
    let others = all.iter().any(|a| !loopback(a));
    all.into_iter().filter(|a| !(others && loopback(a))).collect()
}

/// Tells the tracker at `edge` that the peer of `key`, reachable at `addrs`, plays, holds and
/// no longer holds the tracks of `plan` (at most [`MAX_TRACKS`] in all), in an announce signed
/// with `key` for that edge and the current time, and returns the tracker's answer (which held
/// tracks it did not list). An edge whose clock differs by more than the window answers with
/// its time; the announce is then signed again once by the edge's clock.
///
/// # Errors
/// [`TrackerError`] (the caller logs it and tries again later).
pub async fn announce(
    http: &HttpClient,
    edge: &BaseUrl,
    key: &Keypair,
    addrs: &[Multiaddr],
    plan: &Plan,
    token: Option<&str>,
) -> Result<AnnounceAnswer, TrackerError> {
    let peer = key.public().to_peer_id();
    let tracks: Vec<TrackId> = plan.tracks.iter().take(MAX_TRACKS).cloned().collect();
    let held: Vec<TrackId> = plan.held.iter().take(MAX_TRACKS - tracks.len()).cloned().collect();
    let dropped = plan.dropped.iter().take(MAX_TRACKS - tracks.len() - held.len()).cloned().collect();
    let mut announce = Announce {
        peer_id: peer.to_string(),
        addrs: announceable(peer, addrs).iter().map(ToString::to_string).collect(),
        tracks,
        held,
        dropped,
        timestamp: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        edge: chorus_core::announce::edge_name(edge),
    };
    let local = announce.timestamp;
    let mut resigned = false;
    loop {
        let signed = SignedAnnounce::sign(key, &announce).map_err(|e| TrackerError::Sign(Box::new(e)))?;
        // A struct of one string: serialising it cannot fail.
        let body = serde_json::to_vec(&signed).unwrap_or_default();
        match ask(http, edge, request(http::Method::POST, &Route::Announce.to_string(), token, body.into())).await {
            Err(TrackerError::Refused { status: http::StatusCode::UNAUTHORIZED, now: Some(now), .. })
                if !resigned && now.abs_diff(local) <= MAX_CLOCK_STEP.as_secs() =>
            {
                resigned = true;
                announce.timestamp = now;
            }
            // This very announce (a retry of one whose answer was lost) or a newer one of ours
            // is recorded: what we wanted.
            Err(TrackerError::Refused { status: http::StatusCode::CONFLICT, .. }) => {
                return Ok(AnnounceAnswer::default());
            }
            // An edge of an earlier release answers 204, with no body.
            Ok(body) if body.is_empty() => return Ok(AnnounceAnswer::default()),
            Ok(body) => {
                return serde_json::from_slice(&body)
                    .map_err(|source| TrackerError::Malformed { edge: edge.clone(), source });
            }
            Err(e) => return Err(e),
        }
    }
}

/// How far an edge's clock may be from ours for an announce to be signed again by its time:
/// beyond a day one of the two clocks is broken, and signing for a time far from ours would
/// hand a hostile edge an announce to replay long after (or before) we made it.
pub const MAX_CLOCK_STEP: Duration = Duration::from_secs(24 * 3600);

/// A tracker's answer: peers holding a track, and the relays the edge offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeersAnswer {
    /// At most 10 peers, live ones first, with their addresses.
    pub peers: Vec<(PeerId, Vec<Multiaddr>)>,
    /// Circuit relays (`…/p2p/RELAY_ID`) for peers that cannot be reached directly.
    pub relays: Vec<Multiaddr>,
}

/// Peers the tracker at `edge` knows for `track` (live ones first, at most 10), with their
/// addresses, and the edge's relays. Entries that do not parse are skipped.
///
/// # Errors
/// [`TrackerError`].
pub async fn peers(
    http: &HttpClient,
    edge: &BaseUrl,
    track: &TrackId,
    token: Option<&str>,
) -> Result<PeersAnswer, TrackerError> {
    let path = route::peers(track);
    let body = ask(http, edge, request(http::Method::GET, &path, token, bytes::Bytes::new())).await?;
    let answer: TrackerAnswer =
        serde_json::from_slice(&body).map_err(|source| TrackerError::Malformed { edge: edge.clone(), source })?;
    Ok(parse_answer(answer))
}

/// The entries of `answer` that name a valid peer id and multiaddrs, within the bounds.
fn parse_answer(answer: TrackerAnswer) -> PeersAnswer {
    let peers = answer
        .peers
        .into_iter()
        .take(MAX_PEERS_TAKEN)
        .filter_map(|p| {
            let id: PeerId = p.peer_id.parse().ok()?;
            Some((id, p.addrs.iter().take(MAX_ADDRS).filter_map(|a| a.parse().ok()).collect()))
        })
        .collect();
    let relays = answer
        .relays
        .iter()
        .filter_map(|a| a.parse::<Multiaddr>().ok())
        .filter(|a| matches!(a.iter().last(), Some(libp2p::multiaddr::Protocol::P2p(_))))
        .take(MAX_RELAYS)
        .collect();
    PeersAnswer { peers, relays }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_round_some_tracker_refused_comes_again_soon_backing_off() {
        use chorus_core::api::REANNOUNCE;
        // Rounds 1-3 refused somewhere, 4 and 5 taken, 6 refused; the state counts the rounds.
        let start = tokio::time::Instant::now();
        let times = std::sync::Mutex::new(Vec::new());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let stop = async move {
            let _ = stop_rx.await;
        };
        let mut stop_tx = Some(stop_tx);
        every_reannounce(true, stop, 0u32, |n| {
            times.lock().unwrap().push(start.elapsed());
            if n == 5 {
                drop(stop_tx.take());
            }
            async move { Some((n + 1, if matches!(n + 1, 4 | 5) { Round::Taken } else { Round::Refused })) }
        })
        .await;
        let s = Duration::from_secs;
        assert_eq!(
            *times.lock().unwrap(),
            [s(0), s(1), s(3), s(7), s(7) + REANNOUNCE, s(7) + REANNOUNCE * 2],
            "at once, then 1 s, 2 s, 4 s after refusals, then the period"
        );
    }

    #[test]
    fn answers_are_bounded_and_relays_must_name_their_peer() {
        let peer = PeerId::random();
        let relay = format!("/ip4/10.0.0.1/tcp/4001/p2p/{peer}");
        let v = serde_json::json!({
            "peers": [{"peer_id": peer.to_string(), "addrs": ["/ip4/10.0.0.2/tcp/1", "not an address"]},
                      {"peer_id": "not a peer id", "addrs": []}],
            "relays": [relay, "/ip4/10.0.0.1/tcp/4001", 7],
        });
        let a = parse_answer(serde_json::from_value(v).unwrap());
        assert_eq!(a.peers, vec![(peer, vec!["/ip4/10.0.0.2/tcp/1".parse().unwrap()])]);
        assert_eq!(a.relays, vec![relay.parse::<Multiaddr>().unwrap()]);
        let empty = serde_json::from_value(serde_json::json!({"peers": []})).unwrap();
        assert_eq!(parse_answer(empty), PeersAnswer::default());
    }

    #[test]
    fn announced_addresses_are_dialable_bounded_and_name_the_peer() {
        let peer = PeerId::random();
        let mut addrs: Vec<Multiaddr> = vec!["/ip4/0.0.0.0/tcp/4001".parse().unwrap()];
        addrs.extend((0..10).map(|i| format!("/ip4/10.1.1.{i}/tcp/4001").parse::<Multiaddr>().unwrap()));
        let out = announceable(peer, &addrs);
        assert_eq!(out.len(), MAX_ADDRS);
        assert!(out.iter().all(|a| !a.to_string().starts_with("/ip4/0.0.0.0")));
        assert!(out.iter().all(|a| a.to_string().ends_with(&format!("/p2p/{peer}"))));
        assert_eq!(out[0].to_string(), format!("/ip4/10.1.1.0/tcp/4001/p2p/{peer}"));
    }

    #[test]
    fn a_relay_offers_loopback_only_when_it_has_nothing_else() {
        let peer = PeerId::random();
        let a = |s: &str| s.parse::<Multiaddr>().unwrap();
        let both = [a("/ip4/127.0.0.1/tcp/4001"), a("/ip4/10.77.3.2/tcp/4001"), a("/ip6/::1/udp/4001/quic-v1")];
        assert_eq!(relay_offer(peer, &both), vec![a(&format!("/ip4/10.77.3.2/tcp/4001/p2p/{peer}"))]);
        let alone = [a("/ip4/0.0.0.0/tcp/4001"), a("/ip4/127.0.0.1/tcp/4001")];
        assert_eq!(relay_offer(peer, &alone), vec![a(&format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer}"))]);
    }
}
