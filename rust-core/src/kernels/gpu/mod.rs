//! GPU kernels (CubeCL on burn-wgpu).
