//! Whole-cluster tests: real nodes on 127.0.0.1 ephemeral ports, real storage in temp dirs,
//! faults injected by stopping, restarting and killing nodes. One test binary, one module per theme.

mod support;

mod anti_entropy;
mod bad_input;
mod batches;
mod catch_up;
mod chaos;
mod cli;
mod client_metrics;
mod clocks;
mod coalescing;
mod concurrency;
mod crashes;
mod dashboard;
mod dev_cli;
mod disk;
mod dump;
mod durability;
mod failures;
mod fuzz;
mod guards;
mod handoff;
mod hedging;
mod lifecycle_cli;
mod linearizable;
mod membership;
mod metrics;
mod repair;
mod retries;
mod ring_cli;
mod round_trips;
mod spans;
mod tls;
mod tombstones;
mod ttl;
