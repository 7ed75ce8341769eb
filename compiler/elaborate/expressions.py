"""Expressions: names, literals, operators, attributes, indexing, pipes."""
from __future__ import annotations

from compiler.core.types import dim_add, dim_div, dim_mul
from compiler.core.values import Closure, Instance, ModuleRef, Record, Sequential, SymDim, Tensor
from compiler.elaborate.checks import compile_time_arith, describe
from compiler.elaborate.scope import Scope, unknown_name
from dsl import ast as A
from dsl.errors import NameError_, ShapeError, SpecError


class Expressions:
    """The `eval_*` half of the evaluator: one method per expression node."""


    # ---- expressions ----------------------------------------------------------------
    def eval(self, e, scope: Scope):
        method = getattr(self, "eval_" + type(e).__name__, None)
        if method is None:
            raise SpecError(f"{type(e).__name__} cannot be used as a value here", e.span)
        return method(e, scope)

    def eval_Name(self, e: A.Name, scope):
        if e.id == "training":
            self.read_training = True  # the graph depends on the mode (see `elaborate`)
            return self.training
        try:
            return scope.lookup(e.id)
        except KeyError:
            raise unknown_name(e.id, scope, e.span) from None

    def eval_Num(self, e, scope):
        return e.value

    def eval_Str(self, e, scope):
        return e.value

    def eval_Bool(self, e, scope):
        return e.value

    def eval_Tuple(self, e, scope):
        return tuple(self.eval(x, scope) for x in e.items)

    def eval_List(self, e, scope):
        return tuple(self.eval(x, scope) for x in e.items)

    def eval_Cond(self, e, scope):
        test = self.eval(e.test, scope)
        if not isinstance(test, bool):
            raise SpecError("`a if cond else b` needs a compile-time condition (a hyperparameter "
                            "or `training`); for tensors use `where(cond, a, b)`", e.test.span)
        return self.eval(e.then if test else e.orelse, scope)

    def eval_BoolOp(self, e, scope):
        left = self.eval(e.left, scope)
        if isinstance(left, bool):
            if (e.op == "and" and not left) or (e.op == "or" and left):
                return left
            right = self.eval(e.right, scope)
            if isinstance(right, bool):
                return right
            left = self.to_tensor(left, e.left.span)
        else:
            right = self.eval(e.right, scope)
        op = {"and": "logical_and", "or": "logical_or"}[e.op]
        return self.add(op, [self.to_tensor(left, e.left.span), self.to_tensor(right, e.right.span)],
                        e.span)

    def eval_UnaryOp(self, e, scope):
        v = self.eval(e.operand, scope)
        if e.op == "not":
            if isinstance(v, bool):
                return not v
            return self.add("logical_not", [self.to_tensor(v, e.span)], e.span)
        if e.op == "+":
            return v
        if isinstance(v, Tensor):
            return self.add("neg", [v], e.span)
        if isinstance(v, (int, float)) and not isinstance(v, SymDim):
            return -v
        raise SpecError(f"cannot negate {describe(v)}", e.span)

    _BIN = {"+": "add", "-": "sub", "*": "mul", "/": "div", "@": "matmul", "**": "pow"}
    _CMP = {"==": "eq", "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge"}

    def eval_BinOp(self, e, scope):
        a, b = self.eval(e.left, scope), self.eval(e.right, scope)
        return self.binary(e.op, a, b, e)

    def binary(self, op, a, b, e):
        if isinstance(a, Tensor) or isinstance(b, Tensor):
            if op == "%":
                raise SpecError("`%` is only defined on compile-time numbers", e.span)
            ta = self.to_tensor(a, e.left.span, like=b if isinstance(b, Tensor) else None)
            tb = self.to_tensor(b, e.right.span, like=ta)
            ta, tb = self.promote(ta, tb, e.span)
            return self.add(self._BIN[op], [ta, tb], e.span)
        if isinstance(a, SymDim) or isinstance(b, SymDim):
            return self.dim_arith(op, a, b, e)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return compile_time_arith(op, a, b, e.span)
        if isinstance(a, tuple) and isinstance(b, tuple) and op == "+":
            return a + b
        raise SpecError(f"`{op}` is not defined for {describe(a)} and {describe(b)}", e.span)

    def dim_arith(self, op, a, b, e):
        if op == "*" and isinstance(a, (int, str)) and isinstance(b, (int, str)):
            return SymDim(dim_mul(a, b)) if isinstance(dim_mul(a, b), str) else dim_mul(a, b)
        if op in "+-" and isinstance(b, int) and isinstance(a, str):
            r = dim_add(a, b if op == "+" else -b)
            return SymDim(r) if isinstance(r, str) else r
        if op == "+" and isinstance(a, int) and isinstance(b, str):
            return SymDim(dim_add(b, a))
        if op == "/" and isinstance(a, (int, str)) and isinstance(b, (int, str)):
            r = dim_div(a, b)
            if r is None:
                raise SpecError(f"dim {a} is not divisible by {b}", e.span)
            return SymDim(r) if isinstance(r, str) else r
        raise SpecError(f"`{op}` is not defined on symbolic dims {a} and {b}", e.span)

    def eval_Compare(self, e, scope):
        a, b = self.eval(e.left, scope), self.eval(e.right, scope)
        if isinstance(a, Tensor) or isinstance(b, Tensor):
            ta = self.to_tensor(a, e.left.span, like=b if isinstance(b, Tensor) else None)
            tb = self.to_tensor(b, e.right.span, like=ta)
            ta, tb = self.promote(ta, tb, e.span)
            return self.add(self._CMP[e.op], [ta, tb], e.span)
        try:
            return {"==": a == b, "!=": a != b}.get(e.op) if e.op in ("==", "!=") else \
                {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[e.op]
        except TypeError:
            raise SpecError(f"cannot compare {describe(a)} with {describe(b)}", e.span) from None

    def eval_Pipe(self, e, scope):
        v = self.eval(e.value, scope)
        f = self.eval(e.func, scope)
        return self.call(f, [v], {}, e.span, arg_spans=[e.value.span])

    def eval_Attr(self, e, scope):
        v = self.eval(e.value, scope)
        if isinstance(v, Record):
            if e.name in v.fields:
                return v.fields[e.name]
            raise NameError_(f"no result `{e.name}`; it has {', '.join(v.fields)}", e.span)
        if isinstance(v, ModuleRef):
            try:
                return v.scope.vars[e.name]
            except KeyError:
                raise unknown_name(e.name, v.scope, e.span) from None
        if isinstance(v, Instance):
            if e.name in v.sub:
                return v.sub[e.name]
            raise NameError_(f"`{v.defn.name}` instance has no member `{e.name}` (yet: members "
                             f"exist after its first call)", e.span)
        if isinstance(v, Tensor):
            if e.name == "T":
                r = v.type.rank
                if r < 2:
                    raise ShapeError(f"`.T` needs a rank >= 2 tensor, found {v.type}", e.span)
                perm = tuple(range(r - 2)) + (r - 1, r - 2)
                return self.add("transpose", [v], e.span, perm=perm)
            if e.name == "shape":
                return tuple(SymDim(d) if isinstance(d, str) else d for d in v.type.shape)
        raise SpecError(f"{describe(v)} has no attribute `{e.name}`", e.span)

    def eval_Index(self, e, scope):
        v = self.eval(e.value, scope)
        subs = [s if isinstance(s, (A.Slice, A.Ellipsis_)) else self.eval(s, scope) for s in e.subs]
        if isinstance(v, (tuple, Record)):
            items = v.as_tuple() if isinstance(v, Record) else v
            if len(subs) == 1 and isinstance(subs[0], int):
                try:
                    return items[subs[0]]
                except IndexError:
                    raise SpecError(f"index {subs[0]} out of range for a {len(items)}-tuple",
                                    e.span) from None
            raise SpecError("tuples are indexed with one integer", e.span)
        if isinstance(v, Sequential):   # `repeat(n, L(...))[i]`: the i-th instance (flows)
            if len(subs) == 1 and isinstance(subs[0], int) and -len(v.items) <= subs[0] < len(v.items):
                return v.items[subs[0]]
            raise SpecError(f"a stack of {len(v.items)} layers is indexed with one integer "
                            f"in [-{len(v.items)}, {len(v.items)})", e.span)
        if not isinstance(v, Tensor):
            raise SpecError(f"cannot index {describe(v)}", e.span)
        from compiler.elaborate.builtins import index_tensor
        return index_tensor(self, v, subs, scope, e.span)

    def eval_Lambda(self, e, scope):
        return Closure("<fn>", e.params, e.body, scope, e.span, is_lambda=True)
