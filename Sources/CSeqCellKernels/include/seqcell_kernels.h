/*
 * seqcell_kernels.h — vector kernels for the built-in cell plugins (plugin-only: linked
 * statically into each cell's .so, never into the host; uses nothing beyond libc).
 *
 * Every kernel exists in three builds of the same source, chosen once at run time from
 * CPUID and XGETBV: AVX-512 (F/BW/VL/DQ, 16-float vectors), AVX2+FMA and x86-64 baseline
 * (SSE2). sck_kernels(isa) returns any table this CPU runs explicitly (tests compare them);
 * sck_best() is the best one, or the best at or below SEQCELL_ISA (avx512, avx2, baseline).
 *
 * Accuracy (tested against libm over dense ranges): sigmoid ≤ ~3 ulp relative,
 * tanh ≤ ~2e-7 absolute and ≤ ~4 ulp relative away from 0. Special values as libm and
 * PyTorch: NaN in gives NaN out in every kernel (activations, gate rows, backward rows,
 * the packed GEMM: 0 · NaN = NaN); tanh(±inf) = ±1, sigmoid(+inf) = 1, sigmoid(-inf) = 0.
 */
#ifndef SEQCELL_KERNELS_H
#define SEQCELL_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Hidden: linked statically into each cell's .so, none of these names enters a plugin's
   dynamic symbol table, so no other image can interpose on them (a plugin loaded into the
   global scope, say, when a consumer links the cell products). docs/PLUGIN_ABI.md,
   "Symbol visibility". */
#pragma GCC visibility push(hidden)

#define SCK_ISA_BASELINE 0
#define SCK_ISA_AVX2 1
#define SCK_ISA_AVX512 2

/* sck_cpu_features() bits: what this CPU and OS support (whatever SEQCELL_ISA says). BF16 and
   VNNI are detected for reporting only; no kernel uses them yet. */
#define SCK_CPU_AVX2_FMA 1u
#define SCK_CPU_AVX512 2u      /* F, BW, VL, DQ, with the OS saving ZMM and mask state */
#define SCK_CPU_AVX512_BF16 4u
#define SCK_CPU_AVX512_VNNI 8u

typedef struct sck_table {
    int32_t isa;
    /* x[i] = sigmoid(x[i]) / tanh(x[i]), i < n. */
    void (*sigmoid)(float *x, int64_t n);
    void (*tanh)(float *x, int64_t n);
    /* One LSTM row: gates [4H] pre-activations (i,f,g,o). c_next = f*c_prev + i*g,
       h = o*tanh(c_next) written to h_out and, if not NULL, h_out2. With store_acts the
       activations replace the pre-activations in gates (training keeps them). c_prev may be
       NULL (zero). c_next may equal c_prev. */
    void (*lstm_row)(float *gates, int64_t H, const float *c_prev, float *c_next, float *h_out,
                     float *h_out2, int32_t store_acts);
    /* LSTM backward for one row. acts [4H] (i,f,g,o activations) in, gate gradients out
       (pre-activation); c = c_t, c_prev = c_{t-1} (NULL: zero); dc [H] in: gradient reaching
       c_t from later steps, out: gradient for c_{t-1}; dm [H]: gradient of o*tanh(c_t). */
    void (*lstm_row_backward)(float *acts, int64_t H, const float *c, const float *c_prev, float *dc,
                              const float *dm);
    /* One GRU row, reset after (PyTorch): gx [3H] input part + biases (r,z,n; b_hn left out),
       gh [3H] = W_hh h (no bias), bhn [H]; h = (1-z)*n + z*h_prev into h_out (and h_out2 if
       not NULL). With store_acts r,z,n replace gx. */
    void (*gru_row)(float *gx, const float *gh, const float *bhn, const float *h_prev, float *h_out,
                    float *h_out2, int64_t H, int32_t store_acts);
    /* out[i] = tanh(pre[i]); out2 too if not NULL. */
    void (*tanh_copy)(const float *pre, float *out, float *out2, int64_t n);
    /* y[r, :] (+)= x[r, :] · W^T for r < m, with W [n, k] packed by sck_pack_wt.
       accumulate = 0 overwrites y. For small m (latency-bound steps). */
    void (*gemm_packed)(const float *x, int64_t m, int64_t ldx, const float *packed, int64_t n, int64_t k,
                        float *y, int64_t ldy, int32_t accumulate);
    /* The same for output blocks [blk_begin, blk_end) of 16 (sck_packed_blocks(n) in all),
       so threads can share one product. */
    void (*gemm_packed_blocks)(const float *x, int64_t m, int64_t ldx, const float *packed, int64_t n, int64_t k,
                               float *y, int64_t ldy, int32_t accumulate, int64_t blk_begin, int64_t blk_end);
    /* lstm_row / gru_row for hidden units [j0, j1) of a row only (pointers are the row's, as
       for the whole-row functions), so threads can split a step by hidden units. */
    void (*lstm_row_range)(float *gates, int64_t H, int64_t j0, int64_t j1, const float *c_prev, float *c_next,
                           float *h_out, float *h_out2, int32_t store_acts);
    void (*gru_row_range)(float *gx, const float *gh, const float *bhn, const float *h_prev, float *h_out,
                          float *h_out2, int64_t H, int64_t j0, int64_t j1, int32_t store_acts);
    /* gemm_packed_blocks with x read transposed: y[r, :] (+)= Σ_kk x[kk·ldx + r] · W[:, kk] for
       r < m (x a row-major [k, ldx] matrix; a weight gradient dW += dᵀ·S with W = Sᵀ packed).
       Each output element sums its k terms in order (slices of 256 added into y), whatever m
       and the block range are. Uses 32 KB of the calling thread's stack. */
    void (*gemm_packed_xt_blocks)(const float *x, int64_t m, int64_t ldx, const float *packed, int64_t n, int64_t k,
                                  float *y, int64_t ldy, int32_t accumulate, int64_t blk_begin, int64_t blk_end);
    /* GRU backward for one row, reset after (PyTorch). acts [3H]: the activations r,z,n in,
       the gradients of the input part's pre-activations out; dgh [3H]: W_hh h (no bias) in
       (only its n part is read), the gradients of W_hh h out (r, z as acts; n times r);
       bhn [H]; dh [H] the gradient reaching h from later steps, gy [H] the output's (NULL:
       zero); acc [H] out: the part of dh_{t-1} through z ⊙ h_{t-1}. */
    void (*gru_row_backward)(float *acts, float *dgh, const float *bhn, const float *h_prev, const float *dh,
                             const float *gy, float *acc, int64_t H);
} sck_table;

/* The table for `isa`, or NULL if this CPU cannot run it. */
const sck_table *sck_kernels(int32_t isa);
/* The best table for this CPU, at or below the ISA SEQCELL_ISA names (avx512, avx2 or
   baseline; SEQCELL_KERNEL_ISA is the older name of the variable). Chosen once per process. */
const sck_table *sck_best(void);
/* The highest ISA SEQCELL_ISA allows (SCK_ISA_AVX512 when unset or not a known name). */
int32_t sck_isa_limit(void);
/* SCK_ISA_* for "baseline", "avx2", "avx512"; -1 otherwise. */
int32_t sck_isa_named(const char *name);
/* The name of SCK_ISA_* value isa ("unknown" for others). */
const char *sck_isa_name(int32_t isa);
/* SCK_CPU_* bits of this CPU (detected once). */
uint32_t sck_cpu_features(void);

/* Floats sck_pack_wt needs for W [n, k]. */
int64_t sck_packed_floats(int64_t n, int64_t k);
/* Packs W [n, k] (row-major, row stride ldw) for gemm_packed: blocks of 16 outputs,
   k-major inside a block (a K x 16 panel), zero-padded. */
void sck_pack_wt(const float *w, int64_t ldw, int64_t n, int64_t k, float *packed);
/* The same for a W whose element (row, col) is at w[row * row_stride + col * col_stride]
   (col_stride = 1 is sck_pack_wt; row_stride = 1 packs the transpose of a row-major matrix). */
void sck_pack_strided(const float *w, int64_t row_stride, int64_t col_stride, int64_t n, int64_t k, float *packed);
/* sck_pack_strided for output blocks [blk_begin, blk_end) only (threads share a pack). */
void sck_pack_strided_blocks(const float *w, int64_t row_stride, int64_t col_stride, int64_t n, int64_t k,
                             float *packed, int64_t blk_begin, int64_t blk_end);
/* Output blocks of 16 for n outputs. */
int64_t sck_packed_blocks(int64_t n);

#pragma GCC visibility pop

#ifdef __cplusplus
}
#endif
#endif
