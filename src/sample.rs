//! `--create-test-sample`: a small CSV of complete clean pairs to try first.
//!
//! (Skeleton: written under issue 3.)
