//! The claims a writer's transaction checks before it makes samples durable: an HA leader's
//! lease ([`Fence`]) and a legacy lock holder's tenure ([`LockFence`]). Plain data, so the
//! stages that carry them (election, queue, writer, engine) share them without depending on
//! one another.

/// What a writer checks inside its transaction: `tenure` is still the current tenure of
/// advisory lock `key`, and its holder session still holds the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockFence {
    pub key: i64,
    /// Bumped each time an instance wins the lock (`promgres.advisory_tenure`): a job accepted
    /// under an earlier tenure, even one of the same session, never passes.
    pub tenure: i64,
}

/// An HA leader's claim, checked inside the inserting transaction: `replica` must lead
/// `cluster` and `min_ms` must lie in its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence<'a> {
    pub cluster: &'a str,
    pub replica: &'a str,
    pub min_ms: i64,
    pub max_ms: i64,
}
