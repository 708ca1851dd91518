//! The CLI's lifecycle commands: `put --ttl`, `put --batch file.jsonl` and `dump`.

use std::process::Output;

use bytes::Bytes;

use crate::support::{TestCluster, dynakv, text};

#[tokio::test]
async fn a_malformed_batch_file_names_its_lines_and_writes_nothing() {
    let cluster = TestCluster::start(3, 3, 2, 2).await;
    let ring = cluster.ring_path();
    let client = cluster.client();
    let file = cluster.dir.path().join("bad.jsonl");
    let lines = [
        r#"{"key": "good", "value": "1"}"#,
        r#"{"key": "broken", "value": "#,
        r#"{"key": "", "value": "x"}"#,
        r#"{"key": "late", "value": "x", "ttl": "whenever"}"#,
    ];
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = dynakv(&["put", "--batch", file.to_str().unwrap()], &ring).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("line 1:"), "{stderr}");
    assert!(stderr.contains("line 2: not a valid entry"), "{stderr}");
    assert!(stderr.contains("line 3: key is empty"), "{stderr}");
    assert!(stderr.contains("line 4: bad ttl \"whenever\""), "{stderr}");
    assert!(stderr.contains("3 invalid line(s); nothing was written"), "{stderr}");
    assert_eq!(client.get("good").await.unwrap(), None, "the valid line was not sent either");
    for status in client.node_statuses().await {
        assert_eq!(status.reply.unwrap().keys, 0, "{} stores nothing", status.id);
    }

    let good = cluster.dir.path().join("good.jsonl");
    let lines = [
        r#"{"key": "a", "value": "1"}"#,
        "",
        r#"{"key": "b", "value": "2", "ttl": "1h"}"#,
        r#"{"key": "c", "value": "3"}"#,
    ];
    std::fs::write(&good, lines.join("\n")).unwrap();
    let out = dynakv(&["put", "--batch", good.to_str().unwrap(), "--ttl", "2h"], &ring).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("3 of 3 puts ok"), "{}", text(&out.stderr));
    let values = client.get_many(["a", "b", "c"]).await.unwrap();
    let values: Vec<_> = values.into_iter().map(Result::unwrap).collect();
    assert_eq!(values, [Some(Bytes::from("1")), Some(Bytes::from("2")), Some(Bytes::from("3"))]);
    let a = cluster.replica_record(&client, 0, "a").await.unwrap().expires_at_ms;
    let b = cluster.replica_record(&client, 0, "b").await.unwrap().expires_at_ms;
    assert!(a > b && b > 0, "--ttl 2h applies to lines without a ttl, line 3 keeps its 1h");
    cluster.shutdown().await;
}

#[tokio::test]
async fn put_ttl_and_dump_show_records_with_their_expiry() {
    let cluster = TestCluster::start(3, 3, 2, 2).await;
    let ring = cluster.ring_path();
    let client = cluster.client();
    let put = dynakv(&["put", "user:1", "ada", "--ttl", "1h"], &ring).await;
    assert!(put.status.success(), "{}", text(&put.stderr));
    for key in ["user:2", "user:3", "order:1"] {
        client.put(key, "x").await.unwrap();
    }
    client.delete("user:3").await.unwrap();
    client.settle().await;

    let lines = |out: &Output| -> Vec<serde_json::Value> {
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect()
    };
    let all = lines(&dynakv(&["dump", "--node", "n1"], &ring).await);
    assert_eq!(all.len(), 4);
    let users = lines(&dynakv(&["dump", "--node", "n2", "--prefix", "user:"], &ring).await);
    let mut keys: Vec<_> = users.iter().map(|r| r["key"].as_str().unwrap().to_string()).collect();
    keys.sort();
    assert_eq!(keys, ["user:1", "user:2", "user:3"]);
    let by_key = |key: &str| users.iter().find(|r| r["key"] == key).unwrap().clone();
    let ada = by_key("user:1");
    assert_eq!((&ada["state"], &ada["value"]), (&"value".into(), &"ada".into()));
    assert!(ada["expires_at_ms"].as_u64().unwrap() > dynakv_core::now_ms());
    let deleted = by_key("user:3");
    assert_eq!(
        (&deleted["state"], &deleted["value"]),
        (&"tombstone".into(), &serde_json::Value::Null)
    );
    assert!(deleted["version"].as_str().unwrap().contains('@'));

    let table = text(&dynakv(&["inspect", "user:1"], &ring).await.stdout);
    assert!(table.contains("value \"ada\"") && table.contains(" expires 20"), "{table}");

    let limited = lines(&dynakv(&["dump", "--node", "n3", "--limit", "2"], &ring).await);
    assert_eq!(limited.len(), 2);

    let unknown = dynakv(&["dump", "--node", "n9"], &ring).await;
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        text(&unknown.stderr).contains("node \"n9\" is not in the ring"),
        "{}",
        text(&unknown.stderr)
    );
    cluster.shutdown().await;
}
