//! The savepoint: a versioned JSON journal of every pair's progress.
//!
//! (Skeleton: written under issue 5.)
