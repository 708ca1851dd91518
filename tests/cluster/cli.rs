//! The `dynakv` binary as an operator uses it: exit codes, messages, status and inspect.

use crate::support::{TestCluster, dynakv, text};

#[tokio::test]
async fn put_get_delete_exit_codes() {
    let cluster = TestCluster::start(3, 3, 2, 2).await;
    let ring = cluster.ring_path();

    let put = dynakv(&["put", "color", "blue"], &ring).await;
    assert!(put.status.success(), "{}", text(&put.stderr));
    let get = dynakv(&["get", "color"], &ring).await;
    assert_eq!((get.status.code(), text(&get.stdout)), (Some(0), "blue\n".into()));
    let get = dynakv(&["get", "color", "--r", "3"], &ring).await;
    assert_eq!(get.status.code(), Some(0));

    let missing = dynakv(&["get", "colour"], &ring).await;
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(text(&missing.stderr).trim(), "not found");
    assert!(missing.stdout.is_empty());

    let delete = dynakv(&["delete", "color", "--w", "3"], &ring).await;
    assert!(delete.status.success(), "{}", text(&delete.stderr));
    assert_eq!(dynakv(&["get", "color"], &ring).await.status.code(), Some(1));

    let bad = dynakv(&["put", "", "x"], &ring).await;
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(text(&bad.stderr).trim(), "error: invalid input: key is empty");
    let bad = dynakv(&["put", "k", "x", "--w", "4"], &ring).await;
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("write quorum 4 is out of range"), "{}", text(&bad.stderr));
    cluster.shutdown().await;
}

#[tokio::test]
async fn unreachable_cluster_is_an_error_not_a_miss() {
    let mut cluster = TestCluster::start(3, 3, 2, 2).await;
    let ring = cluster.ring_path();
    for i in 0..3 {
        cluster.stop(i).await;
    }
    let get = dynakv(&["get", "k"], &ring).await;
    assert_eq!(get.status.code(), Some(2));
    let stderr = text(&get.stderr);
    assert!(stderr.starts_with("error: read quorum not met: 0 of 2"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

#[tokio::test]
async fn bad_ring_files_and_unknown_ids_are_named() {
    let cluster = TestCluster::start(3, 3, 2, 2).await;
    let good = std::fs::read_to_string(cluster.ring_path()).unwrap();
    let cases = [
        (good.replace("r = 2", "r = 4"), "replication.r = 4 is larger than n = 3"),
        (good.replace("\"n2\"", "\"n1\""), "node id \"n1\" appears more than once"),
        (
            good.replace("n = 3", "n = 5").replace("r = 2", "r = 1").replace("w = 2", "w = 1"),
            "n = 5 but the ring has only 3 nodes",
        ),
        ("[replication\nn = 3".to_string(), "malformed ring file"),
    ];
    for (i, (ring_text, expected)) in cases.iter().enumerate() {
        let path = cluster.dir.path().join(format!("bad-{i}.toml"));
        std::fs::write(&path, ring_text).unwrap();
        for args in [&["get", "k"][..], &["node", "--id", "n1"][..], &["status"][..]] {
            let out = dynakv(args, &path).await;
            assert_eq!(out.status.code(), Some(2), "{args:?} with {expected}");
            assert!(text(&out.stderr).contains(expected), "{args:?}: {}", text(&out.stderr));
        }
    }
    let missing = dynakv(&["get", "k"], &cluster.dir.path().join("nope.toml")).await;
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("cannot read ring file"), "{}", text(&missing.stderr));

    let unknown = dynakv(&["node", "--id", "n9"], &cluster.ring_path()).await;
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        text(&unknown.stderr).contains("node id \"n9\" is not in the ring (known: n1, n2, n3)"),
        "{}",
        text(&unknown.stderr)
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn status_reports_nodes_and_quorum_health() {
    let mut cluster = TestCluster::start(3, 3, 2, 2).await;
    let ring = cluster.ring_path();
    let client = cluster.client();
    for i in 0..10 {
        client.put(format!("k{i}"), "v").await.unwrap();
    }
    client.settle().await;

    let status = |ring: std::path::PathBuf| async move {
        let out = dynakv(&["status", "--json"], &ring).await;
        let doc: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("status prints JSON");
        (out.status.code(), doc)
    };
    let (code, doc) = status(ring.clone()).await;
    assert_eq!(code, Some(0));
    let nodes = doc["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(node["id"], format!("n{}", i + 1));
        assert_eq!(node["addr"], cluster.ring.nodes()[i].addr.to_string());
        assert_eq!(node["up"], true);
        assert_eq!(node["keys"], 10);
        assert_eq!(node["hints"], 0);
    }

    cluster.stop(1).await;
    client.put("while-n2-is-down", "v").await.unwrap();
    client.settle().await;
    let (code, doc) = status(ring.clone()).await;
    assert_eq!(code, Some(0), "two of three replicas still meet R = W = 2");
    assert_eq!(doc["nodes"][1]["up"], false);
    let hints =
        doc["nodes"][0]["hints"].as_u64().unwrap() + doc["nodes"][2]["hints"].as_u64().unwrap();
    assert_eq!(hints, 1, "a live replica keeps n2's hint: {doc}");
    assert_eq!(doc["nodes"][0]["up"], true);
    assert_eq!(doc["quorum"]["ok"], true);

    cluster.stop(2).await;
    let (code, doc) = status(ring.clone()).await;
    assert_eq!(code, Some(1), "no range can meet quorum with one replica");
    assert_eq!(doc["quorum"]["ok"], false);
    assert_eq!(doc["quorum"]["ranges_below_w"], doc["quorum"]["ranges"]);

    let table = dynakv(&["status"], &ring).await;
    let out = text(&table.stdout);
    assert_eq!(table.status.code(), Some(1));
    assert!(out.contains("n1") && out.contains("UP") && out.contains("DOWN"), "{out}");
    assert!(out.contains("quorum: DEGRADED"), "{out}");
    cluster.shutdown().await;
}

#[tokio::test]
async fn inspect_shows_each_replica() {
    let mut cluster = TestCluster::start(3, 3, 2, 2).await;
    let ring = cluster.ring_path();
    let client = cluster.client();
    client.put("k", "v1").await.unwrap();
    cluster.stop(2).await;
    client.delete("k").await.unwrap();
    client.settle().await;

    let out = dynakv(&["inspect", "k", "--json"], &ring).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let states: Vec<_> = doc["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["node"].clone(), r["state"].clone()))
        .collect();
    assert_eq!(states.len(), 3);
    for (node, state) in states {
        let expected = if node == "n3" { "unreachable" } else { "tombstone" };
        assert_eq!(state, expected, "{node}");
    }
    let table = text(&dynakv(&["inspect", "k"], &ring).await.stdout);
    assert!(table.contains("tombstone version") && table.contains("unreachable"), "{table}");
    cluster.shutdown().await;
}
