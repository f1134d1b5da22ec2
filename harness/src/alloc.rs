//! Allocator tuning. A training step allocates and frees hundreds of MB of activations; glibc
//! returns large blocks to the OS at once (mmap/munmap), so every step re-faults and zeroes them
//! (~20% of a step here). Raising the mmap and trim thresholds keeps that memory in the heap for
//! reuse. (mimalloc with purging off was as fast, but grew without bound under candle's conv2d.)

/// Call first thing in `main`.
pub fn keep_freed_memory() {
    #[cfg(target_os = "linux")]
    // SAFETY: mallopt only sets two glibc allocator thresholds; it is called first thing in
    // `main`, before any other thread exists or allocates.
    unsafe {
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_THRESHOLD: i32 = -3;
        libc::mallopt(M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(M_TRIM_THRESHOLD, i32::MAX);
    }
}
