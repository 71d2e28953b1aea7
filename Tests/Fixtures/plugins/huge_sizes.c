/* Sizes a host must refuse before allocating anything. With -DFX_HUGE_PARAM the weight is
   declared [2^62, 2^62]; with -DFX_HUGE_WORKSPACE workspace_size returns SIZE_MAX. */
#include "seqcell.h"

#if defined(FX_HUGE_PARAM)
#define FX_WEIGHT_ROWS(h) ((int64_t)1 << 62)
#define FX_WEIGHT_COLS(i) ((int64_t)1 << 62)
#endif

#if defined(FX_HUGE_WORKSPACE)
static size_t fx_huge_workspace(const void *instance, int64_t seq_len, int64_t batch, int32_t mode) {
    (void)instance;
    (void)seq_len;
    (void)batch;
    (void)mode;
    return SIZE_MAX;
}
#define FX_WORKSPACE_FN fx_huge_workspace
#endif

#include "fixture_cell.h"

static const seqcell_cell_desc fixture_cell = FX_CELL(sizeof(seqcell_cell_desc), "huge", fx_backward);
static const seqcell_cell_desc *const fixture_cells[] = {&fixture_cell};
static const seqcell_plugin fixture_plugin = {sizeof(seqcell_plugin), SEQCELL_ABI_MAJOR, SEQCELL_ABI_MINOR, 1,
                                              "fixture: huge sizes", fixture_cells};

FX_DEFINE_ENTRY(fixture_plugin)
