#define _GNU_SOURCE
#include <dlfcn.h>
#include <string.h>
#include "seqcell_host_shim.h"

int sc_file_defining(const void *address, char *path, size_t capacity) {
    Dl_info info;
    if (capacity == 0 || dladdr(address, &info) == 0 || info.dli_fname == NULL) return 0;
    strncpy(path, info.dli_fname, capacity - 1);
    path[capacity - 1] = '\0';
    return 1;
}
