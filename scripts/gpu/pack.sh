#!/usr/bin/env bash
# Assemble the ignored folder one GPU call carries. A call sends the working tree plus the carried paths,
# 64 MiB in all, so training runs carry a slim wheel set and at most one task's data:
#   bash scripts/gpu/pack.sh runs    -> .gpu/pack: hydra-core/omegaconf/antlr4 wheels (logger=csv needs no wandb)
#                                       + the IMDB tarball (text) ; ListOps and Pathfinder are generated there
#   bash scripts/gpu/pack.sh image   -> .gpu/pack: the same wheels + the prepared grayscale CIFAR-10 cache
#                                       (the raw batches are 179 MB; the cache is 60 MB; run with task.prepared)
#                                       PREPARE_ARGS=task.mask_black_pixels=true for the configs that mask pixel 0
#                                       (lra/image/*, nystromformer/image, yoso/image); default for mega/image
# Then: run(command="WHEELS=.gpu/pack PARTS=runs TASKS=... bash scripts/gpu/session2.sh", carry=[".gpu/pack"]).
set -euo pipefail
what=${1:?usage: pack.sh runs|image}
src=${WHEELS_FROM:-.whl}
[ -d "$src" ] || { echo "no $src: build it with bash ../shared/tools/gpu-wheels.sh $src" >&2; exit 1; }
mkdir -p .git/info && { grep -qx "/.gpu/" .git/info/exclude 2>/dev/null || echo "/.gpu/" >> .git/info/exclude; }
rm -rf .gpu/pack.tmp && mkdir -p .gpu/pack.tmp
cp "$src"/hydra_core-*.whl "$src"/omegaconf-*.whl "$src"/antlr4_python3_runtime-*.whl .gpu/pack.tmp/
case "$what" in
  runs)
    mkdir -p .gpu/pack.tmp/data/imdb
    cp ../shared/data/aclImdb_v1.tar.gz .gpu/pack.tmp/data/imdb/ ;;
  image)
    out=$(python -m lra.prepare task=image task.data_dir=../shared/data/cifar-10-batches-py \
          paths.cache_dir=.gpu/cache ${PREPARE_ARGS:-} | tail -1)
    dir=$(python -c "import json, sys; print(json.loads(sys.argv[1])['cache_dir'])" "$out")
    mkdir -p .gpu/pack.tmp/cache/image
    cp -r "$dir" .gpu/pack.tmp/cache/image/prepared ;;
  *) echo "unknown pack $what; choose runs or image" >&2; exit 1 ;;
esac
rm -rf .gpu/pack && mv .gpu/pack.tmp .gpu/pack
du -sh .gpu/pack
