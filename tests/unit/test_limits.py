"""Every limit in one place: the declaration, the JSON Schema, ``illustrator
schema``'s output and the contract's tables say the same numbers."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from consumer.cli.main import main as cli
from consumer.contract.documents import LIMITS_BEGIN, LIMITS_END, limits_markdown
from consumer.contract.request import Request
from consumer.settings import GenerationDefaults
from pipeline.api import limits
from pipeline.api.limits import LIMITS, Limit

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "contract.md"
SCHEMA_LIMITS = [limit for limit in LIMITS if limit.schema]


def _printed_schemas() -> dict[str, Any]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli(["schema"]) == 0
    return dict(json.loads(out.getvalue()))


@pytest.fixture(scope="module")
def printed() -> dict[str, Any]:
    return _printed_schemas()


def _property(schema: dict[str, Any], name: str) -> dict[str, Any]:
    prop = schema["properties"][name]
    return dict(prop["anyOf"][0]) if "anyOf" in prop else dict(prop)


def _schema_bounds(prop: dict[str, Any]) -> tuple[Any, Any, Any]:
    if prop["type"] == "string":
        return prop.get("minLength"), prop["maxLength"], None
    return prop.get("minimum"), prop["maximum"], prop.get("multipleOf")


@pytest.mark.parametrize("limit", SCHEMA_LIMITS, ids=lambda limit: limit.name)
def test_the_schema_states_each_field_s_limit(limit: Limit, printed: dict[str, Any]) -> None:
    for schema in (Request.model_json_schema(), printed["request"]):
        for name in limit.name.split(", "):
            low, high, step = _schema_bounds(_property(schema, name))
            assert high == limit.maximum, name
            assert step == limit.multiple_of, name
            # A text field's schema minimum may be 0 (the absent default).
            assert low in (limit.minimum, None), name


def test_illustrator_schema_lists_every_limit_with_its_numbers(printed: dict[str, Any]) -> None:
    listed = {entry["name"]: entry for entry in printed["request"]["x-limits"]}
    assert list(listed) == [limit.name for limit in LIMITS]
    for limit in LIMITS:
        entry = listed[limit.name]
        assert entry["maximum"] == limit.maximum
        assert entry.get("minimum") == limit.minimum
        assert entry.get("multipleOf") == limit.multiple_of
        assert entry.get("setting") == limit.setting


def test_the_committed_schema_lists_them_too() -> None:
    committed = json.loads((CONTRACT.parent / "schemas" / "request.schema.json").read_text())
    assert committed["x-limits"] == [limit.as_document() for limit in LIMITS]


def _contract() -> str:
    return CONTRACT.read_text(encoding="utf-8")


def test_the_contract_s_table_of_limits_is_current() -> None:
    text = _contract()
    block = text[text.index(LIMITS_BEGIN) : text.index(LIMITS_END) + len(LIMITS_END)]
    assert block == limits_markdown(), "run `illustrator schema --write docs`"


@pytest.mark.parametrize("limit", LIMITS, ids=lambda limit: limit.name)
def test_each_limit_is_a_row_of_the_contract_with_its_numbers(limit: Limit) -> None:
    rows = [line for line in _contract().splitlines() if line.startswith("| ")]
    first = limit.name.split(", ")[0]
    mine = [row for row in rows if first in _names(row.split("|")[1])]
    assert mine, f"no row of docs/contract.md names {limit.name}"
    # Every row that states this field's rule states its range.
    assert all(limit.range_text() in row for row in mine), mine
    if limit.setting:
        assert any(limit.setting in row for row in mine)


def _names(cell: str) -> list[str]:
    return [name.strip().strip("`") for name in cell.split(",")]


def _numbers(text: str) -> list[str]:
    return re.findall(r"\d[\d,.]*\d|\d", text)


@pytest.mark.parametrize(
    "limit", [limit for limit in LIMITS if limit.setting], ids=lambda limit: limit.name
)
def test_a_setting_s_default_is_the_declared_limit(limit: Limit) -> None:
    field = limit.setting.lower() if limit.setting else ""
    assert GenerationDefaults.model_fields[field].default == limit.maximum
    # And the configuration table of the contract shows the same default.
    rows = [row for row in _contract().splitlines() if f"`{limit.setting}`" in row]
    shown = {n.replace(",", "") for row in rows for n in _numbers(row)}
    assert str(limit.maximum) in shown, rows


def test_the_request_defaults_stay_within_the_limits() -> None:
    defaults = GenerationDefaults()
    assert limits.STEPS.minimum <= defaults.default_num_inference_steps <= limits.STEPS.maximum
    with pytest.raises(ValueError, match="less than or equal to 150"):
        GenerationDefaults(default_num_inference_steps=151)
