#include <stdlib.h>
#include "seqcell_malloc.h"
#if defined(__GLIBC__)
#include <malloc.h>
#endif

int sc_keep_freed_memory(int mmap_threshold, int trim_threshold) {
#if defined(__GLIBC__)
    /* Setting either fixes it (glibc then stops adjusting the mmap threshold dynamically). */
    return mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 && mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1;
#else
    (void)mmap_threshold;
    (void)trim_threshold;
    return 0;
#endif
}
