//! Token pooling (`index::pool`): the pairwise-distance kernel on the GPU
//! against its CPU twin and an f64 reference; Ward's clustering against scipy's
//! (`linkage(…, "ward")` + `fcluster(…, "maxclust")`, fixtures by
//! `scripts/reference/make_pooling_fixtures.py`, as PyLate calls them); and an
//! index built with `pool_factor` 2.

mod common;

use colwgpu::backend::Compute;
use colwgpu::index::pool::{
    pairwise_cpu, pool_documents, ward_inputs, ward_labels, Block, Pooling, COSINE,
    SQUARED_EUCLIDEAN,
};
use common::Rng;

fn pairwise_f64(x: &[f32], blocks: &[Block], mode: u32) -> Vec<f64> {
    let mut out = Vec::new();
    for b in blocks {
        for i in 0..b.rows {
            for j in 0..b.rows {
                let xi = &x[b.offset + i * b.cols..][..b.cols];
                let xj = &x[b.offset + j * b.cols..][..b.cols];
                out.push(if mode == COSINE {
                    1.0 - xi
                        .iter()
                        .zip(xj)
                        .map(|(a, b)| *a as f64 * *b as f64)
                        .sum::<f64>()
                } else {
                    xi.iter()
                        .zip(xj)
                        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
                        .sum::<f64>()
                });
            }
        }
    }
    out
}

fn max_abs(a: &[f32], b: &[f64]) -> (f64, usize) {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .enumerate()
        .map(|(i, (x, y))| ((*x as f64 - y).abs(), i))
        .fold((0.0, 0), |m, v| if v.0 > m.0 { v } else { m })
}

#[test]
fn pairwise_distances_gpu_equal_cpu_twin_equal_f64() {
    let mut rng = Rng::new(7);
    // Awkward block sizes (1, 31, 33, 127, 129 rows), one empty.
    let sizes = [
        (1usize, 128usize),
        (31, 128),
        (33, 96),
        (0, 128),
        (127, 128),
        (129, 64),
    ];
    let mut x = Vec::new();
    let mut blocks = Vec::new();
    for &(rows, cols) in &sizes {
        blocks.push(Block {
            offset: x.len(),
            rows,
            cols,
        });
        let mut v = rng.vec(rows * cols, 1.0);
        for r in v.chunks_mut(cols) {
            let n = r.iter().map(|a| a * a).sum::<f32>().sqrt();
            r.iter_mut().for_each(|a| *a /= n);
        }
        x.extend(v);
    }
    let gpu = Compute::Gpu(common::gpu());
    for mode in [COSINE, SQUARED_EUCLIDEAN] {
        let cpu = pairwise_cpu(&x, &blocks, mode);
        let exact = pairwise_f64(&x, &blocks, mode);
        let (d, at) = max_abs(&cpu, &exact);
        assert!(
            d <= 2e-6,
            "mode {mode}: cpu twin vs f64 max |Δ| {d} at {at}"
        );
        // The GPU path runs both modes in sequence (rows of the cosine matrix
        // into the squared distances): check the composition too.
        let _ = at;
    }
    let cpu_both = ward_inputs(&Compute::Cpu, &x, &blocks).unwrap();
    let gpu_both = ward_inputs(&gpu, &x, &blocks).unwrap();
    let d1 = pairwise_cpu(&x, &blocks, COSINE);
    let mut second = Vec::new();
    let mut off = 0;
    for b in &blocks {
        second.push(Block {
            offset: off,
            rows: b.rows,
            cols: b.rows,
        });
        off += b.rows * b.rows;
    }
    let exact = pairwise_f64(&d1, &second, SQUARED_EUCLIDEAN);
    let (d, at) = max_abs(&cpu_both, &exact);
    assert!(d <= 1e-5, "ward inputs, cpu vs f64: max |Δ| {d} at {at}");
    let (d, at) = max_abs(
        &gpu_both,
        &cpu_both.iter().map(|&v| v as f64).collect::<Vec<_>>(),
    );
    assert!(d <= 1e-4, "ward inputs, gpu vs cpu: max |Δ| {d} at {at}");
}

/// Two labelings are the same partition.
fn same_partition(a: &[usize], b: &[usize]) -> bool {
    let n = a.len();
    (0..n).all(|i| (0..n).all(|j| (a[i] == a[j]) == (b[i] == b[j])))
}

#[test]
fn ward_clusters_equal_scipy_as_pylate_calls_it() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pooling/ward_scipy.json"
    );
    let fx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for c in cases {
        let n = c["n"].as_u64().unwrap() as usize;
        let dim = c["dim"].as_u64().unwrap() as usize;
        let k = c["clusters"].as_u64().unwrap() as usize;
        let x: Vec<f32> = c["vectors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let want: Vec<usize> = c["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        for compute in [Compute::Cpu, Compute::Gpu(common::gpu())] {
            let e = ward_inputs(
                &compute,
                &x,
                &[Block {
                    offset: 0,
                    rows: n,
                    cols: dim,
                }],
            )
            .unwrap();
            let got = ward_labels(&e, n, k);
            assert_eq!(got.iter().max().unwrap() + 1, k, "n {n}: cluster count");
            assert!(
                same_partition(&got, &want),
                "n {n}, k {k} on {compute:?}: {got:?} vs scipy {want:?}"
            );
        }
    }
}

#[test]
fn pooled_documents_keep_protected_vectors_and_shrink_by_the_factor() {
    let mut rng = Rng::new(3);
    let dim = 16;
    let docs: Vec<Vec<f32>> = [1usize, 2, 9, 40]
        .iter()
        .map(|&n| {
            let mut v = rng.vec(n * dim, 1.0);
            for r in v.chunks_mut(dim) {
                let s = r.iter().map(|a| a * a).sum::<f32>().sqrt();
                r.iter_mut().for_each(|a| *a /= s);
            }
            v
        })
        .collect();
    let pooling = Pooling {
        factor: 2,
        protected: 1,
    };
    let cpu = pool_documents(&Compute::Cpu, &docs, dim, &pooling).unwrap();
    let gpu = pool_documents(&Compute::Gpu(common::gpu()), &docs, dim, &pooling).unwrap();
    for ((d, p), g) in docs.iter().zip(&cpu).zip(&gpu) {
        let n = d.len() / dim;
        assert_eq!(p.len() / dim, pooling.pooled_len(n));
        assert_eq!(g.len(), p.len());
        assert_eq!(&p[..dim], &d[..dim], "the protected vector is kept as is");
        for r in p.chunks(dim) {
            let s: f32 = r.iter().map(|a| a * a).sum();
            assert!((s - 1.0).abs() < 1e-5, "pooled vectors are unit length");
        }
    }
    assert_eq!(pooling.pooled_len(40), 1 + 39 / 2);
    assert_eq!(pooling.pooled_len(2), 2);
    assert_eq!(pooling.pooled_len(1), 1);
}

#[test]
fn an_index_built_with_pool_factor_2_holds_the_pooled_vectors() {
    let mut rng = Rng::new(11);
    let dim = 32;
    let blocks: Vec<Vec<f32>> = (0..40)
        .map(|i| {
            let n = 5 + i % 17;
            let mut v = rng.vec(n * dim, 1.0);
            for r in v.chunks_mut(dim) {
                let s = r.iter().map(|a| a * a).sum::<f32>().sqrt();
                r.iter_mut().for_each(|a| *a /= s);
            }
            v
        })
        .collect();
    let set = colwgpu::VectorSet::from_blocks(None, dim, &blocks).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let plain = colwgpu::Index::build_from_vectors(
        tmp.path().join("plain"),
        &set,
        None,
        &colwgpu::IndexOptions::default(),
        colwgpu::Device::Cpu,
    )
    .unwrap();
    let pooled = colwgpu::Index::build_from_vectors(
        tmp.path().join("pooled"),
        &set,
        None,
        &colwgpu::IndexOptions {
            pool_factor: 2,
            ..colwgpu::IndexOptions::default()
        },
        colwgpu::Device::Cpu,
    )
    .unwrap();
    let p = Pooling {
        factor: 2,
        protected: 1,
    };
    let want: usize = blocks.iter().map(|b| p.pooled_len(b.len() / dim)).sum();
    assert_eq!(
        plain.metadata().num_vectors,
        blocks.iter().map(|b| b.len() / dim).sum::<usize>()
    );
    assert_eq!(pooled.metadata().num_vectors, want);
    assert_eq!(pooled.metadata().pooling, Some(p));
    assert_eq!(plain.metadata().pooling, None);
    let e = colwgpu::Index::build_from_vectors(
        tmp.path().join("zero"),
        &set,
        None,
        &colwgpu::IndexOptions {
            pool_factor: 0,
            ..colwgpu::IndexOptions::default()
        },
        colwgpu::Device::Cpu,
    )
    .unwrap_err();
    assert!(e.to_string().contains("pool factor 0"), "{e}");
}
