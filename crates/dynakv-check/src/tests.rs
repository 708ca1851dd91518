//! Hand-written histories with known answers.

use super::*;

type E = Event<&'static str, u32, u32>;

fn write(key: &'static str, value: u32, invoked: u32, returned: u32) -> E {
    Event {
        key,
        op: Operation::Write { value: Some(value) },
        outcome: Outcome::Ok,
        invoked,
        returned,
    }
}

fn delete(key: &'static str, invoked: u32, returned: u32) -> E {
    Event { key, op: Operation::Write { value: None }, outcome: Outcome::Ok, invoked, returned }
}

fn read(key: &'static str, saw: Option<u32>, invoked: u32, returned: u32) -> E {
    Event { key, op: Operation::Read { saw }, outcome: Outcome::Ok, invoked, returned }
}

fn with(outcome: Outcome, event: E) -> E {
    Event { outcome, ..event }
}

fn verdicts(history: &[E]) -> Vec<(&'static str, Verdict)> {
    check(history).keys.into_iter().map(|k| (k.key, k.verdict)).collect()
}

#[test]
fn sequential_and_concurrent_histories_pass() {
    let history = [
        read("a", None, 0, 1),
        write("a", 1, 2, 3),
        read("a", Some(1), 4, 5),
        delete("a", 6, 7),
        read("a", None, 8, 9),
    ];
    assert!(check(&history).is_linearizable());
    // Two overlapping writes; readers during and after them agree on one order.
    let history = [
        write("a", 1, 0, 10),
        write("a", 2, 1, 9),
        read("a", Some(1), 2, 3),
        read("a", Some(2), 4, 5),
        read("a", Some(2), 11, 12),
    ];
    assert!(check(&history).is_linearizable());
    // A read overlapping a write may see either value.
    for saw in [None, Some(1)] {
        assert!(check(&[write("a", 1, 0, 10), read("a", saw, 5, 6)]).is_linearizable());
    }
}

#[test]
fn a_stale_read_is_caught() {
    // The write of 2 finished before the read began; the read still saw 1.
    let history = [write("a", 1, 0, 1), write("a", 2, 2, 3), read("a", Some(1), 4, 5)];
    let report = check(&history);
    assert!(!report.is_linearizable());
    assert_eq!(report.violations().count(), 1);
    // A read of a value nobody wrote.
    assert!(!check(&[write("a", 1, 0, 1), read("a", Some(7), 2, 3)]).is_linearizable());
    // Reading a deleted value after the delete finished.
    let history = [write("a", 1, 0, 1), delete("a", 2, 3), read("a", Some(1), 4, 5)];
    assert!(!check(&history).is_linearizable());
}

#[test]
fn a_read_that_unsees_a_write_is_caught() {
    // Both reads overlap the write, but once one read returned 1, a later read may not
    // return the old value: that is what ABD's write-back prevents.
    let history = [write("a", 1, 0, 100), read("a", Some(1), 10, 20), read("a", None, 30, 40)];
    assert!(!check(&history).is_linearizable());
    // The same reads concurrent with each other are fine.
    let history = [write("a", 1, 0, 100), read("a", Some(1), 10, 40), read("a", None, 30, 50)];
    assert!(check(&history).is_linearizable());
}

#[test]
fn unknown_writes_stay_open_to_the_end() {
    // A write that timed out may appear long after its caller gave up on it.
    let late = with(Outcome::Unknown, write("a", 2, 2, 3));
    let history =
        [write("a", 1, 0, 1), late.clone(), read("a", Some(1), 4, 5), read("a", Some(2), 90, 91)];
    assert!(check(&history).is_linearizable());
    // ... or never.
    let history = [write("a", 1, 0, 1), late.clone(), read("a", Some(1), 90, 91)];
    assert!(check(&history).is_linearizable());
    // But not before it was invoked.
    let history = [
        write("a", 1, 0, 1),
        read("a", Some(2), 2, 3),
        with(Outcome::Unknown, write("a", 2, 5, 6)),
    ];
    assert!(!check(&history).is_linearizable());
    // And once seen, it cannot be unseen.
    let history = [write("a", 1, 0, 1), late, read("a", Some(2), 4, 5), read("a", Some(1), 6, 7)];
    assert!(!check(&history).is_linearizable());
}

#[test]
fn failed_writes_take_no_effect() {
    let failed = with(Outcome::Failed, write("a", 2, 2, 3));
    assert!(
        check(&[write("a", 1, 0, 1), failed.clone(), read("a", Some(1), 4, 5)]).is_linearizable()
    );
    assert!(!check(&[write("a", 1, 0, 1), failed, read("a", Some(2), 4, 5)]).is_linearizable());
    // A read without an answer observes nothing.
    let lost = with(Outcome::Unknown, read("a", Some(9), 2, 3));
    assert!(check(&[write("a", 1, 0, 1), lost]).is_linearizable());
}

#[test]
fn keys_are_checked_on_their_own() {
    // Each key alone is fine; together they would not need to be ordered consistently anyway.
    let history = [
        write("a", 1, 0, 1),
        write("b", 1, 0, 1),
        read("a", Some(1), 2, 3),
        write("b", 2, 2, 3),
        read("b", Some(1), 4, 5),
    ];
    assert_eq!(
        verdicts(&history),
        vec![("a", Verdict::Linearizable), ("b", Verdict::Violation { placed: 2 })]
    );
}

#[test]
fn many_concurrent_clients_check_quickly() {
    // 8 clients, 200 rounds of overlapping writes and reads that all see the round's value:
    // without the cache, the search would try the orders of every round's writes.
    let mut history = Vec::new();
    for round in 0..200u32 {
        let t = round * 10;
        for client in 0..4 {
            history.push(write("a", round * 4 + client, t, t + 5));
        }
        for client in 0..4 {
            history.push(read("a", Some(round * 4 + 3), t + 6 + client, t + 9));
        }
    }
    assert!(check_with_budget(&history, 5_000_000).is_linearizable());
    // A stale read at the end makes the search backtrack through every round: without the
    // cache that is 4! orders per round, 200 rounds deep.
    history.push(read("a", Some(0), 5_000, 5_001));
    let report = check_with_budget(&history, 5_000_000);
    assert!(matches!(report.keys[0].verdict, Verdict::Violation { .. }), "{report:?}");
}

#[test]
fn the_budget_bounds_the_search() {
    let history = [write("a", 1, 0, 1), write("a", 2, 2, 3), read("a", Some(1), 4, 5)];
    assert_eq!(check_with_budget(&history, 1).keys[0].verdict, Verdict::GaveUp);
    assert!(check_with_budget(&history, 1).gave_up());
}
