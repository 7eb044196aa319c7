"""Model cards: the ``README.md`` the Hugging Face Hub and its libraries read beside weights.

YAML front matter as the Hub documents it (``library_name``, ``base_model`` — a list for merges —,
``base_model_relation``: ``adapter``, ``merge`` or ``finetune``, ``tags``, and a ``model-index`` with
the last ``verify`` results where there are any), then a body that says how the weights were made:
the op (method, parameters, inputs with their commit ids), as mergekit embeds its recipe.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

RELATIONS = {"lora": "adapter", "peft": "adapter", "task_vector": "adapter", "full": "finetune"}
LIBRARIES = {"lora": "peft", "peft": "peft", "full": "transformers"}
KINDS = {"lora": "LoRA adapter", "peft": "peft adapter", "task_vector": "task vector", "full": "full model"}


@dataclass(frozen=True)
class CardInput:
    """A commit a merge (or rebase, revert) read: how the ecosystem names it, and its id."""

    name: str
    commit: str


@dataclass(frozen=True)
class CardInfo:
    """What a card says about one commit."""

    name: str
    kind: str
    commit: str
    message: str
    op: dict[str, Any]
    base: str | None = None
    """The base as the ecosystem names it (its hub id where it came from the Hub, else its dithub name)."""
    inputs: list[CardInput] = field(default_factory=list)
    verify: dict[str, Any] | None = None
    """The last ``verify`` report of the commit (``VerifyReport.to_json``), if any."""


def _front_matter(info: CardInfo) -> dict[str, Any]:
    op = info.op.get("name", "commit")
    meta: dict[str, Any] = {}
    if info.kind in LIBRARIES:
        meta["library_name"] = LIBRARIES[info.kind]
    if op == "merge" and info.inputs:
        meta["base_model"] = [i.name for i in info.inputs]
        meta["base_model_relation"] = "merge"
    elif info.base:
        meta["base_model"] = info.base
        meta["base_model_relation"] = RELATIONS[info.kind]
    tags = ["dithub", info.kind.replace("_", "-")]
    if info.op.get("method"):
        tags += [op, str(info.op["method"]).replace("_", "-")]
    meta["tags"] = list(dict.fromkeys(tags))
    if info.verify and (index := _model_index(info)):
        meta["model-index"] = index
    return meta


def _model_index(info: CardInfo) -> list[dict[str, Any]]:
    """The verify checks that measured a figure, as the Hub's model-index (one result set)."""
    report = info.verify or {}
    metrics = [{"type": c["check"], "value": c["figure"], "name": f"{c['check']} ({c['status']})"}
               for c in report.get("checks", []) if isinstance(c.get("figure"), (int, float))]
    if not metrics:
        return []
    dataset = {"type": "dithub-verify-policy", "name": report.get("policy") or "default policy"}
    return [{"name": info.name, "results": [{"task": {"type": "dithub-verify", "name": "dithub verify"},
                                               "dataset": dataset, "metrics": metrics}]}]


def _recipe(info: CardInfo) -> dict[str, Any]:
    op = info.op
    recipe: dict[str, Any] = {"op": op.get("name", "commit")}
    if op.get("method"):
        recipe["method"] = op["method"]
    if op.get("params"):
        recipe["parameters"] = op["params"]
    if info.inputs:
        recipe["inputs"] = [{"name": i.name, "commit": i.commit} for i in info.inputs]
    if info.base:
        recipe["base"] = info.base
    return recipe


def _cell(value: Any) -> str:
    """A value as one cell of a Markdown table."""
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def _yaml(value: Any) -> str:
    return str(yaml.safe_dump(value, sort_keys=False, allow_unicode=True))


def model_card(info: CardInfo) -> str:
    """The card's text: front matter, a title, the commit message, how it was made, the checks."""
    made = f"A {KINDS[info.kind]}" + (f" on `{info.base}`" if info.base else "") + f", dithub commit `{info.commit}`."
    parts = ["---\n" + _yaml(_front_matter(info)) + "---\n", f"# {info.name}\n", made + "\n"]
    if info.message.strip():
        parts.append(info.message.strip() + "\n")
    parts.append("## How it was made\n\n```yaml\n" + _yaml(_recipe(info)) + "```\n")
    if info.verify:
        rows = "".join(f"| {_cell(c.get('check'))} | {_cell(c.get('status'))} | {_cell(c.get('figure'))} | {_cell(c.get('detail'))} |\n"
                       for c in info.verify.get("checks", []))
        verdict = "passed" if info.verify.get("ok") else "failed"
        parts.append(f"## Verification\n\n`dithub verify` {verdict}:\n\n| check | status | figure | detail |\n|---|---|---|---|\n{rows}")
    return "\n".join(parts)
