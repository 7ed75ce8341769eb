"""The ONNX backend: graphs to ONNX models (opset 18) run with onnxruntime.

* ``lower(graph, results, dtype="f32", *, name, params_as, param_values)`` ->
  ``onnx.ModelProto`` (checked by ``onnx.checker.check_model(full_check=True)``).
* ``lower_program(graph, results, dtype="f32", *, device, threads, check_model, f32_ops,
  **opts)``
  -> `Program`, callable as ``program(feeds) -> {name: array}``, with ``.model``.
* ``reference(model, feeds)``: the same model on onnx's ReferenceEvaluator.

Never imports torch.
"""
from __future__ import annotations

from .builder import OPSET, ORT_F32_ONLY, Builder, ir_version
from .lower import lower, lower_node, lower_scan, register_scan
from .proto import save
from .rnn import register_rnn

# Lowering needs neither the `onnx` package's Python code nor onnxruntime (both slow
# to import: see proto.py); running and checking do, and import them when used.


def __getattr__(name):
    if name in ("Program", "reference"):
        from . import runner
        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check(model) -> None:
    """``onnx.checker.check_model(model, full_check=True)`` (strict shape inference)."""
    import onnx
    onnx.checker.check_model(model, full_check=True)


def lower_program(graph, results, dtype: str = "f32", *, device: str = "cpu",
                  threads: int | None = None, check_model: bool = False, f32_ops=True,
                  **opts):
    """Lower ``results`` of ``graph`` and open an onnxruntime session on the model.

    ``opts`` go to `lower` (``name``, ``params_as``, ``param_values``). In a float64
    run the few ops onnxruntime lacks double kernels for (`ORT_F32_ONLY`) are computed
    in float32 unless ``f32_ops=()``: the model would not load otherwise.
    """
    model = lower(graph, results, dtype, f32_ops=f32_ops, **opts)
    if check_model:
        check(model)
    from .runner import Program
    return Program(model, device=device, threads=threads)


register_scan()
register_rnn()

__all__ = ["lower", "lower_program", "Program", "reference", "check", "save", "Builder", "OPSET",
           "ORT_F32_ONLY",
           "ir_version", "lower_node", "lower_scan", "register_scan"]
