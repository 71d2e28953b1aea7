#ifndef SEQCELL_CHDF5_SHIM_H
#define SEQCELL_CHDF5_SHIM_H
/* libhdf5 from Debian's libhdf5-dev (pkg-config: hdf5-serial). HDF5's type, property and
   flag constants are macros Swift cannot import; the static inline functions below give
   them to Swift under names of their own. */
#include <hdf5.h>

static inline hid_t sc_h5p_default(void) { return H5P_DEFAULT; }
static inline hid_t sc_h5s_all(void) { return H5S_ALL; }
static inline unsigned sc_h5f_acc_rdwr(void) { return H5F_ACC_RDWR; }
static inline unsigned sc_h5f_acc_trunc(void) { return H5F_ACC_TRUNC; }
static inline hid_t sc_h5t_native_float(void) { return H5T_NATIVE_FLOAT; }
static inline hid_t sc_h5t_native_double(void) { return H5T_NATIVE_DOUBLE; }
static inline hid_t sc_h5t_native_int32(void) { return H5T_NATIVE_INT32; }
static inline hid_t sc_h5t_native_int64(void) { return H5T_NATIVE_INT64; }
static inline hid_t sc_h5t_native_uint8(void) { return H5T_NATIVE_UINT8; }
static inline hid_t sc_h5t_ieee_f32le(void) { return H5T_IEEE_F32LE; }
static inline hid_t sc_h5t_ieee_f64le(void) { return H5T_IEEE_F64LE; }
static inline hid_t sc_h5t_std_i32le(void) { return H5T_STD_I32LE; }
static inline hid_t sc_h5t_std_i64le(void) { return H5T_STD_I64LE; }
static inline hid_t sc_h5t_std_u8le(void) { return H5T_STD_U8LE; }
static inline hid_t sc_h5t_c_s1(void) { return H5T_C_S1; }
static inline size_t sc_h5t_variable(void) { return H5T_VARIABLE; }
static inline hid_t sc_h5p_file_access(void) { return H5P_FILE_ACCESS; }

/* Debian builds libhdf5 thread-safe, which makes the "print the error stack to stderr"
   setting (H5Eset_auto2 on H5E_DEFAULT) belong to each thread: every new thread starts with
   printing on. This turns it off for the calling thread, once per thread (per object file that
   uses it, which only repeats a cheap call). */
static inline void sc_h5e_silence_this_thread(void) {
    static _Thread_local int silenced = 0;
    if (!silenced) {
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
        silenced = 1;
    }
}

#endif
