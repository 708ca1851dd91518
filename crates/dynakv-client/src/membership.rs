//! Membership from the client's side: fetch the live ring, ask the cluster for a change, and
//! follow the ranges a change moves.
//!
//! A change goes to one node, which runs the agreement with the others and answers with the new
//! ring (version v+1, moving); the node that answers first decides, the others are tried only
//! when it cannot be reached. The client swaps the new ring in at once, so its next writes reach
//! the new owners. The cluster commits the ring after the move (v+2, not moving) when every new
//! owner has synced; [`Client::move_status`] shows how far that is.

use std::net::SocketAddr;
use std::sync::Arc;

use dynakv_proto::v1::{self, change_ring_request};
use dynakv_ring::{Change, Ring};
use futures::future::join_all;

use crate::client::Client;
use crate::error::{ClientError, ReplicaError};

/// One node's answer to [`Client::move_status`].
#[derive(Debug, Clone)]
pub struct NodeMoves {
    /// The node's id.
    pub id: String,
    /// The node's address.
    pub addr: SocketAddr,
    /// What the node gains in the change in progress, or why it did not say.
    pub reply: Result<MoveReport, ReplicaError>,
}

/// What one node says of the ranges it gains.
#[derive(Debug, Clone, Default)]
pub struct MoveReport {
    /// The ring version the node serves.
    pub ring_version: u64,
    /// One entry per span the node gains (none outside a change).
    pub ranges: Vec<RangeProgress>,
}

/// How far one span has streamed to the node that gains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeProgress {
    /// Exclusive lower token of the span.
    pub start: u64,
    /// Inclusive upper token of the span.
    pub end: u64,
    /// Every holder has been streamed from and the span is synced.
    pub done: bool,
    /// Records received so far.
    pub keys: u64,
    /// Bytes received so far.
    pub bytes: u64,
    /// Records the span is expected to hold (0 while unknown).
    pub keys_expected: u64,
    /// Why the span is not moving, when it is stuck.
    pub waiting: Option<String>,
}

impl From<v1::RangeProgress> for RangeProgress {
    fn from(wire: v1::RangeProgress) -> Self {
        let span = wire.span.unwrap_or_default();
        RangeProgress {
            start: span.start,
            end: span.end,
            done: wire.done,
            keys: wire.keys,
            bytes: wire.bytes,
            keys_expected: wire.keys_expected,
            waiting: Some(wire.waiting).filter(|why| !why.is_empty()),
        }
    }
}

/// The wire form of a change.
fn change_request(change: &Change) -> v1::ChangeRingRequest {
    let change = match change {
        Change::Add { id, addr } => {
            change_ring_request::Change::Add(v1::AddNode { id: id.clone(), addr: addr.to_string() })
        }
        Change::Remove { id, dead } => {
            change_ring_request::Change::Remove(v1::RemoveNode { id: id.clone(), dead: *dead })
        }
        Change::Replace { dead, id, addr } => {
            change_ring_request::Change::Replace(v1::ReplaceNode {
                dead: dead.clone(),
                id: id.clone(),
                addr: addr.to_string(),
            })
        }
    };
    v1::ChangeRingRequest { change: Some(change) }
}

/// True when the node could not be asked at all, so another node should be.
fn unreachable(error: &ReplicaError) -> bool {
    match error {
        ReplicaError::Down { .. } | ReplicaError::Refused | ReplicaError::Unreachable(_) => true,
        ReplicaError::Rejected { code, .. } => *code == tonic::Code::Unavailable,
        _ => false,
    }
}

impl Client {
    /// Fetches the ring from the cluster now (the newest version any node serves) and swaps it
    /// in if it is newer; returns the live ring.
    pub async fn refresh_ring(&self) -> Result<Arc<Ring>, ClientError> {
        self.shared.refresh(true).await
    }

    /// Asks the cluster to make `change`; returns the new ring (moving while ranges stream),
    /// which this client now places keys by. A refusal is [`ClientError::Membership`] with the
    /// node's reason, and leaves the ring unchanged.
    pub async fn change_ring(&self, change: Change) -> Result<Ring, ClientError> {
        let topology = self.shared.topology();
        let request = change_request(&change);
        let deadline = self.shared.options.membership_timeout;
        let mut unanswered = Vec::new();
        // Nodes that own tokens vote on the change: ask them first.
        let voters = topology.ring.voters();
        let others = (0..topology.replicas.len()).filter(|i| !voters.contains(i));
        for index in voters.iter().copied().chain(others) {
            let replica = &topology.replicas[index];
            match replica.change_ring(request.clone(), deadline).await {
                Ok(reply) => {
                    let ring = Ring::parse(&reply.ring).map_err(|e| ClientError::BadRing {
                        node: replica.id.clone(),
                        reason: e.to_string(),
                    })?;
                    self.shared.install(ring.clone())?;
                    return Ok(ring);
                }
                Err(cause) if unreachable(&cause) => {
                    unanswered.push(format!("{}: {cause}", replica.id));
                }
                Err(ReplicaError::Rejected { code, message }) => {
                    return Err(ClientError::Membership {
                        node: replica.id.clone(),
                        code,
                        message,
                    });
                }
                Err(cause) => {
                    return Err(ClientError::Membership {
                        node: replica.id.clone(),
                        code: tonic::Code::Unknown,
                        message: format!("node {}: {cause}", replica.id),
                    });
                }
            }
        }
        Err(ClientError::Membership {
            node: String::new(),
            code: tonic::Code::Unavailable,
            message: format!("no node could be asked to {change}: {}", unanswered.join("; ")),
        })
    }

    /// Asks every node of the live ring, concurrently, how far the ranges it gains have moved;
    /// one answer (or error) per node.
    pub async fn move_status(&self) -> Vec<NodeMoves> {
        let topology = self.shared.topology();
        let calls =
            topology.replicas.iter().zip(topology.ring.nodes()).map(|(replica, node)| async move {
                let reply = replica.move_status().await.map(|reply| MoveReport {
                    ring_version: reply.ring_version,
                    ranges: reply.ranges.into_iter().map(RangeProgress::from).collect(),
                });
                NodeMoves { id: node.id.clone(), addr: node.addr, reply }
            });
        join_all(calls).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_go_on_the_wire_as_they_are() {
        let addr: SocketAddr = "127.0.0.1:7404".parse().unwrap();
        let request = change_request(&Change::Replace { dead: "n2".into(), id: "n4".into(), addr });
        let Some(change_ring_request::Change::Replace(replace)) = request.change else {
            panic!("a replace")
        };
        assert_eq!((replace.dead.as_str(), replace.id.as_str()), ("n2", "n4"));
        assert_eq!(replace.addr, "127.0.0.1:7404");
        let request = change_request(&Change::Remove { id: "n3".into(), dead: true });
        assert!(matches!(
            request.change,
            Some(change_ring_request::Change::Remove(v1::RemoveNode { dead: true, .. }))
        ));
    }

    #[test]
    fn progress_without_a_reason_is_not_waiting() {
        let wire = v1::RangeProgress {
            span: Some(v1::TokenSpan { start: 1, end: 9 }),
            done: false,
            keys: 3,
            bytes: 300,
            keys_expected: 10,
            waiting: String::new(),
        };
        let progress = RangeProgress::from(wire.clone());
        assert_eq!((progress.start, progress.end, progress.waiting), (1, 9, None));
        let stuck =
            RangeProgress::from(v1::RangeProgress { waiting: "n2 unreachable".into(), ..wire });
        assert_eq!(stuck.waiting.as_deref(), Some("n2 unreachable"));
    }

    #[tokio::test]
    async fn a_change_no_node_can_be_asked_is_unavailable_and_changes_nothing() {
        let ring = Ring::parse(
            "[replication]\nn = 1\nr = 1\nw = 1\n[[nodes]]\nid = \"n1\"\naddr = \"127.0.0.1:9\"\n",
        )
        .unwrap();
        let client = Client::connect(ring).unwrap();
        let change = Change::Remove { id: "n1".into(), dead: false };
        let error = client.change_ring(change).await.unwrap_err();
        let ClientError::Membership { code, message, .. } = &error else { panic!("{error}") };
        assert_eq!(*code, tonic::Code::Unavailable);
        assert!(message.starts_with("no node could be asked to remove n1: n1: "), "{message}");
        assert_eq!(client.ring().version(), 1);
    }
}
