//! `put`, `get`, `delete` and `inspect`.

use std::io::Write;
use std::process::ExitCode;

use dynakv_client::{ReadOptions, WriteOptions};
use dynakv_core::{Record, now_ms};

use crate::cli::{DeleteArgs, GetArgs, InspectArgs, PutArgs};

pub async fn put(args: PutArgs) -> anyhow::Result<ExitCode> {
    let client = super::client(&args.ring)?;
    let consistency = args.consistency.map(Into::into);
    let options = WriteOptions { w: args.w, strict: args.strict, consistency };
    if let Some(file) = &args.batch {
        return super::batch::put_file(&client, file, args.ttl, options).await;
    }
    let (key, value) = args.key.zip(args.value).expect("clap requires key and value");
    let result = match args.ttl {
        Some(ttl) => client.put_ttl_with(key, value, ttl, options).await,
        None => client.put_with(key, value, options).await,
    };
    client.settle().await;
    match result {
        Ok(written) => Ok(super::write_done(written, "ok")),
        Err(e) => super::write_failed(e),
    }
}

pub async fn get(args: GetArgs) -> anyhow::Result<ExitCode> {
    let client = super::client(&args.ring)?;
    let options = ReadOptions { r: args.r, consistency: args.consistency.map(Into::into) };
    let result = client.get_with(args.key, options).await;
    // Let read repair finish before the process exits.
    client.settle().await;
    match result? {
        Some(value) => {
            let mut out = std::io::stdout().lock();
            out.write_all(&value)?;
            out.write_all(b"\n")?;
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
    let result = client.delete_with(args.key, options).await;
    client.settle().await;
    match result {
        Ok(written) => Ok(super::write_done(written, "deleted")),
        Err(e) => super::write_failed(e),
    }
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
