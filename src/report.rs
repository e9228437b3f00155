//! The JSON merge report and the console summary.
//!
//! (Skeleton: written under issue 5.)
