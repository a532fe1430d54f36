//! The contract and the checks (docs/architecture.md#crates):
//!
//! * `contract`: the lazy-MMU API contract realistic programs keep, with the eager value
//!   model it is judged on;
//! * `gen`: programs from bytes (realistic or adversarial) that keep the contract, and
//!   repairing mutants; `decode_input` reads any input as the fuzz targets do;
//! * `check`: the differential checkers, one module per contract rule (a target trace
//!   against the oracle's), visibility hazards and the coverage features of a run;
//! * `differ`: `Differ`, the differential entry point: the C target and the oracle on one
//!   program, and the checks.
//!
//! Programs and their text are lazymmu-lang's; the machine and the run loop
//! lazymmu-model's; the eager semantics lazymmu-oracle's.

pub mod check;
pub mod contract;
pub mod differ;
pub mod gen;

pub use differ::Differ;
