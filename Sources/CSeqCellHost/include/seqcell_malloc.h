#ifndef SEQCELL_MALLOC_H
#define SEQCELL_MALLOC_H

/* Keeps freed memory in the process (glibc mallopt): blocks below `mmap_threshold` bytes come
   from the heap instead of their own mmap, and the heap's free top is returned to the OS only
   above `trim_threshold` bytes. A training step allocates and frees multi-MB buffers; with
   glibc's defaults (dynamic threshold from 128 KiB, 32 MiB at most) each is mmap'd, faulted in
   page by page and unmapped again every step. Called by the seqcell commands that train, never
   by the library. Returns 1 when both settings took, 0 otherwise (0 off glibc). */
int sc_keep_freed_memory(int mmap_threshold, int trim_threshold);

#endif
