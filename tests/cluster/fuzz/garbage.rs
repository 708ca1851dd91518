//! Garbage bytes as protobuf: arbitrary bytes, other methods' messages, and damaged encodings,
//! sent as the request body of every method (and of methods that do not exist) through a raw
//! gRPC call with a pass-through codec.
//!
//! Each body is also decoded here as the method's request: bytes that do not decode must be
//! refused with `Internal` (what tonic answers for an undecodable message); bytes that do must
//! end as that message would, by the same model as the structured cases.

use bytes::{Buf, BufMut, Bytes};
use dynakv_node::service::MAX_BATCH_OPS;
use dynakv_proto::v1;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use prost::Message;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::{Request, Status};

use super::{
    CASES, Case, Expect, FuzzNode, Fuzzer, Tally, expect_read, expect_write, key, runtime, settle,
    skew_guard_may_refuse, span, write_request,
};

/// Sends and receives message bodies as they are: the request is not checked, the reply not
/// decoded.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        *self
    }

    fn decoder(&mut self) -> RawCodec {
        *self
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// The service's methods; `Dump` is the one that answers with a stream.
const METHODS: [&str; 10] = [
    "Read",
    "Write",
    "Health",
    "Batch",
    "Digest",
    "Versions",
    "Repair",
    "HintSpans",
    "Handoff",
    "Dump",
];

/// Paths no method serves: a wrong method, a wrong case, a wrong package, no package.
const UNKNOWN_PATHS: [&str; 4] = [
    "/dynakv.v1.Replica/Compact",
    "/dynakv.v1.Replica/read",
    "/dynakv.v2.Replica/Read",
    "/Replica/Read",
];

/// Calls `path` with `body`; a streaming call's messages are all read.
async fn call(
    node: &FuzzNode,
    path: &str,
    body: Bytes,
) -> Result<tonic::Response<Vec<Bytes>>, Status> {
    let mut grpc = tonic::client::Grpc::new(node.channel.clone());
    grpc.ready().await.map_err(|e| Status::unavailable(format!("not ready: {e}")))?;
    let path = PathAndQuery::try_from(path).expect("a valid path");
    if path.path().ends_with("/Dump") {
        let mut stream = grpc.server_streaming(Request::new(body), path, RawCodec).await?;
        let mut messages = Vec::new();
        while let Some(message) = stream.get_mut().message().await? {
            messages.push(message);
        }
        Ok(tonic::Response::new(messages))
    } else {
        let reply = grpc.unary(Request::new(body), path, RawCodec).await?;
        Ok(reply.map(|message| vec![message]))
    }
}

/// Encodings of every request type, so one method receives another's messages.
fn any_message() -> BoxedStrategy<Bytes> {
    let encode = |m: &dyn Fn() -> Vec<u8>| Bytes::from(m());
    let spans = || prop::collection::vec(span(), 0..4);
    prop_oneof![
        key().prop_map(move |key| encode(&|| v1::ReadRequest {
            ring_version: 0,
            key: key.clone()
        }
        .encode_to_vec())),
        write_request().prop_map(move |w| encode(&|| w.encode_to_vec())),
        spans().prop_map(move |spans| {
            encode(&|| {
                v1::DigestRequest { spans: spans.clone(), all_records: false }.encode_to_vec()
            })
        }),
        prop::option::of(span())
            .prop_map(move |span| encode(&|| v1::VersionsRequest { span }.encode_to_vec())),
        (any::<Vec<u8>>(), any::<u64>()).prop_map(move |(prefix, limit)| {
            let prefix = Bytes::from(prefix.clone());
            encode(&|| v1::DumpRequest { prefix: prefix.clone(), limit }.encode_to_vec())
        }),
        write_request().prop_map(move |w| {
            let op = v1::BatchOp { op: Some(v1::batch_op::Op::Write(w.clone())) };
            encode(&|| v1::BatchRequest { ops: vec![op.clone(); 3] }.encode_to_vec())
        }),
    ]
    .boxed()
}

/// Request bodies: arbitrary bytes, short and long; messages of any request type; and those
/// damaged (a byte changed, cut short, or followed by junk).
fn body() -> BoxedStrategy<Bytes> {
    let damaged = (any_message(), any::<u8>(), any::<prop::sample::Index>(), 0..3u8).prop_map(
        |(message, byte, at, how)| {
            let mut bytes = message.to_vec();
            if !bytes.is_empty() {
                let at = at.index(bytes.len());
                match how {
                    0 => bytes[at] = byte,
                    1 => bytes.truncate(at),
                    _ => bytes.extend_from_slice(&[byte, 0xff, 0x01]),
                }
            }
            Bytes::from(bytes)
        },
    );
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..48).prop_map(Bytes::from),
        1 => prop::collection::vec(any::<u8>(), 0..2048).prop_map(Bytes::from),
        3 => any_message(),
        3 => damaged,
    ]
    .boxed()
}

/// What `body` sent to `method` comes to, and whether a clock-skew guard may refuse it.
fn expect(node: &FuzzNode, method: &str, body: &[u8]) -> (Expect, bool) {
    fn decoded<M: Message + Default>(
        body: &[u8],
        then: impl FnOnce(M) -> (Expect, bool),
    ) -> (Expect, bool) {
        match M::decode(body) {
            Ok(message) => then(message),
            Err(_) => (Expect::Refuse(Code::Internal), false),
        }
    }
    fn accept<M>(_: M) -> (Expect, bool) {
        (Expect::Accept, false)
    }
    match method {
        "Read" => decoded(body, |r: v1::ReadRequest| (expect_read(node, &r.key), false)),
        "Write" => decoded(body, |w: v1::WriteRequest| {
            let skew = w
                .record
                .as_ref()
                .and_then(|r| r.version)
                .is_some_and(|v| skew_guard_may_refuse(v.timestamp));
            (expect_write(node, &w), skew)
        }),
        "Batch" => decoded(body, |b: v1::BatchRequest| {
            let over = b.ops.len() > MAX_BATCH_OPS;
            (if over { Expect::Refuse(Code::InvalidArgument) } else { Expect::Accept }, false)
        }),
        "Versions" => decoded(body, |v: v1::VersionsRequest| {
            let missing = v.span.is_none();
            (if missing { Expect::Refuse(Code::InvalidArgument) } else { Expect::Accept }, false)
        }),
        "Health" => decoded(body, |_: v1::HealthRequest| (Expect::Accept, false)),
        "Digest" => decoded::<v1::DigestRequest>(body, accept),
        "Repair" => decoded::<v1::RepairRequest>(body, accept),
        "HintSpans" => decoded::<v1::HintSpansRequest>(body, accept),
        "Handoff" => decoded::<v1::HandoffRequest>(body, accept),
        "Dump" => decoded::<v1::DumpRequest>(body, accept),
        _ => (Expect::Refuse(Code::Unimplemented), false),
    }
}

/// The reply of `method` decodes as its response type.
fn reply_decodes(method: &str, reply: &[Bytes]) -> bool {
    fn all<M: Message + Default>(reply: &[Bytes]) -> bool {
        reply.iter().all(|m| M::decode(&m[..]).is_ok())
    }
    match method {
        "Read" => all::<v1::ReadResponse>(reply),
        "Write" => all::<v1::WriteResponse>(reply),
        "Health" => all::<v1::HealthResponse>(reply),
        "Batch" => all::<v1::BatchResponse>(reply),
        "Digest" => all::<v1::DigestResponse>(reply),
        "Versions" => all::<v1::VersionsResponse>(reply),
        "Repair" => all::<v1::RepairReport>(reply),
        "HintSpans" => all::<v1::HintSpansResponse>(reply),
        "Handoff" => all::<v1::HandoffReport>(reply),
        "Dump" => all::<v1::DumpEntry>(reply),
        _ => false,
    }
}

async fn garbage_case(
    node: &FuzzNode,
    tally: &Tally,
    path: &str,
    body: Bytes,
) -> Result<(), TestCaseError> {
    let method = path.rsplit('/').next().unwrap_or_default();
    let method = if path.starts_with("/dynakv.v1.Replica/") { method } else { "" };
    let (expect, skew) = expect(node, method, &body);
    let before = node.snapshot().await?;
    let result = call(node, path, body).await;
    if let Err(status) = &result
        && status.code() == Code::Internal
    {
        prop_assert!(
            status.message().contains("decode"),
            "Internal not from decoding: {:?}",
            status
        );
    }
    let rpc = format!("raw {}", if method.is_empty() { path } else { method });
    if let Some(reply) = settle(node, tally, &rpc, expect, skew, before, result).await? {
        prop_assert!(
            reply_decodes(method, &reply),
            "{} answered bytes that are not its reply",
            rpc
        );
    }
    Ok(())
}

#[test]
fn garbage_bytes_end_in_typed_errors() {
    const TEST: &str = "fuzz garbage bytes";
    let rt = runtime();
    let node = rt.block_on(FuzzNode::start());
    let tally = Tally::default();
    let fuzzer = Fuzzer::new(TEST);
    for method in METHODS {
        let path = format!("/dynakv.v1.Replica/{method}");
        fuzzer.run(method, CASES, body().prop_map(Case), |Case(body)| {
            rt.block_on(garbage_case(&node, &tally, &path, body))
        });
    }
    for path in UNKNOWN_PATHS {
        fuzzer.run(path, CASES / 8, body().prop_map(Case), |Case(body)| {
            rt.block_on(garbage_case(&node, &tally, path, body))
        });
    }
    tally.report(TEST);
    rt.block_on(node.stop());
}
