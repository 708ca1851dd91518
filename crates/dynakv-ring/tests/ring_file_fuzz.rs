//! Fuzzing the ring-file parser: arbitrary text, TOML-looking text, ring files built from a small
//! grammar of right and wrong tables, keys and values, and line-level damage to a good file.
//!
//! Every input must end in `Ok` or a typed [`RingError`] whose message names the problem, never a
//! panic; and every ring that parses must be usable: N within the node count, R and W within N,
//! distinct ids and addresses, and preference lists of N distinct nodes wherever a key falls.
//!
//! Case counts are fixed so the suite stays fast; each run prints its seed, and
//! `PROPTEST_RNG_SEED=<seed> cargo test -p dynakv-ring --test ring_file_fuzz` replays it.

use std::collections::HashSet;

use dynakv_ring::config::MAX_N;
use dynakv_ring::{Ring, RingConfig, RingError, key_token};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

/// Cases per property: one parse and a few dozen lookups each, about a millisecond.
const CASES: u32 = 512;

/// A fixed case count and a seed printed up front, so a failing run can be replayed.
fn config(test: &str) -> ProptestConfig {
    let base = ProptestConfig::default();
    let seed = match base.rng_seed {
        RngSeed::Fixed(seed) => seed,
        RngSeed::Random => {
            use std::hash::{BuildHasher, RandomState};
            RandomState::new().hash_one(std::time::SystemTime::now())
        }
    };
    eprintln!("ring file fuzz {test}: {CASES} cases, PROPTEST_RNG_SEED={seed}");
    ProptestConfig { cases: CASES, rng_seed: RngSeed::Fixed(seed), ..base }
}

/// The outcome every input must have: a ring whose invariants hold, or an error naming the
/// problem. Panics (the property fails) otherwise.
fn check(text: &str) -> Result<(), TestCaseError> {
    match Ring::parse(text) {
        Ok(ring) => check_ring(&ring, text),
        Err(error) => check_error(&error, text),
    }
}

/// Everything a parsed ring promises to the node and the client.
fn check_ring(ring: &Ring, text: &str) -> Result<(), TestCaseError> {
    let nodes = ring.nodes();
    let repl = ring.replication();
    prop_assert!(!nodes.is_empty(), "a ring without nodes parsed:\n{text}");
    prop_assert!((1..=MAX_N).contains(&repl.n), "n = {} parsed:\n{text}", repl.n);
    prop_assert!(repl.n <= nodes.len(), "n = {} above {} nodes:\n{text}", repl.n, nodes.len());
    prop_assert!((1..=repl.n).contains(&repl.r), "r = {} with n = {}:\n{text}", repl.r, repl.n);
    prop_assert!((1..=repl.n).contains(&repl.w), "w = {} with n = {}:\n{text}", repl.w, repl.n);
    let ids: HashSet<_> = nodes.iter().map(|n| n.id.as_str()).collect();
    prop_assert_eq!(ids.len(), nodes.len(), "duplicate ids parsed:\n{}", text);
    prop_assert!(nodes.iter().all(|n| !n.id.trim().is_empty()), "empty id parsed:\n{text}");
    let addrs: HashSet<_> = nodes.iter().map(|n| n.addr).collect();
    prop_assert_eq!(addrs.len(), nodes.len(), "duplicate addresses parsed:\n{}", text);
    let config = ring.config();
    prop_assert!((1..=4096).contains(&config.vnodes), "vnodes = {} parsed", config.vnodes);
    prop_assert!(config.limits.max_value_bytes <= dynakv_ring::config::MAX_VALUE_BYTES_LIMIT);
    for (i, node) in nodes.iter().enumerate() {
        prop_assert_eq!(ring.node_index(&node.id).ok(), Some(i));
    }

    // Lookups at the edges of the token space, at vnode tokens, and at tokens that differ from
    // case to case (keys made of the file's text).
    let mut tokens = vec![0, 1, u64::MAX - 1, u64::MAX];
    tokens.extend(ring.ranges().take(8).flat_map(|r| [r.start, r.end, r.end.wrapping_add(1)]));
    tokens.extend((0..24u32).map(|k| key_token(format!("{k}{text}").as_bytes())));
    for token in tokens {
        let list = ring.preference_list(token);
        prop_assert_eq!(list.len(), repl.n, "preference list of {} is {:?}", token, list);
        let distinct: HashSet<_> = list.iter().collect();
        prop_assert_eq!(distinct.len(), repl.n, "repeated replica for {}: {:?}", token, list);
        prop_assert!(list.iter().all(|&i| i < nodes.len()));
        let all: Vec<_> = ring.successors(token).collect();
        prop_assert_eq!(all.len(), nodes.len(), "successors of {} miss nodes", token);
        prop_assert_eq!(&all[..repl.n], &list[..]);
    }
    let shares: f64 = ring.primary_shares().iter().sum();
    prop_assert!((shares - 1.0).abs() < 1e-6, "primary shares sum to {shares}");

    // What parsed serializes back to a file that parses to the same ring.
    let written = toml::to_string(config).expect("a parsed ring serializes");
    let reread = RingConfig::parse(&written);
    prop_assert!(reread.as_ref().is_ok_and(|r| r == config), "{reread:?} from\n{written}");
    Ok(())
}

/// A refusal must say what is wrong, naming the setting, node or address at fault.
fn check_error(error: &RingError, text: &str) -> Result<(), TestCaseError> {
    let message = error.to_string();
    prop_assert!(!message.trim().is_empty(), "empty message for {error:?} from\n{text}");
    let names = match error {
        RingError::Parse(e) => {
            message.starts_with("malformed ring file: ") && !e.message().trim().is_empty()
        }
        RingError::NoNodes => message.contains("no nodes"),
        RingError::EmptyId(i) => *i >= 1 && message.contains(&format!("node #{i}")),
        RingError::DuplicateId(id) => message.contains(&format!("{id:?}")),
        RingError::DuplicateAddr(addr) => message.contains(addr.as_str()),
        RingError::OutOfRange { name, .. } | RingError::QuorumAboveN { name, .. } => {
            message.contains(&format!("replication.{name}"))
        }
        RingError::NAboveNodes { n, nodes } => *n > *nodes && message.contains("replication.n"),
        RingError::NAboveOwners { n, owners, .. } => {
            *n > *owners && message.contains("replication.n")
        }
        RingError::NAboveTarget { n, target } => *n > *target && message.contains("replication.n"),
        RingError::Setting { name, .. } => message.starts_with(name),
        RingError::TlsUnpaired { set, missing } => {
            message.contains(set) && message.contains(missing)
        }
        // Not produced by parsing text.
        RingError::Read { .. } | RingError::UnknownNode { .. } => false,
    };
    prop_assert!(names, "{error:?} does not name its cause: {message}\nfrom\n{text}");
    Ok(())
}

/// A TOML value for a numeric setting: the edges of every integer type the settings use,
/// negatives, and values of the wrong type.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0u64..=5).prop_map(|v| v.to_string()),
        2 => Just("16".into()),
        2 => Just("17".into()),
        1 => Just("4096".into()),
        1 => Just("4097".into()),
        1 => Just("67108864".into()),
        1 => Just("67108865".into()),
        1 => Just(u32::MAX.to_string()),
        1 => Just(i64::MAX.to_string()),
        // Larger than TOML integers can be.
        1 => Just(u64::MAX.to_string()),
        1 => Just("-1".into()),
        1 => Just(i64::MIN.to_string()),
        1 => Just("1.5".into()),
        1 => Just("\"3\"".into()),
        1 => Just("true".into()),
        1 => Just("[]".into()),
        1 => any::<i64>().prop_map(|v| v.to_string()),
    ]
}

/// A value for the setting `key`: usually one of the right type, sometimes anything [`number`]
/// gives or a value of another setting's type.
fn setting_value(key: &str) -> BoxedStrategy<String> {
    let right = match key {
        "sync" => prop_oneof![Just("\"os\"".to_string()), Just("\"always\"".to_string())].boxed(),
        "enabled" => any::<bool>().prop_map(|b| b.to_string()).boxed(),
        _ => prop_oneof![4 => (1u64..=5000).prop_map(|v| v.to_string()), 1 => Just("0".into())]
            .boxed(),
    };
    prop_oneof![
        60 => right,
        2 => number(),
        1 => Just("\"never\"".to_string()),
        1 => Just("false".to_string()),
    ]
    .boxed()
}

/// `key = value` lines for a table: some of its real keys, each at most once; sometimes a wrong
/// key or a real one twice.
fn keys(real: &'static [&'static str]) -> impl Strategy<Value = String> {
    let chosen = prop::sample::subsequence(real, 0..=real.len());
    let wrong = prop_oneof![
        60 => Just(None),
        1 => Just(Some("bogus")),
        1 => Just(Some("N")),
        1 => prop::sample::select(real).prop_map(Some),
    ];
    (chosen, wrong).prop_flat_map(|(chosen, wrong)| {
        let keys: Vec<&'static str> = chosen.into_iter().chain(wrong).collect();
        let values: Vec<_> = keys.iter().map(|k| setting_value(k)).collect();
        (Just(keys), values).prop_map(|(keys, values)| {
            keys.iter().zip(&values).map(|(k, v)| format!("{k} = {v}\n")).collect()
        })
    })
}

/// The optional tables and their real keys.
const TABLES: &[(&str, &[&str])] = &[
    ("timeouts", &["request_ms", "connect_ms"]),
    ("limits", &["max_value_bytes"]),
    ("storage", &["sync", "cache_mb", "min_free_mb", "check_interval_ms"]),
    ("hints", &["interval_ms"]),
    ("anti_entropy", &["enabled", "interval_ms", "max_keys_per_sec"]),
    ("tombstones", &["grace_ms"]),
    ("ttl", &["sweep_interval_ms"]),
];

/// Optional tables, each at most once, with their keys; sometimes an unknown table or a second
/// `[replication]`.
fn tables() -> impl Strategy<Value = Vec<String>> {
    let chosen = prop::sample::subsequence(TABLES, 0..=3);
    let wrong = prop_oneof![
        40 => Just(None),
        1 => Just(Some(("unknown", &["n"][..]))),
        1 => Just(Some(("replication", &["n", "r", "w"][..]))),
    ];
    (chosen, wrong).prop_flat_map(|(chosen, wrong)| {
        chosen
            .into_iter()
            .chain(wrong)
            .map(|(name, real)| keys(real).prop_map(move |body| format!("[{name}]\n{body}")))
            .collect::<Vec<_>>()
    })
}

/// The `[replication]` table, usually right: n, r and w each present, small and in order.
fn replication() -> impl Strategy<Value = String> {
    let setting = |name: &'static str| {
        prop_oneof![
            60 => (1u64..=3).prop_map(move |v| format!("{name} = {v}\n")),
            2 => number().prop_map(move |v| format!("{name} = {v}\n")),
            1 => Just(String::new()),
        ]
    };
    (setting("n"), setting("r"), setting("w"))
        .prop_map(|(n, r, w)| format!("[replication]\n{n}{r}{w}"))
}

/// The `i`-th `[[nodes]]` entry: usually a distinct id and address; sometimes another node's
/// (duplicates), an empty or mistyped id, a malformed address, a missing or extra field.
fn node(i: usize) -> impl Strategy<Value = String> {
    let id = prop_oneof![
        150 => Just(format!("id = \"n{i}\"\n")),
        2 => (0u8..=6).prop_map(|i| format!("id = \"n{i}\"\n")),
        1 => Just("id = \"\"\n".to_string()),
        1 => Just("id = \"  \"\n".to_string()),
        1 => Just("id = 7\n".to_string()),
        1 => Just(String::new()),
    ];
    let addr = prop_oneof![
        150 => Just(format!("addr = \"127.0.0.1:{}\"\n", 7400 + i)),
        2 => (0u16..=6).prop_map(|p| format!("addr = \"127.0.0.1:{}\"\n", 7400 + p)),
        1 => Just(format!("addr = \"[::1]:{}\"\n", 7400 + i)),
        1 => Just("addr = \"127.0.0.1:0\"\n".to_string()),
        1 => Just("addr = \"nowhere\"\n".to_string()),
        1 => Just("addr = \"127.0.0.1:65536\"\n".to_string()),
        1 => Just(String::new()),
    ];
    let extra = prop_oneof![150 => Just(""), 1 => Just("weight = 2\n")];
    (id, addr, extra).prop_map(|(id, addr, extra)| format!("[[nodes]]\n{id}{addr}{extra}"))
}

/// A ring file from the grammar: top-level keys, a `[replication]` table (usually), other tables
/// in any order (any of them, replication included, possibly twice), then nodes, sometimes
/// interleaved with the tables.
fn ring_file() -> impl Strategy<Value = String> {
    let top = (
        prop::sample::subsequence(&["version", "vnodes"][..], 0..=2),
        prop_oneof![
            40 => Just(""),
            1 => Just("replicas = 3\n"),
            3 => Just("nodes = []\n"),
            1 => Just("version = 2\n"),
        ],
    )
        .prop_flat_map(|(keys, wrong)| {
            let values: Vec<_> = keys.iter().map(|k| setting_value(k)).collect();
            (Just(keys), values, Just(wrong)).prop_map(|(keys, values, wrong)| {
                let mut top: String =
                    keys.iter().zip(&values).map(|(k, v)| format!("{k} = {v}\n")).collect();
                top += wrong;
                top
            })
        });
    let replication = prop_oneof![30 => replication().prop_map(Some), 1 => Just(None)];
    let tables = tables();
    let nodes = prop_oneof![1 => Just(0), 15 => 1usize..7]
        .prop_flat_map(|count| (1..=count).map(node).collect::<Vec<_>>());
    (top, replication, tables, nodes, any::<bool>()).prop_map(
        |(top, replication, tables, nodes, interleave)| {
            let mut text = top;
            let tables: Vec<String> = replication.into_iter().chain(tables).collect();
            if interleave {
                for (i, node) in nodes.iter().enumerate() {
                    text += node;
                    if let Some(table) = tables.get(i) {
                        text += table;
                    }
                }
                tables.iter().skip(nodes.len()).for_each(|t| text += t);
            } else {
                tables.iter().chain(&nodes).for_each(|t| text += t);
            }
            text
        },
    )
}

/// A valid ring file, with every optional table.
const GOOD: &str = include_str!("../../../config/ring.toml");

/// The good file with lines dropped, repeated and swapped, and characters overwritten.
fn damaged_file() -> impl Strategy<Value = String> {
    let lines: Vec<&'static str> = GOOD.lines().collect();
    let count = lines.len();
    let edits = prop::collection::vec((0..4u8, 0..count, 0..count, any::<char>()), 1..6);
    edits.prop_map(move |edits| {
        let mut lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        for (kind, a, b, c) in edits {
            let (a, b) = (a % lines.len(), b % lines.len());
            match kind {
                0 if lines.len() > 1 => {
                    lines.remove(a);
                }
                1 => {
                    let line = lines[a].clone();
                    lines.insert(b, line);
                }
                2 => lines.swap(a, b),
                _ => {
                    let mut chars: Vec<char> = lines[a].chars().collect();
                    if !chars.is_empty() {
                        let at = b % chars.len();
                        chars[at] = c;
                    }
                    lines[a] = chars.into_iter().collect();
                }
            }
        }
        lines.join("\n")
    })
}

proptest! {
    #![proptest_config(config("arbitrary_text"))]
    /// Any text at all.
    #[test]
    fn arbitrary_text_is_refused_or_usable(text in any::<String>()) {
        check(&text)?;
    }
}

/// TOML's punctuation, digits and the ring file's words, in any order.
const TOML_LIKE: &str = concat!(
    "([\\[\\]=\"\n .:#,{}-]|[0-9]{1,3}|n|r|w|",
    "nodes|id|addr|replication|vnodes|version|127\\.0\\.0\\.1){0,60}"
);

proptest! {
    #![proptest_config(config("toml_like_text"))]
    /// Text made of TOML's punctuation, digits and the ring file's words.
    #[test]
    fn toml_like_text_is_refused_or_usable(text in TOML_LIKE) {
        check(&text)?;
    }
}

proptest! {
    #![proptest_config(config("grammar_ring_files"))]
    /// Ring files from the grammar: right and wrong tables, keys, numbers and nodes.
    #[test]
    fn grammar_ring_files_are_refused_or_usable(text in ring_file()) {
        check(&text)?;
    }
}

proptest! {
    #![proptest_config(config("damaged_ring_files"))]
    /// The documented ring file, damaged line by line.
    #[test]
    fn damaged_ring_files_are_refused_or_usable(text in damaged_file()) {
        check(&text)?;
    }
}

/// The grammar does reach valid rings and every kind of refusal; otherwise the fuzzing above
/// would check far less than it seems to.
#[test]
fn the_grammar_reaches_valid_rings_and_each_refusal() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = ring_file();
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..4000 {
        let text = strategy.new_tree(&mut runner).unwrap().current();
        let kind = match Ring::parse(&text) {
            Ok(_) => "ok",
            Err(RingError::Parse(_)) => "parse",
            Err(RingError::NoNodes) => "no nodes",
            Err(RingError::EmptyId(_)) => "empty id",
            Err(RingError::DuplicateId(_)) => "duplicate id",
            Err(RingError::DuplicateAddr(_)) => "duplicate addr",
            Err(RingError::OutOfRange { .. }) => "out of range",
            Err(RingError::QuorumAboveN { .. }) => "quorum above n",
            Err(RingError::NAboveNodes { .. }) => "n above nodes",
            Err(RingError::Setting { .. }) => "setting",
            Err(e) => panic!("unexpected {e}"),
        };
        *seen.entry(kind).or_insert(0) += 1;
    }
    eprintln!("outcomes of 4000 grammar ring files: {seen:?}");
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        [
            "duplicate addr",
            "duplicate id",
            "empty id",
            "n above nodes",
            "no nodes",
            "ok",
            "out of range",
            "parse",
            "quorum above n",
            "setting"
        ]
    );
}
