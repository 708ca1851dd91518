//! `dynakv put --batch file.jsonl`: many puts from a JSON-lines file.
//!
//! Every line is parsed and checked (key, value size, ttl) before anything is sent, so a bad
//! file writes nothing; each bad line is reported with its number. Valid files go out through
//! the client's batched put, one outcome per line (a batch is not atomic across keys).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use dynakv_client::{BatchPut, Client, WriteOptions, WriteOutcome};
use dynakv_core::{validate_key, validate_value};
use serde::Deserialize;

/// Lines per batched call, so a huge file's outcomes are not all held at once.
const LINES_PER_CALL: usize = 10_000;

/// One line of a batch file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    key: String,
    value: String,
    /// A humantime duration such as `30s` or `5m`.
    ttl: Option<String>,
}

/// Reads, checks and sends every line of `file`.
pub async fn put_file(
    client: &Client,
    file: &Path,
    default_ttl: Option<Duration>,
    options: WriteOptions,
) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read batch file {}", file.display()))?;
    let max_value = client.ring().config().limits.max_value_bytes;
    let (puts, errors) = parse(&text, default_ttl, max_value);
    if !errors.is_empty() {
        for error in &errors {
            eprintln!("{}: {error}", file.display());
        }
        anyhow::bail!(
            "batch file {} has {} invalid line(s); nothing was written",
            file.display(),
            errors.len()
        );
    }
    let (mut failed, mut unknown, mut superseded) = (0, 0, 0);
    for chunk in puts.chunks(LINES_PER_CALL) {
        let lines = chunk.iter().map(|(number, _)| *number);
        let results = client.put_many_with(chunk.iter().map(|(_, put)| put.clone()), options).await;
        for (number, result) in lines.zip(results?) {
            match result {
                Ok(written) => {
                    if let WriteOutcome::Superseded { by } = written.outcome {
                        superseded += 1;
                        eprintln!("line {number}: {}", super::superseded(written.version, by));
                    }
                }
                Err(e) => {
                    failed += 1;
                    unknown += usize::from(e.write_outcome() == Some(WriteOutcome::Unknown));
                    eprintln!("line {number}: error: {e}");
                }
            }
        }
    }
    client.settle().await;
    let ok = puts.len() - failed - superseded;
    match superseded {
        0 => eprintln!("{ok} of {} puts ok", puts.len()),
        _ => eprintln!("{ok} of {} puts ok, {superseded} superseded", puts.len()),
    }
    Ok(match (failed, unknown, superseded) {
        (0, _, 0) => ExitCode::SUCCESS,
        (0, _, _) => ExitCode::from(super::EXIT_SUPERSEDED),
        (_, 0, _) => ExitCode::from(2),
        _ => ExitCode::from(super::EXIT_OUTCOME_UNKNOWN),
    })
}

/// The puts of a batch file with their line numbers, and one message per invalid line
/// (`line N: reason`). Blank lines are skipped.
fn parse(
    text: &str,
    default_ttl: Option<Duration>,
    max_value: usize,
) -> (Vec<(usize, BatchPut)>, Vec<String>) {
    let mut puts = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let number = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        match check(raw, default_ttl, max_value) {
            Ok(put) => puts.push((number, put)),
            Err(reason) => errors.push(format!("line {number}: {reason}")),
        }
    }
    (puts, errors)
}

/// One line as a put, or why it is invalid.
fn check(raw: &str, default_ttl: Option<Duration>, max_value: usize) -> Result<BatchPut, String> {
    let line: Line = serde_json::from_str(raw).map_err(|e| format!("not a valid entry: {e}"))?;
    validate_key(line.key.as_bytes()).map_err(|e| e.to_string())?;
    validate_value(line.value.as_bytes(), max_value).map_err(|e| e.to_string())?;
    let ttl = match &line.ttl {
        Some(text) => {
            Some(humantime::parse_duration(text).map_err(|e| format!("bad ttl {text:?}: {e}"))?)
        }
        None => default_ttl,
    };
    if ttl == Some(Duration::ZERO) {
        return Err("ttl must be more than zero".into());
    }
    let put = BatchPut::new(line.key, line.value);
    Ok(match ttl {
        Some(ttl) => put.with_ttl(ttl),
        None => put,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_bad_line_by_number() {
        let text = [
            r#"{"key": "a", "value": "1"}"#,
            r#"{"key": "b", "value": "2", "ttl": "30s"}"#,
            "",
            r#"{"key": "c""#,
            r#"{"key": "", "value": "x"}"#,
            r#"{"key": "d", "value": "x", "ttl": "soon"}"#,
            r#"{"key": "e", "value": "xxxxx"}"#,
            r#"{"key": "f", "value": "x", "colour": "red"}"#,
            r#"{"key": "g", "value": "x", "ttl": "0s"}"#,
        ]
        .join("\n");
        let (puts, errors) = parse(&text, None, 4);
        let numbers: Vec<_> = puts.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, [1, 2]);
        assert_eq!(puts[1].1.ttl, Some(Duration::from_secs(30)));
        let lines: Vec<_> = errors.iter().map(|e| e.split(':').next().unwrap()).collect();
        assert_eq!(lines, ["line 4", "line 5", "line 6", "line 7", "line 8", "line 9"]);
        assert!(errors[1].contains("key is empty"), "{}", errors[1]);
        assert!(errors[2].contains("bad ttl \"soon\""), "{}", errors[2]);
        assert!(errors[3].contains("more than the 4-byte limit"), "{}", errors[3]);
        assert!(errors[4].contains("unknown field"), "{}", errors[4]);
    }

    #[test]
    fn the_default_ttl_applies_to_lines_without_one() {
        let text = "{\"key\": \"a\", \"value\": \"1\"}\n{\"key\": \"b\", \"value\": \"2\", \"ttl\": \"1m\"}";
        let (puts, errors) = parse(text, Some(Duration::from_secs(5)), 10);
        assert!(errors.is_empty());
        assert_eq!(puts[0].1.ttl, Some(Duration::from_secs(5)));
        assert_eq!(puts[1].1.ttl, Some(Duration::from_secs(60)));
    }
}
