#!/usr/bin/env bash
# GPU session 1 (commands recorded with their outputs under results/gpu/): CUDA tests, a short run of the
# released LRA ListOps Transformer in bf16 with each exact backend, and the Table-2 bench for the
# softmax Transformer backends.
set -uo pipefail
source scripts/gpu/setup.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee $OUT/nvidia-smi.txt
[ -n "${SKIP_TESTS:-}" ] || python3 -m pytest tests/test_cuda.py tests/test_attention_exact.py -q -p no:cacheprovider 2>&1 | tail -25 | tee $OUT/pytest_cuda.txt
for a in ${ATTNS:-sdpa flex math}; do
  python3 run.py experiment=lra/listops/transformer attention=$a trainer.max_steps=300 trainer.val_check_interval=100 \
    loader.num_workers=4 paths.data_dir=/tmp/data paths.cache_dir=/tmp/cache paths.results_dir=$OUT/runs \
    hydra.run.dir=/tmp/runs/listops_$a trainer.enable_progress_bar=false 2>&1 | grep -E "test/acc|Error|error|parameters" | tee -a $OUT/listops_runs.txt
done
python3 -m lra.bench bench.entries='[transformer/math,transformer/sdpa,transformer/flex]' bench.hf_peers='[]' paths.results_dir=$OUT \
  bench.tag=h100_session1 2>&1 | grep -v INFO | tail -40 | tee $OUT/bench.txt
