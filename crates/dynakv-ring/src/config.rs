//! The ring file: nodes, replication defaults and cluster-wide settings, with documented defaults.
//!
//! ```toml
//! version = 1           # ring version, raised on every membership change (default 1)
//! vnodes = 64           # tokens per node (default 64)
//!
//! [replication]
//! n = 3                 # replicas per key
//! r = 2                 # default read quorum
//! w = 2                 # default write quorum
//!
//! [timeouts]
//! request_ms = 1000     # deadline of one replica request (default 1000)
//! connect_ms = 500      # deadline to open a connection to a node (default 500)
//!
//! [limits]
//! max_value_bytes = 1048576   # largest value accepted (default 1 MiB, at most 64 MiB)
//!
//! [storage]
//! sync = "os"           # "os": ack once the journal is in the OS (survives a process crash);
//!                       # "always": fsync before ack (survives power loss), group-committed
//! cache_mb = 256        # block cache of the storage engine (default 256 MiB)
//! min_free_mb = 256     # below this much free disk space, new values are refused (default 256)
//! check_interval_ms = 1000   # free-space checks and storage recovery attempts (default 1 s)
//!
//! [hints]
//! interval_ms = 1000         # how often a node tries to hand its hints off (default 1 s);
//!                            # hints are kept until delivered, however long that takes
//!
//! [anti_entropy]
//! enabled = true             # periodic Merkle-digest comparison with co-replicas (default on)
//! interval_ms = 30000        # time between rounds (default 30 s)
//! max_keys_per_sec = 20000   # rate limit on keys a round streams (default 20,000)
//!
//! [tombstones]
//! grace_ms = 21600000        # tombstones are kept at least this long (default 6 h)
//! [ttl]
//! sweep_interval_ms = 2000    # how often each node rewrites expired records as tombstones (default 2000)
//!
//! [clocks]
//! max_skew_ms = 500     # a node refuses writes stamped further ahead of its clock (default 500)
//!
//! [tls]                 # optional: mutual TLS on every connection (see `dynakv certs init`)
//! ca = "certs/ca.pem"          # the cluster CA every certificate is checked against
//! node_cert = "certs/{id}.pem" # a node's certificate and key; {id} is the node's id
//! node_key = "certs/{id}.key"
//! client_cert = "certs/client.pem"   # what data commands (put, get, status) present
//! client_key = "certs/client.key"
//! admin_cert = "certs/admin.pem"     # what admin commands (dump, repair, handoff) present
//! admin_key = "certs/admin.key"
//!                       # relative paths are relative to the ring file's directory
//! [membership]
//! stream_mb_per_sec = 256    # rate limit on the range streaming of a membership change (default 256)
//! gossip_interval_ms = 1000  # how often a node compares ring versions with a peer (default 1 s)
//!
//! [[nodes]]
//! id = "n1"
//! addr = "127.0.0.1:7401"
//! metrics_addr = "127.0.0.1:8401"   # Prometheus /metrics (default: the gRPC port + 1000)
//! state = "normal"      # "joining": owns no tokens yet, serves no keys until added;
//!                       # "normal": owns its tokens (default);
//!                       # "leaving", "dead": still own their tokens until a change removes them
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::RingError;
use crate::node_state::NodeState;

/// The largest N supported: preference lists are kept inline, without allocation, up to this size.
pub const MAX_N: usize = 16;
/// The largest value size a ring file may allow; gRPC messages are sized from it.
pub const MAX_VALUE_BYTES_LIMIT: usize = 64 * 1024 * 1024;

/// A parsed ring file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingConfig {
    /// Ring version, raised on every membership change so nodes and clients notice a new ring.
    #[serde(default = "default_version")]
    pub version: u64,
    /// True while a membership change moves ranges: joining nodes are new owners in the target
    /// placement, leaving and dead nodes still own their ranges, reads use the current placement
    /// and writes go to both. Set by the cluster itself, never by hand.
    #[serde(default, skip_serializing_if = "is_false")]
    pub moving: bool,
    /// Tokens per node; more tokens spread load more evenly at a small cost in lookup time.
    #[serde(default = "default_vnodes")]
    pub vnodes: u32,
    /// Replicas per key and the default quorums.
    pub replication: Replication,
    /// Request and connection deadlines.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Size limits.
    #[serde(default)]
    pub limits: Limits,
    /// Durability of acknowledged writes.
    #[serde(default)]
    pub storage: StorageSettings,
    /// Hinted handoff.
    #[serde(default)]
    pub hints: HintSettings,
    /// Background replica comparison.
    #[serde(default)]
    pub anti_entropy: AntiEntropySettings,
    /// Tombstone collection.
    #[serde(default)]
    pub tombstones: TombstoneSettings,
    /// Expiry of records written with a time-to-live.
    #[serde(default)]
    pub ttl: TtlSettings,
    /// How far clocks may disagree.
    #[serde(default)]
    pub clocks: ClockSettings,
    /// Mutual TLS on every connection; `None`: plaintext (loopback addresses only, unless a
    /// node is started with `--insecure`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSettings>,
    /// Membership changes: streaming rate and ring gossip.
    #[serde(default)]
    pub membership: MembershipSettings,
    /// The nodes, in any order; placement depends only on their ids.
    pub nodes: Vec<NodeSpec>,
}

/// Replicas per key and the default read and write quorums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replication {
    /// Replicas per key.
    pub n: usize,
    /// Replies a read waits for; R + W > N gives read-your-writes when no node fails.
    pub r: usize,
    /// Acknowledgements a write waits for.
    pub w: usize,
}

/// Request and connection deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// Deadline of one replica request, in milliseconds.
    pub request_ms: u64,
    /// Deadline to open a connection to a node, in milliseconds.
    pub connect_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { request_ms: 1000, connect_ms: 500 }
    }
}

/// Size limits enforced by clients and nodes alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest value accepted, in bytes.
    pub max_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_value_bytes: dynakv_core::DEFAULT_MAX_VALUE_BYTES }
    }
}

/// How durable a write is when a node acknowledges it, and how much memory storage may cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    /// When the node's journal is flushed before an acknowledgement.
    pub sync: SyncPolicy,
    /// Block cache of the storage engine, in MiB. Every write reads the stored version first
    /// (the merge rule), so a cache that holds the working set saves a disk read per write.
    pub cache_mb: u64,
    /// Free space, in MiB, below which the node refuses new values (deletes, hint handoff and
    /// compaction go on, so space can be freed): the disk never fills up under the node. 0: off.
    pub min_free_mb: u64,
    /// Milliseconds between checks of free space, and between attempts to recover storage that
    /// failed.
    pub check_interval_ms: u64,
}

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings {
            sync: SyncPolicy::Os,
            cache_mb: 256,
            min_free_mb: 256,
            check_interval_ms: 1000,
        }
    }
}

/// When a node's journal reaches stable storage relative to its acknowledgement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncPolicy {
    /// Ack once the journal is handed to the OS: survives a crash of the node process.
    #[default]
    Os,
    /// Fsync before ack: survives power loss. Concurrent writes share one fsync.
    Always,
}

/// Hinted handoff: how often hints are delivered. Hints never expire: one may be the only copy
/// of an acknowledged write, and tombstones wait for every node's hints instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HintSettings {
    /// Milliseconds between delivery attempts.
    pub interval_ms: u64,
}

impl Default for HintSettings {
    fn default() -> Self {
        HintSettings { interval_ms: 1000 }
    }
}

/// Anti-entropy: periodic comparison of Merkle digests with the other replicas of each range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AntiEntropySettings {
    /// Run rounds periodically; `dynakv repair` runs one on demand either way.
    pub enabled: bool,
    /// Milliseconds between rounds.
    pub interval_ms: u64,
    /// Most keys a round streams per second, both directions together.
    pub max_keys_per_sec: u64,
}

impl Default for AntiEntropySettings {
    fn default() -> Self {
        AntiEntropySettings { enabled: true, interval_ms: 30_000, max_keys_per_sec: 20_000 }
    }
}

/// Tombstone collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TombstoneSettings {
    /// Milliseconds a tombstone (or expired record) is kept at least. It is collected after that
    /// only once an anti-entropy round has found every replica of its range in agreement and no
    /// node holding hints for the range.
    pub grace_ms: u64,
}

impl Default for TombstoneSettings {
    fn default() -> Self {
        TombstoneSettings { grace_ms: 6 * 3600 * 1000 }
    }
}

/// How nodes deal with records written with a time-to-live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TtlSettings {
    /// Milliseconds between two sweeps of a node's storage; each sweep rewrites the records that
    /// have expired as tombstones of the same version, dropping their values.
    pub sweep_interval_ms: u64,
}

impl Default for TtlSettings {
    fn default() -> Self {
        TtlSettings { sweep_interval_ms: 2000 }
    }
}

/// How far the clocks of writers and nodes may disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClockSettings {
    /// A node refuses a write whose timestamp is more than this many milliseconds ahead of its
    /// own clock, and no timestamp moves a node's or a client's clock further ahead than this, so
    /// one fast clock cannot put every later write in the future. Writes carry their writer's
    /// time: a write stamped far ahead would otherwise win over every write made after it until
    /// the real time caught up with it.
    pub max_skew_ms: u64,
}

impl Default for ClockSettings {
    fn default() -> Self {
        ClockSettings { max_skew_ms: 500 }
    }
}

/// Mutual TLS: the cluster CA and the certificate files each kind of peer presents. Every file
/// is PEM; a relative path is relative to the ring file's directory. The certificate and key of a
/// kind are set together or not at all; a process needs only the ones of its own kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The cluster CA: nodes and clients accept only certificates it signed.
    pub ca: PathBuf,
    /// A node's certificate (server and peer client); `{id}` is replaced by the node's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_cert: Option<PathBuf>,
    /// A node's private key; `{id}` is replaced by the node's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_key: Option<PathBuf>,
    /// The certificate data commands present (role client: reads, writes, status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    /// The certificate admin commands present (role admin: also dump, repair, handoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_cert: Option<PathBuf>,
    /// The admin certificate's private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_key: Option<PathBuf>,
    /// Where relative paths start: the ring file's directory when loaded with
    /// [`Ring::load`](crate::Ring::load), the current directory otherwise. Not in the file.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl TlsSettings {
    /// `path` resolved against [`TlsSettings::base_dir`] (absolute paths stay as they are).
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.base_dir.join(path)
    }

    /// The CA file, resolved.
    pub fn ca_path(&self) -> PathBuf {
        self.resolve(&self.ca)
    }

    /// Node `id`'s certificate and key files, resolved; `None` when the table names none.
    pub fn node_files(&self, id: &str) -> Option<(PathBuf, PathBuf)> {
        let for_id =
            |p: &PathBuf| self.resolve(Path::new(&p.to_string_lossy().replace("{id}", id)));
        Some((for_id(self.node_cert.as_ref()?), for_id(self.node_key.as_ref()?)))
    }

    /// The client certificate and key files, resolved; `None` when the table names none.
    pub fn client_files(&self) -> Option<(PathBuf, PathBuf)> {
        Some((self.resolve(self.client_cert.as_ref()?), self.resolve(self.client_key.as_ref()?)))
    }

    /// The admin certificate and key files, resolved; `None` when the table names none.
    pub fn admin_files(&self) -> Option<(PathBuf, PathBuf)> {
        Some((self.resolve(self.admin_cert.as_ref()?), self.resolve(self.admin_key.as_ref()?)))
    }

    /// The first certificate set without its key, or key without its certificate.
    fn unpaired(&self) -> Option<(&'static str, &'static str)> {
        [
            ("tls.node_cert", self.node_cert.is_some(), "tls.node_key", self.node_key.is_some()),
            (
                "tls.client_cert",
                self.client_cert.is_some(),
                "tls.client_key",
                self.client_key.is_some(),
            ),
            (
                "tls.admin_cert",
                self.admin_cert.is_some(),
                "tls.admin_key",
                self.admin_key.is_some(),
            ),
        ]
        .into_iter()
        .find_map(|(cert, has_cert, key, has_key)| match (has_cert, has_key) {
            (true, false) => Some((cert, key)),
            (false, true) => Some((key, cert)),
            _ => None,
        })
    }
}

/// How membership changes move data and how nodes learn of new rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MembershipSettings {
    /// Most MiB per second a new owner streams from one holder of a range it gains.
    pub stream_mb_per_sec: u64,
    /// Milliseconds between two ring-version comparisons of a node with one peer; a node that
    /// sees a newer ring anywhere (a reply, a request, a peer) fetches it at once as well.
    pub gossip_interval_ms: u64,
}

impl Default for MembershipSettings {
    fn default() -> Self {
        MembershipSettings { stream_mb_per_sec: 256, gossip_interval_ms: 1000 }
    }
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// One node of the ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Stable name; placement is derived from it, so renaming a node moves its data.
    pub id: String,
    /// Where the node serves gRPC.
    pub addr: SocketAddr,
    /// Where the node serves Prometheus metrics; by default its gRPC port + 1000 on the same host
    /// (see [`NodeSpec::metrics_addr`]).
    #[serde(default, rename = "metrics_addr", skip_serializing_if = "Option::is_none")]
    pub metrics: Option<SocketAddr>,
    /// Where the node is in its life in the ring; only `joining` nodes are left out of placement.
    #[serde(default, skip_serializing_if = "NodeState::is_normal")]
    pub state: NodeState,
}

impl NodeSpec {
    /// Where the node serves metrics: `metrics_addr` if the ring file sets it, otherwise the gRPC
    /// port + 1000 on the same host; `None` when that port would not exist.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.or_else(|| {
            let port = self.addr.port().checked_add(1000)?;
            Some(SocketAddr::new(self.addr.ip(), port))
        })
    }
}

fn default_version() -> u64 {
    1
}

fn default_vnodes() -> u32 {
    64
}

impl RingConfig {
    /// Parses a ring file's text and validates it.
    pub fn parse(text: &str) -> Result<Self, RingError> {
        let config: RingConfig = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks everything that would make the ring unusable, naming the first problem found.
    pub fn validate(&self) -> Result<(), RingError> {
        if self.nodes.is_empty() {
            return Err(RingError::NoNodes);
        }
        let mut ids = HashSet::new();
        let mut addrs = HashSet::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if node.id.trim().is_empty() {
                return Err(RingError::EmptyId(i + 1));
            }
            if !ids.insert(node.id.as_str()) {
                return Err(RingError::DuplicateId(node.id.clone()));
            }
            if !addrs.insert(node.addr) {
                return Err(RingError::DuplicateAddr(node.addr.to_string()));
            }
        }
        let Replication { n, r, w } = self.replication;
        for (name, value) in [("n", n), ("r", r), ("w", w)] {
            if value == 0 || value > MAX_N {
                return Err(RingError::OutOfRange { name, value: value as u64, max: MAX_N as u64 });
            }
        }
        for (name, quorum) in [("r", r), ("w", w)] {
            if quorum > n {
                return Err(RingError::QuorumAboveN { name, quorum, n });
            }
        }
        if n > self.nodes.len() {
            return Err(RingError::NAboveNodes { n, nodes: self.nodes.len() });
        }
        let owners = self.nodes.iter().filter(|node| node.state.owns_tokens()).count();
        if n > owners {
            let joining = self.nodes.len() - owners;
            return Err(RingError::NAboveOwners { n, owners, joining });
        }
        if self.moving {
            let target = self.nodes.iter().filter(|node| node.state.in_target()).count();
            if n > target {
                return Err(RingError::NAboveTarget { n, target });
            }
        }
        if self.vnodes == 0 || self.vnodes > 4096 {
            return Err(RingError::Setting {
                name: "vnodes",
                value: self.vnodes.into(),
                range: "1..=4096",
            });
        }
        for (name, value) in [
            ("timeouts.request_ms", self.timeouts.request_ms),
            ("timeouts.connect_ms", self.timeouts.connect_ms),
            ("ttl.sweep_interval_ms", self.ttl.sweep_interval_ms),
            ("storage.check_interval_ms", self.storage.check_interval_ms),
        ] {
            if value == 0 {
                return Err(RingError::Setting { name, value, range: "at least 1" });
            }
        }
        for (name, value) in [
            ("hints.interval_ms", self.hints.interval_ms),
            ("anti_entropy.interval_ms", self.anti_entropy.interval_ms),
            ("anti_entropy.max_keys_per_sec", self.anti_entropy.max_keys_per_sec),
            ("membership.stream_mb_per_sec", self.membership.stream_mb_per_sec),
            ("membership.gossip_interval_ms", self.membership.gossip_interval_ms),
        ] {
            if value == 0 {
                return Err(RingError::Setting { name, value, range: "at least 1" });
            }
        }
        if let Some((set, missing)) = self.tls.as_ref().and_then(TlsSettings::unpaired) {
            return Err(RingError::TlsUnpaired { set, missing });
        }
        if self.limits.max_value_bytes > MAX_VALUE_BYTES_LIMIT {
            return Err(RingError::Setting {
                name: "limits.max_value_bytes",
                value: self.limits.max_value_bytes as u64,
                range: "at most 67108864",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [replication]
        n = 3
        r = 2
        w = 2
        [[nodes]]
        id = "n1"
        addr = "127.0.0.1:7401"
        [[nodes]]
        id = "n2"
        addr = "127.0.0.1:7402"
        [[nodes]]
        id = "n3"
        addr = "127.0.0.1:7403"
    "#;

    fn with(replace: &str, by: &str) -> Result<RingConfig, RingError> {
        RingConfig::parse(&GOOD.replace(replace, by))
    }

    #[test]
    fn parses_with_defaults() {
        let config = RingConfig::parse(GOOD).unwrap();
        assert_eq!(config.version, 1);
        assert_eq!(config.vnodes, 64);
        assert_eq!(config.replication, Replication { n: 3, r: 2, w: 2 });
        assert_eq!(config.timeouts, Timeouts::default());
        assert_eq!(config.limits.max_value_bytes, 1024 * 1024);
        assert_eq!(config.storage.sync, SyncPolicy::Os);
        assert!(config.anti_entropy.enabled);
        assert_eq!(config.hints.interval_ms, 1000);
        assert_eq!(config.ttl.sweep_interval_ms, 2000);
        assert_eq!(config.clocks.max_skew_ms, 500);
        let loose = RingConfig::parse(&format!("[clocks]\nmax_skew_ms = 7200000\n{GOOD}"));
        assert_eq!(loose.unwrap().clocks.max_skew_ms, 7_200_000);
    }

    #[test]
    fn tls_paths_resolve_against_the_ring_file() {
        let text = format!(
            "[tls]\nca = \"certs/ca.pem\"\nnode_cert = \"certs/{{id}}.pem\"\n\
             node_key = \"/abs/{{id}}.key\"\n{GOOD}"
        );
        let mut tls = RingConfig::parse(&text).unwrap().tls.unwrap();
        tls.base_dir = PathBuf::from("/etc/dynakv");
        assert_eq!(tls.ca_path(), Path::new("/etc/dynakv/certs/ca.pem"));
        let (cert, key) = tls.node_files("n2").unwrap();
        assert_eq!(cert, Path::new("/etc/dynakv/certs/n2.pem"));
        assert_eq!(key, Path::new("/abs/n2.key"));
        assert!(tls.client_files().is_none());
        assert!(RingConfig::parse(GOOD).unwrap().tls.is_none());
    }

    #[test]
    fn names_each_problem() {
        let msg = |r: Result<RingConfig, RingError>| r.unwrap_err().to_string();
        assert!(msg(with("\"n2\"", "\"n1\"")).contains("\"n1\" appears more than once"));
        assert!(msg(with("7402", "7401")).contains("127.0.0.1:7401 is used by more than one"));
        assert!(msg(with("r = 2", "r = 4")).contains("replication.r = 4 is larger than n = 3"));
        assert!(msg(with("w = 2", "w = 0")).contains("replication.w = 0 is out of range"));
        assert!(msg(with("n = 3", "n = 3\nx = 1")).contains("unknown field"));
        assert!(msg(with("127.0.0.1:7403", "nowhere")).contains("malformed ring file"));
        assert!(msg(with("\"n3\"", "\"\"")).contains("node #3 has an empty id"));
        let no_sweep = RingConfig::parse(&format!("[ttl]\nsweep_interval_ms = 0\n{GOOD}"));
        assert!(msg(no_sweep).contains("ttl.sweep_interval_ms = 0"));
        let two_nodes = GOOD.split("[[nodes]]").take(3).collect::<Vec<_>>().join("[[nodes]]");
        assert!(msg(RingConfig::parse(&two_nodes)).contains("n = 3 but the ring has only 2 nodes"));
        assert!(msg(RingConfig::parse("not toml at all")).contains("malformed ring file"));
        let half_pair = format!("[tls]\nca = \"ca.pem\"\nclient_cert = \"c.pem\"\n{GOOD}");
        assert!(
            msg(RingConfig::parse(&half_pair))
                .contains("sets tls.client_cert but not tls.client_key")
        );
        let tls_typo = format!("[tls]\nca = \"ca.pem\"\ncert = \"c.pem\"\n{GOOD}");
        assert!(msg(RingConfig::parse(&tls_typo)).contains("unknown field `cert`"));
        let hint_window = format!("{GOOD}\n[hints]\nwindow_ms = 100\n");
        assert!(msg(RingConfig::parse(&hint_window)).contains("unknown field `window_ms`"));
    }
}
