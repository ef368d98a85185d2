//! Pure types and functions: no aya, no I/O. Everything here is unit-tested without root.
pub mod addr;
pub mod analysis;
pub mod cohort;
pub mod counters;
pub mod dns_seen;
pub mod failures;
pub mod fleet;
pub mod held;
pub mod latency;
pub mod process;
pub mod ranked;
pub mod reconcile;
pub mod resolvers;
pub mod share;
pub mod snapshot;
pub mod spec;
