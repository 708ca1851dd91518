//! Batched puts, gets and deletes: one outcome per operation, mixed outcomes with a node down,
//! stand-ins and hints for batched writes, strict batches, large batches, batched read repair.

use bytes::Bytes;
use dynakv_client::{BatchPut, ClientError, Op, ReadOptions, WriteOptions, WriteOutcome};
use dynakv_core::InputError;
use dynakv_ring::{Ring, key_token};

use crate::support::{PATIENCE, TestCluster, counts, dynakv, eventually, text};

/// Hints handed off every 200 ms; no periodic anti-entropy, so hints alone must do it.
const FAST_HINTS: &str = "[hints]\ninterval_ms = 200\n[anti_entropy]\nenabled = false\n";

/// True when node `node` (0-based) is one of `key`'s replicas.
fn replicated_on(ring: &Ring, key: &str, node: usize) -> bool {
    ring.preference_list(key_token(key.as_bytes())).contains(&node)
}

/// Writes `keys` as a JSON-lines batch file in the cluster's directory; returns its path.
fn batch_file(cluster: &TestCluster, name: &str, keys: &[String]) -> String {
    let path = cluster.dir.path().join(name);
    let lines: Vec<String> =
        keys.iter().map(|k| format!("{{\"key\": \"{k}\", \"value\": \"v-{k}\"}}")).collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    path.to_str().unwrap().to_string()
}

/// Waits until every node holds exactly the live keys of `keys` it replicates (all of them when
/// `live`, none otherwise) and no node holds a hint. Asks only the nodes' counters: no read, so
/// no read repair can do the work of the hints.
async fn wait_for_every_replica(cluster: &TestCluster, keys: &[String], live: bool, what: &str) {
    let client = cluster.client();
    let expected: Vec<(u64, u64)> = (0..4)
        .map(|node| {
            let held = keys.iter().filter(|k| replicated_on(&cluster.ring, k, node)).count();
            (if live { held as u64 } else { 0 }, 0)
        })
        .collect();
    eventually(PATIENCE, what, || async { counts(&client).await == expected }).await;
}

#[tokio::test]
async fn batches_of_mixed_outcomes_with_one_node_down() {
    // Four nodes, N = W = 3: with n4 down, exactly the keys it replicates miss a strict quorum.
    let mut cluster = TestCluster::start(4, 3, 2, 3).await;
    let client = cluster.client();
    cluster.stop(3).await;
    let keys: Vec<String> = (0..120).map(|i| format!("mixed-{i}")).collect();
    let on_n4 = |key: &str| replicated_on(&cluster.ring, key, 3);
    let strict = WriteOptions { strict: true, ..Default::default() };
    let puts = keys.iter().map(|k| BatchPut::new(k.clone(), format!("v-{k}")));
    let results = client.put_many_with(puts, strict).await.unwrap();
    assert_eq!(results.len(), keys.len());
    let (mut ok, mut failed) = (0, 0);
    for (key, result) in keys.iter().zip(&results) {
        if on_n4(key) {
            let Err(ClientError::Quorum(quorum)) = result else {
                panic!("{key}: expected a quorum error, got {result:?}")
            };
            assert_eq!((quorum.op, quorum.needed, quorum.got), (Op::Write, 3, 2), "{key}");
            assert_eq!(
                quorum.write_outcome(),
                WriteOutcome::Unknown,
                "{key}: two replicas hold it"
            );
            failed += 1;
        } else {
            assert!(result.is_ok(), "{key}: {result:?}");
            ok += 1;
        }
    }
    assert!(ok > 0 && failed > 0, "both outcomes occur: {ok} ok, {failed} failed");

    // Reads with R = 3 fail exactly where the writes did; with R = 2 every value is there.
    let strict = client
        .get_many_with(keys.clone(), ReadOptions { r: Some(3), ..Default::default() })
        .await
        .unwrap();
    for (key, result) in keys.iter().zip(&strict) {
        match result {
            Ok(value) => {
                assert!(!on_n4(key), "{key}");
                assert_eq!(value.as_deref(), Some(format!("v-{key}").as_bytes()));
            }
            Err(e) => assert!(on_n4(key), "{key}: {e}"),
        }
    }
    let relaxed = client.get_many(keys.clone()).await.unwrap();
    for (key, result) in keys.iter().zip(relaxed) {
        assert_eq!(result.unwrap(), Some(Bytes::from(format!("v-{key}"))), "{key}");
    }

    // Without --strict, a stand-in keeping a hint for n4 counts toward W = 3.
    let sloppy = client.put_many(keys.iter().map(|k| (k.clone(), format!("w-{k}")))).await;
    assert!(sloppy.unwrap().iter().all(Result::is_ok), "stand-ins make up the quorum");

    let deleted = client
        .delete_many_with(keys.clone(), WriteOptions { w: Some(2), ..Default::default() })
        .await
        .unwrap();
    assert!(deleted.iter().all(Result::is_ok), "W = 2 is met everywhere");
    let gone = client.get_many(keys.clone()).await.unwrap();
    assert!(gone.into_iter().all(|r| r.unwrap().is_none()));
    cluster.shutdown().await;
}

#[tokio::test]
async fn put_batch_and_delete_many_reach_a_returning_node_through_hints() {
    // Four nodes, N = 3: with n4 down, the next node clockwise stands in for it and keeps a hint.
    let mut cluster = TestCluster::start_with(4, 3, 2, 2, FAST_HINTS).await;
    cluster.stop(3).await;
    let keys: Vec<String> = (0..300).map(|i| format!("batched-{i}")).collect();
    assert!(keys.iter().any(|k| replicated_on(&cluster.ring, k, 3)));
    let file = batch_file(&cluster, "puts.jsonl", &keys);
    let out = dynakv(&["put", "--batch", &file], &cluster.ring_path()).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("300 of 300 puts ok"), "{}", text(&out.stderr));
    cluster.restart(3).await;
    wait_for_every_replica(&cluster, &keys, true, "every key is on its 3 replicas").await;

    cluster.stop(3).await;
    let client = cluster.client();
    let deleted = client.delete_many(keys.clone()).await.unwrap();
    assert!(deleted.iter().all(Result::is_ok), "{deleted:?}");
    client.settle().await;
    cluster.restart(3).await;
    wait_for_every_replica(&cluster, &keys, false, "every replica holds the tombstones").await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn put_batch_strict_counts_only_the_keys_own_replicas() {
    // N = W = 3 with n4 down: strict puts of the keys n4 replicates reach 2 replicas and fail
    // with an unknown outcome (exit 3); without --strict a stand-in completes the quorum.
    let mut cluster = TestCluster::start(4, 3, 2, 3).await;
    cluster.stop(3).await;
    let keys: Vec<String> = (0..60).map(|i| format!("strict-{i}")).collect();
    let on_n4 = keys.iter().filter(|k| replicated_on(&cluster.ring, k, 3)).count();
    assert!(on_n4 > 0 && on_n4 < keys.len());
    let file = batch_file(&cluster, "strict.jsonl", &keys);

    let out = dynakv(&["put", "--batch", &file, "--strict"], &cluster.ring_path()).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_eq!(stderr.matches("write quorum not met: 2 of 3").count(), on_n4, "{stderr}");
    let summary = format!("{} of {} puts ok", keys.len() - on_n4, keys.len());
    assert!(stderr.contains(&summary), "{stderr}");

    let out = dynakv(&["put", "--batch", &file], &cluster.ring_path()).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    cluster.shutdown().await;
}

#[tokio::test]
async fn batches_larger_than_one_call_are_split_and_each_op_reports() {
    let cluster = TestCluster::start(3, 3, 2, 2).await;
    let client = cluster.client();
    let puts: Vec<BatchPut> = (0..2500)
        .map(|i| BatchPut::new(format!("bulk-{i:04}"), format!("value-{i}")))
        .chain([BatchPut::new("", "invalid key")])
        .collect();
    let results = client.put_many_with(puts, WriteOptions::default()).await.unwrap();
    assert_eq!(results.len(), 2501);
    let versions: Vec<_> = results[..2500].iter().map(|r| r.as_ref().unwrap().version).collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "each put has its own version");
    assert!(matches!(results[2500], Err(ClientError::Input(InputError::EmptyKey))));

    let keys: Vec<_> = (0..2500).map(|i| format!("bulk-{i:04}")).collect();
    let values = client.get_many(keys).await.unwrap();
    for (i, value) in values.into_iter().enumerate() {
        assert_eq!(value.unwrap(), Some(Bytes::from(format!("value-{i}"))));
    }
    client.settle().await;
    for status in client.node_statuses().await {
        assert_eq!(status.reply.unwrap().keys, 2500, "{} holds every key", status.id);
    }
    let err = client
        .get_many_with(["k"], ReadOptions { r: Some(4), ..Default::default() })
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::InvalidQuorum { asked: 4, .. }), "{err}");
    cluster.shutdown().await;
}

#[tokio::test]
async fn batched_reads_repair_the_stale_replicas_they_asked() {
    let mut cluster = TestCluster::start(3, 3, 2, 2).await;
    let client = cluster.client();
    cluster.stop(2).await;
    let keys: Vec<String> = (0..50).map(|i| format!("repair-{i}")).collect();
    let results = client.put_many(keys.iter().map(|k| (k.clone(), "v"))).await.unwrap();
    let versions: Vec<_> = results.into_iter().map(|r| r.unwrap().version).collect();
    client.settle().await;
    cluster.restart(2).await;

    let reader = cluster.client();
    assert_eq!(cluster.replica_record(&reader, 2, &keys[0]).await, None, "n3 missed them");
    let values = reader.get_many(keys.clone()).await.unwrap();
    assert!(values.into_iter().all(|v| v.unwrap() == Some(Bytes::from("v"))));
    reader.settle().await;
    // Each read asked the first R = 2 replicas of its key; those with n3 among them repaired it.
    let asked =
        |key: &String| cluster.ring.preference_list(key_token(key.as_bytes()))[..2].contains(&2);
    let mut repaired_keys = 0;
    for (key, version) in keys.iter().zip(versions).filter(|(key, _)| asked(key)) {
        let repaired = cluster.replica_record(&reader, 2, key).await;
        assert_eq!(repaired.map(|r| r.version), Some(version), "{key} repaired on n3");
        repaired_keys += 1;
    }
    assert!(repaired_keys > 0, "some key has n3 among its first two replicas");
    cluster.shutdown().await;
}

#[tokio::test]
async fn batched_reads_of_large_values_are_split_to_fit_the_message_limit() {
    let cluster = TestCluster::start_with(3, 3, 2, 2, "[limits]\nmax_value_bytes = 65536\n").await;
    let client = cluster.client();
    // 100 values of 64 KiB: 6.4 MiB in one reply, over the 4 MiB + 64 KiB message limit.
    let value = Bytes::from(vec![5u8; 64 * 1024]);
    let keys: Vec<String> = (0..100).map(|i| format!("large-{i}")).collect();
    let results = client.put_many(keys.iter().map(|k| (k.clone(), value.clone()))).await.unwrap();
    assert!(results.iter().all(Result::is_ok), "writes are split by bytes up front");
    let values = client.get_many(keys).await.unwrap();
    for value_read in values {
        assert_eq!(value_read.unwrap().as_ref(), Some(&value));
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_batch_rpc_answers_each_write_as_the_same_write_alone_would() {
    use dynakv_proto::v1::{self, batch_op::Op, batch_result::Result as Outcome};
    let cluster = TestCluster::start(4, 2, 1, 1).await;
    let addr = cluster.ring.nodes()[0].addr;
    let mut raw =
        v1::replica_client::ReplicaClient::connect(format!("http://{addr}")).await.unwrap();
    // Keys n1 replicates, and one it does not, with its first replica.
    let ring = &cluster.ring;
    let keys = |owned: bool| {
        (0..)
            .map(|i| format!("probe-{i}"))
            .filter(move |k| replicated_on(ring, k, 0) == owned)
            .map(Bytes::from)
    };
    let mut ours = keys(true);
    let (a, b) = (ours.next().unwrap(), ours.next().unwrap());
    let theirs = keys(false).next().unwrap();
    let owner = cluster.ring.preference_list(key_token(&theirs))[0];
    let owner = cluster.ring.nodes()[owner].id.clone();
    let write = |key: &Bytes, ts: u64, hint_for: &str| v1::BatchOp {
        op: Some(Op::Write(v1::WriteRequest {
            key: key.clone(),
            record: Some(v1::Record {
                version: Some(v1::Version { timestamp: ts, writer: 1 }),
                tombstone: false,
                value: Bytes::from(format!("v{ts}")),
                expires_at_ms: 0,
            }),
            hint_for: hint_for.to_string(),
            ring_version: 0,
        })),
    };
    let ops = vec![
        write(&a, 5, ""),
        write(&a, 3, ""),
        write(&b, 2, ""),
        write(&b, 4, ""),
        write(&theirs, 7, &owner),
        write(&theirs, 6, ""),
    ];
    let results = raw.batch(v1::BatchRequest { ops }).await.unwrap().into_inner().results;
    let outcomes: Vec<_> = results.into_iter().map(|r| r.result.unwrap()).collect();
    let applied: Vec<Option<(bool, u64)>> = outcomes
        .iter()
        .map(|o| match o {
            Outcome::Write(w) => Some((w.applied, w.current.unwrap().timestamp)),
            _ => None,
        })
        .collect();
    assert_eq!(
        applied[..5],
        [Some((true, 5)), Some((false, 5)), Some((true, 2)), Some((true, 4)), Some((true, 7))],
        "an older write is ignored and reports the newer version, in batch order"
    );
    assert!(
        matches!(&outcomes[5], Outcome::Error(e) if e.code == tonic::Code::FailedPrecondition as i32),
        "a misrouted write fails on its own: {:?}",
        outcomes[5]
    );
    let health = raw.health(v1::HealthRequest {}).await.unwrap().into_inner();
    assert_eq!((health.keys, health.hints), (2, 1), "two own records and one hint");

    let read = |key: &Bytes| v1::BatchOp {
        op: Some(Op::Read(v1::ReadRequest { key: key.clone(), ring_version: 0 })),
    };
    let ops = vec![read(&a), read(&theirs), read(&b)];
    let results = raw.batch(v1::BatchRequest { ops }).await.unwrap().into_inner().results;
    let read: Vec<_> = results
        .into_iter()
        .map(|r| match r.result.unwrap() {
            Outcome::Read(r) => Ok(r.record.map(|r| r.value)),
            Outcome::Error(e) => Err(e.code),
            other => panic!("a read answered {other:?}"),
        })
        .collect();
    assert_eq!(
        read,
        [
            Ok(Some(Bytes::from("v5"))),
            Err(tonic::Code::FailedPrecondition as i32),
            Ok(Some(Bytes::from("v4")))
        ]
    );
    drop(raw);
    cluster.shutdown().await;
}
