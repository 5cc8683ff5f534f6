//! Tuning of glibc's allocator for the calling process (`mallopt`).

/// Keeps up to `trim` bytes of freed memory at the top of each heap instead of returning it
/// to the kernel, and serves requests under `mmap` bytes from the heaps instead of a
/// mapping of their own. Returns false where the C library refused (or is not glibc).
///
/// With glibc's defaults a process that streams data through buffers of a few hundred KiB
/// maps or trims and then faults and zeroes the same memory again for every buffer.
pub fn keep_freed_memory(trim: usize, mmap: usize) -> bool {
    let (Ok(trim), Ok(mmap)) = (i32::try_from(trim), i32::try_from(mmap)) else {
        return false;
    };
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallopt only changes the allocator's parameters; it takes plain integers
        // and is safe to call at any time (it takes the arenas' locks itself).
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, trim) == 1
                && libc::mallopt(libc::M_MMAP_THRESHOLD, mmap) == 1
        }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        let _ = (trim, mmap);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::keep_freed_memory;

    #[test]
    fn glibc_takes_the_thresholds_and_sizes_past_its_range_are_refused() {
        assert_eq!(
            keep_freed_memory(8 << 20, 4 << 20),
            cfg!(target_env = "gnu")
        );
        assert!(!keep_freed_memory(usize::MAX, 4 << 20));
        // The allocator still works with them.
        let v = vec![7u8; 1 << 20];
        assert_eq!(v.iter().map(|&b| usize::from(b)).sum::<usize>(), 7 << 20);
    }
}
