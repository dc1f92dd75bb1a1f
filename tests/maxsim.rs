//! MaxSim over variable-length documents: the WGSL kernel against the CPU twin,
//! and the CPU twin against an f64 reference, at awkward sizes (empty documents
//! and single-vector queries included).

mod common;

use colwgpu::backend::Compute;
use colwgpu::search::{maxsim_scores, ScoreRequest};
use common::{assert_close, gpu, Rng};

fn reference(req: &ScoreRequest) -> Vec<f32> {
    let (qlen, dim) = (req.qlen, req.dim);
    req.offsets
        .windows(2)
        .zip(req.owner)
        .map(|(w, &o)| {
            let q = &req.queries[o as usize * qlen * dim..][..qlen * dim];
            q.chunks(dim)
                .map(|qi| {
                    (w[0]..w[1])
                        .map(|j| {
                            qi.iter()
                                .zip(&req.docs[j * dim..(j + 1) * dim])
                                .map(|(a, b)| *a as f64 * *b as f64)
                                .sum::<f64>()
                        })
                        .fold(f64::NEG_INFINITY, f64::max)
                })
                .filter(|m| m.is_finite())
                .sum::<f64>() as f32
        })
        .collect()
}

#[test]
fn maxsim_gpu_and_cpu_match_f64_reference() {
    let mut rng = Rng::new(21);
    let ctx = gpu();
    for &(n_docs, nq, qlen, dim) in &[
        (1usize, 1usize, 1usize, 1usize),
        (31, 2, 32, 128),
        (33, 3, 7, 40),
        (129, 1, 33, 96),
        (127, 4, 32, 128),
    ] {
        let lens: Vec<usize> = (0..n_docs)
            .map(|i| match i % 5 {
                0 => 0,
                1 => 1,
                2 => 7,
                3 => 180,
                _ => rng.below(300) as usize,
            })
            .collect();
        let mut offsets = vec![0usize];
        for l in &lens {
            offsets.push(offsets.last().unwrap() + l);
        }
        let docs = rng.vec(offsets[n_docs] * dim, 1.0);
        let queries = rng.vec(nq * qlen * dim, 1.0);
        let owner: Vec<u32> = (0..n_docs).map(|i| (i % nq) as u32).collect();
        let req = ScoreRequest {
            queries: &queries,
            qlen,
            dim,
            docs: &docs,
            offsets: &offsets,
            owner: &owner,
        };
        let want = reference(&req);
        let cpu = maxsim_scores(&Compute::Cpu, &req).unwrap();
        assert_close(
            &format!("cpu maxsim n{n_docs} q{nq}x{qlen} d{dim}"),
            &cpu,
            &want,
            1e-3,
            1e-4,
        );
        let g = maxsim_scores(&Compute::Gpu(ctx.clone()), &req).unwrap();
        assert_close(
            &format!("gpu maxsim n{n_docs} q{nq}x{qlen} d{dim}"),
            &g,
            &cpu,
            1e-3,
            1e-4,
        );
        // Empty documents score exactly 0.
        for (i, l) in lens.iter().enumerate() {
            if *l == 0 {
                assert_eq!(g[i], 0.0);
                assert_eq!(cpu[i], 0.0);
            }
        }
    }
}

#[test]
fn maxsim_rejects_inconsistent_shapes() {
    let q = vec![0.0f32; 2 * 4];
    let d = vec![0.0f32; 3 * 4];
    let bad_offsets = ScoreRequest {
        queries: &q,
        qlen: 2,
        dim: 4,
        docs: &d,
        offsets: &[0, 2],
        owner: &[0, 0],
    };
    assert!(maxsim_scores(&Compute::Cpu, &bad_offsets).is_err());
    let past_end = ScoreRequest {
        queries: &q,
        qlen: 2,
        dim: 4,
        docs: &d,
        offsets: &[0, 4],
        owner: &[0],
    };
    assert!(maxsim_scores(&Compute::Cpu, &past_end)
        .unwrap_err()
        .to_string()
        .contains("past"));
    let bad_owner = ScoreRequest {
        queries: &q,
        qlen: 2,
        dim: 4,
        docs: &d,
        offsets: &[0, 3],
        owner: &[1],
    };
    assert!(maxsim_scores(&Compute::Gpu(gpu()), &bad_owner).is_err());
}
