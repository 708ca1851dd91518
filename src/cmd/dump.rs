//! `dynakv dump`: one node's records as JSON lines, streamed as the node pages through storage.

use std::io::Write;
use std::process::ExitCode;

use dynakv_core::now_ms;
use futures::StreamExt;

use crate::cli::DumpArgs;

pub async fn run(args: DumpArgs) -> anyhow::Result<ExitCode> {
    let client = super::admin_client(&args.ring)?;
    let mut records = client.dump(&args.node, args.prefix.into_bytes(), args.limit).await?;
    let now = now_ms();
    let mut out = std::io::stdout().lock();
    while let Some(dumped) = records.next().await {
        let dumped = dumped?;
        let record = &dumped.record;
        let line = serde_json::json!({
            "key": text(&dumped.key),
            "token": format!("{:016x}", dumped.token),
            "state": super::kv::describe_state(record, now),
            "version": record.version.to_string(),
            "value": record.value.as_deref().map(text),
            "expires_at_ms": record.expires_at_ms,
        });
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Bytes as a JSON string: as they are when UTF-8, with non-UTF-8 bytes escaped (`\xNN`).
pub fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) => bytes.escape_ascii().to_string(),
    }
}
