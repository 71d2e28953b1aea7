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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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
   The walk. */

#define SC_MAX_DEPTH 64
#define SC_SLAB_BYTES (64u << 20)

typedef struct {
    uint64_t image_size;
    const sc_h5check_limits *limits;
    sc_h5check_result *result; /* shared with the parent when run in a child */
    haddr_t *visited;
    size_t visited_count, visited_capacity;
    uint64_t objects;
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
        return stop(w, SC_H5CHECK_MEMORY, "%s: needed more than %llu MiB of memory", what,
                    (unsigned long long)(w->limits->memory_bytes >> 20));
    if (reason[0]) return stop(w, SC_H5CHECK_DAMAGED, "%s: %s", what, reason);
    return stop(w, SC_H5CHECK_DAMAGED, "%s failed", what);
}

static char *join(const char *parent, const char *name) {
    size_t a = strlen(parent), b = strlen(name);
    char *out = malloc(a + b + 2);
    if (!out) return NULL;
    if (a == 1 && parent[0] == '/') sprintf(out, "/%s", name);
    else sprintf(out, "%s/%s", parent, name);
    return out;
}

/* Reads `count` elements of `type` with `read` into memory and releases them. */
typedef herr_t (*reader)(hid_t handle, hid_t memory_type, hid_t memory_space, hid_t file_space, void *buffer);

static herr_t read_attribute(hid_t handle, hid_t memory_type, hid_t memory_space, hid_t file_space, void *buffer) {
    (void)memory_space; (void)file_space;
    return H5Aread(handle, memory_type, buffer);
}

static herr_t read_dataset(hid_t handle, hid_t memory_type, hid_t memory_space, hid_t file_space, void *buffer) {
    return H5Dread(handle, memory_type, memory_space, file_space, H5P_DEFAULT, buffer);
}

/* The memory type the walk reads elements as, or 0 to skip the data (types SeqCell never reads).
   The caller closes a positive result. */
static hid_t memory_type_for(hid_t type, int *variable_string) {
    *variable_string = 0;
    switch (H5Tget_class(type)) {
    case H5T_INTEGER:
    case H5T_FLOAT:
        return H5Tget_native_type(type, H5T_DIR_ASCEND);
    case H5T_STRING: {
        htri_t variable = H5Tis_variable_str(type);
        if (variable < 0) return -1;
        if (!variable) return H5Tcopy(type);
        *variable_string = 1;
        H5T_cset_t cset = H5Tget_cset(type);
        hid_t memory = H5Tcopy(H5T_C_S1);
        if (memory < 0) return -1;
        if (cset < 0 || H5Tset_size(memory, H5T_VARIABLE) < 0 || H5Tset_cset(memory, cset) < 0) {
            H5Tclose(memory);
            return -1;
        }
        return memory;
    }
    default:
        return 0;
    }
}

/* Reads the elements of an attribute (whole) or a dataset (by slabs of the first dimension). */
static int read_elements(walker *w, hid_t handle, int is_dataset, hid_t type, hid_t space, const char *what) {
    int ndims = H5Sget_simple_extent_ndims(space);
    if (ndims < 0 || ndims > H5S_MAX_RANK) return damaged(w, what);
    hsize_t dims[H5S_MAX_RANK];
    if (H5Sget_simple_extent_dims(space, dims, NULL) < 0) return damaged(w, what);
    hssize_t points = H5Sget_simple_extent_npoints(space);
    if (points < 0) return damaged(w, what);
    if (points == 0) return 0;
    int variable = 0;
    hid_t memory = memory_type_for(type, &variable);
    if (memory < 0) return damaged(w, what);
    if (memory == 0) return 0;
    int status = 0;
    size_t element = variable ? sizeof(char *) : H5Tget_size(memory);
    size_t file_element = H5Tget_size(type);
    if (element == 0) { H5Tclose(memory); return damaged(w, what); }
    if (file_element > element) element = file_element;
    uint64_t total = 0;
    if (__builtin_mul_overflow((uint64_t)points, (uint64_t)element, &total)) {
        H5Tclose(memory);
        return stop(w, SC_H5CHECK_DAMAGED, "%s: it declares %lld elements", what, (long long)points);
    }
    if (!is_dataset) {
        if (total > w->limits->max_attribute_bytes) {
            H5Tclose(memory);
            return stop(w, SC_H5CHECK_DAMAGED, "%s: it declares %llu bytes, more than SeqCell reads from an attribute",
                        what, (unsigned long long)total);
        }
        void *buffer = calloc(1, total ? total : 1);
        if (!buffer) { H5Tclose(memory); return stop(w, SC_H5CHECK_MEMORY, "%s: out of memory", what); }
        if (read_attribute(handle, memory, H5S_ALL, H5S_ALL, buffer) < 0) status = damaged(w, what);
        else if (variable) {
            /* Bound what libhdf5 handed back. */
            char **strings = buffer;
            uint64_t bytes = 0;
            for (hssize_t i = 0; i < points; i++)
                if (strings[i]) bytes += strnlen(strings[i], w->limits->max_attribute_bytes + 1);
            H5Dvlen_reclaim(memory, space, H5P_DEFAULT, buffer);
            if (bytes > w->limits->max_attribute_bytes)
                status = stop(w, SC_H5CHECK_DAMAGED, "%s: its strings hold %llu bytes, more than SeqCell reads",
                              what, (unsigned long long)bytes);
        }
        free(buffer);
        H5Tclose(memory);
        return status;
    }
    /* Datasets: by slabs along the first dimension, so the walk's memory stays bounded. */
    hsize_t rows = ndims > 0 ? dims[0] : 1;
    uint64_t row_bytes = rows ? total / rows : total;
    hsize_t per_slab = row_bytes ? (hsize_t)(SC_SLAB_BYTES / row_bytes) : rows;
    if (per_slab == 0) per_slab = 1;
    if (ndims == 0 || per_slab >= rows) per_slab = rows;
    uint64_t slab_bytes = per_slab * row_bytes;
    void *buffer = calloc(1, slab_bytes ? slab_bytes : 1);
    if (!buffer) { H5Tclose(memory); return stop(w, SC_H5CHECK_MEMORY, "%s: out of memory", what); }
    hid_t file_space = ndims > 0 ? H5Scopy(space) : H5S_ALL;
    for (hsize_t start = 0; start < rows && status == 0; start += per_slab) {
        hsize_t take = rows - start < per_slab ? rows - start : per_slab;
        hid_t memory_space = H5S_ALL;
        if (ndims > 0) {
            hsize_t offset[H5S_MAX_RANK] = {0}, count[H5S_MAX_RANK];
            memcpy(count, dims, sizeof(hsize_t) * (size_t)ndims);
            offset[0] = start;
            count[0] = take;
            if (file_space < 0 || H5Sselect_hyperslab(file_space, H5S_SELECT_SET, offset, NULL, count, NULL) < 0 ||
                (memory_space = H5Screate_simple(ndims, count, NULL)) < 0) {
                status = damaged(w, what);
                break;
            }
        }
        if (read_dataset(handle, memory, memory_space, ndims > 0 ? file_space : H5S_ALL, buffer) < 0)
            status = damaged(w, what);
        else if (variable)
            H5Dvlen_reclaim(memory, ndims > 0 ? memory_space : space, H5P_DEFAULT, buffer);
        if (memory_space != H5S_ALL) H5Sclose(memory_space);
    }
    if (ndims > 0 && file_space >= 0) H5Sclose(file_space);
    free(buffer);
    H5Tclose(memory);
    return status;
}

static int walk_attributes(walker *w, hid_t object, const char *path) {
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
        if (!where) return stop(w, SC_H5CHECK_MEMORY, "out of memory");
        sprintf(where, "%s@%s", path, name);
        progress(w, where);
        free(where);
        htri_t exists = H5Aexists(object, name);
        if (exists <= 0) return exists < 0 ? damaged(w, "looking up the attribute") : stop(w, SC_H5CHECK_DAMAGED, "the attribute is listed but cannot be found");
        hid_t attribute = H5Aopen(object, name, H5P_DEFAULT);
        if (attribute < 0) return damaged(w, "opening the attribute");
        int status = 0;
        hid_t type = H5Aget_type(attribute), space = -1;
        if (type < 0 || (space = H5Aget_space(attribute)) < 0) status = damaged(w, "reading the attribute");
        else status = read_elements(w, attribute, 0, type, space, "reading the attribute");
        if (space >= 0) H5Sclose(space);
        if (type >= 0) H5Tclose(type);
        H5Aclose(attribute);
        if (status) return status;
    }
    progress(w, path);
    return 0;
}

static int walk_dataset(walker *w, hid_t dataset, const char *path) {
    char message[SC_H5CHECK_TEXT];
    message[0] = 0;
    int policy = sc_h5_dataset_policy(dataset, w->image_size, message, sizeof message);
    if (policy < 0) return damaged(w, "reading the dataset's layout");
    if (policy > 0) return stop(w, policy, "%s", message);
    if (walk_attributes(w, dataset, path)) return -1;
    hid_t type = H5Dget_type(dataset), space = -1;
    int status = 0;
    if (type < 0 || (space = H5Dget_space(dataset)) < 0) status = damaged(w, "reading the dataset");
    else status = read_elements(w, dataset, 1, type, space, "reading the dataset");
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    return status;
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

static int seen(walker *w, haddr_t address) {
    for (size_t i = 0; i < w->visited_count; i++)
        if (w->visited[i] == address) return 1;
    if (w->visited_count == w->visited_capacity) {
        size_t capacity = w->visited_capacity ? w->visited_capacity * 2 : 64;
        haddr_t *visited = realloc(w->visited, capacity * sizeof *visited);
        if (!visited) return -1;
        w->visited = visited;
        w->visited_capacity = capacity;
    }
    w->visited[w->visited_count++] = address;
    return 0;
}

static int walk_group(walker *w, hid_t group, const char *path, int depth);

static int walk_object(walker *w, hid_t parent, const char *name, const char *path, int depth) {
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
    int again = seen(w, info.addr);
    if (again < 0) return stop(w, SC_H5CHECK_MEMORY, "out of memory");
    if (again) return 0; /* a second hard link to an object already walked (or a cycle) */
    hid_t object = H5Oopen(parent, name, H5P_DEFAULT);
    if (object < 0) return damaged(w, "opening the object");
    int status;
    switch (info.type) {
    case H5O_TYPE_GROUP: status = walk_group(w, object, path, depth + 1); break;
    case H5O_TYPE_DATASET: status = walk_dataset(w, object, path); break;
    case H5O_TYPE_NAMED_DATATYPE: status = walk_attributes(w, object, path); break;
    default: status = stop(w, SC_H5CHECK_DAMAGED, "the object's type is unknown"); break;
    }
    H5Oclose(object);
    return status;
}

static int walk_group(walker *w, hid_t group, const char *path, int depth) {
    progress(w, path);
    if (depth > SC_MAX_DEPTH) return stop(w, SC_H5CHECK_DAMAGED, "groups are nested more than %d deep", SC_MAX_DEPTH);
    if (walk_attributes(w, group, path)) return -1;
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
        if (!child) { status = stop(w, SC_H5CHECK_MEMORY, "out of memory"); break; }
        status = walk_object(w, group, list.names[i], child, depth);
        free(child);
    }
    for (size_t i = 0; i < list.count; i++) free(list.names[i]);
    free(list.names);
    return status;
}

static void walk(const void *image, size_t size, const sc_h5check_limits *limits, sc_h5check_result *result) {
    walker w = {size, limits, result, NULL, 0, 0, 0};
    result->status = SC_H5CHECK_OK;
    progress(&w, "");
    sc_h5_disable_plugins();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t file = sc_h5_open_image((void *)image, size, 0);
    if (file < 0) {
        damaged(&w, "opening the file");
        return;
    }
    hid_t root = H5Gopen2(file, "/", H5P_DEFAULT);
    if (root < 0) damaged(&w, "opening the root group");
    else {
        progress(&w, "/");
        H5O_info_t info;
        if (H5Oget_info2(root, &info, H5O_INFO_BASIC) < 0) damaged(&w, "reading the root group's header");
        else if (seen(&w, info.addr) >= 0) walk_group(&w, root, "/", 0);
        H5Gclose(root);
    }
    H5Fclose(file);
    free(w.visited);
}

void sc_h5check_image_in_process(const void *image, size_t size, const sc_h5check_limits *limits,
                                 sc_h5check_result *result) {
    memset(result, 0, sizeof *result);
    walk(image, size, limits, result);
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
    limits->memory_bytes = 2ull << 30;
    limits->max_objects = 1000000;
    limits->max_links_per_group = 1000000;
    limits->max_attributes_per_object = 100000;
    limits->max_attribute_bytes = 256u << 20;
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

void sc_h5check_image(const void *image, size_t size, const sc_h5check_limits *limits, sc_h5check_result *result) {
    memset(result, 0, sizeof *result);
    sc_h5check_result *shared =
        mmap(NULL, sizeof *shared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED) {
        result->status = SC_H5CHECK_SYSTEM;
        snprintf(result->message, sizeof result->message, "cannot map shared memory: %s", strerror(errno));
        return;
    }
    memset(shared, 0, sizeof *shared);
    shared->status = -1; /* the child sets the final status */
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
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
        const int fatal[] = {SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE, SIGTRAP, SIGSYS, SIGXCPU};
        for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++) signal(fatal[i], SIG_DFL);
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        struct rlimit memory = {base + limits->memory_bytes, base + limits->memory_bytes};
        setrlimit(RLIMIT_AS, &memory);
        rlim_t cpu = (rlim_t)limits->timeout_seconds + 2;
        struct rlimit seconds = {cpu, cpu + 1};
        setrlimit(RLIMIT_CPU, &seconds);
        struct rlimit core = {0, 0};
        setrlimit(RLIMIT_CORE, &core);
        hdf5_api_lock(0);
        walk(image, size, limits, shared);
        _exit(0);
    }
    int fork_error = errno;
    hdf5_api_lock(0);
    close(pipe_fds[1]);
    if (child < 0) {
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
    } else {
        /* libhdf5 ended the process itself (an exit of its own after a fatal error). */
        result->status = SC_H5CHECK_CRASHED;
        snprintf(result->message, sizeof result->message, "made the HDF5 library end the process (exit status %d)",
                 WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1);
    }
    munmap(shared, sizeof *shared);
}
