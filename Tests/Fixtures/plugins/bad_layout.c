/* A cell whose layout is invalid: with -DFX_ZERO_SIZED its bias has zero rows, otherwise
   its second parameter repeats the first one's name. */
#if defined(FX_ZERO_SIZED)
#define FX_BIAS_ROWS(h) ((h) * 0)
#else
#define FX_BIAS_NAME "weight"
#endif
#include "fixture_cell.h"

static const seqcell_cell_desc fixture_cell = FX_CELL(sizeof(seqcell_cell_desc), "badlayout", fx_backward);
static const seqcell_cell_desc *const fixture_cells[] = {&fixture_cell};
static const seqcell_plugin fixture_plugin = {sizeof(seqcell_plugin), SEQCELL_ABI_MAJOR, SEQCELL_ABI_MINOR, 1,
                                              "fixture: bad layout", fixture_cells};

FX_DEFINE_ENTRY(fixture_plugin)
