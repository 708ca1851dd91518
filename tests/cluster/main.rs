//! Whole-cluster tests: real nodes on 127.0.0.1 ephemeral ports, real storage in temp dirs,
//! faults injected by stopping, restarting and killing nodes. One test binary, one module per theme.

mod support;

mod bad_input;
mod cli;
mod coalescing;
mod concurrency;
mod durability;
mod failures;
mod repair;
mod round_trips;
