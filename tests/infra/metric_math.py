"""CloudWatch metric math, the part the template's expressions use, on one data point.

`evaluate` runs a policy's or alarm's ``Metrics`` list (as the template
resolves it) on given values of its metrics: arithmetic, comparisons, AND /
OR, ``IF(condition, then, else)`` (only the branch taken is evaluated) and
``FILL(metric, value)`` (the value where the metric has no data point, given
as ``None``). Expressions may use the ids of metrics and of expressions
listed before them, as CloudWatch allows.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}


def _eval(node: ast.AST, values: Mapping[str, float | None]) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body, values)
    if isinstance(node, ast.Constant | ast.Name):
        return _leaf(node, values)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval(node.operand, values)
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_eval(node.left, values), _eval(node.right, values))
    if isinstance(node, ast.Compare):
        [op], [right] = node.ops, node.comparators
        return _COMPARE[type(op)](_eval(node.left, values), _eval(right, values))
    if isinstance(node, ast.BoolOp):
        results = [_eval(v, values) for v in node.values]
        return all(results) if isinstance(node.op, ast.And) else any(results)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return _call(node.func.id, node.args, values)
    raise NotImplementedError(ast.dump(node))


def _leaf(node: ast.Constant | ast.Name, values: Mapping[str, float | None]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    value = values[node.id]
    if value is None:
        raise ValueError(f"{node.id} has no data point and no FILL")
    return value


def _call(name: str, args: list[ast.expr], values: Mapping[str, float | None]) -> Any:
    if name == "IF":
        condition, then, otherwise = args
        return _eval(then if _eval(condition, values) else otherwise, values)
    if name == "FILL":
        metric, fill = args
        assert isinstance(metric, ast.Name)
        found = values[metric.id]
        return _eval(fill, values) if found is None else found
    raise NotImplementedError(name)


def expression(text: str, values: Mapping[str, float | None]) -> float:
    """One metric math expression on `values`."""
    python = re.sub(r"\bAND\b", "and", re.sub(r"\bOR\b", "or", text))
    return float(_eval(ast.parse(python, mode="eval"), values))


def evaluate(metrics: list[dict[str, Any]], values: Mapping[str, float | None]) -> float:
    """The returned expression of a resolved ``Metrics`` list, on `values`."""
    known: dict[str, float | None] = dict(values)
    returned = None
    for metric in metrics:
        if "Expression" in metric:
            known[metric["Id"]] = expression(metric["Expression"], known)
        else:
            assert metric["Id"] in known, f"no value given for {metric['Id']}"
        if metric.get("ReturnData", True):
            returned = metric["Id"]
    assert returned is not None
    result = known[returned]
    assert result is not None
    return result
