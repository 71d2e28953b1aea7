#ifndef SEQCELL_CBLAS_SHIM_H
#define SEQCELL_CBLAS_SHIM_H
/* OpenBLAS from Debian's libopenblas-dev (pkg-config: openblas). */
#include <cblas.h>
#endif
