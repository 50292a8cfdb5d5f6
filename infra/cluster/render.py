#!/usr/bin/env python
"""Render the AWS launcher files: fill their ${NAME} placeholders, refuse unfilled or malformed ones.

    export AWS_REGION=us-west-2 AWS_ACCOUNT_ID=123456789012
    export SUBNET_IDS=subnet-0aaa,subnet-0bbb            # the subnets nodes may start in
    export SECURITY_GROUP_ID=sg-0123                      # made by aws-setup.sh (it runs this script)
    export IMAGE_ID=ami-0123                              # the AMI every node starts from
    python infra/cluster/render.py     # writes build/aws/aws-gpu.yaml, aws-iam-policy.json, aws-iam-worker-policy.json

The head's IAM policy names exactly these subnets, group, image and the launcher's instance types,
so the head role can launch nothing else; the launcher config names the same subnets and image.
A list item holding ``${SUBNET_IDS}`` becomes one item per subnet. The files are read as data
(YAML/JSON), filled, and written back, so a value can never change their structure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
TEMPLATES = ("aws-gpu.yaml", "aws-iam-policy.json", "aws-iam-worker-policy.json")
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
FORMATS = {
    "AWS_REGION": (r"[a-z]{2}(-gov)?-[a-z]+-\d", "a region such as us-west-2"),
    "AWS_ACCOUNT_ID": (r"\d{12}", "12 digits"),
    "SECURITY_GROUP_ID": (r"sg-[0-9a-f]{8,17}", "sg- and 8-17 hex digits"),
    "IMAGE_ID": (r"ami-[0-9a-f]{8,17}", "ami- and 8-17 hex digits"),
    "SUBNET_IDS": (r"subnet-[0-9a-f]{8,17}(,subnet-[0-9a-f]{8,17})*", "comma-separated subnet-... ids"),
}


class RenderError(ValueError):
    """A placeholder is unset, unknown or malformed; the message names it."""


def checked_values(env: dict[str, str]) -> dict[str, str]:
    """The placeholder values from `env`, each checked against its format."""
    values = {}
    for name, (pattern, what) in FORMATS.items():
        value = "".join(env.get(name, "").split())
        if not value:
            raise RenderError(f"{name} is unset or empty ({what})")
        if not re.fullmatch(pattern, value):
            raise RenderError(f"{name}={value!r}: expected {what}")
        values[name] = value
    return values


def _fill(node: Any, values: dict[str, str], where: str) -> Any:
    if isinstance(node, dict):
        return {k: _fill(v, values, f"{where}.{k}") for k, v in node.items()}
    if isinstance(node, list):
        out = []
        for i, item in enumerate(node):
            if isinstance(item, str) and "${SUBNET_IDS}" in item:
                out += [_fill(item.replace("${SUBNET_IDS}", s), values, f"{where}[{i}]") for s in values["SUBNET_IDS"].split(",")]
            else:
                out.append(_fill(item, values, f"{where}[{i}]"))
        return out
    if isinstance(node, str):
        for name in PLACEHOLDER.findall(node):
            if name not in values or name == "SUBNET_IDS":
                raise RenderError(f"{where}: unknown placeholder ${{{name}}} (known: {', '.join(FORMATS)}; "
                                  "SUBNET_IDS only as a list item)")
        return PLACEHOLDER.sub(lambda m: values[m.group(1)], node)
    return node


def render(out_dir: Path, env: dict[str, str], source: Path = HERE) -> list[Path]:
    """Render the launcher config and both IAM policies into `out_dir`; returns the files written."""
    values = checked_values(env)
    rendered = {}
    for name in TEMPLATES:
        text = (source / name).read_text()
        data = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
        rendered[name] = _fill(data, values, name)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in rendered.items():
        target = out_dir / name
        if name.endswith(".json"):
            target.write_text(json.dumps(data, indent=2) + "\n")
        else:
            target.write_text(f"# Rendered by infra/cluster/render.py from infra/cluster/{name}; edit that, not this.\n"
                              + yaml.safe_dump(data, sort_keys=False))
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fill infra/cluster's ${...} placeholders (region, account, subnets, "
                                                 "security group, image).")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "aws")
    args = parser.parse_args(argv)
    try:
        written = render(args.out, dict(os.environ))
    except RenderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
