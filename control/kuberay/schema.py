"""Admission of KubeRay objects the way a Kubernetes API server admits custom resources, plus
the KubeRay operator's own checks that the schemas lack.

:func:`admit` takes a manifest (a ``dict``, as ``yaml.safe_load`` gives it) and returns the
object the API server would store, or raises :class:`ManifestInvalid` listing every problem as
``(path, message)`` pairs, in the API server's words::

    >>> bad = {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": "llm"},
    ...        "spec": {"rayClusterConfig": {"headGroupSpec": {"rayStartParams": {}}}, "replicas": 2}}
    >>> try:
    ...     admit(bad)
    ... except ManifestInvalid as exc:
    ...     for path, message in exc.errors:
    ...         print(f"{path}: {message}")
    spec.replicas: unknown field "spec.replicas"
    spec.rayClusterConfig.headGroupSpec.template: Required value

The steps follow the API server's order for a structural schema (``apiextensions.k8s.io/v1``):

1. prune: a field the schema does not declare is an error (``fieldValidation=Strict``, what
   ``kubectl`` sends), except under ``x-kubernetes-preserve-unknown-fields: true``; objects
   marked ``x-kubernetes-embedded-resource`` may carry ``apiVersion``, ``kind`` and
   ``metadata``, whose fields are checked as ObjectMeta like the top-level ``metadata``;
2. ``null`` for a field that is not ``nullable`` is dropped (and its default then applies);
3. ``default``s are filled in, also inside the defaults just applied;
4. validation: ``type`` (integer vs number: JSON numbers with a fraction are not integers, and
   booleans are neither), ``x-kubernetes-int-or-string``, ``enum``, ``required``,
   ``minimum``/``maximum`` (and exclusive), ``minLength``/``maxLength`` (in characters),
   ``pattern``, ``format`` (``int32``, ``int64``, ``date-time``), ``minItems``/``maxItems``,
   ``additionalProperties`` (maps), ``items``, ``anyOf``/``allOf``/``oneOf``/``not`` (value
   checks only), list uniqueness for ``x-kubernetes-list-type: set``/``map``, and the two forms
   of CEL rule these CRDs use (``self in [...]``, and ``self == oldSelf`` when ``old`` is given);
   other CEL rules are not evaluated;
5. ObjectMeta: ``metadata.name`` (or ``generateName``) is a DNS-1123 subdomain, labels and
   annotations are string maps with valid keys (label values too);
6. the operator's rules (``ray-operator/controllers/ray/utils/validation.go``, which the
   operator applies after the API server has stored the object and reports as a
   ``ValidationFailed`` condition, checked here before anything is sent): RayService and RayJob
   names of at most 47 characters (RayCluster 63) that are DNS-1035 labels, a container in every
   group, ``minReplicas <= replicas <= maxReplicas`` in each worker group, resources not set both
   in ``rayStartParams`` (``num-cpus``, ``num-gpus``, ``memory``, ``resources``) and in the
   group's ``resources`` map (GPUs given twice), no ``rayStartParams["labels"]``, the RayService
   ``upgradeStrategy.type`` enum and incremental-upgrade options, and a valid
   ``ray.io/initializing-timeout`` annotation.

Paths read like the API server's: ``spec.rayClusterConfig.workerGroupSpecs[0].replicas``, map
entries as ``rayStartParams[num-gpus]``.
"""

from __future__ import annotations

import copy
import datetime as _dt
import functools
import json
import re
from typing import Any, ClassVar, NamedTuple

from control.errors import InvalidRequest
from control.kuberay.definitions import Definitions, ResourceKind, UnknownKind, shipped


class FieldError(NamedTuple):
    """One problem: where (``spec.x[0].y``) and what (``Required value``)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ManifestInvalid(InvalidRequest):
    """The manifest would be refused (422 Invalid) by the API server or by the operator."""

    status: ClassVar[int] = 422
    code: ClassVar[str] = "invalid_manifest"

    def __init__(self, errors: list[FieldError] | list[tuple[str, str]], *, kind: str = "", name: str = "") -> None:
        self.errors = [FieldError(*error) for error in errors]
        what = f'{kind} "{name}"' if kind or name else "the manifest"
        message = f"{what} is invalid: " + "; ".join(str(error) for error in self.errors)
        super().__init__(message, param=self.errors[0].path if self.errors else None)
        self.kind = kind
        self.name = name


MAX_NAME_LENGTH = {"RayService": 47, "RayJob": 47, "RayCluster": 63}
UPGRADE_TYPES = ("NewClusterWithIncrementalUpgrade", "NewCluster", "None")
RAY_START_RESOURCE_PARAMS = ("num-cpus", "num-gpus", "memory", "resources")
INITIALIZING_TIMEOUT_ANNOTATION = "ray.io/initializing-timeout"

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_GO_DURATION = re.compile(r"^[-+]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+$")
_CEL_IN_LIST = re.compile(r"^\s*self\s+in\s+\[(.*)\]\s*$")
_CEL_IMMUTABLE = re.compile(r"^\s*self\s*==\s*oldSelf\s*$")
_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}

# ObjectMeta as the API server checks it for every object (the CRD schemas say only
# `metadata: {type: object}`); fields the server sets come back from it and are accepted.
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_PRESERVE = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
OBJECT_META_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "generateName": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "items": _PRESERVE},
        "uid": {"type": "string"},
        "resourceVersion": {"type": "string"},
        "generation": {"type": "integer", "format": "int64"},
        "creationTimestamp": {"type": "string", "format": "date-time", "nullable": True},
        "deletionTimestamp": {"type": "string", "format": "date-time", "nullable": True},
        "deletionGracePeriodSeconds": {"type": "integer", "format": "int64"},
        "managedFields": {"type": "array", "items": _PRESERVE},
        "selfLink": {"type": "string"},
    },
}


def admit(
    obj: dict[str, Any],
    *,
    old: dict[str, Any] | None = None,
    definitions: Definitions | None = None,
    operator_rules: bool = True,
) -> dict[str, Any]:
    """``obj`` pruned of nulls and defaulted as the API server stores it, or
    :class:`ManifestInvalid` with every problem found. ``obj`` itself is not changed.

    ``old`` is the stored object on an update (for ``self == oldSelf`` rules); ``definitions``
    defaults to the pinned copy we ship; ``operator_rules=False`` checks only what the API
    server checks.
    """
    definitions = definitions or shipped()
    if not isinstance(obj, dict):
        raise ManifestInvalid([FieldError("", f"Invalid value: {_show(obj)}: must be an object")])
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    name = _name_of(obj)
    if not isinstance(api_version, str) or not api_version:
        raise ManifestInvalid([FieldError("apiVersion", "Required value")], kind=str(kind or ""), name=name)
    if not isinstance(kind, str) or not kind:
        raise ManifestInvalid([FieldError("kind", "Required value")], name=name)
    try:
        resource = definitions.kind(api_version, kind)
    except UnknownKind as exc:
        raise ManifestInvalid([FieldError("kind", f"Unsupported value: {_show(kind)}: {exc}")], name=name) from None
    return admit_as(resource, obj, old=old, operator_rules=operator_rules)


def admit_as(
    resource: ResourceKind,
    obj: dict[str, Any],
    *,
    old: dict[str, Any] | None = None,
    operator_rules: bool = True,
) -> dict[str, Any]:
    """:func:`admit` for a kind already looked up (the fake API server routes by plural)."""
    errors: list[FieldError] = []
    walker = _Walker(errors)
    admitted = walker.visit(copy.deepcopy(obj), _top_level_schema(resource), "", old)
    name = _name_of(admitted if isinstance(admitted, dict) else obj)
    if isinstance(admitted, dict):
        if admitted.get("apiVersion") != resource.api_version:
            errors.append(FieldError("apiVersion", f"Unsupported value: {_show(admitted.get('apiVersion'))}"))
        if admitted.get("kind") != resource.kind:
            errors.append(FieldError("kind", f"Unsupported value: {_show(admitted.get('kind'))}"))
        meta = admitted.get("metadata")
        _check_object_meta(meta if isinstance(meta, dict) else {}, "metadata", errors, top_level=True)
    if not errors and operator_rules:
        _operator_rules(resource.kind, admitted, errors)
    if errors:
        raise ManifestInvalid(errors, kind=resource.kind, name=name)
    return admitted


def schema_for(api_version: str, kind: str, definitions: Definitions | None = None) -> ResourceKind:
    """The kind (schema, plural, scope, subresources) for ``apiVersion``/``kind``."""
    return (definitions or shipped()).kind(api_version, kind)


def _top_level_schema(resource: ResourceKind) -> dict[str, Any]:
    """The CRD's schema with ``metadata`` checked as ObjectMeta (a shallow copy: cheap)."""
    properties = {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, **(resource.schema.get("properties") or {})}
    properties["metadata"] = OBJECT_META_SCHEMA
    return {**resource.schema, "properties": properties}


class _Walker:
    """One pass over an object and its schema: prune, default, validate."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors

    def error(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message))

    def visit(self, value: Any, schema: dict[str, Any], path: str, old: Any) -> Any:
        if value is None:
            if not schema.get("nullable"):
                self.error(path, f"Invalid value: null: must be of type {_type_name(schema)}")
            return value
        if schema.get("x-kubernetes-int-or-string"):
            if not (_is_int(value) or isinstance(value, str)):
                self.error(path, f"Invalid value: {_show(value)}: must be of type integer or string")
                return value
        else:
            expected = schema.get("type")
            if expected and not _has_type(value, expected):
                self.error(path, f"Invalid value: {_show(value)}: must be of type {expected}")
                return value
        if isinstance(value, dict):
            value = self._object(value, schema, path, old if isinstance(old, dict) else None)
        elif isinstance(value, list):
            self._array(value, schema, path)
        self._value_checks(value, schema, path, old)
        return value

    def _object(self, value: dict[str, Any], schema: dict[str, Any], path: str, old: dict | None) -> dict[str, Any]:
        properties: dict[str, Any] = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        embedded = bool(schema.get("x-kubernetes-embedded-resource"))
        if embedded:
            properties = {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                **properties,
                "metadata": OBJECT_META_SCHEMA if _is_bare_object(properties.get("metadata")) else properties["metadata"],
            }
        out: dict[str, Any] = {}
        for key, item in value.items():
            sub_path = _join(path, key)
            if key in properties:
                sub = properties[key]
            elif isinstance(additional, dict):
                sub, sub_path = additional, f"{path}[{key}]"
            elif additional is True or preserve:
                out[key] = item
                continue
            else:
                self.error(sub_path, f'unknown field "{sub_path}"')
                continue
            if item is None and not sub.get("nullable"):
                if "default" in sub:
                    out[key] = copy.deepcopy(sub["default"])
                continue  # a non-nullable null is pruned, as if it were not sent
            out[key] = item
        for key, sub in properties.items():
            if key not in out and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
        for key, item in list(out.items()):
            if key in properties:
                sub, sub_path = properties[key], _join(path, key)
            elif isinstance(additional, dict):
                sub, sub_path = additional, f"{path}[{key}]"
            else:
                continue
            out[key] = self.visit(item, sub, sub_path, (old or {}).get(key))
        for key in schema.get("required") or ():
            if key not in out:
                self.error(_join(path, key), "Required value")
        if "minProperties" in schema and len(out) < schema["minProperties"]:
            self.error(path, f"Invalid value: must have at least {schema['minProperties']} properties")
        if "maxProperties" in schema and len(out) > schema["maxProperties"]:
            self.error(path, f"Too many: {len(out)}: must have at most {schema['maxProperties']} properties")
        if embedded:
            for key in ("apiVersion", "kind"):
                if not out.get(key):
                    self.error(_join(path, key), "Required value")
            if isinstance(out.get("metadata"), dict):
                _check_object_meta(out["metadata"], _join(path, "metadata"), self.errors, top_level=False)
        return out

    def _array(self, value: list[Any], schema: dict[str, Any], path: str) -> None:
        items = schema.get("items")
        if isinstance(items, dict):
            for index, item in enumerate(value):
                item_path = f"{path}[{index}]"
                value[index] = self.visit(item, items, item_path, None)
        if "minItems" in schema and len(value) < schema["minItems"]:
            self.error(path, f"Invalid value: must have at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            self.error(path, f"Too many: {len(value)}: must have at most {schema['maxItems']} items")
        list_type = schema.get("x-kubernetes-list-type")
        if list_type == "set" or schema.get("uniqueItems"):
            seen: set[str] = set()
            for index, item in enumerate(value):
                key = json.dumps(item, sort_keys=True)
                if key in seen:
                    self.error(f"{path}[{index}]", f"Duplicate value: {_show(item)}")
                seen.add(key)
        elif list_type == "map":
            keys = schema.get("x-kubernetes-list-map-keys") or []
            seen_keys: set[str] = set()
            for index, item in enumerate(value):
                if not isinstance(item, dict):
                    continue
                key_value = {key: item.get(key) for key in keys}
                key = json.dumps(key_value, sort_keys=True)
                if key in seen_keys:
                    self.error(f"{path}[{index}]", f"Duplicate value: {_show(key_value)}")
                seen_keys.add(key)

    def _value_checks(self, value: Any, schema: dict[str, Any], path: str, old: Any) -> None:
        if "enum" in schema and value not in schema["enum"]:
            supported = ", ".join(_show(choice) for choice in schema["enum"])
            self.error(path, f"Unsupported value: {_show(value)}: supported values: {supported}")
        if isinstance(value, str):
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                self.error(path, f"Too long: may not be more than {schema['maxLength']} bytes")
            if "minLength" in schema and len(value) < schema["minLength"]:
                self.error(path, f"Invalid value: {_show(value)}: should be at least {schema['minLength']} chars long")
            if "pattern" in schema and not _regex(schema["pattern"]).search(value):
                self.error(path, f"Invalid value: {_show(value)}: should match '{schema['pattern']}'")
            if schema.get("format") == "date-time" and not _is_date_time(value):
                self.error(path, f"Invalid value: {_show(value)}: must be a date-time (RFC 3339)")
        if _is_number(value):
            bounds = _INT_RANGES.get(schema.get("format", "")) if _is_int(value) else None
            if bounds and not bounds[0] <= value <= bounds[1]:
                self.error(path, f"Invalid value: {value}: out of range for {schema['format']}")
            if "minimum" in schema:
                low = schema["minimum"]
                if value < low or (schema.get("exclusiveMinimum") and value == low):
                    op = "greater than" if schema.get("exclusiveMinimum") else "greater than or equal to"
                    self.error(path, f"Invalid value: {value}: should be {op} {low}")
            if "maximum" in schema:
                high = schema["maximum"]
                if value > high or (schema.get("exclusiveMaximum") and value == high):
                    op = "less than" if schema.get("exclusiveMaximum") else "less than or equal to"
                    self.error(path, f"Invalid value: {value}: should be {op} {high}")
        for combinator in ("anyOf", "oneOf", "allOf"):
            branches = schema.get(combinator)
            if not branches:
                continue
            passing = sum(1 for branch in branches if self._passes(value, branch, path))
            if combinator == "anyOf" and passing == 0:
                self.error(path, f"Invalid value: {_show(value)}: must validate at least one schema (anyOf)")
            elif combinator == "oneOf" and passing != 1:
                self.error(path, f"Invalid value: {_show(value)}: must validate one and only one schema (oneOf)")
            elif combinator == "allOf" and passing != len(branches):
                self.error(path, f"Invalid value: {_show(value)}: must validate all the schemas (allOf)")
        if isinstance(schema.get("not"), dict) and self._passes(value, schema["not"], path):
            self.error(path, f"Invalid value: {_show(value)}: must not validate the schema (not)")
        for rule in schema.get("x-kubernetes-validations") or ():
            self._cel(value, rule, path, old)

    def _passes(self, value: Any, branch: dict[str, Any], path: str) -> bool:
        probe = _Walker([])
        if branch.get("type") and not _has_type(value, branch["type"]):
            return False
        probe._value_checks(value, branch, path, None)
        return not probe.errors

    def _cel(self, value: Any, rule: dict[str, Any], path: str, old: Any) -> None:
        text = rule.get("rule", "")
        message = rule.get("message") or f"failed rule: {text}"
        if match := _CEL_IN_LIST.match(text):
            choices = _cel_literals(match.group(1))
            if choices is not None and value not in choices:
                self.error(path, f"Invalid value: {_show(value)}: {message}")
        elif _CEL_IMMUTABLE.match(text):
            if old is not None and value != old:
                self.error(path, f"Invalid value: {_show(value)}: {message}")
        # other rules (has(...) combinations in RayJob) are left to the operator's own checks


def _check_object_meta(meta: dict[str, Any], path: str, errors: list[FieldError], *, top_level: bool) -> None:
    name = meta.get("name")
    if top_level and not name and not meta.get("generateName"):
        errors.append(FieldError(_join(path, "name"), "Required value: name or generateName is required"))
    if isinstance(name, str) and name:
        if len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
            errors.append(
                FieldError(
                    _join(path, "name"),
                    f"Invalid value: {_show(name)}: a lowercase RFC 1123 subdomain must consist of lower case "
                    "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
                )
            )
    namespace = meta.get("namespace")
    if isinstance(namespace, str) and namespace and (len(namespace) > 63 or not _DNS1123_LABEL.match(namespace)):
        errors.append(FieldError(_join(path, "namespace"), f"Invalid value: {_show(namespace)}: must be a DNS-1123 label"))
    for key, value in (meta.get("labels") or {}).items():
        if not _is_qualified_name(key):
            errors.append(FieldError(f"{path}.labels", f"Invalid value: {_show(key)}: not a valid label key"))
        if isinstance(value, str) and (len(value) > 63 or not _LABEL_VALUE.match(value)):
            errors.append(FieldError(f"{path}.labels", f"Invalid value: {_show(value)}: not a valid label value"))
    for key in meta.get("annotations") or {}:
        if not _is_qualified_name(key.lower()):
            errors.append(FieldError(f"{path}.annotations", f"Invalid value: {_show(key)}: not a valid annotation key"))


def _operator_rules(kind: str, obj: dict[str, Any], errors: list[FieldError]) -> None:
    meta = obj.get("metadata") or {}
    name = meta.get("name") or ""
    limit = MAX_NAME_LENGTH.get(kind)
    if limit and name:
        if len(name) > limit:
            errors.append(FieldError("metadata.name", f"Too long: {kind} name should be no more than {limit} characters"))
        if not _DNS1035_LABEL.match(name):
            errors.append(
                FieldError(
                    "metadata.name",
                    f"Invalid value: {_show(name)}: {kind} name should be a valid DNS-1035 label (lower case "
                    "alphanumeric characters or '-', starting with a letter, ending with an alphanumeric character)",
                )
            )
    spec = obj.get("spec") or {}
    annotations = meta.get("annotations") or {}
    if kind == "RayCluster":
        _cluster_rules(spec, "spec", errors)
    elif kind == "RayJob" and isinstance(spec.get("rayClusterSpec"), dict):
        _cluster_rules(spec["rayClusterSpec"], "spec.rayClusterSpec", errors)
    elif kind == "RayService":
        cluster = spec.get("rayClusterConfig") or {}
        _cluster_rules(cluster, "spec.rayClusterConfig", errors)
        _initializing_timeout(annotations, errors)
        head_service = (cluster.get("headGroupSpec") or {}).get("headService") or {}
        if (head_service.get("metadata") or {}).get("name"):
            errors.append(
                FieldError("spec.rayClusterConfig.headGroupSpec.headService.metadata.name", "Forbidden: should not be set")
            )
        _upgrade_strategy(spec, cluster, errors)


def _cluster_rules(cluster: dict[str, Any], path: str, errors: list[FieldError]) -> None:
    head = cluster.get("headGroupSpec") or {}
    groups: list[tuple[str, dict[str, Any]]] = [(f"{path}.headGroupSpec", head)]
    groups += [(f"{path}.workerGroupSpecs[{i}]", group) for i, group in enumerate(cluster.get("workerGroupSpecs") or [])]
    for group_path, group in groups:
        containers = ((group.get("template") or {}).get("spec") or {}).get("containers") or []
        if not containers:
            errors.append(FieldError(f"{group_path}.template.spec.containers", "Required value: at least one container"))
        params = group.get("rayStartParams") or {}
        resources = group.get("resources") or {}
        given = [param for param in RAY_START_RESOURCE_PARAMS if params.get(param)]
        if given and resources:
            errors.append(
                FieldError(
                    f"{group_path}.resources",
                    "Forbidden: resource fields should not be set in both rayStartParams "
                    f"({', '.join(given)}) and resources; please use only one",
                )
            )
        if "labels" in params:
            errors.append(
                FieldError(f"{group_path}.rayStartParams[labels]", "Forbidden: use the group's labels field instead")
            )
        if group is head:
            continue
        low, high = group.get("minReplicas", 0), group.get("maxReplicas", 2**31 - 1)
        if _is_int(low) and _is_int(high) and low > high:
            errors.append(
                FieldError(f"{group_path}.minReplicas", f"Invalid value: {low}: must be at most maxReplicas ({high})")
            )
        replicas = group.get("replicas")
        if _is_int(replicas) and _is_int(low) and _is_int(high) and not low <= replicas <= high:
            errors.append(
                FieldError(
                    f"{group_path}.replicas",
                    f"Invalid value: {replicas}: must be between minReplicas ({low}) and maxReplicas ({high})",
                )
            )


def _upgrade_strategy(spec: dict[str, Any], cluster: dict[str, Any], errors: list[FieldError]) -> None:
    strategy = spec.get("upgradeStrategy")
    if not isinstance(strategy, dict) or "type" not in strategy:
        return
    kind = strategy["type"]
    if kind not in UPGRADE_TYPES:
        supported = ", ".join(_show(choice) for choice in UPGRADE_TYPES)
        errors.append(
            FieldError("spec.upgradeStrategy.type", f"Unsupported value: {_show(kind)}: supported values: {supported}")
        )
        return
    if kind != "NewClusterWithIncrementalUpgrade":
        return
    path = "spec.upgradeStrategy.clusterUpgradeOptions"
    if not cluster.get("enableInTreeAutoscaling"):
        errors.append(
            FieldError(
                "spec.rayClusterConfig.enableInTreeAutoscaling",
                "Required value: Ray Autoscaler is required for NewClusterWithIncrementalUpgrade",
            )
        )
    options = strategy.get("clusterUpgradeOptions")
    if not isinstance(options, dict):
        errors.append(FieldError(path, "Required value: required for NewClusterWithIncrementalUpgrade"))
        return
    for key in ("maxSurgePercent", "stepSizePercent"):
        value = options.get(key)
        if not (_is_int(value) and 0 <= value <= 100):
            errors.append(FieldError(f"{path}.{key}", f"Invalid value: {_show(value)}: must be between 0 and 100"))
    interval = options.get("intervalSeconds")
    if not (_is_int(interval) and interval > 0):
        errors.append(FieldError(f"{path}.intervalSeconds", f"Invalid value: {_show(interval)}: must be greater than 0"))
    if not options.get("gatewayClassName"):
        errors.append(FieldError(f"{path}.gatewayClassName", "Required value"))


def _initializing_timeout(annotations: dict[str, Any], errors: list[FieldError]) -> None:
    value = annotations.get(INITIALIZING_TIMEOUT_ANNOTATION)
    if not value:
        return
    seconds = parse_duration_s(value)
    if seconds is None or seconds <= 0:
        errors.append(
            FieldError(
                f"metadata.annotations[{INITIALIZING_TIMEOUT_ANNOTATION}]",
                f"Invalid value: {_show(value)}: must be a positive Go duration ('5m', '1h') or a positive "
                "integer of seconds",
            )
        )


def parse_duration_s(value: str) -> float | None:
    """Seconds in a Go duration (``"1h30m"``, ``"90s"``) or an integer of seconds; None if neither."""
    text = value.strip()
    if re.fullmatch(r"[-+]?\d+", text):
        return float(int(text))
    if not _GO_DURATION.match(text):
        return None
    sign = -1.0 if text.startswith("-") else 1.0
    scale = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    total = sum(float(number) * scale[unit] for number, unit in re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)", text))
    return sign * total


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _name_of(obj: Any) -> str:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else ""


def _is_bare_object(schema: Any) -> bool:
    return not isinstance(schema, dict) or not (schema.get("properties") or schema.get("additionalProperties"))


def _is_int(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _has_type(value: Any, expected: str) -> bool:
    match expected:
        case "object":
            return isinstance(value, dict)
        case "array":
            return isinstance(value, list)
        case "string":
            return isinstance(value, str)
        case "boolean":
            return isinstance(value, bool)
        case "integer":
            return _is_int(value)
        case "number":
            return _is_number(value)
    return True


def _type_name(schema: dict[str, Any]) -> str:
    if schema.get("x-kubernetes-int-or-string"):
        return "integer or string"
    return schema.get("type") or "any"


def _is_qualified_name(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(_QUALIFIED_NAME.match(name))


def _is_date_time(value: str) -> bool:
    try:
        _dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return False
    return True


def _cel_literals(text: str) -> list[Any] | None:
    try:
        return json.loads("[" + re.sub(r"'([^']*)'", lambda m: json.dumps(m.group(1)), text) + "]")
    except ValueError:
        return None


@functools.cache
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 200 else text[:197] + "..."
