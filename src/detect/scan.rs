//! The speed code of detection: pass 1 reduces every row to a 32-byte summary, the slots
//! decide from the summaries alone what pass 2 re-reads and where each row lands, pass 2 reads
//! just those rows straight into place (see the `detect` module documentation for why).

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{Read, Seek};

use super::rows::{Col, Layout, Problems, check_row, read_header, stopped};
use super::{Contact, Pair, RefClass, Singles, classify_ref, in_domain, normalize_email_into};
use crate::csvrec::{RawReader, RawRecord, read_pipelined};
use crate::error::AppError;
use crate::options::Keep;

/// A fast 64-bit hash (8 bytes per step, MurmurHash3's finalizer). It only decides what to
/// re-read: a collision, even a crafted one, costs a re-read and never changes the plan.
pub(super) fn hash64(s: &str) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let bytes = s.as_bytes();
    let mut h = (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    let mut word = [0u8; 8];
    for c in &mut chunks {
        word.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(word))
            .wrapping_mul(K)
            .rotate_left(31);
    }
    let rest = chunks.remainder();
    word = [0u8; 8];
    word[..rest.len()].copy_from_slice(rest);
    h = (h ^ u64::from_le_bytes(word)).wrapping_mul(K);
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    h ^ (h >> 33)
}

#[cfg(test)]
thread_local! {
    /// When set, email and id hashes are taken modulo these numbers, so they collide
    /// (see `hash_collisions_change_nothing`).
    pub(super) static COLLIDE: std::cell::Cell<Option<(u64, u64)>> = const { std::cell::Cell::new(None) };
}

/// Hash of a normalized email.
pub(super) fn email_hash(s: &str) -> u64 {
    test_hash(s, |m| m.0)
}

/// Hash of a REV_USER_ID.
pub(super) fn id_hash(s: &str) -> u64 {
    test_hash(s, |m| m.1)
}

/// [`hash64`], except in tests that force collisions (`modulus` picks the email's or the
/// id's modulus) to prove they never change the plan.
#[inline(always)]
fn test_hash(s: &str, modulus: fn((u64, u64)) -> u64) -> u64 {
    #[cfg(test)]
    if let Some(m) = COLLIDE.with(std::cell::Cell::get).map(modulus) {
        return hash64(s) % m;
    }
    let _ = modulus;
    hash64(s)
}

/// Pass 1's summary of a row with an email (32 bytes, no text).
#[derive(Debug, Clone, Copy)]
pub(super) struct RowMeta {
    email_hash: u64,
    id_hash: u64,
    /// Where the row starts in the file, to read it again.
    byte: u64,
    class: RefClass,
}

impl Default for RowMeta {
    fn default() -> Self {
        RowMeta {
            email_hash: 0,
            id_hash: 0,
            byte: 0,
            class: RefClass::Other,
        }
    }
}

/// Sorts by a 64-bit key in four passes of 16 bits (LSD radix, stable). For a million rows
/// this is several times faster than a comparison sort, and it replaces a hash table whose
/// random accesses dominated the grouping.
pub(super) fn radix_sort<T: Copy + Default>(v: Vec<T>, key: impl Fn(&T) -> u64) -> Vec<T> {
    let mut src = v;
    if src.len() < 1 << 14 {
        // Small inputs: the counting tables would cost more than the sort.
        src.sort_by_key(|x| key(x));
        return src;
    }
    let mut dst = vec![T::default(); src.len()];
    let mut counts = vec![0usize; 1 << 16];
    for shift in [0u32, 16, 32, 48] {
        counts.iter_mut().for_each(|c| *c = 0);
        for x in &src {
            counts[((key(x) >> shift) & 0xFFFF) as usize] += 1;
        }
        let mut sum = 0;
        for c in counts.iter_mut() {
            let n = *c;
            *c = sum;
            sum += n;
        }
        for x in &src {
            let d = ((key(x) >> shift) & 0xFFFF) as usize;
            dst[counts[d]] = *x;
            counts[d] += 1;
        }
        std::mem::swap(&mut src, &mut dst);
    }
    src
}

/// A set of hashes (they need no hashing again).
#[derive(Default)]
pub(super) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub(super) type HashSet64 = HashSet<u64, BuildHasherDefault<PassThrough>>;

/// Where pass 2 puts a re-read row. Decided from pass 1 (hashes and classes), so every row
/// lands directly in its final place and the plan is never copied.
#[derive(Debug, Clone, Copy)]
pub(super) enum Slot {
    /// Predicted clean pair `index`; `primary` says which side.
    Pair {
        index: u32,
        primary: bool,
    },
    /// Candidate group `index` (classified once its rows are read).
    Group(u32),
    NoEmail,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Wanted {
    pub(super) byte: u64,
    /// Hash of the normalized email (checked again on the text; 0 without email).
    key: u64,
    slot: Slot,
}

impl Contact {
    /// A placeholder filled in by pass 2 (empty strings do not allocate).
    pub(super) fn empty() -> Self {
        Contact {
            line: 0,
            rev_user_id: String::new(),
            display_name: String::new(),
            email: String::new(),
            external_ref: String::new(),
            full_name: String::new(),
            created_at: String::new(),
            updated_at: String::new(),
            ticket_count: None,
        }
    }
}

// ---- pass 1 -------------------------------------------------------------------------------

/// What pass 1 learned; no text of any row is kept.
pub(super) struct Pass1 {
    pub(super) layout: Layout,
    pub(super) header: RawRecord,
    /// Rows with an email, in scope of `--email-domain`.
    pub(super) rows: Vec<RowMeta>,
    /// Rows without an email: (where they start, id hash).
    pub(super) no_email_rows: Vec<(u64, u64)>,
    pub(super) rows_read: u64,
    pub(super) outside_domain: u64,
}

/// Pass 1: validates every row (all problems collected, so the user fixes them in one go) and
/// remembers 32 bytes per row.
pub(super) fn pass1<R: Read + Send>(
    src: &mut R,
    name: &str,
    domain: Option<&str>,
    expected_rows: usize,
) -> Result<Pass1, AppError> {
    let mut rdr = RawReader::new(src);
    let (layout, header) = read_header(&mut rdr, name)?;
    let mut problems = Problems::default();
    let mut rows: Vec<RowMeta> = Vec::with_capacity(expected_rows);
    let mut no_email_rows: Vec<(u64, u64)> = Vec::new();
    let mut rows_read = 0u64;
    let mut outside_domain = 0u64;
    let mut email = String::new();
    let pass1 = read_pipelined(
        &mut rdr,
        |r, rec| r.read(rec),
        |rec| {
            rows_read += 1;
            let Some(row) = check_row(rec, &layout, rec.line, &mut problems) else {
                return Ok(());
            };
            if problems.total > 0 {
                // The command stops anyway: keep validating, stop collecting.
                return Ok(());
            }
            normalize_email_into(row.get(Col::Email), &mut email);
            if let Some(d) = domain
                && !in_domain(&email, d)
            {
                outside_domain += 1;
                return Ok(());
            }
            let id = id_hash(row.get(Col::RevUserId));
            if email.is_empty() {
                no_email_rows.push((rec.byte, id));
            } else {
                rows.push(RowMeta {
                    email_hash: email_hash(&email),
                    id_hash: id,
                    byte: rec.byte,
                    class: classify_ref(row.get(Col::ExternalRef)),
                });
            }
            Ok(())
        },
    );
    pass1.map_err(|stop| stopped(name, stop))?;
    drop(rdr);
    if problems.total > 0 {
        return Err(problems.into_error(name));
    }
    if rows_read == 0 {
        return Err(AppError::Data(format!(
            "{name}: no contacts: the file has a header but no rows"
        )));
    }
    if u32::try_from(rows.len() + no_email_rows.len()).is_err() {
        return Err(AppError::Data(format!(
            "{name}: more than 4 billion rows; split the file"
        )));
    }
    Ok(Pass1 {
        layout,
        header,
        rows,
        no_email_rows,
        rows_read,
        outside_domain,
    })
}

// ---- slots --------------------------------------------------------------------------------

/// Ids seen more than once (by hash; confirmed on the text after pass 2).
pub(super) fn duplicate_id_hashes(rows: &[RowMeta], no_email_rows: &[(u64, u64)]) -> HashSet64 {
    let ids: Vec<u64> = rows
        .iter()
        .map(|r| r.id_hash)
        .chain(no_email_rows.iter().map(|r| r.1))
        .collect();
    let ids = radix_sort(ids, |x| *x);
    ids.windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect()
}

/// What pass 2 reads and where each row goes.
pub(super) struct Slots {
    /// In file order.
    wanted: Vec<Wanted>,
    n_pairs: u32,
    /// Rows per candidate group.
    group_sizes: Vec<u32>,
    n_no_email: usize,
}

/// What the slots settled without reading again: singles, and emails seen (by hash).
pub(super) struct Tally {
    pub(super) singles: Singles,
    pub(super) emails: u64,
}

/// Groups the summaries by email hash and gives each row to read its slot. Emails with one row
/// and an id seen once are singles: counted, never read again.
pub(super) fn assign_slots(
    rows: Vec<RowMeta>,
    no_email_rows: Vec<(u64, u64)>,
    dup_id_hashes: &HashSet64,
    keep: Keep,
) -> (Slots, Tally) {
    // Group by email hash: equal hashes end up next to each other.
    let rows = radix_sort(rows, |r| r.email_hash);
    let mut tally = Tally {
        singles: Singles::default(),
        emails: 0,
    };
    let mut wanted: Vec<Wanted> = Vec::new();
    let mut n_pairs = 0u32;
    let mut group_sizes: Vec<u32> = Vec::new();
    for members in rows.chunk_by(|a, b| a.email_hash == b.email_hash) {
        tally.emails += 1;
        let key = members[0].email_hash;
        let suspicious =
            !dup_id_hashes.is_empty() && members.iter().any(|r| dup_id_hashes.contains(&r.id_hash));
        if members.len() == 1 && !suspicious {
            tally.singles.add(members[0].class);
            continue;
        }
        let clean = matches!(
            members,
            [a, b] if matches!((a.class, b.class), (RefClass::Revu, RefClass::User) | (RefClass::User, RefClass::Revu))
        );
        if clean && !suspicious {
            for r in members {
                let primary = (r.class == RefClass::Revu) == (keep.planned() == Keep::Revu);
                wanted.push(Wanted {
                    byte: r.byte,
                    key,
                    slot: Slot::Pair {
                        index: n_pairs,
                        primary,
                    },
                });
            }
            n_pairs += 1;
        } else {
            let g = group_sizes.len() as u32;
            group_sizes.push(members.len() as u32);
            for r in members {
                wanted.push(Wanted {
                    byte: r.byte,
                    key,
                    slot: Slot::Group(g),
                });
            }
        }
    }
    let n_no_email = no_email_rows.len();
    for (byte, _) in no_email_rows {
        wanted.push(Wanted {
            byte,
            key: 0,
            slot: Slot::NoEmail,
        });
    }
    drop(rows);
    wanted.sort_unstable_by_key(|w| w.byte);
    let slots = Slots {
        wanted,
        n_pairs,
        group_sizes,
        n_no_email,
    };
    (slots, tally)
}

// ---- pass 2 -------------------------------------------------------------------------------

/// Pass 2's rows, each in the place its slot gave it.
pub(super) struct Pass2 {
    pub(super) pairs: Vec<Pair>,
    /// Candidate groups, classified next.
    pub(super) groups: Vec<Vec<Contact>>,
    pub(super) no_email: Vec<Contact>,
    /// Predicted pairs whose two rows turn out to have different emails (a hash collision).
    pub(super) broken: Vec<u32>,
}

/// Pass 2: reads the wanted rows in full, straight into place. Anything that differs from
/// pass 1 means the file changed under us.
pub(super) fn pass2<R: Read + Seek + Send>(
    src: &mut R,
    name: &str,
    layout: &Layout,
    header: &RawRecord,
    slots: Slots,
    keep: Keep,
) -> Result<Pass2, AppError> {
    let Slots {
        wanted,
        n_pairs,
        group_sizes,
        n_no_email,
    } = slots;
    let placeholder = Pair {
        email: String::new(),
        primary: Contact::empty(),
        secondary: Contact::empty(),
    };
    let mut out = Pass2 {
        pairs: vec![placeholder; n_pairs as usize],
        groups: group_sizes
            .iter()
            .map(|n| Vec::with_capacity(*n as usize))
            .collect(),
        no_email: Vec::with_capacity(n_no_email),
        broken: Vec::new(),
    };
    let changed = || file_changed(name);
    if !wanted.is_empty() {
        src.rewind()
            .map_err(|e| AppError::Data(format!("cannot re-read {name}: {e}")))?;
        let mut rdr = RawReader::new(&mut *src);
        let (_, header2) = read_header(&mut rdr, name)?;
        if header2.as_slice() != header.as_slice() {
            return Err(changed());
        }
        // The helper thread jumps over the rows pass 1 settled and parses only the wanted
        // ones; this thread turns them into contacts.
        let mut k = 0usize;
        let skip_and_read = |r: &mut RawReader<&mut R>, rec: &mut RawRecord| {
            let Some(w) = wanted.get(k) else {
                return Ok(false);
            };
            k += 1;
            Ok(r.skip_to(w.byte)? && r.read(rec)?)
        };
        let mut next = 0usize;
        let mut email = String::new();
        let pass2 = read_pipelined(&mut rdr, skip_and_read, |rec| {
            let w = wanted[next];
            next += 1;
            if rec.byte != w.byte {
                return Err(changed());
            }
            let mut scratch = Problems::default();
            let row = check_row(rec, layout, rec.line, &mut scratch).ok_or_else(changed)?;
            normalize_email_into(row.get(Col::Email), &mut email);
            let key_ok = if email.is_empty() {
                w.key == 0
            } else {
                email_hash(&email) == w.key
            };
            if !key_ok {
                return Err(changed());
            }
            place(&mut out, w.slot, row.to_contact(rec.line), &email).ok_or_else(changed)
        });
        pass2.map_err(|stop| stopped(name, stop))?;
        if next < wanted.len() {
            return Err(changed());
        }
    }
    // A row's class must not have changed between the passes either.
    let want = match keep.planned() {
        Keep::User => (RefClass::User, RefClass::Revu),
        Keep::Revu | Keep::Auto => (RefClass::Revu, RefClass::User),
    };
    if out
        .pairs
        .iter()
        .any(|p| (p.primary.ref_class(), p.secondary.ref_class()) != want)
    {
        return Err(changed());
    }
    Ok(out)
}

/// Puts one re-read row into its slot; `None` if the slot was already filled (the file
/// changed).
fn place(out: &mut Pass2, slot: Slot, contact: Contact, email: &str) -> Option<()> {
    match slot {
        Slot::NoEmail => out.no_email.push(contact),
        Slot::Group(g) => out.groups[g as usize].push(contact),
        Slot::Pair { index, primary } => {
            let pair = &mut out.pairs[index as usize];
            let side = if primary {
                &mut pair.primary
            } else {
                &mut pair.secondary
            };
            if !side.rev_user_id.is_empty() {
                return None;
            }
            *side = contact;
            if pair.email.is_empty() {
                pair.email = email.to_string();
            } else if pair.email != email {
                out.broken.push(index);
            }
        }
    }
    Some(())
}

/// The error for a file that differs between the passes.
fn file_changed(name: &str) -> AppError {
    AppError::Data(format!(
        "{name}: the file changed while it was being read; run the command again once it is complete"
    ))
}

// ---- sorting the result -------------------------------------------------------------------

/// The first 16 bytes of `s` as a big-endian number, zero-padded: comparing two of these
/// compares the strings' first 16 bytes, so only ties need the strings themselves.
fn prefix_key(s: &str) -> u128 {
    let mut b = [0u8; 16];
    let n = s.len().min(16);
    b[..n].copy_from_slice(&s.as_bytes()[..n]);
    u128::from_be_bytes(b)
}

/// Sorts pairs by email. The pairs are large and their emails scattered on the heap, so the
/// order is computed on (prefix, index) keys and applied with one move per pair.
pub(super) fn sort_pairs_by_email(pairs: &mut [Pair]) {
    let mut keys: Vec<(u128, u32)> = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| (prefix_key(&p.email), i as u32))
        .collect();
    keys.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| pairs[a.1 as usize].email.cmp(&pairs[b.1 as usize].email))
            .then(a.1.cmp(&b.1))
    });
    let order: Vec<usize> = keys.into_iter().map(|(_, i)| i as usize).collect();
    apply_order(pairs, order);
}

/// Rearranges `v` so that position `k` holds what was at `order[k]` (a permutation).
fn apply_order<T>(v: &mut [T], mut order: Vec<usize>) {
    for i in 0..v.len() {
        let mut cur = i;
        while order[cur] != i {
            let src = order[cur];
            v.swap(cur, src);
            order[cur] = cur;
            cur = src;
        }
        order[cur] = cur;
    }
}
