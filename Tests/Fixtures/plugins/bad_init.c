/* ABI 1.2 parameter declarations a host must refuse when the library loads, one per build:
   -DFX_BAD=1  a uniform range with init_a > init_b
   -DFX_BAD=2  a constant that is not finite
   -DFX_BAD=3  an init kind no header defines (7)
   -DFX_BAD=4  a parameter flag no header defines (4)
   Without FX_BAD the bias is a valid optional constant 0.25. */
#include <math.h>

#include "seqcell.h"

#if !defined(FX_BAD)
#define FX_BIAS_EXTRA(p) ((p).init = SEQCELL_INIT_CONSTANT, (p).init_a = 0.25, (p).flags = (int32_t)SEQCELL_PARAM_OPTIONAL)
#elif FX_BAD == 1
#define FX_BIAS_EXTRA(p) ((p).init = SEQCELL_INIT_UNIFORM, (p).init_a = 1.0, (p).init_b = 0.0)
#elif FX_BAD == 2
#define FX_BIAS_EXTRA(p) ((p).init = SEQCELL_INIT_CONSTANT, (p).init_a = HUGE_VAL)
#elif FX_BAD == 3
#define FX_BIAS_EXTRA(p) ((p).init = 7)
#else
#define FX_BIAS_EXTRA(p) ((p).flags = 4)
#endif

#include "fixture_cell.h"

static const seqcell_cell_desc fixture_cell = FX_CELL(sizeof(seqcell_cell_desc), "badinit", fx_backward);
static const seqcell_cell_desc *const fixture_cells[] = {&fixture_cell};
static const seqcell_plugin fixture_plugin = {sizeof(seqcell_plugin), SEQCELL_ABI_MAJOR, SEQCELL_ABI_MINOR, 1,
                                              "fixture: ABI 1.2 parameter declarations", fixture_cells};

FX_DEFINE_ENTRY(fixture_plugin)
