#include "seqcell_cpu_features.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

uint32_t sc_cpu_features(void) {
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
    if (fma && ((b7 >> 5) & 1)) f |= 1u;
    if ((lo & 0xe6) != 0xe6) return f; /* opmask, ZMM_Hi256, Hi16_ZMM state */
    if (!((b7 >> 16) & 1)) return f;   /* AVX512F */
    int dq = (b7 >> 17) & 1, bw = (b7 >> 30) & 1, vl = (b7 >> 31) & 1;
    if ((f & 1u) && bw && vl && dq) f |= 2u;
    if ((c7 >> 11) & 1) f |= 8u; /* AVX512_VNNI */
    if (max7 >= 1) {
        unsigned a1, b1, c1, d1;
        __cpuid_count(7, 1, a1, b1, c1, d1);
        if ((a1 >> 5) & 1) f |= 4u; /* AVX512_BF16 */
    }
    return f;
}
#else
uint32_t sc_cpu_features(void) { return 0; }
#endif
