set -e
export PYTHONPATH=$PWD/.gpu/site:$PWD HYBRID_MLIR_DATA=$PWD/.gpu/data HYBRID_MLIR_CACHE=/tmp/hmc
python3 -m pip install -q --no-deps --no-index --target .gpu/site .gpu/wheels/*.whl 2>&1 | tail -2
python3 -c "import torch, transformers, datasets; print(torch.__version__, transformers.__version__, datasets.__version__, torch.cuda.get_device_name(0))"
timeout 420 python3 .gpu/bench_gpu.py 2>&1 | grep -v Warning | tee $OUT/gpu_bench.log | tail -40
