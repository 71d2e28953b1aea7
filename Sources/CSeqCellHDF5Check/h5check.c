/* See include/sc_h5check.h. */
#define _GNU_SOURCE
#include "sc_h5check.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Built with AddressSanitizer (scripts/sanitize.sh)? Then the check child can send its reports
   to a file of their own: libhdf5's faults on damaged files happen there by design. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SC_H5CHECK_ASAN 1
#endif
#endif
#if !defined(SC_H5CHECK_ASAN) && defined(__SANITIZE_ADDRESS__)
#define SC_H5CHECK_ASAN 1
#endif
#ifdef SC_H5CHECK_ASAN
void __sanitizer_set_report_path(const char *path);
#endif

/* ---------------------------------------------------------------------------------------------
   Opening a file image without copying it. */

/* Property lists hold references to udata (udata_copy/udata_free); an open core file holds the
   image without one (image_malloc with FILE_OPEN, image_free with FILE_CLOSE). The image and
   udata are released when both counts are zero. */
typedef struct {
    void *image;
    size_t size;
    int owned;
    unsigned references;
    unsigned open_files;
} image_udata;

static void release_if_unused(image_udata *u) {
    if (u->references == 0 && u->open_files == 0) {
        if (u->owned) free(u->image);
        free(u);
    }
}

static void *image_malloc(size_t size, H5FD_file_image_op_t op, void *udata) {
    image_udata *u = udata;
    if (size > u->size) return NULL;
    if (op == H5FD_FILE_IMAGE_OP_FILE_OPEN) u->open_files++;
    return u->image;
}

static void *image_memcpy(void *dest, const void *src, size_t size, H5FD_file_image_op_t op, void *udata) {
    image_udata *u = udata;
    (void)op;
    /* Every copy libhdf5 asks for is of the image onto itself: nothing to do. */
    if (dest == u->image && src == u->image && size <= u->size) return dest;
    return NULL;
}

static void *image_realloc(void *ptr, size_t size, H5FD_file_image_op_t op, void *udata) {
    (void)ptr; (void)size; (void)op; (void)udata;
    return NULL; /* read-only */
}

static herr_t image_free(void *ptr, H5FD_file_image_op_t op, void *udata) {
    image_udata *u = udata;
    (void)ptr;
    if (op == H5FD_FILE_IMAGE_OP_FILE_CLOSE && u->open_files > 0) {
        u->open_files--;
        release_if_unused(u);
    }
    return 0;
}

static void *udata_copy(void *udata) {
    image_udata *u = udata;
    u->references++;
    return u;
}

static herr_t udata_free(void *udata) {
    image_udata *u = udata;
    if (u->references > 0) u->references--;
    release_if_unused(u);
    return 0;
}

hid_t sc_h5_open_image(void *image, size_t size, int take_ownership) {
    if (image == NULL || size == 0) return -1;
    image_udata *u = calloc(1, sizeof *u);
    if (u == NULL) return -1;
    u->image = image;
    u->size = size;
    u->owned = 0;
    u->references = 1; /* the caller's, released below */
    hid_t file = -1;
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl >= 0) {
        H5FD_file_image_callbacks_t callbacks = {
            image_malloc, image_memcpy, image_realloc, image_free, udata_copy, udata_free, u};
        if (H5Pset_fapl_core(fapl, 64 * 1024, 0) >= 0 && H5Pset_file_image_callbacks(fapl, &callbacks) >= 0 &&
            H5Pset_file_image(fapl, image, size) >= 0) {
            /* libhdf5 shares an open file with a later open of the same name (the core driver
               compares names): every image gets a name of its own. */
            static unsigned long long opened = 0;
            char name[64];
            snprintf(name, sizeof name, "seqcell-image-%ld-%llu", (long)getpid(),
                     __atomic_fetch_add(&opened, 1, __ATOMIC_RELAXED));
            file = H5Fopen(name, H5F_ACC_RDONLY, fapl);
        }
        H5Pclose(fapl);
    }
    if (file >= 0 && take_ownership) u->owned = 1;
    udata_free(u);
    return file;
}

/* ---------------------------------------------------------------------------------------------
   Errors and messages. */

typedef struct {
    char *buffer;
    size_t capacity;
} reason_buffer;

static herr_t innermost_entry(unsigned n, const H5E_error2_t *entry, void *data) {
    reason_buffer *out = data;
    /* Walking upward, entry 0 is the innermost: it says what actually went wrong. */
    if (n == 0 && entry && entry->desc) snprintf(out->buffer, out->capacity, "%s", entry->desc);
    return 0;
}

void sc_h5_error_reason(char *buffer, size_t capacity) {
    if (capacity == 0) return;
    buffer[0] = 0;
    reason_buffer out = {buffer, capacity};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost_entry, &out);
}

static void say(char *message, size_t capacity, const char *format, ...) {
    if (message == NULL || capacity == 0) return;
    va_list args;
    va_start(args, format);
    vsnprintf(message, capacity, format, args);
    va_end(args);
}

herr_t sc_h5_disable_plugins(void) { return H5PLset_loading_state(0); }

/* ---------------------------------------------------------------------------------------------
   Policy: links. */

static void describe_link(hid_t location, const char *name, const H5L_info_t *info, char *message, size_t capacity) {
    char value[512] = {0};
    size_t size = info->u.val_size;
    if (size > 0 && size < sizeof value && H5Lget_val(location, name, value, sizeof value, H5P_DEFAULT) >= 0) {
        value[sizeof value - 1] = 0;
        if (info->type == H5L_TYPE_SOFT) {
            say(message, capacity, "it is a soft link (to '%s'); SeqCell reads only hard links", value);
            return;
        }
        if (info->type == H5L_TYPE_EXTERNAL) {
            const char *file = NULL, *object = NULL;
            unsigned flags = 0;
            if (H5Lunpack_elink_val(value, size, &flags, &file, &object) >= 0 && file && object) {
                say(message, capacity, "it is an external link (to '%s' in file '%s'); SeqCell reads only hard links",
                    object, file);
                return;
            }
        }
    }
    H5Eclear2(H5E_DEFAULT);
    switch (info->type) {
    case H5L_TYPE_SOFT: say(message, capacity, "it is a soft link; SeqCell reads only hard links"); break;
    case H5L_TYPE_EXTERNAL: say(message, capacity, "it is an external link; SeqCell reads only hard links"); break;
    default: say(message, capacity, "it is a user-defined link (type %d); SeqCell reads only hard links", (int)info->type);
    }
}

int sc_h5_check_path(hid_t location, const char *path, char *message, size_t capacity,
                     char *component, size_t component_capacity) {
    size_t length = strlen(path);
    char *prefix = malloc(length + 1);
    if (prefix == NULL) return -1;
    size_t start = 0;
    if (path[0] == '/') {
        prefix[0] = '/';
        start = 1;
    }
    size_t used = start;
    int result = 0;
    size_t i = start;
    while (i <= length) {
        size_t end = i;
        while (end < length && path[end] != '/') end++;
        if (end > i) {
            if (used > start) prefix[used++] = '/';
            memcpy(prefix + used, path + i, end - i);
            used += end - i;
            prefix[used] = 0;
            htri_t exists = H5Lexists(location, prefix, H5P_DEFAULT);
            if (exists < 0) { result = -1; break; }
            if (exists == 0) { result = SC_H5_PATH_MISSING; break; }
            H5L_info_t info;
            if (H5Lget_info(location, prefix, &info, H5P_DEFAULT) < 0) { result = -1; break; }
            if (info.type != H5L_TYPE_HARD) {
                describe_link(location, prefix, &info, message, capacity);
                if (component && component_capacity) snprintf(component, component_capacity, "%s", prefix);
                result = SC_H5CHECK_REFUSED;
                break;
            }
            if (end < length) {
                /* More components follow: only a group has members. */
                H5O_info_t object;
                if (H5Oget_info_by_name2(location, prefix, &object, H5O_INFO_BASIC, H5P_DEFAULT) < 0) {
                    result = -1;
                    break;
                }
                if (object.type != H5O_TYPE_GROUP) { result = SC_H5_PATH_MISSING; break; }
            }
        }
        i = end + 1;
    }
    if (used == start && result == 0 && start == 0) result = SC_H5_PATH_MISSING; /* an empty path names nothing */
    free(prefix);
    return result;
}

/* ---------------------------------------------------------------------------------------------
   Policy: datasets. */

/* Data stored compressed may expand at most this much; and no dataset may declare more. */
#define SC_MAX_RATIO 1024ull
#define SC_MAX_DATASET_BYTES (16ull << 30)

static const char *layout_name(H5D_layout_t layout) {
    switch (layout) {
    case H5D_COMPACT: return "compact";
    case H5D_CONTIGUOUS: return "contiguous";
    case H5D_CHUNKED: return "chunked";
    case H5D_VIRTUAL: return "virtual";
    default: return "unknown";
    }
}

int sc_h5_dataset_policy(hid_t dataset, uint64_t file_size, char *message, size_t capacity) {
    int result = -1;
    hid_t dcpl = -1, type = -1, space = -1;
    if ((dcpl = H5Dget_create_plist(dataset)) < 0) goto done;
    H5D_layout_t layout = H5Pget_layout(dcpl);
    if (layout < 0) goto done;
    if (layout == H5D_VIRTUAL) {
        say(message, capacity,
            "it is a virtual dataset (its data would come from other datasets or files); "
            "SeqCell reads only data stored in the file itself");
        result = SC_H5CHECK_REFUSED;
        goto done;
    }
    if (layout != H5D_COMPACT && layout != H5D_CONTIGUOUS && layout != H5D_CHUNKED) {
        say(message, capacity, "its storage layout is unknown (%d)", (int)layout);
        result = SC_H5CHECK_DAMAGED;
        goto done;
    }
    int externals = H5Pget_external_count(dcpl);
    if (externals < 0) goto done;
    if (externals > 0) {
        char name[256] = {0};
        off_t offset = 0;
        hsize_t size = 0;
        if (H5Pget_external(dcpl, 0, sizeof name, name, &offset, &size) >= 0) {
            name[sizeof name - 1] = 0;
            say(message, capacity,
                "its data is stored in the external file '%s'; SeqCell reads only data stored in the file itself", name);
        } else {
            H5Eclear2(H5E_DEFAULT);
            say(message, capacity, "its data is stored in external files; SeqCell reads only data stored in the file itself");
        }
        result = SC_H5CHECK_REFUSED;
        goto done;
    }
    int filters = H5Pget_nfilters(dcpl);
    if (filters < 0) goto done;
    if (filters > 32) {
        say(message, capacity, "it declares %d filters", filters);
        result = SC_H5CHECK_DAMAGED;
        goto done;
    }
    for (int i = 0; i < filters; i++) {
        unsigned flags = 0, config = 0;
        size_t values = 0;
        char name[128] = {0};
        H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)i, &flags, &values, NULL, sizeof name, name, &config);
        if (id < 0) goto done;
        name[sizeof name - 1] = 0;
        htri_t available = H5Zfilter_avail(id);
        H5Eclear2(H5E_DEFAULT);
        if (available <= 0) {
            if (name[0])
                say(message, capacity,
                    "it needs HDF5 filter %d ('%s'), which is not built into this libhdf5; "
                    "SeqCell never loads filter plugins",
                    (int)id, name);
            else
                say(message, capacity,
                    "it needs HDF5 filter %d, which is not built into this libhdf5; SeqCell never loads filter plugins",
                    (int)id);
            result = SC_H5CHECK_REFUSED;
            goto done;
        }
    }
    if ((type = H5Dget_type(dataset)) < 0 || (space = H5Dget_space(dataset)) < 0) goto done;
    hssize_t points = H5Sget_simple_extent_npoints(space);
    size_t element = H5Tget_size(type);
    if (points < 0 || element == 0) goto done;
    int variable = H5Tget_class(type) == H5T_VLEN || H5Tis_variable_str(type) > 0;
    uint64_t count = (uint64_t)points;
    uint64_t declared = 0;
    if (__builtin_mul_overflow(count, (uint64_t)element, &declared) || declared > SC_MAX_DATASET_BYTES) {
        say(message, capacity, "it declares %llu elements of %zu bytes, more than SeqCell reads from one dataset",
            (unsigned long long)count, element);
        result = SC_H5CHECK_DAMAGED;
        goto done;
    }
    if (count == 0) {
        result = 0;
        goto done;
    }
    hsize_t stored = H5Dget_storage_size(dataset);
    H5Eclear2(H5E_DEFAULT);
    if (stored == 0) {
        say(message, capacity, "it declares %llu elements (%llu bytes) but holds no data: it was never written",
            (unsigned long long)count, (unsigned long long)declared);
        result = SC_H5CHECK_DAMAGED;
        goto done;
    }
    if (stored > file_size) {
        say(message, capacity, "it claims %llu bytes of storage in a %llu-byte file",
            (unsigned long long)stored, (unsigned long long)file_size);
        result = SC_H5CHECK_DAMAGED;
        goto done;
    }
    if (layout == H5D_CONTIGUOUS || layout == H5D_COMPACT) {
        if (!variable && stored != declared) {
            say(message, capacity, "its %s storage holds %llu bytes but its shape and type need %llu",
                layout_name(layout), (unsigned long long)stored, (unsigned long long)declared);
            result = SC_H5CHECK_DAMAGED;
            goto done;
        }
        if (layout == H5D_CONTIGUOUS) {
            haddr_t offset = H5Dget_offset(dataset);
            H5Eclear2(H5E_DEFAULT);
            if (offset == HADDR_UNDEF) {
                say(message, capacity, "it declares %llu elements but holds no data: it was never written",
                    (unsigned long long)count);
                result = SC_H5CHECK_DAMAGED;
                goto done;
            }
            if (offset > file_size || stored > file_size - offset) {
                say(message, capacity,
                    "its data (%llu bytes at offset %llu) lies beyond the end of the %llu-byte file: the file is "
                    "truncated or damaged",
                    (unsigned long long)stored, (unsigned long long)offset, (unsigned long long)file_size);
                result = SC_H5CHECK_DAMAGED;
                goto done;
            }
        }
    } else {
        uint64_t limit = 0;
        if (__builtin_mul_overflow((uint64_t)stored, SC_MAX_RATIO, &limit)) limit = UINT64_MAX;
        if (declared > limit) {
            say(message, capacity,
                "it declares %llu bytes stored in %llu bytes, more than %llu:1: the file is damaged or hostile",
                (unsigned long long)declared, (unsigned long long)stored, (unsigned long long)SC_MAX_RATIO);
            result = SC_H5CHECK_DAMAGED;
            goto done;
        }
    }
    result = 0;
done:
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    if (dcpl >= 0) H5Pclose(dcpl);
    return result;
}

/* ---------------------------------------------------------------------------------------------
   The walk, and the clean copy it writes.

   Reading a damaged file can corrupt libhdf5's heap without crashing (e.g. a variable-length
   string whose global-heap object is longer than its descriptor says). So the parent never
   reads the untrusted image with libhdf5 at all: the child copies what it read (groups, hard
   links, attributes and datasets of the types SeqCell reads) into a new file image written by
   libhdf5 itself, and the parent opens that. */

#define SC_MAX_DEPTH 64
#define SC_SLAB_BYTES (64u << 20)

typedef struct {
    haddr_t address;
    char *copy; /* the object's path in the copy */
} visit;

typedef struct {
    uint64_t image_size;
    const sc_h5check_limits *limits;
    sc_h5check_result *result; /* shared with the parent when run in a child */
    visit *visited;
    size_t visited_count, visited_capacity;
    uint64_t objects;
    hid_t out; /* the copy, or -1 */
} walker;

static void progress(walker *w, const char *object) {
    snprintf(w->result->object, sizeof w->result->object, "%s", object);
}

static int stop(walker *w, int status, const char *format, ...) {
    w->result->status = status;
    va_list args;
    va_start(args, format);
    vsnprintf(w->result->message, sizeof w->result->message, format, args);
    va_end(args);
    return -1;
}

/* A libhdf5 failure while walking: the file is damaged. */
static int damaged(walker *w, const char *what) {
    char reason[512];
    sc_h5_error_reason(reason, sizeof reason);
    H5Eclear2(H5E_DEFAULT);
    if (strstr(reason, "memory allocation failed") || strstr(reason, "can't allocate"))
        return stop(w, SC_H5CHECK_MEMORY, "needed more than %llu MiB of memory",
                    (unsigned long long)(w->limits->memory_bytes >> 20));
    if (reason[0]) return stop(w, SC_H5CHECK_DAMAGED, "%s: %s", what, reason);
    return stop(w, SC_H5CHECK_DAMAGED, "%s failed", what);
}

static int copy_failed(walker *w) {
    char reason[512];
    sc_h5_error_reason(reason, sizeof reason);
    H5Eclear2(H5E_DEFAULT);
    return stop(w, SC_H5CHECK_DAMAGED, "it cannot be copied%s%s", reason[0] ? ": " : "", reason);
}

static char *join(const char *parent, const char *name) {
    size_t a = strlen(parent), b = strlen(name);
    char *out = malloc(a + b + 2);
    if (!out) return NULL;
    if (a == 1 && parent[0] == '/') sprintf(out, "/%s", name);
    else sprintf(out, "%s/%s", parent, name);
    return out;
}

/* How the walk reads elements of `type`: 1 = as the file type itself (atomic numbers, fixed
   strings, and other types without pointers), 2 = as variable-length strings, 0 = not at all
   (references and variable-length sequences, which SeqCell never reads: not copied). */
static int element_mode(hid_t type) {
    H5T_class_t class = H5Tget_class(type);
    if (class == H5T_STRING) {
        htri_t variable = H5Tis_variable_str(type);
        if (variable < 0) return -1;
        return variable ? 2 : 1;
    }
    if (class == H5T_REFERENCE || class == H5T_VLEN || class < 0) return class < 0 ? -1 : 0;
    htri_t has_vlen = H5Tdetect_class(type, H5T_VLEN), has_reference = H5Tdetect_class(type, H5T_REFERENCE);
    if (has_vlen < 0 || has_reference < 0) return -1;
    return has_vlen || has_reference ? 0 : 1;
}

/* The memory type for reading (and writing the copy): the caller closes it. */
static hid_t memory_type_for(hid_t type, int mode) {
    if (mode == 1) return H5Tcopy(type);
    H5T_cset_t cset = H5Tget_cset(type);
    hid_t memory = H5Tcopy(H5T_C_S1);
    if (memory < 0) return -1;
    if (cset < 0 || H5Tset_size(memory, H5T_VARIABLE) < 0 || H5Tset_cset(memory, cset) < 0) {
        H5Tclose(memory);
        return -1;
    }
    return memory;
}

/* A copy of `space` for the copy: simple spaces get maximum dimensions equal to their extent. */
static hid_t copy_space(hid_t space) {
    H5S_class_t class = H5Sget_simple_extent_type(space);
    if (class == H5S_SIMPLE) {
        int ndims = H5Sget_simple_extent_ndims(space);
        hsize_t dims[H5S_MAX_RANK];
        if (ndims < 0 || ndims > H5S_MAX_RANK || H5Sget_simple_extent_dims(space, dims, NULL) < 0) return -1;
        return H5Screate_simple(ndims, dims, NULL);
    }
    if (class == H5S_SCALAR || class == H5S_NULL) return H5Screate(class);
    return -1;
}

static int copy_attribute(walker *w, hid_t attribute, hid_t out_object, const char *name) {
    hid_t type = H5Aget_type(attribute), space = -1, memory = -1, copy_space_id = -1, copy = -1;
    int status = 0;
    void *buffer = NULL;
    if (type < 0 || (space = H5Aget_space(attribute)) < 0) { status = damaged(w, "reading the attribute"); goto done; }
    int ndims = H5Sget_simple_extent_ndims(space);
    hssize_t points = H5Sget_simple_extent_npoints(space);
    if (ndims < 0 || ndims > H5S_MAX_RANK || points < 0) { status = damaged(w, "reading the attribute"); goto done; }
    int mode = element_mode(type);
    if (mode < 0) { status = damaged(w, "reading the attribute's type"); goto done; }
    if (mode == 0) goto done;
    if ((memory = memory_type_for(type, mode)) < 0) { status = damaged(w, "reading the attribute's type"); goto done; }
    size_t element = mode == 2 ? sizeof(char *) : H5Tget_size(memory);
    if (element == 0) { status = damaged(w, "reading the attribute's type"); goto done; }
    uint64_t total = 0;
    if (__builtin_mul_overflow((uint64_t)points, (uint64_t)element, &total) || total > w->limits->max_attribute_bytes) {
        status = stop(w, SC_H5CHECK_DAMAGED, "it declares %lld elements of %zu bytes, more than SeqCell reads from an attribute",
                      (long long)points, element);
        goto done;
    }
    buffer = calloc(1, total ? total : 1);
    if (!buffer) { status = stop(w, SC_H5CHECK_MEMORY, "ran out of memory"); goto done; }
    if (points > 0 && H5Aread(attribute, memory, buffer) < 0) { status = damaged(w, "reading the attribute"); goto done; }
    if (mode == 2) {
        char **strings = buffer;
        uint64_t bytes = 0;
        for (hssize_t i = 0; i < points; i++)
            if (strings[i]) bytes += strnlen(strings[i], w->limits->max_attribute_bytes + 1);
        if (bytes > w->limits->max_attribute_bytes) {
            status = stop(w, SC_H5CHECK_DAMAGED, "its strings hold %llu bytes, more than SeqCell reads",
                          (unsigned long long)bytes);
            goto reclaim;
        }
    }
    if (w->out >= 0) {
        if ((copy_space_id = copy_space(space)) < 0 ||
            (copy = H5Acreate2(out_object, name, memory, copy_space_id, H5P_DEFAULT, H5P_DEFAULT)) < 0 ||
            (points > 0 && H5Awrite(copy, memory, buffer) < 0))
            status = copy_failed(w);
    }
reclaim:
    if (mode == 2 && points > 0) H5Dvlen_reclaim(memory, space, H5P_DEFAULT, buffer);
done:
    free(buffer);
    if (copy >= 0) H5Aclose(copy);
    if (copy_space_id >= 0) H5Sclose(copy_space_id);
    if (memory >= 0) H5Tclose(memory);
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    return status;
}

static int walk_attributes(walker *w, hid_t object, hid_t out_object, const char *path) {
    H5O_info_t info;
    if (H5Oget_info2(object, &info, H5O_INFO_NUM_ATTRS) < 0) return damaged(w, "listing its attributes");
    if (info.num_attrs > w->limits->max_attributes_per_object)
        return stop(w, SC_H5CHECK_DAMAGED, "it has %llu attributes, more than SeqCell reads",
                    (unsigned long long)info.num_attrs);
    for (hsize_t i = 0; i < info.num_attrs; i++) {
        char name[1024];
        ssize_t length = H5Aget_name_by_idx(object, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name, H5P_DEFAULT);
        if (length < 0) return damaged(w, "listing its attributes");
        if ((size_t)length >= sizeof name)
            return stop(w, SC_H5CHECK_DAMAGED, "an attribute name is %zd bytes long", length);
        char *where = malloc(strlen(path) + strlen(name) + 2);
        if (!where) return stop(w, SC_H5CHECK_MEMORY, "ran out of memory");
        sprintf(where, "%s@%s", path, name);
        progress(w, where);
        free(where);
        htri_t exists = H5Aexists(object, name);
        if (exists <= 0)
            return exists < 0 ? damaged(w, "looking up the attribute")
                              : stop(w, SC_H5CHECK_DAMAGED, "the attribute is listed but cannot be found");
        hid_t attribute = H5Aopen(object, name, H5P_DEFAULT);
        if (attribute < 0) return damaged(w, "opening the attribute");
        int status = copy_attribute(w, attribute, out_object, name);
        H5Aclose(attribute);
        if (status) return status;
    }
    progress(w, path);
    return 0;
}

/* Reads a dataset by slabs of its first dimension (so the walk's memory stays bounded) and
   writes each slab to the copy. */
static int copy_dataset(walker *w, hid_t dataset, hid_t out_parent, const char *name, const char *path) {
    const char *what = "reading the dataset";
    hid_t type = H5Dget_type(dataset), space = -1, memory = -1, out_space = -1, out = -1, file_space = -1;
    int status = 0;
    void *buffer = NULL;
    if (type < 0 || (space = H5Dget_space(dataset)) < 0) { status = damaged(w, what); goto done; }
    int ndims = H5Sget_simple_extent_ndims(space);
    hsize_t dims[H5S_MAX_RANK];
    hssize_t points = H5Sget_simple_extent_npoints(space);
    if (ndims < 0 || ndims > H5S_MAX_RANK || points < 0 || H5Sget_simple_extent_dims(space, dims, NULL) < 0) {
        status = damaged(w, what);
        goto done;
    }
    int mode = element_mode(type);
    if (mode < 0) { status = damaged(w, "reading the dataset's type"); goto done; }
    if (mode == 0) goto done; /* not copied: SeqCell reads no such dataset */
    if ((memory = memory_type_for(type, mode)) < 0) { status = damaged(w, "reading the dataset's type"); goto done; }
    if (w->out >= 0) {
        if ((out_space = copy_space(space)) < 0 ||
            (out = H5Dcreate2(out_parent, name, memory, out_space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)) < 0) {
            status = copy_failed(w);
            goto done;
        }
    }
    progress(w, path);
    if (points == 0) goto done;
    size_t element = mode == 2 ? sizeof(char *) : H5Tget_size(memory);
    uint64_t total = 0;
    if (element == 0 || __builtin_mul_overflow((uint64_t)points, (uint64_t)element, &total)) {
        status = stop(w, SC_H5CHECK_DAMAGED, "it declares %lld elements", (long long)points);
        goto done;
    }
    hsize_t rows = ndims > 0 ? dims[0] : 1;
    uint64_t row_bytes = rows ? total / rows : total;
    hsize_t per_slab = row_bytes ? (hsize_t)(SC_SLAB_BYTES / row_bytes) : rows;
    if (per_slab == 0) per_slab = 1;
    if (ndims == 0 || per_slab >= rows) per_slab = rows;
    buffer = calloc(1, per_slab * row_bytes ? per_slab * row_bytes : 1);
    if (!buffer) { status = stop(w, SC_H5CHECK_MEMORY, "ran out of memory"); goto done; }
    if (ndims > 0 && (file_space = H5Scopy(space)) < 0) { status = damaged(w, what); goto done; }
    for (hsize_t start = 0; start < rows && status == 0; start += per_slab) {
        hsize_t take = rows - start < per_slab ? rows - start : per_slab;
        hid_t memory_space = H5S_ALL, out_file_space = H5S_ALL;
        if (ndims > 0) {
            hsize_t offset[H5S_MAX_RANK] = {0}, count[H5S_MAX_RANK];
            memcpy(count, dims, sizeof(hsize_t) * (size_t)ndims);
            offset[0] = start;
            count[0] = take;
            if (H5Sselect_hyperslab(file_space, H5S_SELECT_SET, offset, NULL, count, NULL) < 0 ||
                (memory_space = H5Screate_simple(ndims, count, NULL)) < 0) {
                status = damaged(w, what);
                break;
            }
            if (out >= 0) {
                if ((out_file_space = H5Scopy(out_space)) < 0 ||
                    H5Sselect_hyperslab(out_file_space, H5S_SELECT_SET, offset, NULL, count, NULL) < 0) {
                    status = copy_failed(w);
                    H5Sclose(memory_space);
                    if (out_file_space >= 0) H5Sclose(out_file_space);
                    break;
                }
            }
        }
        if (H5Dread(dataset, memory, memory_space, ndims > 0 ? file_space : H5S_ALL, H5P_DEFAULT, buffer) < 0)
            status = damaged(w, what);
        else {
            if (out >= 0 && H5Dwrite(out, memory, memory_space, out_file_space, H5P_DEFAULT, buffer) < 0)
                status = copy_failed(w);
            if (mode == 2) H5Dvlen_reclaim(memory, ndims > 0 ? memory_space : space, H5P_DEFAULT, buffer);
        }
        if (memory_space != H5S_ALL) H5Sclose(memory_space);
        if (out_file_space != H5S_ALL && out_file_space >= 0) H5Sclose(out_file_space);
    }
done:
    free(buffer);
    if (file_space >= 0) H5Sclose(file_space);
    if (out >= 0) {
        if (status == 0 && walk_attributes(w, dataset, out, path)) status = -1;
        H5Dclose(out);
    }
    if (out_space >= 0) H5Sclose(out_space);
    if (memory >= 0) H5Tclose(memory);
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    return status;
}

static int walk_dataset(walker *w, hid_t dataset, hid_t out_parent, const char *name, const char *path) {
    char message[SC_H5CHECK_TEXT];
    message[0] = 0;
    int policy = sc_h5_dataset_policy(dataset, w->image_size, message, sizeof message);
    if (policy < 0) return damaged(w, "reading the dataset's layout");
    if (policy > 0) return stop(w, policy, "%s", message);
    if (w->out < 0 && walk_attributes(w, dataset, -1, path)) return -1;
    return copy_dataset(w, dataset, out_parent, name, path);
}

typedef struct {
    char **names;
    size_t count, capacity;
    uint64_t limit;
    int overflow;
} link_list;

static herr_t collect_link(hid_t group, const char *name, const H5L_info_t *info, void *data) {
    (void)group; (void)info;
    link_list *list = data;
    if (list->count >= list->limit) {
        list->overflow = 1;
        return 1;
    }
    if (list->count == list->capacity) {
        size_t capacity = list->capacity ? list->capacity * 2 : 16;
        char **names = realloc(list->names, capacity * sizeof *names);
        if (!names) return -1;
        list->names = names;
        list->capacity = capacity;
    }
    list->names[list->count] = strdup(name);
    if (!list->names[list->count]) return -1;
    list->count++;
    return 0;
}

/* The copy's path of an object walked before, or NULL (and records `address` at `path`). */
static const char *seen(walker *w, haddr_t address, const char *path, int *failed) {
    *failed = 0;
    for (size_t i = 0; i < w->visited_count; i++)
        if (w->visited[i].address == address) return w->visited[i].copy;
    if (w->visited_count == w->visited_capacity) {
        size_t capacity = w->visited_capacity ? w->visited_capacity * 2 : 64;
        visit *visited = realloc(w->visited, capacity * sizeof *visited);
        if (!visited) { *failed = 1; return NULL; }
        w->visited = visited;
        w->visited_capacity = capacity;
    }
    char *copy = strdup(path);
    if (!copy) { *failed = 1; return NULL; }
    w->visited[w->visited_count].address = address;
    w->visited[w->visited_count].copy = copy;
    w->visited_count++;
    return NULL;
}

static int walk_group(walker *w, hid_t group, hid_t out_group, const char *path, int depth);

static int walk_object(walker *w, hid_t parent, hid_t out_parent, const char *name, const char *path, int depth) {
    progress(w, path);
    H5L_info_t link;
    if (H5Lget_info(parent, name, &link, H5P_DEFAULT) < 0) return damaged(w, "reading the link");
    if (link.type != H5L_TYPE_HARD) {
        char message[SC_H5CHECK_TEXT];
        describe_link(parent, name, &link, message, sizeof message);
        return stop(w, SC_H5CHECK_REFUSED, "%s", message);
    }
    H5O_info_t info;
    if (H5Oget_info_by_name2(parent, name, &info, H5O_INFO_BASIC, H5P_DEFAULT) < 0)
        return damaged(w, "reading the object's header");
    if (++w->objects > w->limits->max_objects)
        return stop(w, SC_H5CHECK_DAMAGED, "the file holds more than %llu objects",
                    (unsigned long long)w->limits->max_objects);
    int failed = 0;
    const char *before = seen(w, info.addr, path, &failed);
    if (failed) return stop(w, SC_H5CHECK_MEMORY, "ran out of memory");
    if (before) {
        /* A second hard link to an object already walked (or a cycle): link the copy too. */
        if (w->out >= 0 && H5Lcreate_hard(w->out, before, out_parent, name, H5P_DEFAULT, H5P_DEFAULT) < 0)
            H5Eclear2(H5E_DEFAULT); /* the first copy was not made (a type SeqCell never reads) */
        return 0;
    }
    hid_t object = H5Oopen(parent, name, H5P_DEFAULT);
    if (object < 0) return damaged(w, "opening the object");
    int status;
    switch (info.type) {
    case H5O_TYPE_GROUP: {
        hid_t out_group = -1;
        if (w->out >= 0 && (out_group = H5Gcreate2(out_parent, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)) < 0) {
            status = copy_failed(w);
            break;
        }
        status = walk_group(w, object, out_group, path, depth + 1);
        if (out_group >= 0) H5Gclose(out_group);
        break;
    }
    case H5O_TYPE_DATASET: status = walk_dataset(w, object, out_parent, name, path); break;
    case H5O_TYPE_NAMED_DATATYPE: status = walk_attributes(w, object, -1, path); break;
    default: status = stop(w, SC_H5CHECK_DAMAGED, "the object's type is unknown"); break;
    }
    H5Oclose(object);
    return status;
}

static int walk_group(walker *w, hid_t group, hid_t out_group, const char *path, int depth) {
    progress(w, path);
    if (depth > SC_MAX_DEPTH) return stop(w, SC_H5CHECK_DAMAGED, "groups are nested more than %d deep", SC_MAX_DEPTH);
    if (walk_attributes(w, group, out_group, path)) return -1;
    H5G_info_t info;
    if (H5Gget_info(group, &info) < 0) return damaged(w, "listing the group");
    if (info.nlinks > w->limits->max_links_per_group)
        return stop(w, SC_H5CHECK_DAMAGED, "the group has %llu members, more than SeqCell reads",
                    (unsigned long long)info.nlinks);
    link_list list = {NULL, 0, 0, w->limits->max_links_per_group, 0};
    hsize_t index = 0;
    herr_t iterated = H5Literate(group, H5_INDEX_NAME, H5_ITER_INC, &index, collect_link, &list);
    int status = 0;
    if (iterated < 0) status = damaged(w, "listing the group");
    else if (list.overflow)
        status = stop(w, SC_H5CHECK_DAMAGED, "the group has more than %llu members",
                      (unsigned long long)list.limit);
    else if (list.count != info.nlinks)
        status = stop(w, SC_H5CHECK_DAMAGED, "the group says it has %llu members but lists %zu",
                      (unsigned long long)info.nlinks, list.count);
    for (size_t i = 0; i < list.count && status == 0; i++) {
        /* The name-index lookup the Swift readers do, too. */
        char name[1024];
        ssize_t length = H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name, H5P_DEFAULT);
        if (length < 0) { status = damaged(w, "listing the group"); break; }
        char *child = join(path, list.names[i]);
        if (!child) { status = stop(w, SC_H5CHECK_MEMORY, "ran out of memory"); break; }
        status = walk_object(w, group, out_group, list.names[i], child, depth);
        free(child);
    }
    for (size_t i = 0; i < list.count; i++) free(list.names[i]);
    free(list.names);
    return status;
}

/* Walks the image; with `clean`, also returns the copy's image (from malloc) in *clean. */
static void walk(const void *image, size_t size, const sc_h5check_limits *limits, sc_h5check_result *result,
                 void **clean, size_t *clean_size) {
    walker w = {size, limits, result, NULL, 0, 0, 0, -1};
    result->status = SC_H5CHECK_OK;
    progress(&w, "");
    sc_h5_disable_plugins();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t file = sc_h5_open_image((void *)image, size, 0);
    if (file < 0) {
        damaged(&w, "opening the file");
        return;
    }
    if (clean) {
        hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
        static unsigned long long made = 0;
        char name[64];
        snprintf(name, sizeof name, "seqcell-clean-%ld-%llu", (long)getpid(),
                 __atomic_fetch_add(&made, 1, __ATOMIC_RELAXED));
        size_t increment = size / 4 > (1u << 20) ? size / 4 : (1u << 20);
        /* The default (oldest) format: H5Fget_file_image of a version-2 superblock gives an
           image whose superblock checksum no longer matches in libhdf5 1.10. */
        if (fapl < 0 || H5Pset_fapl_core(fapl, increment, 0) < 0 ||
            (w.out = H5Fcreate(name, H5F_ACC_TRUNC, H5P_DEFAULT, fapl)) < 0)
            stop(&w, SC_H5CHECK_SYSTEM, "cannot create the copy in memory");
        if (fapl >= 0) H5Pclose(fapl);
    }
    hid_t root = result->status == SC_H5CHECK_OK ? H5Gopen2(file, "/", H5P_DEFAULT) : -1;
    hid_t out_root = w.out >= 0 ? H5Gopen2(w.out, "/", H5P_DEFAULT) : -1;
    if (result->status != SC_H5CHECK_OK) {
    } else if (root < 0) damaged(&w, "opening the root group");
    else {
        progress(&w, "/");
        H5O_info_t info;
        int failed = 0;
        if (H5Oget_info2(root, &info, H5O_INFO_BASIC) < 0) damaged(&w, "reading the root group's header");
        else if (seen(&w, info.addr, "/", &failed), failed) stop(&w, SC_H5CHECK_MEMORY, "ran out of memory");
        else walk_group(&w, root, out_root, "/", 0);
    }
    if (root >= 0) H5Gclose(root);
    if (out_root >= 0) H5Gclose(out_root);
    H5Fclose(file);
    if (w.out >= 0) {
        if (result->status == SC_H5CHECK_OK) {
            progress(&w, "");
            ssize_t length = H5Fflush(w.out, H5F_SCOPE_GLOBAL) < 0 ? -1 : H5Fget_file_image(w.out, NULL, 0);
            void *buffer = length > 0 ? malloc((size_t)length) : NULL;
            if (!buffer || H5Fget_file_image(w.out, buffer, (size_t)length) != length) {
                free(buffer);
                H5Eclear2(H5E_DEFAULT);
                stop(&w, SC_H5CHECK_SYSTEM, "cannot make the copy in memory");
            } else {
                *clean = buffer;
                *clean_size = (size_t)length;
            }
        }
        H5Fclose(w.out);
    }
    for (size_t i = 0; i < w.visited_count; i++) free(w.visited[i].copy);
    free(w.visited);
}

void sc_h5check_image_in_process(const void *image, size_t size, const sc_h5check_limits *limits,
                                 sc_h5check_result *result) {
    memset(result, 0, sizeof *result);
    walk(image, size, limits, result, NULL, NULL);
}

/* ---------------------------------------------------------------------------------------------
   The child process. */

void sc_h5check_default_limits(sc_h5check_limits *limits, uint64_t image_size) {
    /* 10 s, plus 1 s for every 50 MiB of file. */
    limits->timeout_seconds = 10.0 + (double)(image_size / (50u << 20));
    const char *timeout = getenv("SEQCELL_HDF5_CHECK_TIMEOUT");
    if (timeout && *timeout) {
        double seconds = strtod(timeout, NULL);
        if (seconds > 0) limits->timeout_seconds = seconds;
    }
    /* The walk reads datasets in slabs of 64 MiB; the copy it writes is held twice. */
    limits->memory_bytes = (512ull << 20) + 3 * image_size;
    limits->max_objects = 1000000;
    limits->max_links_per_group = 1000000;
    limits->max_attributes_per_object = 100000;
    /* Attributes are small (a Keras model config is the largest SeqCell reads, kilobytes). */
    limits->max_attribute_bytes = 16u << 20;
}

/* libhdf5's API lock, taken around fork so the child never inherits it held by another thread.
   These are libhdf5 internals of thread-safe builds (1.8-1.12): looked up at run time, used only
   when present. `H5_g` begins with the API mutex. */
typedef herr_t (*mutex_function)(void *);
static void hdf5_api_lock(int lock) {
    static int resolved = 0;
    static mutex_function lock_fn = NULL, unlock_fn = NULL;
    static void *mutex = NULL;
    if (!resolved) {
        lock_fn = (mutex_function)dlsym(RTLD_DEFAULT, "H5TS_mutex_lock");
        unlock_fn = (mutex_function)dlsym(RTLD_DEFAULT, "H5TS_mutex_unlock");
        mutex = dlsym(RTLD_DEFAULT, "H5_g");
        resolved = 1;
    }
    if (!mutex || !lock_fn || !unlock_fn) return;
    if (lock) lock_fn(mutex);
    else unlock_fn(mutex);
}

static uint64_t mapped_bytes(void) {
    FILE *statm = fopen("/proc/self/statm", "re");
    unsigned long long pages = 0;
    if (statm) {
        if (fscanf(statm, "%llu", &pages) != 1) pages = 0;
        fclose(statm);
    }
    return pages * (uint64_t)sysconf(_SC_PAGESIZE);
}

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

void sc_h5check_image(const void *image, size_t size, const sc_h5check_limits *limits, sc_h5check_result *result,
                      void **clean, size_t *clean_size) {
    memset(result, 0, sizeof *result);
    *clean = NULL;
    *clean_size = 0;
    sc_h5check_result *shared =
        mmap(NULL, sizeof *shared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED) {
        result->status = SC_H5CHECK_SYSTEM;
        snprintf(result->message, sizeof result->message, "cannot map shared memory: %s", strerror(errno));
        return;
    }
    memset(shared, 0, sizeof *shared);
    shared->status = -1; /* the child sets the final status */
    int copy_fd = memfd_create("seqcell-hdf5-copy", MFD_CLOEXEC);
    if (copy_fd < 0) {
        result->status = SC_H5CHECK_SYSTEM;
        snprintf(result->message, sizeof result->message, "cannot create a memory file: %s", strerror(errno));
        munmap(shared, sizeof *shared);
        return;
    }
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
        close(copy_fd);
        result->status = SC_H5CHECK_SYSTEM;
        snprintf(result->message, sizeof result->message, "cannot create a pipe: %s", strerror(errno));
        munmap(shared, sizeof *shared);
        return;
    }
    uint64_t base = mapped_bytes();
    pid_t parent = getpid();
    hdf5_api_lock(1);
    pid_t child = fork();
    if (child == 0) {
        /* The child: only libhdf5 and libc from here, then _exit. */
        close(pipe_fds[0]);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(120);
        /* The caller's crash handlers (e.g. Swift's backtracer) must not run here: a crash of
           libhdf5 is a result, reported by the parent. */
#ifdef SC_H5CHECK_ASAN
        /* Sanitizer reports of this child go where scripts/sanitize.sh can tell them apart:
           a fault inside libhdf5 on a damaged file is contained here, which is the point. */
        const char *child_log = getenv("SEQCELL_SANITIZER_CHECK_CHILD_LOG");
        if (child_log && *child_log) __sanitizer_set_report_path(child_log);
#endif
        const int fatal[] = {SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE, SIGTRAP, SIGSYS, SIGXCPU};
        for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++) signal(fatal[i], SIG_DFL);
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        /* Nothing from the child reaches the user's terminal (glibc prints "free(): invalid
           pointer" before aborting on a corrupted heap): the parent reports what happened. */
        int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null_fd >= 0) {
            dup2(null_fd, STDOUT_FILENO);
            dup2(null_fd, STDERR_FILENO);
            if (null_fd > STDERR_FILENO) close(null_fd);
        }
        struct rlimit memory = {base + limits->memory_bytes, base + limits->memory_bytes};
        setrlimit(RLIMIT_AS, &memory);
        rlim_t cpu = (rlim_t)limits->timeout_seconds + 2;
        struct rlimit seconds = {cpu, cpu + 1};
        setrlimit(RLIMIT_CPU, &seconds);
        struct rlimit core = {0, 0};
        setrlimit(RLIMIT_CORE, &core);
        hdf5_api_lock(0);
        void *copy = NULL;
        size_t copy_size = 0;
        walk(image, size, limits, shared, &copy, &copy_size);
        if (shared->status == SC_H5CHECK_OK) {
            const char *p = copy;
            size_t left = copy_size;
            while (left > 0) {
                ssize_t n = write(copy_fd, p, left);
                if (n < 0 && errno == EINTR) continue;
                if (n <= 0) {
                    shared->status = SC_H5CHECK_SYSTEM;
                    snprintf(shared->message, sizeof shared->message, "cannot write the checked copy: %s",
                             strerror(errno));
                    break;
                }
                p += n;
                left -= (size_t)n;
            }
            shared->clean_size = copy_size;
        }
        _exit(0);
    }
    int fork_error = errno;
    hdf5_api_lock(0);
    close(pipe_fds[1]);
    if (child < 0) {
        close(copy_fd);
        close(pipe_fds[0]);
        munmap(shared, sizeof *shared);
        result->status = SC_H5CHECK_SYSTEM;
        snprintf(result->message, sizeof result->message, "cannot start a process: %s", strerror(fork_error));
        return;
    }
    double deadline = now_seconds() + limits->timeout_seconds;
    int wstatus = 0, exited = 0, timed_out = 0;
    for (;;) {
        pid_t done = waitpid(child, &wstatus, WNOHANG);
        if (done == child) { exited = 1; break; }
        double left = deadline - now_seconds();
        if (left <= 0) { timed_out = 1; break; }
        struct pollfd fd = {pipe_fds[0], POLLIN, 0};
        int wait_ms = left > 0.05 ? 50 : (int)(left * 1000) + 1;
        (void)poll(&fd, 1, wait_ms);
    }
    if (timed_out) {
        kill(child, SIGKILL);
        while (waitpid(child, &wstatus, 0) < 0 && errno == EINTR) {}
    }
    (void)exited;
    close(pipe_fds[0]);
    memcpy(result->object, shared->object, sizeof result->object);
    result->object[sizeof result->object - 1] = 0;
    if (timed_out) {
        result->status = SC_H5CHECK_TIMEOUT;
        snprintf(result->message, sizeof result->message, "did not finish within %g s", limits->timeout_seconds);
    } else if (WIFSIGNALED(wstatus)) {
        int sig = WTERMSIG(wstatus);
        result->signal = sig;
        if (sig == SIGXCPU || sig == SIGKILL) {
            result->status = SC_H5CHECK_TIMEOUT;
            snprintf(result->message, sizeof result->message, "did not finish within %g s of CPU time",
                     limits->timeout_seconds);
        } else {
            result->status = SC_H5CHECK_CRASHED;
            snprintf(result->message, sizeof result->message, "crashed the HDF5 library (%s)", strsignal(sig));
        }
    } else if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0 && shared->status >= 0) {
        result->status = shared->status;
        memcpy(result->message, shared->message, sizeof result->message);
        result->message[sizeof result->message - 1] = 0;
        if (result->status == SC_H5CHECK_OK) {
            /* The checked copy: exactly as long as the child said, read whole. */
            struct stat info;
            uint64_t length = shared->clean_size;
            char *buffer = NULL;
            if (fstat(copy_fd, &info) == 0 && (uint64_t)info.st_size == length && length > 0 &&
                (buffer = malloc((size_t)length)) != NULL) {
                size_t done = 0;
                while (done < length) {
                    ssize_t n = pread(copy_fd, buffer + done, (size_t)length - done, (off_t)done);
                    if (n < 0 && errno == EINTR) continue;
                    if (n <= 0) break;
                    done += (size_t)n;
                }
                if (done == length) {
                    *clean = buffer;
                    *clean_size = (size_t)length;
                    result->clean_size = length;
                } else {
                    free(buffer);
                    buffer = NULL;
                }
            }
            if (!buffer) {
                result->status = SC_H5CHECK_SYSTEM;
                snprintf(result->message, sizeof result->message, "cannot read the checked copy (%llu bytes)",
                         (unsigned long long)length);
            }
        }
    } else {
        /* libhdf5 ended the process itself (an exit of its own after a fatal error). */
        result->status = SC_H5CHECK_CRASHED;
        snprintf(result->message, sizeof result->message, "made the HDF5 library end the process (exit status %d)",
                 WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1);
    }
    close(copy_fd);
    munmap(shared, sizeof *shared);
}
