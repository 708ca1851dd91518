//! Following cluster time. A client stamps its writes by its own clock, so a client whose clock
//! is behind the cluster's would write below what the replicas already hold and lose every merge.
//! Before its first write, a client asks every node for its wall clock (the health call) and,
//! once a majority has answered, moves its clock forward by as much as a majority of the nodes
//! is certainly ahead of it (the round trip counted against the node, so never too far). It never moves back: a client whose clock is ahead stays ahead, and nodes
//! refuse its writes past `max_skew_ms` with a clock-skew error instead of letting them win.
//!
//! Only wall clocks are compared here, never the nodes' hybrid clocks: the versions a node has
//! stored reach the client through data replies (bounded by the skew), and a node whose clock
//! runs far ahead is outvoted by the others.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::client::Shared;

/// How far a node's wall clock (`node_wall_ms`) is ahead of ours, for a call sent at our
/// `sent_ms` that took `rtt`, taking the node to have read its clock halfway through: the best
/// estimate, for display.
pub(crate) fn offset_ms(sent_ms: u64, rtt: Duration, node_wall_ms: u64) -> i64 {
    difference(node_wall_ms, sent_ms.saturating_add((rtt.as_millis() / 2) as u64))
}

/// How far a node's wall clock is at least ahead of ours: the node read its clock before its
/// reply arrived, so this never overstates the offset, however slow the call (the first call
/// opens the connection). A client that led by more would stamp its writes in the future and
/// supersede the writes other clients make right after.
pub(crate) fn least_offset_ms(sent_ms: u64, rtt: Duration, node_wall_ms: u64) -> i64 {
    difference(node_wall_ms, sent_ms.saturating_add(rtt.as_millis() as u64))
}

/// `a - b` for two Unix times in milliseconds.
fn difference(a: u64, b: u64) -> i64 {
    i64::try_from(a).unwrap_or(i64::MAX) - i64::try_from(b).unwrap_or(i64::MAX)
}

/// The offset a majority of `nodes` is at or ahead of, given the offsets of those that
/// answered; `None` until a majority has.
pub(crate) fn majority_offset(mut offsets: Vec<i64>, nodes: usize) -> Option<i64> {
    let majority = nodes / 2 + 1;
    if offsets.len() < majority {
        return None;
    }
    offsets.sort_unstable_by(|a, b| b.cmp(a));
    Some(offsets[majority - 1])
}

/// Moves the client's clock forward to cluster time, once per client (later calls return at
/// once). Waits for a majority of the nodes, or for every probe to end.
pub(crate) async fn follow(shared: &Arc<Shared>) {
    shared.followed.get_or_init(|| probe(shared)).await;
}

/// Asks every node for its wall clock and leads the client's clock by the majority's offset.
async fn probe(shared: &Arc<Shared>) {
    let topology = shared.topology();
    let nodes = topology.replicas.len();
    let mut probes: FuturesUnordered<_> = (0..nodes)
        .map(|i| {
            let (shared, topology) = (shared.clone(), topology.clone());
            async move {
                let (sent, started) = (shared.wall.now_ms(), Instant::now());
                let reply = topology.replicas[i].health_check().await;
                reply.map(|health| least_offset_ms(sent, started.elapsed(), health.wall_ms))
            }
        })
        .collect();
    let mut offsets = Vec::with_capacity(nodes);
    let mut lead = None;
    while lead.is_none() {
        match probes.next().await {
            Some(Ok(offset)) => {
                offsets.push(offset);
                lead = majority_offset(offsets.clone(), nodes);
            }
            Some(Err(_)) => {}
            None => break,
        }
    }
    if !probes.is_empty() {
        // The rest still count for node health.
        shared.background.spawn(async move { while probes.next().await.is_some() {} });
    }
    match lead {
        Some(lead) if lead > 0 => {
            tracing::debug!(lead_ms = lead, "following cluster time: the nodes' clocks are ahead");
            shared.clock.wall().lead_by(lead);
        }
        Some(_) => {}
        None => tracing::debug!("cluster time unknown: no majority of nodes answered"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_majority_decides_and_an_outlier_is_outvoted() {
        assert_eq!(majority_offset(vec![10_000, 3_600_000, 10_050], 3), Some(10_050));
        assert_eq!(majority_offset(vec![3_600_000, 9_000], 3), Some(9_000));
        assert_eq!(majority_offset(vec![3_600_000], 3), None, "one node is not a majority");
        assert_eq!(majority_offset(vec![-500, 20, 30, 40], 4), Some(20));
        assert_eq!(majority_offset(vec![7], 1), Some(7));
    }

    #[test]
    fn offsets_are_estimated_at_the_middle_and_bounded_at_the_end_of_the_call() {
        assert_eq!(offset_ms(1_000, Duration::from_millis(40), 1_020), 0);
        assert_eq!(offset_ms(1_000, Duration::from_millis(10), 61_005), 60_000);
        assert_eq!(offset_ms(61_000, Duration::ZERO, 1_000), -60_000);
        // A slow first call (connection set-up) must not make an accurate clock look behind.
        assert_eq!(least_offset_ms(1_000, Duration::from_millis(40), 1_030), -10);
        assert_eq!(least_offset_ms(1_000, Duration::from_millis(10), 61_005), 59_995);
    }
}
