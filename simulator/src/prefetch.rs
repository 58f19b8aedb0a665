//! A hint to the CPU to start loading memory that will be read soon. At 10^5 viewers the
//! simulation's working set is a hundred times the last-level cache, and an event spends
//! much of its time waiting on its node's state: started early, those loads overlap the
//! work of the event before.

/// Asks for every cache line of `value` to be loaded. Never faults and changes nothing but
/// timing, so results cannot depend on it.
#[inline]
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = value as *const T as *const i8;
        for offset in (0..std::mem::size_of::<T>()).step_by(64) {
            // SAFETY: a prefetch is only a hint: it reads nothing and never faults.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
