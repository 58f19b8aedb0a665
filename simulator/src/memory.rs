//! How a simulation process holds its memory.

/// mimalloc's `mi_option_purge_delay`: its place in the C enum `mi_option_e` (the same in
/// mimalloc v2 and v3; `libmimalloc-sys` names only the options before it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps the memory a simulation frees for its next allocations instead of handing it
/// back to the kernel. mimalloc returns freed pages 10 ms after they empty by default; a
/// simulation reallocates them at once (the tracker's solve every 2 simulated seconds
/// builds arrays of megabytes), and the kernel zeroes each page again on its next touch.
/// flash-crowd-10k (10,000 viewers, 60 s): the kernel's share of the run 3.8% -> 2.3%,
/// over 120 s minor page faults 37,000 -> 350, peak RSS 3% higher. A no-op unless
/// mimalloc is the global allocator (as in `meshtv` and the simulator's examples).
pub fn keep_freed_memory() {
    // SAFETY: sets one integer option; mimalloc reads options on every purge decision,
    // and -1 means "never purge" in both major versions.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}
