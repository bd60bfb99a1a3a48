#!/usr/bin/env bash
# Set up and run the test suite (the not-slow part; pass -m slow or other pytest args to change that).
# Without a CUDA device the Triton kernels run in the interpreter (TRITON_INTERPRET=1); with one they compile
# for the GPU and the `gpu`-marked tests run too. A missing Triton fails the kernel tests (LRA_REQUIRE_TRITON=1)
# instead of skipping them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
if [ -z "${TRITON_INTERPRET:-}" ]; then
  if .venv/bin/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    export TRITON_INTERPRET=0
  else
    export TRITON_INTERPRET=1
  fi
fi
export LRA_REQUIRE_TRITON="${LRA_REQUIRE_TRITON:-1}" WANDB_MODE=offline WANDB_SILENT=true
if [ $# -eq 0 ]; then set -- -m "not slow"; fi
exec .venv/bin/python -m pytest "$@"
