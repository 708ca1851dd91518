//! Concurrent writers: replicas converge on the highest version.

use dynakv_core::Version;

use crate::support::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_to_one_key_converge_on_the_highest_version() {
    let cluster = TestCluster::start(3, 3, 2, 2).await;
    let writers: Vec<_> = (0..8).map(|_| cluster.client()).collect();
    let tasks = writers.iter().cloned().enumerate().map(|(w, client)| {
        tokio::spawn(async move {
            let mut versions = Vec::new();
            for i in 0..40 {
                versions.push(
                    client.put("contended", format!("writer {w} write {i}")).await.unwrap().version,
                );
            }
            versions
        })
    });
    let mut acked: Vec<Version> = Vec::new();
    for task in tasks {
        acked.extend(task.await.unwrap());
    }
    for writer in &writers {
        writer.settle().await;
    }
    let highest = *acked.iter().max().unwrap();
    let reader = cluster.client();
    for node in 0..3 {
        let record = cluster.replica_record(&reader, node, "contended").await.unwrap();
        assert_eq!(record.version, highest, "node n{} diverged", node + 1);
    }
    let read = reader.get_versioned("contended").await.unwrap().unwrap();
    assert_eq!(read.version, highest);
    cluster.shutdown().await;
}
