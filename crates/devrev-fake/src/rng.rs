//! SplitMix64, the one seeded PRNG of the test fixtures and `examples/gen_contacts.rs`:
//! tiny, fast, and the same output on every platform and Rust version, so seeds never change
//! with a `rand` upgrade.

/// One SplitMix64 step.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A small deterministic PRNG (SplitMix64) so seeds never change with a `rand` upgrade.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// The fake's generator: the seed is mixed with a constant first.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x005e_ed0f_de7e_u64)
    }
    /// Starts from `state` as given (the published `gen_contacts` seeds depend on it).
    pub fn from_state(state: u64) -> Rng {
        Rng(state)
    }
    pub fn next_u64(&mut self) -> u64 {
        splitmix(&mut self.0)
    }
    /// Uniform in `lo..=hi` (returns `lo` when `hi <= lo`).
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        if hi <= lo {
            return lo;
        }
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// True with probability `pct`/100.
    pub fn pct(&mut self, pct: u8) -> bool {
        self.next_u64() % 100 < u64::from(pct)
    }
    /// True with probability `p` (0.0..=1.0).
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.range(0, items.len() - 1)]
    }
    pub fn base62(&mut self, len: usize) -> String {
        const A: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        (0..len)
            .map(|_| A[(self.next_u64() % 62) as usize] as char)
            .collect()
    }
    pub fn lower_alnum(&mut self, len: usize) -> String {
        const A: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        (0..len)
            .map(|_| A[(self.next_u64() % 36) as usize] as char)
            .collect()
    }
}
