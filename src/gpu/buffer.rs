//! Pooled storage buffers: intermediate activations are recycled across kernels
//! and batches instead of being allocated anew for every forward pass.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Buffers grouped by size class: a power of two (at least 256 bytes) up to 1 MiB,
/// whole MiBs above that, so large tensors waste little.
#[derive(Clone)]
pub struct BufferPool {
    device: wgpu::Device,
    free: Arc<Mutex<HashMap<u64, Vec<wgpu::Buffer>>>>,
}

/// A storage buffer that goes back to its pool when dropped.
pub struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    class: u64,
    free: Arc<Mutex<HashMap<u64, Vec<wgpu::Buffer>>>>,
}

impl PooledBuffer {
    pub fn buffer(&self) -> &wgpu::Buffer {
        // Invariant: `buffer` is Some until drop.
        self.buffer.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let (Some(b), Ok(mut free)) = (self.buffer.take(), self.free.lock()) {
            free.entry(self.class).or_default().push(b);
        }
    }
}

impl BufferPool {
    pub fn new(device: wgpu::Device) -> Self {
        Self {
            device,
            free: Arc::default(),
        }
    }

    /// A storage buffer of at least `bytes` bytes (contents undefined).
    pub fn get(&self, bytes: u64) -> PooledBuffer {
        const MIB: u64 = 1 << 20;
        let class = if bytes <= MIB {
            bytes.max(256).next_power_of_two()
        } else {
            bytes.div_ceil(MIB) * MIB
        };
        let reused = self
            .free
            .lock()
            .ok()
            .and_then(|mut f| f.get_mut(&class).and_then(|v| v.pop()));
        let buffer = reused.unwrap_or_else(|| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("pooled"),
                size: class,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        PooledBuffer {
            buffer: Some(buffer),
            class,
            free: self.free.clone(),
        }
    }

    /// Frees every idle buffer.
    pub fn clear(&self) {
        if let Ok(mut f) = self.free.lock() {
            f.clear();
        }
    }
}
