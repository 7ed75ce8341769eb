"""Attention zoo, part 2: specs/transformer_seq2seq.dl and specs/bert_mlm.dl.

* transformer_seq2seq: the encoder-decoder equals torch.nn.Transformer(batch_first=True)
  with copied weights (embeddings scaled by sqrt(d), sinusoidal positions, final
  encoder and decoder norms, causal target mask), source and target of different
  lengths: values and every gradient. The decoder input is bos then the targets
  shifted right, so the output at t ignores the targets from t on but sees every
  source position; `dlc train` reverses sequences.
* bert_mlm: the 80/10/10 corruption follows the rule, from the seeded noise it is
  drawn from (picked where u0 < rate; [MASK] where u1 < 0.8, a uniform random token
  where u1 < 0.9, else kept), with the expected frequencies; the loss and every
  gradient equal a torch BERT (Embedding, LayerNorm, post-norm gelu encoder layers,
  MLM head) whose cross-entropy counts the picked positions only.

Tolerance TOL = 1e-8 in float64, as in test_family_sequence (round-off is ~1e-14).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from compiler import api
from compiler.training import datasets
from tests.test_family_sequence import (_check, _copy, _copy_encoder_layer, _dlc,
                                        _encoder_layer_grad_errors, _maxerr, _params, _pe, _t)
from tests.test_zoo_attention import _encoder_layers, _linear, _module_grad_errors, _norm, _onnx_ok, _train

torch = pytest.importorskip("torch")

SPECS = Path(__file__).resolve().parent.parent / "specs"
SEQ2SEQ, BERT = SPECS / "transformer_seq2seq.dl", SPECS / "bert_mlm.dl"


def _copy_mha(mha, p, pre):
    _copy(mha.in_proj_weight, np.concatenate([p[f"{pre}{n}_proj.W"].T for n in "qkv"]))
    _copy(mha.in_proj_bias, np.concatenate([p[f"{pre}{n}_proj.b"] for n in "qkv"]))
    _copy(mha.out_proj.weight, p[pre + "out_proj.W"].T)
    _copy(mha.out_proj.bias, p[pre + "out_proj.b"])


def _mha_grad_errors(mha, g, pre):
    d = mha.embed_dim
    errs = {}
    for i, n in enumerate("qkv"):
        errs[f"d{pre}{n}_proj.W"] = _maxerr(mha.in_proj_weight.grad[i * d:(i + 1) * d].T, g[f"{pre}{n}_proj.W"])
        errs[f"d{pre}{n}_proj.b"] = _maxerr(mha.in_proj_bias.grad[i * d:(i + 1) * d], g[f"{pre}{n}_proj.b"])
    errs[f"d{pre}out_proj.W"] = _maxerr(mha.out_proj.weight.grad.T, g[pre + "out_proj.W"])
    errs[f"d{pre}out_proj.b"] = _maxerr(mha.out_proj.bias.grad, g[pre + "out_proj.b"])
    return errs


# ---- transformer_seq2seq -----------------------------------------------------------------------

S2S_H = {"d_model": 8, "heads": 2, "d_ff": 16, "layers": 2, "symbols": 5}


def _s2s_feeds(rng, B=3, S=5, T=4):
    return {"x": rng.integers(1, 6, (B, S)), "y": rng.integers(1, 6, (B, T))}


def _torch_transformer(p, layers=2):
    tr = torch.nn.Transformer(8, 2, layers, layers, 16, dropout=0.0, batch_first=True).double()
    for i in range(layers):
        _copy_encoder_layer(tr.encoder.layers[i], p, f"encoder.{i}.")
        dec, pre = tr.decoder.layers[i], f"decoder.{i}.block."
        _copy_mha(dec.self_attn, p, pre + "self_attn.")
        _copy_mha(dec.multihead_attn, p, pre + "cross_attn.")
        for name in ("linear1", "linear2"):
            _copy(getattr(dec, name).weight, p[f"{pre}{name}.W"].T)
            _copy(getattr(dec, name).bias, p[f"{pre}{name}.b"])
        for name in ("norm1", "norm2", "norm3"):
            _copy(getattr(dec, name).weight, p[f"{pre}{name}.gamma"])
            _copy(getattr(dec, name).bias, p[f"{pre}{name}.beta"])
    for norm, name in ((tr.encoder.norm, "enc_norm"), (tr.decoder.norm, "dec_norm")):
        _copy(norm.weight, p[name + ".gamma"])
        _copy(norm.bias, p[name + ".beta"])
    return tr


def test_seq2seq_matches_torch_transformer():
    B, S, T, V = 3, 5, 4, 6
    m = api.load(SEQ2SEQ, hparams=S2S_H, dims={"S": S, "T": T})
    p = _params(m)
    feeds = _s2s_feeds(np.random.default_rng(1), B, S, T)
    out = m.run(feeds, p, dtype="f64")
    g = m.gradients("ce", feeds, p, dtype="f64")            # every parameter
    tr = _torch_transformer(p)
    src_e, tgt_e = torch.nn.Embedding(V, 8).double(), torch.nn.Embedding(V, 8).double()
    _copy(src_e.weight, p["src_embed.E"])
    _copy(tgt_e.weight, p["tgt_embed.E"])
    head = _linear(p, "head")
    scale = math.sqrt(8)
    y = torch.tensor(feeds["y"])
    shifted = torch.cat([torch.zeros(B, 1, dtype=torch.long), y[:, :-1]], dim=1)   # bos = 0
    src = src_e(torch.tensor(feeds["x"])) * scale + _t(_pe(S, 8))
    tgt = tgt_e(shifted) * scale + _t(_pe(T, 8))
    drop = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)        # torch: true = not attended
    logits = head(tr(src, tgt, tgt_mask=drop))
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
    loss.backward()
    errs = {"probs": _maxerr(torch.softmax(logits, -1), out["probs"]), "ce": abs(loss.item() - out["ce"]),
            "dsrc_embed.E": _maxerr(src_e.weight.grad, g["src_embed.E"]),
            "dtgt_embed.E": _maxerr(tgt_e.weight.grad, g["tgt_embed.E"])}
    errs.update(_module_grad_errors(head, g, "head"))
    errs.update(_module_grad_errors(tr.encoder.norm, g, "enc_norm"))
    errs.update(_module_grad_errors(tr.decoder.norm, g, "dec_norm"))
    for i in range(2):
        errs.update({f"enc{i}.{k}": v for k, v in
                     _encoder_layer_grad_errors(tr.encoder.layers[i], g, f"encoder.{i}.").items()})
        dec, pre = tr.decoder.layers[i], f"decoder.{i}.block."
        errs.update(_mha_grad_errors(dec.self_attn, g, pre + "self_attn."))
        errs.update(_mha_grad_errors(dec.multihead_attn, g, pre + "cross_attn."))
        for name in ("linear1", "linear2", "norm1", "norm2", "norm3"):
            errs.update(_module_grad_errors(getattr(dec, name), g, pre + name))
    _check(errs)


def test_seq2seq_decoder_is_causal_and_reads_the_whole_source():
    B, S, T = 3, 6, 5
    m = api.load(SEQ2SEQ, hparams=S2S_H, dims={"S": S, "T": T})
    p = _params(m)
    feeds = _s2s_feeds(np.random.default_rng(2), B, S, T)
    base = m.run(feeds, p, dtype="f64")["probs"]
    for t in range(T - 1):
        y = feeds["y"].copy()
        y[:, t:] = y[:, t:] % 5 + 1           # targets from t on: the decoder reads them after t
        probs = m.run({**feeds, "y": y}, p, dtype="f64")["probs"]
        assert np.max(np.abs(probs[:, :t + 1] - base[:, :t + 1])) < 1e-12, t
        assert np.max(np.abs(probs[:, t + 1:] - base[:, t + 1:])) > 1e-4, t
    x = feeds["x"].copy()
    x[:, -1] = x[:, -1] % 5 + 1               # the last source token reaches the first output
    probs = m.run({**feeds, "x": x}, p, dtype="f64")["probs"]
    assert np.max(np.abs(probs[:, 0] - base[:, 0])) > 1e-4


# ---- bert_mlm ----------------------------------------------------------------------------------

BERT_H = {"d_model": 8, "heads": 2, "d_ff": 16, "layers": 2, "vocab": 8}


def test_bert_corruption_follows_the_80_10_10_rule():
    rate, V, B, T = 0.15, 8, 500, 16
    m = api.load(BERT, hparams={**BERT_H, "mask_rate": rate}, dims={"B": B, "T": T})
    x = datasets.load("markov", n=B, length=T, vocab=V).fields["x"]
    out = m.run({"x": x}, seed=3)
    u = m.noise({"x": x}, seed=3)
    # noise.0: the pick, noise.1: the choice, noise.2: the uniform under the Gumbel-max
    # draw of the random token (argmax of 0 - log(-log u) is argmax of u)
    picked = u["noise.0"] < rate
    choice = u["noise.1"]
    random_token = np.argmax(u["noise.2"], axis=-1)
    want = np.where(picked & (choice < 0.8), V, np.where(picked & (choice < 0.9), random_token, x))
    np.testing.assert_array_equal(out["picked"], picked)
    np.testing.assert_array_equal(out["corrupted"], want)
    # frequencies (8000 positions, ~1200 picked): binomial std <= 0.004 and <= 0.015
    c, n = out["corrupted"], picked.sum()
    assert abs(picked.mean() - rate) < 0.02
    np.testing.assert_array_equal(c[~picked], x[~picked])               # unpicked: untouched
    assert abs((c[picked] == V).mean() - 0.8) < 0.05
    changed = picked & (c != V) & (c != x)                               # random, not the original
    assert abs(changed.sum() / n - 0.1 * (1 - 1 / V)) < 0.04
    assert abs((picked & (c == x)).sum() / n - (0.1 + 0.1 / V)) < 0.04
    assert np.bincount(c[changed], minlength=V).min() > 0                # every token can be drawn


def test_bert_mlm_loss_counts_only_masked_positions_like_torch():
    B, T, V = 4, 10, 8
    m = api.load(BERT, hparams={**BERT_H, "mask_rate": 0.4}, dims={"T": T})
    p = _params(m)
    x = datasets.load("markov", n=B, length=T, vocab=V, seed=2).fields["x"]
    feeds = {"x": x}
    out, g = _dlc(m, feeds, p, loss="mlm")          # same seed and step: the same noise
    picked, corrupted = out["picked"], out["corrupted"]
    assert 0 < picked.sum() < picked.size
    embed = torch.nn.Embedding(V + 1, 8).double()
    _copy(embed.weight, p["embed.E"])
    emb_norm, head_norm = _norm(p, "emb_norm"), _norm(p, "head_norm")
    transform, head = _linear(p, "transform"), _linear(p, "head")
    layers = _encoder_layers(p, [f"encoder.{i}." for i in range(2)], 8, 2, 16, activation="gelu")
    h = emb_norm(embed(torch.tensor(corrupted)) + _t(_pe(T, 8)))
    for blk in layers:
        h = blk(h)
    logits = head(head_norm(torch.nn.functional.gelu(transform(h))))
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, V), torch.tensor(x).reshape(-1),
                                            reduction="none").reshape(B, T)
    w = _t(picked.astype(np.float64))
    loss = (nll * w).sum() / w.sum()
    loss.backward()
    errs = {"probs": _maxerr(torch.softmax(logits, -1), out["probs"]), "mlm": abs(loss.item() - out["mlm"]),
            "dembed.E": _maxerr(embed.weight.grad, g["embed.E"])}
    for mod, name in ((emb_norm, "emb_norm"), (head_norm, "head_norm"), (transform, "transform"), (head, "head")):
        errs.update(_module_grad_errors(mod, g, name))
    for i, blk in enumerate(layers):
        errs.update({f"{i}.{k}": v for k, v in _encoder_layer_grad_errors(blk, g, f"encoder.{i}.").items()})
    _check(errs)
    # the test can tell: the mean over every position is another number
    assert abs(nll.mean().item() - out["mlm"]) > 1e-3


@pytest.mark.parametrize("spec", [SEQ2SEQ, BERT], ids=lambda s: s.stem)
def test_onnx_export_passes_full_check(spec, tmp_path):
    _onnx_ok(api.load(spec), tmp_path)
