//! The process's allocator. A 10,000-Service cluster is parsed and
//! compiled on several threads, interleaving a million long-lived
//! allocations with ten million short ones; what the allocator keeps after
//! that is a large part of RSS. jemalloc (the default `jemalloc` feature)
//! hands freed pages back on its own; glibc's malloc needs `malloc_trim`.

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at its first allocation (`_RJEM_MALLOC_CONF`
/// in the environment still overrides them):
/// - `narenas:2`: two arenas, not four per core, so freed memory is not
///   spread over arenas that other threads never reuse;
/// - `dirty_decay_ms:1000`, `muzzy_decay_ms:0`: pages freed for a second
///   go back to the kernel (after a reload, RSS returns to one picture);
/// - `background_thread`: a jemalloc thread does that, so an idle process
///   shrinks too.
#[cfg(feature = "jemalloc")]
#[used]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &u8 =
    &b"narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0,background_thread:true\0"[0];

/// Hands the allocator's free pages back to the kernel now, after a load
/// that parsed a whole cluster. jemalloc does it by itself within a second
/// (see [`MALLOC_CONF`]); glibc keeps what threads freed in their arenas.
pub fn release_free_memory() {
    #[cfg(all(not(feature = "jemalloc"), target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
