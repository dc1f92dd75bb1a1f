//! CPU twins of `shaders/survivors.wgsl` ([`crate::kernels::survivors`]) and
//! the host-side plan of which survivor-list entries are decompressed together.
//!
//! A survivor list holds `num_queries` rows of `list_len` document ids, as a
//! top-k with `neg_inf_is_empty` writes them: `u32::MAX` marks an empty slot.
//! The GPU search decompresses the vectors of a group of consecutive entries
//! into consecutive rows; since how many rows that takes depends on which
//! documents survive, buffers are sized by an upper bound known on the host
//! ([`plan_groups`]).

use crate::error::{Error, Result};

/// Vectors of document `d` (0 for an empty slot or `d ≥ num_docs`).
fn doc_len(d: u32, doc_offsets: &[u64]) -> u64 {
    let d = d as usize;
    if d + 1 < doc_offsets.len() {
        doc_offsets[d + 1] - doc_offsets[d]
    } else {
        0
    }
}

/// Twin of `offsets_scan`: where each entry's rows start, `entries.len() + 1` values.
pub fn offsets(entries: &[u32], doc_offsets: &[u64]) -> Vec<u32> {
    let mut out = Vec::with_capacity(entries.len() + 1);
    let mut at = 0u64;
    out.push(0);
    for &d in entries {
        at += doc_len(d, doc_offsets);
        out.push(at as u32);
    }
    out
}

/// Twin of `map_rows`: the stored vector each of `rows` output rows
/// decompresses, `u32::MAX` past the last entry's rows.
pub fn map_rows(entries: &[u32], offsets: &[u32], doc_offsets: &[u64], rows: usize) -> Vec<u32> {
    let mut out = vec![u32::MAX; rows];
    for (r, &d) in entries.iter().enumerate() {
        for v in offsets[r]..offsets[r + 1] {
            if let Some(o) = out.get_mut(v as usize) {
                *o = (doc_offsets[d as usize] + (v - offsets[r]) as u64) as u32;
            }
        }
    }
    out
}

/// Twin of `scatter`: `dense[q·num_docs + d] = exact[e]` for every entry
/// `e` of `list` (`q = e / list_len`) holding a document `d < num_docs`.
pub fn scatter(list: &[u32], exact: &[f32], list_len: usize, num_docs: usize, dense: &mut [f32]) {
    for (e, (&d, &s)) in list.iter().zip(exact).enumerate() {
        if (d as usize) < num_docs {
            dense[e / list_len * num_docs + d as usize] = s;
        }
    }
}

/// Consecutive survivor-list entries decompressed together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    /// First entry (flat index into the list).
    pub first: usize,
    /// Entries.
    pub count: usize,
    /// Upper bound on the group's vectors (rows to size buffers by).
    pub rows: usize,
}

/// Splits a `num_queries × list_len` list into consecutive groups whose row
/// bound stays within `budget` rows (one storage binding). The bound of a
/// group: for each query's `m` entries in it, the sum of the `m` largest
/// document lengths (`lens_desc`, descending), since one query's entries are
/// distinct documents.
pub fn plan_groups(
    num_queries: usize,
    list_len: usize,
    lens_desc: &[u32],
    budget: usize,
) -> Result<Vec<Group>> {
    let longest = lens_desc.first().copied().unwrap_or(0) as usize;
    if longest > budget {
        return Err(Error::LimitExceeded {
            what: "vectors of one document in one GPU binding".into(),
            needed: longest as u64,
            limit: budget as u64,
        });
    }
    let mut groups = Vec::new();
    let mut cur = Group {
        first: 0,
        count: 0,
        rows: 0,
    };
    // Entries of the current query already in the group.
    let mut m = 0;
    for e in 0..num_queries * list_len {
        if e % list_len == 0 {
            m = 0;
        }
        let add = lens_desc.get(m).copied().unwrap_or(0) as usize;
        if cur.count > 0 && cur.rows + add > budget {
            groups.push(cur);
            cur = Group {
                first: e,
                count: 0,
                rows: 0,
            };
            m = 0;
        }
        let add = lens_desc.get(m).copied().unwrap_or(0) as usize;
        cur.count += 1;
        cur.rows += add;
        m += 1;
    }
    if cur.count > 0 {
        groups.push(cur);
    }
    Ok(groups)
}
