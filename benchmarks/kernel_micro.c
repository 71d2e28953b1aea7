/* Times the plugins' vector kernels on one core, per ISA path this CPU runs: the packed
 * recurrent product at the benchmark configurations' step shapes, one thread's share of A's
 * and E's steps and input projection panels at 2 threads, and the fused gate rows.
 * Minimum over many single calls of per-thread CPU time (CLOCK_THREAD_CPUTIME_ID), so other
 * load on a shared machine (time slices given to other processes) does not count.
 *
 *   clang -O2 -ISources/CSeqCellKernels/include Sources/CSeqCellKernels/kernels.c \
 *         benchmarks/kernel_micro.c -lm -o /tmp/kernel_micro && /tmp/kernel_micro
 *   KERNEL_MICRO_ISA=avx512 /tmp/kernel_micro      # one ISA path only
 */
#include "seqcell_kernels.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static float *randoms(int64_t n, unsigned seed) {
    float *p = malloc(sizeof(float) * n);
    srand(seed);
    for (int64_t i = 0; i < n; i++) p[i] = (float)rand() / (float)RAND_MAX * 2.0f - 1.0f;
    return p;
}

/* KERNEL_MICRO_ISA=avx512 (or avx2, baseline) times that path only. */
static int wanted(const char *name) {
    const char *only = getenv("KERNEL_MICRO_ISA");
    return !only || !*only || strcmp(only, name) == 0;
}

int main(void) {
    const int shapes[][4] = { /* m, n, k, config */
        {32, 1024, 256, 'A'}, {16, 1024, 256, 'B'}, {64, 1536, 512, 'C'}, {1, 128, 128, 'D'}, {64, 4096, 1024, 'E'}};
    const char *names[] = {"baseline", "avx2", "avx512"};
    printf("packed recurrent product y[m,n] = x[m,k] W^T, one core, GFLOP/s (min over calls)\n");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        float *w = randoms((int64_t)n * k, 1), *x = randoms((int64_t)m * k, 2), *y = randoms((int64_t)m * n, 3);
        float *p = malloc(sizeof(float) * sck_packed_floats(n, k));
        sck_pack_wt(w, k, n, k, p);
        printf("  %c m=%-3d n=%-5d k=%-5d", shapes[s][3], m, n, k);
        for (int isa = 0; isa < 3; isa++) {
            const sck_table *t = sck_kernels(isa);
            if (!wanted(names[isa])) continue;
            if (!t) { printf("  %s: skipped (CPU cannot run it)", names[isa]); continue; }
            /* Enough calls per timing that the clock's own cost (a system call) is < 1%. */
            int reps = 1 + (int)(4e6 / (2.0 * m * n * k));
            double best = 1e9;
            for (int r = 0; r < 300; r++) {
                double t0 = now();
                for (int i = 0; i < reps; i++) t->gemm_packed(x, m, k, p, n, k, y, n, 0);
                double dt = (now() - t0) / reps;
                if (dt < best) best = dt;
            }
            printf("  %s %6.1f", names[isa], 2.0 * m * n * k / best / 1e9);
        }
        printf("\n");
        free(w); free(x); free(y); free(p);
    }
    /* What one thread runs with two threads: a step (or a chunk of the input projection)
       split by hidden units in chunks of `cu` units, each chunk one call per gate (the
       chunk's columns in each of the 4 gate blocks), this thread taking every other chunk
       (RecurrentProduct.applyUnits; E: 8 chunks of 128 units, A: 2 of 128). Projections
       accumulate into the ring's bias rows (256-row panels). */
    const int split[][6] = { /* m, H, k, chunk units, accumulate, config */
        {32, 256, 256, 128, 0, 'A'}, {256, 256, 256, 128, 1, 'A'},
        {64, 1024, 1024, 128, 0, 'E'}, {256, 1024, 1024, 128, 1, 'E'}};
    printf("one thread's half of a 2-thread product split by units (n = 4H, thread's n = 2H), GFLOP/s\n");
    for (size_t s = 0; s < sizeof split / sizeof split[0]; s++) {
        int m = split[s][0], Hs = split[s][1], k = split[s][2], cu = split[s][3], acc = split[s][4], n = 4 * Hs;
        float *w = randoms((int64_t)n * k, 1), *x = randoms((int64_t)m * k, 2), *y = randoms((int64_t)m * n, 3);
        float *p = malloc(sizeof(float) * sck_packed_floats(n, k));
        sck_pack_wt(w, k, n, k, p);
        printf("  %c%s m=%-3d n=%-5d k=%-5d", split[s][5], acc ? " proj" : " step", m, n / 2, k);
        for (int isa = 0; isa < 3; isa++) {
            const sck_table *t = sck_kernels(isa);
            if (!wanted(names[isa])) continue;
            if (!t) { printf("  %s: skipped (CPU cannot run it)", names[isa]); continue; }
            double flops = 2.0 * m * (n / 2) * k, best = 1e9;
            int reps = 1 + (int)(4e6 / flops);
            for (int r = 0; r < (flops > 1e8 ? 60 : 300); r++) {
                double t0 = now();
                for (int i = 0; i < reps; i++)
                    for (int c = 0; c < Hs / cu; c += 2)
                        for (int g = 0; g < 4; g++)
                            t->gemm_packed_blocks(x, m, k, p, n, k, y, n, acc, (g * Hs + c * cu) / 16,
                                                  (g * Hs + (c + 1) * cu) / 16);
                double dt = (now() - t0) / reps;
                if (dt < best) best = dt;
            }
            printf("  %s %6.1f", names[isa], flops / best / 1e9);
        }
        printf("\n");
        free(w); free(x); free(y); free(p);
    }
    const int H = 256, B = 32;
    float *g = randoms(4 * H * B, 4), *g2 = malloc(sizeof(float) * 4 * H * B), *c = randoms(H * B, 5);
    float *h = malloc(sizeof(float) * H * B), *gh = randoms(3 * H * B, 6), *bhn = randoms(H, 7);
    printf("gate rows, B=%d rows of H=%d, microseconds (min over calls)\n", B, H);
    for (int isa = 0; isa < 3; isa++) {
        const sck_table *t = sck_kernels(isa);
        if (!wanted(names[isa])) continue;
        if (!t) { printf("  %s: skipped (CPU cannot run it)\n", names[isa]); continue; }
        double bl = 1e9, bg = 1e9;
        for (int r = 0; r < 300; r++) {
            for (int i = 0; i < 4 * H * B; i++) g2[i] = 4 * g[i];
            double t0 = now();
            for (int b = 0; b < B; b++) t->lstm_row(g2 + b * 4 * H, H, c + b * H, h + b * H, h + b * H, NULL, 1);
            double dt = now() - t0;
            if (dt < bl) bl = dt;
            for (int i = 0; i < 4 * H * B; i++) g2[i] = 4 * g[i];
            t0 = now();
            for (int b = 0; b < B; b++) t->gru_row(g2 + b * 3 * H, gh + b * 3 * H, bhn, h + b * H, h + b * H, NULL, H, 1);
            dt = now() - t0;
            if (dt < bg) bg = dt;
        }
        printf("  %-8s lstm_row %6.2f   gru_row %6.2f\n", names[isa], bl * 1e6, bg * 1e6);
    }
    return 0;
}
