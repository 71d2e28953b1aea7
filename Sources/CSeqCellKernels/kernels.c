/* Builds kernels_body.h three times (x86-64 baseline, AVX2+FMA, AVX-512 F/BW/VL) and picks
 * one at run time from CPUID and XGETBV (the OS must save the YMM / ZMM and mask state).
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
#define SCK_VW 8
#include "kernels_body.h"
#undef SCK_ATTR
#undef SCK_NAME
#undef SCK_ISA_VALUE
#undef SCK_VW

#if SCK_X86
#define SCK_ATTR __attribute__((target("avx2,fma")))
#define SCK_NAME(x) avx2_##x
#define SCK_ISA_VALUE SCK_ISA_AVX2
#define SCK_VW 8
#include "kernels_body.h"
#undef SCK_ATTR
#undef SCK_NAME
#undef SCK_ISA_VALUE
#undef SCK_VW

/* evex512: clang 18+ splits 512-bit vector support from the AVX-512 feature bits. */
#define SCK_ATTR __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,evex512,avx2,fma")))
#define SCK_NAME(x) avx512_##x
#define SCK_ISA_VALUE SCK_ISA_AVX512
#define SCK_VW 16
#include "kernels_body.h"
#undef SCK_ATTR
#undef SCK_NAME
#undef SCK_ISA_VALUE
#undef SCK_VW

static uint32_t cpu_features_detect(void) {
    unsigned a, b, c, d;
    uint32_t f = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    if (!(osxsave && avx)) return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 6) != 6) return 0; /* the OS saves XMM and YMM state */
    if (__get_cpuid_max(0, 0) < 7) return 0;
    unsigned max7, b7, c7, d7;
    __cpuid_count(7, 0, max7, b7, c7, d7);
    if (fma && ((b7 >> 5) & 1)) f |= SCK_CPU_AVX2_FMA;
    /* AVX-512 needs the OS to save opmask, ZMM_Hi256 and Hi16_ZMM state too (XCR0 bits 5-7). */
    if ((lo & 0xe6) != 0xe6) return f;
    int avx512f = (b7 >> 16) & 1, avx512dq = (b7 >> 17) & 1, avx512bw = (b7 >> 30) & 1, avx512vl = (b7 >> 31) & 1;
    if (!avx512f) return f;
    if ((f & SCK_CPU_AVX2_FMA) && avx512bw && avx512vl && avx512dq) f |= SCK_CPU_AVX512;
    if ((c7 >> 11) & 1) f |= SCK_CPU_AVX512_VNNI;
    if (max7 >= 1) {
        unsigned a1, b1, c1, d1;
        __cpuid_count(7, 1, a1, b1, c1, d1);
        if ((a1 >> 5) & 1) f |= SCK_CPU_AVX512_BF16;
    }
    return f;
}
#else
static uint32_t cpu_features_detect(void) { return 0; }
#endif

static uint32_t cpu_features_cache; /* bit 31 set once detected */

uint32_t sck_cpu_features(void) {
    uint32_t f = __atomic_load_n(&cpu_features_cache, __ATOMIC_ACQUIRE);
    if (f & 0x80000000u) return f & 0x7fffffffu;
    f = cpu_features_detect();
    __atomic_store_n(&cpu_features_cache, f | 0x80000000u, __ATOMIC_RELEASE);
    return f;
}

const sck_table *sck_kernels(int32_t isa) {
    switch (isa) {
    case SCK_ISA_BASELINE: return &base_table;
#if SCK_X86
    case SCK_ISA_AVX2: return (sck_cpu_features() & SCK_CPU_AVX2_FMA) ? &avx2_table : NULL;
    case SCK_ISA_AVX512: return (sck_cpu_features() & SCK_CPU_AVX512) ? &avx512_table : NULL;
#endif
    default: return NULL;
    }
}

int32_t sck_isa_named(const char *name) {
    if (!name) return -1;
    if (strcmp(name, "baseline") == 0) return SCK_ISA_BASELINE;
    if (strcmp(name, "avx2") == 0) return SCK_ISA_AVX2;
    if (strcmp(name, "avx512") == 0) return SCK_ISA_AVX512;
    return -1;
}

const char *sck_isa_name(int32_t isa) {
    switch (isa) {
    case SCK_ISA_BASELINE: return "baseline";
    case SCK_ISA_AVX2: return "avx2";
    case SCK_ISA_AVX512: return "avx512";
    default: return "unknown";
    }
}

int32_t sck_isa_limit(void) {
    const char *force = getenv("SEQCELL_ISA");
    if (!force || !*force) force = getenv("SEQCELL_KERNEL_ISA"); /* the older name */
    int32_t lim = sck_isa_named(force);
    return lim < 0 ? SCK_ISA_AVX512 : lim;
}

static const sck_table *best_table;

const sck_table *sck_best(void) {
    const sck_table *t = __atomic_load_n(&best_table, __ATOMIC_ACQUIRE);
    if (t) return t;
    t = NULL;
    for (int32_t isa = sck_isa_limit(); isa > SCK_ISA_BASELINE && !t; isa--) t = sck_kernels(isa);
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
