//! The closed loop: `concurrency` tasks, each with its own connection, issue operations until
//! the operation count or the time bound is reached, each recording latencies into its own HDR
//! histograms (merged at the end, so recording takes no lock).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::cpu;
use crate::peer::{Conn, Peer};
use crate::report::{Measurement, OpFigures};
use crate::workload::{DataSet, OpKind, Workload};

/// Longest latency a histogram holds (longer ones are recorded as this).
const MAX_LATENCY_NS: u64 = 120_000_000_000;

/// One run's settings.
#[derive(Debug, Clone, Copy)]
pub struct RunSpec {
    /// The operation mix.
    pub workload: Workload,
    /// Operations to run.
    pub ops: u64,
    /// Operations in flight at once.
    pub concurrency: usize,
    /// Stop after this long even if operations remain.
    pub max_duration: Duration,
}

/// Latencies and errors of one task, or of all of them once merged, per [`OpKind`].
struct Record {
    latencies: [Histogram<u64>; 2],
    errors: [u64; 2],
    first_error: Option<String>,
}

impl Record {
    fn new() -> Self {
        Record { latencies: [histogram(), histogram()], errors: [0; 2], first_error: None }
    }

    fn merge(&mut self, other: Record) {
        for (mine, theirs) in self.latencies.iter_mut().zip(&other.latencies) {
            mine.add(theirs).expect("histograms with equal bounds add");
        }
        for (mine, theirs) in self.errors.iter_mut().zip(other.errors) {
            *mine += theirs;
        }
        self.first_error = self.first_error.take().or(other.first_error);
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid bounds")
}

/// One task: operations from the shared counter until it passes `spec.ops` or time is up.
async fn task(
    mut conn: Conn,
    data: Arc<DataSet>,
    spec: RunSpec,
    next: Arc<AtomicU64>,
    deadline: Instant,
    seed: u64,
) -> Record {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut record = Record::new();
    while next.fetch_add(1, Ordering::Relaxed) < spec.ops && Instant::now() < deadline {
        let (kind, key) = data.next_op(spec.workload, &mut rng);
        let began = Instant::now();
        let result = match kind {
            OpKind::Read => conn.get(key).await,
            OpKind::Update => conn.put(key, &data.value).await,
        };
        let slot = kind as usize;
        match result {
            Ok(()) => record.latencies[slot].saturating_record(began.elapsed().as_nanos() as u64),
            Err(e) => {
                record.errors[slot] += 1;
                record.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    record
}

/// Runs `spec` against `peer` and measures it; `server_pids` are the processes whose CPU is
/// counted. Connections are opened before the clock starts.
pub async fn execute(
    peer: &Peer,
    data: &Arc<DataSet>,
    spec: RunSpec,
    server_pids: &[u32],
) -> anyhow::Result<Measurement> {
    let mut conns = Vec::with_capacity(spec.concurrency);
    for _ in 0..spec.concurrency.max(1) {
        conns.push(peer.connect().await?);
    }
    let next = Arc::new(AtomicU64::new(0));
    let server_before = cpu::processes_cpu(server_pids);
    let client_before = cpu::client_cpu();
    let started = Instant::now();
    let deadline = started + spec.max_duration;
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, conn)| {
            tokio::spawn(task(conn, data.clone(), spec, next.clone(), deadline, i as u64))
        })
        .collect();
    let mut total = Record::new();
    for task in tasks {
        total.merge(task.await?);
    }
    let secs = started.elapsed().as_secs_f64();
    let client_cpu = cpu::client_cpu().saturating_sub(client_before);
    let server_cpu = match (server_before, cpu::processes_cpu(server_pids)) {
        (Some(before), Some(after)) if !server_pids.is_empty() => {
            Some(after.saturating_sub(before))
        }
        _ => None,
    };

    let mut ops = Vec::new();
    let mut all = histogram();
    for kind in OpKind::ALL {
        let slot = kind as usize;
        let (latencies, errors) = (&total.latencies[slot], total.errors[slot]);
        if latencies.len() + errors > 0 {
            ops.push(OpFigures::new(kind.name(), latencies, errors, secs));
            all.add(latencies).expect("histograms with equal bounds add");
        }
    }
    let errors = total.errors.iter().sum();
    ops.push(OpFigures::new("all", &all, errors, secs));
    let done = (all.len() + errors).max(1);
    let replication = peer.replication();
    Ok(Measurement {
        system: None,
        workload: spec.workload.name().to_string(),
        concurrency: spec.concurrency,
        r: replication.r,
        w: replication.w,
        linearizable: replication.linearizable,
        n: replication.n,
        value_size: data.value.len(),
        keys: data.keys.len() as u64,
        rpcs_per_node: 0,
        elapsed_secs: secs,
        timed_out: all.len() + errors < spec.ops,
        ops,
        client_cpu_us_per_op: client_cpu.as_secs_f64() * 1e6 / done as f64,
        node_cpu_us_per_replica_op: server_cpu
            .map(|cpu| cpu.as_secs_f64() * 1e6 / (done * replication.n as u64) as f64),
        node_pids: server_pids.to_vec(),
        first_error: total.first_error,
    })
}
