//! The compactor: merges the replicas' blocks of a time window into one copy, marks what
//! it replaced, and deletes replaced blocks after a grace period (`plan` decides, pure;
//! the tasks here do the I/O).

// The compactor role's worker runs the plan; until that role lands only the tests do.
#[allow(dead_code)]
pub(crate) mod plan;
