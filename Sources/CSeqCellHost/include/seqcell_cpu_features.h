#ifndef SEQCELL_CPU_FEATURES_H
#define SEQCELL_CPU_FEATURES_H
#include <stdint.h>

/* What this CPU and OS support, for reporting (`seqcell bench`, `seqcell plugins`): the same
   CPUID/XGETBV test as the built-in cells' kernels (Sources/CSeqCellKernels/kernels.c,
   sck_cpu_features; the two must agree, KernelISATests checks it), kept apart because the
   host never links the kernels. Bits: 1 AVX2+FMA, 2 AVX-512 F/BW/VL/DQ with the OS saving
   ZMM and mask state, 4 AVX512_BF16, 8 AVX512_VNNI. 0 off x86. */
uint32_t sc_cpu_features(void);

#endif
