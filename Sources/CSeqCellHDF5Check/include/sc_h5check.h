#ifndef SEQCELL_H5CHECK_H
#define SEQCELL_H5CHECK_H
/* Reading untrusted HDF5 files safely with libhdf5 1.10, which is not hardened against
   damaged or hostile files.

   sc_h5check_image() walks a whole HDF5 file image in a child process (fork, no exec) with a
   time and memory limit: every group and link, every attribute (read in full), every dataset's
   type, shape, layout, filters and data. A crash or hang of libhdf5 in the child becomes a
   result, never a crash or hang of the caller. The walk also applies SeqCell's policy (only
   hard links; no external or virtual storage; only filters built into libhdf5; every dataset
   bounded by what the file can hold; bounded counts).

   The policy functions below are also used in-process by the Swift wrapper (defence in depth).
   Only libhdf5 and libc are used. */
#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#define SC_H5CHECK_TEXT 1024

enum {
    SC_H5CHECK_OK = 0,
    /* The file breaks SeqCell's policy (a soft link, external storage, ...): message says how. */
    SC_H5CHECK_REFUSED = 1,
    /* libhdf5 reported an error reading the file, or a size or count is impossible. */
    SC_H5CHECK_DAMAGED = 2,
    /* The child died of a signal while reading `object` (signal in `signal`). */
    SC_H5CHECK_CRASHED = 3,
    /* The child did not finish within the time limit. */
    SC_H5CHECK_TIMEOUT = 4,
    /* The child ran out of its memory limit. */
    SC_H5CHECK_MEMORY = 5,
    /* fork, pipe or mmap failed in the caller; message says which. */
    SC_H5CHECK_SYSTEM = 6,
};

typedef struct {
    int status;
    int signal;
    /* The object being read when the walk stopped, e.g. "/model/layers/01" or "/model@format". */
    char object[SC_H5CHECK_TEXT];
    char message[SC_H5CHECK_TEXT];
    /* The size of the checked copy (SC_H5CHECK_OK from sc_h5check_image). */
    uint64_t clean_size;
} sc_h5check_result;

/* Limits of the walk; sc_h5check_default_limits() fills the defaults. */
typedef struct {
    double timeout_seconds;
    /* Address space the child may add to what the caller already maps. */
    uint64_t memory_bytes;
    uint64_t max_objects;
    uint64_t max_links_per_group;
    uint64_t max_attributes_per_object;
    /* The largest attribute (all elements, strings included) the walk reads. */
    uint64_t max_attribute_bytes;
} sc_h5check_limits;

void sc_h5check_default_limits(sc_h5check_limits *limits, uint64_t image_size);

/* Walks the HDF5 file image in a child process; the image is not modified. On SC_H5CHECK_OK,
   *clean receives (from malloc; the caller frees it) a new file image that the child wrote with
   libhdf5 from what it read: the groups, hard links, attributes and datasets SeqCell can read
   (datasets contiguous and unfiltered; references and variable-length sequences left out).
   Reading a damaged file can corrupt libhdf5's memory without crashing it, so callers read
   only the copy, never the untrusted image. */
void sc_h5check_image(const void *image, size_t size, const sc_h5check_limits *limits, sc_h5check_result *result,
                      void **clean, size_t *clean_size);

/* The walk itself, in the calling process, without the copy (for tests and fuzzing of the walker). */
void sc_h5check_image_in_process(const void *image, size_t size, const sc_h5check_limits *limits,
                                 sc_h5check_result *result);

/* Opens a file image read-only without copying it. With take_ownership, libhdf5 frees `image`
   (which must come from malloc) when the file and every object opened from it are closed;
   on failure the caller still owns it. Returns the file id or a negative value. */
hid_t sc_h5_open_image(void *image, size_t size, int take_ownership);

/* SeqCell's dataset policy for an open dataset: 0 when it may be read; SC_H5CHECK_REFUSED or
   SC_H5CHECK_DAMAGED with `message` saying why; -1 when libhdf5 failed (its error stack is
   left for the caller). `file_size` bounds contiguous data. */
int sc_h5_dataset_policy(hid_t dataset, uint64_t file_size, char *message, size_t capacity);

#define SC_H5_PATH_MISSING 16

/* Checks every component of `path` (relative to `location`) in turn: 0 when each exists and is
   a hard link; SC_H5_PATH_MISSING when a component does not exist (nothing after it is looked at);
   SC_H5CHECK_REFUSED with `message` when one is a soft, external or user-defined link (message
   names its kind and target; `component` receives the prefix that is that link); -1 when
   libhdf5 failed (its error stack is left for the caller). */
int sc_h5_check_path(hid_t location, const char *path, char *message, size_t capacity,
                     char *component, size_t component_capacity);

/* Turns off HDF5's dynamic filter-plugin loading for the process (idempotent). */
herr_t sc_h5_disable_plugins(void);

/* The innermost message of the calling thread's HDF5 error stack (empty if none). */
void sc_h5_error_reason(char *buffer, size_t capacity);

#endif
