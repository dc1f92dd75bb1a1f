//! The WGSL backend: every op records a dispatch into one pending command
//! encoder; [`Backend::read`] submits once and reads back only what is asked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{
    check_attention, check_attention_gqa, check_batch, check_linear, check_norm, check_reshape,
    check_rotary, check_same, check_swiglu, Activation, Backend, EmbeddingTables, HostMatrix,
    KeySpans, Precision, Shaped, TokenBatch, Unary,
};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, PooledBuffer};
use crate::kernels;
use crate::kernels::matmul::WeightStorage;

/// Activations: a pooled storage buffer with its shape.
pub struct GpuTensor {
    buffer: PooledBuffer,
    rows: usize,
    cols: usize,
}

/// Parameters: a storage buffer uploaded once (f32, or f16 for the linear
/// weights of `--precision f16`).
pub struct GpuWeight {
    buffer: wgpu::Buffer,
    rows: usize,
    cols: usize,
    storage: WeightStorage,
}

impl Shaped for GpuTensor {
    fn rows(&self) -> usize {
        self.rows
    }
    fn cols(&self) -> usize {
        self.cols
    }
}

impl Shaped for GpuWeight {
    fn rows(&self) -> usize {
        self.rows
    }
    fn cols(&self) -> usize {
        self.cols
    }
}

impl GpuTensor {
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buffer.buffer()
    }
}

impl GpuWeight {
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// How the buffer holds the values.
    pub fn storage(&self) -> WeightStorage {
        self.storage
    }

    /// The buffer, for an op that reads f32 parameters (norms, biases,
    /// embedding tables); an f16 weight there is a programming error in the
    /// model code, reported as a shape error rather than read as garbage.
    fn f32_buffer(&self, op: &'static str) -> Result<&wgpu::Buffer> {
        match self.storage {
            WeightStorage::F32 => Ok(&self.buffer),
            WeightStorage::F16 => Err(Error::shape(
                op,
                "an f16 linear weight was passed where f32 parameters are read",
            )),
        }
    }
}

/// Rounds `m` to f16 for upload, refusing values beyond f16's range
/// (±65,504) instead of storing infinities.
fn to_f16(label: &str, m: &HostMatrix) -> Result<Vec<half::f16>> {
    let out: Vec<half::f16> = m.data.iter().map(|&v| half::f16::from_f32(v)).collect();
    if let Some(i) = out
        .iter()
        .zip(&m.data)
        .position(|(h, v)| h.is_infinite() && v.is_finite())
    {
        return Err(Error::Input(format!(
            "weight '{label}' holds {} (row {}, column {}), beyond f16's range of ±65504: \
             --precision f16 cannot store it; use --precision f32",
            m.data[i],
            i / m.cols.max(1),
            i % m.cols.max(1)
        )));
    }
    Ok(out)
}

/// The WGSL backend on one [`GpuContext`].
pub struct GpuBackend {
    ctx: Arc<GpuContext>,
    /// This backend's own buffer pool. A tensor goes back to it when dropped,
    /// which may be before the commands that use it are submitted: with a
    /// pool shared by backends on other threads (the context's), another
    /// backend could take the buffer, write it and submit first, and this
    /// backend's pending commands would then read that data (seen as a rare
    /// ColQwen2 GPU parity failure when tests ran in parallel). Within one
    /// backend, reuse is ordered by its one encoder.
    pool: crate::gpu::BufferPool,
    encoder: Option<wgpu::CommandEncoder>,
    /// When set, every op is submitted and waited for on its own and its wall
    /// time added here by op name (a diagnostic mode: it defeats batching).
    profile: Option<std::collections::BTreeMap<&'static str, (usize, f64)>>,
    /// F32, or F16: linear weights stored as f16.
    precision: Precision,
    /// Bytes of every weight uploaded, and of the linear weights among them.
    weight_bytes: AtomicU64,
    linear_weight_bytes: AtomicU64,
}

impl GpuBackend {
    /// An f32 backend.
    pub fn new(ctx: Arc<GpuContext>) -> Self {
        Self {
            pool: crate::gpu::BufferPool::new(ctx.device.clone()),
            ctx,
            encoder: None,
            profile: None,
            precision: Precision::F32,
            weight_bytes: AtomicU64::new(0),
            linear_weight_bytes: AtomicU64::new(0),
        }
    }

    /// A backend whose linear weights are stored at `precision`: f32, or f16
    /// (the device needs SHADER_F16: refused, naming the adapter, without
    /// it). bf16 is the cpu backend's mode (WGSL has no bf16 type): refused
    /// with an error naming f16.
    pub fn with_precision(ctx: Arc<GpuContext>, precision: Precision) -> Result<Self> {
        match precision {
            Precision::F32 => {}
            Precision::F16 => ctx.require_f16("--precision f16 (f16 weight storage)")?,
            Precision::Bf16 => {
                return Err(Error::Input(format!(
                    "--precision bf16 is the cpu backend's mode; on the gpu backend ({}) use \
                     --precision f16 (f16 weight storage, f32 sums), or --device cpu for bf16",
                    ctx.info.name
                )))
            }
        }
        Ok(Self {
            precision,
            ..Self::new(ctx)
        })
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Bytes of the weights uploaded so far: `(all, linear weights)`.
    pub fn weight_bytes(&self) -> (u64, u64) {
        (
            self.weight_bytes.load(Ordering::Relaxed),
            self.linear_weight_bytes.load(Ordering::Relaxed),
        )
    }

    /// Turns per-op timing on (each op then runs in its own submit).
    pub fn enable_profiling(&mut self) {
        self.profile = Some(Default::default());
    }

    /// Per-op (calls, seconds) since profiling was enabled.
    pub fn profile(&self) -> Option<&std::collections::BTreeMap<&'static str, (usize, f64)>> {
        self.profile.as_ref()
    }

    /// In profiling mode: runs what is pending, waits, and books the time to `op`.
    fn finish_op(&mut self, op: &'static str, start: std::time::Instant) -> Result<()> {
        if self.profile.is_some() {
            if let Some(enc) = self.encoder.take() {
                self.ctx.submit_and_wait(enc)?;
            }
            let dt = start.elapsed().as_secs_f64();
            if let Some(p) = self.profile.as_mut() {
                let e = p.entry(op).or_insert((0, 0.0));
                e.0 += 1;
                e.1 += dt;
            }
        }
        Ok(())
    }

    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    fn encoder(&mut self) -> &mut wgpu::CommandEncoder {
        let ctx = &self.ctx;
        self.encoder.get_or_insert_with(|| ctx.encoder("forward"))
    }

    fn tensor(&self, what: &str, rows: usize, cols: usize) -> Result<GpuTensor> {
        let bytes = (rows * cols * 4) as u64;
        self.ctx.check_binding_size(what, bytes)?;
        Ok(GpuTensor {
            buffer: self.pool.get(bytes),
            rows,
            cols,
        })
    }

    /// Submits what is pending and waits for it, reading nothing back
    /// (benchmarks use it to time kernels without the read-back).
    pub fn flush(&mut self) -> Result<()> {
        match self.encoder.take() {
            Some(enc) => self.ctx.submit_and_wait(enc),
            None => Ok(()),
        }
    }

    /// Uploads activations (used by tests and by callers that start mid-model).
    pub fn upload(&self, m: &HostMatrix) -> Result<GpuTensor> {
        let t = self.tensor("upload", m.rows, m.cols)?;
        if !m.data.is_empty() {
            self.ctx
                .queue
                .write_buffer(t.buffer(), 0, bytemuck::cast_slice(&m.data));
        }
        Ok(t)
    }
}

impl Backend for GpuBackend {
    type Tensor = GpuTensor;
    type Weight = GpuWeight;

    fn describe(&self) -> String {
        match self.precision {
            Precision::F16 => format!("gpu ({}, f16 linear weights)", self.ctx.describe()),
            _ => format!("gpu ({})", self.ctx.describe()),
        }
    }

    fn check_head_dim(&self, head_dim: usize) -> Result<()> {
        if head_dim == 0 || head_dim > kernels::attention::MAX_HEAD_DIM {
            return Err(Error::shape(
                "attention",
                format!(
                    "head dimension {head_dim} is outside the gpu backend's 1..={} \
                     (use --device cpu, which takes any head dimension)",
                    kernels::attention::MAX_HEAD_DIM
                ),
            ));
        }
        Ok(())
    }

    fn weight(&self, label: &str, m: &HostMatrix) -> Result<GpuWeight> {
        let buffer = self.ctx.upload(label, &m.data)?;
        self.weight_bytes
            .fetch_add(m.data.len() as u64 * 4, Ordering::Relaxed);
        Ok(GpuWeight {
            buffer,
            rows: m.rows,
            cols: m.cols,
            storage: WeightStorage::F32,
        })
    }

    fn linear_weight(&self, label: &str, m: &HostMatrix) -> Result<GpuWeight> {
        let (buffer, storage) = match self.precision {
            Precision::F16 => (
                self.ctx.upload(label, &to_f16(label, m)?)?,
                WeightStorage::F16,
            ),
            _ => (self.ctx.upload(label, &m.data)?, WeightStorage::F32),
        };
        let bytes = (m.data.len() * storage.bytes()) as u64;
        self.weight_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.linear_weight_bytes
            .fetch_add(bytes, Ordering::Relaxed);
        Ok(GpuWeight {
            buffer,
            rows: m.rows,
            cols: m.cols,
            storage,
        })
    }

    fn linear_weight_owned(&self, label: &str, m: HostMatrix) -> Result<GpuWeight> {
        self.linear_weight(label, &m)
    }

    fn embed(
        &mut self,
        batch: &TokenBatch,
        t: &EmbeddingTables<GpuWeight>,
        eps: f32,
    ) -> Result<GpuTensor> {
        let start = std::time::Instant::now();
        check_batch(batch, t.word.rows, t.position.rows, t.token_type.rows)?;
        let rows = batch.batch * batch.seq_len;
        let hidden = t.word.cols;
        let out = self.tensor("embeddings", rows, hidden)?;
        let ids = self.ctx.upload("ids", &batch.ids)?;
        let type_ids = self.ctx.upload("type ids", &batch.type_ids)?;
        let buffers = kernels::embed::Buffers {
            ids: &ids,
            type_ids: &type_ids,
            word: t.word.f32_buffer("embed")?,
            position: t.position.f32_buffer("embed")?,
            token_type: t.token_type.f32_buffer("embed")?,
            gamma: t.gamma.f32_buffer("embed")?,
            beta: t.beta.f32_buffer("embed")?,
            out: out.buffer(),
        };
        let ctx = self.ctx.clone();
        kernels::embed::record(
            &ctx,
            self.encoder(),
            &buffers,
            (rows, batch.seq_len, hidden),
            eps,
        )?;
        self.finish_op("embed", start)?;
        Ok(out)
    }

    fn linear(
        &mut self,
        x: &GpuTensor,
        w: &GpuWeight,
        bias: Option<&GpuWeight>,
        act: Activation,
    ) -> Result<GpuTensor> {
        let start = std::time::Instant::now();
        check_linear(x, w, bias)?;
        let bias = bias.map(|b| b.f32_buffer("linear bias")).transpose()?;
        let out = self.tensor("linear output", x.rows, w.rows)?;
        let ctx = self.ctx.clone();
        kernels::matmul::record_with(
            &ctx,
            self.encoder(),
            &kernels::matmul::Buffers {
                x: x.buffer(),
                w: &w.buffer,
                bias,
                y: out.buffer(),
            },
            (x.rows, w.rows, x.cols),
            act,
            w.storage,
        )?;
        self.finish_op("matmul", start)?;
        Ok(out)
    }

    fn attention(
        &mut self,
        qkv: &GpuTensor,
        batch: &TokenBatch,
        heads: usize,
    ) -> Result<GpuTensor> {
        let start = std::time::Instant::now();
        let d = check_attention(qkv, batch, heads)?;
        let out = self.tensor("attention output", qkv.rows, heads * d)?;
        let key_lens = self.ctx.upload("key lengths", &batch.key_lens)?;
        let ctx = self.ctx.clone();
        kernels::attention::record(
            &ctx,
            self.encoder(),
            &kernels::attention::Buffers {
                qkv: qkv.buffer(),
                key_lens: &key_lens,
                out: out.buffer(),
            },
            (batch.batch, batch.seq_len, heads, d),
        )?;
        self.finish_op("attention", start)?;
        Ok(out)
    }

    fn add_layernorm(
        &mut self,
        x: &GpuTensor,
        residual: &GpuTensor,
        gamma: &GpuWeight,
        beta: &GpuWeight,
        eps: f32,
    ) -> Result<GpuTensor> {
        let start = std::time::Instant::now();
        check_same("add_layernorm", x, residual)?;
        let out = self.tensor("layernorm output", x.rows, x.cols)?;
        let ctx = self.ctx.clone();
        kernels::layernorm::record(
            &ctx,
            self.encoder(),
            &kernels::layernorm::Buffers {
                x: x.buffer(),
                residual: residual.buffer(),
                gamma: gamma.f32_buffer("layernorm")?,
                beta: beta.f32_buffer("layernorm")?,
                out: out.buffer(),
            },
            (x.rows, x.cols),
            eps,
        )?;
        self.finish_op("layernorm", start)?;
        Ok(out)
    }

    fn l2_normalize(&mut self, x: &GpuTensor) -> Result<GpuTensor> {
        let start = std::time::Instant::now();
        let out = self.tensor("l2norm output", x.rows, x.cols)?;
        let ctx = self.ctx.clone();
        kernels::l2norm::record(
            &ctx,
            self.encoder(),
            &kernels::l2norm::Buffers {
                x: x.buffer(),
                out: out.buffer(),
            },
            (x.rows, x.cols),
        )?;
        self.finish_op("l2norm", start)?;
        Ok(out)
    }

    fn read(&mut self, x: &GpuTensor) -> Result<HostMatrix> {
        let encoder = self
            .encoder
            .take()
            .unwrap_or_else(|| self.ctx.encoder("read"));
        let mut out = self
            .ctx
            .submit_and_read::<f32>(encoder, &[(x.buffer(), x.rows * x.cols)])?;
        HostMatrix::new(x.rows, x.cols, out.pop().unwrap_or_default())
    }

    fn upload_tensor(&mut self, m: &HostMatrix) -> Result<GpuTensor> {
        self.upload(m)
    }

    fn reshape(&mut self, x: GpuTensor, rows: usize, cols: usize) -> Result<GpuTensor> {
        check_reshape(&x, rows, cols)?;
        Ok(GpuTensor { rows, cols, ..x })
    }

    fn add(&mut self, x: &GpuTensor, y: &GpuTensor) -> Result<GpuTensor> {
        check_same("add", x, y)?;
        self.elementwise(kernels::elementwise::Op::Add, x, y, (x.rows, x.cols))
    }

    fn layer_norm(
        &mut self,
        x: &GpuTensor,
        gamma: &GpuWeight,
        beta: &GpuWeight,
        eps: f32,
    ) -> Result<GpuTensor> {
        check_norm("layer_norm", x, gamma, Some(beta))?;
        self.norm(kernels::norm::Norm::Layer, x, gamma, beta, eps)
    }

    fn rms_norm(&mut self, x: &GpuTensor, w: &GpuWeight, eps: f32) -> Result<GpuTensor> {
        check_norm("rms_norm", x, w, None::<&GpuWeight>)?;
        self.norm(kernels::norm::Norm::Rms, x, w, w, eps)
    }

    fn unary(&mut self, x: &GpuTensor, op: Unary) -> Result<GpuTensor> {
        let op = match op {
            Unary::QuickGelu => kernels::elementwise::Op::QuickGelu,
            Unary::Gelu => kernels::elementwise::Op::Gelu,
            Unary::GeluTanh => kernels::elementwise::Op::GeluTanh,
        };
        self.elementwise(op, x, x, (x.rows, x.cols))
    }

    fn swiglu(&mut self, x: &GpuTensor) -> Result<GpuTensor> {
        let f = check_swiglu(x)?;
        self.elementwise(kernels::elementwise::Op::SwiGlu, x, x, (x.rows, f))
    }

    fn geglu(&mut self, gate: &GpuTensor, up: &GpuTensor) -> Result<GpuTensor> {
        check_same("geglu", gate, up)?;
        self.elementwise(kernels::elementwise::Op::GeGlu, gate, up, (gate.rows, gate.cols))
    }

    fn rotary(
        &mut self,
        x: &GpuTensor,
        table: &GpuTensor,
        heads: usize,
        head_dim: usize,
    ) -> Result<GpuTensor> {
        let start = std::time::Instant::now();
        check_rotary(x, table, heads, head_dim)?;
        let out = self.tensor("rotary output", x.rows, x.cols)?;
        let ctx = self.ctx.clone();
        let buffers = kernels::rotary::Buffers {
            x: x.buffer(),
            table: table.buffer(),
            out: out.buffer(),
        };
        kernels::rotary::record(
            &ctx,
            self.encoder(),
            &buffers,
            (x.rows, x.cols, heads, head_dim),
        )?;
        self.finish_op("rotary", start)?;
        Ok(out)
    }

    fn attention_gqa(
        &mut self,
        qkv: &GpuTensor,
        spans: &KeySpans,
        q_heads: usize,
        kv_heads: usize,
        head_dim: usize,
    ) -> Result<GpuTensor> {
        let start = std::time::Instant::now();
        check_attention_gqa(qkv, spans, q_heads, kv_heads, head_dim)?;
        let out = self.tensor("attention output", qkv.rows, q_heads * head_dim)?;
        let span_buffer = self.ctx.upload("key spans", &spans.spans)?;
        let ctx = self.ctx.clone();
        let buffers = kernels::attention_gqa::Buffers {
            qkv: qkv.buffer(),
            spans: &span_buffer,
            out: out.buffer(),
        };
        kernels::attention_gqa::record(
            &ctx,
            self.encoder(),
            &buffers,
            (qkv.rows, q_heads, kv_heads, head_dim),
        )?;
        self.finish_op("attention_gqa", start)?;
        Ok(out)
    }
}

impl GpuBackend {
    /// Records an element-wise op producing `[rows, cols]`.
    fn elementwise(
        &mut self,
        op: kernels::elementwise::Op,
        a: &GpuTensor,
        b: &GpuTensor,
        (rows, cols): (usize, usize),
    ) -> Result<GpuTensor> {
        let start = std::time::Instant::now();
        let out = self.tensor("element-wise output", rows, cols)?;
        let ctx = self.ctx.clone();
        let buffers = kernels::elementwise::Buffers {
            a: a.buffer(),
            b: matches!(
                op,
                kernels::elementwise::Op::Add | kernels::elementwise::Op::GeGlu
            )
            .then(|| b.buffer()),
            out: out.buffer(),
        };
        kernels::elementwise::record(&ctx, self.encoder(), op, &buffers, (rows, cols))?;
        self.finish_op("elementwise", start)?;
        Ok(out)
    }

    /// Records a row normalisation of `x`.
    fn norm(
        &mut self,
        norm: kernels::norm::Norm,
        x: &GpuTensor,
        gamma: &GpuWeight,
        beta: &GpuWeight,
        eps: f32,
    ) -> Result<GpuTensor> {
        let start = std::time::Instant::now();
        let out = self.tensor("norm output", x.rows, x.cols)?;
        let ctx = self.ctx.clone();
        let buffers = kernels::norm::Buffers {
            x: x.buffer(),
            gamma: gamma.f32_buffer("norm")?,
            beta: if norm == kernels::norm::Norm::Layer {
                Some(beta.f32_buffer("norm")?)
            } else {
                None
            },
            out: out.buffer(),
        };
        kernels::norm::record(&ctx, self.encoder(), norm, &buffers, (x.rows, x.cols), eps)?;
        self.finish_op("norm", start)?;
        Ok(out)
    }
}
