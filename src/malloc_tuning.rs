//! glibc malloc settings for a broker that moves megabyte buffers.
//!
//! Fetch reads and responses are ~1 MiB each. glibc serves allocations at or
//! above its mmap threshold with a fresh `mmap` and returns them with
//! `munmap`, and its "dynamic" threshold only rises *above* a freed size, so
//! a steady stream of equal 1 MiB buffers is mmapped every time: every page
//! faults in and is zeroed by the kernel on first touch. `cargo bench
//! --bench fetch` measured a 1 MiB read-and-encode at ~1 ms, a quarter of it
//! in page faults. Raising the thresholds keeps such buffers in the heap,
//! where freed memory is reused warm.

/// Serve allocations below this from the heap, not from mmap.
const MMAP_THRESHOLD: i32 = 32 << 20;
/// Give freed heap memory back to the kernel only beyond this much.
const TRIM_THRESHOLD: i32 = 128 << 20;

/// Applies the settings to this process (the binary calls it at start;
/// embedders may). A no-op where the C library is not glibc.
pub fn tune_malloc_for_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it takes plain
    // integers, touches no memory of ours, and is safe to call at any time
    // (glibc serialises it against allocations internally).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}
