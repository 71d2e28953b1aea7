#ifndef SEQCELL_MPI_H
#define SEQCELL_MPI_H
/* Open MPI, loaded at run time: SeqCell builds and runs without MPI installed, and only a
   process started by `mpirun` with more than one rank loads it.

   The calls below are resolved with dlopen/dlsym against Open MPI's ABI (libmpi.so.40,
   shared by Open MPI 3.x, 4.x and 5.x). In that ABI a handle (MPI_Comm, MPI_Datatype,
   MPI_Op, MPI_Errhandler) is a pointer, and the predefined handles are the addresses of
   exported objects: MPI_COMM_WORLD is &ompi_mpi_comm_world, MPI_FLOAT &ompi_mpi_float,
   MPI_SUM &ompi_mpi_op_sum, and MPI_IN_PLACE is (void *)1. MPICH's ABI (integer handles)
   is different and is not supported.

   Every call returns 0 on success, or an MPI error code (or -1 for a loader failure) and a
   message in the caller's buffer `err` of `cap` bytes. */
#include <stddef.h>
#include <stdint.h>

/* Opens the library (`path`, or "libmpi.so.40" when NULL) and resolves every symbol. */
int sc_mpi_load(const char *path, char *err, size_t cap);

/* MPI_Init_thread (MPI_THREAD_FUNNELED: only the main thread calls MPI), then rank and
   size of MPI_COMM_WORLD; errors on the world communicator are returned, not fatal. */
int sc_mpi_init(int *rank, int *size, char *err, size_t cap);

/* In-place sums over every rank of MPI_COMM_WORLD. `count` may exceed INT_MAX. */
int sc_mpi_allreduce_sum_f32(float *values, int64_t count, char *err, size_t cap);
int sc_mpi_allreduce_sum_f64(double *values, int64_t count, char *err, size_t cap);

/* `bytes` bytes from every rank into `out` (size * bytes), in rank order. */
int sc_mpi_allgather_bytes(const void *send, void *out, int32_t bytes, char *err, size_t cap);

/* `bytes` bytes of `buffer` from rank `root` to every rank. */
int sc_mpi_bcast_bytes(void *buffer, int32_t bytes, int32_t root, char *err, size_t cap);

int sc_mpi_barrier(char *err, size_t cap);

/* MPI_Abort on MPI_COMM_WORLD: ends every rank of the job with `code`. */
void sc_mpi_abort(int code);

int sc_mpi_finalize(char *err, size_t cap);

/* MPI_Wtime. */
double sc_mpi_wtime(void);

#endif
