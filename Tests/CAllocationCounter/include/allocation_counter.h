/*
 * Counts the heap allocations of the test process (ForwardMemoryTests): the test bundle
 * defines malloc and its relatives, forwarding each to glibc's own implementation
 * (__libc_malloc, ...), so every allocation of the process, the Swift runtime's and the
 * plugins' included, passes through here. Not built under a sanitizer (the sanitizer owns
 * malloc then): seqcell_alloc_counter_active() returns 0 and the tests say they skipped.
 */
#ifndef SEQCELL_ALLOCATION_COUNTER_H
#define SEQCELL_ALLOCATION_COUNTER_H

#include <stdint.h>

/* 1 when this file's malloc is the process's malloc. */
int seqcell_alloc_counter_active(void);
/* Allocation calls (malloc, calloc, realloc, posix_memalign, aligned_alloc, memalign,
 * valloc, pvalloc) since the process started. */
uint64_t seqcell_alloc_count(void);
/* Bytes allocated and not yet freed (malloc_usable_size of each block). */
int64_t seqcell_alloc_current_bytes(void);
/* The highest value of current bytes since the last reset. */
int64_t seqcell_alloc_peak_bytes(void);
/* Sets the peak to the current value. */
void seqcell_alloc_reset_peak(void);

#endif
