//! `dynakv ring show` and `dynakv ring plan add|remove` as an operator uses them on a live
//! 3-node cluster: what they print, their exit codes, and that they change nothing.

use std::path::Path;

use serde_json::Value;

use crate::support::{TestCluster, dynakv, free_addr, text};

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

    let shown = json(&["ring", "show", "--json"], &ring).await;
    assert_eq!(shown["version"], 1);
    assert_eq!(shown["replication"]["n"], 3);
    let nodes = shown["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(node["id"], format!("n{}", i + 1));
        assert_eq!(node["addr"], cluster.ring.nodes()[i].addr.to_string());
        assert_eq!((&node["state"], &node["answers"]), (&"normal".into(), &true.into()));
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
    assert!(
        table.trim_end().ends_with("moving: nothing (membership changes are not live yet)"),
        "{table}"
    );
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
