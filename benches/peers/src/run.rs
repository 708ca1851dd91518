//! The closed loop: `concurrency` tasks, each with its own connection, issue operations until
//! the operation count or the time bound is reached, each recording into its own
//! [`LatencyRecord`] (merged at the end, so recording takes no lock).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dynakv_bench::{DataSet, LatencyRecord, Measurement, OpKind, WorkloadKind};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::cpu;
use crate::peer::{Conn, Peer};

/// One run's settings.
#[derive(Debug, Clone, Copy)]
pub struct RunSpec {
    /// The operation mix.
    pub workload: WorkloadKind,
    /// Operations to run.
    pub ops: u64,
    /// Operations in flight at once.
    pub concurrency: usize,
    /// Stop after this long even if operations remain.
    pub max_duration: Duration,
}

/// One task: operations from the shared counter until it passes `spec.ops` or time is up.
async fn task(
    mut conn: Conn,
    data: Arc<DataSet>,
    spec: RunSpec,
    next: Arc<AtomicU64>,
    deadline: Instant,
    seed: u64,
) -> LatencyRecord {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut record = LatencyRecord::new();
    while next.fetch_add(1, Ordering::Relaxed) < spec.ops && Instant::now() < deadline {
        let (kind, key) = data.next_op(spec.workload, &mut rng);
        let began = Instant::now();
        let result = match kind {
            OpKind::Read => conn.get(&key).await,
            OpKind::Update => conn.put(&key, &data.value).await,
        };
        match result {
            Ok(()) => record.success(kind, began.elapsed()),
            Err(e) => record.failure(kind, format!("{e:#}")),
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
    let mut total = LatencyRecord::new();
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

    let done = total.done();
    let replication = peer.replication();
    Ok(Measurement {
        system: None,
        workload: spec.workload,
        concurrency: spec.concurrency,
        r: replication.r,
        w: replication.w,
        linearizable: replication.linearizable,
        n: replication.n,
        value_size: data.value.len(),
        keys: data.keys.len() as u64,
        rpcs_per_node: 0,
        read_fanout: None,
        replica_requests_per_op: None,
        elapsed_secs: secs,
        timed_out: done < spec.ops,
        ops: total.figures(secs),
        client_cpu_us_per_op: client_cpu.as_secs_f64() * 1e6 / done.max(1) as f64,
        node_cpu_us_per_replica_op: server_cpu
            .map(|cpu| cpu.as_secs_f64() * 1e6 / (done.max(1) * replication.n as u64) as f64),
        node_pids: server_pids.to_vec(),
        first_error: total.first_error().map(str::to_string),
    })
}
