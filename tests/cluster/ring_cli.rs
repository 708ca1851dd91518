//! `dynakv ring show`, `ring plan add|remove` and `ring add|remove|replace` as an operator uses
//! them on a live 3-node cluster: what they print, their exit codes, that plans and refused
//! changes change nothing, and that a change made with `--wait` leaves clients with old ring
//! files giving correct answers.

use std::path::Path;

use bytes::Bytes;
use dynakv_ring::Ring;
use serde_json::Value;

use crate::support::{
    NodeProcess, QUIET, TestCluster, client_for, dynakv, free_addr, ring_text_with, text,
    wait_until_up,
};

/// Runs `dynakv <args> --ring <ring>`, expects exit 0 and parses stdout as JSON.
async fn json(args: &[&str], ring: &Path) -> Value {
    let out = dynakv(args, ring).await;
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

fn f(value: &Value) -> f64 {
    value.as_f64().unwrap_or_else(|| panic!("not a number: {value}"))
}

fn ids(value: &Value) -> Vec<&str> {
    value.as_array().unwrap().iter().map(|id| id.as_str().unwrap()).collect()
}

/// The cells of `id`'s row in a table.
fn row<'a>(table: &'a str, id: &str) -> Vec<&'a str> {
    let row = table.lines().find(|line| line.starts_with(&format!("{id} ")));
    row.unwrap_or_else(|| panic!("no row for {id}: {table}")).split_whitespace().collect()
}

#[tokio::test]
async fn ring_show_lists_states_shares_and_the_ring_each_node_serves() {
    let mut cluster = TestCluster::start(3, 3, 2, 2).await;
    let ring = cluster.ring_path();
    // A starting node first asks its peers for a newer ring (for up to 2 s) before it serves.
    wait_until_up(&cluster.client()).await;

    let shown = json(&["ring", "show", "--json"], &ring).await;
    assert_eq!(shown["version"], 1);
    assert_eq!(shown["replication"]["n"], 3);
    let nodes = shown["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(node["id"], format!("n{}", i + 1));
        assert_eq!(node["addr"], cluster.ring.nodes()[i].addr.to_string());
        assert_eq!((&node["state"], &node["answers"]), (&"normal".into(), &true.into()), "{node}");
        assert_eq!(node["ring_version"], 1, "{node}");
        // Three nodes, three replicas per key: each node holds every key.
        assert!((f(&node["replica_share"]) - 1.0).abs() < 1e-9, "{node}");
    }
    let primaries: f64 = nodes.iter().map(|node| f(&node["primary_share"])).sum();
    assert!((primaries - 1.0).abs() < 1e-9, "primary shares sum to 1: {primaries}");
    assert_eq!(shown["moving"], serde_json::json!([]));

    // A joining node is listed, owns nothing yet, and is asked like the others.
    let joining = cluster.dir.path().join("joining.toml");
    let spare = free_addr();
    let ring_text = std::fs::read_to_string(&ring).unwrap();
    std::fs::write(
        &joining,
        format!("{ring_text}[[nodes]]\nid = \"n4\"\naddr = \"{spare}\"\nstate = \"joining\"\n"),
    )
    .unwrap();
    cluster.stop(1).await;
    let out = dynakv(&["ring", "show"], &joining).await;
    let table = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{table}{}", text(&out.stderr));
    assert!(table.starts_with("ring v1: 4 nodes (3 own tokens), N=3 R=2 W=2"), "{table}");
    // NODE ADDRESS STATE PRIMARY REPLICA ANSWERS SERVES
    let n1 = row(&table, "n1");
    assert_eq!([n1[2], n1[4], n1[5], n1[6]], ["normal", "100.0%", "yes", "v1"], "{table}");
    assert_eq!(row(&table, "n2")[5..], ["no", "-"], "n2 is stopped: {table}");
    let spare = spare.to_string();
    assert_eq!(row(&table, "n4")[1..], [&spare, "joining", "0.0%", "0.0%", "no", "-"], "{table}");
    assert!(table.contains("  n2 does not answer: "), "{table}");
    assert!(table.trim_end().ends_with("moving: nothing"), "{table}");
    cluster.shutdown().await;
}

#[tokio::test]
async fn ring_plan_add_shows_what_would_move_and_changes_nothing() {
    let cluster = TestCluster::start(3, 3, 2, 2).await;
    let ring = cluster.ring_path();
    let ring_before = std::fs::read(&ring).unwrap();
    let addr = free_addr().to_string();

    let plan = json(&["ring", "plan", "add", "n4", &addr, "--json"], &ring).await;
    assert_eq!(plan["change"], serde_json::json!({ "kind": "add", "id": "n4", "addr": addr }));
    assert_eq!((&plan["before"]["version"], &plan["after"]["version"]), (&1.into(), &2.into()));
    assert_eq!(plan["after"]["nodes_owning_tokens"], 4);
    assert!((f(&plan["ideal_share"]) - 0.75).abs() < 1e-9, "N/(n+1) = 3/4");
    assert!((f(&plan["ideal_primary_share"]) - 0.25).abs() < 1e-9, "1/(n+1) = 1/4");
    // The bound on movement is the ring crate's test (64 and 256 vnodes); this ring has 32.
    for (ratio, moved, ideal) in [
        ("ratio", "moved_share", "ideal_share"),
        ("primary_ratio", "moved_primary_share", "ideal_primary_share"),
    ] {
        let expected = f(&plan[moved]) / f(&plan[ideal]);
        assert!((f(&plan[ratio]) - expected).abs() < 1e-9, "{ratio}: {}", plan[ratio]);
        assert!((0.5..1.5).contains(&expected), "{ratio}: {expected}");
    }
    let n4 = plan["nodes"].as_array().unwrap().iter().find(|node| node["id"] == "n4").unwrap();
    assert_eq!((&n4["state_before"], &n4["state_after"]), (&Value::Null, &"normal".into()));
    assert!((f(&n4["gains"]) - f(&plan["moved_share"])).abs() < 1e-9, "{n4}");
    let ranges = plan["ranges"].as_array().unwrap();
    assert!(!ranges.is_empty());
    let mut total = 0.0;
    for range in ranges {
        let (from, to) = (ids(&range["from"]), ids(&range["to"]));
        assert!(to.contains(&"n4") && !from.contains(&"n4"), "{range}");
        assert!(range["start"].as_str().unwrap().starts_with("0x"), "{range}");
        total += f(&range["share"]);
    }
    assert!((total - f(&plan["moved_share"])).abs() < 1e-9);
    let handed: f64 = plan["transfers"].as_array().unwrap().iter().map(|t| f(&t["share"])).sum();
    assert!((handed - total).abs() < 1e-9);

    let out = dynakv(&["ring", "plan", "add", "n4", &addr], &ring).await;
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        report.starts_with(&format!(
            "plan: add n4 at {addr}: ring v1 (3 nodes own tokens) -> v2 (4 nodes own tokens), N=3"
        )),
        "{report}"
    );
    assert!(report.contains("nothing has changed: this is a plan"), "{report}");
    assert!(report.contains("of the key space; ideal N/(n+1) = 3/4 = 75.0% ("), "{report}");
    assert!(report.contains("of the key space; ideal 1/(n+1) = 1/4 = 25.0% ("), "{report}");
    assert!(
        report.lines().any(|l| l.starts_with("n4 ") && l.contains("new -> normal")),
        "{report}"
    );
    assert!(report.contains("  n1 -> n4: "), "{report}");
    assert!(report.contains(&format!("ranges moving: {} (of ", ranges.len())), "{report}");

    assert_eq!(std::fs::read(&ring).unwrap(), ring_before, "the ring file is untouched");
    for status in cluster.client().node_statuses().await {
        assert_eq!(status.reply.unwrap().ring_version, 1, "{} still serves v1", status.id);
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn ring_plan_remove_moves_what_the_node_held_and_refuses_impossible_changes() {
    let cluster = TestCluster::start(3, 3, 2, 2).await;
    let ring = cluster.ring_path();
    let taken = cluster.ring.nodes()[0].addr.to_string();

    let refused = |args: &'static [&'static str], expected: String| {
        let ring = ring.clone();
        async move {
            let out = dynakv(args, &ring).await;
            assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stdout));
            assert!(out.stdout.is_empty(), "{args:?} prints no plan: {}", text(&out.stdout));
            assert_eq!(text(&out.stderr).trim(), expected, "{args:?}");
        }
    };
    let n2_addr = cluster.ring.nodes()[1].addr;
    refused(
        &["ring", "plan", "add", "n2", "127.0.0.1:1"],
        format!("error: node id \"n2\" is already in the ring (at {n2_addr}, normal)"),
    )
    .await;
    let out = dynakv(&["ring", "plan", "add", "n4", &taken, "--json"], &ring).await;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).trim(),
        format!("error: address {taken} is already used by node \"n1\"")
    );
    refused(
        &["ring", "plan", "remove", "n9"],
        "error: node id \"n9\" is not in the ring (known: n1, n2, n3)".into(),
    )
    .await;
    refused(
        &["ring", "plan", "remove", "n2"],
        "error: cannot remove \"n2\": 2 nodes would remain, fewer than replication.n = 3 \
         replicas per key"
            .into(),
    )
    .await;

    // With two replicas per key, n2 can go: exactly what it held moves, to n1 and n3.
    let two = cluster.dir.path().join("two-replicas.toml");
    let text_n3 = std::fs::read_to_string(&ring).unwrap();
    let text_n2 = text_n3.replace("n = 3\nr = 2\nw = 2", "n = 2\nr = 1\nw = 1");
    assert_ne!(text_n2, text_n3);
    std::fs::write(&two, text_n2).unwrap();
    let plan = json(&["ring", "plan", "remove", "n2", "--json"], &two).await;
    assert_eq!(plan["change"], serde_json::json!({ "kind": "remove", "id": "n2", "dead": false }));
    let nodes = plan["nodes"].as_array().unwrap();
    let n2 = nodes.iter().find(|node| node["id"] == "n2").unwrap();
    assert_eq!((&n2["state_before"], &n2["state_after"]), (&"normal".into(), &Value::Null));
    assert!((f(&n2["losses"]) - f(&n2["replica_before"])).abs() < 1e-9, "{n2}");
    assert!((f(&plan["moved_share"]) - f(&plan["ideal_share"])).abs() < 1e-9, "{plan}");
    assert!((f(&plan["ratio"]) - 1.0).abs() < 1e-9);
    for range in plan["ranges"].as_array().unwrap() {
        let (from, to) = (ids(&range["from"]), ids(&range["to"]));
        assert!(from.contains(&"n2") && !to.contains(&"n2"), "{range}");
    }
    let out = dynakv(&["ring", "plan", "remove", "n2"], &two).await;
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(report.contains("ideal what n2 holds = "), "{report}");
    assert!(report.lines().any(|l| l.starts_with("n2 ") && l.contains("normal -> removed")));
    cluster.shutdown().await;
}

/// Runs `dynakv <args>`, expects a refusal: exit 2, nothing on stdout, `error: ...` containing
/// `reason` on stderr.
async fn refused(args: &[&str], ring: &Path, reason: &str) {
    let out = dynakv(args, ring).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {}{stderr}", text(&out.stdout));
    assert!(out.stdout.is_empty(), "{args:?} prints nothing on stdout: {}", text(&out.stdout));
    assert!(stderr.starts_with("error: ") && stderr.contains(reason), "{args:?}: {stderr}");
}

#[tokio::test]
async fn ring_changes_the_cluster_cannot_make_are_refused_and_change_nothing() {
    let cluster = TestCluster::start(3, 3, 2, 2).await;
    let ring = cluster.ring_path();
    let n1 = cluster.ring.nodes()[0].addr.to_string();
    let spare = free_addr().to_string();

    refused(&["ring", "add", "n2", &spare], &ring, "\"n2\" is already in the ring").await;
    refused(&["ring", "add", "n4", &n1, "--wait"], &ring, &format!("address {n1} is already"))
        .await;
    refused(&["ring", "remove", "n9"], &ring, "\"n9\" is not in the ring").await;
    refused(&["ring", "remove", "n2", "--wait"], &ring, "fewer than replication.n = 3").await;
    refused(&["ring", "remove", "n2", "--dead"], &ring, "fewer than replication.n = 3").await;
    refused(&["ring", "replace", "n7", "n4", &spare], &ring, "\"n7\" is not in the ring").await;

    for status in cluster.client().node_statuses().await {
        assert_eq!(status.reply.unwrap().ring_version, 1, "{} still serves v1", status.id);
    }
    let client = cluster.client();
    assert_eq!(client.refresh_ring().await.unwrap().version(), 1);
    client.put("still", "works").await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_add_waits_for_the_move_and_clients_with_old_ring_files_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<_> = (0..3).map(|_| free_addr()).collect();
    let extra = format!("[storage]\nmin_free_mb = 0\n{QUIET}");
    let ring_text = ring_text_with(&addrs, 3, 2, 2, &extra);
    let ring_path = dir.path().join("ring.toml");
    std::fs::write(&ring_path, &ring_text).unwrap();
    let old_ring = Ring::parse(&ring_text).unwrap();
    let mut nodes: Vec<_> = (0..3)
        .map(|i| {
            let id = format!("n{}", i + 1);
            NodeProcess::start(&ring_path, &id, &dir.path().join(&id))
        })
        .collect();
    // A client that lives through the change, and one per key written before it.
    let early = client_for(&old_ring);
    wait_until_up(&early).await;
    for i in 0..200 {
        early.put(format!("before-{i}"), format!("v{i}")).await.unwrap();
    }
    early.settle().await;

    let n4 = free_addr();
    let (at, member) = (n4.to_string(), addrs[0].to_string());
    nodes.push(NodeProcess::start_with(
        &ring_path,
        "n4",
        &dir.path().join("n4"),
        &["--addr", &at, "--join", &member],
    ));
    // A ring that lists n4 as joining, to see when it answers.
    let mut with_n4 = old_ring.config().clone();
    let mut spec = with_n4.nodes[0].clone();
    (spec.id, spec.addr, spec.state) = ("n4".into(), n4, dynakv_ring::NodeState::Joining);
    with_n4.nodes.push(spec);
    let probe = client_for(&Ring::new(with_n4).unwrap());
    wait_until_up(&probe).await;

    let out = dynakv(&["ring", "add", "n4", &at, "--wait", "--timeout", "120s"], &ring_path).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some(&*format!("ring v2: add n4 at {at}: agreed; ranges are moving")));
    let done = lines.next().unwrap_or_default();
    assert!(done.starts_with(&format!("ring v3: add n4 at {at}: done in ")), "{stdout}");

    // The ring file is still v1: two versions old. A fresh client (and the CLI) refreshes on its
    // first refusal and answers correctly; the early client does without a restart.
    let fresh = client_for(&old_ring);
    assert_eq!(fresh.ring().version(), 1);
    for i in (0..200).step_by(7) {
        let want = Some(Bytes::from(format!("v{i}")));
        assert_eq!(fresh.get(format!("before-{i}")).await.unwrap(), want, "fresh, before-{i}");
        assert_eq!(early.get(format!("before-{i}")).await.unwrap(), want, "early, before-{i}");
    }
    assert_eq!(fresh.ring().version(), 3, "the fresh client fetched the live ring");
    for i in 0..50 {
        fresh.put(format!("after-{i}"), "new").await.unwrap();
    }
    let out = dynakv(&["get", "after-7"], &ring_path).await;
    assert_eq!((out.status.code(), text(&out.stdout).trim()), (Some(0), "new"));
    assert_eq!(early.ring().version(), 3, "the early client moved to the live ring");
    assert_eq!(early.ring().nodes().len(), 4);

    let shown = json(&["ring", "show", "--json"], &ring_path).await;
    assert_eq!((&shown["version"], &shown["is_moving"]), (&3.into(), &false.into()));
    assert_eq!(shown["nodes"].as_array().unwrap().len(), 4, "the live ring, not the file");
    let out = dynakv(&["status"], &ring_path).await;
    let table = text(&out.stdout);
    assert_eq!(row(&table, "n4")[3], "normal", "{table}");
    drop(nodes);
}
