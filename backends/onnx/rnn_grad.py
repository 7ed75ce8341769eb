"""ONNX lowerings of `lstm_grad` / `gru_grad` (compiler/primitives/recurrent.py):
backpropagation through time with the per-step work cut to what is truly sequential,
in place of the decomposition's VJP (a forward Loop and a backward Loop of ~40 nodes
a step, each iteration tens of microseconds in onnxruntime).

`lstm_grad`, in processing order p (p = t, or T-1-t when reversed), gates i, f, g, o:

1. h_p: the forward `lstm` node's ys when one on the same operands was lowered before
   (a train step: its fused ONNX LSTM op, whose Y `rnn.py` leaves in ``o.root.memo``),
   else a forward ``Scan``;
2. the gate pre-activations of all steps at once, X W + H_prev U + b (a Gemm a gate
   over [T·B, .]), the activations vectorised; c_p = f_p c_{p-1} + i_p g_p, elementwise
   only, is a 2-node ``Scan`` (or comes from the forward ``Scan``);
3. the backward ``Scan`` (over p descending) carries (dh, dc), dh including dys_p, with
   precomputed per-step factors A = o(1 - tanh²c), P = [g i(1-i), c_prev f(1-f),
   i(1-g²), tanh(c) o(1-o)]:
       dc' = dc + dh A;  dpre = [dc', dc', dc', dh] P;
       dh_{p-1} = dpre Uᵀ + dys_{p-1} (one Gemm);  dc_{p-1} = dc' f,
   and stacks dpre: 6 nodes a step (~11 us a step measured in onnxruntime, one thread;
   a ``Loop`` with a Gather per input ~30 us);
4. after it, one matmul each over the stacked [T·B, .]: dW = Xᵀ dG, dU = H_prevᵀ dG,
   db = Σ dG, dx = dG Wᵀ; dh0, dc0 are the final carries.

`gru_grad`: the same plan, with no state but h (see `gru_grad`).

Scans are used over Loops: ONNX ``Scan`` slices its inputs itself (no Gather nodes).
The big tensors are kept in backprop order q = T-1-p, so the backward Scan runs
forwards and only the LSTM's cell Scan (3 of [T, B, H]) is flipped around (see
`_scan`). Every op here has float64 kernels: the same lowering runs
in both run floats (the fused LSTM/GRU op, float32-only, only where the forward used it).
"""
from __future__ import annotations

import numpy as np

from .builder import value_info
from .proto import helper


def _scan(o, name, carries, xs, step, reverse):
    """ONNX ``Scan``: carries [(value, shape)], scan inputs xs [(value, step shape)] (axis 0);
    step(b, carry names, x names) -> (new carries, per-step outputs [(value, shape)]).
    Returns the final carries then the stacked outputs (in input order even when reversed).
    Reversed by flipping inputs and outputs, not by ``scan_*_directions``: onnx's
    reference evaluator (which tests check exported models with) has forward Scans only."""
    b = o.subgraph(o.graph)
    elem = o.elem_type("f32")
    ins = [(b.names.fresh(name + "_c"), s) for _, s in carries] + \
          [(b.names.fresh(name + "_x"), s) for _, s in xs]
    new, ys = step(b, [n for n, _ in ins[:len(carries)]], [n for n, _ in ins[len(carries):]])
    outs = []
    for v, s in list(zip(new, [s for _, s in carries])) + list(ys):
        if v in {n for n, _ in ins} or any(v == n for n, _ in outs):  # outputs must be fresh
            v = b.op("Identity", v)
        outs.append((v, s))
    body = helper.make_graph(b.nodes, o.names.fresh(name + "_body"),
                             [value_info(n, elem, s) for n, s in ins],
                             [value_info(n, elem, s) for n, s in outs])
    k = len(carries) + len(ys)
    seqs = [_flip(o, v) if reverse else v for v, _ in xs]
    r = o.op("Scan", *[v for v, _ in carries], *seqs, outputs=k, body=body,
             num_scan_inputs=len(xs))
    r = [r] if k == 1 else list(r)
    return r[:len(carries)] + [_flip(o, v) if reverse else v for v in r[len(carries):]]


def _time_major_y(o, ys):
    """The fused forward's hidden states [T, B, H] in time order, or None (no fused op)."""
    y = o.root.memo.get(("onnx_y", ys))
    return None if y is None else o.op("Squeeze", y, o.ints([1]))


def _gate(o, m, j, hid, axis):
    """Gate block j (of `hid` entries) of m along axis."""
    return o.op("Slice", m, o.ints([j * hid]), o.ints([(j + 1) * hid]), o.ints([axis]))


def _flip(o, v):
    """Reverse axis 0."""
    return o.op("Slice", v, o.ints([-1]), o.ints([np.iinfo(np.int64).min]), o.ints([0]),
                o.ints([-1]))


def _shift_out(o, last, seq):
    """[seq[1:]; last] along axis 0 (last: one step, [B, H])."""
    tail = o.op("Unsqueeze", last, o.ints([0]))
    rest = o.op("Slice", seq, o.ints([1]), o.ints([np.iinfo(np.int64).max]), o.ints([0]))
    return o.op("Concat", rest, tail, axis=0)


def _zeros(o, like, shape):
    if all(isinstance(d, int) for d in shape):
        return o.const(np.zeros(shape))
    return o.op("Expand", o.const(np.zeros(())), o.shape_of(like))


def _forward_scan(o, xw, h0, c0, u, bsz, hid):
    """(H, C) [T, B, H] of all steps in processing order: the LSTM recurrence as a Scan
    over xw = X W + b [T, B, 4H]."""
    def step(b, carry, x):
        h, c = carry
        pre = b.op("Gemm", h, u, x[0])
        i, f, g, oo = b.op("Split", pre, axis=1, num_outputs=4, outputs=4)
        c2 = b.op("Add", b.op("Mul", b.op("Sigmoid", f), c),
                  b.op("Mul", b.op("Sigmoid", i), b.op("Tanh", g)))
        h2 = b.op("Mul", b.op("Sigmoid", oo), b.op("Tanh", c2))
        return [h2, c2], [(h2, [bsz, hid]), (c2, [bsz, hid])]
    return _scan(o, "lstm_fwd", [(h0, [bsz, hid]), (c0, [bsz, hid])],
                 [(xw, [bsz, 4 * hid])], step, True)[2:]


def _cell_scan(o, c0, f, u, bsz, hid):
    """f_p c_{p-1} [T, B, H] where c_p = f_p c_{p-1} + u_p (c_p itself is both the carry
    and what the step would stack: an Identity a step more, ~2 us)."""
    def step(b, carry, x):
        fc = b.op("Mul", x[0], carry[0])
        return [b.op("Add", fc, x[1])], [(fc, [bsz, hid])]
    return _scan(o, "lstm_cell", [(c0, [bsz, hid])], [(f, [bsz, hid]), (u, [bsz, hid])],
                 step, True)[1]


def _backprop_order(o, v, reverse):
    """[B, T, .] time-major in backprop order q (q = T-1-p): the backward Scan runs
    forwards (onnx's reference evaluator has no reversed Scan)."""
    tm = o.op("Transpose", v, perm=[1, 0, 2])
    return tm if reverse else _flip(o, tm)


def lstm_grad(o, n, h0, c0, x, w, u, b, ct_h, ct_c, ct_ys, partner_ys=None):
    """The six cotangents (zeros where `needed` says unused); partner_ys: the forward's ys."""
    a = n.attrs
    reverse, needed = a["reverse"], a["needed"]
    bsz, length, d_in = o.type_of(n.args[2]).shape
    hid = o.type_of(n.args[0]).shape[1]
    tm = lambda v: _backprop_order(o, v, reverse)  # noqa: E731
    xp = tm(x)  # [T, B, in], processing order
    b_in = b
    if a["forget_bias"] != 0.0:
        fb = np.zeros(4 * hid)
        fb[hid:2 * hid] = a["forget_bias"]
        b = o.op("Add", b, o.const(fb))
    flat = lambda v, k: o.op("Reshape", v, o.ints([-1, k]))  # noqa: E731
    steps = lambda v, k: o.op("Reshape", v, o.dims((length, bsz, k)))  # noqa: E731
    xf = flat(xp, d_in)
    if partner_ys is not None:
        hs = _time_major_y(o, partner_ys)
        hs = (hs if reverse else _flip(o, hs)) if hs is not None else tm(partner_ys)
    else:
        hs, cs = _forward_scan(o, steps(o.op("Gemm", xf, w, b), 4 * hid), h0, c0, u, bsz, hid)
    hprev = _shift_out(o, h0, hs)
    hf = flat(hprev, hid)
    # one Gemm a gate ([T·B, H] each, the biases ride along): no Split of [T·B, 4H]
    cut = lambda m, j, ax: _gate(o, m, j, hid, ax)  # noqa: E731
    pre = [o.op("Gemm", hf, cut(u, j, 1), o.op("Gemm", xf, cut(w, j, 1), cut(b, j, 0)))
           for j in range(4)]
    i, f, g, og = (o.op("Sigmoid", pre[0]), o.op("Sigmoid", pre[1]), o.op("Tanh", pre[2]),
                   o.op("Sigmoid", pre[3]))
    ig = o.op("Mul", i, g)
    if partner_ys is not None:  # f_p c_{p-1} by the 2-node Scan, then c_p
        fc = flat(_cell_scan(o, c0, steps(f, hid), steps(ig, hid), bsz, hid), hid)
        cs = o.op("Add", fc, ig)
    else:
        cs = flat(cs, hid)
        fc = o.op("Mul", f, flat(_shift_out(o, c0, steps(cs, hid)), hid))
    tc, hf_ = o.op("Tanh", cs), flat(hs, hid)
    # the factors with h = o tanh c, i g and f c_prev reused: 2 ops each
    less = lambda p, q, r: o.op("Sub", p, o.op("Mul", q, r))  # noqa: E731
    fac_a = steps(less(og, hf_, tc), hid)                            # o (1 - tanh² c)
    fac_p = steps(o.op("Concat", less(ig, ig, i), less(fc, fc, f),   # g i(1-i), c_prev f(1-f)
                       less(i, ig, g), less(hf_, hf_, og), axis=1),  # i (1-g²), tanh c o(1-o)
                  4 * hid)
    f = steps(f, hid)
    dys = tm(ct_ys)
    dys_next = _shift_out(o, _zeros(o, h0, [bsz, hid]), dys)  # dys_{p-1}: added after step p
    last = o.op("Gather", dys, o.const(np.array(0, np.int64)), axis=0)
    dh_init = o.op("Add", ct_h, last)

    def step(bb, carry, xs):
        dh, dc = carry
        fa, fp_, fg, dn = xs
        dct = bb.op("Add", dc, bb.op("Mul", dh, fa))
        dpre = bb.op("Mul", bb.op("Concat", dct, dct, dct, dh, axis=1), fp_)
        dh2 = bb.op("Gemm", dpre, u, dn, transB=1)
        return [dh2, bb.op("Mul", dct, fg)], [(dpre, [bsz, 4 * hid])]
    dh0, dc0, dg = _scan(o, "lstm_bptt", [(dh_init, [bsz, hid]), (ct_c, [bsz, hid])],
                         [(fac_a, [bsz, hid]), (fac_p, [bsz, 4 * hid]), (f, [bsz, hid]),
                          (dys_next, [bsz, hid])], step, False)
    dgf = flat(dg, 4 * hid)
    out = [dh0, dc0, None, None, None, None]
    if needed[2]:
        dx = o.op("MatMul", dg, o.op("Transpose", w, perm=[1, 0]))
        out[2] = o.op("Transpose", dx if reverse else _flip(o, dx), perm=[1, 0, 2])
    if needed[3]:
        out[3] = o.op("Gemm", xf, dgf, transA=1)
    if needed[4]:
        out[4] = o.op("Gemm", hf, dgf, transA=1)
    if needed[5]:
        out[5] = o.op("ReduceSum", dgf, o.ints([0]), keepdims=0)
    shapes = [(h0, (bsz, hid)), (c0, (bsz, hid)), (x, (bsz, length, d_in)),
              (w, (d_in, 4 * hid)), (u, (hid, 4 * hid)), (b_in, (4 * hid,))]
    return [v if v is not None else _zeros(o, like, s) for v, (like, s) in zip(out, shapes)]


def gru_grad(o, n, h0, x, w, u, bx, bh, ct_h, ct_ys, partner_ys):
    """`gru_grad` likewise, from the forward `gru` node's ys (no cell state to rebuild:
    no forward Scan at all). With dlc's gates r, u (z), n, per step p, all linear in dh
    (dys_p included): q = dh (1-z)(1-n²) is n's pre-activation cotangent, and
       dGh = dh [Pr, Pu, q/dh · r],  dGx = dh [Pr, Pu, q/dh]   (Pr = q/dh · hn r(1-r),
       Pu = (h_prev - n) z(1-z)),  dh_{p-1} = dGh Uᵀ + dh z + dys_{p-1};
    dW = Xᵀ dGx, dbx = Σ dGx, dU = H_prevᵀ dGh, dbh = Σ dGh, dx = dGx Wᵀ after it."""
    a = n.attrs
    reverse, needed = a["reverse"], a["needed"]
    bsz, length, d_in = o.type_of(n.args[1]).shape
    hid = o.type_of(n.args[0]).shape[1]
    tm = lambda v: _backprop_order(o, v, reverse)  # noqa: E731
    flat = lambda v, k: o.op("Reshape", v, o.ints([-1, k]))  # noqa: E731
    steps = lambda v, k: o.op("Reshape", v, o.dims((length, bsz, k)))  # noqa: E731
    xf = flat(tm(x), d_in)
    hs = _time_major_y(o, partner_ys)
    hs = (hs if reverse else _flip(o, hs)) if hs is not None else tm(partner_ys)
    hprev = flat(_shift_out(o, h0, hs), hid)
    cut = lambda m, j, ax: _gate(o, m, j, hid, ax)  # noqa: E731
    xg = [o.op("Gemm", xf, cut(w, j, 1), cut(bx, j, 0)) for j in range(3)]
    hg = [o.op("Gemm", hprev, cut(u, j, 1), cut(bh, j, 0)) for j in range(3)]
    r = o.op("Sigmoid", o.op("Add", xg[0], hg[0]))
    z = o.op("Sigmoid", o.op("Add", xg[1], hg[1]))
    nn = o.op("Tanh", o.op("Add", xg[2], o.op("Mul", r, hg[2])))
    less = lambda p, q, s: o.op("Sub", p, o.op("Mul", q, s))  # noqa: E731
    omz = less(o.const(np.ones(())), z, o.const(np.ones(())))  # 1 - z
    q = less(omz, o.op("Mul", omz, nn), nn)                    # (1-z)(1-n²)
    qr = o.op("Mul", q, r)
    qrh = o.op("Mul", qr, hg[2])
    p_r = less(qrh, qrh, r)                                     # q hn r(1-r)
    p_u = o.op("Mul", o.op("Sub", hprev, nn), less(z, z, z))   # (h_prev - n) z(1-z)
    fac_h = steps(o.op("Concat", p_r, p_u, qr, axis=1), 3 * hid)
    fac_x = steps(o.op("Concat", p_r, p_u, q, axis=1), 3 * hid)
    dys = tm(ct_ys)
    dys_next = _shift_out(o, _zeros(o, h0, [bsz, hid]), dys)
    dh_init = o.op("Add", ct_h, o.op("Gather", dys, o.const(np.array(0, np.int64)), axis=0))

    def step(bb, carry, xs):
        (dh,), (fh, fx, zz, dn) = carry, xs
        dh3 = bb.op("Concat", dh, dh, dh, axis=1)
        dgh = bb.op("Mul", dh3, fh)
        dh2 = bb.op("Gemm", dgh, u, bb.op("Add", bb.op("Mul", dh, zz), dn), transB=1)
        return [dh2], [(dgh, [bsz, 3 * hid]), (bb.op("Mul", dh3, fx), [bsz, 3 * hid])]
    dh0, dgh, dgx = _scan(o, "gru_bptt", [(dh_init, [bsz, hid])],
                          [(fac_h, [bsz, 3 * hid]), (fac_x, [bsz, 3 * hid]),
                           (steps(z, hid), [bsz, hid]), (dys_next, [bsz, hid])], step, False)
    dghf, dgxf = flat(dgh, 3 * hid), flat(dgx, 3 * hid)
    out = [dh0, None, None, None, None, None]
    if needed[1]:
        dx = o.op("MatMul", dgx, o.op("Transpose", w, perm=[1, 0]))
        out[1] = o.op("Transpose", dx if reverse else _flip(o, dx), perm=[1, 0, 2])
    for k, v in ((2, lambda: o.op("Gemm", xf, dgxf, transA=1)),
                 (3, lambda: o.op("Gemm", hprev, dghf, transA=1)),
                 (4, lambda: o.op("ReduceSum", dgxf, o.ints([0]), keepdims=0)),
                 (5, lambda: o.op("ReduceSum", dghf, o.ints([0]), keepdims=0))):
        if needed[k]:
            out[k] = v()
    shapes = [(h0, (bsz, hid)), (x, (bsz, length, d_in)), (w, (d_in, 3 * hid)),
              (u, (hid, 3 * hid)), (bx, (3 * hid,)), (bh, (3 * hid,))]
    return [v if v is not None else _zeros(o, like, s) for v, (like, s) in zip(out, shapes)]
