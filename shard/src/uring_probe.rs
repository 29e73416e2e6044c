//! Is io_uring usable by this process? glommio panics deep inside a `Once`
//! with a misleading "kernel should be at least 5.8" when it is not (seccomp
//! filters, `kernel.io_uring_disabled`, old kernels), so ask the kernel first
//! and turn the answer into an error a person can act on.

use std::fmt;

/// io_uring cannot be used here; the message says why and what to do.
#[derive(Debug)]
pub struct UringUnavailable {
    reason: String,
}

impl fmt::Display for UringUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "io_uring is not available to this process ({}); chronik-ingest needs Linux 5.8+ \
             with io_uring enabled (check sysctl kernel.io_uring_disabled and any seccomp \
             profile of the container)",
            self.reason
        )
    }
}

impl std::error::Error for UringUnavailable {}

/// Creates and closes a one-entry ring. Cheap (one syscall pair).
pub fn probe_io_uring() -> Result<(), UringUnavailable> {
    if let Ok(text) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        if text.trim() == "2" {
            return Err(UringUnavailable {
                reason: "sysctl kernel.io_uring_disabled = 2".into(),
            });
        }
    }
    // struct io_uring_params is 120 bytes on every architecture; the kernel
    // only reads `flags`/`sq_thread_*`/`wq_fd` (all zero here) and writes the
    // offsets back into the same buffer.
    let mut params = [0u32; 30];
    // SAFETY: io_uring_setup(2) takes an entry count and a pointer to a
    // writable io_uring_params; `params` is a live, zeroed, correctly sized
    // and aligned buffer for the duration of the call, and the returned fd
    // (if any) is closed below and never used otherwise.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        return Err(UringUnavailable {
            reason: format!("io_uring_setup failed: {err}"),
        });
    }
    // SAFETY: `fd` was just returned to us by the kernel and is owned by
    // nothing else; closing it once is sound.
    unsafe {
        libc::close(fd as libc::c_int);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn probe_agrees_with_this_machine() {
        // The CI machine runs with io_uring; the probe must not false-alarm.
        super::probe_io_uring().unwrap();
    }
}
