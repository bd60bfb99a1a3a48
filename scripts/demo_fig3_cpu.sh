#!/usr/bin/env bash
# A CPU demonstration of the bench's LRA Figure 3 chart from real runs (results/bench/cpu_fig3_demo*): every
# family trained on Text (the IMDB archive in ../shared/data, reviews cut to 256 bytes) at experiment=smoke
# sizes (1-2 layers, d_model 32) for 2000 steps, then the smoke-size bench at L 128/256, which draws the chart
# from those run records. Tiny models on 2 cores: accuracies stay near chance; this shows the pipeline, it
# reproduces nothing. About 11 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
runs=${RUNS_DIR:-results/records/cpu_fig3_demo}
common="experiment=smoke task=text trainer.max_steps=2000 trainer.val_check_interval=500 loader.limit_train=25000
  loader.limit_val=1000 loader.limit_test=2000 logger=csv paths.results_dir=$runs"
$PY run.py -m $common attention=math,sdpa,flex,nystrom,yoso,yoso_e,lsh,longformer,local \
  hydra.sweep.dir=outputs/fig3/sweep
$PY run.py -m $common model=mega model.chunk_size=-1,32 hydra.sweep.dir=outputs/fig3/sweep_mega
$PY -m lra.bench experiment=smoke 'bench.lengths=[128,256]' bench.repeats=5 bench.tag=cpu_fig3_demo \
  bench.runs_dir=$runs "$@"
