/* Plugins `seqcell validate-plugin` must survive and report by check name:
     -DFX_ENTRY_EXITS     the entry point calls exit(0)
     -DFX_FORWARD_ABORTS  forward calls abort()
     -DFX_FORWARD_EXITS   forward calls exit(3)
     -DFX_FORWARD_LOOPS   forward never returns */
#include <stdlib.h>

#if defined(FX_FORWARD_ABORTS) || defined(FX_FORWARD_EXITS) || defined(FX_FORWARD_LOOPS)
#define FX_FORWARD_FN fx_bad_forward
#endif

#include "fixture_cell.h"

#if defined(FX_FORWARD_ABORTS) || defined(FX_FORWARD_EXITS) || defined(FX_FORWARD_LOOPS)
static seqcell_status fx_bad_forward(const void *instance, const seqcell_forward_args *a, char *error,
                                     size_t capacity) {
    (void)fx_forward; /* the working forward, unused here */
#if defined(FX_FORWARD_ABORTS) || defined(FX_FORWARD_EXITS)
    (void)instance;
    (void)a;
    (void)error;
    (void)capacity;
#if defined(FX_FORWARD_ABORTS)
    abort();
#else
    exit(3);
#endif
#else
    volatile int spin = 1;
    (void)instance;
    (void)a;
    (void)error;
    (void)capacity;
    while (spin) {
    }
    return SEQCELL_ERR_INTERNAL;
#endif
}
#endif

static const seqcell_cell_desc fixture_cell = FX_CELL(sizeof(seqcell_cell_desc), "rogue", fx_backward);
static const seqcell_cell_desc *const fixture_cells[] = {&fixture_cell};
static const seqcell_plugin fixture_plugin = {sizeof(seqcell_plugin), SEQCELL_ABI_MAJOR, SEQCELL_ABI_MINOR, 1,
                                              "fixture: misbehaves", fixture_cells};

#if defined(FX_ENTRY_EXITS)
SEQCELL_EXPORT seqcell_status seqcell_plugin_entry(uint32_t host_abi_major, uint32_t host_abi_minor,
                                                   const seqcell_host *host, const seqcell_plugin **plugin,
                                                   char *error, size_t error_capacity) {
    (void)host_abi_major;
    (void)host_abi_minor;
    (void)error;
    (void)error_capacity;
    fx_host = host;
    *plugin = &fixture_plugin;
    exit(0);
}
#else
FX_DEFINE_ENTRY(fixture_plugin)
#endif
