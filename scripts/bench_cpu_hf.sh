#!/usr/bin/env bash
# Issue 4's CPU comparison: each family against the HF implementation of the same model at equal
# dimensions (2 layers, D 64, 2 heads, FFN 128: the PyTorch-port protocol), forward+backward+AdamW step,
# batch 1, lengths 1K/2K/4K. Writes results/bench/cpu_hf.{json,md,png}. CPU peak memory: lra.cpu_memory.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
exec $PY -m lra.bench bench.device=cpu bench.dtype=fp32 bench.batch_size=1 'bench.lengths=[1024,2048,4096]' \
  bench.warmup=1 bench.repeats=3 bench.tag=cpu_hf bench.baseline=transformer/sdpa \
  'bench.size.transformer={d_model: 64, num_layers: 2, num_heads: 2, qkv_dim: 64, mlp_dim: 128, dropout: 0.1, attn_dropout: 0.1, pos_emb: sinusoidal, pooling: cls}' \
  'bench.size.mega={d_model: 64, num_layers: 2, hidden_dim: 128, ffn_hidden_dim: 128, zdim: 64, ndim: 16}' bench.size.head_mlp_dim=128 \
  'bench.entries=[transformer/sdpa,transformer/nystrom,transformer/yoso_e,transformer/lsh,transformer/longformer,mega/none,mega-chunk/none]' \
  'bench.hf_peers=[nystromformer,yoso_e,reformer,longformer,mega,mega-chunk]' "$@"
