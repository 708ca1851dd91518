//! Structured malformed messages for every RPC: empty and oversized keys, versions and expiries
//! at 0 and `u64::MAX`, tombstones with values, values over the limit, unknown `hint_for`,
//! batches over the limit and operations with no op, spans at the edges of the ring, dumps with
//! limits 0 and `u64::MAX` and random prefixes.

use bytes::Bytes;
use dynakv_core::{Timestamp, now_ms};
use dynakv_node::service::MAX_BATCH_OPS;
use dynakv_proto::v1::{self, batch_op::Op, batch_result::Result as Outcome};
use dynakv_ring::key_token;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tonic::Code;

use super::{
    CASES, Case, Expect, FuzzNode, Fuzzer, Tally, WHOLE_RING, edge_u64, expect_read, expect_write,
    in_span, key, owned_key, runtime, settle, skew_guard_may_refuse, span, typed_refusal,
    write_request,
};

#[test]
fn reads_and_writes_end_in_typed_errors() {
    const TEST: &str = "fuzz reads and writes";
    let rt = runtime();
    let node = rt.block_on(FuzzNode::start());
    let tally = Tally::default();
    let fuzzer = Fuzzer::new(TEST);
    fuzzer.run("Read", CASES, key().prop_map(Case), |Case(key)| {
        rt.block_on(read_case(&node, &tally, key))
    });
    fuzzer.run("Write", CASES, write_request().prop_map(Case), |Case(request)| {
        rt.block_on(write_case(&node, &tally, request))
    });
    tally.report(TEST);
    rt.block_on(node.stop());
}

async fn read_case(node: &FuzzNode, tally: &Tally, key: Bytes) -> Result<(), TestCaseError> {
    let before = node.snapshot().await?;
    let expect = expect_read(node, &key);
    let result = node.raw.clone().read(v1::ReadRequest { ring_version: 0, key }).await;
    if let Some(answer) = settle(node, tally, "Read", expect, false, before, result).await? {
        prop_assert_eq!(answer.ring_version, node.ring.version());
        prop_assert_eq!(node.snapshot().await?, before, "a read changed storage");
    }
    Ok(())
}

/// True when a write offers a version a clock-skew guard may refuse.
fn skewed(request: &v1::WriteRequest) -> bool {
    let version = request.record.as_ref().and_then(|r| r.version.as_ref());
    version.is_some_and(|v| skew_guard_may_refuse(v.timestamp))
}

async fn write_case(
    node: &FuzzNode,
    tally: &Tally,
    request: v1::WriteRequest,
) -> Result<(), TestCaseError> {
    let before = node.snapshot().await?;
    let expect = expect_write(node, &request);
    let result = node.raw.clone().write(request.clone()).await;
    let skew = skewed(&request);
    let Some(answer) = settle(node, tally, "Write", expect, skew, before, result).await? else {
        return Ok(());
    };
    let record = request.record.expect("an accepted write has a record");
    let offered = record.version.expect("an accepted write has a version");
    let current = answer.current.ok_or_else(|| TestCaseError::fail("no current version"))?;
    prop_assert_eq!(answer.ring_version, node.ring.version());
    let order = |v: &v1::Version| (v.timestamp, v.writer);
    if answer.applied {
        prop_assert_eq!(&current, &offered);
    } else {
        prop_assert!(
            order(&current) >= order(&offered),
            "kept {current:?}, older than {offered:?}"
        );
    }
    // What a replica applied, it now holds: a tombstone without the value it was sent with.
    if answer.applied && node.replicates(&request.key) {
        let read =
            node.raw.clone().read(v1::ReadRequest { ring_version: 0, key: request.key }).await;
        let held = read.map_err(|s| TestCaseError::fail(format!("read back: {s:?}")))?;
        let held = held.into_inner().record.ok_or_else(|| TestCaseError::fail("not held"))?;
        prop_assert_eq!(held.version, Some(offered));
        prop_assert_eq!(held.tombstone, record.tombstone);
        prop_assert_eq!(held.value, if record.tombstone { Bytes::new() } else { record.value });
        prop_assert_eq!(held.expires_at_ms, record.expires_at_ms);
    }
    Ok(())
}

#[test]
fn batches_end_in_typed_errors() {
    const TEST: &str = "fuzz batches";
    let rt = runtime();
    let node = rt.block_on(FuzzNode::start());
    let tally = Tally::default();
    let fuzzer = Fuzzer::new(TEST);
    fuzzer.run("Batch", CASES, batch().prop_map(Case), |Case(ops)| {
        rt.block_on(batch_case(&node, &tally, ops))
    });
    tally.report(TEST);
    rt.block_on(node.stop());
}

/// One batch operation: a read, a write or no op at all.
fn op() -> BoxedStrategy<v1::BatchOp> {
    prop_oneof![
        4 => key().prop_map(|key| Some(Op::Read(v1::ReadRequest { ring_version: 0, key }))),
        6 => write_request().prop_map(|write| Some(Op::Write(write))),
        1 => Just(None),
    ]
    .prop_map(|op| v1::BatchOp { op })
    .boxed()
}

/// Small batches of any operations, and batches at and just over the operation limit: a few
/// random operations, then one cheap operation repeated.
fn batch() -> BoxedStrategy<Vec<v1::BatchOp>> {
    let cheap = prop_oneof![
        Just(None),
        Just(Some(Op::Read(v1::ReadRequest { ring_version: 0, key: Bytes::new() }))),
        Just(Some(Op::Write(v1::WriteRequest { key: Bytes::from("k"), ..Default::default() }))),
    ];
    let large = (prop::collection::vec(op(), 0..4), MAX_BATCH_OPS - 1..=MAX_BATCH_OPS + 2, cheap)
        .prop_map(|(mut ops, len, cheap)| {
            ops.resize(len, v1::BatchOp { op: cheap });
            ops
        });
    prop_oneof![15 => prop::collection::vec(op(), 0..8), 1 => large].boxed()
}

async fn batch_case(
    node: &FuzzNode,
    tally: &Tally,
    ops: Vec<v1::BatchOp>,
) -> Result<(), TestCaseError> {
    let before = node.snapshot().await?;
    let expect = if ops.len() > MAX_BATCH_OPS {
        Expect::Refuse(Code::InvalidArgument)
    } else {
        Expect::Accept
    };
    // Each operation's own outcome, and whether it may write.
    let each: Vec<(Expect, bool, bool)> = ops
        .iter()
        .map(|op| match &op.op {
            Some(Op::Read(read)) => (expect_read(node, &read.key), false, false),
            Some(Op::Write(write)) => {
                let expect = expect_write(node, write);
                (expect, skewed(write), expect == Expect::Accept)
            }
            None => (Expect::Refuse(Code::InvalidArgument), false, false),
        })
        .collect();
    let result = node.raw.clone().batch(v1::BatchRequest { ops: ops.clone() }).await;
    let Some(answer) = settle(node, tally, "Batch", expect, false, before, result).await? else {
        return Ok(());
    };
    prop_assert_eq!(answer.results.len(), ops.len());
    prop_assert_eq!(answer.ring_version, node.ring.version());
    for (i, (result, (expect, skew, _))) in answer.results.iter().zip(&each).enumerate() {
        let is_read = matches!(ops[i].op, Some(Op::Read(_)));
        match (&result.result, expect) {
            (Some(Outcome::Error(e)), _) => {
                let code = Code::from_i32(e.code);
                tally.note("Batch op", Some(code));
                let wanted = *expect == Expect::Refuse(code);
                prop_assert!(
                    wanted || (*skew && typed_refusal(code)),
                    "op {i} failed with {code:?} ({}), expected {expect:?}",
                    e.message
                );
            }
            (Some(Outcome::Read(_)), Expect::Accept) if is_read => tally.note("Batch op", None),
            (Some(Outcome::Write(_)), Expect::Accept) if !is_read => tally.note("Batch op", None),
            (other, _) => prop_assert!(false, "op {i} answered {other:?}, expected {expect:?}"),
        }
    }
    if each.iter().all(|(_, _, writes)| !writes) {
        prop_assert_eq!(
            node.snapshot().await?,
            before,
            "a batch that wrote nothing changed storage"
        );
    }
    Ok(())
}

#[test]
fn span_requests_dumps_and_passes_end_in_typed_errors() {
    const TEST: &str = "fuzz spans, dumps and passes";
    let rt = runtime();
    let node = rt.block_on(FuzzNode::start());
    let Seeded { records, hints } = rt.block_on(seed(&node));
    let tally = Tally::default();
    let fuzzer = Fuzzer::new(TEST);
    // Spans anywhere, and spans that begin or end at, just before or just after a stored key.
    let tokens: Vec<u64> = records.iter().chain(&hints).copied().collect();
    let span = || prop_oneof![span(), span_at(tokens.clone())];
    let spans = || prop::collection::vec(span(), 0..6).prop_map(Case);
    fuzzer.run("Digest", CASES, spans(), |Case(spans)| {
        rt.block_on(digest_case(&node, &tally, spans))
    });
    fuzzer.run("HintSpans", CASES, spans(), |Case(spans)| {
        rt.block_on(hint_spans_case(&node, &tally, spans, &hints))
    });
    let span = prop::option::weighted(0.9, span()).prop_map(Case);
    fuzzer
        .run("Versions", CASES, span, |Case(span)| rt.block_on(versions_case(&node, &tally, span)));
    let dump =
        (prefix(), limit()).prop_map(|(prefix, limit)| Case(v1::DumpRequest { prefix, limit }));
    fuzzer.run("Dump", CASES, dump, |Case(request)| rt.block_on(dump_case(&node, &tally, request)));
    // Handoff and Repair take no input: a few passes each, over the seeded data.
    fuzzer.run("passes", 16, any::<bool>(), |repair| rt.block_on(pass_case(&node, &tally, repair)));
    tally.report(TEST);
    rt.block_on(node.stop());
}

/// Spans with a bound at, one before or one after one of `tokens`, the other bound anywhere.
fn span_at(tokens: Vec<u64>) -> BoxedStrategy<v1::TokenSpan> {
    let near = prop::sample::select(tokens)
        .prop_flat_map(|t| prop::sample::select(vec![t.wrapping_sub(1), t, t.wrapping_add(1)]));
    (near.clone(), prop_oneof![near, edge_u64()], any::<bool>())
        .prop_map(|(a, b, flip)| {
            let (start, end) = if flip { (b, a) } else { (a, b) };
            v1::TokenSpan { start, end }
        })
        .boxed()
}

/// The tokens of what [`seed`] stored.
struct Seeded {
    /// Keys stored as records.
    records: Vec<u64>,
    /// Keys held as hints.
    hints: Vec<u64>,
}

/// Stores records of every kind on the node (values, tombstones, a tombstone old enough to be
/// collected, expired and expiring values) and hints for both other nodes.
async fn seed(node: &FuzzNode) -> Seeded {
    let mut records = Vec::new();
    let mut raw = node.raw.clone();
    let now = Timestamp::from_millis(now_ms()).0;
    for i in 0..48u64 {
        let version =
            Some(v1::Version { timestamp: if i % 6 == 2 { 1 } else { now + i }, writer: i });
        let (tombstone, expires_at_ms) = match i % 6 {
            1 | 2 => (true, 0),
            3 => (false, 1),
            4 => (false, now_ms() + 3_600_000),
            _ => (false, 0),
        };
        let value = Bytes::from(format!("value {i}"));
        let record = Some(v1::Record { version, tombstone, value, expires_at_ms });
        let key = owned_key(node, i);
        records.push(key_token(&key));
        raw.write(v1::WriteRequest { ring_version: 0, key, record, hint_for: String::new() })
            .await
            .expect("seed");
    }
    let mut hinted = Vec::new();
    for (owner, index) in [("n2", 1), ("n3", 2)] {
        let keys = (0u64..).map(|i| Bytes::from(format!("hint-{owner}-{i}")));
        for key in keys.filter(|k| node.ring.preference_list(key_token(k)).contains(&index)).take(4)
        {
            let version = Some(v1::Version { timestamp: now, writer: 1 });
            let record =
                Some(v1::Record { version, value: Bytes::from("hinted"), ..Default::default() });
            hinted.push(key_token(&key));
            let hint_for = owner.to_string();
            raw.write(v1::WriteRequest { ring_version: 0, key, record, hint_for })
                .await
                .expect("seed a hint");
        }
    }
    Seeded { records, hints: hinted }
}

async fn digest_case(
    node: &FuzzNode,
    tally: &Tally,
    spans: Vec<v1::TokenSpan>,
) -> Result<(), TestCaseError> {
    let before = node.snapshot().await?;
    // Scanned digests, then kept ones: each kind adds up over a span and its complement.
    for all_records in [false, true] {
        let whole = if all_records { before.kept } else { before.digest };
        let request = v1::DigestRequest { spans: spans.clone(), all_records };
        let result = node.raw.clone().digest(request).await;
        let Some(answer) =
            settle(node, tally, "Digest", Expect::Accept, false, before, result).await?
        else {
            return Ok(());
        };
        prop_assert_eq!(answer.all_records, all_records);
        prop_assert_eq!(answer.digests.len(), spans.len());
        prop_assert_eq!(answer.counts.len(), spans.len());
        // A span and its complement cover the ring once: their digests XOR, and their counts
        // add up, to the whole ring's.
        for (i, span) in spans.iter().enumerate() {
            let (digest, count) = (answer.digests[i], answer.counts[i]);
            if span.start == span.end {
                prop_assert_eq!((digest, count), whole, "{:?} is the whole ring", span);
                continue;
            }
            let complement = v1::TokenSpan { start: span.end, end: span.start };
            let request = v1::DigestRequest { spans: vec![complement], all_records };
            let other = node.raw.clone().digest(request).await;
            let other = other.map_err(|s| TestCaseError::fail(format!("{s:?}")))?.into_inner();
            prop_assert_eq!(digest ^ other.digests[0], whole.0, "digests of {:?}", span);
            prop_assert_eq!(count + other.counts[0], whole.1, "counts of {:?}", span);
        }
    }
    prop_assert_eq!(node.snapshot().await?, before);
    Ok(())
}

async fn hint_spans_case(
    node: &FuzzNode,
    tally: &Tally,
    spans: Vec<v1::TokenSpan>,
    hinted: &[u64],
) -> Result<(), TestCaseError> {
    let before = node.snapshot().await?;
    let result = node
        .raw
        .clone()
        .hint_spans(v1::HintSpansRequest { spans: spans.clone(), ignore_owners: Vec::new() })
        .await;
    let Some(answer) =
        settle(node, tally, "HintSpans", Expect::Accept, false, before, result).await?
    else {
        return Ok(());
    };
    let expected: Vec<bool> =
        spans.iter().map(|&span| hinted.iter().any(|&t| in_span(span, t))).collect();
    prop_assert_eq!(answer.held, expected);
    prop_assert_eq!(node.snapshot().await?, before);
    Ok(())
}

async fn versions_case(
    node: &FuzzNode,
    tally: &Tally,
    span: Option<v1::TokenSpan>,
) -> Result<(), TestCaseError> {
    let before = node.snapshot().await?;
    let expect =
        if span.is_some() { Expect::Accept } else { Expect::Refuse(Code::InvalidArgument) };
    let result = node.raw.clone().versions(v1::VersionsRequest { span }).await;
    let Some(answer) = settle(node, tally, "Versions", expect, false, before, result).await? else {
        return Ok(());
    };
    let span = span.expect("answered with a span");
    // Every entry is in the span, in clockwise order from its start.
    let mut last = None;
    for entry in &answer.entries {
        let token = key_token(&entry.key);
        prop_assert!(in_span(span, token), "{:?} has a key of token {}", span, token);
        let position = (token.wrapping_sub(span.start).wrapping_sub(1), entry.key.clone());
        prop_assert!(last.as_ref() < Some(&position), "out of order at token {token}");
        last = Some(position);
    }
    prop_assert_eq!(node.snapshot().await?, before);
    Ok(())
}

/// Dump prefixes: none, the seeded keys' and hints' prefixes, random bytes, longer than any key.
fn prefix() -> BoxedStrategy<Bytes> {
    prop_oneof![
        Just(Bytes::new()),
        Just(Bytes::from("fuzz-")),
        Just(Bytes::from("fuzz-1")),
        Just(Bytes::from("hint-")),
        prop::collection::vec(any::<u8>(), 1..3).prop_map(Bytes::from),
        Just(Bytes::from(vec![b'f'; 100])),
    ]
    .boxed()
}

/// Dump limits: 0 (no limit), small, and at `u64::MAX`.
fn limit() -> BoxedStrategy<u64> {
    prop_oneof![Just(0), Just(1), 2u64..64, Just(u64::MAX - 1), Just(u64::MAX), any::<u64>()]
        .boxed()
}

async fn dump_case(
    node: &FuzzNode,
    tally: &Tally,
    request: v1::DumpRequest,
) -> Result<(), TestCaseError> {
    let before = node.snapshot().await?;
    let stored = node.raw.clone().versions(v1::VersionsRequest { span: Some(WHOLE_RING) }).await;
    let stored = stored.map_err(|s| TestCaseError::fail(format!("{s:?}")))?.into_inner();
    let result = node.raw.clone().dump(request.clone()).await;
    let Some(mut stream) =
        settle(node, tally, "Dump", Expect::Accept, false, before, result).await?
    else {
        return Ok(());
    };
    let mut keys = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(entry)) => {
                prop_assert_eq!(entry.token, key_token(&entry.key));
                prop_assert!(entry.record.is_some_and(|r| r.version.is_some()));
                keys.push(entry.key);
            }
            Ok(None) => break,
            Err(status) => prop_assert!(false, "the dump stream failed: {status:?}"),
        }
    }
    let limit = if request.limit == 0 { usize::MAX } else { request.limit as usize };
    let expected: Vec<Bytes> = stored
        .entries
        .into_iter()
        .map(|e| e.key)
        .filter(|k| k.starts_with(&request.prefix))
        .take(limit)
        .collect();
    prop_assert_eq!(keys, expected);
    prop_assert_eq!(node.snapshot().await?, before);
    Ok(())
}

/// A hint delivery pass or an anti-entropy round, with both other nodes down: each reports, and
/// neither changes what the node stores.
async fn pass_case(node: &FuzzNode, tally: &Tally, repair: bool) -> Result<(), TestCaseError> {
    let before = node.snapshot().await?;
    if repair {
        let result = node.raw.clone().repair(v1::RepairRequest {}).await;
        if let Some(report) =
            settle(node, tally, "Repair", Expect::Accept, false, before, result).await?
        {
            prop_assert_eq!(report.node_id.as_str(), "n1");
            prop_assert_eq!(report.keys_received, 0);
        }
    } else {
        let result = node.raw.clone().handoff(v1::HandoffRequest {}).await;
        if let Some(report) =
            settle(node, tally, "Handoff", Expect::Accept, false, before, result).await?
        {
            prop_assert_eq!(report.node_id.as_str(), "n1");
            prop_assert_eq!(report.delivered, 0);
            prop_assert_eq!(report.pending, before.hints);
        }
    }
    prop_assert_eq!(node.snapshot().await?, before);
    Ok(())
}

/// Found by these fuzz tests: a write stamped `u64::MAX` used to be accepted, and every `Health`
/// after it panicked in `Hlc::now` (`last + 1` overflowed). Nodes now refuse timestamps more than
/// `max_skew_ms` ahead, and the clock saturates.
#[tokio::test]
async fn a_version_at_u64_max_leaves_the_node_serving() {
    let node = FuzzNode::start().await;
    let version = Some(v1::Version { timestamp: u64::MAX, writer: 1 });
    let record = Some(v1::Record { version, value: Bytes::from("v"), ..Default::default() });
    let key = owned_key(&node, 0);
    let write = v1::WriteRequest { ring_version: 0, key, record, hint_for: String::new() };
    // Accepted today; refusing it (with a typed code) is as good.
    let _ = node.raw.clone().write(write).await;
    for _ in 0..2 {
        let health = node.raw.clone().health(v1::HealthRequest {}).await;
        assert!(health.is_ok(), "Health after a version at u64::MAX: {health:?}");
    }
    node.stop().await;
}
