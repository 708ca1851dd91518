//! Bad input is refused with a clear, typed error and writes nothing.

use bytes::Bytes;
use dynakv_client::ClientError;
use dynakv_core::{InputError, MAX_KEY_BYTES};
use dynakv_proto::v1::{self, replica_client::ReplicaClient};
use dynakv_ring::key_token;

use crate::support::TestCluster;

#[tokio::test]
async fn bad_keys_and_values_are_refused_before_any_write() {
    let cluster = TestCluster::start(3, 3, 2, 2).await;
    let client = cluster.client();
    let big_key = Bytes::from(vec![b'k'; MAX_KEY_BYTES + 1]);
    let big_value = Bytes::from(vec![0u8; 1024 * 1024 + 1]);

    let err = client.put("", "v").await.unwrap_err();
    assert!(matches!(err, ClientError::Input(InputError::EmptyKey)), "{err}");
    assert_eq!(err.to_string(), "invalid input: key is empty");
    let err = client.put(big_key.clone(), "v").await.unwrap_err();
    assert!(matches!(err, ClientError::Input(InputError::KeyTooLarge { .. })), "{err}");
    let err = client.put("k", big_value).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Input(InputError::ValueTooLarge { len: 1048577, max: 1048576 })),
        "{err}"
    );
    assert!(matches!(client.get("").await, Err(ClientError::Input(InputError::EmptyKey))));
    assert!(matches!(client.delete(big_key).await, Err(ClientError::Input(_))));

    // The largest allowed key and value do go through.
    let max_key = Bytes::from(vec![b'k'; MAX_KEY_BYTES]);
    client.put(max_key.clone(), Bytes::from(vec![1u8; 1024 * 1024])).await.unwrap();
    assert_eq!(client.get(max_key).await.unwrap().unwrap().len(), 1024 * 1024);

    client.settle().await;
    for status in client.node_statuses().await {
        assert_eq!(
            status.reply.unwrap().keys,
            1,
            "only the valid write was stored on {}",
            status.id
        );
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn nodes_refuse_malformed_and_misrouted_requests() {
    let cluster = TestCluster::start(4, 2, 1, 1).await;
    let addr = cluster.ring.nodes()[0].addr;
    let mut raw = ReplicaClient::connect(format!("http://{addr}")).await.unwrap();

    let empty = raw.read(v1::ReadRequest { ring_version: 0, key: Bytes::new() }).await.unwrap_err();
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);
    assert!(empty.message().contains("key is empty"), "{}", empty.message());

    // A key n1 replicates, and one it does not.
    let key_for = |owned: bool| {
        (0..)
            .map(|i| format!("probe-{i}"))
            .find(|k| cluster.ring.preference_list(key_token(k.as_bytes())).contains(&0) == owned)
            .unwrap()
    };
    let ours = Bytes::from(key_for(true));
    let theirs = Bytes::from(key_for(false));

    let no_record = raw
        .write(v1::WriteRequest {
            ring_version: 0,
            key: ours.clone(),
            record: None,
            hint_for: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(no_record.code(), tonic::Code::InvalidArgument);
    let no_version =
        v1::Record { version: None, tombstone: false, value: Bytes::from("v"), expires_at_ms: 0 };
    let err = raw
        .write(v1::WriteRequest {
            ring_version: 0,
            key: ours.clone(),
            record: Some(no_version),
            hint_for: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let record = v1::Record {
        version: Some(v1::Version { timestamp: 1, writer: 1 }),
        tombstone: false,
        value: Bytes::from("v"),
        expires_at_ms: 0,
    };
    let misrouted = raw
        .write(v1::WriteRequest {
            ring_version: 0,
            key: theirs.clone(),
            record: Some(record.clone()),
            hint_for: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(misrouted.code(), tonic::Code::FailedPrecondition);
    assert!(misrouted.message().contains("not a replica"), "{}", misrouted.message());
    let misrouted =
        raw.read(v1::ReadRequest { ring_version: 0, key: theirs.clone() }).await.unwrap_err();
    assert_eq!(misrouted.code(), tonic::Code::FailedPrecondition);

    let health = raw.health(v1::HealthRequest {}).await.unwrap().into_inner();
    assert_eq!((health.node_id.as_str(), health.keys), ("n1", 0), "nothing was stored");

    // A batch answers each operation on its own, in order.
    use v1::batch_op::Op;
    use v1::batch_result::Result as Outcome;
    let write = |key: &Bytes| v1::BatchOp {
        op: Some(Op::Write(v1::WriteRequest {
            key: key.clone(),
            record: Some(record.clone()),
            ..Default::default()
        })),
    };
    let ops = vec![
        write(&ours),
        write(&theirs),
        v1::BatchOp { op: None },
        v1::BatchOp { op: Some(Op::Read(v1::ReadRequest { ring_version: 0, key: ours.clone() })) },
    ];
    let results = raw.batch(v1::BatchRequest { ops }).await.unwrap().into_inner().results;
    let outcomes: Vec<_> = results.into_iter().map(|r| r.result.unwrap()).collect();
    assert!(matches!(&outcomes[0], Outcome::Write(w) if w.applied));
    assert!(
        matches!(&outcomes[1], Outcome::Error(e) if e.code == tonic::Code::FailedPrecondition as i32)
    );
    assert!(
        matches!(&outcomes[2], Outcome::Error(e) if e.code == tonic::Code::InvalidArgument as i32)
    );
    let read =
        v1::BatchOp { op: Some(Op::Read(v1::ReadRequest { ring_version: 0, key: ours.clone() })) };
    let results =
        raw.batch(v1::BatchRequest { ops: vec![read] }).await.unwrap().into_inner().results;
    let outcome = results[0].result.as_ref().unwrap();
    assert!(matches!(outcome, Outcome::Read(r) if r.record.is_some()), "{outcome:?}");
    assert_eq!(raw.health(v1::HealthRequest {}).await.unwrap().into_inner().keys, 1);
    drop(raw);
    cluster.shutdown().await;
}
