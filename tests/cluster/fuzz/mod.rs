//! Bad input, fuzzed: every RPC handler of a real node is driven with generated malformed
//! messages ([`requests`]) and with garbage bytes in place of protobuf ([`garbage`]).
//!
//! Each test starts one node (`Node::serve` on a 127.0.0.1:0 listener, fjall storage) in a ring
//! of three whose other two nodes are down, so the node sees keys it replicates, keys it does not
//! (N = 2), and hints for owners it cannot reach. After every case:
//! - the node still answers `Health`;
//! - the status is the one a model of the node's checks predicts, and always a typed one:
//!   never `Unknown`, never `Cancelled` (what the caller sees when a handler panics), `Internal`
//!   only for bytes that are not the method's message;
//! - a refused case left storage unchanged: live keys, hints, the digest of the whole ring and
//!   the key, version and size of every stored record are what they were.
//!
//! Case counts are fixed ([`CASES`] per RPC) so the suite stays within CI time; each test prints
//! its seed and the status codes seen per RPC, and `PROPTEST_RNG_SEED=<seed>` replays a run.

mod garbage;
mod requests;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dynakv_core::{MAX_KEY_BYTES, Timestamp, now_ms};
use dynakv_node::{NodeConfig, StorageChoice};
use dynakv_proto::v1::{self, replica_client::ReplicaClient};
use dynakv_ring::{Ring, key_token};
use proptest::prelude::*;
use proptest::test_runner::{RngSeed, TestCaseError, TestRunner};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Code;
use tonic::transport::Channel;

use crate::support::{ring_text_with, spawn_node};

/// Generated cases per RPC: enough to reach every check, a few milliseconds each.
pub const CASES: u32 = 128;

/// The largest value the fuzzed node accepts: small, so values just over it are cheap to send.
const MAX_VALUE: usize = 1024;

/// Ring settings of the fuzzed node: no background pass (sweep, hint delivery, anti-entropy)
/// changes storage while a case is checked, and no free-space reserve refuses writes on a nearly
/// full disk.
const SETTINGS: &str = "[limits]\nmax_value_bytes = 1024\n\
    [storage]\nmin_free_mb = 0\n\
    [ttl]\nsweep_interval_ms = 3600000\n\
    [hints]\ninterval_ms = 3600000\n";

/// One node, `n1`; `n2` and `n3` are in its ring but down.
pub struct FuzzNode {
    /// The ring of all three.
    pub ring: Arc<Ring>,
    /// A raw client of `n1`.
    pub raw: ReplicaClient<Channel>,
    /// The channel `raw` uses, for calls with other codecs.
    pub channel: Channel,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    /// `n2` and `n3`: their addresses are held, and every connection is closed at once, so they
    /// are down for `n1`, at once, and no other test can take their ports.
    down: Vec<JoinHandle<()>>,
    _dir: TempDir,
}

impl FuzzNode {
    /// Starts the node and connects to it.
    pub async fn start() -> FuzzNode {
        let dir = tempfile::tempdir().expect("temp dir");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let mut addrs = vec![addr];
        let mut down = Vec::new();
        for _ in 0..2 {
            let refusing = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
            addrs.push(refusing.local_addr().unwrap());
            down.push(tokio::spawn(async move {
                while let Ok((connection, _)) = refusing.accept().await {
                    drop(connection);
                }
            }));
        }
        let text = ring_text_with(&addrs, 2, 1, 1, SETTINGS);
        let ring = Arc::new(Ring::parse(&text).expect("valid fuzz ring"));
        let config = NodeConfig::new(ring.clone(), "n1", StorageChoice::Fjall(dir.path().into()));
        let (stop, task) = spawn_node(listener, config);
        let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
        let raw = ReplicaClient::new(channel.clone()).max_decoding_message_size(64 << 20);
        FuzzNode { ring, raw, channel, running: Some((stop, task)), down, _dir: dir }
    }

    /// Stops the node cleanly.
    pub async fn stop(mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(());
            task.await.expect("node task");
        }
        self.down.iter().for_each(JoinHandle::abort);
    }

    /// The node answers `Health` as `n1`; a failure here means the last case (of `after`)
    /// broke it.
    pub async fn check_serving(
        &self,
        tally: &Tally,
        after: &str,
    ) -> Result<v1::HealthResponse, TestCaseError> {
        let health = self.raw.clone().health(v1::HealthRequest {}).await;
        tally.note("Health", health.as_ref().err().map(|s| s.code()));
        match health {
            Ok(reply) => {
                let reply = reply.into_inner();
                prop_assert_eq!(reply.node_id.as_str(), "n1");
                prop_assert!(
                    reply.degraded.is_empty(),
                    "degraded after {after}: {}",
                    reply.degraded
                );
                Ok(reply)
            }
            Err(status) => Err(TestCaseError::fail(format!(
                "node stopped serving after {after}: Health failed with {status:?}"
            ))),
        }
    }

    /// What the node stores, as far as its RPCs can tell.
    pub async fn snapshot(&self) -> Result<Snapshot, TestCaseError> {
        let fail = |what: &str, status: tonic::Status| {
            TestCaseError::fail(format!("{what} of the whole ring failed: {status:?}"))
        };
        let mut raw = self.raw.clone();
        let health = raw.health(v1::HealthRequest {}).await.map_err(|s| fail("health", s))?;
        let health = health.into_inner();
        let digest = raw
            .digest(v1::DigestRequest { spans: vec![WHOLE_RING], all_records: false })
            .await
            .map_err(|s| fail("digest", s))?
            .into_inner();
        let kept = raw
            .digest(v1::DigestRequest { spans: vec![WHOLE_RING], all_records: true })
            .await
            .map_err(|s| fail("kept digest", s))?
            .into_inner();
        let versions = raw
            .versions(v1::VersionsRequest { span: Some(WHOLE_RING) })
            .await
            .map_err(|s| fail("versions", s))?
            .into_inner();
        let records = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::hash::DefaultHasher::new();
            for entry in &versions.entries {
                let version = entry.version.unwrap_or_default();
                (&entry.key[..], version.timestamp, version.writer, entry.size).hash(&mut hasher);
            }
            hasher.finish()
        };
        // The digests the writer keeps must be those of every record the node lists, exactly.
        let mut listed = dynakv_storage::Digest::default();
        for entry in &versions.entries {
            let stored = dynakv_storage::stored_key(key_token(&entry.key), &entry.key);
            listed.add(&stored, entry.version.unwrap_or_default().into());
        }
        let kept_digest = dynakv_storage::Digest { hash: kept.digests[0], count: kept.counts[0] };
        if !kept.all_records || kept_digest != listed {
            return Err(TestCaseError::fail(format!(
                "kept digest {kept_digest:?} is not that of the listed records, {listed:?}"
            )));
        }
        Ok(Snapshot {
            keys: health.keys,
            hints: health.hints,
            digest: (digest.digests[0], digest.counts[0]),
            kept: (kept.digests[0], kept.counts[0]),
            records: (records, versions.entries.len()),
        })
    }

    /// True when this node is a replica of `key`.
    pub fn replicates(&self, key: &[u8]) -> bool {
        self.ring.preference_list(key_token(key)).contains(&0)
    }
}

impl Drop for FuzzNode {
    fn drop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(());
            task.abort();
        }
        self.down.iter().for_each(JoinHandle::abort);
    }
}

/// What a refused request must leave as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Live records (Health).
    keys: u64,
    /// Hints held (Health).
    hints: u64,
    /// Scanned digest and record count of the whole ring (Digest).
    digest: (u64, u64),
    /// Kept digest and record count of the whole ring (Digest with `all_records`).
    kept: (u64, u64),
    /// A hash of every record's key, version and value size, and how many (Versions).
    records: (u64, usize),
}

/// What a request should come to, by the node's documented checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Valid: answered, and it may change storage.
    Accept,
    /// Refused with this code, storage unchanged.
    Refuse(Code),
}

/// The codes a refusal may carry: each names what was wrong.
pub fn typed_refusal(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::ResourceExhausted
    )
}

/// True for a version stamped more than a minute away from now, which a clock-skew guard in the
/// node's write path may refuse (with a typed code) before or instead of the checks modeled here.
/// Versions the cases mean to be valid are stamped within milliseconds of now.
pub fn skew_guard_may_refuse(timestamp: u64) -> bool {
    Timestamp(timestamp).millis().abs_diff(now_ms()) > 60 * 1000
}

/// What a `Read` of `key` comes to on `node`.
pub fn expect_read(node: &FuzzNode, key: &[u8]) -> Expect {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        Expect::Refuse(Code::InvalidArgument)
    } else if !node.replicates(key) {
        Expect::Refuse(Code::FailedPrecondition)
    } else {
        Expect::Accept
    }
}

/// What a `Write` comes to on `node`, checks in the order the node makes them.
pub fn expect_write(node: &FuzzNode, request: &v1::WriteRequest) -> Expect {
    use Code::{FailedPrecondition, InvalidArgument};
    let key = &request.key[..];
    let owner = match request.hint_for.as_str() {
        "" | "n1" => None,
        id => match node.ring.node_index(id) {
            Ok(owner) => Some(owner),
            Err(_) => return Expect::Refuse(InvalidArgument),
        },
    };
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Expect::Refuse(InvalidArgument);
    }
    let replicas = node.ring.preference_list(key_token(key));
    if !replicas.contains(&owner.unwrap_or(0)) {
        return Expect::Refuse(FailedPrecondition);
    }
    let Some(record) = &request.record else { return Expect::Refuse(InvalidArgument) };
    if record.version.is_none() || (!record.tombstone && record.value.len() > MAX_VALUE) {
        return Expect::Refuse(InvalidArgument);
    }
    Expect::Accept
}

/// Status codes seen per RPC, printed at the end of a test.
#[derive(Default)]
pub struct Tally(Mutex<BTreeMap<String, BTreeMap<String, u64>>>);

impl Tally {
    /// Counts one case of `rpc` that ended in `code` (`Ok` for an answer).
    pub fn note(&self, rpc: &str, code: Option<Code>) {
        let code = code.map_or("Ok".to_string(), |c| format!("{c:?}"));
        let mut seen = self.0.lock().unwrap();
        *seen.entry(rpc.to_string()).or_default().entry(code).or_default() += 1;
    }

    /// Prints the cases and codes per RPC, and checks that no call ended in `Unknown` or
    /// `Cancelled` (a panicking handler).
    pub fn report(&self, test: &str) {
        let seen = self.0.lock().unwrap();
        for (rpc, codes) in seen.iter() {
            let total: u64 = codes.values().sum();
            eprintln!("{test}: {rpc}: {total} cases, {codes:?}");
            for untyped in ["Unknown", "Cancelled"] {
                assert!(!codes.contains_key(untyped), "{rpc} ended in {untyped}: {codes:?}");
            }
        }
    }
}

/// The whole ring as one span, starting at token 0: records come back in stored-key order.
pub const WHOLE_RING: v1::TokenSpan = v1::TokenSpan { start: u64::MAX, end: u64::MAX };

/// Runs generated cases of one test, from one seed that is printed up front:
/// `PROPTEST_RNG_SEED=<seed>` replays the whole test, node state included. (No regression file:
/// a case replayed alone would meet a node in another state.)
pub struct Fuzzer {
    test: &'static str,
    seed: u64,
}

impl Fuzzer {
    /// A fuzzer for `test`, seeded from `PROPTEST_RNG_SEED` or at random.
    pub fn new(test: &'static str) -> Fuzzer {
        let seed = match ProptestConfig::default().rng_seed {
            RngSeed::Fixed(seed) => seed,
            RngSeed::Random => {
                use std::hash::{BuildHasher, RandomState};
                RandomState::new().hash_one(std::time::SystemTime::now())
            }
        };
        eprintln!("{test}: PROPTEST_RNG_SEED={seed}");
        Fuzzer { test, seed }
    }

    /// Runs `check` on `cases` values of `strategy`; on a failure, prints the first failing
    /// input (the node's state goes on changing while proptest shrinks, so the first failure is
    /// often the telling one) and fails the test with the smallest failing input proptest finds.
    pub fn run<S: Strategy>(
        &self,
        rpc: &str,
        cases: u32,
        strategy: S,
        check: impl Fn(S::Value) -> Result<(), TestCaseError>,
    ) where
        S::Value: std::fmt::Debug + Clone,
    {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        use std::sync::atomic::{AtomicBool, Ordering};
        let failed = AtomicBool::new(false);
        let check = |value: S::Value| {
            let result = check(value.clone());
            if let Err(TestCaseError::Fail(reason)) = &result
                && !failed.swap(true, Ordering::Relaxed)
            {
                eprintln!("{}: {rpc}: first failure: {reason}\ninput: {value:?}", self.test);
            }
            result
        };
        let seed = self.seed ^ BuildHasherDefault::<DefaultHasher>::default().hash_one(rpc);
        let mut runner = TestRunner::new(ProptestConfig {
            cases,
            rng_seed: RngSeed::Fixed(seed),
            failure_persistence: None,
            // Shrinking replays cases against the live node: bound it.
            max_shrink_iters: 256,
            ..ProptestConfig::default()
        });
        if let Err(e) = runner.run(&strategy, check) {
            panic!("{}: {rpc}: {e} (replay: PROPTEST_RNG_SEED={})", self.test, self.seed);
        }
    }
}

/// A runtime for one test: the node and the cases run on it, the proptest runner outside it.
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Bytes of length `len` that are a function of `seed`: large keys and values without
/// generating each byte through proptest.
pub fn filler(len: usize, seed: u64) -> Bytes {
    let mut state = seed;
    (0..len)
        .map(|_| {
            // splitmix64
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as u8
        })
        .collect()
}

/// A u64 at the edges as often as in between.
pub fn edge_u64() -> BoxedStrategy<u64> {
    prop_oneof![Just(0), Just(1), Just(u64::MAX), Just(u64::MAX - 1), any::<u64>()].boxed()
}

/// Keys: empty, short, at and just over the size limit, and over 64 KiB.
pub fn key() -> BoxedStrategy<Bytes> {
    prop_oneof![
        1 => Just(Bytes::new()),
        12 => prop::collection::vec(any::<u8>(), 1..24).prop_map(Bytes::from),
        1 => (MAX_KEY_BYTES - 1..=MAX_KEY_BYTES + 2, any::<u64>())
            .prop_map(|(len, seed)| filler(len, seed)),
        1 => (64 * 1024..=64 * 1024 + 64usize, any::<u64>())
            .prop_map(|(len, seed)| filler(len, seed)),
    ]
    .boxed()
}

/// Versions at 0, `u64::MAX` and in between, for both parts, sometimes missing; mostly near now.
pub fn version() -> BoxedStrategy<Option<v1::Version>> {
    let now = || Timestamp::from_millis(now_ms()).0;
    let timestamp = prop_oneof![
        4 => (0u64..1 << 20).prop_map(move |d| now() + d),
        1 => Just(0),
        1 => Just(1),
        1 => Just(u64::MAX),
        1 => Just(u64::MAX - 1),
        1 => any::<u64>(),
    ];
    prop_oneof![
        12 => (timestamp, edge_u64())
            .prop_map(|(timestamp, writer)| Some(v1::Version { timestamp, writer })),
        1 => Just(None),
    ]
    .boxed()
}

/// Records: values empty, small, at and over the limit; tombstones with and without a value;
/// expiries at 0, in the past, in the future and at `u64::MAX`.
pub fn record() -> BoxedStrategy<Option<v1::Record>> {
    let value = prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..16).prop_map(Bytes::from),
        1 => (MAX_VALUE - 1..=MAX_VALUE + 2, any::<u64>()).prop_map(|(len, s)| filler(len, s)),
        1 => (MAX_VALUE * 2..=MAX_VALUE * 4, any::<u64>()).prop_map(|(len, s)| filler(len, s)),
    ];
    let expires_at_ms = prop_oneof![
        4 => Just(0),
        1 => Just(1),
        1 => Just(u64::MAX),
        1 => Just(u64::MAX - 1),
        1 => (0u64..1 << 30).prop_map(|d| now_ms() + d),
        1 => any::<u64>(),
    ];
    prop_oneof![
        12 => (version(), any::<bool>(), value, expires_at_ms).prop_map(
            |(version, tombstone, value, expires_at_ms)| {
                Some(v1::Record { version, tombstone, value, expires_at_ms })
            }
        ),
        1 => Just(None),
    ]
    .boxed()
}

/// `hint_for`: none, this node, the other nodes, and ids the ring does not know.
pub fn hint_for() -> BoxedStrategy<String> {
    prop_oneof![
        8 => Just(String::new()),
        2 => Just("n1".to_string()),
        2 => Just("n2".to_string()),
        2 => Just("n3".to_string()),
        1 => Just("N2".to_string()),
        1 => Just("n2 ".to_string()),
        1 => Just("n4".to_string()),
        1 => "[a-z0-9\\x00-\\x1f\u{80}-\u{10ffff}]{1,12}",
        1 => (1024usize..4096).prop_map(|len| "n".repeat(len)),
    ]
    .boxed()
}

/// Write requests from all of the above.
pub fn write_request() -> BoxedStrategy<v1::WriteRequest> {
    (key(), record(), hint_for())
        .prop_map(|(key, record, hint_for)| v1::WriteRequest {
            ring_version: 0,
            key,
            record,
            hint_for,
        })
        .boxed()
}

/// Token spans: at the edges of the ring, empty-looking (start == end, the whole ring),
/// reversed (wrapping past zero), and random.
pub fn span() -> BoxedStrategy<v1::TokenSpan> {
    prop_oneof![
        4 => (edge_u64(), edge_u64()).prop_map(|(start, end)| v1::TokenSpan { start, end }),
        1 => edge_u64().prop_map(|t| v1::TokenSpan { start: t, end: t }),
        1 => any::<u64>().prop_map(|t| v1::TokenSpan { start: t, end: t.wrapping_sub(1) }),
        1 => any::<u64>().prop_map(|t| v1::TokenSpan { start: t, end: t.wrapping_add(1) }),
    ]
    .boxed()
}

/// True when `token` lies in `span`: `start < token <= end` clockwise; `start == end` is the
/// whole ring.
pub fn in_span(span: v1::TokenSpan, token: u64) -> bool {
    span.start == span.end
        || token.wrapping_sub(span.start).wrapping_sub(1) < span.end.wrapping_sub(span.start)
}

/// A key this node replicates, made from `seed`.
pub fn owned_key(node: &FuzzNode, seed: u64) -> Bytes {
    (0u64..)
        .map(|i| Bytes::from(format!("fuzz-{seed}-{i}")))
        .find(|k| node.replicates(k))
        .expect("some key is ours")
}

/// A generated input whose `Debug` is cut short: keys of 64 KiB and batches of 10,000 operations
/// would otherwise bury a failure report.
#[derive(Clone)]
pub struct Case<T>(pub T);

impl<T: std::fmt::Debug> std::fmt::Debug for Case<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 1500;
        let full = format!("{:?}", self.0);
        match full.char_indices().nth(SHOWN) {
            Some((cut, _)) => write!(f, "{}... ({} more chars)", &full[..cut], full.len() - cut),
            None => f.write_str(&full),
        }
    }
}

/// Checks how one call of `rpc` ended against what the model expects: the node still serves; a
/// refusal carries the expected code (or, when `skew`, any typed one) and changed nothing since
/// `before`; an answer came only for a valid request. Returns the answer, if any.
pub async fn settle<T>(
    node: &FuzzNode,
    tally: &Tally,
    rpc: &str,
    expect: Expect,
    skew: bool,
    before: Snapshot,
    result: Result<tonic::Response<T>, tonic::Status>,
) -> Result<Option<T>, TestCaseError> {
    tally.note(rpc, result.as_ref().err().map(|s| s.code()));
    node.check_serving(tally, rpc).await?;
    let status = match result {
        Ok(answer) => {
            if let Expect::Refuse(code) = expect {
                return Err(TestCaseError::fail(format!(
                    "{rpc} answered a request it should refuse with {code:?}"
                )));
            }
            return Ok(Some(answer.into_inner()));
        }
        Err(status) => status,
    };
    // `Internal` and `Unimplemented` pass only where the model predicts them (bytes that are
    // not the method's message, unknown methods); `Unknown` and `Cancelled` (a handler that
    // panicked resets its stream) never do.
    let typed = typed_refusal(status.code());
    match expect {
        Expect::Refuse(code) => prop_assert!(
            status.code() == code || (skew && typed),
            "{} refused with {:?}, expected {:?}",
            rpc,
            status,
            code
        ),
        Expect::Accept => {
            prop_assert!(skew && typed, "{} refused a valid request: {:?}", rpc, status)
        }
    }
    prop_assert_eq!(
        node.snapshot().await?,
        before,
        "{} refused ({:?}) but changed storage",
        rpc,
        status
    );
    Ok(None)
}
