#!/usr/bin/env bash
# GPU session 2: all CUDA tests, the LRA Table-2 bench for every registered family plus the HF peers,
# the YOSO kernel bench against HF's CUDA kernels, and short bf16 runs of every family at LRA lengths.
# Usage (on the device): PARTS="tests bench yoso runs" bash scripts/gpu/session2.sh
# (runs: see scripts/gpu/pack.sh for what to carry; TASKS, FAMILIES, STEPS select the runs.)
# Every part writes its whole log under $OUT through tee (a call stopped at its time limit still returns it), and
# at most a few files: the device returns 8 files, no deeper than $OUT/a/b/file.
set -uo pipefail
source scripts/gpu/setup.sh
export PYTHONUNBUFFERED=1
PARTS=${PARTS:-tests bench yoso runs}
if [[ $PARTS == *tests* ]]; then
  TRITON_INTERPRET=0 python3 -m pytest -m gpu -q -p no:cacheprovider --durations=25 2>&1 | tee $OUT/pytest_gpu.log
  # registers / spills of the kernel tiles as the device image's Triton compiles them (the committed table is triton 3.9)
  python3 scripts/check_kernels_cuda.py --quick --targets sm_90 2>&1 | tee $OUT/kernels_ptxas_device.txt
fi
if [[ $PARTS == *bench* ]]; then
  # every registered entry (bench.entries: all) and every HF peer but hf:yoso, whose CUDA sources HF compiles at
  # run time (nvcc + ninja; scripts/bench_yoso.py measures our YOSO kernels against them when they load)
  python3 -m lra.bench paths.results_dir=$OUT bench.tag=${BENCH_TAG:-h100_table2} \
    'bench.hf_peers=[nystromformer,yoso_e,reformer,longformer,mega,mega-chunk]' ${BENCH_ARGS:-} 2>&1 \
    | grep --line-buffered -v INFO | tee $OUT/bench.log
fi
if [[ $PARTS == *yoso* ]]; then
  python3 scripts/bench_yoso.py --json $OUT/bench_yoso.json 2>&1 | tee $OUT/bench_yoso.log
fi
if [[ $PARTS == *runs* ]]; then
  # every family on every task (TASKS) at LRA lengths, bf16-mixed, STEPS steps; the data of text/image comes from
  # the folder scripts/gpu/pack.sh builds (carry .gpu/pack); ListOps and Pathfinder are generated here.
  common="trainer.enable_progress_bar=false loader.num_workers=8 paths.data_dir=/tmp/data paths.cache_dir=/tmp/cache paths.results_dir=/tmp/records logger=csv"
  steps=${STEPS:-200}
  for task in ${TASKS:-listops pathfinder text}; do
    extra=""
    [[ $task == text ]] && extra="task.data_dir=$PWD/.gpu/pack/data/imdb"
    [[ $task == image ]] && extra="task.prepared=$PWD/.gpu/pack/cache/image/prepared"
    for spec in ${FAMILIES:-"lra/$task/transformer" "lra/$task/reformer" "lra/$task/longformer" "lra/$task/local" "nystromformer/$task" "yoso/$task" "mega/$task"}; do
      python3 run.py experiment=$spec trainer.max_steps=$steps trainer.val_check_interval=$((steps / 2)) \
        trainer.limit_val_batches=20 trainer.limit_test_batches=20 $common $extra hydra.run.dir=/tmp/runs/${spec//\//_} 2>&1 \
        | grep --line-buffered -E "test/acc|Error|error:|parameters|implementation|NaN" | sed -u "s#^#[$spec] #" \
        | tee -a $OUT/runs.log
      # the run records (results/runs/<task>/<model>_<attention>/*.json is too deep to come back): one archive,
      # rewritten after every run so a call cut short keeps the finished ones
      tar czf $OUT/records.tgz.tmp -C /tmp/records . && mv $OUT/records.tgz.tmp $OUT/records.tgz
    done
  done
fi
