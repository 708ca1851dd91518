//! Idempotent retries: attempts of one operation spaced by exponential backoff with jitter
//! (`backon`'s schedule), up to [`ClientOptions::max_attempts`].
//!
//! Only retryable failures are retried ([`QuorumError::is_retryable`]: replicas down, slow,
//! unreachable or unavailable). Callers build the write's record, version included, once, before
//! the first attempt, so every attempt offers the same version and replicas that already stored
//! it treat the retry as the same write.
//!
//! An attempt that replicas refused because the ring it was placed by is stale
//! ([`ReplicaError::StaleRing`](crate::ReplicaError::StaleRing)) first fetches the newer ring;
//! if that brings one, the next attempt goes at once, placed by it, and does not use up one of
//! the `max_attempts` (at most three such attempts per operation).
//!
//! A write that failed with an unknown outcome stays unknown: if a later attempt fails in a way
//! that alone would say "not applied", the earlier, unknown failure is the one reported.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

use crate::error::{Op, QuorumError, WriteOutcome};
use crate::options::ClientOptions;

/// Attempts after a ring refresh that do not count toward `max_attempts`: a client two ring
/// versions behind catches up in one refresh; more bound a cluster that keeps changing.
pub(crate) const MAX_RING_REFRESHES: usize = 3;

/// The waits between attempts of one operation: `max_attempts - 1` of them.
fn schedule(options: &ClientOptions) -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(options.backoff_min_delay)
        .with_max_delay(options.backoff_max_delay)
        .with_jitter()
        .with_max_times(options.max_attempts.saturating_sub(1))
        .build()
}

/// Remembers whether any failed attempt of a write may have been applied.
#[derive(Debug, Default)]
struct OutcomeMemory {
    /// The latest failure whose write outcome was unknown.
    unknown: Option<QuorumError>,
}

impl OutcomeMemory {
    /// Notes a failed attempt.
    fn remember(&mut self, failure: &QuorumError) {
        if failure.op == Op::Write && failure.write_outcome() == WriteOutcome::Unknown {
            self.unknown = Some(failure.clone());
        }
    }

    /// The failure to report once the attempts are over: the last one, unless it says "not
    /// applied" while an earlier attempt may have been applied.
    fn report(self, last: QuorumError) -> QuorumError {
        match self.unknown {
            Some(unknown)
                if last.op == Op::Write && last.write_outcome() == WriteOutcome::NotApplied =>
            {
                unknown
            }
            _ => last,
        }
    }
}

/// Runs `attempt` until it succeeds, fails with an error that is not retryable, or the attempts
/// allowed by `options` are used up. After a stale-ring refusal it awaits `refresh` (true when
/// it brought a newer ring) before the next attempt.
pub(crate) async fn retrying<T, F, Fut, R, RFut>(
    options: &ClientOptions,
    mut refresh: R,
    mut attempt: F,
) -> Result<T, QuorumError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, QuorumError>>,
    R: FnMut() -> RFut,
    RFut: Future<Output = bool>,
{
    let mut delays = schedule(options);
    let mut memory = OutcomeMemory::default();
    let mut refreshes = 0;
    loop {
        let failure = match attempt().await {
            Ok(value) => return Ok(value),
            Err(failure) => failure,
        };
        memory.remember(&failure);
        if let Some(version) = failure.stale_ring()
            && refreshes < MAX_RING_REFRESHES
        {
            refreshes += 1;
            if refresh().await {
                tracing::debug!(ring_version = version, "ring refreshed; trying again");
                continue;
            }
        }
        match delays.next().filter(|_| failure.is_retryable()) {
            Some(delay) => {
                tracing::debug!(error = %failure, ?delay, "retrying");
                pause(delay).await;
            }
            None => return Err(memory.report(failure)),
        }
    }
}

/// Sleeps between two attempts.
async fn pause(delay: Duration) {
    tokio::time::sleep(delay).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ReplicaError, ReplicaFailure};

    fn options(max_attempts: usize) -> ClientOptions {
        ClientOptions {
            request_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            max_value_bytes: 1024,
            health: dynakv_core::HealthPolicy::default(),
            max_inflight_repairs: 1,
            strict_quorum: false,
            consistency: crate::Consistency::Quorum,
            rpcs_in_flight_per_node: 2,
            max_concurrent_batch_ops: 1,
            clock: dynakv_core::Clock::system(),
            max_skew_ms: 500,
            max_attempts,
            backoff_min_delay: Duration::from_millis(1),
            backoff_max_delay: Duration::from_millis(4),
            membership_timeout: Duration::from_secs(1),
            read_fanout: crate::ReadFanout::Quorum,
            hedge: crate::HedgePolicy::default(),
            tls: None,
            caller: dynakv_tls::Caller::Client,
        }
    }

    async fn no_refresh() -> bool {
        false
    }

    fn failure(got: usize, cause: ReplicaError) -> QuorumError {
        QuorumError {
            op: Op::Write,
            needed: 2,
            got,
            replicas: 3,
            target: None,
            failures: vec![ReplicaFailure { node: "n2".into(), cause }],
        }
    }

    #[tokio::test]
    async fn retries_retryable_failures_until_success() {
        let mut calls = 0;
        let result = retrying(&options(5), no_refresh, || {
            calls += 1;
            let n = calls;
            async move { if n < 3 { Err(failure(0, ReplicaError::Refused)) } else { Ok(n) } }
        })
        .await;
        assert_eq!(result.unwrap(), 3);
    }

    #[tokio::test]
    async fn stops_at_max_attempts_and_on_final_errors() {
        let mut calls = 0;
        let result: Result<(), _> = retrying(&options(4), no_refresh, || {
            calls += 1;
            async { Err(failure(0, ReplicaError::Refused)) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls, 4);

        let mut calls = 0;
        let invalid =
            ReplicaError::Rejected { code: tonic::Code::InvalidArgument, message: "bad".into() };
        let result: Result<(), _> = retrying(&options(4), no_refresh, || {
            calls += 1;
            let invalid = invalid.clone();
            async move { Err(failure(0, invalid)) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls, 1, "an invalid request is not retried");
    }

    #[tokio::test]
    async fn a_maybe_applied_write_stays_unknown() {
        let mut calls = 0;
        let result: Result<(), _> = retrying(&options(3), no_refresh, || {
            calls += 1;
            // The first attempt reached one replica; the later ones reached none.
            let got = usize::from(calls == 1);
            async move { Err(failure(got, ReplicaError::Refused)) }
        })
        .await;
        assert_eq!(result.unwrap_err().write_outcome(), WriteOutcome::Unknown);
    }

    #[tokio::test]
    async fn a_stale_ring_is_refreshed_before_the_next_attempt() {
        let stale = || failure(0, ReplicaError::StaleRing { ring_version: 7 });
        // One attempt allowed: the retry after a refresh that brought a newer ring is extra.
        let (mut calls, mut refreshes) = (0, 0);
        let result = retrying(
            &options(1),
            || {
                refreshes += 1;
                async { true }
            },
            || {
                calls += 1;
                let n = calls;
                async move { if n < 3 { Err(stale()) } else { Ok(n) } }
            },
        )
        .await;
        assert_eq!(result.unwrap(), 3, "two refreshes, then the attempt with the new ring");
        assert_eq!(refreshes, 2);

        // A refresh that finds nothing newer falls back to the ordinary schedule.
        let (mut calls, mut refreshes) = (0, 0);
        let result: Result<(), _> = retrying(
            &options(2),
            || {
                refreshes += 1;
                async { false }
            },
            || {
                calls += 1;
                async { Err(stale()) }
            },
        )
        .await;
        assert_eq!(result.unwrap_err().stale_ring(), Some(7));
        assert_eq!((calls, refreshes), (2, 2));

        // A cluster that keeps changing does not retry forever.
        let mut calls = 0;
        let result: Result<(), _> = retrying(
            &options(1),
            || async { true },
            || {
                calls += 1;
                async { Err(stale()) }
            },
        )
        .await;
        assert!(result.is_err());
        assert_eq!(calls, 1 + MAX_RING_REFRESHES);
    }
}
