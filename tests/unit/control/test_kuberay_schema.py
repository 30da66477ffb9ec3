"""control.kuberay.schema: KubeRay manifests admitted as the API server and the operator would.

The samples of ``../shared/reference/kuberay/samples`` must admit against the shipped CRDs and
against the upstream copy in ``../shared/reference/kuberay/crds`` (skipped when that folder is
absent, e.g. in a user's fresh clone).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from control.errors import ControlError
from control.kuberay import Definitions, FieldError, ManifestInvalid, admit, schema_for, shipped
from control.kuberay.definitions import SHIPPED_DIR, dump_trimmed

REPO = Path(__file__).resolve().parents[3]
SHARED = REPO.parent / "shared" / "reference" / "kuberay"
SAMPLE_NAMES = [
    "ray-cluster.autoscaler-v2.yaml",
    "ray-cluster.complete.yaml",
    "ray-job.sample.yaml",
    "ray-service.deepseek.yaml",
    "ray-service.high-throughput-llm.yaml",
    "ray-service.incremental-upgrade.yaml",
    "ray-service.llm-serve.yaml",
    "ray-service.sample.yaml",
]

needs_shared = pytest.mark.skipif(not (SHARED / "crds").is_dir(), reason=f"{SHARED} is absent (reference data)")


@pytest.fixture(scope="module")
def upstream() -> Definitions:
    """The upstream CRDs (3 MB of YAML: read once)."""
    return Definitions.load(SHARED / "crds")


def _ray_docs(name: str) -> list[dict]:
    path = SHARED / "samples" / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (reference data)")
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return [doc for doc in docs if doc["apiVersion"].startswith("ray.io/")]


def _pod(name: str = "ray") -> dict:
    return {"spec": {"containers": [{"name": name, "image": "rayproject/ray:2.52.0"}]}}


def service(**spec_changes) -> dict:
    """A small valid RayService: a head and one GPU worker group."""
    spec = {
        "serveConfigV2": "applications: []\n",
        "rayClusterConfig": {
            "rayVersion": "2.52.0",
            "headGroupSpec": {"rayStartParams": {"num-cpus": "0"}, "template": _pod("ray-head")},
            "workerGroupSpecs": [
                {
                    "groupName": "gpu",
                    "replicas": 1,
                    "minReplicas": 1,
                    "maxReplicas": 2,
                    "rayStartParams": {},
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "ray-worker",
                                    "image": "rayproject/ray:2.52.0",
                                    "resources": {"limits": {"cpu": "3500m", "memory": "16Gi", "nvidia.com/gpu": 1}},
                                }
                            ]
                        }
                    },
                }
            ],
        },
    }
    spec.update(spec_changes)
    return {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": "llm-a"}, "spec": spec}


def _errors(obj: dict, **kwargs) -> list[FieldError]:
    with pytest.raises(ManifestInvalid) as caught:
        admit(obj, **kwargs)
    for path, _ in caught.value.errors:
        assert path in str(caught.value)  # str() names every path
    return caught.value.errors


def _worker(obj: dict) -> dict:
    return obj["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]


# -- the samples -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_every_sample_admits_against_the_shipped_crds(name):
    for doc in _ray_docs(name):
        admitted = admit(doc)
        assert admitted["metadata"]["name"] == doc["metadata"]["name"]


@needs_shared
@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_every_sample_admits_against_the_shared_crds(name, upstream):
    for doc in _ray_docs(name):
        assert admit(doc, definitions=upstream) == admit(doc)


@needs_shared
def test_the_shipped_copy_is_the_trim_of_the_upstream_crds(upstream):
    for crd in upstream.crds:
        shipped_file = SHIPPED_DIR / f"{crd['metadata']['name']}.json"
        assert shipped_file.read_text() == dump_trimmed(crd), f"{shipped_file} is stale: regenerate it"
    assert (SHIPPED_DIR / "NOTICE").read_text().count("feeaf72") == 1


def test_the_shipped_crds_serve_ray_io_v1_with_status_as_a_subresource():
    kinds = {kind.kind: kind for kind in shipped().kinds()}
    assert set(kinds) == {"RayCluster", "RayJob", "RayService"}
    rayservice = schema_for("ray.io/v1", "RayService")
    assert (rayservice.plural, rayservice.scope, rayservice.has_status) == ("rayservices", "Namespaced", True)
    assert shipped().plural("ray.io", "v1", "rayservices") is rayservice
    assert "v1alpha1" not in {kind.version for kind in shipped().kinds()}


# -- what the API server does ------------------------------------------------------------------


def test_defaults_are_applied_and_the_input_is_left_alone():
    manifest = service()
    del _worker(manifest)["minReplicas"]
    before = copy.deepcopy(manifest)
    admitted = admit(manifest)
    assert manifest == before
    worker = _worker(admitted)
    assert (worker["minReplicas"], worker["numOfHosts"], worker["priority"]) == (0, 1, 0)
    assert worker["maxReplicas"] == 2  # given, not defaulted


def test_defaults_apply_inside_lists_and_inside_defaults():
    manifest = service()
    container = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    container["ports"] = [{"containerPort": 8000, "name": "serve"}]
    admitted = admit(manifest)
    port = admitted["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"][0]
    assert port == {"containerPort": 8000, "name": "serve", "protocol": "TCP"}


def test_nulls_are_pruned_and_defaults_then_apply():
    manifest = service(excludeHeadPodFromServeSvc=None)
    _worker(manifest)["minReplicas"] = None
    _worker(manifest)["rayStartParams"] = None
    admitted = admit(manifest)
    assert "excludeHeadPodFromServeSvc" not in admitted["spec"]
    assert "rayStartParams" not in _worker(admitted)
    assert _worker(admitted)["minReplicas"] == 0


def test_a_nullable_null_is_kept():
    cluster = _ray_docs("ray-cluster.complete.yaml")[0]
    cluster["status"] = {"lastUpdateTime": None}
    assert admit(cluster)["status"] == {"lastUpdateTime": None}


def test_an_unknown_field_is_rejected_with_its_path():
    manifest = service(replicaz=2)
    _worker(manifest)["template"]["spec"]["containers"][0]["gpus"] = 1
    errors = _errors(manifest)
    assert FieldError("spec.replicaz", 'unknown field "spec.replicaz"') in errors
    assert (
        "spec.rayClusterConfig.workerGroupSpecs[0].template.spec.containers[0].gpus",
        'unknown field "spec.rayClusterConfig.workerGroupSpecs[0].template.spec.containers[0].gpus"',
    ) in errors


def test_unknown_metadata_and_top_level_fields_are_rejected():
    manifest = service()
    manifest["metadata"]["nmae"] = "typo"
    manifest["extra"] = {}
    paths = [path for path, _ in _errors(manifest)]
    assert paths == ["extra", "metadata.nmae"] or sorted(paths) == ["extra", "metadata.nmae"]


@pytest.mark.parametrize(
    ("value", "accepted"),
    [(2, True), (2.0, True), (2.5, False), ("2", False), (True, False), (2**31, False)],
)
def test_integers_are_integers_in_int32_range(value, accepted):
    manifest = service()
    _worker(manifest)["maxReplicas"] = value
    if accepted:
        assert _worker(admit(manifest))["maxReplicas"] == value
    else:
        [error] = _errors(manifest)
        assert error.path == "spec.rayClusterConfig.workerGroupSpecs[0].maxReplicas"


def test_wrong_types_name_the_type():
    manifest = service(serveConfigV2={"applications": []})
    manifest["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"] = "yes"
    errors = dict(_errors(manifest))
    assert errors["spec.serveConfigV2"] == 'Invalid value: {"applications": []}: must be of type string'
    assert errors["spec.rayClusterConfig.enableInTreeAutoscaling"] == 'Invalid value: "yes": must be of type boolean'


def test_quantities_are_int_or_string_and_match_their_pattern():
    manifest = service()
    limits = _worker(manifest)["template"]["spec"]["containers"][0]["resources"]["limits"]
    limits["cpu"] = 4
    admit(manifest)
    limits["memory"] = "16 gigs"
    [error] = _errors(manifest)
    assert error.path == "spec.rayClusterConfig.workerGroupSpecs[0].template.spec.containers[0].resources.limits[memory]"
    assert "should match" in error.message
    limits["memory"] = [16]
    [error] = _errors(manifest)
    assert error.message == "Invalid value: [16]: must be of type integer or string"


def test_a_bad_enum_lists_the_supported_values():
    manifest = service()
    manifest["spec"]["rayClusterConfig"]["autoscalerOptions"] = {"upscalingMode": "Fast"}
    [error] = _errors(manifest)
    assert error == (
        "spec.rayClusterConfig.autoscalerOptions.upscalingMode",
        'Unsupported value: "Fast": supported values: "Default", "Aggressive", "Conservative"',
    )


def test_required_fields():
    manifest = service()
    del _worker(manifest)["groupName"]
    del manifest["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]
    paths = {path for path, message in _errors(manifest) if message == "Required value"}
    assert paths == {
        "spec.rayClusterConfig.workerGroupSpecs[0].groupName",
        "spec.rayClusterConfig.headGroupSpec.template",
    }


def test_maps_check_their_values_and_lists_their_keys():
    manifest = service()
    _worker(manifest)["rayStartParams"] = {"num-cpus": 4}
    [error] = _errors(manifest)
    assert error.path == "spec.rayClusterConfig.workerGroupSpecs[0].rayStartParams[num-cpus]"
    manifest = service()
    _worker(manifest)["template"]["spec"]["containers"].append(
        {"name": "ray-worker", "image": "rayproject/ray:2.52.0"}
    )  # containers is a list-map keyed by name
    [error] = _errors(manifest)
    assert error.path == "spec.rayClusterConfig.workerGroupSpecs[0].template.spec.containers[1]"
    assert error.message.startswith("Duplicate value")


def test_cel_rules_in_these_crds():
    manifest = service()
    manifest["spec"]["managedBy"] = "someone-else"
    [error] = _errors(manifest)
    assert error.path == "spec.managedBy" and "must be either" in error.message
    old = admit(service(managedBy="ray.io/kuberay-operator"))
    changed = service(managedBy="kueue.x-k8s.io/multikueue")
    [error] = _errors(changed, old=old)
    assert error == ("spec.managedBy", 'Invalid value: "kueue.x-k8s.io/multikueue": the managedBy field is immutable')
    admit(changed)  # a create has no old object


def test_object_meta_is_checked():
    manifest = service()
    manifest["metadata"]["labels"] = {"team": "a b"}
    manifest["metadata"]["annotations"] = {"note": 3}
    errors = _errors(manifest)
    assert {path for path, _ in errors} == {"metadata.labels", "metadata.annotations[note]"}
    manifest = service()
    del manifest["metadata"]["name"]
    assert [path for path, _ in _errors(manifest)] == ["metadata.name"]


def test_an_unknown_kind_or_api_version_is_rejected():
    manifest = service()
    manifest["apiVersion"] = "ray.io/v1alpha1"
    [error] = _errors(manifest)
    assert error.path == "kind"
    [error] = _errors({"kind": "RayService"})
    assert error == ("apiVersion", "Required value")


# -- what the operator checks ------------------------------------------------------------------


def test_rayservice_names_are_at_most_47_characters():
    manifest = service()
    manifest["metadata"]["name"] = "a" * 47
    admit(manifest)
    manifest["metadata"]["name"] = "a" * 48
    [error] = _errors(manifest)
    assert error.path == "metadata.name" and "47" in error.message
    cluster = _ray_docs("ray-cluster.complete.yaml")[0]
    cluster["metadata"]["name"] = "a" * 48  # a RayCluster may be longer
    admit(cluster)


@pytest.mark.parametrize("name", ["1llm", "llm.v2"])
def test_rayservice_names_are_dns1035_labels(name):
    manifest = service()
    manifest["metadata"]["name"] = name  # both are valid object names (DNS-1123 subdomains)
    [error] = _errors(manifest)
    assert error.path == "metadata.name" and "DNS-1035" in error.message
    assert admit(manifest, operator_rules=False)["metadata"]["name"] == name


@pytest.mark.parametrize(("low", "replicas", "high"), [(1, 3, 2), (2, 1, 4), (3, None, 2)])
def test_replicas_out_of_bounds(low, replicas, high):
    manifest = service()
    worker = _worker(manifest)
    worker.update(minReplicas=low, maxReplicas=high)
    if replicas is None:
        del worker["replicas"]
    else:
        worker["replicas"] = replicas
    errors = _errors(manifest)
    assert {path for path, _ in errors} <= {
        "spec.rayClusterConfig.workerGroupSpecs[0].replicas",
        "spec.rayClusterConfig.workerGroupSpecs[0].minReplicas",
    }
    assert "maxReplicas" in str(errors)


def test_gpus_given_in_both_ray_start_params_and_resources():
    manifest = service()
    _worker(manifest)["rayStartParams"] = {"num-gpus": "1"}
    _worker(manifest)["resources"] = {"GPU": "1"}
    [error] = _errors(manifest)
    assert error.path == "spec.rayClusterConfig.workerGroupSpecs[0].resources"
    assert "num-gpus" in error.message
    del _worker(manifest)["resources"]
    admit(manifest)  # num-gpus with the container's nvidia.com/gpu limit is KubeRay's usual form


def test_upgrade_strategy_type_and_incremental_options():
    [error] = _errors(service(upgradeStrategy={"type": "BlueGreen"}))
    assert error.path == "spec.upgradeStrategy.type"
    assert '"NewCluster"' in error.message
    admit(service(upgradeStrategy={"type": "NewCluster"}))
    incremental = service(
        upgradeStrategy={
            "type": "NewClusterWithIncrementalUpgrade",
            "clusterUpgradeOptions": {"gatewayClassName": "istio", "stepSizePercent": 120, "intervalSeconds": 30},
        }
    )
    paths = {path for path, _ in _errors(incremental)}
    assert paths == {
        "spec.rayClusterConfig.enableInTreeAutoscaling",
        "spec.upgradeStrategy.clusterUpgradeOptions.stepSizePercent",
    }


@pytest.mark.parametrize(("value", "accepted"), [("10m", True), ("600", True), ("0", False), ("ten minutes", False)])
def test_initializing_timeout_annotation(value, accepted):
    manifest = service()
    manifest["metadata"]["annotations"] = {"ray.io/initializing-timeout": value}
    if accepted:
        admit(manifest)
    else:
        [error] = _errors(manifest)
        assert error.path == "metadata.annotations[ray.io/initializing-timeout]"


def test_every_group_needs_a_container():
    manifest = service()
    _worker(manifest)["template"] = {"spec": {"containers": []}}
    [error] = _errors(manifest)
    assert error.path == "spec.rayClusterConfig.workerGroupSpecs[0].template.spec.containers"


def test_manifest_invalid_is_a_422_control_error_naming_the_first_path():
    with pytest.raises(ManifestInvalid) as caught:
        admit(service(replicaz=1))
    exc = caught.value
    assert isinstance(exc, ControlError) and exc.status == 422
    body = exc.body()["error"]
    assert (body["type"], body["code"], body["param"]) == ("invalid_request_error", "invalid_manifest", "spec.replicaz")
    assert body["message"].startswith('RayService "llm-a" is invalid: spec.replicaz: unknown field')


# -- structural-schema features the KubeRay CRDs do not use (a small CRD of our own) -----------

WIDGET_SCHEMA = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["size"],
            "properties": {
                "size": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
                "ratio": {"type": "number", "minimum": 0, "maximum": 1, "exclusiveMaximum": True},
                "big": {"type": "integer", "format": "int64"},
                "note": {"type": "string", "nullable": True, "default": "none"},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                         "properties": {"known": {"type": "boolean"}}},  # fmt: skip
                "anything": {"x-kubernetes-preserve-unknown-fields": True},
                "open": {"type": "object", "additionalProperties": True},
                "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set", "maxItems": 2},
                "inner": {"type": "object", "x-kubernetes-embedded-resource": True,
                          "properties": {"spec": {"type": "object", "properties": {"x": {"type": "integer"}}}}},  # fmt: skip
            },
        },
    },
}
WIDGETS = Definitions(
    [
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "names": {"kind": "Widget", "plural": "widgets"},
                "scope": "Namespaced",
                "versions": [{"name": "v1", "served": True, "schema": {"openAPIV3Schema": WIDGET_SCHEMA}}],
            },
        }
    ]
)


def widget(**spec) -> dict:
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1, **spec}}


def test_int_or_string_number_and_int64():
    assert admit(widget(size="10Gi"), definitions=WIDGETS)["spec"]["size"] == "10Gi"
    assert admit(widget(ratio=0.5, big=2**40), definitions=WIDGETS)["spec"]["big"] == 2**40
    errors = dict(_errors(widget(size=1.5, ratio=1, big=2**63), definitions=WIDGETS))
    assert errors == {
        "spec.size": "Invalid value: 1.5: must be of type integer or string",
        "spec.ratio": "Invalid value: 1: should be less than 1",
        "spec.big": f"Invalid value: {2**63}: out of range for int64",
    }


def test_nullable_null_stays_and_its_default_applies_only_when_absent():
    assert admit(widget(note=None), definitions=WIDGETS)["spec"]["note"] is None
    assert admit(widget(), definitions=WIDGETS)["spec"]["note"] == "none"


def test_preserve_unknown_fields_keeps_what_the_schema_does_not_declare():
    admitted = admit(widget(free={"known": True, "extra": {"deep": [1]}}, anything=[{"a": 1}], open={"k": 1}),
                     definitions=WIDGETS)  # fmt: skip
    assert admitted["spec"]["free"] == {"known": True, "extra": {"deep": [1]}}
    assert admitted["spec"]["anything"] == [{"a": 1}] and admitted["spec"]["open"] == {"k": 1}
    [error] = _errors(widget(free={"known": "yes"}), definitions=WIDGETS)
    assert error.path == "spec.free.known"  # declared fields are still checked


def test_embedded_resources_carry_type_meta_and_object_meta():
    inner = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "labels": {"a": "b"}}, "spec": {"x": 1}}
    assert admit(widget(inner=inner), definitions=WIDGETS)["spec"]["inner"] == inner
    errors = _errors(widget(inner={"metadata": {"name": "Not_Valid", "bogus": 1}, "spec": {}}), definitions=WIDGETS)
    assert {path for path, _ in errors} == {
        "spec.inner.apiVersion",
        "spec.inner.kind",
        "spec.inner.metadata.bogus",
        "spec.inner.metadata.name",
    }


def test_sets_are_unique_and_bounded():
    errors = _errors(widget(tags=["a", "a", "b"]), definitions=WIDGETS)
    assert {error.path for error in errors} == {"spec.tags", "spec.tags[1]"}
