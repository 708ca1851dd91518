//! Criterion micro-benchmarks of the hot paths: ring lookup (preference list), the merge rule,
//! the hybrid logical clock, storage writes and reads through `Store` (in memory and on fjall in
//! a temp dir, one at a time and in batches of fresh keys), and protobuf encode/decode of a 1 KiB
//! write. `cargo bench --bench micro`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use dynakv_core::{Hlc, Record, Timestamp, Version, merge};
use dynakv_proto::v1;
use dynakv_ring::{Ring, key_token};
use dynakv_storage::{FjallStorage, MemoryStorage, Storage, Store, StoreOptions, Write};
use prost::Message;

/// A 3-node ring with the default 64 vnodes per node.
fn ring() -> Ring {
    let mut text = String::from("[replication]\nn = 3\nr = 2\nw = 2\n");
    for i in 1..=3 {
        text += &format!("[[nodes]]\nid = \"n{i}\"\naddr = \"127.0.0.1:{}\"\n", 7400 + i);
    }
    Ring::parse(&text).expect("valid ring")
}

fn ring_lookup(c: &mut Criterion) {
    let ring = ring();
    let keys: Vec<Bytes> = (0..1024).map(|i| Bytes::from(format!("bench-{i:010}"))).collect();
    let mut i = 0;
    c.bench_function("ring/preference_list(key_token)", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(ring.preference_list(key_token(black_box(&keys[i]))))
        })
    });
}

fn merge_rule(c: &mut Criterion) {
    let older = Record::value(Version::new(Timestamp(10), 1), Bytes::from_static(b"old"));
    let newer = Record::tombstone(Version::new(Timestamp(11), 2));
    c.bench_function("core/merge", |b| {
        b.iter(|| black_box(merge(black_box(&older), black_box(&newer))).version)
    });
}

fn hlc(c: &mut Criterion) {
    let clock = Hlc::new();
    c.bench_function("core/hlc_now", |b| b.iter(|| black_box(clock.now())));
}

/// Writes and reads of 1 KiB records through a `Store` over `engine`, one at a time (the
/// latency of one write includes a hop to the writer thread and back).
fn store_ops(c: &mut Criterion, name: &str, engine: Arc<dyn Storage>) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let store = Store::open(engine, StoreOptions::default()).expect("store");
    let value = Bytes::from(vec![7u8; 1024]);
    let keys: Vec<Bytes> = (0..4096).map(|i| Bytes::from(format!("bench-{i:010}"))).collect();
    let mut ts = 0u64;
    c.bench_function(&format!("storage/{name}/put_1KiB"), |b| {
        b.iter(|| {
            ts += 1;
            let key = &keys[ts as usize % keys.len()];
            let record = Record::value(Version::new(Timestamp(ts), 1), value.clone());
            runtime.block_on(store.write(key_token(key), key, record)).expect("write")
        })
    });
    let mut i = 0;
    c.bench_function(&format!("storage/{name}/get_1KiB"), |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            let key = &keys[i];
            runtime.block_on(store.read(key_token(key), key)).expect("read")
        })
    });
}

/// Records per batch in [`store_batches`]: a streamed chunk of a range move holds at most 2,048.
const BATCH: usize = 2048;

/// A batch of `BATCH` fresh keys of 1 KiB offered to a `Store` over fjall, as a new owner gets
/// them in a range move: one `Store::write` per record all at once (one message each), or one
/// `Store::write_batch` (one message for all).
fn store_batches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Arc::new(FjallStorage::open(dir.path()).expect("fjall"));
    let store = Store::open(engine, StoreOptions::default()).expect("store");
    let value = Bytes::from(vec![7u8; 1024]);
    let mut n = 0u64;
    let mut fresh = || {
        (0..BATCH)
            .map(|_| {
                n += 1;
                let key = Bytes::from(format!("bench-{n:012}"));
                (key_token(&key), key, Record::value(Version::new(Timestamp(n), 1), value.clone()))
            })
            .collect::<Vec<_>>()
    };
    let mut group = c.benchmark_group("storage/fjall");
    group.throughput(criterion::Throughput::Elements(BATCH as u64));
    group.bench_function("2048_fresh_1KiB_one_message_each", |b| {
        b.iter_batched(
            &mut fresh,
            |records| {
                let writes = records
                    .iter()
                    .map(|(token, key, record)| store.write(*token, key, record.clone()));
                runtime.block_on(futures::future::join_all(writes))
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function("2048_fresh_1KiB_one_message", |b| {
        b.iter_batched(
            &mut fresh,
            |records| {
                let writes = records
                    .into_iter()
                    .map(|(token, key, record)| Write::record(token, &key, record))
                    .collect();
                runtime.block_on(store.write_batch(writes))
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn storage(c: &mut Criterion) {
    store_ops(c, "memory", Arc::new(MemoryStorage::new()));
    let dir = tempfile::tempdir().expect("temp dir");
    store_ops(c, "fjall", Arc::new(FjallStorage::open(dir.path()).expect("fjall")));
    store_batches(c);
}

fn protobuf(c: &mut Criterion) {
    let request = v1::WriteRequest {
        ring_version: 0,
        key: Bytes::from_static(b"bench-0000000042"),
        record: Some(
            Record::value(Version::new(Timestamp(1 << 40), 7), vec![7u8; 1024].into()).into(),
        ),
        hint_for: String::new(),
    };
    c.bench_function("proto/encode_write_1KiB", |b| {
        let mut buf = Vec::with_capacity(2048);
        b.iter(|| {
            buf.clear();
            black_box(&request).encode(&mut buf).expect("encode");
            black_box(buf.len())
        })
    });
    let encoded = Bytes::from(request.encode_to_vec());
    c.bench_function("proto/decode_write_1KiB", |b| {
        b.iter(|| v1::WriteRequest::decode(black_box(encoded.clone())).expect("decode"))
    });
}

criterion_group! {
    name = micro;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = ring_lookup, merge_rule, hlc, storage, protobuf
}
criterion_main!(micro);
