//! GPU plumbing: adapter and device, shader sources, the pipeline cache, buffers
//! and the one place that reads results back. It knows nothing of BERT or PLAID.

mod buffer;
mod pipeline;
pub mod shader;

pub use buffer::{BufferPool, PooledBuffer};
pub use pipeline::{Binding, KernelSpec, Pipeline};

use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// How to pick an adapter.
#[derive(Debug, Clone, Default)]
pub struct GpuOptions {
    /// Restrict to these backends (`vulkan`, `metal`, `dx12`, `gl`; comma separated).
    /// Falls back to the `WGPU_BACKEND` environment variable.
    pub backends: Option<String>,
    /// Pick the first adapter whose name contains this (case-insensitive).
    /// Falls back to the `COLWGPU_ADAPTER` environment variable.
    pub adapter_name: Option<String>,
}

/// A device and queue on one adapter, with the pipeline cache.
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    /// The optional features this device was created with: SHADER_F16 when
    /// the adapter offers it (nothing else is requested).
    pub features: wgpu::Features,
    pipelines: pipeline::PipelineCache,
    pool: BufferPool,
    /// The first uncaptured wgpu error since the last check (validation, out of memory).
    errors: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuContext({})", self.describe())
    }
}

fn parse_backends(s: &str) -> Result<wgpu::Backends> {
    let mut out = wgpu::Backends::empty();
    for part in s.split(',').map(|p| p.trim().to_ascii_lowercase()) {
        out |= match part.as_str() {
            "vulkan" | "vk" => wgpu::Backends::VULKAN,
            "metal" | "mtl" => wgpu::Backends::METAL,
            "dx12" | "d3d12" => wgpu::Backends::DX12,
            "gl" | "gles" | "opengl" => wgpu::Backends::GL,
            "all" | "" => wgpu::Backends::all(),
            other => {
                return Err(Error::Input(format!(
                    "unknown wgpu backend '{other}' (expected vulkan, metal, dx12 or gl)"
                )))
            }
        };
    }
    Ok(out)
}

/// Lists every adapter wgpu can see on the selected backends.
pub fn list_adapters(options: &GpuOptions) -> Result<Vec<wgpu::AdapterInfo>> {
    let instance = make_instance(options)?;
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    Ok(adapters.iter().map(|a| a.get_info()).collect())
}

/// Every adapter's name and the optional features it offers.
pub fn adapter_features(options: &GpuOptions) -> Result<Vec<(String, wgpu::Features)>> {
    let instance = make_instance(options)?;
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    Ok(adapters
        .iter()
        .map(|a| (a.get_info().name, a.features()))
        .collect())
}

fn make_instance(options: &GpuOptions) -> Result<wgpu::Instance> {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    let backends = options
        .backends
        .clone()
        .or_else(|| std::env::var("WGPU_BACKEND").ok());
    desc.backends = match backends {
        Some(b) => parse_backends(&b)?,
        None => wgpu::Backends::all(),
    };
    Ok(wgpu::Instance::new(desc))
}

/// Whether this adapter is a software rasteriser (lavapipe, llvmpipe, WARP, SwiftShader).
pub fn is_software(info: &wgpu::AdapterInfo) -> bool {
    info.device_type == wgpu::DeviceType::Cpu
}

impl GpuContext {
    /// Opens the best adapter (a hardware GPU before a software one), honouring
    /// `options` and the environment, and requests its own limits.
    pub fn new(options: &GpuOptions) -> Result<Self> {
        let instance = make_instance(options)?;
        let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        let wanted = options
            .adapter_name
            .clone()
            .or_else(|| std::env::var("COLWGPU_ADAPTER").ok())
            .map(|s| s.to_ascii_lowercase());
        if let Some(w) = &wanted {
            let all: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
            adapters.retain(|a| a.get_info().name.to_ascii_lowercase().contains(w.as_str()));
            if adapters.is_empty() && !all.is_empty() {
                return Err(Error::AdapterNotFound {
                    wanted: w.clone(),
                    available: all.join(", "),
                });
            }
        }
        // Rank: discrete > integrated > virtual > other > cpu; Vulkan/Metal/DX12 before GL.
        let rank = |a: &wgpu::Adapter| {
            let info = a.get_info();
            let t = match info.device_type {
                wgpu::DeviceType::DiscreteGpu => 0,
                wgpu::DeviceType::IntegratedGpu => 1,
                wgpu::DeviceType::VirtualGpu => 2,
                wgpu::DeviceType::Other => 3,
                wgpu::DeviceType::Cpu => 4,
            };
            let b = if info.backend == wgpu::Backend::Gl {
                1
            } else {
                0
            };
            (t, b)
        };
        adapters.sort_by_key(rank);
        let adapter = adapters.into_iter().next().ok_or_else(|| {
            Error::NoAdapter(match &wanted {
                Some(w) => format!(" matching '{w}'"),
                None => String::new(),
            })
        })?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        // f16 weight storage (`--precision f16`) needs SHADER_F16: requested
        // only where the adapter offers it, so no adapter is refused for it.
        let features = adapter.features() & wgpu::Features::SHADER_F16;
        let desc = wgpu::DeviceDescriptor {
            label: Some("colwgpu"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc)).map_err(|e| {
            Error::RequestDevice {
                adapter: info.name.clone(),
                error: e,
            }
        })?;
        let errors: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut slot) = sink.lock() {
                if slot.is_none() {
                    *slot = Some(e.to_string());
                }
            }
        }));
        Ok(Self {
            pool: BufferPool::new(device.clone()),
            device,
            queue,
            info,
            limits,
            features,
            pipelines: pipeline::PipelineCache::default(),
            errors,
        })
    }

    /// "name (backend, device type, driver info)".
    pub fn describe(&self) -> String {
        let i = &self.info;
        format!(
            "{} ({:?}, {:?}{}{})",
            i.name,
            i.backend,
            i.device_type,
            if i.driver.is_empty() { "" } else { ", " },
            if i.driver_info.is_empty() {
                i.driver.clone()
            } else {
                format!("{} {}", i.driver, i.driver_info)
            }
        )
    }

    pub fn is_software(&self) -> bool {
        is_software(&self.info)
    }

    /// Whether f16 storage buffers and arithmetic are available (SHADER_F16).
    pub fn supports_f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }

    /// Errors, naming the adapter and the feature, unless this device has
    /// SHADER_F16 (`what` says what needed it).
    pub fn require_f16(&self, what: &str) -> Result<()> {
        require_f16(&self.info.name, self.features, what)
    }

    /// The compute pipeline for `spec` specialised with `constants`, built once.
    pub fn pipeline(&self, spec: &KernelSpec, constants: &[(&str, f64)]) -> Result<Arc<Pipeline>> {
        self.pipelines.get(&self.device, spec, constants)
    }

    /// Storage buffers of at least `bytes` bytes, recycled through a pool.
    pub fn pool(&self) -> &BufferPool {
        &self.pool
    }

    /// Returns (and clears) the first wgpu error reported since the last check.
    pub fn check(&self, label: &str) -> Result<()> {
        let msg = self.errors.lock().ok().and_then(|mut s| s.take());
        match msg {
            Some(message) => Err(Error::Gpu {
                label: label.to_string(),
                message,
            }),
            None => Ok(()),
        }
    }

    /// The most bytes one storage binding may hold (binding and buffer limits).
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// Rows of `width` f32 (or u32) that fit one storage binding (at least 1).
    pub fn rows_per_binding(&self, width: usize) -> usize {
        (self.max_binding_bytes() / (width.max(1) as u64 * 4)).max(1) as usize
    }

    /// Errors if a single binding of `bytes` would exceed the adapter's limits.
    pub fn check_binding_size(&self, what: &str, bytes: u64) -> Result<()> {
        let limit = self.max_binding_bytes();
        if bytes > limit {
            return Err(Error::LimitExceeded {
                what: what.to_string(),
                needed: bytes,
                limit,
            });
        }
        Ok(())
    }

    /// Uploads `data` into a new storage buffer (not pooled: for weights and inputs).
    pub fn upload<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> Result<wgpu::Buffer> {
        use wgpu::util::DeviceExt;
        let bytes: &[u8] = bytemuck::cast_slice(data);
        self.check_binding_size(label, bytes.len() as u64)?;
        // Zero-length bindings are invalid: keep at least one element.
        let padded;
        let contents = if bytes.is_empty() {
            padded = [0u8; 16];
            &padded[..]
        } else {
            bytes
        };
        Ok(self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC,
            }))
    }

    /// A uniform buffer holding `params`.
    pub fn uniform<T: bytemuck::Pod>(&self, label: &str, params: &T) -> wgpu::Buffer {
        use wgpu::util::DeviceExt;
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::bytes_of(params),
                usage: wgpu::BufferUsages::UNIFORM,
            })
    }

    /// Records `pipeline` over `workgroups` with `buffers` bound in order (bindings 0..n).
    pub fn dispatch(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        pipeline: &Pipeline,
        buffers: &[&wgpu::Buffer],
        workgroups: [u32; 3],
    ) {
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(pipeline.label.as_str()),
            layout: &pipeline.bind_group_layout,
            entries: &entries,
        });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(pipeline.label.as_str()),
            timestamp_writes: None,
        });
        pass.set_pipeline(&pipeline.pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
    }

    /// Records one dispatch of `spec`: its pipeline specialised with
    /// `constants`, the storage `buffers` bound in binding order with `params`
    /// uploaded as the uniform at the spec's [`Binding::Uniform`] slot, over
    /// `groups` workgroups (see [`GpuContext::grid`]).
    pub fn record_kernel<P: bytemuck::Pod>(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        spec: &KernelSpec,
        constants: &[(&str, f64)],
        buffers: &[&wgpu::Buffer],
        params: &P,
        groups: [u32; 3],
    ) -> Result<()> {
        let pipeline = self.pipeline(spec, constants)?;
        let uniform = self.uniform(&format!("{} params", spec.entry), params);
        let mut all = buffers.to_vec();
        let at = spec
            .bindings
            .iter()
            .position(|b| *b == Binding::Uniform)
            .unwrap_or(all.len())
            .min(all.len());
        all.insert(at, &uniform);
        self.dispatch(encoder, &pipeline, &all, groups);
        Ok(())
    }

    /// `n` workgroups laid out over x and y within the adapter's per-dimension
    /// limit ([`grid_1d`]).
    pub fn grid(&self, n: u32) -> [u32; 3] {
        grid_1d(n, self.limits.max_compute_workgroups_per_dimension)
    }

    /// A fresh command encoder.
    pub fn encoder(&self, label: &str) -> wgpu::CommandEncoder {
        self.device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) })
    }

    /// Submits `encoder` after copying the first `len` elements of each source into
    /// staging buffers, waits, and returns their contents: the one place that reads back.
    pub fn submit_and_read<T: bytemuck::Pod>(
        &self,
        mut encoder: wgpu::CommandEncoder,
        sources: &[(&wgpu::Buffer, usize)],
    ) -> Result<Vec<Vec<T>>> {
        let elem = std::mem::size_of::<T>() as u64;
        let mut staging = Vec::with_capacity(sources.len());
        for (buf, len) in sources {
            let bytes = ((*len as u64) * elem).max(4);
            let bytes = bytes.div_ceil(4) * 4;
            let s = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            encoder.copy_buffer_to_buffer(buf, 0, &s, 0, bytes);
            staging.push((s, *len));
        }
        self.queue.submit(Some(encoder.finish()));
        let (tx, rx) = std::sync::mpsc::channel();
        for (i, (s, _)) in staging.iter().enumerate() {
            let tx = tx.clone();
            s.slice(..).map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send((i, r));
            });
        }
        drop(tx);
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu {
                label: "poll".into(),
                message: e.to_string(),
            })?;
        for (_, r) in rx.iter() {
            r.map_err(|e| Error::Gpu {
                label: "map readback buffer".into(),
                message: e.to_string(),
            })?;
        }
        self.check("submit")?;
        let mut out = Vec::with_capacity(staging.len());
        for (s, len) in &staging {
            let view = s.slice(..).get_mapped_range().map_err(|e| Error::Gpu {
                label: "readback".into(),
                message: e.to_string(),
            })?;
            let all: &[T] = bytemuck::cast_slice(&view[..]);
            out.push(all[..*len].to_vec());
            drop(view);
            s.unmap();
        }
        Ok(out)
    }

    /// Submits `encoder` and waits for it (no read-back).
    pub fn submit_and_wait(&self, encoder: wgpu::CommandEncoder) -> Result<()> {
        self.queue.submit(Some(encoder.finish()));
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu {
                label: "poll".into(),
                message: e.to_string(),
            })?;
        self.check("submit")
    }
}

/// Errors unless `features` (an adapter's or a device's) contain SHADER_F16,
/// naming `adapter`, the feature and `what` needed it.
pub fn require_f16(adapter: &str, features: wgpu::Features, what: &str) -> Result<()> {
    if features.contains(wgpu::Features::SHADER_F16) {
        return Ok(());
    }
    Err(Error::MissingFeature {
        adapter: adapter.to_string(),
        feature: "SHADER_F16 (WGSL `enable f16`)",
        needed_for: what.to_string(),
        hint: "use --precision f32 on this adapter, or another adapter (--adapter)",
    })
}

/// Splits `n` workgroups over x and y so neither exceeds the per-dimension limit.
/// Shaders recover the linear index as `wid.x + wid.y * nwg.x`.
pub fn grid_1d(n: u32, max_per_dim: u32) -> [u32; 3] {
    if n <= max_per_dim {
        [n.max(1), 1, 1]
    } else {
        let y = n.div_ceil(max_per_dim);
        [n.div_ceil(y), y, 1]
    }
}
