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

impl Acceptor {
    /// The votes after promising `ballot`, or `None` when an equal or higher ballot was promised.
    fn promising(&self, ballot: Ballot) -> Option<Acceptor> {
        self.promised
            .as_ref()
            .is_none_or(|p| ballot > *p)
            .then(|| Acceptor { promised: Some(ballot), ..self.clone() })
    }

    /// The votes after accepting `ring` under `ballot`, or `None` when a higher ballot was
    /// promised.
    fn accepting(&self, ballot: Ballot, ring: String) -> Option<Acceptor> {
        self.promised.as_ref().is_none_or(|p| ballot >= *p).then(|| Acceptor {
            version: self.version,
            promised: Some(ballot.clone()),
            accepted: Some((ballot, ring)),
        })
    }
}

/// The ring a proposer with a majority of promises proposes: the one accepted under the
/// highest ballot among the promises (it may already be chosen), or its own when none carries
/// an acceptance.
fn to_propose(accepted: impl IntoIterator<Item = (Ballot, String)>, ours: String) -> String {
    accepted.into_iter().max_by(|a, b| a.0.cmp(&b.0)).map_or(ours, |(_, ring)| ring)
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
        if let Some(next) = acceptor.promising(ballot) {
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
        if let Some(next) = acceptor.accepting(ballot, request.ring) {
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
    // The ring this proposer asked acceptors to accept as its own change, if it did: another
    // proposer may complete it (it finds it accepted), and then it is this change that won.
    let mut sent: Option<String> = None;
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            let pause = rand::random_range(20..120u64) * attempt as u64;
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        let topology = state.topology();
        let current = topology.ring.clone();
        if sent.as_ref().is_some_and(|ours| *ours == current.to_toml()) {
            return Ok(Some(Ring::clone(&current)));
        }
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
        let mut acceptances = Vec::new();
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
                acceptances.push((Ballot::from(b), reply.accepted_ring));
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
        let value = to_propose(acceptances, ours.clone());
        if value == ours {
            sent = Some(ours.clone());
        }

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

#[cfg(test)]
mod tests {
    //! The acceptor's and proposer's rules under random interleavings: a model of three
    //! acceptors and three proposers that exchange messages in random order, lose some and
    //! retry with higher ballots, over 4,000 seeded schedules. In every one, at most one ring is
    //! chosen per version.

    use std::collections::{BTreeMap, BTreeSet};

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    const ACCEPTORS: usize = 3;
    const PROPOSERS: usize = 3;

    enum Message {
        Prepare {
            to: usize,
            from: usize,
            ballot: Ballot,
        },
        Promise {
            to: usize,
            ballot: Ballot,
            promised: bool,
            accepted: Option<(Ballot, String)>,
            highest: Option<Ballot>,
        },
        Accept {
            to: usize,
            from: usize,
            ballot: Ballot,
            ring: String,
        },
        Accepted {
            to: usize,
            ballot: Ballot,
            accepted: bool,
            highest: Option<Ballot>,
        },
    }

    /// A proposer's round: the ballot, the promises (with their acceptances), the ring it
    /// proposed once a majority promised, and the acceptances of it counted so far.
    struct Round {
        ballot: Ballot,
        promises: usize,
        acceptances: Vec<(Ballot, String)>,
        proposed: Option<String>,
        accepted: usize,
    }

    /// A proposer's rule for the ring it proposes, given the acceptances its promises carried.
    type Rule = fn(Vec<(Ballot, String)>, String) -> String;

    /// Runs one random schedule of at most `steps` steps and returns every ring chosen, as seen
    /// by the acceptors (a majority accepted it under one ballot) and by the proposers (a
    /// majority of accepted replies).
    fn run(seed: u64, steps: usize, needed: usize, rule: Rule) -> BTreeSet<String> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut acceptors = vec![Acceptor { version: 2, ..Acceptor::default() }; ACCEPTORS];
        let mut rounds: Vec<Option<Round>> = (0..PROPOSERS).map(|_| None).collect();
        let mut highest_round = [0u64; PROPOSERS];
        let mut pool: Vec<Message> = Vec::new();
        // Per ballot, the acceptors that accepted under it.
        let mut votes: BTreeMap<Ballot, BTreeSet<usize>> = BTreeMap::new();
        let mut chosen = BTreeSet::new();
        for _ in 0..steps {
            let roll = rng.random_range(0..100);
            if roll < 8 || pool.is_empty() {
                // A proposer starts a round, or gives up on its round and starts a higher one.
                let p = rng.random_range(0..PROPOSERS);
                highest_round[p] += 1;
                let ballot = Ballot { round: highest_round[p], proposer: format!("p{p}") };
                for to in 0..ACCEPTORS {
                    pool.push(Message::Prepare { to, from: p, ballot: ballot.clone() });
                }
                rounds[p] = Some(Round {
                    ballot,
                    promises: 0,
                    acceptances: Vec::new(),
                    proposed: None,
                    accepted: 0,
                });
                continue;
            }
            let message = pool.swap_remove(rng.random_range(0..pool.len()));
            if roll < 15 {
                continue; // lost
            }
            match message {
                Message::Prepare { to, from, ballot } => {
                    let next = acceptors[to].promising(ballot.clone());
                    let promised = next.is_some();
                    if let Some(next) = next {
                        acceptors[to] = next;
                    }
                    let accepted = acceptors[to].accepted.clone();
                    let highest = acceptors[to].promised.clone();
                    pool.push(Message::Promise { to: from, ballot, promised, accepted, highest });
                }
                Message::Promise { to, ballot, promised, accepted, highest } => {
                    let seen = highest.map_or(0, |b| b.round);
                    highest_round[to] = highest_round[to].max(seen);
                    let Some(round) = rounds[to].as_mut().filter(|r| r.ballot == ballot) else {
                        continue;
                    };
                    if !promised || round.proposed.is_some() {
                        continue;
                    }
                    round.promises += 1;
                    round.acceptances.extend(accepted);
                    if round.promises >= needed {
                        let ring = rule(std::mem::take(&mut round.acceptances), format!("r{to}"));
                        round.proposed = Some(ring.clone());
                        for a in 0..ACCEPTORS {
                            let (ballot, ring) = (ballot.clone(), ring.clone());
                            pool.push(Message::Accept { to: a, from: to, ballot, ring });
                        }
                    }
                }
                Message::Accept { to, from, ballot, ring } => {
                    let next = acceptors[to].accepting(ballot.clone(), ring.clone());
                    let accepted = next.is_some();
                    if let Some(next) = next {
                        acceptors[to] = next;
                        let voters = votes.entry(ballot.clone()).or_default();
                        voters.insert(to);
                        if voters.len() > ACCEPTORS / 2 {
                            chosen.insert(ring);
                        }
                    }
                    let highest = acceptors[to].promised.clone();
                    pool.push(Message::Accepted { to: from, ballot, accepted, highest });
                }
                Message::Accepted { to, ballot, accepted, highest } => {
                    let seen = highest.map_or(0, |b| b.round);
                    highest_round[to] = highest_round[to].max(seen);
                    let Some(round) = rounds[to].as_mut().filter(|r| r.ballot == ballot) else {
                        continue;
                    };
                    round.accepted += usize::from(accepted);
                    if round.accepted >= needed {
                        chosen.extend(round.proposed.clone());
                    }
                }
            }
        }
        chosen
    }

    /// Seeds whose schedule chose more than one ring.
    fn splits(needed: usize, rule: Rule) -> Vec<u64> {
        (0..4_000).filter(|&seed| run(seed, 400, needed, rule).len() > 1).collect()
    }

    #[test]
    fn at_most_one_ring_is_chosen_per_version_under_any_interleaving() {
        assert_eq!(splits(ACCEPTORS / 2 + 1, to_propose), Vec::<u64>::new());
        let some_chosen = (0..4_000).filter(|&seed| !run(seed, 400, 2, to_propose).is_empty());
        assert!(some_chosen.count() > 1_000, "the model rarely chooses: it tests little");
    }

    #[test]
    fn the_model_finds_a_split_when_a_rule_is_broken() {
        // A proposer that ignores the acceptances its promises carry.
        assert!(!splits(ACCEPTORS / 2 + 1, |_, ours| ours).is_empty());
        // A quorum of one.
        assert!(!splits(1, to_propose).is_empty());
    }
}
