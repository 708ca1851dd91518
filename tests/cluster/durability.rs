//! Acknowledged writes survive `kill -9` of real node processes.

use bytes::Bytes;
use dynakv_client::WriteOptions;
use dynakv_ring::Ring;

use crate::support::{NodeProcess, client_for, free_addr, ring_text, wait_until_up};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<_> = (0..3).map(|_| free_addr()).collect();
    let ring_path = dir.path().join("ring.toml");
    std::fs::write(&ring_path, ring_text(&addrs, 3, 2, 2)).unwrap();
    let ring = Ring::load(&ring_path).unwrap();
    let start = |i: usize| {
        NodeProcess::start(
            &ring_path,
            &format!("n{}", i + 1),
            &dir.path().join(format!("n{}", i + 1)),
        )
    };

    let nodes: Vec<_> = (0..3).map(start).collect();
    let client = client_for(&ring);
    wait_until_up(&client).await;

    // W = 3: each of these writes was acknowledged by every node before the kill.
    let writes = (0..300).map(|i| {
        let client = client.clone();
        async move {
            client
                .put_with(
                    format!("key-{i}"),
                    format!("value-{i}"),
                    WriteOptions { w: Some(3), ..Default::default() },
                )
                .await
        }
    });
    for result in futures::future::join_all(writes).await {
        result.unwrap();
    }
    for node in nodes {
        node.kill9();
    }

    let _nodes: Vec<_> = (0..3).map(start).collect();
    let fresh = client_for(&ring);
    wait_until_up(&fresh).await;
    for status in fresh.node_statuses().await {
        assert_eq!(status.reply.as_ref().unwrap().keys, 300, "node {} lost keys", status.id);
    }
    for i in (0..300).step_by(7) {
        let key = format!("key-{i}");
        for view in fresh.inspect(key.clone()).await.unwrap().replicas {
            let record = view.record.unwrap().unwrap_or_else(|| panic!("{} lost {key}", view.node));
            assert_eq!(record.value, Some(Bytes::from(format!("value-{i}"))));
        }
    }
}
