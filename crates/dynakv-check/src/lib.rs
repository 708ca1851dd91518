//! A linearizability checker for histories of single-key registers: reads, writes and deletes
//! of many keys, each with its invocation and response instants and its outcome.
//!
//! A history is linearizable when every operation can be given one instant between its
//! invocation and its response at which it takes effect, such that every read returns the value
//! of the last write before it (`None` before any write, or after a delete).
//!
//! The search is Wing & Gong's (1993): take, one at a time, an operation whose invocation comes
//! before every pending response, apply it to the register, and backtrack when a response is
//! reached whose operation is not yet placed. Two refinements make it practical:
//! - P-compositionality (Horn & Kroening, 2015): a history is linearizable exactly when each
//!   key's sub-history is, so every key is searched on its own.
//! - State caching (Lowe, 2017): a configuration (set of placed operations, register value) that
//!   was already explored is never explored again.
//!
//! Outcomes: an [`Outcome::Ok`] operation must take effect within its interval. A
//! [`Outcome::Failed`] one certainly took no effect and is left out. An [`Outcome::Unknown`]
//! write may or may not have taken effect: it stays open to the end of the history, and may be
//! placed anywhere after its invocation, or nowhere. Reads without an answer observe nothing and
//! are left out.
//!
//! # Layout
//! - [`Event`], [`Operation`], [`Outcome`]: one recorded operation.
//! - [`check`]: every key's sub-history searched, into a [`Report`] of [`Verdict`]s.
//! - `search` (private): the search over one key's sub-history.

#![warn(missing_docs)]

mod search;

use std::collections::BTreeMap;
use std::hash::Hash;

/// What one operation did to its key's register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation<V> {
    /// A read that returned `saw` (`None`: not found).
    Read {
        /// The value the read returned; meaningful only when the outcome is [`Outcome::Ok`].
        saw: Option<V>,
    },
    /// A write of `value`; `None` is a delete.
    Write {
        /// The value written, or `None` for a delete.
        value: Option<V>,
    },
}

/// How an operation ended, as its caller saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded: it took effect between its invocation and its response.
    Ok,
    /// It failed and certainly took no effect.
    Failed,
    /// It failed and may have taken effect, at any time after its invocation.
    Unknown,
}

/// One operation of a history, with the instants its caller saw (`T`: any ordered time, such
/// as [`std::time::Instant`] or a counter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<K, V, T> {
    /// The key operated on.
    pub key: K,
    /// The operation.
    pub op: Operation<V>,
    /// How it ended.
    pub outcome: Outcome,
    /// When it was invoked.
    pub invoked: T,
    /// When it returned; ignored for [`Outcome::Unknown`], which stays open to the end.
    pub returned: T,
}

/// Search steps per key before the checker gives up on it ([`Verdict::GaveUp`]).
pub const DEFAULT_STEP_BUDGET: u64 = 20_000_000;

/// What the search found for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The key's sub-history is linearizable.
    Linearizable,
    /// No order of the key's operations explains what its readers saw.
    Violation {
        /// The most operations the search could place in a valid order.
        placed: usize,
    },
    /// The search used up its step budget without an answer.
    GaveUp,
}

/// The result for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyReport<K> {
    /// The key.
    pub key: K,
    /// Operations of the key that the search considered (failed ones and unanswered reads left out).
    pub operations: usize,
    /// What the search found.
    pub verdict: Verdict,
}

/// The result for a whole history: one [`KeyReport`] per key, in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report<K> {
    /// Every key's result.
    pub keys: Vec<KeyReport<K>>,
}

impl<K> Report<K> {
    /// True when every key's sub-history is linearizable.
    pub fn is_linearizable(&self) -> bool {
        self.keys.iter().all(|k| k.verdict == Verdict::Linearizable)
    }

    /// The keys whose sub-history is certainly not linearizable.
    pub fn violations(&self) -> impl Iterator<Item = &KeyReport<K>> {
        self.keys.iter().filter(|k| matches!(k.verdict, Verdict::Violation { .. }))
    }

    /// True when the search gave up on some key.
    pub fn gave_up(&self) -> bool {
        self.keys.iter().any(|k| k.verdict == Verdict::GaveUp)
    }
}

/// Checks a history of register operations on many keys, each key on its own, with
/// [`DEFAULT_STEP_BUDGET`] search steps per key.
pub fn check<K, V, T>(history: &[Event<K, V, T>]) -> Report<K>
where
    K: Ord + Clone,
    V: Eq + Hash + Clone,
    T: Ord + Copy,
{
    check_with_budget(history, DEFAULT_STEP_BUDGET)
}

/// [`check`], with at most `budget` search steps per key.
pub fn check_with_budget<K, V, T>(history: &[Event<K, V, T>], budget: u64) -> Report<K>
where
    K: Ord + Clone,
    V: Eq + Hash + Clone,
    T: Ord + Copy,
{
    let mut per_key: BTreeMap<&K, Vec<&Event<K, V, T>>> = BTreeMap::new();
    for event in history {
        per_key.entry(&event.key).or_default().push(event);
    }
    let keys = per_key
        .into_iter()
        .map(|(key, events)| {
            let ops = search::relevant(&events);
            let verdict = search::linearize(&ops, budget);
            KeyReport { key: key.clone(), operations: ops.len(), verdict }
        })
        .collect();
    Report { keys }
}

#[cfg(test)]
mod tests;
