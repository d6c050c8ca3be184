#!/usr/bin/env bash
# Developer build: compile the extension into build/dev and link it into
# python/fusedlearn so `PYTHONPATH=python pytest` runs against the tree.
# FUSEDLEARN_CUDA=OFF ./dev_build.sh skips the (slow) CUDA compile.
set -euo pipefail
cd "$(dirname "$0")"
cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DFUSEDLEARN_CUDA="${FUSEDLEARN_CUDA:-AUTO}" -DFUSEDLEARN_BENCH="${FUSEDLEARN_BENCH:-OFF}" \
  -Dpybind11_DIR="$(python3 -c 'import pybind11; print(pybind11.get_cmake_dir())')" >/dev/null
cmake --build build/dev -j"$(nproc)"
so=$(ls build/dev/_C*.so)
ln -sf "$(pwd)/$so" python/fusedlearn/
echo "built $so"
