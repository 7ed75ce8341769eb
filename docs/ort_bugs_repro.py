"""Standalone reproducers of the onnxruntime bugs in docs/ort_bugs.md (no dlc code)."""
import numpy as np, onnxruntime as ort, onnx
from onnx import helper as h, TensorProto as T, numpy_helper as nh
def run(model, feeds, lvl):
    o = ort.SessionOptions(); o.graph_optimization_level = lvl; o.log_severity_level = 4
    try: return ort.InferenceSession(model.SerializeToString(), o, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    except Exception as e: return "ERR " + str(e)[:100]
# 1: Transpose -> MatMul with a 1-D right operand
g = h.make_graph([h.make_node("Transpose", ["x"], ["xt"], perm=[1, 0]), h.make_node("MatMul", ["xt", "p"], ["y"])], "t",
    [h.make_tensor_value_info("x", T.FLOAT, [4, 3]), h.make_tensor_value_info("p", T.FLOAT, [4])], [h.make_tensor_value_info("y", T.FLOAT, [3])])
m = h.make_model(g, opset_imports=[h.make_opsetid("", 18)]); onnx.checker.check_model(m)
x = np.arange(12, dtype=np.float32).reshape(4, 3); p = np.arange(4, dtype=np.float32)
print("expected", x.T @ p)
for L in ["ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL"]:
    print(L, run(m, {"x": x, "p": p}, getattr(ort.GraphOptimizationLevel, L)))
# 2: Div(ones [1,1], s) * x[B]
g = h.make_graph([h.make_node("Div", ["one", "s"], ["d"]), h.make_node("Mul", ["d", "x"], ["y"])], "t",
    [h.make_tensor_value_info("s", T.FLOAT, []), h.make_tensor_value_info("x", T.FLOAT, ["B"])], [h.make_tensor_value_info("y", T.FLOAT, [1, "B"])],
    initializer=[nh.from_array(np.ones((1, 1), np.float32), "one")])
m = h.make_model(g, opset_imports=[h.make_opsetid("", 18)]); onnx.checker.check_model(m)
print("expected shape", (1, 5))
for L in ["ORT_DISABLE_ALL", "ORT_ENABLE_BASIC"]:
    r = run(m, {"s": np.array(2, np.float32), "x": np.ones(5, np.float32)}, getattr(ort.GraphOptimizationLevel, L))
    print(L, getattr(r, "shape", r))
print(ort.__version__)
