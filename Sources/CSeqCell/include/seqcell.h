/*
 * seqcell.h — the SeqCell cell plugin ABI.
 *
 * This header is the one contract between the SeqCell host (the core library, the CLI,
 * the tests) and every recurrent cell, built-in or third-party. A plugin is a shared
 * library that includes this header, links nothing but libc and libm, and exports one
 * symbol: seqcell_plugin_entry (see the end of this file).
 *
 * Rules (docs/PLUGIN_ABI.md has the full text):
 *   - Plain C99, fixed-width integers, no enums inside structs.
 *   - Every struct starts with uint32_t struct_size. Fields are only ever appended; a
 *     reader never touches a field that lies beyond the struct_size it was given.
 *   - The host checks every struct a plugin fills (seqcell_plugin, seqcell_cell_desc,
 *     seqcell_layout, the option/param/state descriptors) against its ABI 1.0 size, never
 *     against the size in the host's own header, and copies min(struct_size, its own size)
 *     bytes into a zeroed struct: fields the plugin lacks read as zero/NULL. struct_size must
 *     be at most 4096.
 *   - Arrays of descriptor structs (options, params, states): the element stride is the
 *     struct_size of element 0, and every element must declare that same struct_size (at
 *     least the ABI 1.0 size, a multiple of 8). Fill each element's struct_size with
 *     sizeof the element type you compiled against and a later host reads the array right.
 *   - Strings from a plugin are NUL-terminated within 256 bytes (ids, names, gate orders)
 *     or 16 KiB (descriptions, choice lists). Sizes a plugin declares (parameter shapes,
 *     state and output widths, workspace bytes) are checked before any allocation: each
 *     dimension at most 2^31-1, each buffer at most 2^40 bytes.
 *   - A plugin reads an appended field of a struct the host passes (seqcell_host) only when
 *     that struct's struct_size reaches it, and a host calls an appended function of a
 *     plugin's struct only when the plugin's struct_size reaches it and it is not NULL.
 *   - SEQCELL_ABI_MAJOR must match exactly. SEQCELL_ABI_MINOR grows when fields or
 *     functions are appended; a host of a newer minor accepts plugins of an older one.
 *   - Every call that can fail returns a seqcell_status and writes a NUL-terminated
 *     message into a caller-owned buffer. Nothing allocated by one side is freed by the
 *     other. A plugin never aborts, exits or prints on bad arguments.
 *   - All tensors are float32, dense, row-major, owned by the host.
 */
#ifndef SEQCELL_H
#define SEQCELL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SEQCELL_ABI_MAJOR 1u
#define SEQCELL_ABI_MINOR 3u

#if defined(_WIN32)
#define SEQCELL_EXPORT __declspec(dllexport)
#else
#define SEQCELL_EXPORT __attribute__((visibility("default")))
#endif

/* ---- status codes ------------------------------------------------------------------ */
typedef int32_t seqcell_status;
#define SEQCELL_OK 0
#define SEQCELL_ERR_INVALID_ARGUMENT 1 /* a shape, size, option or pointer is wrong      */
#define SEQCELL_ERR_UNSUPPORTED 2      /* valid request this cell cannot do              */
#define SEQCELL_ERR_NO_MEMORY 3        /* an allocation through the host failed          */
#define SEQCELL_ERR_VERSION 4          /* ABI major mismatch or too-old host             */
#define SEQCELL_ERR_INTERNAL 5         /* anything else; the message says what            */

/* ---- host services ----------------------------------------------------------------- */
#define SEQCELL_NO_TRANS 0
#define SEQCELL_TRANS 1

#define SEQCELL_LOG_DEBUG 0
#define SEQCELL_LOG_INFO 1
#define SEQCELL_LOG_WARNING 2
#define SEQCELL_LOG_ERROR 3

/*
 * What the host offers every plugin. The table and every function in it stay valid for
 * the life of the process. All functions are safe to call from any thread.
 */
typedef struct seqcell_host {
    uint32_t struct_size;
    uint32_t abi_major;
    uint32_t abi_minor;
    uint32_t reserved0;
    void *context; /* passed back as the first argument of every function below */

    /*
     * Row-major single-precision GEMM:
     *   C[m,n] = alpha * op(A)[m,k] * op(B)[k,n] + beta * C[m,n]
     * op(X) is X or X^T per trans_a / trans_b (SEQCELL_NO_TRANS / SEQCELL_TRANS).
     * lda/ldb/ldc are the row strides of A, B, C as stored. With beta == 0, C is not read.
     */
    void (*sgemm)(void *context, int32_t trans_a, int32_t trans_b, int64_t m, int64_t n,
                  int64_t k, float alpha, const float *a, int64_t lda, const float *b,
                  int64_t ldb, float beta, float *c, int64_t ldc);

    /* Aligned allocation (alignment a power of two >= sizeof(void*)). NULL on failure.
       Memory from aligned_alloc is released only with aligned_free. */
    void *(*aligned_alloc)(void *context, size_t alignment, size_t size);
    void (*aligned_free)(void *context, void *pointer);

    /* Log a message (level SEQCELL_LOG_*). The host decides where it goes. */
    void (*log)(void *context, int32_t level, const char *message);

    /* ---- ABI 1.1: present when struct_size reaches them (a 1.0 host has neither) ---- */
    /* Runs fn(arg, i) for every i in [0, count) on up to parallel_threads() threads (the
       caller's among them) and returns when all have returned. Calls may run in any order
       and concurrently; fn must not call parallel_for itself. */
    void (*parallel_for)(void *context, int64_t count, void (*fn)(void *arg, int64_t index), void *arg);
    /* How many threads a parallel_for called now from this thread would use: 1 when the
       host runs single-threaded or the caller already runs inside host parallelism (say,
       one direction of a bidirectional layer while the other runs beside it). */
    int32_t (*parallel_threads)(void *context);
} seqcell_host;

/* ---- options ----------------------------------------------------------------------- */
#define SEQCELL_OPTION_INT 1    /* an integer, passed as an exact double               */
#define SEQCELL_OPTION_FLOAT 2  /* a real number                                        */
#define SEQCELL_OPTION_CHOICE 3 /* one of `choices`; passed as its 0-based index        */

typedef struct seqcell_option_desc {
    uint32_t struct_size;
    int32_t kind;            /* SEQCELL_OPTION_* */
    const char *name;        /* [a-z0-9_]+, unique within the cell: "activation"        */
    const char *description;
    double default_value;    /* for CHOICE: the index of the default choice            */
    double min_value;        /* INT and FLOAT: inclusive bounds                          */
    double max_value;
    const char *choices;     /* CHOICE: comma-separated names, "tanh,relu"; else NULL  */
} seqcell_option_desc;

/* ---- a configured cell -------------------------------------------------------------- */
typedef struct seqcell_config {
    uint32_t struct_size;
    int32_t num_options;    /* equals the descriptor's num_options                      */
    int64_t input_size;     /* I >= 1 */
    int64_t hidden_size;    /* H >= 1 */
    const double *options;  /* num_options values, in descriptor order                   */
} seqcell_config;

/* Roles tell the host how to initialise and how importers map a parameter. */
#define SEQCELL_ROLE_OTHER 0
#define SEQCELL_ROLE_INPUT_WEIGHT 1     /* multiplies x_t                                */
#define SEQCELL_ROLE_RECURRENT_WEIGHT 2 /* multiplies a state                            */
#define SEQCELL_ROLE_BIAS 3

typedef struct seqcell_param_desc {
    uint32_t struct_size;
    int32_t role;            /* SEQCELL_ROLE_*                                          */
    const char *name;        /* [a-z0-9_]+, unique within the cell: "weight_ih"         */
    int32_t rank;            /* 1 or 2                                                  */
    int32_t reserved0;
    int64_t shape[2];        /* shape[0] is rows; for rank 1 only shape[0] is used      */
    const char *gate_order;  /* how rows are split into gate blocks, "i,f,g,o"; "" if none */
    const char *description;

    /* ---- ABI 1.2: read when struct_size reaches them (an older plugin's read as zero) ---- */
    int32_t init;            /* SEQCELL_INIT_*: how the host initialises this parameter      */
    int32_t flags;           /* SEQCELL_PARAM_* bits                                          */
    double init_a;           /* UNIFORM: lower bound; CONSTANT: the value                     */
    double init_b;           /* UNIFORM: upper bound (init_a <= init_b); else unused          */
} seqcell_param_desc;

/* ABI 1.2: parameter initialisation beyond the roles. */
#define SEQCELL_INIT_ROLE 0     /* by role, as before 1.2: U(-1/sqrt(H), 1/sqrt(H)) (or the host's
                                   chosen scheme for recurrent weights)                          */
#define SEQCELL_INIT_UNIFORM 1  /* every entry drawn from U(init_a, init_b)                       */
#define SEQCELL_INIT_CONSTANT 2 /* every entry equal to init_a                                     */

/* ABI 1.2: parameter flags. */
#define SEQCELL_PARAM_OPTIONAL 1u /* a checkpoint may omit it: the host then uses init_a when
                                     init is CONSTANT, else zeros                               */

typedef struct seqcell_state_desc {
    uint32_t struct_size;
    int32_t reserved0;
    const char *name;        /* "h", "c"; the first state is the one the output comes from */
    int64_t size;            /* per-sample width of this state                          */
} seqcell_state_desc;

typedef struct seqcell_layout {
    uint32_t struct_size;
    int32_t num_params;
    int32_t num_states;
    int64_t output_size;     /* O: width of output[t,b,:]                               */
    const seqcell_param_desc *params;
    const seqcell_state_desc *states;
} seqcell_layout;

/* ---- whole-sequence calls ----------------------------------------------------------- */
#define SEQCELL_MODE_INFERENCE 0
#define SEQCELL_MODE_TRAINING 1

/*
 * Forward over a whole sequence, forward in time.
 *   input            [T, B, I]
 *   lengths          [B] with 1 <= lengths[b] <= T, or NULL (all T). For t >= lengths[b]
 *                    the output row is zero and the state is not updated, so every final
 *                    state is the state after step lengths[b]-1.
 *   params           num_params pointers, each to a tensor of its declared shape
 *   initial_states   NULL (all zero) or num_states pointers, each [B, size] or NULL (zero)
 *   output           [T, B, O]
 *   final_states     num_states pointers, each [B, size]; an entry may be NULL (not wanted)
 *   workspace        workspace_size(mode) bytes, 64-byte aligned. In TRAINING mode the
 *                    host keeps it untouched until the matching backward call.
 *   params_epoch     (ABI 1.3; read only when struct_size reaches it, else 0) 0, or a number
 *                    the host promises for INFERENCE calls: every call passing the same
 *                    nonzero epoch passes the same params pointers with the same contents,
 *                    the same instance and the same workspace, and nothing else writes that
 *                    workspace between them. A cell may then keep what it derives from the
 *                    params (packed weights) in the workspace from one such call to the
 *                    next. A cell must re-derive when anything it relies on differs (T, B,
 *                    pointers), and must treat 0, or any TRAINING call, as "derive anew".
 *                    A host never reuses a nonzero epoch for other params.
 * Reverse and bidirectional layers are the host's business: a cell only runs forward.
 */
typedef struct seqcell_forward_args {
    uint32_t struct_size;
    int32_t mode;            /* SEQCELL_MODE_* */
    int64_t seq_len;         /* T >= 1 */
    int64_t batch;           /* B >= 1 */
    const float *input;
    const int32_t *lengths;
    const float *const *params;
    const float *const *initial_states;
    float *output;
    float *const *final_states;
    void *workspace;
    size_t workspace_size;
    /* ---- ABI 1.3: read only when struct_size reaches it ---- */
    uint64_t params_epoch;
} seqcell_forward_args;

/*
 * Backward over the whole sequence, after a TRAINING-mode forward with the same input,
 * lengths, params, initial states and workspace. Backward may use the workspace as scratch,
 * so it runs at most once per training forward.
 *   grad_output        [T, B, O] or NULL (zero)
 *   grad_final_states  NULL, or num_states pointers each [B, size] or NULL (zero)
 *   grad_input         [T, B, I] written (overwritten), or NULL (not wanted)
 *   grad_initial_states NULL, or num_states pointers [B, size] written, each may be NULL
 *   grad_params        num_params pointers; gradients are ADDED to what is there. From ABI
 *                      1.2 an entry may be NULL (a frozen parameter, its gradient not wanted),
 *                      but only for a cell whose descriptor sets SEQCELL_CELL_FROZEN_GRADIENTS
 */
typedef struct seqcell_backward_args {
    uint32_t struct_size;
    int32_t reserved0;
    int64_t seq_len;
    int64_t batch;
    const float *input;
    const int32_t *lengths;
    const float *const *params;
    const float *const *initial_states;
    const float *output;
    const float *grad_output;
    const float *const *grad_final_states;
    float *grad_input;
    float *const *grad_initial_states;
    float *const *grad_params;
    void *workspace;
    size_t workspace_size;
} seqcell_backward_args;

/* ---- the cell descriptor ------------------------------------------------------------- */
/*
 * An instance is a cell configured for one (input_size, hidden_size, options). It is
 * immutable after create: forward and backward may run concurrently on one instance
 * from many threads, each call with its own workspace.
 */
struct seqcell_cell_desc;
typedef struct seqcell_cell_desc {
    uint32_t struct_size;
    uint32_t version_major;  /* the cell's own version: a file written with x.y needs   */
    uint32_t version_minor;  /*   the same major and a minor >= y                        */
    uint32_t version_patch;
    const char *id;          /* stable id [a-z][a-z0-9_]*: "lstm"                        */
    const char *description;
    int32_t num_options;
    int32_t reserved0;
    const seqcell_option_desc *options;

    seqcell_status (*create)(const seqcell_config *config, void **instance,
                             char *error, size_t error_capacity);
    void (*destroy)(void *instance);
    /* Valid until destroy. */
    const seqcell_layout *(*layout)(const void *instance);
    /* Bytes of workspace forward needs for (T, B, mode); backward uses the same block. */
    size_t (*workspace_size)(const void *instance, int64_t seq_len, int64_t batch,
                             int32_t mode);
    seqcell_status (*forward)(const void *instance, const seqcell_forward_args *args,
                              char *error, size_t error_capacity);
    seqcell_status (*backward)(const void *instance, const seqcell_backward_args *args,
                               char *error, size_t error_capacity);

    /* ---- ABI 1.2: used when struct_size reaches them and they are not NULL ---- */
    /* Like create, but told which descriptor it creates (the plugin's own pointer, as listed
       in seqcell_plugin.cells) and that descriptor's user_data, so one function serves any
       number of cells. When set, the host calls it instead of create, which may then be NULL. */
    seqcell_status (*create_cell)(const struct seqcell_cell_desc *cell, void *user_data,
                                  const seqcell_config *config, void **instance,
                                  char *error, size_t error_capacity);
    void *user_data;         /* the plugin's own; the host only passes it to create_cell     */
    /* Like workspace_size, but able to fail: writes the byte count to *bytes and returns
       SEQCELL_OK, or returns an error (say, the size overflows size_t) with a message.
       When set, the host calls it instead of workspace_size. */
    seqcell_status (*workspace_size_checked)(const void *instance, int64_t seq_len, int64_t batch,
                                             int32_t mode, size_t *bytes, char *error,
                                             size_t error_capacity);
    uint64_t flags;          /* SEQCELL_CELL_* bits: what this cell promises beyond ABI 1.0 */
} seqcell_cell_desc;

/* ABI 1.2: cell flags. Declared, never inferred from abi_minor, so a 1.1 plugin rebuilt
   against this header promises nothing new until it sets them. */
#define SEQCELL_CELL_FROZEN_GRADIENTS 1u /* backward accepts NULL grad_params entries (frozen
                                            parameters) and adds nothing for them            */

/* ---- the library descriptor and entry point ------------------------------------------- */
typedef struct seqcell_plugin {
    uint32_t struct_size;
    uint32_t abi_major;      /* must equal the host's SEQCELL_ABI_MAJOR                  */
    uint32_t abi_minor;      /* the minor the plugin was built against                   */
    int32_t num_cells;
    const char *name;        /* human-readable library name                              */
    const seqcell_cell_desc *const *cells;
} seqcell_plugin;

/*
 * The one exported symbol. The host passes the ABI it speaks and its services table
 * (valid for the life of the process). The plugin sets *plugin to a descriptor that stays
 * valid for the life of the process and returns SEQCELL_OK, or returns
 * SEQCELL_ERR_VERSION (with a message) if it cannot speak host_abi_major, or if it needs
 * a host minor newer than host_abi_minor. Called once per library; the host never unloads.
 */
#define SEQCELL_ENTRY_SYMBOL "seqcell_plugin_entry"
typedef seqcell_status (*seqcell_entry_fn)(uint32_t host_abi_major, uint32_t host_abi_minor,
                                           const seqcell_host *host,
                                           const seqcell_plugin **plugin, char *error,
                                           size_t error_capacity);

/* Declared for C plugins so the compiler checks their definition; hidden from Swift, whose
   plugins define the symbol with @_cdecl and whose host only ever looks it up with dlsym. */
#if !defined(__swift__)
SEQCELL_EXPORT seqcell_status seqcell_plugin_entry(uint32_t host_abi_major,
                                                   uint32_t host_abi_minor,
                                                   const seqcell_host *host,
                                                   const seqcell_plugin **plugin,
                                                   char *error, size_t error_capacity);
#endif

#ifdef __cplusplus
}
#endif
#endif /* SEQCELL_H */
