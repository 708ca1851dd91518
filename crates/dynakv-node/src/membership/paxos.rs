//! Agreement on the next ring: single-decree Paxos per ring version.
//!
//! The acceptors of version v+1 are the nodes that own tokens in ring v (joining nodes do not
//! vote; dead ones count, and never answer). A proposer (the node an operator asked, or one
//! finishing a move) prepares a ballot with every acceptor; once a majority has promised, it
//! proposes the ring that the highest-ballot acceptance among the promises carried, if any (a
//! proposal that may already have been chosen), or its own. Once a majority has accepted, the
//! ring is chosen: the proposer adopts it and sends it to every node (Commit). Two proposers
//! racing for v+1 therefore never split the cluster: at most one ring is chosen for each
//! version, and the loser learns it and reports that another change won.
//!
//! An acceptor persists its promise and acceptance before it answers, so a restart never makes
//! it forget a vote.

use std::cmp::Ordering;
use std::time::Duration;

use dynakv_proto::v1;
use dynakv_ring::{PlanError, Ring};
use serde::{Deserialize, Serialize};
use tonic::Status;

use dynakv_proto::v1::replica_client::ReplicaClient;
use tonic::transport::Channel;

use super::meta;
use crate::service::NodeState;
use crate::topology::Topology;

/// Orders proposals for one version: the higher round wins, the proposer's id breaks ties.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ballot {
    /// Raised by a proposer each time it tries again.
    pub round: u64,
    /// The proposer's node id.
    pub proposer: String,
}

impl Ord for Ballot {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.round, &self.proposer).cmp(&(other.round, &other.proposer))
    }
}

impl PartialOrd for Ballot {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl From<v1::Ballot> for Ballot {
    fn from(b: v1::Ballot) -> Self {
        Ballot { round: b.round, proposer: b.proposer }
    }
}

impl From<Ballot> for v1::Ballot {
    fn from(b: Ballot) -> Self {
        v1::Ballot { round: b.round, proposer: b.proposer }
    }
}

/// An acceptor's votes for one ring version.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Acceptor {
    /// The version being decided: one above the ring the node serves.
    pub version: u64,
    /// The highest ballot promised for `version`.
    pub promised: Option<Ballot>,
    /// The ballot and ring (TOML) accepted for `version`.
    pub accepted: Option<(Ballot, String)>,
}

impl NodeState {
    /// The acceptor's votes, reset when the node's ring has moved past the version they were for.
    fn acceptor_for(&self, version: u64) -> parking_lot::MutexGuard<'_, Acceptor> {
        let mut acceptor = self.membership.acceptor.lock();
        if acceptor.version < version {
            *acceptor = Acceptor { version, ..Acceptor::default() };
        }
        acceptor
    }

    /// Paxos phase 1, as an acceptor.
    pub fn prepare(&self, request: v1::PrepareRequest) -> Result<v1::PrepareReply, Status> {
        let ballot: Ballot =
            request.ballot.ok_or_else(|| Status::invalid_argument("prepare has no ballot"))?.into();
        let mine = self.ring_version();
        let mut reply = v1::PrepareReply { ring_version: mine, ..Default::default() };
        if request.version != mine + 1 {
            if request.version > mine + 1 {
                self.membership.heard_of(request.version - 1);
            }
            return Ok(reply);
        }
        let mut acceptor = self.acceptor_for(request.version);
        if acceptor.promised.as_ref().is_none_or(|p| ballot > *p) {
            let mut next = acceptor.clone();
            next.promised = Some(ballot);
            self.membership.meta.store(meta::ACCEPTOR, &next).map_err(io_status)?;
            *acceptor = next;
            reply.promised = true;
        }
        reply.promised_ballot = acceptor.promised.clone().map(Into::into);
        if let Some((ballot, ring)) = &acceptor.accepted {
            reply.accepted_ballot = Some(ballot.clone().into());
            reply.accepted_ring = ring.clone();
        }
        Ok(reply)
    }

    /// Paxos phase 2, as an acceptor.
    pub fn accept(&self, request: v1::AcceptRequest) -> Result<v1::AcceptReply, Status> {
        let ballot: Ballot =
            request.ballot.ok_or_else(|| Status::invalid_argument("accept has no ballot"))?.into();
        let ring =
            Ring::parse(&request.ring).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mine = self.ring_version();
        let mut reply = v1::AcceptReply { ring_version: mine, ..Default::default() };
        if request.version != mine + 1 || ring.version() != request.version {
            return Ok(reply);
        }
        let mut acceptor = self.acceptor_for(request.version);
        if acceptor.promised.as_ref().is_none_or(|p| ballot >= *p) {
            let next = Acceptor {
                version: request.version,
                promised: Some(ballot.clone()),
                accepted: Some((ballot, request.ring)),
            };
            self.membership.meta.store(meta::ACCEPTOR, &next).map_err(io_status)?;
            *acceptor = next;
            reply.accepted = true;
        }
        reply.promised_ballot = acceptor.promised.clone().map(Into::into);
        Ok(reply)
    }

    /// A ring acceptance this node holds for the version after its ring, if any: a proposal
    /// that may have been chosen without this node hearing of it.
    pub fn pending_acceptance(&self) -> Option<String> {
        let acceptor = self.membership.acceptor.lock();
        (acceptor.version == self.ring_version() + 1)
            .then(|| acceptor.accepted.as_ref().map(|(_, ring)| ring.clone()))
            .flatten()
    }
}

/// Why a proposal did not produce the ring asked for.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// The change cannot be made on the ring as it is now.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Another proposal was chosen for the version first.
    #[error("another change won ring version {version}: {won}; this one was not applied")]
    Lost {
        /// The version decided.
        version: u64,
        /// What the chosen ring does.
        won: String,
    },
    /// Too few acceptors answered.
    #[error(
        "no agreement on ring version {version}: {answered} of {voters} voting nodes answered, \
         {needed} are needed"
    )]
    NoQuorum {
        /// The version being decided.
        version: u64,
        /// Acceptors that voted for the ballot.
        answered: usize,
        /// Acceptors in all.
        voters: usize,
        /// A majority of them.
        needed: usize,
    },
}

impl From<ProposeError> for Status {
    fn from(e: ProposeError) -> Self {
        match e {
            ProposeError::Plan(_) => Status::failed_precondition(e.to_string()),
            ProposeError::Lost { .. } => Status::aborted(e.to_string()),
            ProposeError::NoQuorum { .. } => Status::unavailable(e.to_string()),
        }
    }
}

/// Rounds a proposer tries before giving up.
const ATTEMPTS: usize = 6;

/// Proposes the ring `make` builds from the ring this node serves, and returns it once it is
/// chosen and adopted here (the other nodes are told at once too). `make` returning `None`
/// means there is nothing to change. A proposal found already accepted by an acceptor is
/// completed first; if that was another change, this one fails with [`ProposeError::Lost`].
pub async fn propose(
    state: &NodeState,
    make: impl Fn(&Ring) -> Option<Result<Ring, PlanError>>,
) -> Result<Option<Ring>, ProposeError> {
    let _one_at_a_time = state.membership.proposing.lock().await;
    let mut round = 1;
    let mut last = None;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            let pause = rand::random_range(20..120u64) * attempt as u64;
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        let topology = state.topology();
        let current = topology.ring.clone();
        let Some(wanted) = make(&current) else { return Ok(None) };
        let wanted = wanted?;
        let version = current.version() + 1;
        let voters = current.voters();
        let needed = voters.len() / 2 + 1;
        let ballot = Ballot { round, proposer: state.id.clone() };

        // Phase 1.
        let request = v1::PrepareRequest { version, ballot: Some(ballot.clone().into()) };
        let replies = ask_voters(
            &topology,
            &voters,
            request,
            |r| state.prepare(r),
            |mut c, r| async move { c.prepare(r).await },
        )
        .await;
        let mut promises = 0;
        let mut highest: Option<(Ballot, String)> = None;
        let mut behind = false;
        for reply in replies {
            behind |= reply.ring_version > current.version();
            if let Some(p) = &reply.promised_ballot {
                round = round.max(p.round + 1);
            }
            if !reply.promised {
                continue;
            }
            promises += 1;
            if let Some(b) = reply.accepted_ballot.filter(|_| !reply.accepted_ring.is_empty()) {
                let b = Ballot::from(b);
                if highest.as_ref().is_none_or(|(h, _)| b > *h) {
                    highest = Some((b, reply.accepted_ring));
                }
            }
        }
        if behind {
            // Some voter serves a newer ring: learn it, then judge the change against it.
            super::learn(state).await;
            continue;
        }
        last = Some(ProposeError::NoQuorum {
            version,
            answered: promises,
            voters: voters.len(),
            needed,
        });
        if promises < needed {
            continue;
        }
        let ours = wanted.to_toml();
        let value = highest.map(|(_, ring)| ring).unwrap_or_else(|| ours.clone());

        // Phase 2.
        let request =
            v1::AcceptRequest { version, ballot: Some(ballot.into()), ring: value.clone() };
        let replies = ask_voters(
            &topology,
            &voters,
            request,
            |r| state.accept(r),
            |mut c, r| async move { c.accept(r).await },
        )
        .await;
        let mut accepted = 0;
        for reply in replies {
            if let Some(p) = &reply.promised_ballot {
                round = round.max(p.round + 1);
            }
            accepted += usize::from(reply.accepted);
        }
        if accepted < needed {
            last = Some(ProposeError::NoQuorum {
                version,
                answered: accepted,
                voters: voters.len(),
                needed,
            });
            continue;
        }
        let chosen = Ring::parse(&value).map_err(PlanError::from)?;
        super::commit(state, chosen.clone()).await;
        if value != ours {
            return Err(ProposeError::Lost { version, won: describe(&current, &chosen) });
        }
        return Ok(Some(chosen));
    }
    Err(last.unwrap_or(ProposeError::NoQuorum { version: 0, answered: 0, voters: 0, needed: 1 }))
}

/// Sends `request` to every voter at once (this node's own acceptor answers through `local`),
/// and returns the replies of those that answered.
async fn ask_voters<Q, A, L, R, Fut>(
    topology: &Topology,
    voters: &[usize],
    request: Q,
    local: L,
    remote: R,
) -> Vec<A>
where
    Q: Clone,
    L: Fn(Q) -> Result<A, Status>,
    R: Fn(ReplicaClient<Channel>, Q) -> Fut + Clone,
    Fut: Future<Output = Result<tonic::Response<A>, Status>>,
{
    let calls = voters.iter().map(|&voter| {
        let (request, remote) = (request.clone(), remote.clone());
        let local = &local;
        async move {
            match topology.peer(voter) {
                None => local(request).ok(),
                Some(peer) => peer.call(|c| remote(c, request)).await.ok(),
            }
        }
    });
    futures::future::join_all(calls).await.into_iter().flatten().collect()
}

/// What `next` does to `ring`, in a few words, for error messages.
fn describe(ring: &Ring, next: &Ring) -> String {
    let mut parts = Vec::new();
    for node in next.nodes() {
        match ring.nodes().iter().find(|n| n.id == node.id) {
            None => parts.push(format!("{} added as {}", node.id, node.state)),
            Some(old) if old.state != node.state => {
                parts.push(format!("{} {} -> {}", node.id, old.state, node.state))
            }
            Some(_) => {}
        }
    }
    for node in ring.nodes() {
        if !next.nodes().iter().any(|n| n.id == node.id) {
            parts.push(format!("{} removed", node.id));
        }
    }
    if parts.is_empty() { "no node changes".to_string() } else { parts.join(", ") }
}

fn io_status(e: std::io::Error) -> Status {
    Status::unavailable(format!("cannot persist a membership vote: {e}"))
}
