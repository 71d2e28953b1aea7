/* Builds kernels_body.h twice (baseline x86-64 and AVX2+FMA) and picks one at run time.
 *
 * Code generation is set here, not by compiler flags (a package's unsafeFlags break its
 * SwiftPM consumers): multiplies and adds fuse into FMAs wherever the target has them
 * (the pragma is -ffp-contract=fast for this file), and the ISA is a per-function target
 * attribute (SCK_ATTR). SwiftPM compiles C at -O2 in release. No libm call is made here,
 * so errno handling does not matter. NaN stays NaN in every kernel: no fast-math
 * assumption is made, and the clamps in kernels_body.h let NaN through. */
#include "seqcell_kernels.h"

#pragma clang diagnostic ignored "-Wpsabi"
#pragma clang fp contract(fast)

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define SCK_X86 1
#endif

#define SCK_ATTR
#define SCK_NAME(x) base_##x
#define SCK_ISA_VALUE SCK_ISA_BASELINE
#include "kernels_body.h"
#undef SCK_ATTR
#undef SCK_NAME
#undef SCK_ISA_VALUE

#if SCK_X86
#define SCK_ATTR __attribute__((target("avx2,fma")))
#define SCK_NAME(x) avx2_##x
#define SCK_ISA_VALUE SCK_ISA_AVX2
#include "kernels_body.h"
#undef SCK_ATTR
#undef SCK_NAME
#undef SCK_ISA_VALUE

static int cpu_has_avx2_fma(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    if (!(fma && osxsave && avx)) return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 6) != 6) return 0; /* the OS saves XMM and YMM state */
    if (__get_cpuid_max(0, 0) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    return (b >> 5) & 1; /* AVX2 */
}
#endif

const sck_table *sck_kernels(int32_t isa) {
    switch (isa) {
    case SCK_ISA_BASELINE: return &base_table;
#if SCK_X86
    case SCK_ISA_AVX2: return cpu_has_avx2_fma() ? &avx2_table : NULL;
#endif
    default: return NULL;
    }
}

static const sck_table *best_table;

const sck_table *sck_best(void) {
    const sck_table *t = __atomic_load_n(&best_table, __ATOMIC_ACQUIRE);
    if (t) return t;
    const char *force = getenv("SEQCELL_KERNEL_ISA");
    t = NULL;
    if (!(force && strcmp(force, "baseline") == 0)) t = sck_kernels(SCK_ISA_AVX2);
    if (!t) t = &base_table;
    __atomic_store_n(&best_table, t, __ATOMIC_RELEASE); /* racing initialisers agree */
    return t;
}

int64_t sck_packed_floats(int64_t n, int64_t k) { return ((n + 15) / 16) * 16 * k; }

int64_t sck_packed_blocks(int64_t n) { return (n + 15) / 16; }

void sck_pack_strided(const float *w, int64_t rs, int64_t cs, int64_t n, int64_t k, float *packed) {
    sck_pack_strided_blocks(w, rs, cs, n, k, packed, 0, (n + 15) / 16);
}

void sck_pack_strided_blocks(const float *w, int64_t rs, int64_t cs, int64_t n, int64_t k, float *packed,
                             int64_t blk_begin, int64_t blk_end) {
    for (int64_t blk = blk_begin; blk < blk_end; blk++) {
        float *p = packed + blk * k * 16;
        int64_t cnt = n - blk * 16 < 16 ? n - blk * 16 : 16;
        if (cs == 1) {
            /* rows of W are contiguous: read each row once, scatter into the panel */
            for (int64_t j = 0; j < cnt; j++) {
                const float *row = w + (blk * 16 + j) * rs;
                for (int64_t kk = 0; kk < k; kk++) p[kk * 16 + j] = row[kk];
            }
        } else {
            for (int64_t kk = 0; kk < k; kk++)
                for (int64_t j = 0; j < cnt; j++) p[kk * 16 + j] = w[(blk * 16 + j) * rs + kk * cs];
        }
        for (int64_t kk = 0; kk < k; kk++)
            for (int64_t j = cnt; j < 16; j++) p[kk * 16 + j] = 0.0f;
    }
}

void sck_pack_wt(const float *w, int64_t ldw, int64_t n, int64_t k, float *packed) {
    sck_pack_strided(w, ldw, 1, n, k, packed);
}
