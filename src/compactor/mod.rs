//! The compactor: merges the replicas' blocks of a time window into one copy, marks what
//! it replaced, and deletes replaced blocks after a grace period. `plan` decides (pure),
//! `merge` merges (pure, a page at a time), `run` does one merge's I/O.

// The compactor role's worker runs these; until that role lands only the tests do.
#[allow(dead_code)]
pub(crate) mod merge;
#[allow(dead_code)]
pub(crate) mod pass;
#[allow(dead_code)]
pub(crate) mod plan;
#[allow(dead_code)]
pub(crate) mod run;

#[cfg(test)]
mod tests;
