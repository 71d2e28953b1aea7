#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include "seqcell_mpi.h"

/* Open MPI's handle types are pointers to opaque structs; void * stands for each. */
typedef void *sc_handle;

typedef int (*init_thread_fn)(int *, char ***, int, int *);
typedef int (*comm_int_fn)(sc_handle, int *);
typedef int (*allreduce_fn)(const void *, void *, int, sc_handle, sc_handle, sc_handle);
typedef int (*allgather_fn)(const void *, int, sc_handle, void *, int, sc_handle, sc_handle);
typedef int (*bcast_fn)(void *, int, sc_handle, int, sc_handle);
typedef int (*comm_fn)(sc_handle);
typedef int (*abort_fn)(sc_handle, int);
typedef int (*void_fn)(void);
typedef int (*set_errhandler_fn)(sc_handle, sc_handle);
typedef int (*error_string_fn)(int, char *, int *);
typedef double (*wtime_fn)(void);

#define SC_MPI_IN_PLACE ((void *)1)
#define SC_MPI_THREAD_FUNNELED 1

static struct {
    int loaded;
    init_thread_fn init_thread;
    comm_int_fn comm_rank, comm_size;
    allreduce_fn allreduce;
    allgather_fn allgather;
    bcast_fn bcast;
    comm_fn barrier;
    abort_fn abort_;
    void_fn finalize;
    set_errhandler_fn set_errhandler;
    error_string_fn error_string;
    wtime_fn wtime;
    sc_handle world, f32, f64, byte, sum, errors_return;
} mpi;

static int fail(char *err, size_t cap, const char *what, int code) {
    if (cap == 0) return code;
    char text[512] = "";
    int len = 0;
    if (code > 0 && mpi.error_string && mpi.error_string(code, text, &len) == 0 && len > 0) {
        text[len < (int)sizeof text ? len : (int)sizeof text - 1] = '\0';
        snprintf(err, cap, "%s failed: %s", what, text);
    } else {
        snprintf(err, cap, "%s failed (MPI error %d)", what, code);
    }
    return code;
}

int sc_mpi_load(const char *path, char *err, size_t cap) {
    if (mpi.loaded) return 0;
    const char *name = path ? path : "libmpi.so.40";
    /* RTLD_GLOBAL: Open MPI's own components (dlopen'ed by libmpi) resolve libmpi's symbols. */
    void *h = dlopen(name, RTLD_NOW | RTLD_GLOBAL);
    if (!h) {
        if (cap) snprintf(err, cap, "cannot load Open MPI's library %s", name);
        return -1;
    }
    struct { const char *symbol; void **slot; } table[] = {
        {"MPI_Init_thread", (void **)&mpi.init_thread},
        {"MPI_Comm_rank", (void **)&mpi.comm_rank},
        {"MPI_Comm_size", (void **)&mpi.comm_size},
        {"MPI_Allreduce", (void **)&mpi.allreduce},
        {"MPI_Allgather", (void **)&mpi.allgather},
        {"MPI_Bcast", (void **)&mpi.bcast},
        {"MPI_Barrier", (void **)&mpi.barrier},
        {"MPI_Abort", (void **)&mpi.abort_},
        {"MPI_Finalize", (void **)&mpi.finalize},
        {"MPI_Comm_set_errhandler", (void **)&mpi.set_errhandler},
        {"MPI_Error_string", (void **)&mpi.error_string},
        {"MPI_Wtime", (void **)&mpi.wtime},
        {"ompi_mpi_comm_world", &mpi.world},
        {"ompi_mpi_float", &mpi.f32},
        {"ompi_mpi_double", &mpi.f64},
        {"ompi_mpi_byte", &mpi.byte},
        {"ompi_mpi_op_sum", &mpi.sum},
        {"ompi_mpi_errors_return", &mpi.errors_return},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        void *p = dlsym(h, table[i].symbol);
        if (!p) {
            if (cap) snprintf(err, cap, "%s has no symbol %s: not Open MPI's ABI (libmpi.so.40)", name, table[i].symbol);
            memset(&mpi, 0, sizeof mpi);
            return -1;  /* the handle stays open: a library is never unloaded */
        }
        *table[i].slot = p;
    }
    mpi.loaded = 1;
    return 0;
}

#define NEED_LOADED(what) \
    do { if (!mpi.loaded) { if (cap) snprintf(err, cap, "%s: Open MPI is not loaded", what); return -1; } } while (0)

int sc_mpi_init(int *rank, int *size, char *err, size_t cap) {
    NEED_LOADED("MPI_Init_thread");
    int provided = 0, rc;
    if ((rc = mpi.init_thread(NULL, NULL, SC_MPI_THREAD_FUNNELED, &provided)) != 0)
        return fail(err, cap, "MPI_Init_thread", rc);
    if ((rc = mpi.set_errhandler(mpi.world, mpi.errors_return)) != 0)
        return fail(err, cap, "MPI_Comm_set_errhandler", rc);
    if ((rc = mpi.comm_rank(mpi.world, rank)) != 0) return fail(err, cap, "MPI_Comm_rank", rc);
    if ((rc = mpi.comm_size(mpi.world, size)) != 0) return fail(err, cap, "MPI_Comm_size", rc);
    return 0;
}

static int allreduce(void *values, int64_t count, size_t width, sc_handle type, char *err, size_t cap) {
    NEED_LOADED("MPI_Allreduce");
    char *p = values;
    /* MPI counts are int: large buffers go in chunks. */
    const int64_t chunk = INT_MAX / 2;
    for (int64_t done = 0; done < count; done += chunk) {
        int n = (int)(count - done < chunk ? count - done : chunk);
        int rc = mpi.allreduce(SC_MPI_IN_PLACE, p + done * (int64_t)width, n, type, mpi.sum, mpi.world);
        if (rc != 0) return fail(err, cap, "MPI_Allreduce", rc);
    }
    return 0;
}

int sc_mpi_allreduce_sum_f32(float *values, int64_t count, char *err, size_t cap) {
    return allreduce(values, count, sizeof(float), mpi.f32, err, cap);
}

int sc_mpi_allreduce_sum_f64(double *values, int64_t count, char *err, size_t cap) {
    return allreduce(values, count, sizeof(double), mpi.f64, err, cap);
}

int sc_mpi_allgather_bytes(const void *send, void *out, int32_t bytes, char *err, size_t cap) {
    NEED_LOADED("MPI_Allgather");
    int rc = mpi.allgather(send, bytes, mpi.byte, out, bytes, mpi.byte, mpi.world);
    return rc ? fail(err, cap, "MPI_Allgather", rc) : 0;
}

int sc_mpi_bcast_bytes(void *buffer, int32_t bytes, int32_t root, char *err, size_t cap) {
    NEED_LOADED("MPI_Bcast");
    int rc = mpi.bcast(buffer, bytes, mpi.byte, root, mpi.world);
    return rc ? fail(err, cap, "MPI_Bcast", rc) : 0;
}

int sc_mpi_barrier(char *err, size_t cap) {
    NEED_LOADED("MPI_Barrier");
    int rc = mpi.barrier(mpi.world);
    return rc ? fail(err, cap, "MPI_Barrier", rc) : 0;
}

void sc_mpi_abort(int code) {
    if (mpi.loaded) mpi.abort_(mpi.world, code);
}

int sc_mpi_finalize(char *err, size_t cap) {
    NEED_LOADED("MPI_Finalize");
    int rc = mpi.finalize();
    return rc ? fail(err, cap, "MPI_Finalize", rc) : 0;
}

double sc_mpi_wtime(void) { return mpi.loaded ? mpi.wtime() : 0; }
