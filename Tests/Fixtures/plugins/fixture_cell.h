/*
 * fixture_cell.h: a tiny but correct cell shared by the registry's broken-plugin fixtures,
 * so each fixture file shows only the one thing it gets wrong.
 *
 *   h' = h + W x + b      params: weight [H, I], bias [H]; state "h" [H]; output h'
 *
 * Before including, a fixture may define FX_BIAS_NAME (default "bias"), FX_BIAS_ROWS(h)
 * (default h), FX_STATE_NAME (default "h"), FX_WEIGHT_ROWS(h) and FX_WEIGHT_COLS(i)
 * (default h and i) to break the layout, FX_NO_BACKWARD to leave fx_backward out, and
 * FX_WORKSPACE_FN and FX_FORWARD_FN to put its own functions in FX_CELL, and
 * FX_BIAS_EXTRA(p) to set the bias descriptor's ABI 1.2 fields. It then defines
 * its descriptors and calls FX_DEFINE_ENTRY(plugin) to export seqcell_plugin_entry.
 * A fixture built against the frozen ABI 1.0 header includes that header first.
 */
#ifndef FIXTURE_CELL_H
#define FIXTURE_CELL_H

#include <stdio.h>
#include <string.h>

#include "seqcell.h"

#ifndef FX_BIAS_NAME
#define FX_BIAS_NAME "bias"
#endif
#ifndef FX_BIAS_ROWS
#define FX_BIAS_ROWS(h) (h)
#endif
#ifndef FX_STATE_NAME
#define FX_STATE_NAME "h"
#endif
#ifndef FX_WEIGHT_ROWS
#define FX_WEIGHT_ROWS(h) (h)
#endif
#ifndef FX_WEIGHT_COLS
#define FX_WEIGHT_COLS(i) (i)
#endif
#ifndef FX_WORKSPACE_FN
#define FX_WORKSPACE_FN fx_workspace_size
#endif
#ifndef FX_FORWARD_FN
#define FX_FORWARD_FN fx_forward
#endif

static const seqcell_host *fx_host;

typedef struct fx_cell {
    int64_t input_size;
    int64_t hidden_size;
    seqcell_param_desc params[2];
    seqcell_state_desc state;
    seqcell_layout layout;
} fx_cell;

static seqcell_status fx_fail(char *error, size_t capacity, const char *message) {
    if (error != NULL && capacity > 0) snprintf(error, capacity, "%s", message);
    return SEQCELL_ERR_INVALID_ARGUMENT;
}

static seqcell_status fx_create(const seqcell_config *config, void **instance, char *error, size_t capacity) {
    fx_cell *c;
    if (config == NULL || instance == NULL || config->struct_size < sizeof *config) {
        return fx_fail(error, capacity, "fixture: bad config");
    }
    if (config->num_options != 0 || config->input_size < 1 || config->hidden_size < 1 ||
        config->input_size > 4096 || config->hidden_size > 4096) {
        return fx_fail(error, capacity, "fixture: no options; sizes in 1...4096");
    }
    c = fx_host->aligned_alloc(fx_host->context, 64, sizeof *c);
    if (c == NULL) return fx_fail(error, capacity, "fixture: out of memory");
    memset(c, 0, sizeof *c);
    c->input_size = config->input_size;
    c->hidden_size = config->hidden_size;
    c->params[0].struct_size = sizeof c->params[0];
    c->params[0].role = SEQCELL_ROLE_INPUT_WEIGHT;
    c->params[0].name = "weight";
    c->params[0].rank = 2;
    c->params[0].shape[0] = FX_WEIGHT_ROWS(c->hidden_size);
    c->params[0].shape[1] = FX_WEIGHT_COLS(c->input_size);
    c->params[0].gate_order = "";
    c->params[0].description = "W [H, I]";
    c->params[1].struct_size = sizeof c->params[1];
    c->params[1].role = SEQCELL_ROLE_BIAS;
    c->params[1].name = FX_BIAS_NAME;
    c->params[1].rank = 1;
    c->params[1].shape[0] = FX_BIAS_ROWS(c->hidden_size);
    c->params[1].gate_order = "";
    c->params[1].description = "b [H]";
#if defined(FX_BIAS_EXTRA)
    FX_BIAS_EXTRA(c->params[1]); /* ABI 1.2 declarations of the bias (bad_init.c) */
#endif
    c->state.struct_size = sizeof c->state;
    c->state.name = FX_STATE_NAME;
    c->state.size = c->hidden_size;
    c->layout.struct_size = sizeof c->layout;
    c->layout.num_params = 2;
    c->layout.num_states = 1;
    c->layout.output_size = c->hidden_size;
    c->layout.params = c->params;
    c->layout.states = &c->state;
    *instance = c;
    return SEQCELL_OK;
}

static void fx_destroy(void *instance) {
    if (instance != NULL) fx_host->aligned_free(fx_host->context, instance);
}

static const seqcell_layout *fx_layout(const void *instance) {
    return instance != NULL ? &((const fx_cell *)instance)->layout : NULL;
}

/* The running state [B, H]; backward recomputes nothing, so training needs no more. */
static size_t fx_workspace_size(const void *instance, int64_t seq_len, int64_t batch, int32_t mode) {
    (void)seq_len;
    (void)mode;
    if (instance == NULL || batch < 1 || batch > 4096) return 0;
    return (size_t)(batch * ((const fx_cell *)instance)->hidden_size) * sizeof(float);
}

static int fx_lengths_ok(const int32_t *lengths, int64_t seq_len, int64_t batch) {
    int64_t b;
    for (b = 0; lengths != NULL && b < batch; b++) {
        if (lengths[b] < 1 || lengths[b] > seq_len) return 0;
    }
    return 1;
}

static int64_t fx_steps(const int32_t *lengths, int64_t b, int64_t seq_len) {
    return lengths != NULL ? lengths[b] : seq_len;
}

static seqcell_status fx_forward(const void *instance, const seqcell_forward_args *a, char *error, size_t capacity) {
    const fx_cell *c = instance;
    int64_t t, b, j, k, in, hid;
    float *h;
    if (c == NULL || a == NULL || a->struct_size < sizeof *a || a->seq_len < 1 || a->batch < 1 ||
        (a->mode != SEQCELL_MODE_INFERENCE && a->mode != SEQCELL_MODE_TRAINING) ||
        a->input == NULL || a->params == NULL || a->params[0] == NULL || a->params[1] == NULL ||
        a->output == NULL || !fx_lengths_ok(a->lengths, a->seq_len, a->batch) || a->workspace == NULL ||
        a->workspace_size < fx_workspace_size(c, a->seq_len, a->batch, a->mode)) {
        return fx_fail(error, capacity, "fixture: bad forward arguments");
    }
    in = c->input_size;
    hid = c->hidden_size;
    h = a->workspace;
    for (b = 0; b < a->batch; b++) {
        for (j = 0; j < hid; j++) {
            const float *h0 = a->initial_states != NULL ? a->initial_states[0] : NULL;
            h[b * hid + j] = h0 != NULL ? h0[b * hid + j] : 0.0f;
        }
    }
    for (t = 0; t < a->seq_len; t++) {
        for (b = 0; b < a->batch; b++) {
            float *out = a->output + (t * a->batch + b) * hid;
            const float *x = a->input + (t * a->batch + b) * in;
            for (j = 0; j < hid; j++) {
                if (t < fx_steps(a->lengths, b, a->seq_len)) {
                    float s = a->params[1][j];
                    for (k = 0; k < in; k++) s += a->params[0][j * in + k] * x[k];
                    h[b * hid + j] += s;
                    out[j] = h[b * hid + j];
                } else {
                    out[j] = 0.0f;
                }
            }
        }
    }
    if (a->final_states != NULL && a->final_states[0] != NULL) {
        memcpy(a->final_states[0], h, (size_t)(a->batch * hid) * sizeof(float));
    }
    return SEQCELL_OK;
}

#if !defined(FX_NO_BACKWARD)
/* dL/dh is the same at every step: the final-state gradient plus later outputs' gradients. */
static seqcell_status fx_backward(const void *instance, const seqcell_backward_args *a, char *error,
                                  size_t capacity) {
    const fx_cell *c = instance;
    int64_t t, b, j, k, in, hid;
    float *dh;
    if (c == NULL || a == NULL || a->struct_size < sizeof *a || a->seq_len < 1 || a->batch < 1 ||
        a->input == NULL || a->params == NULL || a->params[0] == NULL || a->params[1] == NULL ||
        a->grad_params == NULL || a->grad_params[0] == NULL || a->grad_params[1] == NULL ||
        !fx_lengths_ok(a->lengths, a->seq_len, a->batch) || a->workspace == NULL ||
        a->workspace_size < fx_workspace_size(c, a->seq_len, a->batch, SEQCELL_MODE_TRAINING)) {
        return fx_fail(error, capacity, "fixture: bad backward arguments");
    }
    in = c->input_size;
    hid = c->hidden_size;
    dh = a->workspace;
    for (b = 0; b < a->batch; b++) {
        for (j = 0; j < hid; j++) {
            const float *g = a->grad_final_states != NULL ? a->grad_final_states[0] : NULL;
            dh[b * hid + j] = g != NULL ? g[b * hid + j] : 0.0f;
        }
    }
    for (t = a->seq_len - 1; t >= 0; t--) {
        for (b = 0; b < a->batch; b++) {
            const float *x = a->input + (t * a->batch + b) * in;
            float *gx = a->grad_input != NULL ? a->grad_input + (t * a->batch + b) * in : NULL;
            int active = t < fx_steps(a->lengths, b, a->seq_len);
            for (k = 0; gx != NULL && k < in; k++) gx[k] = 0.0f;
            for (j = 0; active && j < hid; j++) {
                const float *go = a->grad_output != NULL ? a->grad_output + (t * a->batch + b) * hid : NULL;
                float d = dh[b * hid + j] + (go != NULL ? go[j] : 0.0f);
                dh[b * hid + j] = d;
                a->grad_params[1][j] += d;
                for (k = 0; k < in; k++) {
                    a->grad_params[0][j * in + k] += d * x[k];
                    if (gx != NULL) gx[k] += d * a->params[0][j * in + k];
                }
            }
        }
    }
    if (a->grad_initial_states != NULL && a->grad_initial_states[0] != NULL) {
        memcpy(a->grad_initial_states[0], dh, (size_t)(a->batch * hid) * sizeof(float));
    }
    return SEQCELL_OK;
}
#endif

/* A complete cell descriptor; `size_` and `backward_` let fixtures break exactly that. */
/* The fields ABI 1.2 appended to seqcell_cell_desc, absent (NULL, 0) in every fixture cell;
   empty when a fixture is built against a frozen older header. */
#if SEQCELL_ABI_MINOR >= 2u
#define FX_DESC_1_2_TAIL , NULL, NULL, NULL, 0u
#else
#define FX_DESC_1_2_TAIL
#endif

#define FX_CELL(size_, id_, backward_)                                                          \
    {                                                                                           \
        (size_), 1u, 0u, 0u, (id_), "fixture: h' = h + W x + b", 0, 0, NULL, fx_create,          \
            fx_destroy, fx_layout, FX_WORKSPACE_FN, FX_FORWARD_FN, (backward_) FX_DESC_1_2_TAIL \
    }

#define FX_DEFINE_ENTRY(plugin_)                                                                \
    SEQCELL_EXPORT seqcell_status seqcell_plugin_entry(                                         \
        uint32_t host_abi_major, uint32_t host_abi_minor, const seqcell_host *host,             \
        const seqcell_plugin **plugin, char *error, size_t error_capacity) {                    \
        (void)host_abi_minor;                                                                   \
        if (host_abi_major != SEQCELL_ABI_MAJOR) {                                              \
            if (error != NULL && error_capacity > 0) snprintf(error, error_capacity, "ABI 1 only"); \
            return SEQCELL_ERR_VERSION;                                                         \
        }                                                                                       \
        fx_host = host;                                                                         \
        *plugin = &(plugin_);                                                                   \
        return SEQCELL_OK;                                                                      \
    }

#endif
