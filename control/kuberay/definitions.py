"""KubeRay's custom resource definitions: the pinned copy we ship, loading, and lookup.

``control/kuberay/crds/`` holds a trimmed copy of KubeRay's CRDs (ray-project/kuberay, commit
feeaf72, Apache-2.0; see ``crds/NOTICE``): each file is the CRD object with only its served
``ray.io/v1`` version, as compact JSON. :func:`trim_crd` makes that copy from the upstream
YAML, so it is regenerated, not edited::

    python -m control.kuberay.definitions ../shared/reference/kuberay/crds control/kuberay/crds

:class:`Definitions` reads a folder of CRDs (our JSON or upstream YAML) and finds the
:class:`ResourceKind` for an ``apiVersion``/``kind`` pair or for a REST path's group, version
and plural, which is what :mod:`control.kuberay.schema` and the fake API server need.
"""

from __future__ import annotations

import copy
import functools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SHIPPED_DIR = Path(__file__).with_name("crds")
SERVED_VERSIONS = ("v1",)


@dataclass(frozen=True)
class ResourceKind:
    """One version of one custom resource: what the API server needs to admit and route it."""

    group: str
    version: str
    kind: str
    list_kind: str
    plural: str
    singular: str
    scope: str  # "Namespaced" or "Cluster"
    schema: dict[str, Any] = field(repr=False, compare=False)
    subresources: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    crd: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def has_status(self) -> bool:
        """Whether ``status`` is a subresource (writes to the main resource leave it alone)."""
        return "status" in self.subresources


class UnknownKind(LookupError):
    """No loaded CRD serves this apiVersion and kind (or group, version and plural)."""


class Definitions:
    """The custom resource kinds of a set of CRD objects."""

    def __init__(self, crds: list[dict[str, Any]]) -> None:
        self._by_kind: dict[tuple[str, str], ResourceKind] = {}
        self._by_plural: dict[tuple[str, str, str], ResourceKind] = {}
        self.crds = crds
        for crd in crds:
            spec = crd["spec"]
            names = spec["names"]
            for version in spec["versions"]:
                if not version.get("served", True):
                    continue
                kind = ResourceKind(
                    group=spec["group"],
                    version=version["name"],
                    kind=names["kind"],
                    list_kind=names.get("listKind", names["kind"] + "List"),
                    plural=names["plural"],
                    singular=names.get("singular", names["kind"].lower()),
                    scope=spec.get("scope", "Namespaced"),
                    schema=version["schema"]["openAPIV3Schema"],
                    subresources=version.get("subresources") or {},
                    crd=crd,
                )
                self._by_kind[(kind.api_version, kind.kind)] = kind
                self._by_plural[(kind.group, kind.version, kind.plural)] = kind

    @classmethod
    def load(cls, directory: str | Path) -> Definitions:
        """Every CRD in ``directory`` (``*.json``, ``*.yaml``, ``*.yml``), sorted by file name."""
        directory = Path(directory)
        crds = []
        for path in sorted(directory.iterdir()):
            if path.suffix == ".json":
                crds.append(json.loads(path.read_text()))
            elif path.suffix in (".yaml", ".yml"):
                loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
                crds.extend(
                    doc
                    for doc in yaml.load_all(path.read_text(), Loader=loader)
                    if doc and doc.get("kind") == "CustomResourceDefinition"
                )
        if not crds:
            raise FileNotFoundError(f"no CustomResourceDefinition in {directory}")
        return cls(crds)

    def kind(self, api_version: str, kind: str) -> ResourceKind:
        try:
            return self._by_kind[(api_version, kind)]
        except KeyError:
            raise UnknownKind(f"no CRD serves kind {kind!r} in {api_version!r}") from None

    def plural(self, group: str, version: str, plural: str) -> ResourceKind:
        try:
            return self._by_plural[(group, version, plural)]
        except KeyError:
            raise UnknownKind(f"no CRD serves {plural!r} in {group}/{version}") from None

    def kinds(self) -> list[ResourceKind]:
        return list(self._by_kind.values())

    def crd(self, name: str) -> dict[str, Any] | None:
        """The CRD object named ``name`` (``rayservices.ray.io``), as the API server lists it."""
        for crd in self.crds:
            if crd["metadata"]["name"] == name:
                return crd
        return None


@functools.cache
def shipped() -> Definitions:
    """The pinned copy shipped in the package (loaded once)."""
    return Definitions.load(SHIPPED_DIR)


def trim_crd(crd: dict[str, Any], versions: tuple[str, ...] = SERVED_VERSIONS) -> dict[str, Any]:
    """The parts of a CRD that admission and routing need: names, scope, and per kept version
    its schema (without ``description`` texts), subresources and printer columns."""
    spec = crd["spec"]
    kept = []
    for version in spec["versions"]:
        if version["name"] not in versions:
            continue
        entry = {
            "name": version["name"],
            "served": version.get("served", True),
            "storage": version.get("storage", False),
            "schema": {"openAPIV3Schema": _without_descriptions(version["schema"]["openAPIV3Schema"])},
        }
        for key in ("subresources", "additionalPrinterColumns"):
            if key in version:
                entry[key] = copy.deepcopy(version[key])
        kept.append(entry)
    return {
        "apiVersion": crd["apiVersion"],
        "kind": crd["kind"],
        "metadata": {"name": crd["metadata"]["name"]},
        "spec": {
            "group": spec["group"],
            "names": copy.deepcopy(spec["names"]),
            "scope": spec["scope"],
            "versions": kept,
        },
    }


def _without_descriptions(schema: Any) -> Any:
    if isinstance(schema, dict):
        out = {}
        for key, value in schema.items():
            if key == "description" and isinstance(value, str):
                continue
            if key in ("properties", "patternProperties", "definitions"):
                out[key] = {name: _without_descriptions(sub) for name, sub in value.items()}
            elif key in ("default", "enum", "example"):
                out[key] = copy.deepcopy(value)  # data, not schema: a "description" key there stays
            else:
                out[key] = _without_descriptions(value)
        return out
    if isinstance(schema, list):
        return [_without_descriptions(item) for item in schema]
    return schema


def dump_trimmed(crd: dict[str, Any]) -> str:
    """The shipped file's text: compact, key-sorted JSON (so a regeneration diffs cleanly)."""
    return json.dumps(trim_crd(crd), sort_keys=True, separators=(",", ":")) + "\n"


def _main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m control.kuberay.definitions UPSTREAM_CRD_DIR OUT_DIR", file=sys.stderr)
        return 2
    source, out = Path(argv[0]), Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for crd in Definitions.load(source).crds:
        target = out / f"{crd['metadata']['name']}.json"
        target.write_text(dump_trimmed(crd))
        print(f"{target}: {target.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
