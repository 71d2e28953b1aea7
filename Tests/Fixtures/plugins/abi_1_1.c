/* A plugin built against the frozen ABI 1.1 header (Fixtures/abi/seqcell_abi_1_1.h, the
   header as it was before 1.2 appended create_cell, parameter initialisation and frozen
   gradients): a host of any later 1.x minor must load it, create its cell through the 1.0
   create, read its parameter descriptors with their 1.1 stride (init and flags read as zero:
   by role, required), and never pass it a NULL grad_params entry. */
#include "../abi/seqcell_abi_1_1.h"
#include "fixture_cell.h" /* its own #include "seqcell.h" is skipped: SEQCELL_H is defined */

/* The 1.1 header's sizes: the plugin-filled structs as in 1.0, the host table 16 bytes longer. */
typedef char fx_abi_1_1_sizes[(SEQCELL_ABI_MINOR == 1u && sizeof(seqcell_plugin) == 32 &&
                               sizeof(seqcell_cell_desc) == 96 && sizeof(seqcell_option_desc) == 56 &&
                               sizeof(seqcell_param_desc) == 56 && sizeof(seqcell_state_desc) == 24 &&
                               sizeof(seqcell_layout) == 40 && sizeof(seqcell_host) == 72)
                                  ? 1
                                  : -1];

static const seqcell_cell_desc fixture_cell = FX_CELL(sizeof(seqcell_cell_desc), "abi11", fx_backward);
static const seqcell_cell_desc *const fixture_cells[] = {&fixture_cell};
static const seqcell_plugin fixture_plugin = {sizeof(seqcell_plugin), SEQCELL_ABI_MAJOR, SEQCELL_ABI_MINOR, 1,
                                              "fixture: built against ABI 1.1", fixture_cells};

FX_DEFINE_ENTRY(fixture_plugin)
