/* CSeqCell is the header seqcell.h; this file exists because SwiftPM needs a source file
   in a C target. It defines nothing, so linking it into the host and into every plugin
   duplicates nothing. */
#include "seqcell.h"
