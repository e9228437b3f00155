//! Running the plan: every clean pair through its saga, journaled in the savepoint.
//!
//! (Skeleton: written under issue 5.)

pub mod saga;
pub mod savepoint;
