/* Descriptors with unusable strings and tables, which the host must refuse by name:
     (default)             the cell id runs 300 bytes before its NUL (the bound is 256)
     -DFX_NULL_OPTION_NAME  option 0's name is NULL
     -DFX_MANY_OPTIONS      num_options is 2^30
     -DFX_NULL_STATE_NAME   the layout's state has a NULL name */
#if defined(FX_NULL_STATE_NAME)
#define FX_STATE_NAME NULL
#endif
#include "fixture_cell.h"

#define FX_10 "aaaaaaaaaa"
#define FX_100 FX_10 FX_10 FX_10 FX_10 FX_10 FX_10 FX_10 FX_10 FX_10 FX_10

#if defined(FX_NULL_OPTION_NAME) || defined(FX_MANY_OPTIONS) || defined(FX_NULL_STATE_NAME)
#define FX_ID "strings"
#else
#define FX_ID "a" FX_100 FX_100 FX_100
#endif

#if defined(FX_MANY_OPTIONS)
#define FX_NUM_OPTIONS (1 << 30)
#elif defined(FX_NULL_OPTION_NAME)
#define FX_NUM_OPTIONS 1
#else
#define FX_NUM_OPTIONS 0
#endif

static const seqcell_option_desc fixture_options[1] = {
    {sizeof(seqcell_option_desc), SEQCELL_OPTION_INT, NULL, "an option without a name", 1.0, 0.0, 2.0, NULL},
};

static const seqcell_cell_desc fixture_cell = {
    sizeof(seqcell_cell_desc), 1u, 0u, 0u, FX_ID, "fixture: bad strings", FX_NUM_OPTIONS, 0,
    fixture_options, fx_create, fx_destroy, fx_layout, fx_workspace_size, fx_forward, fx_backward FX_DESC_1_2_TAIL};
static const seqcell_cell_desc *const fixture_cells[] = {&fixture_cell};
static const seqcell_plugin fixture_plugin = {sizeof(seqcell_plugin), SEQCELL_ABI_MAJOR, SEQCELL_ABI_MINOR, 1,
                                              "fixture: bad strings", fixture_cells};

FX_DEFINE_ENTRY(fixture_plugin)
