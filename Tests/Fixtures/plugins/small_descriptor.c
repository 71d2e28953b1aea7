/* A descriptor whose struct_size is too small: the library descriptor when built with
   -DFX_SMALL_PLUGIN, otherwise the cell descriptor (as if it ended before `backward`). */
#include <stddef.h>

#if defined(FX_SMALL_PLUGIN)
#define FX_PLUGIN_SIZE 8u
#define FX_CELL_SIZE sizeof(seqcell_cell_desc)
#else
#define FX_PLUGIN_SIZE sizeof(seqcell_plugin)
#define FX_CELL_SIZE offsetof(seqcell_cell_desc, backward)
#endif

#include "fixture_cell.h"

static const seqcell_cell_desc fixture_cell = FX_CELL(FX_CELL_SIZE, "small", fx_backward);
static const seqcell_cell_desc *const fixture_cells[] = {&fixture_cell};
static const seqcell_plugin fixture_plugin = {FX_PLUGIN_SIZE, SEQCELL_ABI_MAJOR, SEQCELL_ABI_MINOR, 1,
                                              "fixture: small descriptor", fixture_cells};

FX_DEFINE_ENTRY(fixture_plugin)
