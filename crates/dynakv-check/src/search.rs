//! The search over one key's sub-history: Wing & Gong's backtracking over a doubly linked list
//! of invocation and response entries (an operation placed in the order is lifted out of the
//! list, and put back when the search backtracks), with Lowe's cache of explored
//! configurations.

use std::collections::HashSet;
use std::hash::Hash;

use fixedbitset::FixedBitSet;

use crate::{Event, Operation, Outcome, Verdict};

/// One operation the search must (or, if `open`, may) place.
#[derive(Debug)]
pub(crate) struct Op<'a, V, T> {
    op: &'a Operation<V>,
    invoked: T,
    /// `None`: open to the end of the history (an unknown outcome).
    returned: Option<T>,
}

/// The operations of one key that constrain the search: answered reads, writes that succeeded,
/// and writes of unknown outcome whose value some answered read returned. A failed operation
/// took no effect; an unknown write nobody read can always be left out (placing it only
/// forces later reads to see its value).
pub(crate) fn relevant<'a, K, V: Eq, T: Copy>(events: &[&'a Event<K, V, T>]) -> Vec<Op<'a, V, T>> {
    let seen = |value: &Option<V>| {
        events.iter().any(|e| {
            e.outcome == Outcome::Ok && matches!(&e.op, Operation::Read { saw } if saw == value)
        })
    };
    events
        .iter()
        .filter(|e| match (&e.op, e.outcome) {
            (_, Outcome::Failed) => false,
            (Operation::Read { .. }, outcome) => outcome == Outcome::Ok,
            (Operation::Write { .. }, Outcome::Ok) => true,
            (Operation::Write { value }, Outcome::Unknown) => seen(value),
        })
        .map(|e| Op {
            op: &e.op,
            invoked: e.invoked,
            returned: (e.outcome == Outcome::Ok).then_some(e.returned),
        })
        .collect()
}

/// One entry of the list: an operation's invocation or its response.
#[derive(Debug, Clone, Copy)]
struct Entry {
    op: usize,
    call: bool,
}

/// The entries in time order, between a head (index 0) and a tail sentinel, linked both ways
/// so that lifting an operation out and putting it back are O(1).
struct Entries {
    entries: Vec<Entry>,
    /// Index of the response entry of each operation's invocation entry.
    response: Vec<usize>,
    next: Vec<usize>,
    prev: Vec<usize>,
}

const HEAD: usize = 0;

impl Entries {
    fn new<V, T: Ord + Copy>(ops: &[Op<'_, V, T>]) -> Self {
        // (open, time, response-after-invocation, op): open responses last; at equal instants
        // invocations come first, so touching operations count as concurrent.
        let mut order: Vec<(bool, Option<T>, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            order.push((false, Some(op.invoked), false, i));
            order.push((op.returned.is_none(), op.returned, true, i));
        }
        order.sort_by_key(|&(open, time, is_response, _)| (open, time, is_response));
        let mut entries = vec![Entry { op: usize::MAX, call: false }];
        let mut response = vec![0; order.len() + 2];
        let mut call_of = vec![0; ops.len()];
        for &(_, _, is_response, op) in &order {
            let index = entries.len();
            if is_response {
                response[call_of[op]] = index;
            } else {
                call_of[op] = index;
            }
            entries.push(Entry { op, call: !is_response });
        }
        let tail = entries.len();
        entries.push(Entry { op: usize::MAX, call: false });
        let next = (0..=tail).map(|i| (i + 1).min(tail)).collect();
        let prev = (0..=tail).map(|i| i.saturating_sub(1)).collect();
        Entries { entries, response, next, prev }
    }

    fn tail(&self) -> usize {
        self.entries.len() - 1
    }

    fn unlink(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn relink(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = i;
        self.prev[n] = i;
    }

    /// Takes an operation (by its invocation entry) out of the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.response[call]);
    }

    /// Puts back the operation last lifted.
    fn unlift(&mut self, call: usize) {
        self.relink(self.response[call]);
        self.relink(call);
    }
}

/// Applies `op` to a register holding `state`: the state after it, or `None` if a read
/// returned something else.
fn step<V: Eq + Clone>(state: &Option<V>, op: &Operation<V>) -> Option<Option<V>> {
    match op {
        Operation::Read { saw } => (saw == state).then(|| state.clone()),
        Operation::Write { value } => Some(value.clone()),
    }
}

/// Searches for a linearization of `ops`, starting from an empty register, in at most
/// `budget` steps.
pub(crate) fn linearize<V, T>(ops: &[Op<'_, V, T>], budget: u64) -> Verdict
where
    V: Eq + Hash + Clone,
    T: Ord + Copy,
{
    let mut list = Entries::new(ops);
    let tail = list.tail();
    let mut state: Option<V> = None;
    let mut placed = FixedBitSet::with_capacity(ops.len());
    let mut explored: HashSet<(FixedBitSet, Option<V>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<V>)> = Vec::new();
    let mut deepest = 0;
    let mut entry = list.next[HEAD];
    for _ in 0..budget {
        if entry == tail {
            return Verdict::Linearizable;
        }
        let Entry { op, call } = list.entries[entry];
        if call {
            if let Some(after) = step(&state, ops[op].op) {
                placed.insert(op);
                if explored.insert((placed.clone(), after.clone())) {
                    stack.push((entry, std::mem::replace(&mut state, after)));
                    deepest = deepest.max(stack.len());
                    list.lift(entry);
                    entry = list.next[HEAD];
                    continue;
                }
                placed.set(op, false);
            }
            entry = list.next[entry];
        } else if ops[op].returned.is_none() {
            // Only open operations are left unplaced: they may take effect never.
            return Verdict::Linearizable;
        } else {
            let Some((call, before)) = stack.pop() else {
                return Verdict::Violation { placed: deepest };
            };
            state = before;
            placed.set(list.entries[call].op, false);
            list.unlift(call);
            entry = list.next[call];
        }
    }
    Verdict::GaveUp
}
