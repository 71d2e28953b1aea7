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

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

int sc_die_with_parent(int parent_pid) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return -1;
    /* The parent may have died before prctl ran: then we were re-parented already. */
    return getppid() == (pid_t)parent_pid ? 1 : 0;
}
