#!/usr/bin/env python
"""Render infra/k8s/*.yaml for `kubectl apply`: fill the ${NAME} placeholders, refuse unfilled ones.

    export REGISTRY=<account>.dkr.ecr.<region>.amazonaws.com
    export SENSORLM_DIGEST=$(docker buildx imagetools inspect "$REGISTRY/sensorlm:$TAG" --format '{{json .Manifest.Digest}}' | tr -d '"')
    ...                                 # SENSORLM_MLFLOW_DIGEST, POSTGRES_DIGEST the same way
    export KUBE_API_CIDR=<API server endpoint>/32   # kubectl get endpoints kubernetes -n default
    python infra/k8s/render.py            # writes build/k8s/*.yaml (secrets.example.yaml is never rendered)

Images are pinned by digest (``name@sha256:<64 hex>``), never by a moving tag: the digest is the
image that was built, scanned and pushed. Every placeholder must be set: a digest to 64 hex
characters (``sha256:`` prefix allowed), the registry to a host[/path], the API CIDR to a network
that does not hold the cloud metadata address.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
METADATA = ipaddress.ip_network("169.254.0.0/16")
NOT_RENDERED = ("secrets.example.yaml",)


class RenderError(ValueError):
    """A placeholder is unset, unknown or malformed; the message names it."""


def _check(name: str, value: str) -> str:
    value = value.strip()
    if not value:
        raise RenderError(f"{name} is unset or empty")
    if name.endswith("_DIGEST"):
        value = value.removeprefix("sha256:")
        if not re.fullmatch(r"[0-9a-f]{64}", value):
            raise RenderError(f"{name}={value!r}: not a sha256 digest (64 hex characters)")
    elif name == "REGISTRY":
        if not re.fullmatch(r"[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._/-]+)?", value):
            raise RenderError(f"REGISTRY={value!r}: expected host[:port][/path], e.g. 123.dkr.ecr.us-west-2.amazonaws.com")
    elif name == "KUBE_API_CIDR":
        try:
            net = ipaddress.ip_network(value, strict=True)
        except ValueError as e:
            raise RenderError(f"KUBE_API_CIDR={value!r}: {e}") from None
        if net.version == 4 and net.overlaps(METADATA):
            raise RenderError(f"KUBE_API_CIDR={value}: holds the link-local/metadata range 169.254.0.0/16")
    else:
        raise RenderError(f"unknown placeholder ${{{name}}}")
    return value


def placeholders(text: str) -> set[str]:
    """The ${NAME} placeholders in `text`."""
    return set(PLACEHOLDER.findall(text))


def render_text(text: str, values: dict[str, str], where: str = "") -> str:
    """`text` with every ${NAME} replaced by its checked value; RenderError if one is missing."""
    missing = sorted(n for n in placeholders(text) if not values.get(n))
    if missing:
        raise RenderError(f"{where}: unfilled placeholder(s) {', '.join('$' + '{' + n + '}' for n in missing)}; "
                          "set them in the environment (docs/cluster.md, step 2)")
    return PLACEHOLDER.sub(lambda m: _check(m.group(1), values[m.group(1)]), text)


def render(out_dir: Path, values: dict[str, str], source: Path = HERE) -> list[Path]:
    """Render every manifest of `source` into `out_dir`; returns the files written.

    Args:
        out_dir: where the rendered manifests go (created).
        values: placeholder values (normally the environment).
        source: the folder of templates (infra/k8s).
    """
    rendered = {}
    for path in sorted(source.glob("*.yaml")):
        if path.name in NOT_RENDERED:
            continue
        rendered[path.name] = render_text(path.read_text(), values, str(path.name))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered.items():
        target = out_dir / name
        target.write_text(text)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fill infra/k8s's ${...} placeholders (digests, registry, API CIDR).")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "k8s")
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
