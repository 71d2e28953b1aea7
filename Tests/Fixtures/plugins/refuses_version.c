/* An entry point that refuses every host: it claims to need ABI 9. */
#include <stdio.h>

#include "seqcell.h"

SEQCELL_EXPORT seqcell_status seqcell_plugin_entry(uint32_t host_abi_major, uint32_t host_abi_minor,
                                                   const seqcell_host *host, const seqcell_plugin **plugin,
                                                   char *error, size_t error_capacity) {
    (void)host;
    (void)plugin;
    snprintf(error, error_capacity, "fixture needs SeqCell ABI 9.x, host speaks %u.%u", (unsigned)host_abi_major,
             (unsigned)host_abi_minor);
    return SEQCELL_ERR_VERSION;
}
