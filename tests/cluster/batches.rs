//! Batched puts, gets and deletes: one outcome per operation, mixed outcomes with a node down,
//! batches larger than one call, batched read repair.

use bytes::Bytes;
use dynakv_client::{BatchPut, ClientError, Op, ReadOptions, WriteOptions, WriteOutcome};
use dynakv_core::InputError;
use dynakv_ring::key_token;

use crate::support::TestCluster;

#[tokio::test]
async fn batches_of_mixed_outcomes_with_one_node_down() {
    // Four nodes, N = W = 3: with n4 down, exactly the keys it replicates miss their quorum.
    let mut cluster = TestCluster::start(4, 3, 2, 3).await;
    let client = cluster.client();
    cluster.stop(3).await;
    let keys: Vec<String> = (0..120).map(|i| format!("mixed-{i}")).collect();
    let on_n4 = |key: &str| cluster.ring.preference_list(key_token(key.as_bytes())).contains(&3);
    let results =
        client.put_many(keys.iter().map(|k| (k.clone(), format!("v-{k}")))).await.unwrap();
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
    let strict = client.get_many_with(keys.clone(), ReadOptions { r: Some(3) }).await.unwrap();
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
async fn batches_larger_than_one_call_are_split_and_each_op_reports() {
    let cluster = TestCluster::start(3, 3, 2, 2).await;
    let client = cluster.client();
    let puts: Vec<BatchPut> = (0..2500)
        .map(|i| BatchPut::new(format!("bulk-{i:04}"), format!("value-{i}")))
        .chain([BatchPut::new("", "invalid key")])
        .collect();
    let results = client.put_many_with(puts, WriteOptions::default()).await.unwrap();
    assert_eq!(results.len(), 2501);
    let versions: Vec<_> = results[..2500].iter().map(|r| *r.as_ref().unwrap()).collect();
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
    let err = client.get_many_with(["k"], ReadOptions { r: Some(4) }).await.unwrap_err();
    assert!(matches!(err, ClientError::InvalidQuorum { asked: 4, .. }), "{err}");
    cluster.shutdown().await;
}

#[tokio::test]
async fn batched_reads_repair_stale_replicas() {
    let mut cluster = TestCluster::start(3, 3, 2, 2).await;
    let client = cluster.client();
    cluster.stop(2).await;
    let keys: Vec<String> = (0..50).map(|i| format!("repair-{i}")).collect();
    let results = client.put_many(keys.iter().map(|k| (k.clone(), "v"))).await.unwrap();
    let versions: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    client.settle().await;
    cluster.restart(2).await;

    let reader = cluster.client();
    assert_eq!(cluster.replica_record(&reader, 2, &keys[0]).await, None, "n3 missed them");
    let values = reader.get_many(keys.clone()).await.unwrap();
    assert!(values.into_iter().all(|v| v.unwrap() == Some(Bytes::from("v"))));
    reader.settle().await;
    for (key, version) in keys.iter().zip(versions) {
        let repaired = cluster.replica_record(&reader, 2, key).await;
        assert_eq!(repaired.map(|r| r.version), Some(version), "{key} repaired on n3");
    }
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
