/* A plugin built against the frozen ABI 1.0 header (Fixtures/abi/seqcell_abi_1_0.h, the
   header as it was before 1.1 appended parallel_for): a host of any later 1.x minor must
   load it, run forward and backward, and never read a field 1.0 lacks. */
#include "../abi/seqcell_abi_1_0.h"
#include "fixture_cell.h" /* its own #include "seqcell.h" is skipped: SEQCELL_H is defined */

/* The ABI 1.0 sizes the host hard-codes (PluginABI.Size10); a mismatch fails the build. */
typedef char fx_abi_1_0_sizes[(SEQCELL_ABI_MINOR == 0u && sizeof(seqcell_plugin) == 32 &&
                               sizeof(seqcell_cell_desc) == 96 && sizeof(seqcell_option_desc) == 56 &&
                               sizeof(seqcell_param_desc) == 56 && sizeof(seqcell_state_desc) == 24 &&
                               sizeof(seqcell_layout) == 40 && sizeof(seqcell_host) == 56)
                                  ? 1
                                  : -1];

static const seqcell_cell_desc fixture_cell = FX_CELL(sizeof(seqcell_cell_desc), "abi10", fx_backward);
static const seqcell_cell_desc *const fixture_cells[] = {&fixture_cell};
static const seqcell_plugin fixture_plugin = {sizeof(seqcell_plugin), SEQCELL_ABI_MAJOR, SEQCELL_ABI_MINOR, 1,
                                              "fixture: built against ABI 1.0", fixture_cells};

FX_DEFINE_ENTRY(fixture_plugin)
