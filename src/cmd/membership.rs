//! `dynakv ring add|remove|replace [--wait]`: membership changes on the live cluster, and the
//! progress of the ranges they move (shared with `ring show` and `status`).
//!
//! A refused change prints `error: <reason>` and exits 2, the ring unchanged. An accepted one
//! prints the new ring version; with `--wait`, a progress bar follows the moving ranges (polled
//! every 500 ms) until the cluster's ring is no longer moving, or `--timeout` passes (exit 1,
//! with what is left).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use dynakv_client::{Client, ClientError, NodeMoves};
use dynakv_ring::{Change, Ring};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::{RingAddArgs, RingArg, RingRemoveArgs, RingReplaceArgs, WaitArgs};

/// How often `--wait` asks the nodes how far the move is.
const POLL: Duration = Duration::from_millis(500);

/// `dynakv ring add <id> <addr>`.
pub async fn add(args: RingAddArgs) -> anyhow::Result<ExitCode> {
    change(&args.ring, Change::Add { id: args.id, addr: args.addr }, &args.wait).await
}

/// `dynakv ring remove <id> [--dead]`.
pub async fn remove(args: RingRemoveArgs) -> anyhow::Result<ExitCode> {
    change(&args.ring, Change::Remove { id: args.id, dead: args.dead }, &args.wait).await
}

/// `dynakv ring replace <dead> <id> <addr>`.
pub async fn replace(args: RingReplaceArgs) -> anyhow::Result<ExitCode> {
    let change = Change::Replace { dead: args.dead, id: args.id, addr: args.addr };
    self::change(&args.ring, change, &args.wait).await
}

/// Makes the change on the cluster, then waits for it if asked.
async fn change(ring: &RingArg, change: Change, wait: &WaitArgs) -> anyhow::Result<ExitCode> {
    let client = super::client(ring)?;
    // Start from the live ring, so the change is checked against what the cluster has.
    if let Err(e) = client.refresh_ring().await {
        tracing::debug!(error = %e, "no live ring; the node asked checks the change");
    }
    let ring = match client.change_ring(change.clone()).await {
        Ok(ring) => ring,
        Err(ClientError::Membership { message, .. }) => anyhow::bail!("{message}"),
        Err(e) => return Err(e).context(format!("cannot {change}")),
    };
    let moving = if ring.is_moving() { "ranges are moving" } else { "nothing to move" };
    println!("ring v{}: {change}: agreed; {moving}", ring.version());
    if !wait.wait || !ring.is_moving() {
        if ring.is_moving() {
            println!("follow it with `dynakv ring show`, or pass --wait");
        }
        return Ok(ExitCode::SUCCESS);
    }
    wait_for_move(&client, &ring, &change, wait.timeout).await
}

/// Polls until the cluster's ring is no longer moving, drawing a progress bar on stderr.
async fn wait_for_move(
    client: &Client,
    started_ring: &Ring,
    change: &Change,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] [{bar:30}] {pos}/{len} ranges, {msg}",
    )
    .expect("valid progress template")
    .progress_chars("=> ");
    bar.set_style(style);
    let started = Instant::now();
    let mut rate = Rate::default();
    loop {
        let totals = MoveTotals::of(&client.move_status().await);
        rate.sample(totals.bytes);
        bar.set_length(totals.ranges as u64);
        bar.set_position(totals.done as u64);
        bar.set_message(format!("{}, ETA {}", totals.amounts(), rate.eta(&totals)));
        let live = client.refresh_ring().await.ok();
        if let Some(ring) = live.filter(|ring| ring.version() > started_ring.version())
            && !ring.is_moving()
        {
            bar.finish_and_clear();
            println!(
                "ring v{}: {change}: done in {:.1}s ({} ranges, {} streamed)",
                ring.version(),
                started.elapsed().as_secs_f64(),
                totals.ranges,
                mb(totals.bytes)
            );
            return Ok(ExitCode::SUCCESS);
        }
        if started.elapsed() >= timeout {
            bar.abandon();
            println!(
                "timed out after {}: ring v{} is still moving: {} of {} ranges left, {}",
                humantime::format_duration(timeout),
                started_ring.version(),
                totals.ranges - totals.done,
                totals.ranges,
                totals.left()
            );
            for why in &totals.waiting {
                println!("  waiting: {why}");
            }
            return Ok(ExitCode::from(1));
        }
        tokio::time::sleep(POLL.min(timeout.saturating_sub(started.elapsed()))).await;
    }
}

/// The moving ranges of a change, added up over the nodes that gain them.
#[derive(Debug, Default, Clone)]
pub struct MoveTotals {
    /// Spans being gained, over all nodes.
    pub ranges: usize,
    /// Spans synced.
    pub done: usize,
    /// Records and bytes received so far.
    pub keys: u64,
    pub bytes: u64,
    /// Records expected in all spans (where known).
    pub keys_expected: u64,
    /// Why spans are stuck, as `node: reason`.
    pub waiting: Vec<String>,
    /// Nodes that did not say, as `node: error`.
    pub unanswered: Vec<String>,
}

impl MoveTotals {
    /// Adds up every node's report.
    pub fn of(nodes: &[NodeMoves]) -> MoveTotals {
        let mut totals = MoveTotals::default();
        for node in nodes {
            let report = match &node.reply {
                Ok(report) => report,
                Err(e) => {
                    totals.unanswered.push(format!("{}: {e}", node.id));
                    continue;
                }
            };
            for range in &report.ranges {
                totals.ranges += 1;
                totals.done += usize::from(range.done);
                totals.keys += range.keys;
                totals.bytes += range.bytes;
                totals.keys_expected += range.keys_expected.max(range.keys);
                if let Some(why) = &range.waiting
                    && !range.done
                {
                    let line = format!("{}: {why}", node.id);
                    if !totals.waiting.contains(&line) {
                        totals.waiting.push(line);
                    }
                }
            }
        }
        totals
    }

    /// Bytes still to stream, estimated from the bytes per key so far (`None` while unknown).
    pub fn bytes_left(&self) -> Option<u64> {
        let keys_left = self.keys_expected.saturating_sub(self.keys);
        if keys_left == 0 {
            return Some(0);
        }
        (self.keys > 0).then(|| (self.bytes as f64 / self.keys as f64 * keys_left as f64) as u64)
    }

    /// `3.1 MB, 1200 of ~4000 keys`.
    pub fn amounts(&self) -> String {
        format!("{}, {} of ~{} keys", mb(self.bytes), self.keys, self.keys_expected)
    }

    /// `2800 keys and ~7.4 MB left`.
    pub fn left(&self) -> String {
        let bytes = self.bytes_left().map_or("an unknown amount".into(), |b| format!("~{}", mb(b)));
        format!("{} keys and {bytes} left", self.keys_expected.saturating_sub(self.keys))
    }

    /// The JSON form, for `ring show --json`.
    pub fn json(&self, eta: Option<Duration>) -> serde_json::Value {
        serde_json::json!({
            "ranges": self.ranges,
            "ranges_done": self.done,
            "keys_done": self.keys,
            "keys_expected": self.keys_expected,
            "keys_left": self.keys_expected.saturating_sub(self.keys),
            "bytes_done": self.bytes,
            "bytes_left": self.bytes_left(),
            "eta_s": eta.map(|eta| eta.as_secs_f64()),
            "waiting": self.waiting,
            "unanswered": self.unanswered,
        })
    }
}

/// Streaming speed from successive samples of the bytes received.
#[derive(Debug, Default)]
pub struct Rate {
    first: Option<(Instant, u64)>,
    last: Option<(Instant, u64)>,
}

impl Rate {
    /// Notes the bytes received by now.
    pub fn sample(&mut self, bytes: u64) {
        let now = (Instant::now(), bytes);
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// Bytes per second since the first sample.
    fn per_second(&self) -> Option<f64> {
        let ((t0, b0), (t1, b1)) = (self.first?, self.last?);
        let secs = t1.duration_since(t0).as_secs_f64();
        (secs > 0.0 && b1 > b0).then(|| (b1 - b0) as f64 / secs)
    }

    /// Time left at the speed so far (`None` while unknown).
    pub fn eta_duration(&self, totals: &MoveTotals) -> Option<Duration> {
        let left = totals.bytes_left()?;
        if left == 0 {
            return Some(Duration::ZERO);
        }
        Some(Duration::from_secs_f64(left as f64 / self.per_second()?))
    }

    /// The ETA as text: `1m 12s`, or `unknown`.
    pub fn eta(&self, totals: &MoveTotals) -> String {
        self.eta_duration(totals).map_or("unknown".into(), |eta| {
            humantime::format_duration(Duration::from_secs(eta.as_secs())).to_string()
        })
    }
}

/// Bytes as `12.3 MB` (10^6 bytes).
pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dynakv_client::{MoveReport, RangeProgress};

    fn range(done: bool, keys: u64, expected: u64, waiting: Option<&str>) -> RangeProgress {
        RangeProgress {
            start: 0,
            end: 1,
            done,
            keys,
            bytes: keys * 100,
            keys_expected: expected,
            waiting: waiting.map(Into::into),
        }
    }

    #[test]
    fn totals_add_up_every_node_and_estimate_what_is_left() {
        let nodes = vec![
            NodeMoves {
                id: "n4".into(),
                addr: "127.0.0.1:1".parse().unwrap(),
                reply: Ok(MoveReport {
                    ring_version: 2,
                    ranges: vec![range(true, 10, 10, None), range(false, 5, 20, Some("n2 down"))],
                }),
            },
            NodeMoves {
                id: "n1".into(),
                addr: "127.0.0.1:2".parse().unwrap(),
                reply: Err(dynakv_client::ReplicaError::Refused),
            },
        ];
        let totals = MoveTotals::of(&nodes);
        assert_eq!((totals.ranges, totals.done, totals.keys, totals.keys_expected), (2, 1, 15, 30));
        assert_eq!(totals.bytes_left(), Some(1500), "100 bytes per key, 15 keys left");
        assert_eq!(totals.waiting, ["n4: n2 down"]);
        assert_eq!(totals.unanswered, ["n1: connection refused"]);
        assert_eq!(totals.left(), "15 keys and ~0.0 MB left");
        assert_eq!(MoveTotals::default().bytes_left(), Some(0));
    }
}
