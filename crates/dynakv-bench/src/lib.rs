//! What dynakv's load benchmarks share: `dynakv bench` and the side-by-side driver of
//! `benches/peers.sh` run the same workloads, record latencies the same way and report the same
//! figures in the same JSON, so one table can set their runs side by side.
//!
//! # Layout
//! - [`workload`]: the YCSB-style mixes ([`WorkloadKind`]), the keyspace and the value
//!   ([`DataSet`]), and the kind of each operation ([`OpKind`]).
//! - [`record`]: [`LatencyRecord`], one task's HDR histograms and errors, merged after a run.
//! - [`report`]: [`Measurement`] and [`OpFigures`], the figures of a run and their JSON shape.

#![warn(missing_docs)]

pub mod record;
pub mod report;
pub mod workload;

pub use record::LatencyRecord;
pub use report::{Measurement, OpFigures};
pub use workload::{DataSet, OpKind, WorkloadKind};
