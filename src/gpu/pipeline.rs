//! Compute pipelines with explicit bind group layouts, built once per
//! (kernel, specialisation constants) and cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::shader;
use crate::error::{Error, Result};

/// The kind of one binding, in binding order (inputs → outputs → params).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Binding {
    /// `var<storage, read>`
    Read,
    /// `var<storage, read_write>`
    ReadWrite,
    /// `var<uniform>`
    Uniform,
}

/// A kernel: a shader file in `shaders/`, an entry point and its bindings.
#[derive(Debug, Clone, Copy)]
pub struct KernelSpec {
    /// File name in `shaders/`, e.g. `"matmul.wgsl"`.
    pub shader: &'static str,
    pub entry: &'static str,
    pub bindings: &'static [Binding],
}

/// A built pipeline and its bind group layout.
pub struct Pipeline {
    pub label: String,
    pub pipeline: wgpu::ComputePipeline,
    pub bind_group_layout: wgpu::BindGroupLayout,
}

type Key = (&'static str, &'static str, Vec<(String, u64)>);

#[derive(Default)]
pub(crate) struct PipelineCache {
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<Key, Arc<Pipeline>>>,
}

impl PipelineCache {
    pub(crate) fn get(
        &self,
        device: &wgpu::Device,
        spec: &KernelSpec,
        constants: &[(&str, f64)],
    ) -> Result<Arc<Pipeline>> {
        let key: Key = (
            spec.shader,
            spec.entry,
            constants
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_bits()))
                .collect(),
        );
        let poisoned = || Error::Gpu {
            label: spec.shader.to_string(),
            message: "pipeline cache lock poisoned".into(),
        };
        if let Some(p) = self.pipelines.lock().map_err(|_| poisoned())?.get(&key) {
            return Ok(p.clone());
        }
        let module = {
            let mut modules = self.modules.lock().map_err(|_| poisoned())?;
            match modules.get(spec.shader) {
                Some(m) => m.clone(),
                None => {
                    let source = shader::source(spec.shader)?;
                    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
                    let m = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(spec.shader),
                        source: wgpu::ShaderSource::Wgsl(source.into()),
                    });
                    if let Some(e) = pollster::block_on(scope.pop()) {
                        return Err(Error::Shader {
                            label: spec.shader.to_string(),
                            message: e.to_string(),
                        });
                    }
                    modules.insert(spec.shader, m.clone());
                    m
                }
            }
        };
        let label = format!("{}:{}", spec.shader, spec.entry);
        let entries: Vec<wgpu::BindGroupLayoutEntry> = spec
            .bindings
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: match b {
                    Binding::Read => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage { read_only: true },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    Binding::ReadWrite => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage { read_only: false },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    Binding::Uniform => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                },
                count: None,
            })
            .collect();
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let bind_group_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(&label),
            entries: &entries,
        });
        let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&label),
            bind_group_layouts: &[Some(&bind_group_layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: Some(&layout),
            module: &module,
            entry_point: Some(spec.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants,
                // Every shader writes workgroup memory before reading it; zero-filling
                // makes llvmpipe's GL path compile for minutes.
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Shader {
                label,
                message: e.to_string(),
            });
        }
        let p = Arc::new(Pipeline {
            label,
            pipeline,
            bind_group_layout,
        });
        self.pipelines
            .lock()
            .map_err(|_| poisoned())?
            .insert(key, p.clone());
        Ok(p)
    }
}
