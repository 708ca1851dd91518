//! Moving ranges to their new owners during a membership change, and cleaning up after it.
//!
//! A node that gains spans in a moving ring syncs each of them from every current holder that
//! is not written off as dead:
//! 1. it waits until every reachable node serves the moving ring, so no write made under the old
//!    ring can land after the snapshot below (writes under the moving ring reach the new owners
//!    directly: joint quorum);
//! 2. it waits until no node holds hints for the span (except hints for dead nodes): a write a
//!    sloppy quorum acknowledged is then on a current holder;
//! 3. it streams the span from the first holder (one contiguous scan of token-prefixed keys, in
//!    chunks, through the storage writer and so the merge rule, rate-limited), resuming after a
//!    restart of either side from the last key it persisted;
//! 4. it pulls the differences from every other holder by Merkle digest (anti-entropy, pull only),
//!    so a write that reached only W of the holders is not missed;
//! 5. it marks the span done, durably.
//!
//! The first voting node that answers polls every gaining node's progress and, once all are
//! done, proposes the finished ring. A node serving a finished ring drops the records of spans
//! it no longer holds.

use std::time::{Duration, Instant};

use bytes::Bytes;
use dynakv_core::{Record, codec};
use dynakv_proto::v1;
use dynakv_ring::{NodeState as Membership, PlanError, Ring, key_token};
use dynakv_storage::{
    Space, StorageError, Write, WriteOutcome, next_page_start, split_stored_key, stored_key,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tonic::Status;

use super::{meta, paxos};
use crate::anti_entropy::Span;
use crate::peers::Peer;
use crate::service::{NodeState, owner_hash, storage_status};
use crate::topology::Topology;

/// Streamed chunks queued to the storage writer while the next is received, at most.
const CHUNKS_APPLYING: usize = 2;
/// Records per streamed chunk, at most; a chunk is also cut at [`CHUNK_BYTES`].
const CHUNK_RECORDS: usize = 2048;
/// Value bytes per streamed chunk, at most (one record may exceed it alone).
const CHUNK_BYTES: usize = 2 * 1024 * 1024;
/// How often a stream's progress is persisted (and so shown): an fsync per chunk would cost
/// more than the chunk. A restart resumes from the last persisted key and streams the rest
/// again, which the merge rule makes harmless.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// This node's part in the move of one ring version.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Moves {
    /// The moving ring version the spans belong to.
    pub version: u64,
    /// The spans this node gains in it.
    pub spans: Vec<SpanMove>,
    /// The last ring version whose clean-up (dropping spans no longer held) is done.
    pub cleaned: u64,
}

/// One span a node gains, and how far its sync is.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SpanMove {
    /// Exclusive lower bound.
    pub start: u64,
    /// Inclusive upper bound.
    pub end: u64,
    /// The holders to sync from: the span's current replicas, less dead ones.
    pub holders: Vec<String>,
    /// The full stream from one holder is done.
    pub streamed: bool,
    /// Where the stream resumes: the token and key of the last record applied.
    pub after: Option<(u64, Vec<u8>)>,
    /// Holders whose records this node has: the streamed one, then those pulled from.
    pub synced: Vec<String>,
    /// Every holder is synced.
    pub done: bool,
    /// Records received so far.
    pub keys: u64,
    /// Value bytes received so far.
    pub bytes: u64,
    /// Records in the span on the first holder, when asked.
    pub keys_expected: u64,
    /// Why the span is not moving right now (empty when it is, or is done).
    #[serde(skip)]
    pub waiting: String,
}

impl SpanMove {
    fn span(&self) -> Span {
        Span { start: self.start, end: self.end }
    }
}

/// Serves `MoveStatus`.
pub fn status(state: &NodeState) -> v1::MoveStatusReply {
    let version = state.ring_version();
    let moves = state.membership.moves.lock();
    let ranges = if moves.version == version {
        moves
            .spans
            .iter()
            .map(|s| v1::RangeProgress {
                span: Some(s.span().into()),
                done: s.done,
                keys: s.keys,
                bytes: s.bytes,
                keys_expected: s.keys_expected,
                waiting: s.waiting.clone(),
            })
            .collect()
    } else {
        Vec::new()
    };
    v1::MoveStatusReply { node_id: state.id.clone(), ring_version: version, ranges }
}

/// One pass of the move: sync this node's gains, finish the move if every new owner is done,
/// or clean up after a finished one.
pub async fn step(state: &NodeState) {
    let topology = state.topology();
    if !topology.ring.is_moving() {
        clean_up(state, &topology).await;
        return;
    }
    if let Some(me) = topology.me {
        sync_gains(state, &topology, me).await;
    }
    finish_if_done(state, &topology).await;
}

/// Persists the move progress (logged, not fatal: a lost record of progress only repeats work),
/// off the async runtime: it fsyncs twice.
async fn save(state: &NodeState, moves: &Moves) {
    let (meta, moves) = (state.membership.meta.clone(), moves.clone());
    let saved = tokio::task::spawn_blocking(move || meta.store(meta::MOVES, &moves)).await;
    if let Err(e) = saved.map_err(std::io::Error::other).and_then(|saved| saved) {
        tracing::warn!(node = %state.id, error = %e, "cannot persist move progress");
    }
}

/// Updates span `i` of the current move: persisted first, then shown (`MoveStatus` never
/// reports progress a crash could lose).
async fn update(state: &NodeState, version: u64, i: usize, change: impl FnOnce(&mut SpanMove)) {
    let mut next = state.membership.moves.lock().clone();
    // Only the membership task changes the progress, so nothing changes it between the clone
    // and the swap below.
    if next.version != version || i >= next.spans.len() {
        return;
    }
    change(&mut next.spans[i]);
    save(state, &next).await;
    let mut moves = state.membership.moves.lock();
    if moves.version == version {
        *moves = next;
    }
}

/// Changes span `i` of the current move in memory only, for what is not progress (shown at
/// once, persisted with the next [`update`]).
fn note(state: &NodeState, version: u64, i: usize, change: impl FnOnce(&mut SpanMove)) {
    let mut moves = state.membership.moves.lock();
    if moves.version == version && i < moves.spans.len() {
        change(&mut moves.spans[i]);
    }
}

/// Notes why span `i` waits (not persisted).
fn wait(state: &NodeState, version: u64, i: usize, why: String) {
    let mut moves = state.membership.moves.lock();
    if moves.version == version && i < moves.spans.len() && moves.spans[i].waiting != why {
        tracing::info!(node = %state.id, version, start = moves.spans[i].start, end = moves.spans[i].end, waiting = %why, "range move waits");
        moves.spans[i].waiting = why;
    }
}

/// Syncs every span this node gains in the moving ring that is not done yet.
async fn sync_gains(state: &NodeState, topology: &Topology, me: usize) {
    let ring = &topology.ring;
    let version = ring.version();
    let (spans, fresh) = {
        let mut moves = state.membership.moves.lock();
        if moves.version != version {
            let spans = ring
                .gains(me)
                .into_iter()
                .map(|gain| SpanMove {
                    start: gain.start,
                    end: gain.end,
                    holders: gain
                        .holders
                        .iter()
                        .filter(|&&h| ring.nodes()[h].state != Membership::Dead)
                        .map(|&h| ring.nodes()[h].id.clone())
                        .collect(),
                    ..SpanMove::default()
                })
                .collect();
            *moves = Moves { version, spans, cleaned: moves.cleaned };
            (moves.spans.clone(), Some(moves.clone()))
        } else {
            (moves.spans.clone(), None)
        }
    };
    if let Some(snapshot) = fresh {
        save(state, &snapshot).await;
        tracing::info!(node = %state.id, version, spans = snapshot.spans.len(), "gaining ranges in a ring change");
    }
    let pending: Vec<usize> = (0..spans.len()).filter(|&i| !spans[i].done).collect();
    if pending.is_empty() {
        return;
    }

    // 1. Every reachable node serves this ring (or a newer one).
    for (_, peer) in topology.peers() {
        if let Ok(health) =
            peer.call(|mut c| async move { c.health(v1::HealthRequest {}).await }).await
            && health.ring_version < version
        {
            let why = format!("{} still serves ring version {}", peer.id, health.ring_version);
            pending.iter().for_each(|&i| wait(state, version, i, why.clone()));
            return;
        }
    }

    // 2. No node holds hints for the spans, but for dead nodes.
    let dead: Vec<String> =
        ring.nodes().iter().filter(|n| n.state == Membership::Dead).map(|n| n.id.clone()).collect();
    let dead_hashes: Vec<u64> = dead.iter().map(|id| owner_hash(id)).collect();
    let asked: Vec<Span> = pending.iter().map(|&i| spans[i].span()).collect();
    let mut held = match crate::handoff::hinted_spans(state, &asked, &dead_hashes).await {
        Ok(held) => held.into_iter().map(|h| h.then(|| state.id.clone())).collect::<Vec<_>>(),
        Err(e) => {
            tracing::warn!(node = %state.id, error = %e, "cannot read hints");
            return;
        }
    };
    for (_, peer) in topology.peers() {
        let request = v1::HintSpansRequest {
            spans: asked.iter().map(|&s| s.into()).collect(),
            ignore_owners: dead.clone(),
        };
        match peer.call(|mut c| async move { c.hint_spans(request).await }).await {
            Ok(reply) if reply.held.len() == asked.len() => {
                for (h, theirs) in held.iter_mut().zip(reply.held) {
                    if theirs && h.is_none() {
                        *h = Some(peer.id.clone());
                    }
                }
            }
            // A node that cannot be asked is not waited for: a write it holds a hint for was
            // also acknowledged by a holder unless every acknowledgement came from a stand-in,
            // and when it returns its hints still reach the key's replicas (a hint whose owner
            // no longer holds the key goes to the key's replicas in the live ring).
            _ => {}
        }
    }

    // 3 and 4, span by span.
    let rate = ring.config().membership.stream_mb_per_sec.max(1) * 1024 * 1024;
    for (k, &i) in pending.iter().enumerate() {
        if state.stopping.is_cancelled() || state.ring_version() != version {
            return;
        }
        if let Some(holder) = &held[k] {
            wait(state, version, i, format!("{holder} still holds hints for the range"));
            continue;
        }
        let span = spans[i].clone();
        let peer_of =
            |id: &str| ring.node_index(id).ok().and_then(|index| topology.peer(index)).cloned();
        // What this pass adds to the span, persisted once at its end: a crash before then
        // repeats the stream from its last saved key and the pulls, which the merge rule makes
        // harmless.
        let mut streamed = None;
        if !span.streamed {
            let Some(first) =
                span.holders.iter().filter_map(|id| peer_of(id)).find(|p| p.health.is_up())
            else {
                wait(state, version, i, "no holder of the range answers".into());
                continue;
            };
            match stream(state, &first, version, i, &span, rate).await {
                Ok(progress) => streamed = Some((first.id.clone(), progress)),
                Err(why) => {
                    wait(state, version, i, format!("streaming from {}: {why}", first.id));
                    continue;
                }
            }
        }
        let mut synced = span.synced.clone();
        synced.extend(streamed.as_ref().map(|(id, _)| id.clone()));
        let (mut pulled, mut received, mut all) = (Vec::new(), 0, true);
        for holder in &span.holders {
            if synced.contains(holder) {
                continue;
            }
            let Some(peer) = peer_of(holder) else { continue };
            match crate::anti_entropy::pull_span(state, &peer, span.span()).await {
                Ok(keys) => {
                    received += keys;
                    pulled.push(holder.clone());
                }
                Err(why) => {
                    wait(state, version, i, format!("pulling differences from {holder}: {why}"));
                    all = false;
                }
            }
        }
        if streamed.is_none() && pulled.is_empty() && !all {
            continue;
        }
        update(state, version, i, |s| {
            if let Some((id, (keys, bytes, last))) = streamed {
                s.keys += keys;
                s.bytes += bytes;
                if last.is_some() {
                    s.after = last;
                }
                s.streamed = true;
                s.synced.push(id);
            }
            s.keys += received;
            s.synced.extend(pulled);
            if all {
                s.done = true;
                s.waiting.clear();
            }
        })
        .await;
    }
}

/// Streams span `i` from `peer`, from where it stopped, applying each chunk through the storage
/// writer (the merge rule) as one message; keeps to `rate` bytes per second. Returns what it
/// applied since it last persisted progress, for the caller to persist with the span's sync; a
/// failure persists it here.
async fn stream(
    state: &NodeState,
    peer: &Peer,
    version: u64,
    i: usize,
    span: &SpanMove,
    rate: u64,
) -> Result<Progress, String> {
    if span.keys_expected == 0 {
        // The holder's kept count, dead records included: an estimate, so no scan is worth it.
        let request = v1::DigestRequest { spans: vec![span.span().into()], all_records: true };
        if let Ok(reply) = peer.call(|mut c| async move { c.digest(request).await }).await {
            let expected = reply.counts.first().copied().unwrap_or_default();
            note(state, version, i, |s| s.keys_expected = expected);
        }
    }
    let (after_token, after) = span.after.clone().unwrap_or_default();
    let request =
        v1::StreamSpanRequest { span: Some(span.span().into()), after: after.into(), after_token };
    let mut stream =
        peer.raw().stream_span(request).await.map_err(|s| s.message().to_string())?.into_inner();
    let started = Instant::now();
    let mut sent = 0u64;
    // Applied but not yet persisted: records, bytes, and the last key.
    let mut unsaved: Progress = (0, 0, None);
    let mut saved_at = Instant::now();
    // Chunks queued to the storage writer and not answered yet, oldest first.
    let mut applying = std::collections::VecDeque::new();
    // False once a chunk failed to store: nothing after it counts as applied.
    let mut counting = true;
    let failure = loop {
        if saved_at.elapsed() >= PROGRESS_EVERY {
            save_progress(state, version, i, std::mem::take(&mut unsaved)).await;
            saved_at = Instant::now();
        }
        let next = tokio::select! {
            _ = state.stopping.cancelled() => return Err("the node is stopping".into()),
            next = tokio::time::timeout(Duration::from_secs(30), stream.next()) => next,
        };
        let chunk = match next {
            Err(_) => break "the holder sent nothing for 30 s".to_string(),
            Ok(None) => break String::new(),
            Ok(Some(Err(status))) => break status.message().to_string(),
            Ok(Some(Ok(chunk))) => chunk,
        };
        if state.ring_version() != version {
            break "the ring changed".into();
        }
        let mut writes = Vec::with_capacity(chunk.records.len());
        let mut bytes = 0u64;
        let mut last = None;
        for streamed in chunk.records {
            let Some(record) = streamed.record.and_then(|r| Record::try_from(r).ok()) else {
                continue;
            };
            state.clock.observe(record.version.timestamp);
            bytes +=
                record.value.as_ref().map_or(0, |v| v.len() as u64) + streamed.key.len() as u64;
            let token = key_token(&streamed.key);
            writes.push(Write::record(token, &streamed.key, record));
            last = Some((token, streamed.key));
        }
        // The chunk goes to the writer as one message, while the next one is received.
        let count = writes.len() as u64;
        let last = last.map(|(token, key)| (token, key.to_vec()));
        applying.push_back((state.store.write_batch(writes), (count, bytes, last)));
        if applying.len() > CHUNKS_APPLYING
            && let Some((outcomes, chunk)) = applying.pop_front()
            && let Err(why) = applied(state, outcomes.await, chunk, &mut unsaved)
        {
            counting = false;
            break why;
        }
        sent += bytes;
        let due = Duration::from_secs_f64(sent as f64 / rate as f64);
        if let Some(ahead) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(ahead).await;
        }
    };
    let mut failure = (!failure.is_empty()).then_some(failure);
    // Chunks queued before the end are applied in order: count each until one fails.
    while let Some((outcomes, chunk)) = applying.pop_front() {
        let outcomes = outcomes.await;
        if counting && let Err(why) = applied(state, outcomes, chunk, &mut unsaved) {
            counting = false;
            failure = Some(why);
        }
    }
    match failure {
        None => Ok(unsaved),
        Some(why) => {
            save_progress(state, version, i, unsaved).await;
            Err(why)
        }
    }
}

/// Persists the progress of a stream that is not finished.
async fn save_progress(state: &NodeState, version: u64, i: usize, progress: Progress) {
    let (keys, bytes, last) = progress;
    update(state, version, i, |s| {
        s.keys += keys;
        s.bytes += bytes;
        if last.is_some() {
            s.after = last;
        }
        s.waiting.clear();
    })
    .await;
}

/// Records, value bytes and the last key of streamed chunks.
type Progress = (u64, u64, Option<(u64, Vec<u8>)>);

/// Adds a streamed chunk the store has answered (`outcomes`; its records, bytes and last key in
/// `chunk`) to `unsaved`, or says why it was not stored.
fn applied(
    state: &NodeState,
    outcomes: Vec<Result<WriteOutcome, StorageError>>,
    chunk: Progress,
    unsaved: &mut Progress,
) -> Result<(), String> {
    if let Some(e) = outcomes.into_iter().find_map(Result::err) {
        return Err(format!("local storage: {e}"));
    }
    let (count, bytes, last) = chunk;
    unsaved.0 += count;
    unsaved.1 += bytes;
    if last.is_some() {
        unsaved.2 = last;
    }
    crate::metrics::moved(&state.label, count, bytes);
    Ok(())
}

/// Serves `StreamSpan`: pages through the span's stored records after the resume point and
/// sends them in chunks, until the span ends, the caller hangs up or the node stops.
pub fn serve_stream(
    state: &std::sync::Arc<NodeState>,
    request: v1::StreamSpanRequest,
) -> Result<futures::stream::BoxStream<'static, Result<v1::StreamChunk, Status>>, Status> {
    let span: Span =
        request.span.ok_or_else(|| Status::invalid_argument("stream request has no span"))?.into();
    let resume = (!request.after.is_empty())
        .then(|| next_page_start(&stored_key(request.after_token, &request.after)));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<v1::StreamChunk, Status>>(4);
    let state = state.clone();
    state.tasks.clone().spawn(async move {
        for (from, to) in span.key_ranges() {
            let mut from = match &resume {
                Some(resume) if to.as_ref().is_some_and(|to| resume >= to) => continue,
                Some(resume) if *resume > from => resume.clone(),
                _ => from,
            };
            loop {
                let page = tokio::select! {
                    _ = state.stopping.cancelled() => return,
                    page = state.store.scan(Space::Records, from.clone(), to.clone(), CHUNK_RECORDS) => page,
                };
                let page = match page {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = tx.send(Err(storage_status(e))).await;
                        return;
                    }
                };
                let Some((last, _)) = page.last() else { break };
                from = next_page_start(last);
                let full = page.len() == CHUNK_RECORDS;
                let mut records = Vec::with_capacity(page.len());
                let mut bytes = 0;
                for (stored, value) in &page {
                    let (Some(_), Ok(record)) = (split_stored_key(stored), codec::decode(value)) else {
                        continue;
                    };
                    bytes += value.len() + stored.len();
                    // The user key is the stored key past its 8-byte token: shared, not copied.
                    records.push(v1::StreamedRecord {
                        key: stored.slice(8..),
                        record: Some(record.into()),
                    });
                    if bytes >= CHUNK_BYTES {
                        if tx.send(Ok(v1::StreamChunk { records: std::mem::take(&mut records) })).await.is_err() {
                            return;
                        }
                        bytes = 0;
                    }
                }
                if !records.is_empty() && tx.send(Ok(v1::StreamChunk { records })).await.is_err() {
                    return;
                }
                if !full {
                    break;
                }
            }
        }
    });
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
}

/// Proposes the finished ring once every node that gains spans has synced all of them. Only the
/// first voting node that answers does so, so two nodes rarely race (Paxos makes a race safe).
async fn finish_if_done(state: &NodeState, topology: &Topology) {
    let ring = &topology.ring;
    let Some(me) = topology.me else { return };
    let lead = ring.voters().into_iter().find(|&v| {
        v == me
            || (ring.nodes()[v].state != Membership::Dead
                && topology.peer(v).is_some_and(|p| p.health.is_up()))
    });
    if lead != Some(me) {
        return;
    }
    for index in 0..ring.nodes().len() {
        let gains = ring.gains(index).len();
        if gains == 0 {
            continue;
        }
        let reply = match topology.peer(index) {
            None => status(state),
            Some(peer) => {
                match peer
                    .call(|mut c| async move { c.move_status(v1::MoveStatusRequest {}).await })
                    .await
                {
                    Ok(reply) => reply,
                    Err(_) => return,
                }
            }
        };
        if reply.ring_version != ring.version()
            || reply.ranges.len() != gains
            || !reply.ranges.iter().all(|r| r.done)
        {
            return;
        }
    }
    let finished = paxos::propose(state, |ring: &Ring| {
        ring.finished().map(|done| done.map_err(PlanError::from))
    })
    .await;
    match finished {
        Ok(Some(ring)) => {
            tracing::info!(node = %state.id, version = ring.version(), "every range moved; ring change finished")
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(node = %state.id, error = %e, "could not finish the ring change yet")
        }
    }
}

/// Drops the records of spans this node no longer holds, once per finished ring.
async fn clean_up(state: &NodeState, topology: &Topology) {
    let ring = &topology.ring;
    let version = ring.version();
    if state.membership.moves.lock().cleaned >= version {
        return;
    }
    let mut dropped = 0u64;
    // A node the ring no longer lists keeps its data for the operator to delete; the first
    // ring needs no clean-up.
    if let Some(me) = topology.me.filter(|_| version > 1) {
        let mut from = Bytes::new();
        loop {
            let page = match state
                .store
                .scan(Space::Records, from.clone(), None, CHUNK_RECORDS)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(node = %state.id, error = %e, "clean-up after a ring change failed; trying again later");
                    return;
                }
            };
            let Some((last, _)) = page.last() else { break };
            from = next_page_start(last);
            if state.ring_version() != version {
                return;
            }
            // Each removal is conditional on the version read: a record written since stays.
            let removals = page
                .into_iter()
                .filter(|(stored, _)| {
                    split_stored_key(stored).is_some_and(|(token, _)| !ring.holds(token, me))
                })
                .filter_map(|(stored, value)| {
                    let version = codec::decode_version(&value).ok()?;
                    Some(Write::remove_if(Space::Records, stored, version))
                })
                .collect();
            for outcome in state.store.write_batch(removals).await {
                match outcome {
                    Ok(outcome) => dropped += u64::from(outcome.applied),
                    Err(e) => {
                        tracing::warn!(node = %state.id, error = %e, "clean-up after a ring change failed; trying again later");
                        return;
                    }
                }
            }
        }
    }
    let snapshot = {
        let mut moves = state.membership.moves.lock();
        moves.cleaned = version;
        moves.clone()
    };
    save(state, &snapshot).await;
    if dropped > 0 {
        tracing::info!(node = %state.id, version, dropped, "dropped the records of ranges this node no longer holds");
    }
}
