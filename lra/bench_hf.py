"""HF implementations of our model families at equal dimensions, as peers in ``lra.bench``.

Each peer is the HF encoder (transformers==4.57.6, the test-only extra; Mega lives in
``models/deprecated/mega`` there) with the same width, depth, heads, FFN width and sequence length as
our bench entry, plus a linear head on the first position. Names: ``nystromformer``, ``yoso_e``
(expectation), ``yoso`` (LSH; needs HF's JIT-compiled CUDA kernels: nvcc + ninja at run time, else
ImportError, which the bench records as skipped),
``reformer`` (LSH layers, HF's reversible stack), ``longformer``, ``mega`` (from our resolved Mega config:
``conf/model/mega.yaml`` + ``bench.size.mega``, dims, dropouts and truncation;
``mega-chunk`` = ``mega`` with ``use_chunking`` at the variant's ``chunk_size``). The attention-specific
settings are read from our resolved attention config of the same family (``conf/attention/<name>.yaml`` plus
``bench.attention_overrides``: landmarks and conv; hashes and τ; buckets, chunk and neighbour chunks; window and
CLS global; Mega softmax, simple bias) so the comparison is like for like.
"""
from __future__ import annotations

import torch
from torch import nn


class HFClassifier(nn.Module):
    """HF encoder + Linear on position 0. forward(batch) -> (B, 2) logits; mask 1 = keep (HF convention)."""

    def __init__(self, encoder: nn.Module, hidden: int, extra: dict | None = None):
        super().__init__()
        self.encoder, self.head, self.extra = encoder, nn.Linear(hidden, 2), extra or {}

    def forward(self, batch):
        kw = dict(input_ids=batch["input_ids"], attention_mask=batch["mask"].long())
        if self.extra.get("global_cls"):
            g = torch.zeros_like(batch["input_ids"])
            g[:, 0] = 1
            kw["global_attention_mask"] = g
        out = self.encoder(**kw)
        return self.head(out.last_hidden_state[:, 0])


def build_hf(name: str, L: int, size: dict, attention: dict | None = None) -> nn.Module:
    """``attention``: our resolved ``conf/attention/<ours>.yaml`` for the peer's counterpart (with any
    ``bench.attention_overrides``); the peer's attention settings are read from it, so the two cannot drift."""
    import transformers as T
    a = attention or {}

    def need(*keys):
        missing = [k for k in keys if k not in a]
        if missing:
            raise KeyError(f"bench hf peer {name!r}: our attention config lacks {missing}")
        return [a[k] for k in keys]

    t = size["transformer"]
    D, layers, heads, ffn = t["d_model"], t["num_layers"], t["num_heads"], t["mlp_dim"]
    common = dict(vocab_size=257, hidden_size=D, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=ffn, hidden_dropout_prob=t["dropout"],
                  attention_probs_dropout_prob=t["attn_dropout"])
    if name == "nystromformer":
        landmarks, conv = need("num_landmarks", "conv_kernel")
        cfg = T.NystromformerConfig(**common, num_landmarks=landmarks, segment_means_seq_len=L,
                                    conv_kernel_size=conv, max_position_embeddings=L + 2)
        return HFClassifier(T.NystromformerModel(cfg), D)
    if name in ("yoso", "yoso_e"):
        tau, conv = need("hash_code_len", "conv_window")
        # YOSO-E has no hashes and no LSH backward (HF ignores both with use_expectation)
        nh, lsh_backward = need("num_hash", "lsh_backward") if name == "yoso" else (32, True)
        cfg = T.YosoConfig(**common, max_position_embeddings=L + 2, use_expectation=name == "yoso_e",
                           hash_code_len=tau, num_hash=nh, conv_window=conv, use_fast_hash=True,
                           lsh_backward=lsh_backward)
        encoder = T.YosoModel(cfg)
        from transformers.models.yoso import modeling_yoso
        if name == "yoso" and modeling_yoso.lsh_cumulation is None:  # HF logs a warning, then crashes in forward
            raise ImportError("hf:yoso needs HF's JIT-compiled CUDA LSH kernels (CUDA, nvcc and ninja at run time); "
                              "they did not load")
        return HFClassifier(encoder, D)
    if name == "longformer":
        window, glob = need("window", "global_tokens")
        if list(glob) not in ([0], []):
            raise ValueError(f"bench hf peer longformer: global_tokens {glob} (HF's peer supports [0] = CLS or [])")
        cfg = T.LongformerConfig(**common, attention_window=window, max_position_embeddings=L + 2, pad_token_id=0)
        return HFClassifier(T.LongformerModel(cfg), D, {"global_cls": list(glob) == [0]})
    if name == "reformer":
        chunk, buckets, hashes, before, after = need("chunk_length", "num_buckets", "n_hashes", "n_chunks_before",
                                                      "n_chunks_after")
        cfg = T.ReformerConfig(vocab_size=257, hidden_size=D, num_attention_heads=heads, attention_head_size=D // heads,
                               feed_forward_size=ffn, attn_layers=["lsh"] * layers, axial_pos_embds=False,
                               max_position_embeddings=L, is_decoder=False, lsh_attn_chunk_length=chunk,
                               num_buckets=buckets, num_hashes=hashes, lsh_num_chunks_before=before,
                               lsh_num_chunks_after=after,
                               hidden_dropout_prob=t["dropout"], lsh_attention_probs_dropout_prob=t["attn_dropout"],
                               pad_token_id=0)
        return HFClassifier(T.ReformerModel(cfg), 2 * D)  # reversible stack concatenates the two streams
    if name == "mega":
        from transformers.models.deprecated.mega import MegaConfig, MegaModel
        m = size["mega"]
        missing = {"d_model", "num_layers", "hidden_dim", "ffn_hidden_dim", "zdim", "ndim", "dropout",
                   "hidden_dropout", "attn_dropout", "truncation"} - set(m)
        if missing:
            raise KeyError(f"bench.size.mega lacks {sorted(missing)}: the HF peer is built from the same dims")
        chunk = m.get("chunk_size") or -1
        if 0 < chunk < L and L % chunk:
            raise ValueError(f"HF Mega-chunk needs the length ({L}) to be a multiple of chunk_size ({chunk})")
        chunked = chunk > 0
        cfg = MegaConfig(vocab_size=257, hidden_size=m["d_model"], num_hidden_layers=m["num_layers"],
                         intermediate_size=m["hidden_dim"], nffn_hidden_size=m["ffn_hidden_dim"],
                         shared_representation_size=m["zdim"], ema_projection_size=m["ndim"],
                         relative_positional_bias="simple", max_positions=chunk if chunked else L,
                         normalization_type="layernorm", truncation=m["truncation"], pad_token_id=0,
                         use_cache=False, use_chunking=chunked, chunk_size=chunk if chunked else -1,
                         dropout_prob=m["dropout"], hidden_dropout_prob=m["hidden_dropout"],
                         nffn_activation_dropout_prob=m["hidden_dropout"],
                         attention_probs_dropout_prob=m["attn_dropout"])
        return HFClassifier(MegaModel(cfg, add_pooling_layer=False), m["d_model"])
    raise KeyError(f"bench hf peer {name!r}; choose nystromformer, yoso_e, yoso, reformer, longformer, mega "
                   "or a bench.variants name")
