//! `put`, `get`, `delete` and `inspect`.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use bytes::Bytes;
use dynakv_client::{ClientError, ReadOptions, WriteOptions, WriteOutcome, Written};
use dynakv_core::{Record, now_ms};

use crate::cli::{DeleteArgs, GetArgs, InspectArgs, PutArgs};

pub async fn put(args: PutArgs) -> anyhow::Result<ExitCode> {
    let client = super::client(&args.ring)?;
    let consistency = args.consistency.map(Into::into);
    let options = WriteOptions { w: args.w, strict: args.strict, consistency };
    if let Some(file) = &args.batch {
        return super::batch::put_file(&client, file, args.ttl, options).await;
    }
    let key = args.key.expect("clap requires a key");
    let value = match (&args.value_file, args.value) {
        (Some(path), _) => read_value(path, client.ring().config().limits.max_value_bytes)?,
        (None, value) => Bytes::from(value.expect("clap requires a value")),
    };
    let result = match args.ttl {
        Some(ttl) => client.put_ttl_with(key.clone(), value, ttl, options).await,
        None => client.put_with(key.clone(), value, options).await,
    };
    client.settle().await;
    report_write(&key, result, "ok", args.json)
}

/// Reads a value from `path` (`-`: stdin), refusing one longer than `max` bytes without reading
/// all of it.
fn read_value(path: &Path, max: usize) -> anyhow::Result<Bytes> {
    let source: Box<dyn Read> = if path == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot read value file {}", path.display()))?;
        Box::new(file)
    };
    let mut value = Vec::new();
    source
        .take(max as u64 + 1)
        .read_to_end(&mut value)
        .with_context(|| format!("cannot read value file {}", path.display()))?;
    if value.len() > max {
        anyhow::bail!(
            "invalid input: value in {} is more than the {max}-byte limit \
             (limits.max_value_bytes); nothing was sent",
            path.display()
        );
    }
    Ok(Bytes::from(value))
}

/// Reports a put or delete as [`super::write_done`] and [`super::write_failed`] do, and with
/// `json` also as one JSON object on stdout.
fn report_write(
    key: &str,
    result: Result<Written, ClientError>,
    done: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if json {
        let doc = match &result {
            Ok(written) => {
                let mut doc = serde_json::json!({
                    "key": key, "ok": true, "version": written.version.to_string(),
                    "outcome": "applied",
                });
                if let WriteOutcome::Superseded { by } = written.outcome {
                    doc["outcome"] = "superseded".into();
                    doc["superseded_by"] = by.to_string().into();
                }
                doc
            }
            Err(e) => serde_json::json!({
                "key": key, "ok": false, "error": e.to_string(),
                "outcome": match e.write_outcome() {
                    Some(WriteOutcome::Unknown) => Some("unknown"),
                    Some(WriteOutcome::NotApplied) => Some("not_applied"),
                    _ => None,
                },
            }),
        };
        println!("{doc}");
    }
    match result {
        Ok(written) => Ok(super::write_done(written, done)),
        Err(e) => super::write_failed(e),
    }
}

pub async fn get(args: GetArgs) -> anyhow::Result<ExitCode> {
    let client = super::client(&args.ring)?;
    let options = ReadOptions { r: args.r, consistency: args.consistency.map(Into::into) };
    let result = client.get_with(args.key.clone(), options).await;
    // Let read repair finish before the process exits.
    client.settle().await;
    let value = match result {
        Ok(value) => value,
        Err(e) => {
            if args.json {
                println!("{}", serde_json::json!({ "key": args.key, "error": e.to_string() }));
            }
            return Err(e.into());
        }
    };
    if let (Some(path), Some(value)) = (&args.output, &value) {
        std::fs::write(path, value)
            .with_context(|| format!("cannot write the value to {}", path.display()))?;
    }
    if args.json {
        let mut doc = serde_json::json!({ "key": args.key, "found": value.is_some() });
        if let Some(value) = &value {
            doc["bytes"] = value.len().into();
            match &args.output {
                Some(path) => doc["output"] = path.display().to_string().into(),
                None => doc["value"] = super::dump::text(value).into(),
            }
        }
        println!("{doc}");
    }
    match value {
        Some(value) => {
            if !args.json && args.output.is_none() {
                let mut out = std::io::stdout().lock();
                out.write_all(&value)?;
                out.write_all(b"\n")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("not found");
            Ok(ExitCode::from(1))
        }
    }
}

pub async fn delete(args: DeleteArgs) -> anyhow::Result<ExitCode> {
    let client = super::client(&args.ring)?;
    let consistency = args.consistency.map(Into::into);
    let options = WriteOptions { w: args.w, strict: args.strict, consistency };
    let result = client.delete_with(args.key.clone(), options).await;
    client.settle().await;
    report_write(&args.key, result, "deleted", args.json)
}

pub async fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let client = super::client(&args.ring)?;
    let inspection = client.inspect(args.key).await?;
    let now = now_ms();
    if args.json {
        let replicas: Vec<_> = inspection
            .replicas
            .iter()
            .map(|view| {
                let mut item =
                    serde_json::json!({ "node": view.node, "addr": view.addr.to_string() });
                match &view.record {
                    Ok(Some(record)) => {
                        item["state"] = describe_state(record, now).into();
                        item["version"] = record.version.to_string().into();
                        item["value"] = record.value.as_deref().map(show).into();
                        item["expires_at_ms"] = record.expires_at_ms.into();
                    }
                    Ok(None) => item["state"] = "missing".into(),
                    Err(e) => {
                        item["state"] = "unreachable".into();
                        item["error"] = e.to_string().into();
                    }
                }
                item
            })
            .collect();
        let doc = serde_json::json!({ "token": format!("{:016x}", inspection.token), "replicas": replicas });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("token {:016x}; replicas, primary first:", inspection.token);
    for view in &inspection.replicas {
        let what = match &view.record {
            Ok(Some(record)) => {
                let what = match (&record.value, describe_state(record, now)) {
                    (Some(value), "value") => format!(
                        "value {} ({} bytes) version {}",
                        show(value),
                        value.len(),
                        record.version
                    ),
                    (_, state) => format!("{state} version {}", record.version),
                };
                match record.expires_at_ms {
                    0 => what,
                    ms => {
                        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
                        format!("{what} expires {}", humantime::format_rfc3339_millis(at))
                    }
                }
            }
            Ok(None) => "missing".to_string(),
            Err(e) => format!("unreachable: {e}"),
        };
        println!("  {:<8} {:<21} {what}", view.node, view.addr.to_string());
    }
    Ok(ExitCode::SUCCESS)
}

/// `value`, `tombstone` or `expired` (an expired value, or the tombstone a node's TTL sweep
/// left in its place, which keeps the expiry).
pub fn describe_state(record: &Record, now: u64) -> &'static str {
    if record.is_expired_at(now) {
        "expired"
    } else if record.is_tombstone() {
        "tombstone"
    } else {
        "value"
    }
}

/// A value for display: quoted, with non-printable bytes escaped.
fn show(value: &[u8]) -> String {
    format!("\"{}\"", value.escape_ascii())
}
