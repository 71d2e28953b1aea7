#!/usr/bin/env bash
# Installs what SeqCell needs on Debian when it is missing: libhdf5 and OpenBLAS (built
# against through pkg-config), the HDF5 command-line tools, and — with --python — h5py and
# numpy for the interop tests, onnx and onnxruntime for the ONNX tests, and tensorboard for
# reading back training logs; with --mpi, Open MPI (mpirun and libmpi.so.40) for the
# data-parallel tests (docs/DISTRIBUTED.md). Safe to run again; does nothing when all is
# present. Options combine: --python --mpi
set -euo pipefail

python=0
mpi=0
for arg in "$@"; do
    case "$arg" in
        --python) python=1 ;;
        --mpi) mpi=1 ;;
        *) echo "ensure-deps: unknown option $arg (use --python, --mpi)" >&2; exit 64 ;;
    esac
done

need=()
pkg-config --exists hdf5-serial 2>/dev/null || need+=(libhdf5-dev)
pkg-config --exists openblas 2>/dev/null || need+=(libopenblas-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v h5dump >/dev/null || need+=(hdf5-tools)
command -v cc >/dev/null || need+=(gcc)
if [ $mpi -eq 1 ]; then
    command -v mpirun >/dev/null || need+=(openmpi-bin)
    ldconfig -p 2>/dev/null | grep -q 'libmpi\.so\.40 ' || need+=(libopenmpi-dev)
fi
if [ ${#need[@]} -gt 0 ]; then
    echo "ensure-deps: installing ${need[*]}" >&2
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ $python -eq 1 ]; then
    if ! python3 -c "import h5py, numpy" 2>/dev/null; then
        echo "ensure-deps: installing h5py and numpy from PyPI" >&2
        python3 -m pip install -q h5py numpy 2>&1 | grep -v "Running pip as the 'root' user" || true
        python3 -c "import h5py, numpy"
    fi
    # ONNX Runtime runs the models `seqcell export --to onnx` writes, and single ONNX nodes
    # that check the cells' ONNX options.
    if ! python3 -c "import onnx, onnxruntime" 2>/dev/null; then
        echo "ensure-deps: installing onnx and onnxruntime from PyPI" >&2
        python3 -m pip install -q onnx onnxruntime 2>&1 | grep -v "Running pip as the 'root' user" || true
        python3 -c "import onnx, onnxruntime"
    fi
    # TensorBoard's own reader reads back the event files `seqcell train --logdir` writes.
    if ! python3 -c "import tensorboard.backend.event_processing.event_accumulator" 2>/dev/null; then
        echo "ensure-deps: installing tensorboard from PyPI" >&2
        python3 -m pip install -q tensorboard 2>&1 | grep -v "Running pip as the 'root' user" || true
        python3 -c "import tensorboard.backend.event_processing.event_accumulator"
    fi
fi
