//! Exact MaxSim of queries against variable-length documents stored flat
//! (no padding): `score(q, d) = Σ_i max_j q_i · d_j`, maxima that are not
//! finite (an empty document) adding 0. The CPU twin multiplies each document
//! block with one gemm; the GPU runs `shaders/maxsim.wgsl`.

use rayon::prelude::*;

use crate::backend::Compute;
use crate::error::{Error, Result};

/// Documents `docs[offsets[r] .. offsets[r+1]]` (in vectors of `dim`), each
/// scored against query `owner[r]` of `queries` (`qlen × dim` each).
pub struct ScoreRequest<'a> {
    pub queries: &'a [f32],
    pub qlen: usize,
    pub dim: usize,
    pub docs: &'a [f32],
    pub offsets: &'a [usize],
    pub owner: &'a [u32],
}

impl ScoreRequest<'_> {
    fn validate(&self) -> Result<usize> {
        let per_query = self.qlen * self.dim;
        if per_query == 0 || self.queries.len() % per_query != 0 {
            return Err(Error::shape(
                "maxsim",
                format!(
                    "{} query values for queries of {}×{}",
                    self.queries.len(),
                    self.qlen,
                    self.dim
                ),
            ));
        }
        let nq = self.queries.len() / per_query;
        let n = self.owner.len();
        if self.offsets.len() != n + 1 || self.offsets.windows(2).any(|w| w[0] > w[1]) {
            return Err(Error::shape(
                "maxsim",
                format!(
                    "{} offsets for {n} documents (need n + 1, ascending)",
                    self.offsets.len()
                ),
            ));
        }
        if self.offsets.last().copied().unwrap_or(0) * self.dim > self.docs.len() {
            return Err(Error::shape(
                "maxsim",
                "offsets point past the document vectors",
            ));
        }
        if let Some(bad) = self.owner.iter().find(|&&o| o as usize >= nq) {
            return Err(Error::shape(
                "maxsim",
                format!("document owned by query {bad} of {nq}"),
            ));
        }
        Ok(nq)
    }
}

/// MaxSim scores of every document in `req`.
pub fn maxsim_scores(compute: &Compute, req: &ScoreRequest) -> Result<Vec<f32>> {
    let nq = req.validate()?;
    match compute {
        Compute::Cpu => Ok(maxsim_cpu(req)),
        Compute::Gpu(ctx) => {
            let n = req.owner.len();
            if n == 0 {
                return Ok(Vec::new());
            }
            let total = req.offsets[n];
            ctx.check_binding_size("maxsim documents", (total * req.dim * 4) as u64)?;
            let offsets: Vec<u32> = req.offsets.iter().map(|&o| o as u32).collect();
            let q = ctx.upload("maxsim queries", req.queries)?;
            let d = ctx.upload("maxsim documents", &req.docs[..total * req.dim])?;
            let o = ctx.upload("maxsim offsets", &offsets)?;
            let w = ctx.upload("maxsim owners", req.owner)?;
            let out = ctx.pool().get((n * 4) as u64);
            let mut enc = ctx.encoder("maxsim");
            crate::kernels::maxsim::record(
                ctx,
                &mut enc,
                &q,
                &d,
                &o,
                &w,
                out.buffer(),
                (n, nq, req.qlen, req.dim),
            )?;
            Ok(ctx
                .submit_and_read::<f32>(enc, &[(out.buffer(), n)])?
                .remove(0))
        }
    }
}

/// The CPU twin: per document, `S = Q · Dᵀ` with gemm, then row maxima.
pub fn maxsim_cpu(req: &ScoreRequest) -> Vec<f32> {
    let (qlen, dim) = (req.qlen, req.dim);
    req.offsets
        .par_windows(2)
        .zip(req.owner.par_iter())
        .map_init(Vec::new, |sim, (w, &owner)| {
            let (s, e) = (w[0], w[1]);
            if s == e {
                return 0.0;
            }
            let n = e - s;
            let q = &req.queries[owner as usize * qlen * dim..][..qlen * dim];
            sim.resize(qlen * n, 0.0);
            crate::backend::cpu::matmul_transposed(
                q,
                &req.docs[s * dim..e * dim],
                sim,
                qlen,
                n,
                dim,
            );
            sim.chunks(n)
                .map(|row| row.iter().copied().fold(f32::NEG_INFINITY, f32::max))
                .filter(|m| m.is_finite())
                .sum()
        })
        .collect()
}
