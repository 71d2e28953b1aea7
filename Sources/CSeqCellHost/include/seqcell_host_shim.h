#ifndef SEQCELL_HOST_SHIM_H
#define SEQCELL_HOST_SHIM_H
#include <stddef.h>

/* The path of the loaded file that defines `address` (dladdr, a GNU extension glibc
   declares only under _GNU_SOURCE). Returns 1 and fills `path`, or 0 if unknown. */
int sc_file_defining(const void *address, char *path, size_t capacity);

/* Asks the kernel to SIGKILL this process when its parent dies (prctl PR_SET_PDEATHSIG;
   prctl is variadic, so Swift cannot call it). Returns 1 when armed and the parent is still
   `parent_pid`, 0 when the parent is already gone, -1 when prctl failed. Linux only. */
int sc_die_with_parent(int parent_pid);

/* A spin-wait hint (x86 PAUSE) for the host's worker pool. */
static inline void seqcell_spin_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

#endif
