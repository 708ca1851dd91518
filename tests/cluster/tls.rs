//! Mutual TLS and roles: whole TLS clusters work (round trip, anti-entropy between nodes), and
//! callers without a certificate, with one from another CA, or with the wrong role are refused
//! with a message that says what is needed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use dynakv_client::{Caller, Client, ClientError, ClientOptions, ReplicaError};
use dynakv_core::{Record, Timestamp, Version};
use dynakv_node::{NodeConfig, StorageChoice};
use dynakv_proto::v1::{self, replica_client::ReplicaClient};
use dynakv_ring::{Ring, TlsSettings};
use dynakv_tls::issue;
use futures::StreamExt;
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::support::{
    NodeProcess, PATIENCE, QUIET, TEST_REQUEST_TIMEOUT, TestCluster, dynakv, eventually, free_addr,
    ring_text, ring_text_with, spawn_node, text, wait_until_up,
};

/// Hints stay where they are unless a test hands them off: it sees only the repairs it causes.
const NO_HANDOFF: &str = "[hints]\ninterval_ms = 3600000\n";

/// A CA and certificates for nodes n1..n3 serving on 127.0.0.1 (any port), a client and an admin.
fn issue_certs(dir: &Path) -> TlsSettings {
    let addrs: Vec<_> =
        (1..=3).map(|i| format!("127.0.0.1:{}", 7400 + i).parse().unwrap()).collect();
    let ring = Ring::parse(&ring_text_with(&addrs, 3, 2, 2, QUIET)).unwrap();
    issue::init(&ring, dir).expect("issue certificates")
}

/// A client of `ring` presenting `caller`'s certificate, with test deadlines.
fn client_as(ring: &Ring, caller: Caller) -> Client {
    let options =
        ClientOptions { request_timeout: TEST_REQUEST_TIMEOUT, ..ClientOptions::from_ring(ring) };
    Client::builder(ring.clone()).options(options).caller(caller).build().expect("client")
}

/// A raw gRPC channel to `addr` that trusts `ca` and presents `identity` (none: no certificate).
async fn raw(
    addr: std::net::SocketAddr,
    ca: &Path,
    identity: Option<(PathBuf, PathBuf)>,
) -> ReplicaClient<Channel> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
        .domain_name(addr.ip().to_string());
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(cert).unwrap(),
            std::fs::read(key).unwrap(),
        ));
    }
    let endpoint =
        Endpoint::from_shared(format!("https://{addr}")).unwrap().tls_config(tls).unwrap();
    ReplicaClient::new(endpoint.connect().await.expect("TLS handshake"))
}

#[tokio::test]
async fn a_tls_cluster_round_trips_and_runs_anti_entropy() {
    let certs = tempfile::tempdir().unwrap();
    let tls = issue_certs(certs.path());
    let extra = format!("{}\n{NO_HANDOFF}", issue::tls_table(&tls));
    let mut cluster = TestCluster::start_with(3, 3, 2, 2, &extra).await;
    let client = cluster.client();
    wait_until_up(&client).await;
    client.put("greeting", "hello").await.expect("put over TLS");
    assert_eq!(client.get("greeting").await.unwrap().as_deref(), Some(&b"hello"[..]));

    // n3 misses writes; its hints stay put, so only anti-entropy (node to node, over TLS with
    // node certificates) can bring them to it.
    cluster.stop(2).await;
    let keys: Vec<String> = (0..20).map(|i| format!("ae-{i}")).collect();
    for key in &keys {
        client.put(key.clone(), "v").await.expect("put with n3 down");
    }
    cluster.restart(2).await;
    wait_until_up(&client).await;
    let admin = client_as(&cluster.ring, Caller::Admin);
    let report = admin.repair("n3", PATIENCE).await.expect("admin runs a repair");
    assert!(report.unreachable.is_empty() && report.errors.is_empty(), "{report:?}");
    assert!(report.keys_received >= keys.len() as u64, "{report:?}");
    for key in &keys {
        assert!(cluster.replica_record(&client, 2, key).await.is_some(), "n3 has {key}");
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn callers_without_a_certificate_or_from_another_ca_are_refused() {
    let certs = tempfile::tempdir().unwrap();
    let tls = issue_certs(certs.path());
    let cluster = TestCluster::start_with(3, 3, 2, 2, &issue::tls_table(&tls)).await;
    wait_until_up(&cluster.client()).await;
    let n1 = cluster.ring.nodes()[0].addr;

    // TLS that trusts the cluster CA but presents no certificate: a clear UNAUTHENTICATED.
    let mut anonymous = raw(n1, &tls.ca_path(), None).await;
    let refused = anonymous
        .read(v1::ReadRequest { key: Bytes::from("k"), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert!(
        refused.message().contains("requires a client certificate signed by the cluster CA"),
        "{refused:?}"
    );

    // A client whose certificate another CA signed (it trusts the cluster's CA, which is public).
    let other = tempfile::tempdir().unwrap();
    let foreign = issue_certs(other.path());
    let mut config = cluster.ring.config().clone();
    config.tls = Some(TlsSettings { ca: tls.ca.clone(), ..foreign.clone() });
    let intruder = client_as(&Ring::new(config).unwrap(), Caller::Client);
    let error = intruder.put("k", "v").await.unwrap_err().to_string();
    assert!(error.contains("TLS refused: the node refused this client's certificate"), "{error}");
    assert!(!error.contains("outcome unknown"), "{error}");
    assert!(intruder.get("k").await.is_err());

    // A plaintext client (no [tls] table) gets nothing from a TLS node either.
    let mut plain = cluster.ring.config().clone();
    plain.tls = None;
    let plain = client_as(&Ring::new(plain).unwrap(), Caller::Client);
    assert!(plain.put("k", "v").await.is_err());
    assert_eq!(cluster.client().get("k").await.unwrap(), None, "nothing was written");
    cluster.shutdown().await;
}

#[tokio::test]
async fn only_admins_dump_repair_and_hand_off_and_only_nodes_make_peer_calls() {
    let certs = tempfile::tempdir().unwrap();
    let tls = issue_certs(certs.path());
    let cluster = TestCluster::start_with(3, 3, 2, 2, &issue::tls_table(&tls)).await;
    let client = client_as(&cluster.ring, Caller::Client);
    wait_until_up(&client).await;
    client.put("k", "v").await.expect("a client certificate writes");

    let denied = |error: ClientError| {
        let text = error.to_string();
        assert!(
            matches!(
                &error,
                ClientError::Node {
                    cause: ReplicaError::Rejected { code: tonic::Code::PermissionDenied, .. },
                    ..
                }
            ),
            "{text}"
        );
        assert!(
            text.contains("needs an admin certificate; this caller's certificate has role client"),
            "{text}"
        );
    };
    denied(client.dump("n1", Bytes::new(), None).await.err().expect("dump refused"));
    denied(client.repair("n1", PATIENCE).await.unwrap_err());
    denied(client.hand_off("n1", PATIENCE).await.unwrap_err());

    let admin = client_as(&cluster.ring, Caller::Admin);
    let dumped: Vec<_> =
        admin.dump("n1", Bytes::new(), None).await.expect("admin dumps").collect().await;
    assert_eq!(dumped.len(), 1);
    admin.repair("n1", PATIENCE).await.expect("admin repairs");
    admin.hand_off("n1", PATIENCE).await.expect("admin hands off");

    // Peer RPCs take a node certificate: neither a client's nor an admin's will do.
    let n1 = cluster.ring.nodes()[0].addr;
    for (role, files) in [("client", tls.client_files()), ("admin", tls.admin_files())] {
        let mut raw = raw(n1, &tls.ca_path(), files).await;
        let status = raw.digest(v1::DigestRequest::default()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(
            status.message().contains(&format!(
                "needs a node certificate; this caller's certificate has role {role}"
            )),
            "{status:?}"
        );
    }
    let mut peer = raw(n1, &tls.ca_path(), tls.node_files("n2")).await;
    peer.digest(v1::DigestRequest::default()).await.expect("a node certificate makes peer calls");
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_node_from_another_ca_can_neither_hand_off_hints_nor_serve_as_a_peer() {
    let certs = tempfile::tempdir().unwrap();
    let tls = issue_certs(certs.path());
    let other = tempfile::tempdir().unwrap();
    let foreign = issue_certs(other.path());
    // The rogue trusts both CAs (the cluster's is public), so only the cluster's nodes can
    // stop it: they must refuse its certificate.
    let both = other.path().join("both-cas.pem");
    let mut bundle = std::fs::read(tls.ca_path()).unwrap();
    bundle.extend(std::fs::read(foreign.ca_path()).unwrap());
    std::fs::write(&both, bundle).unwrap();
    let rogue_tls = TlsSettings { ca: both.clone(), ..foreign.clone() };

    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let text =
        format!("{}\n{}", ring_text_with(&addrs, 3, 2, 2, NO_HANDOFF), issue::tls_table(&tls));
    let ring = Ring::parse(&text).unwrap();
    let mut rogue_config = ring.config().clone();
    rogue_config.tls = Some(rogue_tls);
    let rogue_ring = Ring::new(rogue_config).unwrap();
    let mut nodes = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let ring = if i == 2 { rogue_ring.clone() } else { ring.clone() };
        let config = NodeConfig::new(Arc::new(ring), format!("n{}", i + 1), StorageChoice::Memory);
        nodes.push(spawn_node(listener, config));
    }

    // The rogue n3 holds a write and a hint of it for n1.
    let mut to_rogue = raw(addrs[2], &both, foreign.client_files()).await;
    let record = Record::value(
        Version::new(Timestamp::from_millis(dynakv_core::now_ms()), 7),
        Bytes::from("forged"),
    );
    let write = v1::WriteRequest {
        key: Bytes::from("planted"),
        record: Some(record.into()),
        hint_for: "n1".into(),
        ..Default::default()
    };
    to_rogue.write(write).await.expect("the rogue takes its own write");
    let rogue_admin = client_as(&rogue_ring, Caller::Admin);
    let held = |statuses: Vec<dynakv_client::NodeStatus>| {
        statuses[2].reply.as_ref().map(|r| r.hints).unwrap_or(0)
    };
    assert_eq!(held(rogue_admin.node_statuses().await), 1);

    // Its hand-off to n1 fails: n1 refuses its certificate, and the hint stays undelivered.
    let report = rogue_admin.hand_off("n3", PATIENCE).await.expect("the rogue runs its pass");
    assert_eq!(report.delivered, 0, "{report:?}");
    assert_eq!(report.pending, 1, "{report:?}");
    let admin = client_as(&ring, Caller::Admin);
    wait_until_first_two_up(&admin).await;
    assert_n1_lacks(&admin, "planted").await;

    // Nor does it serve as a peer: n1's anti-entropy cannot reach it, and takes nothing from it.
    let repair = admin.repair("n1", PATIENCE).await.expect("n1 runs a round");
    assert!(
        repair.unreachable.iter().any(|n| n == "n3") || !repair.errors.is_empty(),
        "{repair:?}"
    );
    assert_eq!(repair.keys_received, 0, "{repair:?}");
    assert_n1_lacks(&admin, "planted").await;

    for (stop, task) in nodes {
        let _ = stop.send(());
        task.await.expect("node stops");
    }
}

/// Fails unless n1 answers that it holds nothing for `key`.
async fn assert_n1_lacks(client: &Client, key: &str) {
    let inspection = client.inspect(key.to_string()).await.expect("inspect");
    let n1 = inspection.replicas.into_iter().find(|v| v.node == "n1").expect("n1 is a replica");
    assert!(matches!(n1.record, Ok(None)), "n1 holds {:?}", n1.record);
}

/// Waits until n1 and n2 (the cluster's own nodes) answer health checks.
async fn wait_until_first_two_up(client: &Client) {
    eventually(PATIENCE, "n1 and n2 answer", || async {
        client.node_statuses().await.iter().take(2).all(|s| s.reply.is_ok())
    })
    .await;
}

#[tokio::test]
async fn certs_init_then_put_and_get_through_the_ring_files_tls_table() {
    let dir = tempfile::tempdir().unwrap();
    let ring_path = dir.path().join("ring.toml");
    let addrs: Vec<_> = (0..3).map(|_| free_addr()).collect();
    std::fs::write(&ring_path, ring_text(&addrs, 3, 2, 2)).unwrap();
    let out = dir.path().join("certs");
    let init = dynakv(&["certs", "init", "--out", out.to_str().unwrap()], &ring_path).await;
    assert!(init.status.success(), "{}", text(&init.stderr));
    let ring = Ring::load(&ring_path).expect("the ring file with its [tls] table");
    assert!(ring.config().tls.is_some());
    let again = dynakv(&["certs", "init", "--out", out.to_str().unwrap()], &ring_path).await;
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again.stderr).contains("already has a [tls] table"), "{}", text(&again.stderr));

    let _nodes: Vec<_> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| NodeProcess::start(&ring_path, id, &dir.path().join(id)))
        .collect();
    let client = client_as(&ring, Caller::Client);
    wait_until_up(&client).await;
    let put = dynakv(&["put", "greeting", "hello"], &ring_path).await;
    assert!(put.status.success(), "{}", text(&put.stderr));
    let get = dynakv(&["get", "greeting"], &ring_path).await;
    assert!(get.status.success(), "{}", text(&get.stderr));
    assert_eq!(text(&get.stdout).trim(), "hello");
    // Admin commands present the admin certificate the table names.
    let dump = dynakv(&["dump", "--node", "n1"], &ring_path).await;
    assert!(dump.status.success(), "{}", text(&dump.stderr));
    assert!(text(&dump.stdout).contains("greeting"), "{}", text(&dump.stdout));
}

#[tokio::test]
async fn a_node_refuses_a_non_loopback_address_without_tls_unless_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let ring_path = dir.path().join("ring.toml");
    let port = free_addr().port();
    let addr: std::net::SocketAddr = format!("0.0.0.0:{port}").parse().unwrap();
    std::fs::write(&ring_path, ring_text(&[addr], 1, 1, 1)).unwrap();
    // Bounded: a node that wrongly starts serving would otherwise hold the test forever.
    let refused =
        tokio::time::timeout(PATIENCE, dynakv(&["node", "--id", "n1", "--memory"], &ring_path))
            .await
            .expect("the node refuses at once instead of serving");
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    let stderr = text(&refused.stderr);
    assert!(stderr.contains(&format!("refusing to listen on {addr} without TLS")), "{stderr}");
    assert!(stderr.contains("--insecure"), "{stderr}");

    let mut insecure = std::process::Command::new(env!("CARGO_BIN_EXE_dynakv"))
        .args(["node", "--id", "n1", "--memory", "--insecure", "--ring"])
        .arg(&ring_path)
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("spawn dynakv node");
    let ring = Ring::load(&ring_path).unwrap();
    wait_until_up(&client_as(&ring, Caller::Client)).await;
    insecure.kill().expect("SIGKILL");
    insecure.wait().expect("reap");
}
