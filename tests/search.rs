//! The scoring half of search: MaxSim over variable-length documents (GPU vs
//! CPU twin vs an f64 reference, all-pairs and owner modes), top-k (GPU vs CPU vs a full sort, ties
//! included), exhaustive search vs sorting the full MaxSim matrix, and the
//! real BEIR qrels files. Metric values against hand-computed ones are unit
//! tests in src/eval.

mod common;

use colwgpu::backend::Compute;
use colwgpu::eval::{read_qrels, Metric};
use colwgpu::search::topk::{order_key, topk_cpu};
use colwgpu::search::{exhaustive_search, maxsim_matrix, maxsim_scores, topk, ScoreRequest, TopK};
use common::{assert_close, data_dir, gpu, Rng};

/// Unit vectors (ColBERT's are L2-normalised), `rows × dim`.
fn unit_rows(rng: &mut Rng, rows: usize, dim: usize) -> Vec<f32> {
    let mut v = rng.vec(rows * dim, 1.0);
    for r in v.chunks_mut(dim) {
        let n = r.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        r.iter_mut().for_each(|x| *x /= n);
    }
    v
}

/// Document lengths cycling through the awkward ones (empty included).
fn lengths(n: usize) -> Vec<usize> {
    const L: [usize; 6] = [0, 1, 7, 180, 300, 33];
    (0..n).map(|i| L[(i * 7 + 3) % L.len()]).collect()
}

fn offsets_of(lens: &[usize], first: usize) -> Vec<u64> {
    let mut o = vec![first as u64];
    for l in lens {
        o.push(o.last().unwrap() + *l as u64);
    }
    o
}

/// Σ_i max_j q_i·d_j in f64, non-finite maxima skipped: nq × n.
fn reference(queries: &[f32], qlen: usize, docs: &[f32], offsets: &[u64], dim: usize) -> Vec<f32> {
    let nq = queries.len() / (qlen * dim);
    let n = offsets.len() - 1;
    let mut out = vec![0.0f32; nq * n];
    for q in 0..nq {
        for d in 0..n {
            let mut total = 0.0f64;
            for i in 0..qlen {
                let qi = &queries[(q * qlen + i) * dim..][..dim];
                let mut best = f64::NEG_INFINITY;
                for j in offsets[d] as usize..offsets[d + 1] as usize {
                    let dj = &docs[j * dim..][..dim];
                    let s: f64 = qi.iter().zip(dj).map(|(a, b)| *a as f64 * *b as f64).sum();
                    best = best.max(s);
                }
                if best.is_finite() {
                    total += best;
                }
            }
            out[q * n + d] = total as f32;
        }
    }
    out
}

/// The k best columns of a row by a full sort (score descending through the
/// ranking key, ties to the lower column).
fn sorted_topk(row: &[f32], k: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    idx.sort_by(|&a, &b| {
        order_key(row[b as usize])
            .cmp(&order_key(row[a as usize]))
            .then(a.cmp(&b))
    });
    idx.truncate(k);
    idx
}

fn assert_topk_is_sorted(what: &str, scores: &[f32], n: usize, k: usize, got: &TopK) {
    let rows = scores.len() / n;
    assert_eq!((got.rows, got.k), (rows, k.min(n)), "{what}: shape");
    for (r, (idx, sc)) in got.iter().enumerate() {
        let row = &scores[r * n..(r + 1) * n];
        assert_eq!(idx, sorted_topk(row, k).as_slice(), "{what}: row {r}");
        for (&i, &s) in idx.iter().zip(sc) {
            assert_eq!(
                s.to_bits(),
                row[i as usize].to_bits(),
                "{what}: row {r} score"
            );
        }
    }
}

#[test]
fn maxsim_cpu_matches_f64_and_gpu_matches_cpu_at_awkward_sizes() {
    let ctx = gpu();
    let mut rng = Rng::new(7);
    // (documents, queries, qlen, dim, first row offset)
    let cases: &[(usize, usize, usize, usize, usize)] = &[
        (1, 1, 1, 1, 0),
        (1, 1, 32, 128, 0),
        (31, 2, 32, 128, 0),
        (33, 1, 1, 128, 5),
        (127, 1, 32, 37, 0),
        (129, 3, 31, 64, 2),
        (5, 2, 32, 768, 0),
    ];
    for &(n, nq, qlen, dim, first) in cases {
        let lens = lengths(n);
        let offsets = offsets_of(&lens, first);
        let rows = *offsets.last().unwrap() as usize;
        let docs = unit_rows(&mut rng, rows, dim);
        let queries = unit_rows(&mut rng, nq * qlen, dim);
        let what = format!("n{n} q{nq}×{qlen} dim{dim}");
        let want = reference(&queries, qlen, &docs, &offsets, dim);
        let cpu = maxsim_matrix(&Compute::Cpu, &queries, qlen, &docs, &offsets, dim).unwrap();
        assert_close(&format!("cpu {what}"), &cpu, &want, 1e-4, 1e-5);
        // u32 offsets give the same.
        let off32: Vec<u32> = offsets.iter().map(|&o| o as u32).collect();
        let gpu_scores = maxsim_matrix(
            &Compute::Gpu(ctx.clone()),
            &queries,
            qlen,
            &docs,
            &off32,
            dim,
        )
        .unwrap();
        assert_close(&format!("gpu {what}"), &gpu_scores, &cpu, 1e-4, 1e-5);
        for (d, &l) in lens.iter().enumerate() {
            if l == 0 {
                for q in 0..nq {
                    assert_eq!(cpu[q * n + d], 0.0, "{what}: empty doc on cpu");
                    assert_eq!(gpu_scores[q * n + d], 0.0, "{what}: empty doc on gpu");
                }
            }
        }
        // Owner mode: document d against query d % nq.
        let owner: Vec<u32> = (0..n).map(|d| (d % nq) as u32).collect();
        let offs: Vec<usize> = offsets.iter().map(|&o| o as usize).collect();
        let req = ScoreRequest {
            queries: &queries,
            qlen,
            dim,
            docs: &docs,
            offsets: &offs,
            owner: &owner,
        };
        let picked: Vec<f32> = (0..n).map(|d| cpu[(d % nq) * n + d]).collect();
        let c = maxsim_scores(&Compute::Cpu, &req).unwrap();
        assert_close(&format!("cpu owner {what}"), &c, &picked, 1e-5, 1e-6);
        let g = maxsim_scores(&Compute::Gpu(ctx.clone()), &req).unwrap();
        assert_close(&format!("gpu owner {what}"), &g, &picked, 1e-4, 1e-5);
    }
}

#[test]
fn every_maxsim_tuning_matches_the_cpu_twin() {
    // The adapter picks (WG_SIZE, TOKENS); lavapipe gets (8, ≤4). Run the
    // hardware choice (32, 1) and the others here too, with qlen 1, 31, 33
    // (partial token passes) and a wide dim (streamed register chunks).
    use colwgpu::kernels::maxsim::{record_all_pairs_tuned, AllPairs, Buffers};
    let ctx = gpu();
    let mut rng = Rng::new(17);
    for &(n, nq, qlen, dim) in &[
        (33usize, 2usize, 31usize, 128usize),
        (7, 1, 1, 64),
        (9, 2, 33, 260),
    ] {
        let offsets = offsets_of(&lengths(n), 0);
        let rows = *offsets.last().unwrap() as usize;
        let docs = unit_rows(&mut rng, rows, dim);
        let queries = unit_rows(&mut rng, nq * qlen, dim);
        let want = maxsim_matrix(&Compute::Cpu, &queries, qlen, &docs, &offsets, dim).unwrap();
        let off32: Vec<u32> = offsets.iter().map(|&o| o as u32).collect();
        let (q, d, o) = (
            ctx.upload("q", &queries).unwrap(),
            ctx.upload("d", &docs).unwrap(),
            ctx.upload("o", &off32).unwrap(),
        );
        let out = ctx.pool().get((nq * n * 4) as u64);
        let bufs = Buffers {
            queries: &q,
            docs: &d,
            doc_offsets: &o,
            owner: None,
            scores: out.buffer(),
        };
        let shape = AllPairs {
            num_queries: nq,
            qlen,
            dim,
            num_docs: n,
            out_stride: n,
            out_offset: 0,
        };
        for tuning in [(32, 1), (64, 1), (16, 2), (8, 4), (4, 4), (1, 1)] {
            let mut enc = ctx.encoder("tuned");
            record_all_pairs_tuned(&ctx, &mut enc, &bufs, shape, tuning).unwrap();
            let got = ctx
                .submit_and_read::<f32>(enc, &[(out.buffer(), nq * n)])
                .unwrap()
                .remove(0);
            assert_close(
                &format!("tuning {tuning:?} n{n} q{nq}×{qlen} dim{dim}"),
                &got,
                &want,
                1e-4,
                1e-5,
            );
        }
        let mut enc = ctx.encoder("bad");
        assert!(record_all_pairs_tuned(&ctx, &mut enc, &bufs, shape, (12, 1)).is_err());
        assert!(record_all_pairs_tuned(&ctx, &mut enc, &bufs, shape, (8, 3)).is_err());
    }
}

#[test]
fn maxsim_edge_cases_and_bad_shapes() {
    let ctx = Compute::Gpu(gpu());
    let cpu = Compute::Cpu;
    let dim = 4;
    let q = vec![1.0f32, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]; // 2 tokens
                                                             // Doc 0 empty, doc 1: rows (2,0,0,0), (0,-1,0,0); doc 2: a NaN row and (0,3,0,0).
    let docs = vec![
        2.0,
        0.0,
        0.0,
        0.0,
        0.0,
        -1.0,
        0.0,
        0.0,
        f32::NAN,
        0.0,
        0.0,
        0.0,
        0.0,
        3.0,
        0.0,
        0.0,
    ];
    let offsets = [0u32, 0, 2, 4];
    let s = maxsim_matrix(&cpu, &q, 2, &docs, &offsets, dim).unwrap();
    // doc 1: max(2, 0) + max(0, -1) = 2; doc 2 on the CPU ignores the NaN
    // product: token 0 max(NaN, 0) = 0, token 1 max(NaN, 3) = 3.
    assert_eq!(s, vec![0.0, 2.0, 3.0]);
    let g = maxsim_matrix(&ctx, &q, 2, &docs, &offsets, dim).unwrap();
    assert_eq!(&g[..2], &[0.0, 2.0]);
    // Only empty documents; no documents; no queries.
    for c in [&cpu, &ctx] {
        assert_eq!(
            maxsim_matrix(c, &q, 2, &[], &[0u32, 0, 0], dim).unwrap(),
            vec![0.0; 2]
        );
        assert!(maxsim_matrix(c, &q, 2, &docs, &[0u32], dim)
            .unwrap()
            .is_empty());
        assert!(maxsim_matrix(c, &[], 2, &docs, &offsets, dim)
            .unwrap()
            .is_empty());
    }
    // Bad shapes are errors, not panics.
    let err = |r: colwgpu::Result<Vec<f32>>| r.unwrap_err().to_string();
    assert!(err(maxsim_matrix(&cpu, &q, 3, &docs, &offsets, dim)).contains("queries"));
    assert!(err(maxsim_matrix(&cpu, &q, 2, &docs[..15], &offsets, dim)).contains("rows"));
    assert!(err(maxsim_matrix(&cpu, &q, 2, &docs, &[0u32, 3, 2], dim)).contains("offsets[2]"));
    assert!(err(maxsim_matrix(&cpu, &q, 2, &docs, &[0u64, 5], dim)).contains("past"));
    assert!(maxsim_matrix(&cpu, &q, 2, &docs, &[] as &[u32], dim).is_err());
    assert!(maxsim_matrix(&cpu, &q, 0, &docs, &offsets, dim).is_err());
    assert!(maxsim_matrix(&cpu, &q, 2, &docs, &offsets, 0).is_err());
    // The resident kernel reads vec4: dims that are not a multiple of 4 are
    // refused there (the host APIs pad them).
    let g = gpu();
    let b = g.upload("b", &[0.0f32; 64]).unwrap();
    let mut enc = g.encoder("t");
    let shape = colwgpu::kernels::maxsim::AllPairs {
        num_queries: 1,
        qlen: 1,
        dim: 6,
        num_docs: 1,
        out_stride: 1,
        out_offset: 0,
    };
    let bufs = colwgpu::kernels::maxsim::Buffers {
        queries: &b,
        docs: &b,
        doc_offsets: &b,
        owner: None,
        scores: &b,
    };
    let e = colwgpu::kernels::maxsim::record_all_pairs(&g, &mut enc, &bufs, shape);
    assert!(e.unwrap_err().to_string().contains("multiple of 4"));
    // Owner mode without an owner buffer is refused, not bound to garbage.
    let shape = colwgpu::kernels::maxsim::Assigned {
        num_queries: 1,
        qlen: 1,
        dim: 4,
        num_docs: 1,
        out_offset: 0,
    };
    let e = colwgpu::kernels::maxsim::record_assigned(&g, &mut enc, &bufs, shape);
    assert!(e.unwrap_err().to_string().contains("owner"));
    // Owner-mode requests: an owner past the last query (both backends),
    // offsets and owners of different lengths, offsets past the rows.
    let request = |offsets: &'static [usize], owner: &'static [u32]| ScoreRequest {
        queries: &q,
        qlen: 2,
        dim,
        docs: &docs,
        offsets,
        owner,
    };
    for c in [&cpu, &ctx] {
        assert!(maxsim_scores(c, &request(&[0, 2], &[2])).is_err());
    }
    assert!(maxsim_scores(&cpu, &request(&[0, 2], &[0, 0])).is_err());
    assert!(err(maxsim_scores(&cpu, &request(&[0, 5], &[0]))).contains("past"));
    assert!(exhaustive_search(&cpu, &q, 2, &docs, &offsets, dim, 0).is_err());
}

/// Rows with heavy ties, signed zeros, infinities and NaN.
fn nasty_rows(rng: &mut Rng, rows: usize, n: usize) -> Vec<f32> {
    (0..rows * n)
        .map(|i| match rng.below(20) {
            0 => 0.0,
            1 => -0.0,
            2 if i % 3 == 0 => f32::INFINITY,
            3 if i % 5 == 0 => f32::NEG_INFINITY,
            4 if i % 7 == 0 => f32::NAN,
            5..=10 => (rng.below(4) as f32) * 0.25, // ties
            _ => rng.uniform() * 10.0,
        })
        .collect()
}

#[test]
fn topk_gpu_equals_cpu_equals_full_sort_with_ties() {
    let ctx = Compute::Gpu(gpu());
    let mut rng = Rng::new(11);
    for &(rows, n) in &[
        (1usize, 1usize),
        (3, 7),
        (2, 255),
        (1, 256),
        (4, 257),
        (2, 1000),
        (1, 4099),
    ] {
        let scores = nasty_rows(&mut rng, rows, n);
        for &k in &[1usize, 2, 10, 100, 1000, n, n + 5] {
            let what = format!("{rows}×{n} k{k}");
            let c = topk_cpu(&scores, n, k).unwrap();
            assert_topk_is_sorted(&format!("cpu {what}"), &scores, n, k, &c);
            let g = topk(&ctx, &scores, n, k).unwrap();
            assert_eq!(g.indices, c.indices, "gpu {what}");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&g.scores), bits(&c.scores), "gpu {what}");
        }
    }
    // All equal: the tie straddles the cut, so the lowest columns win.
    let flat = vec![0.5f32; 3 * 600];
    for c in [&Compute::Cpu, &ctx] {
        let t = topk(c, &flat, 600, 20).unwrap();
        for (idx, _) in t.iter() {
            assert_eq!(idx, (0..20).collect::<Vec<u32>>().as_slice());
        }
    }
    // A long row with a tie at the boundary in the middle of the row.
    let mut long: Vec<f32> = (0..100_000).map(|i| (i % 1000) as f32).collect();
    long[77_777] = 2000.0;
    let c = topk_cpu(&long, long.len(), 50).unwrap();
    assert_eq!(c.indices[0], 77_777);
    assert_eq!(topk(&ctx, &long, long.len(), 50).unwrap(), c);
    // k above the kernel's sort capacity falls back to the CPU, same answer.
    let wide = nasty_rows(&mut rng, 2, 3000);
    assert_eq!(
        topk(&ctx, &wide, 3000, 2000).unwrap(),
        topk_cpu(&wide, 3000, 2000).unwrap()
    );
    // k = 0 and rows of length 0 are errors.
    assert!(topk(&ctx, &long, long.len(), 0).is_err());
    assert!(topk_cpu(&[], 0, 3).is_err());
    assert!(topk_cpu(&[1.0, 2.0, 3.0], 2, 1).is_err());
}

/// The kernel's `Options` (unsorted selection, −inf as padding) against the
/// CPU twin: the same entries (as sets when unsorted, k above the sort cap
/// included), padding where the score is −inf.
#[test]
fn topk_kernel_options_match_the_cpu_twin() {
    use colwgpu::kernels::topk as kt;
    let ctx = gpu();
    let mut rng = Rng::new(12);
    for &(rows, n, k) in &[(3usize, 50usize, 60usize), (2, 1000, 100), (2, 3000, 2000)] {
        let mut scores = nasty_rows(&mut rng, rows, n);
        // Mostly −inf rows (PLAID: few candidates), NaN kept out of the −inf test.
        for (i, s) in scores.iter_mut().enumerate() {
            if s.is_nan() || i % 3 != 0 {
                *s = f32::NEG_INFINITY;
            }
        }
        let mut want = topk_cpu(&scores, n, k).unwrap();
        want.mark_neg_inf_empty();
        let ke = want.k;
        for unsorted in [false, true] {
            if !unsorted && ke > kt::MAX_K {
                continue;
            }
            let input = ctx.upload("scores", &scores).unwrap();
            let idx = ctx.pool().get((rows * ke * 4) as u64);
            let sc = ctx.pool().get((rows * ke * 4) as u64);
            let mut enc = ctx.encoder("topk options");
            let shape = kt::Shape {
                rows,
                n,
                k,
                in_stride: n,
            };
            let options = kt::Options {
                unsorted,
                neg_inf_is_empty: true,
            };
            let bufs = kt::Buffers {
                scores: &input,
                out_idx: idx.buffer(),
                out_scores: sc.buffer(),
            };
            kt::record_with(&ctx, &mut enc, &bufs, shape, options).unwrap();
            let mut back = ctx
                .submit_and_read::<u32>(enc, &[(idx.buffer(), rows * ke), (sc.buffer(), rows * ke)])
                .unwrap();
            let got_sc: Vec<f32> = back
                .pop()
                .unwrap()
                .into_iter()
                .map(f32::from_bits)
                .collect();
            let got_idx = back.pop().unwrap();
            for r in 0..rows {
                let span = r * ke..(r + 1) * ke;
                let mut g: Vec<(u32, u32)> = got_idx[span.clone()]
                    .iter()
                    .zip(&got_sc[span.clone()])
                    .map(|(&i, s)| (i, s.to_bits()))
                    .collect();
                let mut w: Vec<(u32, u32)> = want.indices[span.clone()]
                    .iter()
                    .zip(&want.scores[span])
                    .map(|(&i, s)| (i, s.to_bits()))
                    .collect();
                if unsorted {
                    g.sort_unstable();
                    w.sort_unstable();
                }
                assert_eq!(g, w, "{rows}×{n} k{k} unsorted {unsorted} row {r}");
            }
        }
    }
}

#[test]
fn exhaustive_search_equals_sorting_the_full_maxsim() {
    let ctx = Compute::Gpu(gpu());
    let mut rng = Rng::new(5);
    let (n, nq, qlen, dim) = (129, 3, 32, 128);
    let lens = lengths(n);
    let offsets = offsets_of(&lens, 0);
    let docs = unit_rows(&mut rng, *offsets.last().unwrap() as usize, dim);
    let queries = unit_rows(&mut rng, nq * qlen, dim);
    for compute in [&Compute::Cpu, &ctx] {
        let full = maxsim_matrix(compute, &queries, qlen, &docs, &offsets, dim).unwrap();
        for k in [1, 10, 200] {
            let t = exhaustive_search(compute, &queries, qlen, &docs, &offsets, dim, k).unwrap();
            assert_topk_is_sorted(&format!("{compute:?} k{k}"), &full, n, k, &t);
        }
    }
    // Both backends rank the same documents (the scores differ by rounding only).
    let c = exhaustive_search(&Compute::Cpu, &queries, qlen, &docs, &offsets, dim, 10).unwrap();
    let g = exhaustive_search(&ctx, &queries, qlen, &docs, &offsets, dim, 10).unwrap();
    assert_eq!(c.indices, g.indices);
    assert_close("exhaustive scores", &g.scores, &c.scores, 1e-4, 1e-5);
    // An empty corpus gives empty rows.
    let e = exhaustive_search(&ctx, &queries, qlen, &[], &[0u32], dim, 10).unwrap();
    assert_eq!((e.rows, e.k), (nq, 0));
}

#[test]
fn exhaustive_search_breaks_exact_ties_by_document_index() {
    // Components in {0, ±0.5, ±1}: every product and sum is exact in f32, so
    // duplicated documents score bit-identically on both backends.
    let ctx = Compute::Gpu(gpu());
    let mut rng = Rng::new(9);
    let dim = 16;
    let pick = |rng: &mut Rng| [0.0, 0.5, -0.5, 1.0, -1.0][rng.below(5) as usize];
    let base: Vec<Vec<f32>> = (0..6)
        .map(|_| (0..3 * dim).map(|_| pick(&mut rng)).collect())
        .collect();
    let mut docs = Vec::new();
    let mut offsets = vec![0u32];
    for i in 0..40 {
        docs.extend_from_slice(&base[i % 6]);
        offsets.push(offsets.last().unwrap() + 3);
    }
    let queries: Vec<f32> = (0..2 * 4 * dim).map(|_| pick(&mut rng)).collect();
    let full = maxsim_matrix(&Compute::Cpu, &queries, 4, &docs, &offsets, dim).unwrap();
    for compute in [&Compute::Cpu, &ctx] {
        let t = exhaustive_search(compute, &queries, 4, &docs, &offsets, dim, 15).unwrap();
        assert_topk_is_sorted(&format!("{compute:?} ties"), &full, 40, 15, &t);
    }
}

#[test]
fn real_beir_qrels_parse() {
    let scifact = read_qrels(&data_dir().join("scifact-1k/qrels/test.tsv")).unwrap();
    assert_eq!(scifact.len(), 300);
    assert_eq!(scifact.values().map(|d| d.len()).sum::<usize>(), 339);
    assert_eq!(scifact["1"]["31715818"], 1);
    let dl19 = read_qrels(&data_dir().join("trec-dl19-qrels/qrels/test.tsv")).unwrap();
    assert_eq!(dl19.len(), 43);
    assert_eq!(dl19.values().map(|d| d.len()).sum::<usize>(), 4102);
    assert_eq!(dl19["19335"]["1729"], 2);
    // A ranking that returns exactly the judged documents by grade is perfect.
    let judged = &dl19["19335"];
    let mut ranking: Vec<&String> = judged.keys().collect();
    ranking.sort_by_key(|d| (-judged[*d], (*d).clone()));
    for m in [Metric::Ndcg(10), Metric::Recall(10_000), Metric::Mrr(10)] {
        assert!((m.score(&ranking, judged) - 1.0).abs() < 1e-12, "{m}");
    }
    let e = read_qrels(&data_dir().join("scifact-1k/qrels/missing.tsv")).unwrap_err();
    assert!(e.to_string().contains("missing.tsv"), "{e}");
}
