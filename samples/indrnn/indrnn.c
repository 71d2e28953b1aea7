/*
 * indrnn.c: the independently recurrent neural network (Li et al., 2018) as a SeqCell cell
 * plugin in plain C99, written from docs/PLUGIN_ABI.md and seqcell.h alone.
 *
 *   h' = relu(W_ih x + b_ih + u * h + b_hh)            (* is the element-wise product)
 *
 * Parameters (PyTorch-style, two biases):
 *   weight_ih [H, I]   input weights (initialised by role)
 *   weight_hh [H]      u, one recurrent weight per unit (ABI 1.2: initialised U(0, 1))
 *   bias_ih   [H]
 *   bias_hh   [H]      (ABI 1.2: optional, constant 0: a checkpoint with one bias omits it)
 * One state, "h" [H]; the output at each step is h' (output_size H). No options.
 *
 * It uses what ABI 1.2 added: create_cell with user_data (one create function for any number
 * of cells), parameter initialisation and the optional flag, NULL grad_params entries for
 * frozen parameters (SEQCELL_CELL_FROZEN_GRADIENTS), and workspace_size_checked, which
 * reports an overflowing workspace as an error.
 *
 * For the SeqCell test suite only, a macro builds deliberately wrong variants from this same
 * source (the plugin conformance kit must catch each):
 *   SEQCELL_INDRNN_SCALE_GRAD=k  backward adds 1.01 times the true gradient of parameter k
 *                                (0 weight_ih, 1 weight_hh, 2 bias_ih, 3 bias_hh)
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "seqcell.h"

#define INDRNN_VERSION_MAJOR 1u
#define INDRNN_VERSION_MINOR 0u
#define INDRNN_VERSION_PATCH 0u

/* Input and hidden sizes above this are refused, so H * I never overflows. */
#define INDRNN_MAX_SIZE ((int64_t)1 << 24)
#define INDRNN_PARAMS 4

#if defined(__GNUC__)
#define INDRNN_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define INDRNN_PRINTF(fmt, args)
#endif

/* The factor backward applies to parameter k's gradient: 1, or 1.01 in a test build. */
static float grad_scale(int k) {
#if defined(SEQCELL_INDRNN_SCALE_GRAD)
    return k == (SEQCELL_INDRNN_SCALE_GRAD) ? 1.01f : 1.0f;
#else
    (void)k;
    return 1.0f;
#endif
}

/* The host's services, set once by seqcell_plugin_entry before any other call. */
static const seqcell_host *g_host;

static seqcell_status fail(char *error, size_t capacity, seqcell_status status, const char *format, ...)
    INDRNN_PRINTF(4, 5);

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

/* ---- instances ------------------------------------------------------------------------- */

/* What differs between the cells this library could declare; create_cell receives it as
   the descriptor's user_data. */
typedef struct indrnn_kind {
    const char *id;
} indrnn_kind;

typedef struct indrnn {
    const indrnn_kind *kind;
    int64_t input_size;
    int64_t hidden_size;
    seqcell_param_desc params[INDRNN_PARAMS];
    seqcell_state_desc states[1];
    seqcell_layout layout;
} indrnn;

static void set_param(seqcell_param_desc *p, int32_t role, const char *name, int32_t rank, int64_t rows,
                      int64_t cols, const char *description) {
    memset(p, 0, sizeof *p);
    p->struct_size = (uint32_t)sizeof *p;
    p->role = role;
    p->name = name;
    p->rank = rank;
    p->shape[0] = rows;
    p->shape[1] = cols;
    p->gate_order = "";
    p->description = description;
    p->init = SEQCELL_INIT_ROLE;
}

static seqcell_status indrnn_create(const seqcell_cell_desc *desc, void *user_data, const seqcell_config *config,
                                    void **instance, char *error, size_t error_capacity) {
    const indrnn_kind *kind = user_data;
    indrnn *cell;
    int64_t in, hid;
    if (desc == NULL || kind == NULL) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT,
                    "indrnn: create_cell needs this library's descriptor and its user_data");
    }
    if (config == NULL || instance == NULL) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT,
                    "%s: config and instance must not be NULL", kind->id);
    }
    if (config->struct_size < sizeof(seqcell_config)) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT,
                    "%s: config struct_size %" PRIu32 " is smaller than %zu", kind->id, config->struct_size,
                    sizeof(seqcell_config));
    }
    if (config->num_options != 0) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT,
                    "%s: takes no options, got %" PRId32 " option values", kind->id, config->num_options);
    }
    in = config->input_size;
    hid = config->hidden_size;
    if (in < 1 || in > INDRNN_MAX_SIZE) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT,
                    "%s: input_size must be in 1...%" PRId64 " (got %" PRId64 ")", kind->id, INDRNN_MAX_SIZE, in);
    }
    if (hid < 1 || hid > INDRNN_MAX_SIZE) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT,
                    "%s: hidden_size must be in 1...%" PRId64 " (got %" PRId64 ")", kind->id, INDRNN_MAX_SIZE, hid);
    }
    if (g_host == NULL) {
        return fail(error, error_capacity, SEQCELL_ERR_INTERNAL, "%s: the host has not called seqcell_plugin_entry",
                    kind->id);
    }
    cell = g_host->aligned_alloc(g_host->context, 64, sizeof *cell);
    if (cell == NULL) {
        return fail(error, error_capacity, SEQCELL_ERR_NO_MEMORY, "%s: cannot allocate an instance", kind->id);
    }
    memset(cell, 0, sizeof *cell);
    cell->kind = kind;
    cell->input_size = in;
    cell->hidden_size = hid;
    set_param(&cell->params[0], SEQCELL_ROLE_INPUT_WEIGHT, "weight_ih", 2, hid, in, "W_ih [H, I]");
    set_param(&cell->params[1], SEQCELL_ROLE_RECURRENT_WEIGHT, "weight_hh", 1, hid, 0,
              "u [H]: each unit's weight on its own previous state");
    cell->params[1].init = SEQCELL_INIT_UNIFORM;
    cell->params[1].init_a = 0.0;
    cell->params[1].init_b = 1.0;
    set_param(&cell->params[2], SEQCELL_ROLE_BIAS, "bias_ih", 1, hid, 0, "b_ih [H]");
    set_param(&cell->params[3], SEQCELL_ROLE_BIAS, "bias_hh", 1, hid, 0, "b_hh [H]; optional, zero when omitted");
    cell->params[3].init = SEQCELL_INIT_CONSTANT;
    cell->params[3].init_a = 0.0;
    cell->params[3].flags = (int32_t)SEQCELL_PARAM_OPTIONAL;
    cell->states[0].struct_size = (uint32_t)sizeof cell->states[0];
    cell->states[0].name = "h";
    cell->states[0].size = hid;
    cell->layout.struct_size = (uint32_t)sizeof cell->layout;
    cell->layout.num_params = INDRNN_PARAMS;
    cell->layout.num_states = 1;
    cell->layout.output_size = hid;
    cell->layout.params = cell->params;
    cell->layout.states = cell->states;
    *instance = cell;
    return SEQCELL_OK;
}

static void indrnn_destroy(void *instance) {
    if (instance != NULL) g_host->aligned_free(g_host->context, instance);
}

static const seqcell_layout *indrnn_layout(const void *instance) {
    const indrnn *cell = instance;
    return cell != NULL ? &cell->layout : NULL;
}

/* ---- workspace ------------------------------------------------------------------------- */

typedef struct indrnn_workspace {
    float *pre; /* [T, B, H]: pre-activations; backward: their gradients                    */
    float *h;   /* training: [T+1, B, H], every state; inference: [B, H], the running state */
    float *dh;  /* training only, [B, H]: dL/dh carried back through time                   */
} indrnn_workspace;

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

/* Lays the workspace out from `base` (NULL: only measure); returns its size in bytes and
   clears *ok if it would not fit in a size_t. T, B >= 1. */
static size_t carve(const indrnn *cell, int64_t seq_len, int64_t batch, int training, void *base,
                    indrnn_workspace *ws, int *ok) {
    const int64_t hid = cell->hidden_size;
    size_t bytes = 0;
    unsigned char *p = base;
    indrnn_workspace w;
    memset(&w, 0, sizeof w);
    *ok = 1;
    w.pre = take(p, &bytes, product(seq_len, batch, hid, ok), ok);
    if (training) {
        /* Once pre fits, T is far below INT64_MAX, so T + 1 cannot overflow. */
        w.h = take(p, &bytes, *ok ? product(seq_len + 1, batch, hid, ok) : 0, ok);
        w.dh = take(p, &bytes, product(1, batch, hid, ok), ok);
    } else {
        w.h = take(p, &bytes, product(1, batch, hid, ok), ok);
    }
    if (ws != NULL) *ws = w;
    return *ok ? bytes : 0;
}

/* The ABI 1.0 question: 0 (which no call can use) when the size does not fit. */
static size_t indrnn_workspace_size(const void *instance, int64_t seq_len, int64_t batch, int32_t mode) {
    int ok;
    if (instance == NULL || seq_len < 1 || batch < 1) return 0;
    return carve(instance, seq_len, batch, mode == SEQCELL_MODE_TRAINING, NULL, NULL, &ok);
}

/* The ABI 1.2 question, which can say why there is no answer. */
static seqcell_status indrnn_workspace_size_checked(const void *instance, int64_t seq_len, int64_t batch,
                                                    int32_t mode, size_t *bytes, char *error,
                                                    size_t error_capacity) {
    int ok;
    size_t n;
    if (instance == NULL || bytes == NULL) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT, "indrnn: instance and bytes must not be NULL");
    }
    if (seq_len < 1 || batch < 1) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT,
                    "indrnn: seq_len and batch must be >= 1 (got %" PRId64 ", %" PRId64 ")", seq_len, batch);
    }
    if (mode != SEQCELL_MODE_INFERENCE && mode != SEQCELL_MODE_TRAINING) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT, "indrnn: unknown mode %" PRId32, mode);
    }
    n = carve(instance, seq_len, batch, mode == SEQCELL_MODE_TRAINING, NULL, NULL, &ok);
    if (!ok) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT,
                    "indrnn: the workspace for seq_len %" PRId64 " x batch %" PRId64 " overflows a size_t", seq_len,
                    batch);
    }
    *bytes = n;
    return SEQCELL_OK;
}

/* ---- argument checks shared by forward and backward ------------------------------------- */

static seqcell_status check_call(const indrnn *cell, int64_t seq_len, int64_t batch, const float *input,
                                 const int32_t *lengths, const float *const *params, void *workspace,
                                 size_t workspace_size, int training, indrnn_workspace *ws, char *error,
                                 size_t error_capacity) {
    size_t need;
    int64_t b;
    int i, ok;
    if (seq_len < 1) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT, "indrnn: seq_len must be >= 1 (got %" PRId64 ")",
                    seq_len);
    }
    if (batch < 1) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT, "indrnn: batch must be >= 1 (got %" PRId64 ")",
                    batch);
    }
    if (input == NULL) return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT, "indrnn: input is NULL");
    if (params == NULL) return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT, "indrnn: params is NULL");
    for (i = 0; i < INDRNN_PARAMS; i++) {
        if (params[i] == NULL) {
            return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT, "indrnn: parameter '%s' is NULL",
                        cell->params[i].name);
        }
    }
    if (lengths != NULL) {
        for (b = 0; b < batch; b++) {
            if (lengths[b] < 1 || lengths[b] > seq_len) {
                return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT,
                            "indrnn: lengths[%" PRId64 "] = %" PRId32 " is outside 1...%" PRId64, b, lengths[b],
                            seq_len);
            }
        }
    }
    need = carve(cell, seq_len, batch, training, NULL, NULL, &ok);
    if (!ok) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT,
                    "indrnn: seq_len %" PRId64 " x batch %" PRId64 " needs more workspace than a size_t can count",
                    seq_len, batch);
    }
    if (workspace == NULL || workspace_size < need) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT,
                    "indrnn: workspace is %zu bytes%s; this call needs %zu", workspace_size,
                    workspace == NULL ? " at NULL" : "", need);
    }
    if ((uintptr_t)workspace % 64 != 0) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT, "indrnn: workspace is not 64-byte aligned");
    }
    carve(cell, seq_len, batch, training, workspace, ws, &ok);
    return SEQCELL_OK;
}

/* ---- forward ----------------------------------------------------------------------------- */

static seqcell_status indrnn_forward(const void *instance, const seqcell_forward_args *args, char *error,
                                     size_t error_capacity) {
    const indrnn *cell = instance;
    indrnn_workspace ws;
    seqcell_status status;
    int64_t seq_len, batch, in, hid, r, t, b, j;
    int training;
    const float *u, *b_ih, *b_hh, *h0;
    if (cell == NULL || args == NULL) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT, "indrnn: instance and args must not be NULL");
    }
    if (args->struct_size < sizeof(seqcell_forward_args)) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT,
                    "indrnn: forward args struct_size %" PRIu32 " is smaller than %zu", args->struct_size,
                    sizeof(seqcell_forward_args));
    }
    if (args->mode != SEQCELL_MODE_INFERENCE && args->mode != SEQCELL_MODE_TRAINING) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT, "indrnn: unknown mode %" PRId32, args->mode);
    }
    training = args->mode == SEQCELL_MODE_TRAINING;
    status = check_call(cell, args->seq_len, args->batch, args->input, args->lengths, args->params, args->workspace,
                        args->workspace_size, training, &ws, error, error_capacity);
    if (status != SEQCELL_OK) return status;
    if (args->output == NULL) return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT, "indrnn: output is NULL");

    seq_len = args->seq_len;
    batch = args->batch;
    in = cell->input_size;
    hid = cell->hidden_size;
    u = args->params[1];
    b_ih = args->params[2];
    b_hh = args->params[3];
    h0 = args->initial_states != NULL ? args->initial_states[0] : NULL;

    /* Every step's input projection in one GEMM: pre = X W_ih^T + b_ih + b_hh. */
    for (r = 0; r < seq_len * batch; r++) {
        float *row = ws.pre + r * hid;
        for (j = 0; j < hid; j++) row[j] = b_ih[j] + b_hh[j];
    }
    sgemm(SEQCELL_NO_TRANS, SEQCELL_TRANS, seq_len * batch, hid, in, args->input, in, args->params[0], in, 1.0f,
          ws.pre, hid);

    if (h0 != NULL) {
        memcpy(ws.h, h0, (size_t)(batch * hid) * sizeof(float));
    } else {
        memset(ws.h, 0, (size_t)(batch * hid) * sizeof(float));
    }
    for (t = 0; t < seq_len; t++) {
        /* Training keeps every state; inference updates one state in place. */
        const float *h_prev = training ? ws.h + t * batch * hid : ws.h;
        float *h_next = training ? ws.h + (t + 1) * batch * hid : ws.h;
        for (b = 0; b < batch; b++) {
            float *pre = ws.pre + (t * batch + b) * hid;
            float *out = args->output + (t * batch + b) * hid;
            int valid = args->lengths == NULL || t < (int64_t)args->lengths[b];
            for (j = 0; j < hid; j++) {
                if (valid) {
                    float a = pre[j] + u[j] * h_prev[b * hid + j];
                    float h = a > 0.0f ? a : 0.0f;
                    pre[j] = a;
                    h_next[b * hid + j] = h;
                    out[j] = h;
                } else {
                    out[j] = 0.0f;
                    h_next[b * hid + j] = h_prev[b * hid + j];
                }
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

static seqcell_status indrnn_backward(const void *instance, const seqcell_backward_args *args, char *error,
                                      size_t error_capacity) {
    const indrnn *cell = instance;
    indrnn_workspace ws;
    seqcell_status status;
    int64_t seq_len, batch, in, hid, t, b, j;
    const float *u, *go, *dh_final;
    float *const *gp;
    if (cell == NULL || args == NULL) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT, "indrnn: instance and args must not be NULL");
    }
    if (args->struct_size < sizeof(seqcell_backward_args)) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT,
                    "indrnn: backward args struct_size %" PRIu32 " is smaller than %zu", args->struct_size,
                    sizeof(seqcell_backward_args));
    }
    status = check_call(cell, args->seq_len, args->batch, args->input, args->lengths, args->params, args->workspace,
                        args->workspace_size, 1, &ws, error, error_capacity);
    if (status != SEQCELL_OK) return status;
    /* The table itself is required; its entries may be NULL (frozen parameters, ABI 1.2). */
    if (args->grad_params == NULL) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT, "indrnn: grad_params is NULL");
    }

    seq_len = args->seq_len;
    batch = args->batch;
    in = cell->input_size;
    hid = cell->hidden_size;
    u = args->params[1];
    gp = args->grad_params;
    go = args->grad_output;
    dh_final = args->grad_final_states != NULL ? args->grad_final_states[0] : NULL;

    if (dh_final != NULL) {
        memcpy(ws.dh, dh_final, (size_t)(batch * hid) * sizeof(float));
    } else {
        memset(ws.dh, 0, (size_t)(batch * hid) * sizeof(float));
    }
    /* Walk back in time; pre[t] becomes dL/d(pre-activation) (zero at padded steps), and
       u's gradient is summed as we go since it needs h_{t-1}. */
    for (t = seq_len - 1; t >= 0; t--) {
        const float *h_prev = ws.h + t * batch * hid;
        const float *h_this = ws.h + (t + 1) * batch * hid;
        for (b = 0; b < batch; b++) {
            float *pre = ws.pre + (t * batch + b) * hid;
            if (args->lengths != NULL && t >= (int64_t)args->lengths[b]) {
                memset(pre, 0, (size_t)hid * sizeof(float));
                continue; /* dh passes through a padded step unchanged */
            }
            for (j = 0; j < hid; j++) {
                float d = ws.dh[b * hid + j] + (go != NULL ? go[(t * batch + b) * hid + j] : 0.0f);
                float da = h_this[b * hid + j] > 0.0f ? d : 0.0f;
                pre[j] = da;
                ws.dh[b * hid + j] = da * u[j];
                if (gp[1] != NULL) gp[1][j] += grad_scale(1) * da * h_prev[b * hid + j];
            }
        }
    }
    if (args->grad_initial_states != NULL && args->grad_initial_states[0] != NULL) {
        memcpy(args->grad_initial_states[0], ws.dh, (size_t)(batch * hid) * sizeof(float));
    }
    if (args->grad_input != NULL) {
        sgemm(SEQCELL_NO_TRANS, SEQCELL_NO_TRANS, seq_len * batch, in, hid, ws.pre, hid, args->params[0], in, 0.0f,
              args->grad_input, in);
    }
    /* Parameter gradients are added to what the host passed in. */
    if (gp[0] != NULL) {
        g_host->sgemm(g_host->context, SEQCELL_TRANS, SEQCELL_NO_TRANS, hid, in, seq_len * batch, grad_scale(0),
                      ws.pre, hid, args->input, in, 1.0f, gp[0], in);
    }
    for (t = 0; t < seq_len * batch; t++) {
        for (j = 0; j < hid; j++) {
            float d = ws.pre[t * hid + j];
            if (gp[2] != NULL) gp[2][j] += grad_scale(2) * d;
            if (gp[3] != NULL) gp[3][j] += grad_scale(3) * d;
        }
    }
    return SEQCELL_OK;
}

/* ---- descriptors and entry point ----------------------------------------------------------- */

static const indrnn_kind indrnn_relu = {"indrnn"};

static const seqcell_cell_desc indrnn_cell = {
    .struct_size = sizeof(seqcell_cell_desc),
    .version_major = INDRNN_VERSION_MAJOR,
    .version_minor = INDRNN_VERSION_MINOR,
    .version_patch = INDRNN_VERSION_PATCH,
    .id = "indrnn",
    .description = "Independently recurrent network (Li et al. 2018): h' = relu(W_ih x + b_ih + u*h + b_hh), "
                   "u one recurrent weight per unit",
    .num_options = 0,
    .options = NULL,
    .create = NULL, /* create_cell serves; this library refuses hosts older than ABI 1.2 */
    .destroy = indrnn_destroy,
    .layout = indrnn_layout,
    .workspace_size = indrnn_workspace_size,
    .forward = indrnn_forward,
    .backward = indrnn_backward,
    .create_cell = indrnn_create,
    .user_data = (void *)&indrnn_relu,
    .workspace_size_checked = indrnn_workspace_size_checked,
    .flags = SEQCELL_CELL_FROZEN_GRADIENTS,
};

static const seqcell_cell_desc *const indrnn_cells[] = {&indrnn_cell};

static const seqcell_plugin indrnn_plugin = {
    .struct_size = sizeof(seqcell_plugin),
    .abi_major = SEQCELL_ABI_MAJOR,
    .abi_minor = SEQCELL_ABI_MINOR,
    .num_cells = 1,
#if defined(SEQCELL_INDRNN_SCALE_GRAD)
    .name = "SeqCell sample IndRNN (test build: one gradient scaled by 1.01)",
#else
    .name = "SeqCell sample IndRNN",
#endif
    .cells = indrnn_cells,
};

SEQCELL_EXPORT seqcell_status seqcell_plugin_entry(uint32_t host_abi_major, uint32_t host_abi_minor,
                                                   const seqcell_host *host, const seqcell_plugin **plugin,
                                                   char *error, size_t error_capacity) {
    if (host_abi_major != SEQCELL_ABI_MAJOR) {
        return fail(error, error_capacity, SEQCELL_ERR_VERSION,
                    "indrnn speaks SeqCell ABI %u.x; the host speaks %" PRIu32 ".%" PRIu32, SEQCELL_ABI_MAJOR,
                    host_abi_major, host_abi_minor);
    }
    /* create_cell is an ABI 1.2 function: an older host would call the NULL create. */
    if (host_abi_minor < 2) {
        return fail(error, error_capacity, SEQCELL_ERR_VERSION,
                    "indrnn needs a host of SeqCell ABI 1.2 or newer; the host speaks %" PRIu32 ".%" PRIu32,
                    host_abi_major, host_abi_minor);
    }
    if (host == NULL || plugin == NULL) {
        return fail(error, error_capacity, SEQCELL_ERR_INVALID_ARGUMENT, "indrnn: host and plugin must not be NULL");
    }
    if (host->struct_size < offsetof(seqcell_host, log) + sizeof host->log || host->sgemm == NULL ||
        host->aligned_alloc == NULL || host->aligned_free == NULL) {
        return fail(error, error_capacity, SEQCELL_ERR_VERSION,
                    "indrnn: the host services table (%" PRIu32 " bytes) lacks sgemm, aligned_alloc or aligned_free",
                    host->struct_size);
    }
    g_host = host;
    *plugin = &indrnn_plugin;
    return SEQCELL_OK;
}
