//! Running a workload: loading the keyspace, then `concurrency` tasks issuing operations until
//! the operation count or the time bound is reached, each recording latencies into its own
//! [`LatencyRecord`] (merged at the end, so recording takes no lock).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dynakv_bench::{DataSet, LatencyRecord, Measurement, OpKind, WorkloadKind};
use dynakv_client::{Client, Consistency, ReadFanout, ReadOptions, WriteOptions};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::cpu;

/// One run's settings.
#[derive(Debug, Clone, Copy)]
pub struct RunSpec {
    /// The operation mix.
    pub workload: WorkloadKind,
    /// Operations to run.
    pub ops: u64,
    /// Operations in flight at once.
    pub concurrency: usize,
    /// Read quorum.
    pub r: usize,
    /// Write quorum.
    pub w: usize,
    /// Run every operation linearizably (strict majorities; `r` and `w` are the majority).
    pub linearizable: bool,
    /// Stop after this long even if operations remain.
    pub max_duration: Duration,
}

/// A progress bar on stderr (hidden when stderr is not a terminal), moved every 100 ms from a
/// shared counter so the operations themselves never touch it.
struct Progress {
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn start(len: u64, what: &str, counter: Arc<AtomicU64>) -> Self {
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(&format!(
            "{what} {{bar:40}} {{pos}}/{{len}} ops {{per_sec}} eta {{eta}}"
        ))
        .expect("valid progress template");
        bar.set_style(style);
        let ticker = tokio::spawn({
            let bar = bar.clone();
            async move {
                let mut every = tokio::time::interval(Duration::from_millis(100));
                loop {
                    every.tick().await;
                    bar.set_position(counter.load(Ordering::Relaxed).min(len));
                }
            }
        });
        Progress { bar, ticker }
    }

    fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

/// Writes every key once, with W = N so every replica holds it, `concurrency` writes at a time.
pub async fn preload(
    client: &Client,
    data: &Arc<DataSet>,
    concurrency: usize,
    max_duration: Duration,
) -> anyhow::Result<()> {
    let n = client.ring().replication().n;
    let next = Arc::new(AtomicU64::new(0));
    let total = data.keys.len() as u64;
    let progress = Progress::start(total, "preload", next.clone());
    let deadline = Instant::now() + max_duration;
    let tasks: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (client, data, next) = (client.clone(), data.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total || Instant::now() >= deadline {
                        return Ok(());
                    }
                    let key = data.keys[i as usize].clone();
                    client
                        .put_with(
                            key,
                            data.value.clone(),
                            WriteOptions { w: Some(n), ..Default::default() },
                        )
                        .await?;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await?.map_err(|e: dynakv_client::ClientError| anyhow::anyhow!("preload: {e}"))?;
    }
    progress.finish();
    anyhow::ensure!(
        next.load(Ordering::Relaxed) >= total,
        "preload did not finish within {max_duration:?}"
    );
    client.settle().await;
    Ok(())
}

/// Runs `spec` against the cluster and measures it. `node_pids` are the node processes whose
/// CPU is counted.
pub async fn execute(
    client: &Client,
    data: &Arc<DataSet>,
    spec: RunSpec,
    node_pids: &[u32],
    rpcs_per_node: usize,
) -> anyhow::Result<Measurement> {
    let next = Arc::new(AtomicU64::new(0));
    let what = format!("workload {} c={}", spec.workload.name(), spec.concurrency);
    let progress = Progress::start(spec.ops, &what, next.clone());
    let node_before = cpu::processes_cpu(node_pids);
    let client_before = cpu::client_cpu();
    let requests_before = requests_sent(client);
    let started = Instant::now();
    let deadline = started + spec.max_duration;
    let tasks: Vec<_> = (0..spec.concurrency.max(1))
        .map(|task| {
            let (client, data, next) = (client.clone(), data.clone(), next.clone());
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(task as u64);
                let mut record = LatencyRecord::new();
                let (read, write) = if spec.linearizable {
                    let consistency = Some(Consistency::Linearizable);
                    (
                        ReadOptions { consistency, ..Default::default() },
                        WriteOptions { consistency, ..Default::default() },
                    )
                } else {
                    (
                        ReadOptions { r: Some(spec.r), ..Default::default() },
                        WriteOptions { w: Some(spec.w), ..Default::default() },
                    )
                };
                while next.fetch_add(1, Ordering::Relaxed) < spec.ops {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let (kind, key) = data.next_op(spec.workload, &mut rng);
                    let began = Instant::now();
                    let result = match kind {
                        OpKind::Read => client.get_with(key, read).await.map(drop),
                        OpKind::Update => {
                            client.put_with(key, data.value.clone(), write).await.map(drop)
                        }
                    };
                    match result {
                        Ok(()) => record.success(kind, began.elapsed()),
                        Err(e) => record.failure(kind, e),
                    }
                }
                record
            })
        })
        .collect();
    let mut total = LatencyRecord::new();
    for task in tasks {
        total.merge(task.await?);
    }
    let elapsed = started.elapsed();
    let client_cpu = cpu::client_cpu().saturating_sub(client_before);
    let requests = requests_sent(client).saturating_sub(requests_before);
    let node_cpu = match (node_before, cpu::processes_cpu(node_pids)) {
        (Some(before), Some(after)) if !node_pids.is_empty() => Some(after.saturating_sub(before)),
        _ => None,
    };
    progress.finish();
    // Let read repairs and late replies finish before the next run starts.
    client.settle().await;

    let secs = elapsed.as_secs_f64();
    let done = total.done();
    let n = client.ring().replication().n;
    let read_fanout = match client.read_fanout() {
        ReadFanout::Quorum => "quorum",
        ReadFanout::All => "all",
    }
    .to_string();
    Ok(Measurement {
        system: None,
        workload: spec.workload,
        concurrency: spec.concurrency,
        r: spec.r,
        w: spec.w,
        linearizable: spec.linearizable,
        n,
        value_size: data.value.len(),
        keys: data.keys.len() as u64,
        rpcs_per_node,
        read_fanout: Some(read_fanout),
        elapsed_secs: secs,
        timed_out: done < spec.ops,
        ops: total.figures(secs),
        client_cpu_us_per_op: client_cpu.as_secs_f64() * 1e6 / done.max(1) as f64,
        replica_requests_per_op: Some(requests as f64 / done.max(1) as f64),
        node_cpu_us_per_replica_op: node_cpu
            .map(|cpu| cpu.as_secs_f64() * 1e6 / requests.max(1) as f64),
        node_pids: node_pids.to_vec(),
        first_error: total.first_error().map(str::to_string),
    })
}

/// Reads and writes the client has sent to the nodes so far (hedges and read repairs included):
/// what the nodes served for it.
fn requests_sent(client: &Client) -> u64 {
    client.health().iter().map(|(_, health)| health.requests_sent()).sum()
}
