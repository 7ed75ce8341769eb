"""Running lowered models: onnxruntime sessions and the ONNX reference evaluator."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper


def _input_dtypes(model: onnx.ModelProto) -> dict[str, np.dtype]:
    init = {t.name for t in model.graph.initializer}
    out = {}
    for vi in model.graph.input:
        if vi.name in init:
            continue
        out[vi.name] = np.dtype(helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
    return out


def _cast_feeds(dtypes: dict[str, np.dtype], feeds: dict) -> dict[str, np.ndarray]:
    missing = [n for n in dtypes if n not in feeds]
    if missing:
        raise KeyError(f"missing feeds: {', '.join(missing)} (the model reads {', '.join(dtypes)})")
    return {n: np.array(feeds[n], dtype=dt, order="C", copy=None)
            for n, dt in dtypes.items()}


class Program:
    """An ONNX model ready to run: ``program(feeds) -> {result name: array}``.

    ``feeds`` is keyed by source name; extra keys are ignored, values are cast to the
    model's input dtypes. ``device="cuda"`` uses the CUDA execution provider when
    onnxruntime has it (``self.providers`` says what was used).
    """

    def __init__(self, model: onnx.ModelProto, *, device: str = "cpu", threads: int | None = None,
                 providers: list | None = None):
        import onnxruntime as ort

        self.model = model
        if providers is None:
            providers = ["CPUExecutionProvider"]
            if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
                providers = ["CUDAExecutionProvider"] + providers
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model.SerializeToString(), opts, providers=providers)
        self.providers = self.session.get_providers()
        self.input_dtypes = _input_dtypes(model)
        self.input_names = list(self.input_dtypes)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, feeds: dict) -> dict[str, np.ndarray]:
        out = self.session.run(self.output_names, _cast_feeds(self.input_dtypes, feeds))
        return dict(zip(self.output_names, out))

    @property
    def source(self) -> str:
        """The model in ONNX's textual syntax (for --verbose and debugging)."""
        try:
            return onnx.printer.to_text(self.model)
        except Exception:  # pragma: no cover
            return str(self.model.graph)

    def save(self, path) -> None:
        onnx.save(self.model, str(path))


def reference(model: onnx.ModelProto, feeds: dict) -> dict[str, np.ndarray]:
    """Run ``model`` with onnx's pure-Python `ReferenceEvaluator` (for cross-checks)."""
    from onnx.reference import ReferenceEvaluator

    ev = ReferenceEvaluator(model)
    names = [o.name for o in model.graph.output]
    out = ev.run(names, _cast_feeds(_input_dtypes(model), feeds))
    return dict(zip(names, out))
