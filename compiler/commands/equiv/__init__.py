"""`dlc equiv`: the same model, parameters and data through every backend, compared.

What runs (one seed fixes everything):

* inputs: with ``data=True`` (the command's default) batches of ``dim`` rows of the
  train block's data set when it has one that fits (`equiv.data`); otherwise from
  `compiler.gradcheck.sample_inputs` (every symbolic dim set to `dim`, 8 by default,
  inside each input's declared domain), parameters and states from ``model.init_params(seed)`` (for the
  forward and gradient phases every param gets N(0, 0.1^2) added, so that zero
  initialisations do not make comparisons vacuous), noise from the host-side
  generator (`compiler.noise`). Float data is rounded to float32 first, so every
  backend, float32 or float64, reads exactly the same numbers;
* backends: **numpy-f64** (the reference), numpy-f32, torch-f32 and torch-f64 on the
  CPU, torch-f32 on CUDA with ``--device cuda``, and onnxruntime-f32 (onnx-f32);
* phases, each on the graph after the optimisation passes (what users run):
  ``forward``: every output, loss and metric of the evaluation graph;
  ``gradient``: the symbolic gradient of every loss w.r.t. every parameter
  (`Model.gradient_results`);
  ``train``: ``--steps`` iterations of the training engine's step graphs
  (`compiler.training.build_step`, every player group), each backend iterating on
  its *own* parameters, optimizer slots and states from the same start (as `dlc
  train` initialises them), over the same fixed batches (batch ``k`` drawn from seed
  ``(seed, k)``), comparing each step's loss, metrics, learning rate and every new
  param, slot and state;
  ``autograd``: ``loss.backward()`` through the PyTorch lowering of the forward graph
  (float64) vs dlc's symbolic gradients on the reference.

The criterion, elementwise, against the reference ``r``: ``|x - r| <= atol + rtol*|r|``
(NaN matches NaN, equal infinities match; integer and boolean tensors must be equal).
Base tolerances (atol, rtol) by the compared backend's precision and the phase:

=========  ============  ============  =============  ============
precision  forward       gradient      train          autograd
=========  ============  ============  =============  ============
f32        1e-5, 1e-4    1e-5, 1e-3    1e-4, 1e-3     -
f64        1e-10, 1e-10  1e-10, 1e-10  1e-10, 1e-10   1e-10, 1e-10
=========  ============  ============  =============  ============

Why: float32 rounds at 2**-24 ~ 6e-8 relative. A forward pass of these models sums
O(100) products per entry (matmuls, softmax denominators, means): the error grows
like sqrt(n)..n unit roundoffs, up to ~1e-5 relative in the worst entries, hence
rtol 1e-4 (a 10x margin), and atol 1e-5 for entries near zero, where relative error
means nothing (probabilities of 1e-7, cancelling sums). A gradient is one more pass
of the same length in reverse whose entries are batch sums of products of forward
values that already carry the forward error, with more cancellation (``softmax -
onehot``): rtol 1e-3. A training step then maps the gradient error into the
parameters through the optimizer, and the error compounds over steps: atol 1e-4.
Float64 backends compute the same expressions in double precision (2**-53 ~ 1.1e-16)
in possibly different orders and kernels: 1e-10 leaves six orders of magnitude for
that and still catches any real difference in what is computed.

Conditioning. Some values are not determined to those tolerances by the arithmetic
at all, and no backend can be asked to agree on them:

* the reference itself moves when its inputs move by one rounding error: each phase
  is also run on the reference with every float feed multiplied by ``1 + u*eps``
  (``u ~ U[-1, 1]``, ``eps`` = 2**-24 when judging float32 backends, 2**-53 for float64),
  e.g. an untrained diffusion model's 100-step sampling chain, which blows up;
* float32 rounding inside the computation is amplified: Adam divides by
  ``sqrt(v) + eps``, which turns a gradient entry that is zero up to rounding (the
  bias of an attention key projection: softmax ignores it) into an update of up to
  ``lr`` whose value is decided by the rounding noise. The other float32 backends
  show it: they spread around the reference just as much.

So a tensor's tolerance is multiplied by ``clip(4 * max(s, q), 1, 100)``, where ``s`` is
the perturbed reference's tolerance ratio (its max ``|x - r| / (atol + rtol |r|)``) and
``q`` the smallest ratio among the *other* float32 backends (float32 only: it takes
two other implementations agreeing that the tensor is that uncertain, and a single
wrong backend cannot inflate anyone's tolerance). A backend that computes something
different stands out against both: its own error does not widen its tolerance. When
``4 max(s, q)`` exceeds 100 the tensor is not determined at that precision: the
comparison is reported as ``ill-conditioned`` (with ``s`` and ``q``) and does not fail
the run (a backend that is wrong there is still caught by the tensors it does
determine, e.g. the values feeding that one). The table shows every widening
(``x4.2``); the JSON has ``tol_scale``, ``sensitivity``, ``spread``,
``ill_conditioned``.

When a comparison fails, the run locates the first divergent node: the phase's
optimised graph is lowered with *every* node as a named result ``n<id>`` on both
backends (and the probes), fed the same values (for a training step: the
reference's parameters and slots at the first failing step), and the first node in
topological order whose values differ beyond its tolerance (widened as above) is
reported with its op, its span (the user's ``file:line:col``; a node the compiler
generated, by autodiff or an optimizer, shows the span of a close ancestor or none)
and both values at the worst entry. Exit 0 iff every comparison is within tolerance
(1 otherwise; 2 when CUDA is asked for and absent). PyTorch and NumPy's OpenBLAS run
single-threaded (the tensors are small: threads only add synchronisation, and one
thread fixes the summation orders) and PyTorch,
on CUDA, without TF32 (which rounds matmul/conv inputs to 10-bit mantissas: not
float32 arithmetic) for the duration of a check.
"""

from compiler.commands.equiv.compare import (DEFAULT_DIM, DEFAULT_STEPS, FACTOR, MAX_SCALE,
                                             REFERENCE, ROUNDING, TOLERANCES, Backend,
                                             Comparison, Divergence, EquivReport, compare_arrays,
                                             default_backends, judge)
from compiler.commands.equiv.execute import lower_on, perturb, run_on
from compiler.commands.equiv.locate import locate_divergence
from compiler.commands.equiv.phases import Phase, perturbed_params
from compiler.commands.equiv.report import render
from compiler.commands.equiv.run import equiv, run_equiv

__all__ = ["Backend", "Comparison", "DEFAULT_DIM", "DEFAULT_STEPS", "Divergence", "EquivReport",
           "FACTOR", "MAX_SCALE", "Phase", "REFERENCE", "ROUNDING", "TOLERANCES",
           "compare_arrays", "default_backends", "equiv", "judge", "locate_divergence",
           "lower_on", "perturb", "perturbed_params", "render", "run_equiv", "run_on"]
