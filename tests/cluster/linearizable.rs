//! Recorded histories under faults, judged by the linearizability checker (`dynakv-check`).
//!
//! Eight clients (each its own `Client`: its own clock and writer id) read, write and delete
//! three keys with unique values, and every operation is recorded with its invocation and
//! response instants and its outcome (ok; failed, certainly not applied; or unknown, kept open
//! to the end of the history). Meanwhile a seeded nemesis slows, black-holes (and later lets
//! through what it held), drops connections to, and stops and restarts nodes, at times two at
//! once. In linearizable mode every history must pass the checker; in quorum mode the test
//! prints how many histories the checker rejects, a statistic and not an assertion.
//!
//! Replay one seed with `DYNAKV_LIN_SEED=<seed>`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dynakv_check::{Event, Operation, Outcome, Report};
use dynakv_client::{Client, ClientOptions, Consistency, ReadOptions, WriteOptions, WriteOutcome};
use dynakv_core::{Record, Timestamp, Version, now_ms};
use dynakv_proto::v1::{self, replica_client::ReplicaClient};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::{Fault, TestCluster, dynakv, text};

/// Nodes of the test ring: more than N, so sloppy quorums have stand-ins to count.
const NODES: usize = 5;
/// Clients recording operations at once.
const CLIENTS: u64 = 8;
/// Keys the clients share.
const KEYS: u32 = 3;
/// How long the clients run in one history.
const RUN: Duration = Duration::from_secs(3);
/// Most operations one client records in one history.
const MAX_OPS_PER_CLIENT: u32 = 400;
/// Most fault steps of the nemesis in one history.
const MAX_FAULT_STEPS: u32 = 40;

/// One recorded operation.
type Recorded = Event<String, String, Instant>;

/// The seeds to run: `DYNAKV_LIN_SEED` alone, or `defaults`.
fn seeds(defaults: &[u64]) -> Vec<u64> {
    match std::env::var("DYNAKV_LIN_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => defaults.to_vec(),
    }
}

/// A client of the cluster at `consistency`, with a short request deadline and no retries, so
/// black holes produce failures of unknown outcome and not just slow operations.
fn client(cluster: &TestCluster, consistency: Consistency) -> Client {
    let options = ClientOptions {
        request_timeout: Duration::from_millis(500),
        max_attempts: 1,
        consistency,
        ..ClientOptions::from_ring(&cluster.ring)
    };
    Client::builder(cluster.ring.clone()).options(options).build().expect("client")
}

/// What one client did: reads, writes and deletes of random keys until `RUN` is over.
async fn run_client(client: Client, id: u64, seed: u64) -> Vec<Recorded> {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(id));
    let started = Instant::now();
    let mut history = Vec::new();
    for i in 0..MAX_OPS_PER_CLIENT {
        if started.elapsed() >= RUN {
            break;
        }
        let key = format!("key-{}", rng.random_range(0..KEYS));
        let invoked = Instant::now();
        let roll = rng.random_range(0..10);
        let (op, outcome) = if roll < 5 {
            match client.get_with(key.clone(), ReadOptions::default()).await {
                Ok(value) => {
                    let saw = value.map(|v| String::from_utf8_lossy(&v).into_owned());
                    (Operation::Read { saw }, Outcome::Ok)
                }
                Err(_) => (Operation::Read { saw: None }, Outcome::Failed),
            }
        } else {
            let value = (roll < 9).then(|| format!("c{id}-{i}"));
            let result = match &value {
                Some(v) => client.put_with(key.clone(), v.clone(), WriteOptions::default()).await,
                None => client.delete_with(key.clone(), WriteOptions::default()).await,
            };
            let outcome = match result {
                Ok(_) => Outcome::Ok,
                Err(e) if e.write_outcome() == Some(WriteOutcome::NotApplied) => Outcome::Failed,
                Err(_) => Outcome::Unknown,
            };
            (Operation::Write { value }, outcome)
        };
        history.push(Event { key, op, outcome, invoked, returned: Instant::now() });
    }
    client.settle().await;
    history
}

/// The faults the nemesis may inject.
#[derive(Debug, Clone, Copy)]
enum Nemesis {
    /// Proxy faults only: delays, black holes, dropped connections.
    Proxy,
    /// Proxy faults and stopping and restarting nodes.
    WithRestarts,
}

/// Records one history: the clients run while the nemesis injects faults, then every fault is
/// healed and every node runs again.
async fn record(consistency: Consistency, nemesis: Nemesis, seed: u64) -> Vec<Recorded> {
    let mut cluster = TestCluster::start(NODES, 3, 2, 2).await;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(run_client(client(&cluster, consistency), id, seed)))
        .collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    for _ in 0..MAX_FAULT_STEPS {
        if started.elapsed() >= RUN {
            break;
        }
        let first = rng.random_range(0..NODES);
        // At times two nodes at once: then some keys lose their majority for a while.
        let nodes: Vec<usize> = if rng.random_ratio(1, 2) {
            vec![first, (first + 1 + rng.random_range(0..NODES - 1)) % NODES]
        } else {
            vec![first]
        };
        let hold = Duration::from_millis(rng.random_range(300..1_500));
        let kinds = match nemesis {
            Nemesis::Proxy => 3,
            Nemesis::WithRestarts => 4,
        };
        let kind = rng.random_range(0..kinds);
        match kind {
            0 => {
                let delay = Duration::from_millis(rng.random_range(1..40));
                nodes.iter().for_each(|&i| cluster.fault(i, Fault::Delay(delay)));
                tokio::time::sleep(hold).await;
            }
            // What a black hole held is let through when it lifts: late deliveries.
            1 => {
                nodes.iter().for_each(|&i| cluster.fault(i, Fault::Blackhole));
                tokio::time::sleep(hold).await;
            }
            2 => {
                nodes.iter().for_each(|&i| cluster.fault(i, Fault::Drop));
                tokio::time::sleep(hold).await;
            }
            _ => {
                for &i in &nodes {
                    cluster.stop(i).await;
                }
                tokio::time::sleep(hold).await;
                for &i in &nodes {
                    cluster.restart(i).await;
                }
            }
        }
        for &i in &nodes {
            cluster.fault(i, Fault::None);
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..100))).await;
    }
    let mut history = Vec::new();
    for client in clients {
        history.extend(client.await.expect("client task"));
    }
    cluster.shutdown().await;
    history
}

/// How many operations of each outcome, for the log.
fn summary(history: &[Recorded]) -> String {
    let count = |outcome| history.iter().filter(|e| e.outcome == outcome).count();
    format!(
        "{} ops: {} ok, {} failed, {} unknown",
        history.len(),
        count(Outcome::Ok),
        count(Outcome::Failed),
        count(Outcome::Unknown)
    )
}

/// The operations of one key in invocation order, relative to the first, for a failure message.
fn describe(history: &[Recorded], key: &str) -> String {
    let mut ops: Vec<_> = history.iter().filter(|e| e.key == key).collect();
    ops.sort_by_key(|e| e.invoked);
    let start = ops.first().map_or_else(Instant::now, |e| e.invoked);
    ops.iter()
        .map(|e| {
            let at = |t: Instant| t.duration_since(start).as_millis();
            format!("{:>6}..{:<6} {:?} {:?}\n", at(e.invoked), at(e.returned), e.op, e.outcome)
        })
        .collect()
}

/// True when the history exercised something: some write succeeded and some read saw a value.
fn exercised(history: &[Recorded]) -> bool {
    let ok = |e: &&Recorded| e.outcome == Outcome::Ok;
    history.iter().filter(ok).any(|e| matches!(&e.op, Operation::Write { value: Some(_) }))
        && history.iter().filter(ok).any(|e| matches!(&e.op, Operation::Read { saw: Some(_) }))
}

/// Records and checks one linearizable history; panics with the offending key's operations.
async fn linearizable_history_passes(nemesis: Nemesis, seed: u64) {
    let history = record(Consistency::Linearizable, nemesis, seed).await;
    eprintln!("linearizable seed {seed} ({nemesis:?}): {}", summary(&history));
    assert!(exercised(&history), "seed {seed}: nothing succeeded: {}", summary(&history));
    assert_linearizable(&history, &format!("seed {seed}"));
}

/// Fails the test, with the offending key's operations, unless the checker passes `history`.
fn assert_linearizable(history: &[Recorded], what: &str) {
    let report: Report<String> = dynakv_check::check(history);
    assert!(!report.gave_up(), "{what}: the checker gave up: {report:?}");
    if let Some(violation) = report.violations().next() {
        panic!(
            "{what}: key {} is not linearizable ({:?}); its operations (ms):\n{}",
            violation.key,
            violation.verdict,
            describe(history, &violation.key)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_histories_pass_under_proxy_faults() {
    for seed in seeds(&[1, 2, 3]) {
        linearizable_history_passes(Nemesis::Proxy, seed).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_histories_pass_across_restarts() {
    for seed in seeds(&[11, 12, 13]) {
        linearizable_history_passes(Nemesis::WithRestarts, seed).await;
    }
}

/// Quorum mode (R = W = 2 of N = 3) promises no linearizability: a write that missed its
/// quorum may be seen by one read and not by the next, and reads do not write back. This test
/// only measures how often the checker rejects its histories, for the README.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_mode_rejections_are_counted() {
    let seeds = seeds(&[21, 22, 23]);
    let mut rejected = 0;
    for &seed in &seeds {
        let history = record(Consistency::Quorum, Nemesis::WithRestarts, seed).await;
        let report = dynakv_check::check(&history);
        let bad = report.violations().count();
        eprintln!(
            "quorum seed {seed}: {}; {bad} of {} keys not linearizable",
            summary(&history),
            report.keys.len()
        );
        rejected += usize::from(bad > 0);
    }
    eprintln!(
        "quorum mode: the checker rejected {rejected} of {} histories (not an assertion)",
        seeds.len()
    );
}

/// Stores `record` on the node at `addr` alone, as a write that reached one replica.
async fn write_one(addr: SocketAddr, key: &str, record: Record) {
    let mut raw = ReplicaClient::connect(format!("http://{addr}")).await.expect("connect");
    let request = v1::WriteRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        record: Some(record.into()),
        hint_for: String::new(),
        ring_version: 0,
    };
    raw.write(request).await.expect("write");
}

/// What the node at `addr` holds for `key`, asked directly.
async fn read_one(addr: SocketAddr, key: &str) -> Option<Record> {
    let mut raw = ReplicaClient::connect(format!("http://{addr}")).await.expect("connect");
    let request = v1::ReadRequest { key: Bytes::copy_from_slice(key.as_bytes()), ring_version: 0 };
    let reply = raw.read(request).await.expect("read").into_inner();
    reply.record.map(|record| Record::try_from(record).expect("valid record"))
}

/// A value written by hand to one replica, `ahead_ms` in the future.
fn record_ahead(value: &'static str, ahead_ms: u64) -> Record {
    let version = Version::new(Timestamp::from_millis(now_ms() + ahead_ms), 7);
    Record::value(version, Bytes::from_static(value.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linearizable_get_writes_back_before_it_returns() {
    let cluster = TestCluster::start(3, 3, 2, 2).await;
    let addr = |i: usize| cluster.ring.nodes()[i].addr;
    write_one(addr(0), "k", record_ahead("partial", 0)).await;
    // The majority the get reaches is n1 (which holds the value) and n3 (which does not).
    cluster.fault(1, Fault::Blackhole);
    let client = crate::support::client_for(&cluster.ring);
    let linearizable =
        ReadOptions { consistency: Some(Consistency::Linearizable), ..Default::default() };
    let got = client.get_with("k", linearizable).await.expect("linearizable get");
    assert_eq!(got.as_deref(), Some(&b"partial"[..]));
    // Before the get returned, the value it returned was written back to a majority: n3 holds
    // it now, so no later get can miss it. (Background read repair, by contrast, waits for the
    // black-holed node's reply first.)
    let held = read_one(addr(2), "k").await.map(|r| r.value);
    assert_eq!(held.flatten().as_deref(), Some(&b"partial"[..]), "n3 was not written back");
    cluster.fault(1, Fault::None);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linearizable_put_writes_above_the_newest_version_of_a_majority() {
    let cluster = TestCluster::start(3, 3, 2, 2).await;
    let addr = |i: usize| cluster.ring.nodes()[i].addr;
    // A write from a clock 300 ms ahead (within max_skew_ms) that reached n1 alone.
    let ahead = record_ahead("ahead", 300);
    write_one(addr(0), "k", ahead.clone()).await;
    cluster.fault(1, Fault::Blackhole);
    let client = crate::support::client_for(&cluster.ring);
    let linearizable =
        WriteOptions { consistency: Some(Consistency::Linearizable), ..Default::default() };
    let written = client.put_with("k", "new", linearizable).await.expect("linearizable put");
    // The put read n1's version first and wrote above it: it is the key's value, not lost to
    // a write it came after.
    assert!(written.is_applied(), "{written:?}");
    assert!(written.version > ahead.version, "{} is not above {}", written.version, ahead.version);
    let held = read_one(addr(0), "k").await.and_then(|r| r.value);
    assert_eq!(held.as_deref(), Some(&b"new"[..]));
    cluster.fault(1, Fault::None);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_takes_a_consistency_level() {
    let mut cluster = TestCluster::start(3, 3, 2, 2).await;
    let ring = cluster.ring_path();
    let lin = ["--consistency", "linearizable"];
    let put = dynakv(&[&["put", "k", "v"][..], &lin].concat(), &ring).await;
    assert!(put.status.success(), "{}", text(&put.stderr));
    let get = dynakv(&[&["get", "k"][..], &lin].concat(), &ring).await;
    assert_eq!((get.status.code(), text(&get.stdout)), (Some(0), "v\n".into()));
    let one = dynakv(&["get", "k", "--consistency", "one"], &ring).await;
    assert_eq!(text(&one.stdout), "v\n");

    let both = dynakv(&[&["get", "k", "--r", "2"][..], &lin].concat(), &ring).await;
    assert_eq!(both.status.code(), Some(2));
    let stderr = text(&both.stderr);
    assert!(stderr.contains("read quorum 2 given with consistency linearizable"), "{stderr}");
    let unknown = dynakv(&["get", "k", "--consistency", "most"], &ring).await;
    assert_eq!(unknown.status.code(), Some(2), "clap refuses an unknown level");

    // Without a majority a linearizable delete never gets to write, and says so.
    cluster.stop(1).await;
    cluster.stop(2).await;
    let delete = dynakv(&[&["delete", "k"][..], &lin].concat(), &ring).await;
    assert_eq!(delete.status.code(), Some(2), "{}", text(&delete.stderr));
    let stderr = text(&delete.stderr);
    assert!(
        stderr.contains("linearizable write: reading the newest version missed its majority"),
        "{stderr}"
    );
    assert!(stderr.trim_end().ends_with("the write was not applied"), "{stderr}");
    cluster.shutdown().await;
}

/// Real node processes: 3 at first, a 4th added while 8 linearizable clients run, and one of
/// the first three killed with SIGKILL and restarted during the move. Majorities are joint
/// while the ring moves (the write round needs a majority of the current replicas and of the
/// target ones), so the history stays linearizable across the change and the crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_histories_pass_across_a_ring_change_and_a_kill_9() {
    use crate::support::{NodeProcess, QUIET, free_addr, ring_text_with, wait_until_up};
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let extra = format!("[storage]\nmin_free_mb = 0\n{QUIET}");
    let text = ring_text_with(&addrs, 3, 2, 2, &extra);
    let ring_path = dir.path().join("ring.toml");
    std::fs::write(&ring_path, &text).unwrap();
    let ring = dynakv_ring::Ring::parse(&text).unwrap();
    let data = |id: &str| dir.path().join(id);
    let mut nodes: Vec<Option<NodeProcess>> = (1..=3)
        .map(|i| Some(NodeProcess::start(&ring_path, &format!("n{i}"), &data(&format!("n{i}")))))
        .collect();
    let options = ClientOptions {
        request_timeout: Duration::from_millis(500),
        max_attempts: 1,
        consistency: Consistency::Linearizable,
        ..ClientOptions::from_ring(&ring)
    };
    let admin = Client::builder(ring.clone()).build().expect("client");
    wait_until_up(&admin).await;
    let seed = seeds(&[21])[0];
    let spawn_clients = |round: u64| -> Vec<_> {
        (0..CLIENTS)
            .map(|id| {
                let client =
                    Client::builder(ring.clone()).options(options.clone()).build().unwrap();
                tokio::spawn(run_client(client, id, seed + 1000 * round))
            })
            .collect()
    };
    let mut history = Vec::new();
    let clients = spawn_clients(0);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let n4 = free_addr();
    let _n4 = NodeProcess::start_with(
        &ring_path,
        "n4",
        &data("n4"),
        &["--addr", &n4.to_string(), "--join", &addrs[0].to_string()],
    );
    let mut joint = None;
    for _ in 0..100 {
        let change = dynakv_ring::Change::Add { id: "n4".into(), addr: n4 };
        match admin.change_ring(change).await {
            Ok(ring) => {
                joint = Some(ring);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let joint = joint.expect("ring add");
    assert!(joint.is_moving());
    // n2 dies mid-move and comes back on its data.
    nodes[1].take().unwrap().kill9();
    tokio::time::sleep(Duration::from_millis(400)).await;
    nodes[1] = Some(NodeProcess::start(&ring_path, "n2", &data("n2")));
    for client in clients {
        history.extend(client.await.expect("client task"));
    }
    // More rounds of clients (each started with the v1 ring file) until the finished ring has
    // been served for one whole round: the history spans the switch of reads to the new owners.
    let mut after_finish = 0;
    for round in 1..=20 {
        let clients = spawn_clients(round);
        for client in clients {
            history.extend(client.await.expect("client task"));
        }
        let version = admin.refresh_ring().await.map_or(0, |r| r.version());
        if version > joint.version() {
            after_finish += 1;
            if after_finish == 2 {
                break;
            }
        }
    }
    assert_eq!(after_finish, 2, "the ring change finished while clients ran");
    let ring = admin.refresh_ring().await.expect("refresh");
    eprintln!(
        "linearizable across a ring change (ring v{}): {}",
        ring.version(),
        summary(&history)
    );
    assert!(exercised(&history), "nothing succeeded: {}", summary(&history));
    assert_linearizable(&history, "across a ring change");
}
