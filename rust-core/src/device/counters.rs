//! What the engine asks of the GPU, counted as it happens: kernel dispatches (every CubeCL
//! launch, burn's and ours, seen by a launch observer installed when the GPU device opens),
//! bytes uploaded to the device and bytes read back from it (counted where the engine moves
//! them: [`from_host`](super::from_host), [`to_host`](super::to_host) and the weight upload),
//! and the bytes the device holds. Counted per thread — kernels are launched and buffers
//! copied on the thread that runs the pass (a generation runs on its caller's), so work on
//! other threads (another conversation, a test beside this one) does not blur the count:
//! take a [`snapshot`] on the thread before and after the work and subtract.

use std::cell::Cell;
use std::ops::{AddAssign, Sub};

use burn::tensor::Device;

thread_local! {
    static COUNTED: Cell<GpuCounters> = const { Cell::new(GpuCounters::ZERO) };
}

fn count(more: GpuCounters) {
    COUNTED.with(|c| {
        let mut total = c.get();
        total += more;
        c.set(total);
    });
}

/// This thread's totals since it started (or their difference between two snapshots).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GpuCounters {
    /// Compute dispatches (kernel launches).
    pub dispatches: u64,
    /// Bytes written from host memory into device buffers.
    pub bytes_uploaded: u64,
    /// Bytes copied from device buffers to host memory.
    pub bytes_read_back: u64,
}

impl GpuCounters {
    const ZERO: GpuCounters = GpuCounters {
        dispatches: 0,
        bytes_uploaded: 0,
        bytes_read_back: 0,
    };
}

impl Sub for GpuCounters {
    type Output = GpuCounters;
    fn sub(self, earlier: GpuCounters) -> GpuCounters {
        GpuCounters {
            dispatches: self.dispatches - earlier.dispatches,
            bytes_uploaded: self.bytes_uploaded - earlier.bytes_uploaded,
            bytes_read_back: self.bytes_read_back - earlier.bytes_read_back,
        }
    }
}

impl AddAssign for GpuCounters {
    fn add_assign(&mut self, more: GpuCounters) {
        self.dispatches += more.dispatches;
        self.bytes_uploaded += more.bytes_uploaded;
        self.bytes_read_back += more.bytes_read_back;
    }
}

/// This thread's totals so far.
pub fn snapshot() -> GpuCounters {
    COUNTED.with(Cell::get)
}

/// `bytes` went from the host to `device` (nothing is counted for the CPU backend, whose
/// tensors are host memory).
pub fn count_upload(device: &Device, bytes: usize) {
    if !super::is_host(device) {
        count_gpu_upload(bytes);
    }
}

/// `bytes` went from the host to the GPU (for kernels that write a buffer themselves).
pub fn count_gpu_upload(bytes: usize) {
    count(GpuCounters {
        bytes_uploaded: bytes as u64,
        ..GpuCounters::ZERO
    });
}

/// `bytes` came back from `device` to the host.
pub fn count_read_back(device: &Device, bytes: usize) {
    if !super::is_host(device) {
        count(GpuCounters {
            bytes_read_back: bytes as u64,
            ..GpuCounters::ZERO
        });
    }
}

/// Counts every kernel launch of the process from now on, on the thread that issues it
/// (called once, when the GPU opens). The observer costs a launch a read lock and an add.
#[cfg(feature = "gpu")]
pub(super) fn observe_launches() {
    use cubecl::logging::{LaunchObservation, LaunchObserver};

    struct CountLaunches;
    impl LaunchObserver for CountLaunches {
        fn launched(&self, _kernel: &'static str) {
            count(GpuCounters {
                dispatches: 1,
                ..GpuCounters::ZERO
            });
        }
    }
    // Installed for the life of the process: the guard would uninstall it when dropped.
    std::mem::forget(LaunchObservation::new(std::sync::Arc::new(CountLaunches)));
}

/// Bytes the GPU device holds for this process (weights, KV cache, scratch and the runtime's
/// pools, as CubeCL's memory manager reserved them); `None` for a device that is not a GPU.
pub fn resident_bytes(device: &Device) -> Option<u64> {
    #[cfg(feature = "gpu")]
    if let burn::backend::DispatchDevice::Cube(cube) = device.as_dispatch() {
        let report = cube.client().memory_report(cubecl::MemoryScope::Device);
        return Some(
            report
                .streams
                .iter()
                .map(|stream| {
                    stream.pools.usage().bytes_reserved
                        + stream
                            .auxiliary
                            .iter()
                            .map(|aux| aux.pools.usage().bytes_reserved)
                            .sum::<u64>()
                })
                .sum(),
        );
    }
    let _ = device;
    None
}
