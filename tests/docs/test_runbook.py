"""The runbook works as written: its deploys pass the template's own parameter
constraints, its uploads land where the template looks, every shell variable
it uses is defined in it, and every in-page link has its heading."""

from __future__ import annotations

import re
from typing import Any

import pytest

from consumer.settings import Settings
from tests.infra.cfn import load_template
from tests.support.docs import DOCUMENTS, anchors, blocks, links, shell_lines, words

RUNBOOK = "docs/operations.md"
PARAMETERS: dict[str, Any] = load_template()["Parameters"]
# The parameters that name keys in the stack's bucket, under ModelPrefix.
WEIGHT_KEYS = (
    "ModelS3Path",
    "IpAdapterPath",
    "VaePath",
    "LoraPath",
    "SafetyCheckerPath",
    "StylesPath",
)
TYPES = {
    "AWS::EC2::VPC::Id": r"vpc-[0-9a-f]{8,17}",
    "AWS::EC2::Image::Id": r"ami-[0-9a-f]{8,17}",
    "List<AWS::EC2::Subnet::Id>": r"subnet-[0-9a-f]{8,17}(,subnet-[0-9a-f]{8,17})*",
}
_ASSIGNMENT = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_USE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}|([A-Za-z_][A-Za-z0-9_]*))")
# Set by the shell or by the operator's own environment, not by the runbook.
ENVIRONMENT = {"HOME", "PATH", "PWD"}


def _shell() -> list[str]:
    return [line for b in blocks(RUNBOOK) if b.language == "sh" for line in shell_lines(b)]


def _assignments() -> dict[str, str]:
    """NAME -> value of each plain assignment (last wins); values with a
    command substitution are known to exist, not what they are."""
    found = {}
    for line in _shell():
        match = _ASSIGNMENT.match(line)
        if match:
            found[match[1]] = match[2].split("#")[0].strip()
    return found


def _expand(value: str, known: dict[str, str]) -> str | None:
    """`value` with its variables replaced; ``None`` when one is only known at run time."""
    unknown = False

    def one(match: re.Match[str]) -> str:
        nonlocal unknown
        name = match[1] or match[2]
        text = known.get(name, "")
        if not text or "$(" in text:
            unknown = True
            return ""
        return _expand(text, known) or ""

    expanded = _USE.sub(one, value)
    return None if unknown else expanded


def _overrides() -> list[tuple[str, str]]:
    """(name, value) of every --parameter-overrides of the runbook's deploys."""
    found = []
    for line in _shell():
        tokens = words(line) if "cloudformation deploy" in line else []
        if "--parameter-overrides" in tokens:
            rest = tokens[tokens.index("--parameter-overrides") + 1 :]
            for token in rest:
                if token.startswith("--"):
                    break
                name, _, value = token.partition("=")
                found.append((name, value))
    return found


OVERRIDES = _overrides()


def test_the_runbook_deploys_with_overrides() -> None:
    names = {name for name, _ in OVERRIDES}
    # The first deploy, stopping work, a model rollout, a LoRA and settings.
    assert {"ContainerImage", "MaxSize", "ModelS3Path", "LoraPath", "WorkerSettings"} <= names


def _check(name: str, value: str) -> None:
    spec = PARAMETERS.get(name)
    assert spec is not None, f"{name} is no parameter of the template"
    pattern = TYPES.get(spec["Type"])
    if pattern:
        assert re.fullmatch(pattern, value), f"{name}={value}: not a {spec['Type']}"
    if spec["Type"] == "Number":
        number = float(value)
        assert number >= spec.get("MinValue", number), f"{name}={value} < MinValue"
        assert number <= spec.get("MaxValue", number), f"{name}={value} > MaxValue"
    if "AllowedValues" in spec:
        assert value in [str(v) for v in spec["AllowedValues"]], f"{name}={value}"
    if "AllowedPattern" in spec:
        assert re.fullmatch(spec["AllowedPattern"], value), f"{name}={value}: AllowedPattern"
    assert len(value) >= spec.get("MinLength", 0), f"{name}={value}: MinLength"
    if name in WEIGHT_KEYS and value:
        prefix = PARAMETERS["ModelPrefix"]["Default"]
        assert value.startswith(prefix), f"{name}={value}: the workers read only {prefix}"


@pytest.mark.parametrize(("name", "value"), OVERRIDES, ids=[f"{n}={v}" for n, v in OVERRIDES])
def test_each_override_meets_the_templates_constraints(name: str, value: str) -> None:
    expanded = _expand(value, _assignments())
    if expanded is None:  # known only when the command runs: the name at least
        assert name in PARAMETERS, f"{name} is no parameter of the template"
        return
    _check(name, expanded)


def test_worker_settings_name_settings_the_service_takes() -> None:
    passed = [value for name, value in OVERRIDES if name == "WorkerSettings"]
    assert passed
    for value in passed:
        pairs = dict(pair.split("=", 1) for pair in value.split(";"))
        unknown = {name for name in pairs if name.lower() not in Settings.model_fields}
        assert not unknown, f"WorkerSettings names no setting: {unknown}"
        # Each value as the worker would read it from its env file.
        Settings(**{name.lower(): text for name, text in pairs.items()})


def test_the_weights_are_uploaded_where_the_template_looks() -> None:
    uploads = set()
    for line in _shell():
        tokens = words(line) if line.startswith(("aws s3 sync", "aws s3 cp")) else []
        if tokens:
            target = tokens[4]
            if target.startswith("s3://$BUCKET/"):
                uploads.add(target.removeprefix("s3://$BUCKET/"))
    defaults = {PARAMETERS[name]["Default"] for name in WEIGHT_KEYS} - {""}
    assert defaults <= uploads, f"not uploaded by the runbook: {sorted(defaults - uploads)}"
    deployed = {value for name, value in OVERRIDES if name in WEIGHT_KEYS and value}
    assert deployed <= uploads, f"deployed but never uploaded: {sorted(deployed - uploads)}"
    # And nothing is uploaded where no worker would look for it: a style
    # catalog names LoRA files beside it.
    catalogs = {value for name, value in OVERRIDES if name == "StylesPath" and value}
    beside = {u for u in uploads for c in catalogs if u.rsplit("/", 1)[0] == c.rsplit("/", 1)[0]}
    unread = uploads - defaults - deployed - beside
    assert not unread, f"read by no worker: {sorted(unread)}"


def _uses(text: str) -> set[str]:
    # Comments first (their apostrophes are no quotes); then single quotes,
    # which keep their text (jq's own $variables, JSON), across lines too.
    uncommented = re.sub(r"(^|\s)#.*$", "", text, flags=re.MULTILINE)
    unquoted = re.sub(r"'[^']*'", "", uncommented)
    return {m[1] or m[2] for m in _USE.finditer(unquoted)}


def test_every_variable_the_runbook_uses_is_defined_in_it() -> None:
    defined = set(_assignments()) | ENVIRONMENT
    for line in _shell():
        defined |= set(re.findall(r"\bfor (\w+) in\b", line))
        defined |= set(re.findall(r"\bread -r (\w+)", line))
    used = {name for b in blocks(RUNBOOK) if b.language == "sh" for name in _uses(b.text)}
    assert used - defined == set()


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_in_page_link_has_its_heading(document: str) -> None:
    headings = anchors(document)
    broken = [(line, anchor) for line, anchor in links(document) if anchor not in headings]
    assert broken == []
