#!/usr/bin/env bash
# On the lent GPU machine (its image has torch, lightning, torchmetrics, triton): install the carried
# wheel folder (WHEELS, default .whl, built by ../shared/tools/gpu-wheels.sh; scripts/gpu/pack.sh makes a slim
# one) into /tmp/site. Source this file.
rm -rf /tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site ${WHEELS:-.whl}/*.whl \
  > /tmp/pip.log 2>&1 || { tail -20 /tmp/pip.log; exit 1; }
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export WANDB_MODE=offline WANDB_SILENT=true
python3 -c "import torch, lightning, hydra; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0), 'lightning', lightning.__version__)"
