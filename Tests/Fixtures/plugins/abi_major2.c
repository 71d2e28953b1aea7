/* A plugin whose descriptor claims ABI major 2. */
#include "fixture_cell.h"

static const seqcell_cell_desc fixture_cell = FX_CELL(sizeof(seqcell_cell_desc), "abitwo", fx_backward);
static const seqcell_cell_desc *const fixture_cells[] = {&fixture_cell};
static const seqcell_plugin fixture_plugin = {sizeof(seqcell_plugin), 2u, 0u, 1,
                                              "fixture: ABI 2", fixture_cells};

FX_DEFINE_ENTRY(fixture_plugin)
