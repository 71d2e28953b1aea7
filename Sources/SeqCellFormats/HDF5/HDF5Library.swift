import CHDF5
import CSeqCellHDF5Check
import SeqCellBase
import SeqCellHost
import SeqCellModel

/// The one place that initializes libhdf5 and keeps it from printing to stderr.
enum HDF5Library {
    /// `H5open()`'s status. A `static let` initializer runs exactly once, thread-safely.
    /// libhdf5's exit handler is turned off first: it closes the files still registered, and a
    /// file whose close failed (a full disk) stays registered half-destroyed, so the handler
    /// crashed the process at exit. SeqCell closes every file it writes; the handler has nothing
    /// left to do.
    /// Files never load code: HDF5's dynamic filter-plugin loading is turned off before any
    /// file is opened, so only filters built into libhdf5 are honoured (a dataset needing
    /// another is refused by name, see `sc_h5_dataset_policy`).
    private static let openStatus: herr_t = {
        H5dont_atexit()
        let status = H5open()
        _ = sc_h5_disable_plugins()
        return status
    }()

    /// Call at the top of every wrapper entry point, before any HDF5 call. Opens the library
    /// once, and turns off HDF5's automatic error printing for the calling thread: this
    /// libhdf5 is thread-safe, so that setting is per thread and each new thread starts with it on.
    static func enter() {
        _ = openStatus
        sc_h5e_silence_this_thread()
    }
}
