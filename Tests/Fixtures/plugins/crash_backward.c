/* A cell that loads and runs forward, but whose backward crashes the process: what
   `seqcell validate-plugin` must survive and report. */
#include <signal.h>
#define FX_NO_BACKWARD
#include "fixture_cell.h"

static seqcell_status crash_backward(const void *instance, const seqcell_backward_args *a, char *error,
                                     size_t capacity) {
    (void)instance;
    (void)a;
    (void)error;
    (void)capacity;
    raise(SIGSEGV);
    return SEQCELL_ERR_INTERNAL;
}

static const seqcell_cell_desc fixture_cell = FX_CELL(sizeof(seqcell_cell_desc), "crashy", crash_backward);
static const seqcell_cell_desc *const fixture_cells[] = {&fixture_cell};
static const seqcell_plugin fixture_plugin = {sizeof(seqcell_plugin), SEQCELL_ABI_MAJOR, SEQCELL_ABI_MINOR, 1,
                                              "fixture: backward crashes", fixture_cells};

FX_DEFINE_ENTRY(fixture_plugin)
