//! How the process uses glibc's allocator: a small, steady heap on small devices.

/// Allocations from this size on are mappings of their own, returned to the kernel when freed
/// ([`keep_small`]). A buffer filled and freed over and over should stay below it: each mapping
/// is faulted in page by page and zeroed by the kernel again.
pub const MMAP_THRESHOLD: usize = 256 * 1024;

/// glibc raises its mmap threshold after every large free, so the ~19 MiB an argon2
/// verification borrows would afterwards come from the heap and stay resident for good. A fixed
/// threshold returns such blocks to the kernel; two arenas keep threads from multiplying heaps.
/// Call before any thread starts.
#[allow(unsafe_code)]
pub fn keep_small() {
    // SAFETY: mallopt only sets allocator parameters; it is called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Gives free heap pages back to the kernel (for measurements of what is really held).
#[allow(unsafe_code)]
pub fn trim() {
    // SAFETY: malloc_trim only releases free memory held by the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}
