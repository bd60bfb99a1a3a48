#!/usr/bin/env bash
# CPU preflight of the GPU session's training runs (scripts/gpu/session2.sh PARTS=runs): the same experiment
# configs (every family on every task in TASKS, at the LRA sequence lengths and model sizes), but 2 fp32 steps on
# CPU with batch 2 and a few generated / loaded examples, so a config, shape or data error shows up here and
# does not cost device minutes. Text reads the IMDB tarball from IMDB_DIR (default ../shared/data).
# Usage: bash scripts/gpu/preflight.sh            (TASKS="listops pathfinder text image", FAMILIES as session2.sh)
# Prints one line per run (ok / FAILED with the error) and exits 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
work=${PREFLIGHT_DIR:-outputs/preflight}
mkdir -p "$work"
common="trainer.accelerator=cpu trainer.precision=32-true trainer.enable_progress_bar=false trainer.max_steps=2
  trainer.val_check_interval=2 trainer.throughput_warmup_steps=0 loader.num_workers=0 loader.limit_train=8
  loader.limit_val=4 loader.limit_test=4 task.batch_size=2 paths.data_dir=$work/data paths.cache_dir=$work/cache
  paths.results_dir=$work/runs logger=csv"
failed=0
for task in ${TASKS:-listops pathfinder text image}; do
  extra=""
  [[ $task == listops ]] && extra="task.gen.num_train=32 task.gen.num_val=8 task.gen.num_test=8"
  [[ $task == pathfinder ]] && extra="task.num_samples=80"
  [[ $task == text ]] && extra="task.data_dir=$(cd "${IMDB_DIR:-../shared/data}" && pwd)"
  [[ $task == image ]] && extra="task.data_dir=$(cd "${CIFAR_DIR:-../shared/data/cifar-10-batches-py}" && pwd)"
  for spec in ${FAMILIES:-"lra/$task/transformer" "lra/$task/reformer" "lra/$task/longformer" "lra/$task/local" "nystromformer/$task" "yoso/$task" "mega/$task"}; do
    log="$work/${spec//\//_}.log"
    start=$(date +%s)
    if $PY run.py experiment=$spec $common $extra hydra.run.dir="$work/hydra/${spec//\//_}" > "$log" 2>&1; then
      echo "ok     $spec ($(( $(date +%s) - start )) s)"
    else
      failed=1
      echo "FAILED $spec: $(grep -E 'Error|error' "$log" | tail -1) (log: $log)"
    fi
  done
done
exit $failed
