/* A plugin as a later minor of ABI 1 might build it: every struct it fills has fields
   appended beyond today's header (a real future header would declare them in the structs;
   here each is today's struct followed by the new fields). The descriptor arrays are
   therefore longer per element than the host's own structs, and the host must walk them
   with the stride the plugin declares.

   The cell ("future"): two options (an int and a choice), three parameters, two states.
     h' = h + W x + b (+ scale[0] * 0: scale is only declared), c' = c (a second state)
   With -DFX_MIXED_SIZES the second option declares today's size instead of the grown one:
   an array whose elements disagree, which the host must refuse. */
#include <stdio.h>
#include <string.h>

#include "seqcell.h"

typedef struct fut_option_desc {
    seqcell_option_desc base;
    int64_t future_flags;
    const char *future_text;
} fut_option_desc;

typedef struct fut_param_desc {
    seqcell_param_desc base;
    int64_t future_stride;
    const char *future_dtype;
} fut_param_desc;

typedef struct fut_state_desc {
    seqcell_state_desc base;
    int64_t future_extra;
} fut_state_desc;

typedef struct fut_layout {
    seqcell_layout base;
    int64_t future_field;
} fut_layout;

typedef struct fut_cell_desc {
    seqcell_cell_desc base;
    void (*future_function)(void);
} fut_cell_desc;

typedef struct fut_plugin {
    seqcell_plugin base;
    int64_t future_field;
} fut_plugin;

static const seqcell_host *fut_host;

typedef struct fut_cell {
    int64_t input_size, hidden_size, rank_option;
    fut_param_desc params[3];
    fut_state_desc states[2];
    fut_layout layout;
} fut_cell;

static seqcell_status fut_fail(char *error, size_t capacity, const char *message) {
    if (error != NULL && capacity > 0) snprintf(error, capacity, "%s", message);
    return SEQCELL_ERR_INVALID_ARGUMENT;
}

static void fut_param(fut_param_desc *d, int32_t role, const char *name, int32_t rank, int64_t rows, int64_t cols,
                      const char *gates) {
    memset(d, 0xAB, sizeof *d); /* garbage in the future fields: the host must not read them */
    d->base.struct_size = sizeof *d;
    d->base.role = role;
    d->base.name = name;
    d->base.rank = rank;
    d->base.reserved0 = 0;
    d->base.shape[0] = rows;
    d->base.shape[1] = cols;
    d->base.gate_order = gates;
    d->base.description = "future parameter";
    d->base.init = SEQCELL_INIT_ROLE; /* today's (ABI 1.2) fields are set; only the appended ones are garbage */
    d->base.flags = 0;
    d->base.init_a = 0;
    d->base.init_b = 0;
}

static seqcell_status fut_create(const seqcell_config *config, void **instance, char *error, size_t capacity) {
    fut_cell *c;
    int i;
    if (config == NULL || instance == NULL || config->struct_size < sizeof *config || config->num_options != 2 ||
        config->options == NULL || config->input_size < 1 || config->hidden_size < 1 || config->input_size > 4096 ||
        config->hidden_size > 4096) {
        return fut_fail(error, capacity, "future: bad config");
    }
    c = fut_host->aligned_alloc(fut_host->context, 64, sizeof *c);
    if (c == NULL) return fut_fail(error, capacity, "future: out of memory");
    memset(c, 0, sizeof *c);
    c->input_size = config->input_size;
    c->hidden_size = config->hidden_size;
    c->rank_option = (int64_t)config->options[0];
    fut_param(&c->params[0], SEQCELL_ROLE_INPUT_WEIGHT, "weight", 2, c->hidden_size, c->input_size, "a,b");
    fut_param(&c->params[1], SEQCELL_ROLE_BIAS, "bias", 1, c->hidden_size, 0, "");
    fut_param(&c->params[2], SEQCELL_ROLE_OTHER, "scale", 1, c->rank_option, 0, "");
    for (i = 0; i < 2; i++) {
        memset(&c->states[i], 0xCD, sizeof c->states[i]);
        c->states[i].base.struct_size = sizeof c->states[i];
        c->states[i].base.reserved0 = 0;
        c->states[i].base.name = i == 0 ? "h" : "c";
        c->states[i].base.size = i == 0 ? c->hidden_size : 2 * c->hidden_size;
    }
    c->layout.base.struct_size = sizeof c->layout;
    c->layout.base.num_params = 3;
    c->layout.base.num_states = 2;
    c->layout.base.output_size = c->hidden_size;
    c->layout.base.params = &c->params[0].base;
    c->layout.base.states = &c->states[0].base;
    c->layout.future_field = -1;
    *instance = c;
    return SEQCELL_OK;
}

static void fut_destroy(void *instance) {
    if (instance != NULL) fut_host->aligned_free(fut_host->context, instance);
}

static const seqcell_layout *fut_layout_fn(const void *instance) {
    return instance != NULL ? &((const fut_cell *)instance)->layout.base : NULL;
}

static size_t fut_workspace_size(const void *instance, int64_t seq_len, int64_t batch, int32_t mode) {
    (void)instance;
    (void)seq_len;
    (void)batch;
    (void)mode;
    return 64;
}

/* Output = 0 everywhere, states carried unchanged: enough to run through the host. */
static seqcell_status fut_forward(const void *instance, const seqcell_forward_args *a, char *error, size_t capacity) {
    const fut_cell *c = instance;
    int64_t i, s;
    if (c == NULL || a == NULL || a->struct_size < sizeof *a || a->output == NULL) {
        return fut_fail(error, capacity, "future: bad forward arguments");
    }
    for (i = 0; i < a->seq_len * a->batch * c->hidden_size; i++) a->output[i] = 0.0f;
    for (s = 0; s < 2 && a->final_states != NULL; s++) {
        int64_t n = a->batch * (s == 0 ? c->hidden_size : 2 * c->hidden_size);
        const float *h0 = a->initial_states != NULL ? a->initial_states[s] : NULL;
        if (a->final_states[s] == NULL) continue;
        for (i = 0; i < n; i++) a->final_states[s][i] = h0 != NULL ? h0[i] : 0.0f;
    }
    return SEQCELL_OK;
}

static seqcell_status fut_backward(const void *instance, const seqcell_backward_args *a, char *error,
                                   size_t capacity) {
    (void)instance;
    (void)a;
    return fut_fail(error, capacity, "future: no backward");
}

#if defined(FX_MIXED_SIZES)
#define FUT_SECOND_OPTION_SIZE sizeof(seqcell_option_desc)
#else
#define FUT_SECOND_OPTION_SIZE sizeof(fut_option_desc)
#endif

static const fut_option_desc fut_options[2] = {
    {{sizeof(fut_option_desc), SEQCELL_OPTION_INT, "scale_rows", "rows of scale", 2.0, 1.0, 8.0, NULL}, 7, "x"},
    {{FUT_SECOND_OPTION_SIZE, SEQCELL_OPTION_CHOICE, "flavour", "a choice", 1.0, 0.0, 0.0, "plain,spiced,sweet"},
     9, "y"},
};

static const fut_cell_desc fut_cell_descriptor = {
    {sizeof(fut_cell_desc), 2u, 3u, 4u, "future", "fixture: descriptors from a later minor", 2, 0,
     &fut_options[0].base, fut_create, fut_destroy, fut_layout_fn, fut_workspace_size, fut_forward, fut_backward,
     NULL, NULL, NULL, 0u},
    NULL};
static const seqcell_cell_desc *const fut_cells[] = {&fut_cell_descriptor.base};
static const fut_plugin fut_plugin_descriptor = {
    {sizeof(fut_plugin), SEQCELL_ABI_MAJOR, SEQCELL_ABI_MINOR + 1u, 1, "fixture: a later minor", fut_cells}, 42};

SEQCELL_EXPORT seqcell_status seqcell_plugin_entry(uint32_t host_abi_major, uint32_t host_abi_minor,
                                                   const seqcell_host *host, const seqcell_plugin **plugin,
                                                   char *error, size_t error_capacity) {
    (void)host_abi_minor;
    if (host_abi_major != SEQCELL_ABI_MAJOR) {
        if (error != NULL && error_capacity > 0) snprintf(error, error_capacity, "ABI 1 only");
        return SEQCELL_ERR_VERSION;
    }
    fut_host = host;
    *plugin = &fut_plugin_descriptor.base;
    return SEQCELL_OK;
}
