/* A cell without a backward function. */
#define FX_NO_BACKWARD
#include "fixture_cell.h"

static const seqcell_cell_desc fixture_cell = FX_CELL(sizeof(seqcell_cell_desc), "nobackward", NULL);
static const seqcell_cell_desc *const fixture_cells[] = {&fixture_cell};
static const seqcell_plugin fixture_plugin = {sizeof(seqcell_plugin), SEQCELL_ABI_MAJOR, SEQCELL_ABI_MINOR, 1,
                                              "fixture: no backward", fixture_cells};

FX_DEFINE_ENTRY(fixture_plugin)
