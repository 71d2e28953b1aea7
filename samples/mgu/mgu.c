/*
 * mgu.c: the minimal gated unit (Zhou et al., 2016) as a SeqCell cell plugin in plain C99.
 *
 *   f  = sigmoid(W_if x + b_if + W_hf h + b_hf)
 *   n  = tanh(W_in x + b_in + W_hn (f * h) + b_hn)
 *   h' = (1 - f) * h + f * n                         (* is the element-wise product)
 *
 * Parameters (PyTorch-style, two biases, gate blocks in the order "f,n"):
 *   weight_ih [2H, I]   rows 0..H-1 are W_if, rows H..2H-1 are W_in
 *   weight_hh [2H, H]   rows 0..H-1 are W_hf, rows H..2H-1 are W_hn
 *   bias_ih   [2H]      b_if, b_in
 *   bias_hh   [2H]      b_hf, b_hn
 * One state, "h" [H]; the output at each step is h' (output_size H). No options.
 *
 * This file is what a third-party cell looks like: it includes only seqcell.h and libc/libm
 * headers, links only libc and libm, multiplies matrices only through the host's sgemm and
 * allocates only through the host (its instances) or the host's workspace (everything else).
 *
 * For the SeqCell test suite only, two macros build deliberately wrong variants from this
 * same source (the plugin conformance kit must catch them):
 *   SEQCELL_MGU_BROKEN_BACKWARD  backward drops the W_hn (f * h) path's contribution to dh
 *   SEQCELL_MGU_IGNORE_LENGTHS   forward and backward run every sample for all T steps
 */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "seqcell.h"

#define MGU_VERSION_MAJOR 1u
#define MGU_VERSION_MINOR 0u
#define MGU_VERSION_PATCH 0u

/* Input and hidden sizes above this are refused, so 2H * max(I, H) never overflows. */
#define MGU_MAX_SIZE ((int64_t)1 << 24)

#if defined(__GNUC__)
#define MGU_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define MGU_PRINTF(fmt, args)
#endif

/* The host's services, set once by seqcell_plugin_entry before any other call. */
static const seqcell_host *g_host;

/* Writes a message into the caller's error buffer (if any) and returns `status`. */
static seqcell_status fail(char *error, size_t capacity, seqcell_status status, const char *format, ...)
    MGU_PRINTF(4, 5);

static seqcell_status fail(char *error, size_t capacity, seqcell_status status, const char *format, ...) {
    if (error != NULL && capacity > 0) {
        va_list ap;
        va_start(ap, format);
        vsnprintf(error, capacity, format, ap);
        va_end(ap);
    }
    return status;
}

static void sgemm(int32_t trans_a, int32_t trans_b, int64_t m, int64_t n, int64_t k, const float *a,
                  int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    g_host->sgemm(g_host->context, trans_a, trans_b, m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
}

static float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* The number of steps sample b runs for. */
static int64_t steps_of(const int32_t *lengths, int64_t b, int64_t seq_len) {
#if defined(SEQCELL_MGU_IGNORE_LENGTHS)
    (void)lengths;
    (void)b;
    return seq_len;
#else
    return lengths != NULL ? (int64_t)lengths[b] : seq_len;
#endif
}

/* ---- instances ------------------------------------------------------------------------- */

typedef struct mgu {
    int64_t input_size;
    int64_t hidden_size;
    seqcell_param_desc params[4];
    seqcell_state_desc states[1];
    seqcell_layout layout;
} mgu;

static void set_param(seqcell_param_desc *p, int32_t role, const char *name, int32_t rank, int64_t rows,
                      int64_t cols, const char *description) {
    memset(p, 0, sizeof *p);
    p->struct_size = (uint32_t)sizeof *p;
    p->role = role;
    p->name = name;
    p->rank = rank;
    p->shape[0] = rows;
    p->shape[1] = cols;
    p->gate_order = "f,n";
    p->description = description;
}

static seqcell_status mgu_create(const seqcell_config *config, void **instance, char *error,
                                 size_t error_capacity) {
    mgu *cell;
    int64_t in, hid;
    if (config == NULL || instance == NULL) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT, "mgu: config and instance must not be NULL");
    }
    if (config->struct_size < sizeof(seqcell_config)) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT,
                    "mgu: config struct_size %" PRIu32 " is smaller than %zu", config->struct_size,
                    sizeof(seqcell_config));
    }
    if (config->num_options != 0) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT,
                    "mgu: takes no options, got %" PRId32 " option values", config->num_options);
    }
    in = config->input_size;
    hid = config->hidden_size;
    if (in < 1 || in > MGU_MAX_SIZE) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT,
                    "mgu: input_size must be in 1...%" PRId64 " (got %" PRId64 ")", MGU_MAX_SIZE, in);
    }
    if (hid < 1 || hid > MGU_MAX_SIZE) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT,
                    "mgu: hidden_size must be in 1...%" PRId64 " (got %" PRId64 ")", MGU_MAX_SIZE, hid);
    }
    if (g_host == NULL) {
        return fail(error, error_capacity, SEQCELL_ERR_INTERNAL, "mgu: the host has not called seqcell_plugin_entry");
    }
    cell = g_host->aligned_alloc(g_host->context, 64, sizeof *cell);
    if (cell == NULL) {
        return fail(error, error_capacity, SEQCELL_ERR_NO_MEMORY, "mgu: cannot allocate an instance");
    }
    memset(cell, 0, sizeof *cell);
    cell->input_size = in;
    cell->hidden_size = hid;
    set_param(&cell->params[0], SEQCELL_ROLE_INPUT_WEIGHT, "weight_ih", 2, 2 * hid, in,
              "W_if and W_in stacked [2H, I]");
    set_param(&cell->params[1], SEQCELL_ROLE_RECURRENT_WEIGHT, "weight_hh", 2, 2 * hid, hid,
              "W_hf and W_hn stacked [2H, H]");
    set_param(&cell->params[2], SEQCELL_ROLE_BIAS, "bias_ih", 1, 2 * hid, 0, "b_if and b_in [2H]");
    set_param(&cell->params[3], SEQCELL_ROLE_BIAS, "bias_hh", 1, 2 * hid, 0, "b_hf and b_hn [2H]");
    cell->states[0].struct_size = (uint32_t)sizeof cell->states[0];
    cell->states[0].name = "h";
    cell->states[0].size = hid;
    cell->layout.struct_size = (uint32_t)sizeof cell->layout;
    cell->layout.num_params = 4;
    cell->layout.num_states = 1;
    cell->layout.output_size = hid;
    cell->layout.params = cell->params;
    cell->layout.states = cell->states;
    *instance = cell;
    return SEQCELL_OK;
}

static void mgu_destroy(void *instance) {
    if (instance != NULL) g_host->aligned_free(g_host->context, instance);
}

static const seqcell_layout *mgu_layout(const void *instance) {
    const mgu *cell = instance;
    return cell != NULL ? &cell->layout : NULL;
}

/* ---- workspace ------------------------------------------------------------------------- */

/* The workspace, carved into 64-byte-aligned float arrays. */
typedef struct mgu_workspace {
    float *gates; /* [T, B, 2H]: pre-activations; training: f and n; backward: their gradients */
    float *h;     /* training: [T+1, B, H], every state; inference: [B, H], the running state */
    float *fh;    /* training: [T, B, H], f * h_prev of every step; inference: [B, H]          */
    float *dh;    /* training only, [B, H]: dL/dh carried back through time                   */
    float *dfh;   /* training only, [B, H]: dL/d(f * h_prev) at one step                      */
    float *df;    /* training only, [B, H]: the part of dL/df that does not go through W_hn    */
} mgu_workspace;

/* a * b * c for positive factors; clears *ok when the product does not fit in a size_t. */
static size_t product(int64_t a, int64_t b, int64_t c, int *ok) {
    uint64_t p = (uint64_t)a;
    if ((uint64_t)b > UINT64_MAX / p) {
        *ok = 0;
        return 0;
    }
    p *= (uint64_t)b;
    if ((uint64_t)c > UINT64_MAX / p || p * (uint64_t)c > SIZE_MAX) {
        *ok = 0;
        return 0;
    }
    return (size_t)(p * (uint64_t)c);
}

/* Reserves `count` floats at the next 64-byte boundary after *offset; NULL when only
   measuring (base NULL) or when the total overflows (then *ok is cleared). */
static float *take(unsigned char *base, size_t *offset, size_t count, int *ok) {
    size_t start;
    if (!*ok || *offset > SIZE_MAX - 63) {
        *ok = 0;
        return NULL;
    }
    start = (*offset + 63) & ~(size_t)63;
    if (count > (SIZE_MAX - start) / sizeof(float)) {
        *ok = 0;
        return NULL;
    }
    *offset = start + count * sizeof(float);
    return base != NULL ? (float *)(void *)(base + start) : NULL;
}

/* Lays the workspace for (T, B, mode) out from `base` (NULL: only measure) and returns its
   size in bytes, or 0 if it would not fit in a size_t. T, B >= 1. */
static size_t carve(const mgu *cell, int64_t seq_len, int64_t batch, int training, void *base, mgu_workspace *ws) {
    const int64_t hid = cell->hidden_size;
    size_t bytes = 0;
    int ok = 1;
    unsigned char *p = base;
    mgu_workspace w;
    memset(&w, 0, sizeof w);
    w.gates = take(p, &bytes, product(seq_len, batch, 2 * hid, &ok), &ok);
    if (training) {
        /* Once the gates fit, T is far below INT64_MAX, so T + 1 cannot overflow. */
        w.h = take(p, &bytes, ok ? product(seq_len + 1, batch, hid, &ok) : 0, &ok);
        w.fh = take(p, &bytes, product(seq_len, batch, hid, &ok), &ok);
        w.dh = take(p, &bytes, product(1, batch, hid, &ok), &ok);
        w.dfh = take(p, &bytes, product(1, batch, hid, &ok), &ok);
        w.df = take(p, &bytes, product(1, batch, hid, &ok), &ok);
    } else {
        w.h = take(p, &bytes, product(1, batch, hid, &ok), &ok);
        w.fh = take(p, &bytes, product(1, batch, hid, &ok), &ok);
    }
    if (ws != NULL) *ws = w;
    return ok ? bytes : 0;
}

static size_t mgu_workspace_size(const void *instance, int64_t seq_len, int64_t batch, int32_t mode) {
    if (instance == NULL || seq_len < 1 || batch < 1) return 0;
    return carve(instance, seq_len, batch, mode == SEQCELL_MODE_TRAINING, NULL, NULL);
}

/* ---- argument checks shared by forward and backward ------------------------------------- */

static seqcell_status check_call(const mgu *cell, int64_t seq_len, int64_t batch, const float *input,
                                 const int32_t *lengths, const float *const *params, void *workspace,
                                 size_t workspace_size, int training, mgu_workspace *ws, char *error,
                                 size_t error_capacity) {
    size_t need;
    int64_t b;
    int i;
    if (seq_len < 1) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT, "mgu: seq_len must be >= 1 (got %" PRId64 ")",
                    seq_len);
    }
    if (batch < 1) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT, "mgu: batch must be >= 1 (got %" PRId64 ")",
                    batch);
    }
    if (input == NULL) return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT, "mgu: input is NULL");
    if (params == NULL) return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT, "mgu: params is NULL");
    for (i = 0; i < 4; i++) {
        if (params[i] == NULL) {
            return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT, "mgu: parameter '%s' is NULL",
                        cell->params[i].name);
        }
    }
    if (lengths != NULL) {
        for (b = 0; b < batch; b++) {
            if (lengths[b] < 1 || lengths[b] > seq_len) {
                return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT,
                            "mgu: lengths[%" PRId64 "] = %" PRId32 " is outside 1...%" PRId64, b, lengths[b], seq_len);
            }
        }
    }
    need = carve(cell, seq_len, batch, training, NULL, NULL);
    if (need == 0) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT,
                    "mgu: seq_len %" PRId64 " x batch %" PRId64 " needs more workspace than a size_t can count",
                    seq_len, batch);
    }
    if (workspace == NULL || workspace_size < need) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT,
                    "mgu: workspace is %zu bytes%s; this call needs %zu", workspace_size,
                    workspace == NULL ? " at NULL" : "", need);
    }
    if ((uintptr_t)workspace % 64 != 0) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT, "mgu: workspace is not 64-byte aligned");
    }
    carve(cell, seq_len, batch, training, workspace, ws);
    return SEQCELL_OK;
}

/* ---- forward ----------------------------------------------------------------------------- */

static seqcell_status mgu_forward(const void *instance, const seqcell_forward_args *args, char *error,
                                  size_t error_capacity) {
    const mgu *cell = instance;
    mgu_workspace ws;
    seqcell_status status;
    int64_t seq_len, batch, in, hid, gates, r, t, b, j;
    int training;
    const float *x, *w_ih, *w_hh, *b_ih, *b_hh, *h0;
    if (cell == NULL || args == NULL) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT, "mgu: instance and args must not be NULL");
    }
    if (args->struct_size < sizeof(seqcell_forward_args)) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT,
                    "mgu: forward args struct_size %" PRIu32 " is smaller than %zu", args->struct_size,
                    sizeof(seqcell_forward_args));
    }
    if (args->mode != SEQCELL_MODE_INFERENCE && args->mode != SEQCELL_MODE_TRAINING) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT, "mgu: unknown mode %" PRId32, args->mode);
    }
    training = args->mode == SEQCELL_MODE_TRAINING;
    status = check_call(cell, args->seq_len, args->batch, args->input, args->lengths, args->params, args->workspace,
                        args->workspace_size, training, &ws, error, error_capacity);
    if (status != SEQCELL_OK) return status;
    if (args->output == NULL) return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT, "mgu: output is NULL");

    seq_len = args->seq_len;
    batch = args->batch;
    in = cell->input_size;
    hid = cell->hidden_size;
    gates = 2 * hid;
    x = args->input;
    w_ih = args->params[0];
    w_hh = args->params[1];
    b_ih = args->params[2];
    b_hh = args->params[3];
    h0 = args->initial_states != NULL ? args->initial_states[0] : NULL;

    /* Every step's input projection in one GEMM: gates = X W_ih^T + b_ih + b_hh. Both
       biases sit outside any product, so they can be added up front. */
    for (r = 0; r < seq_len * batch; r++) {
        float *row = ws.gates + r * gates;
        for (j = 0; j < gates; j++) row[j] = b_ih[j] + b_hh[j];
    }
    sgemm(SEQCELL_NO_TRANS, SEQCELL_TRANS, seq_len * batch, gates, in, x, in, w_ih, in, 1.0f, ws.gates, gates);

    if (h0 != NULL) {
        memcpy(ws.h, h0, (size_t)(batch * hid) * sizeof(float));
    } else {
        memset(ws.h, 0, (size_t)(batch * hid) * sizeof(float));
    }
    for (t = 0; t < seq_len; t++) {
        /* Training keeps every state; inference updates one state in place. */
        const float *h_prev = training ? ws.h + t * batch * hid : ws.h;
        float *h_next = training ? ws.h + (t + 1) * batch * hid : ws.h;
        float *fh = training ? ws.fh + t * batch * hid : ws.fh;
        float *g = ws.gates + t * batch * gates;
        /* f pre-activation += h W_hf^T */
        sgemm(SEQCELL_NO_TRANS, SEQCELL_TRANS, batch, hid, hid, h_prev, hid, w_hh, hid, 1.0f, g, gates);
        for (b = 0; b < batch; b++) {
            for (j = 0; j < hid; j++) {
                float f = sigmoid(g[b * gates + j]);
                g[b * gates + j] = f;
                fh[b * hid + j] = f * h_prev[b * hid + j];
            }
        }
        /* n pre-activation += (f * h) W_hn^T */
        sgemm(SEQCELL_NO_TRANS, SEQCELL_TRANS, batch, hid, hid, fh, hid, w_hh + hid * hid, hid, 1.0f, g + hid, gates);
        for (b = 0; b < batch; b++) {
            float *out = args->output + (t * batch + b) * hid;
            if (t < steps_of(args->lengths, b, seq_len)) {
                for (j = 0; j < hid; j++) {
                    float f = g[b * gates + j];
                    float n = tanhf(g[b * gates + hid + j]);
                    float h = (1.0f - f) * h_prev[b * hid + j] + f * n;
                    g[b * gates + hid + j] = n;
                    h_next[b * hid + j] = h;
                    out[j] = h;
                }
            } else {
                memset(out, 0, (size_t)hid * sizeof(float));
                if (h_next != h_prev) memcpy(h_next + b * hid, h_prev + b * hid, (size_t)hid * sizeof(float));
            }
        }
    }
    if (args->final_states != NULL && args->final_states[0] != NULL) {
        const float *last = training ? ws.h + seq_len * batch * hid : ws.h;
        memcpy(args->final_states[0], last, (size_t)(batch * hid) * sizeof(float));
    }
    return SEQCELL_OK;
}

/* ---- backward ---------------------------------------------------------------------------- */

/* acc[j] += sum over rows of m[r, j], for an m of `rows` rows of width n and row stride ld. */
static void add_column_sums(const float *m, int64_t rows, int64_t n, int64_t ld, float *acc) {
    int64_t r, j;
    for (r = 0; r < rows; r++) {
        for (j = 0; j < n; j++) acc[j] += m[r * ld + j];
    }
}

static seqcell_status mgu_backward(const void *instance, const seqcell_backward_args *args, char *error,
                                   size_t error_capacity) {
    const mgu *cell = instance;
    mgu_workspace ws;
    seqcell_status status;
    int64_t seq_len, batch, in, hid, gates, t, b, j;
    const float *w_ih, *w_hh, *go, *dh_final;
    int i;
    if (cell == NULL || args == NULL) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT, "mgu: instance and args must not be NULL");
    }
    if (args->struct_size < sizeof(seqcell_backward_args)) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT,
                    "mgu: backward args struct_size %" PRIu32 " is smaller than %zu", args->struct_size,
                    sizeof(seqcell_backward_args));
    }
    status = check_call(cell, args->seq_len, args->batch, args->input, args->lengths, args->params, args->workspace,
                        args->workspace_size, 1, &ws, error, error_capacity);
    if (status != SEQCELL_OK) return status;
    if (args->grad_params == NULL) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT, "mgu: grad_params is NULL");
    }
    for (i = 0; i < 4; i++) {
        if (args->grad_params[i] == NULL) {
            return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT, "mgu: gradient of parameter '%s' is NULL",
                        cell->params[i].name);
        }
    }

    seq_len = args->seq_len;
    batch = args->batch;
    in = cell->input_size;
    hid = cell->hidden_size;
    gates = 2 * hid;
    w_ih = args->params[0];
    w_hh = args->params[1];
    go = args->grad_output;
    dh_final = args->grad_final_states != NULL ? args->grad_final_states[0] : NULL;

    if (dh_final != NULL) {
        memcpy(ws.dh, dh_final, (size_t)(batch * hid) * sizeof(float));
    } else {
        memset(ws.dh, 0, (size_t)(batch * hid) * sizeof(float));
    }
    /* Walk back in time; at step t, gates holds f and n, and is overwritten with the
       gradients of their pre-activations (zero at padded steps). */
    for (t = seq_len - 1; t >= 0; t--) {
        const float *h_prev = ws.h + t * batch * hid;
        float *g = ws.gates + t * batch * gates;
        for (b = 0; b < batch; b++) {
            if (t >= steps_of(args->lengths, b, seq_len)) {
                memset(g + b * gates, 0, (size_t)gates * sizeof(float));
                continue;
            }
            for (j = 0; j < hid; j++) {
                float f = g[b * gates + j];
                float n = g[b * gates + hid + j];
                float d = ws.dh[b * hid + j] + (go != NULL ? go[(t * batch + b) * hid + j] : 0.0f);
                ws.df[b * hid + j] = d * (n - h_prev[b * hid + j]);
                ws.dh[b * hid + j] = d * (1.0f - f);
                g[b * gates + hid + j] = d * f * (1.0f - n * n);
            }
        }
        /* d(f * h) = dn_pre W_hn */
        sgemm(SEQCELL_NO_TRANS, SEQCELL_NO_TRANS, batch, hid, hid, g + hid, gates, w_hh + hid * hid, hid, 0.0f,
              ws.dfh, hid);
        for (b = 0; b < batch; b++) {
            if (t >= steps_of(args->lengths, b, seq_len)) continue;
            for (j = 0; j < hid; j++) {
                float f = g[b * gates + j];
                float dfh = ws.dfh[b * hid + j];
#if !defined(SEQCELL_MGU_BROKEN_BACKWARD)
                ws.dh[b * hid + j] += dfh * f;
#endif
                g[b * gates + j] = (ws.df[b * hid + j] + dfh * h_prev[b * hid + j]) * f * (1.0f - f);
            }
        }
        /* dh_prev += df_pre W_hf (rows of padded samples add zero: they carry dh unchanged) */
        sgemm(SEQCELL_NO_TRANS, SEQCELL_NO_TRANS, batch, hid, hid, g, gates, w_hh, hid, 1.0f, ws.dh, hid);
    }
    if (args->grad_initial_states != NULL && args->grad_initial_states[0] != NULL) {
        memcpy(args->grad_initial_states[0], ws.dh, (size_t)(batch * hid) * sizeof(float));
    }
    if (args->grad_input != NULL) {
        sgemm(SEQCELL_NO_TRANS, SEQCELL_NO_TRANS, seq_len * batch, in, gates, ws.gates, gates, w_ih, in, 0.0f,
              args->grad_input, in);
    }
    /* Parameter gradients are added to what the host passed in. */
    sgemm(SEQCELL_TRANS, SEQCELL_NO_TRANS, gates, in, seq_len * batch, ws.gates, gates, args->input, in, 1.0f,
          args->grad_params[0], in);
    sgemm(SEQCELL_TRANS, SEQCELL_NO_TRANS, hid, hid, seq_len * batch, ws.gates, gates, ws.h, hid, 1.0f,
          args->grad_params[1], hid);
    sgemm(SEQCELL_TRANS, SEQCELL_NO_TRANS, hid, hid, seq_len * batch, ws.gates + hid, gates, ws.fh, hid, 1.0f,
          args->grad_params[1] + hid * hid, hid);
    add_column_sums(ws.gates, seq_len * batch, gates, gates, args->grad_params[2]);
    add_column_sums(ws.gates, seq_len * batch, gates, gates, args->grad_params[3]);
    return SEQCELL_OK;
}

/* ---- descriptors and entry point ----------------------------------------------------------- */

static const seqcell_cell_desc mgu_cell = {
    .struct_size = sizeof(seqcell_cell_desc),
    .version_major = MGU_VERSION_MAJOR,
    .version_minor = MGU_VERSION_MINOR,
    .version_patch = MGU_VERSION_PATCH,
    .id = "mgu",
    .description = "Minimal gated unit (Zhou et al. 2016): f = sigmoid(W_if x + b_if + W_hf h + b_hf), "
                   "n = tanh(W_in x + b_in + W_hn (f*h) + b_hn), h' = (1-f) h + f n",
    .num_options = 0,
    .options = NULL,
    .create = mgu_create,
    .destroy = mgu_destroy,
    .layout = mgu_layout,
    .workspace_size = mgu_workspace_size,
    .forward = mgu_forward,
    .backward = mgu_backward,
};

static const seqcell_cell_desc *const mgu_cells[] = {&mgu_cell};

static const seqcell_plugin mgu_plugin = {
    .struct_size = sizeof(seqcell_plugin),
    .abi_major = SEQCELL_ABI_MAJOR,
    .abi_minor = SEQCELL_ABI_MINOR,
    .num_cells = 1,
#if defined(SEQCELL_MGU_BROKEN_BACKWARD)
    .name = "SeqCell sample MGU (test build: wrong backward)",
#elif defined(SEQCELL_MGU_IGNORE_LENGTHS)
    .name = "SeqCell sample MGU (test build: ignores lengths)",
#else
    .name = "SeqCell sample MGU",
#endif
    .cells = mgu_cells,
};

SEQCELL_EXPORT seqcell_status seqcell_plugin_entry(uint32_t host_abi_major, uint32_t host_abi_minor,
                                                   const seqcell_host *host, const seqcell_plugin **plugin,
                                                   char *error, size_t error_capacity) {
    /* Any host minor will do: this plugin uses nothing added after ABI 1.0. */
    if (host_abi_major != SEQCELL_ABI_MAJOR) {
        return fail(error, error_capacity, SEQCELL_ERR_VERSION,
                    "mgu speaks SeqCell ABI %u.x; the host speaks %" PRIu32 ".%" PRIu32, SEQCELL_ABI_MAJOR,
                    host_abi_major, host_abi_minor);
    }
    if (host == NULL || plugin == NULL) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT, "mgu: host and plugin must not be NULL");
    }
    if (host->struct_size < offsetof(seqcell_host, log) + sizeof host->log || host->sgemm == NULL ||
        host->aligned_alloc == NULL || host->aligned_free == NULL) {
        return fail(error, error_capacity, SEQCELL_ERR_VERSION,
                    "mgu: the host services table (%" PRIu32 " bytes) lacks sgemm, aligned_alloc or aligned_free",
                    host->struct_size);
    }
    g_host = host;
    *plugin = &mgu_plugin;
    return SEQCELL_OK;
}
