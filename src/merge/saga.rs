//! One pair's steps: Validate → Backup → VerifyBackup → RequestMerge → AwaitMerge →
//! Reconcile → AdoptExternalRef → Done.
//!
//! (Skeleton: written under issue 5.)
