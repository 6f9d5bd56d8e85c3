"""Deployment artefacts under deploy/ and docs/cloud.md, proven well-formed without a cloud.

* Ray cluster launcher configs (deploy/ray/*.yaml): validated against the schema shipped inside
  the installed Ray (ray/autoscaler/ray-schema.json), then put through the same
  prepare/validate steps `ray up` runs before it contacts the cloud, plus GCP-specific checks
  (TPU accelerator types with Ray's own TPU helpers, Spot scheduling, per-node environment).
* KubeRay manifests (deploy/kuberay/*.yaml): validated against the openAPIV3Schema of the CRDs in
  shared/data/kuberay-crds, made strict the way the API server behaves (unknown fields are
  errors here instead of being pruned silently), plus a port of the KubeRay operator's own spec
  validation and this project's policies (autoscaling, accelerators, environment, non-root).
  Deliberately broken manifests must fail.
* Every `differland ...` command line in the manifests, launcher configs and docs: the
  subcommand answers `--help` with exit 0 and the full command line parses with the real CLI
  parser; every repository path they reference (configs/..., deploy/...) exists. `ray ...`
  command lines are parsed with Ray's own CLI, and `ray job submit` runtime environments are
  resolved and validated the way the CLI does.
* The Dockerfile, checked statically (no image can be built here): variants, non-root user, no
  credentials; deploy/install.sh run in dry-run mode for each variant.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
import shlex
import subprocess
from functools import lru_cache
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCS_CLOUD = ROOT / "docs" / "cloud.md"
LAUNCHER_CONFIGS = sorted((DEPLOY / "ray").glob("gcp-*.yaml"))
RUNTIME_ENV_FILES = sorted((DEPLOY / "ray").glob("runtime-env*.yaml"))
KUBERAY_DIR = DEPLOY / "kuberay"

# Environment every Ray process needs, and per accelerator.
COMMON_ENV = {"GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
GPU_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
JAX_PLATFORM = {"cpu": "cpu", "gpu": "cuda", "tpu": "tpu"}
BUCKET_PLACEHOLDER = "YOUR_BUCKET"
PROJECT_PLACEHOLDER = "YOUR_PROJECT_ID"
SECRET_WORDS = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL", re.I)


def _load(path: Path):
    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _load_all(path: Path) -> list:
    return [d for d in yaml.load_all(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) if d]


def kuberay_docs() -> list[tuple[str, dict]]:
    """(file name, document) for every Kubernetes object under deploy/kuberay."""
    out = []
    for path in sorted(KUBERAY_DIR.glob("*.yaml")):
        for i, doc in enumerate(_load_all(path)):
            out.append((f"{path.name}#{i}", doc))
    return out


def ray_docs(kind: str) -> list[tuple[str, dict]]:
    return [(n, d) for n, d in kuberay_docs() if d.get("apiVersion", "").startswith("ray.io/") and d.get("kind") == kind]


# ---------------------------------------------------------------------------------------------
# Kubernetes structural schemas -> strict JSON Schema
# ---------------------------------------------------------------------------------------------

DNS1035 = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
LABEL_NAME = r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


def _qualified_name_ok(key: str) -> bool:
    """k8s IsQualifiedName: [prefix/]name, prefix a DNS-1123 subdomain <= 253, name <= 63."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not re.match(DNS1123_SUBDOMAIN, prefix)):
        return False
    return 0 < len(name) <= 63 and bool(re.match(LABEL_NAME, name))


def _labels_errors(labels: dict, where: str) -> list[str]:
    errs = []
    for k, v in (labels or {}).items():
        if not _qualified_name_ok(str(k)):
            errs.append(f"{where}: invalid label key {k!r}")
        if not isinstance(v, str) or len(v) > 63 or not re.match(LABEL_VALUE, v):
            errs.append(f"{where}: invalid label value {v!r} for {k!r}")
    return errs


OBJECT_META = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 63, "pattern": DNS1035},
        "namespace": {"type": "string", "pattern": DNS1035},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def k8s_strict(schema, *, root: bool = True):
    """Turn a CRD openAPIV3Schema into a JSON Schema that fails where k8s would prune or reject.

    * ``x-kubernetes-int-or-string: true`` -> anyOf integer/string (quantities: 4 or "4").
    * ``nullable: true`` -> null allowed.
    * objects with ``properties`` and no ``additionalProperties`` -> additionalProperties false,
      unless ``x-kubernetes-preserve-unknown-fields: true`` (there anything goes): a typo fails
      instead of being silently dropped by the API server.
    * objects with neither -> no fields allowed (they would all be pruned). The root
      ``metadata`` (``type: object`` in CRDs; the API server validates it as ObjectMeta) is
      replaced by an ObjectMeta schema.
    """
    if isinstance(schema, bool) or not isinstance(schema, dict):
        return schema
    s = {k: v for k, v in schema.items()}
    preserve = bool(s.get("x-kubernetes-preserve-unknown-fields"))
    if s.get("x-kubernetes-int-or-string"):
        s.pop("type", None)
        s.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if s.get("nullable") and "type" in s:
        s["type"] = [s["type"], "null"] if isinstance(s["type"], str) else [*s["type"], "null"]
    for key in ("properties", "patternProperties"):
        if key in s:
            s[key] = {name: k8s_strict(sub, root=False) for name, sub in s[key].items()}
    if root and "properties" in s and "metadata" in s["properties"]:
        s["properties"]["metadata"] = OBJECT_META
    for key in ("items", "additionalProperties", "not"):
        if isinstance(s.get(key), dict):
            s[key] = k8s_strict(s[key], root=False)
    for key in ("anyOf", "allOf", "oneOf"):
        if key in s:
            s[key] = [k8s_strict(sub, root=False) for sub in s[key]]
    is_object = s.get("type") == "object" or "properties" in s
    if is_object and not preserve and "additionalProperties" not in s:
        s["additionalProperties"] = False
    return s


def _list_type(validator, list_type, instance, schema):
    """x-kubernetes-list-type: 'map' items are unique by their list-map-keys, 'set' items unique."""
    if not validator.is_type(instance, "array"):
        return
    if list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen = set()
        for item in instance:
            if isinstance(item, dict):
                ident = tuple(json.dumps(item.get(k), sort_keys=True) for k in keys)
                if ident in seen:
                    yield jsonschema.ValidationError(f"duplicate entry for list-map keys {keys}: {ident}")
                seen.add(ident)
    elif list_type == "set":
        dumped = [json.dumps(i, sort_keys=True) for i in instance]
        if len(set(dumped)) != len(dumped):
            yield jsonschema.ValidationError("duplicate entries in a list-type set")


K8sValidator = jsonschema.validators.extend(jsonschema.Draft7Validator, {"x-kubernetes-list-type": _list_type})
FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("int32")
def _int32(value) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@FORMATS.checks("int64")
def _int64(value) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


@lru_cache(maxsize=None)
def _crd(shared: str, filename: str):
    crd = _load(Path(shared) / "data" / "kuberay-crds" / filename)
    assert crd["kind"] == "CustomResourceDefinition"
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    versions = {}
    for v in crd["spec"]["versions"]:
        if v.get("served"):
            schema = k8s_strict(v["schema"]["openAPIV3Schema"])
            K8sValidator.check_schema(schema)
            versions[f"{group}/{v['name']}"] = K8sValidator(schema, format_checker=FORMATS)
    return kind, versions


@pytest.fixture(scope="session")
def crds(shared_dir):
    """kind -> {apiVersion: validator} from the shipped CRDs."""
    out = {}
    for filename in ("ray.io_rayclusters.yaml", "ray.io_rayjobs.yaml"):
        kind, versions = _crd(str(shared_dir), filename)
        out[kind] = versions
    return out


# ---------------------------------------------------------------------------------------------
# KubeRay operator validation (port of ray-operator/controllers/ray/utils/validation.go) and
# project policies
# ---------------------------------------------------------------------------------------------

MAX_RAYCLUSTER_NAME = 53
MAX_RAYJOB_NAME = MAX_RAYCLUSTER_NAME - 6


def _env(container: dict) -> dict:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def _cluster_spec_errors(spec: dict, where: str) -> list[str]:
    errs = []
    head = spec.get("headGroupSpec", {})
    if not head.get("template", {}).get("spec", {}).get("containers"):
        errs.append(f"{where}: headGroupSpec should have at least one container")
    groups = [("Head", head)] + [(g.get("groupName", "?"), g) for g in spec.get("workerGroupSpecs", [])]
    names = [n for n, _ in groups[1:]]
    if len(names) != len(set(names)):
        errs.append(f"{where}: duplicate worker groupName in {names}")
    for name, g in groups:
        if name != "Head" and not g.get("template", {}).get("spec", {}).get("containers"):
            errs.append(f"{where}: workerGroupSpec {name} should have at least one container")
        rsp = g.get("rayStartParams", {}) or {}
        if any(rsp.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources")) and g.get("resources"):
            errs.append(f"{where}: {name}: resources set in both rayStartParams and resources")
        if "labels" in rsp:
            errs.append(f"{where}: {name}: rayStartParams['labels'] is not supported")
        errs += _labels_errors(g.get("labels", {}), f"{where}: {name} labels")
        tpl = g.get("template", {})
        errs += _labels_errors(tpl.get("metadata", {}).get("labels", {}), f"{where}: {name} pod labels")
        errs += _labels_errors(tpl.get("spec", {}).get("nodeSelector", {}), f"{where}: {name} nodeSelector")
        if name != "Head":
            lo, hi, n = g.get("minReplicas", 0), g.get("maxReplicas", 2**31 - 1), g.get("replicas", 0)
            if isinstance(lo, int) and isinstance(hi, int) and isinstance(n, int) and not lo <= n <= hi:
                errs.append(f"{where}: {name}: need minReplicas <= replicas <= maxReplicas, got {lo}/{n}/{hi}")
    autoscaling = spec.get("enableInTreeAutoscaling") is True
    if autoscaling:
        if any(g.get("suspend") for _, g in groups[1:]):
            errs.append(f"{where}: worker groups cannot be suspended with the autoscaler enabled")
        if (spec.get("autoscalerOptions") or {}).get("version") == "v2":
            for name, g in groups:
                rp = g.get("template", {}).get("spec", {}).get("restartPolicy")
                if rp not in (None, "", "Never"):
                    errs.append(f"{where}: {name}: restartPolicy must be Never or unset with autoscaler v2")
    return errs


def _rayjob_errors(doc: dict, where: str) -> list[str]:
    spec, errs = doc.get("spec", {}), []
    name = doc.get("metadata", {}).get("name", "")
    if len(name) > MAX_RAYJOB_NAME:
        errs.append(f"{where}: RayJob name longer than {MAX_RAYJOB_NAME}")
    if spec.get("suspend") and not spec.get("shutdownAfterJobFinishes"):
        errs.append(f"{where}: suspend requires shutdownAfterJobFinishes")
    if not spec.get("shutdownAfterJobFinishes") and spec.get("ttlSecondsAfterFinished", 0) > 0:
        errs.append(f"{where}: ttlSecondsAfterFinished requires shutdownAfterJobFinishes: true")
    if spec.get("ttlSecondsAfterFinished", 0) < 0:
        errs.append(f"{where}: ttlSecondsAfterFinished must be >= 0")
    selector = spec.get("clusterSelector") or {}
    if not spec.get("rayClusterSpec") and not selector:
        errs.append(f"{where}: one of rayClusterSpec or clusterSelector must be set")
    if selector and not selector.get("ray.io/cluster"):
        errs.append(f"{where}: clusterSelector needs ray.io/cluster")
    if spec.get("submissionMode") not in (None, "K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"):
        errs.append(f"{where}: unknown submissionMode {spec.get('submissionMode')!r}")
    if spec.get("activeDeadlineSeconds") is not None and spec["activeDeadlineSeconds"] <= 0:
        errs.append(f"{where}: activeDeadlineSeconds must be positive")
    if spec.get("backoffLimit") is not None and spec["backoffLimit"] < 0:
        errs.append(f"{where}: backoffLimit must be >= 0")
    if spec.get("rayClusterSpec"):
        errs += _cluster_spec_errors(spec["rayClusterSpec"], f"{where}: rayClusterSpec")
    try:
        rt = yaml.safe_load(spec.get("runtimeEnvYAML") or "") or {}
    except yaml.YAMLError as e:
        errs.append(f"{where}: runtimeEnvYAML is not YAML: {e}")
    else:
        # Ray checks that a local working_dir exists where `ray job submit` runs: in the
        # submitter Pod, i.e. inside the image. The image's WORKDIR stands in for it here
        # (test_rayjob_lifecycle checks that working_dir is that WORKDIR).
        if isinstance(rt, dict) and rt.get("working_dir") == _dockerfile_workdir():
            rt = {**rt, "working_dir": str(ROOT)}
        errs += _runtime_env_errors(rt, f"{where}: runtimeEnvYAML")
    return errs


def manifest_errors(doc: dict, crds: dict) -> list[str]:
    """Everything the API server and the KubeRay operator would reject, as messages."""
    kind, api = doc.get("kind"), doc.get("apiVersion")
    if kind not in crds:
        return [f"kind {kind!r} is not one of the KubeRay CRDs {sorted(crds)}"]
    if api not in crds[kind]:
        return [f"apiVersion {api!r} is not served for {kind} (served: {sorted(crds[kind])})"]
    errs = [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in crds[kind][api].iter_errors(doc)
    ]
    if errs:
        return errs
    where = f"{kind}/{doc['metadata']['name']}"
    errs += _labels_errors(doc["metadata"].get("labels", {}), f"{where} metadata")
    if kind == "RayCluster":
        if len(doc["metadata"]["name"]) > MAX_RAYCLUSTER_NAME:
            errs.append(f"{where}: RayCluster name longer than {MAX_RAYCLUSTER_NAME}")
        errs += _cluster_spec_errors(doc["spec"], where)
    elif kind == "RayJob":
        errs += _rayjob_errors(doc, where)
    return errs


def _accelerator(group: dict) -> str:
    limits = group["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
    if "nvidia.com/gpu" in limits:
        return "gpu"
    if "google.com/tpu" in limits:
        return "tpu"
    return "cpu"


def _policy_errors(spec: dict, where: str, service_account: str) -> list[str]:
    """This project's deployment policy for a RayCluster spec (also inside RayJobs)."""
    errs = []
    if spec.get("enableInTreeAutoscaling") is not True:
        errs.append(f"{where}: enableInTreeAutoscaling must be true")
    if not spec.get("autoscalerOptions", {}).get("idleTimeoutSeconds"):
        errs.append(f"{where}: autoscalerOptions.idleTimeoutSeconds must be set")
    head = spec["headGroupSpec"]
    groups = [("head", "cpu", head)] + [
        (g["groupName"], _accelerator(g), g) for g in spec.get("workerGroupSpecs", [])
    ]
    if not spec.get("workerGroupSpecs"):
        errs.append(f"{where}: no worker groups")
    for name, acc, g in groups:
        pod = g["template"]["spec"]
        c = pod["containers"][0]
        env = _env(c)
        want = {**COMMON_ENV, "JAX_PLATFORMS": JAX_PLATFORM[acc], **(GPU_ENV if acc == "gpu" else {})}
        for k, v in want.items():
            if env.get(k) != v:
                errs.append(f"{where}: {name}: env {k} should be {v!r}, is {env.get(k)!r}")
        if not str(env.get("JAX_COMPILATION_CACHE_DIR", "")).startswith("gs://"):
            errs.append(f"{where}: {name}: JAX_COMPILATION_CACHE_DIR should be on gs://")
        if acc == "gpu" and "XLA_PYTHON_CLIENT_MEM_FRACTION" not in env:
            errs.append(f"{where}: {name}: XLA_PYTHON_CLIENT_MEM_FRACTION missing")
        sc = c.get("securityContext", {})
        if sc.get("runAsNonRoot") is not True or sc.get("runAsUser", 0) == 0 or sc.get("allowPrivilegeEscalation") is not False:
            errs.append(f"{where}: {name}: must run as non-root without privilege escalation")
        if pod.get("serviceAccountName") != service_account:
            errs.append(f"{where}: {name}: serviceAccountName should be {service_account!r}")
        if any(SECRET_WORDS.search(k) for k in env):
            errs.append(f"{where}: {name}: credential-like env var in {sorted(env)}")
        if name == "head":
            continue
        if not (isinstance(g.get("minReplicas"), int) and isinstance(g.get("maxReplicas"), int)):
            errs.append(f"{where}: {name}: minReplicas and maxReplicas must be set")
        sel = pod.get("nodeSelector", {})
        limits, requests = c["resources"].get("limits", {}), c["resources"].get("requests", {})
        if acc == "gpu":
            if not sel.get("cloud.google.com/gke-accelerator"):
                errs.append(f"{where}: {name}: GPU group needs nodeSelector cloud.google.com/gke-accelerator")
            if str(limits["nvidia.com/gpu"]) != str(requests.get("nvidia.com/gpu", limits["nvidia.com/gpu"])):
                errs.append(f"{where}: {name}: GPU requests must equal limits")
        if acc == "tpu":
            acc_sel, topo = sel.get("cloud.google.com/gke-tpu-accelerator"), sel.get("cloud.google.com/gke-tpu-topology")
            if not acc_sel or not topo:
                errs.append(f"{where}: {name}: TPU group needs gke-tpu-accelerator and gke-tpu-topology nodeSelectors")
            elif "numOfHosts" not in g:
                errs.append(f"{where}: {name}: TPU group must state numOfHosts")
            else:
                chips = 1
                for d in topo.split("x"):
                    chips *= int(d)
                per_pod = int(limits["google.com/tpu"])
                if per_pod * g["numOfHosts"] != chips:
                    errs.append(
                        f"{where}: {name}: topology {topo} has {chips} chips but numOfHosts "
                        f"{g['numOfHosts']} x google.com/tpu {per_pod} = {per_pod * g['numOfHosts']}"
                    )
        if acc in ("gpu", "tpu") and sel.get("cloud.google.com/gke-spot") != "true":
            errs.append(f"{where}: {name}: accelerator workers are meant to run on Spot nodes")
    return errs


# ---------------------------------------------------------------------------------------------
# KubeRay manifests
# ---------------------------------------------------------------------------------------------


def test_kuberay_files_present():
    names = {p.name for p in KUBERAY_DIR.glob("*.yaml")}
    assert {"raycluster.yaml", "rayjob-calibrate.yaml", "rayjob-infer.yaml"} <= names
    kinds = [d.get("kind") for _, d in kuberay_docs()]
    assert kinds.count("RayCluster") >= 1 and kinds.count("RayJob") >= 2


@pytest.mark.parametrize("name,doc", [(n, d) for n, d in kuberay_docs() if d.get("apiVersion", "").startswith("ray.io/")],
                         ids=lambda x: x if isinstance(x, str) else "")
def test_kuberay_manifest_valid(name, doc, crds):
    assert manifest_errors(doc, crds) == [], name


def _service_account_name() -> str:
    sas = [d for _, d in kuberay_docs() if d.get("kind") == "ServiceAccount"]
    assert len(sas) == 1, "deploy/kuberay must define exactly one ServiceAccount"
    return sas[0]["metadata"]["name"]


def test_kuberay_service_account_uses_workload_identity():
    sas = [d for _, d in kuberay_docs() if d.get("kind") == "ServiceAccount"]
    assert len(sas) == 1
    sa = sas[0]
    assert sa["apiVersion"] == "v1"
    assert set(sa) <= {"apiVersion", "kind", "metadata"}, "no secrets/imagePullSecrets: credentials come from Workload Identity"
    jsonschema.validate(sa["metadata"], OBJECT_META)
    gsa = sa["metadata"].get("annotations", {}).get("iam.gke.io/gcp-service-account", "")
    assert re.fullmatch(r"[a-z][-a-z0-9]+@[A-Za-z0-9_-]+\.iam\.gserviceaccount\.com", gsa), gsa


@pytest.mark.parametrize("name,doc", ray_docs("RayCluster") + ray_docs("RayJob"), ids=lambda x: x if isinstance(x, str) else "")
def test_kuberay_policy(name, doc):
    spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
    assert _policy_errors(spec, name, _service_account_name()) == []


def test_raycluster_has_gpu_and_tpu_groups():
    (name, rc), = ray_docs("RayCluster")
    accs = {_accelerator(g) for g in rc["spec"]["workerGroupSpecs"]}
    assert {"gpu", "tpu"} <= accs, accs


@pytest.mark.parametrize("name,doc", ray_docs("RayJob"), ids=lambda x: x if isinstance(x, str) else "")
def test_rayjob_lifecycle(name, doc):
    spec = doc["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec.get("ttlSecondsAfterFinished"), int) and spec["ttlSecondsAfterFinished"] > 0
    assert spec.get("submissionMode") == "K8sJobMode"
    assert shlex.split(spec["entrypoint"])[0] == "differland"
    # A local working_dir is uploaded by `ray job submit` in the submitter Pod, which runs the
    # head image: it must be a directory the Dockerfile creates.
    rt = yaml.safe_load(spec.get("runtimeEnvYAML") or "") or {}
    if "working_dir" in rt and not re.match(r"^[a-z0-9+]+://", rt["working_dir"]):
        assert rt["working_dir"] == _dockerfile_workdir(), "working_dir must be the image's WORKDIR"
    # The submitter uses the head image; so does the job driver.
    assert spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]


@pytest.mark.parametrize("name,doc", ray_docs("RayJob"), ids=lambda x: x if isinstance(x, str) else "")
def test_rayjob_cluster_matches_raycluster(name, doc):
    """The RayJobs embed copies of raycluster.yaml's groups: the copies must not drift."""
    (_, rc), = ray_docs("RayCluster")
    ref, got = rc["spec"], doc["spec"]["rayClusterSpec"]
    for key in ("rayVersion", "enableInTreeAutoscaling", "autoscalerOptions", "headGroupSpec"):
        assert got.get(key) == ref.get(key), f"{name}: {key} differs from raycluster.yaml"
    ref_groups = {g["groupName"]: g for g in ref["workerGroupSpecs"]}
    for g in got["workerGroupSpecs"]:
        assert g["groupName"] in ref_groups, f"{name}: group {g['groupName']} not in raycluster.yaml"
        r = ref_groups[g["groupName"]]
        for key in ("template", "rayStartParams", "numOfHosts"):
            assert g.get(key) == r.get(key), f"{name}: {g['groupName']}.{key} differs from raycluster.yaml"


# -- deliberately broken manifests -------------------------------------------------------------


def _rc():
    (_, rc), = ray_docs("RayCluster")
    return copy.deepcopy(rc)


def _job():
    (_, job), *_ = ray_docs("RayJob")
    return copy.deepcopy(job)


def _gpu(doc):
    spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
    return next(g for g in spec["workerGroupSpecs"] if _accelerator(g) == "gpu")


def _rename(d: dict, old: str, new: str):
    d[new] = d.pop(old)


BROKEN_TEXT = """
apiVersion: ray.io/v1
kind: RayCluster
metadata:
  name: broken
spec:
  enableInTreeAutoscaling: true
  headGroupSpec:
    rayStartParams: {}
    template:
      spec:
        containers:
          - name: ray-head
            image: differland:cpu
  workerGroupSpecs:
    - groupName: gpu
      minReplicas: 0
      maxReplicas: 4
      replica: 1            # typo: the field is `replicas`
      rayStartParams: {}
      template:
        spec:
          containers:
            - name: ray-worker
              image: differland:cuda
"""


def _set(path, value):
    def mutate(doc):
        node = doc
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value
    return mutate


BROKEN = {
    # unknown fields (k8s would prune them silently)
    "typo-spec-field": (_rc, lambda d: _rename(d["spec"], "enableInTreeAutoscaling", "enableInTreeAutoscalling")),
    "typo-group-field": (_rc, lambda d: _rename(_gpu(d), "replicas", "replica")),
    "typo-pod-field": (_rc, lambda d: _rename(_gpu(d)["template"]["spec"], "nodeSelector", "nodeSelectr")),
    "typo-container-field": (_rc, lambda d: _rename(_gpu(d)["template"]["spec"]["containers"][0], "imagePullPolicy", "imagePullPolice")),
    "typo-metadata-field": (_rc, lambda d: d["metadata"].update(lables={"a": "b"})),
    "typo-rayjob-field": (_job, lambda d: _rename(d["spec"], "shutdownAfterJobFinishes", "shutdownAfterJobFinish")),
    # wrong types
    "replicas-as-string": (_rc, lambda d: _gpu(d).update(maxReplicas="16")),
    "replicas-over-int32": (_rc, lambda d: _gpu(d).update(maxReplicas=2**40)),
    "nodeselector-bool": (_rc, lambda d: _gpu(d)["template"]["spec"]["nodeSelector"].update({"cloud.google.com/gke-spot": True})),
    "cpu-as-list": (_rc, lambda d: _gpu(d)["template"]["spec"]["containers"][0]["resources"]["limits"].update(cpu=[4])),
    "shutdown-as-string": (_job, lambda d: d["spec"].update(shutdownAfterJobFinishes="yes")),
    "enum-upscaling-mode": (_rc, lambda d: d["spec"]["autoscalerOptions"].update(upscalingMode="Fast")),
    # missing required fields
    "missing-groupName": (_rc, lambda d: _gpu(d).pop("groupName")),
    "missing-headGroupSpec": (_rc, lambda d: d["spec"].pop("headGroupSpec")),
    "missing-container-name": (_rc, lambda d: _gpu(d)["template"]["spec"]["containers"][0].pop("name")),
    "missing-metadata-name": (_rc, lambda d: d["metadata"].pop("name")),
    # wrong identity
    "wrong-apiVersion": (_rc, lambda d: d.update(apiVersion="ray.io/v2")),
    "wrong-kind": (_rc, lambda d: d.update(kind="RayClusterr")),
    "bad-name": (_rc, lambda d: d["metadata"].update(name="Differland_GPU")),
    # semantics the operator rejects
    "duplicate-containers": (_rc, lambda d: _gpu(d)["template"]["spec"]["containers"].append(
        copy.deepcopy(_gpu(d)["template"]["spec"]["containers"][0]))),
    "ttl-without-shutdown": (_job, lambda d: d["spec"].update(shutdownAfterJobFinishes=False)),
    "no-cluster": (_job, lambda d: d["spec"].pop("rayClusterSpec")),
    "restart-policy-with-autoscaler-v2": (_rc, lambda d: _gpu(d)["template"]["spec"].update(restartPolicy="Always")),
    "min-above-max": (_rc, lambda d: _gpu(d).update(minReplicas=20)),
    "runtime-env-typo": (_job, lambda d: d["spec"].update(runtimeEnvYAML="working_dirr: /app\n")),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_manifest_fails(case, crds):
    make, mutate = BROKEN[case]
    doc = make()
    assert manifest_errors(doc, crds) == [], "the unmodified manifest must be valid"
    mutate(doc)
    assert manifest_errors(doc, crds), f"{case}: a broken manifest passed validation"


def test_broken_manifest_text_fails(crds):
    doc = yaml.safe_load(BROKEN_TEXT)
    errs = manifest_errors(doc, crds)
    assert any("replica" in e for e in errs), errs
    fixed = yaml.safe_load(BROKEN_TEXT.replace("replica: 1", "replicas: 1"))
    assert manifest_errors(fixed, crds) == []


def test_int_or_string_quantities_accepted(crds):
    """cpu: 4 and cpu: "4" are both valid quantities (x-kubernetes-int-or-string)."""
    for value in (4, "4", "3500m"):
        doc = _rc()
        _gpu(doc)["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = value
        _gpu(doc)["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = value
        assert manifest_errors(doc, crds) == [], value


def test_policy_catches_missing_gpu_memory_setting():
    doc = _rc()
    c = _gpu(doc)["template"]["spec"]["containers"][0]
    c["env"] = [e for e in c["env"] if e["name"] != "XLA_PYTHON_CLIENT_PREALLOCATE"]
    assert _policy_errors(doc["spec"], "rc", _service_account_name())


# ---------------------------------------------------------------------------------------------
# Ray cluster launcher configs
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ray_schema():
    import ray.autoscaler

    path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    schema = json.loads(path.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return schema


def test_launcher_configs_present():
    assert {p.name for p in LAUNCHER_CONFIGS} >= {"gcp-gpu.yaml", "gcp-tpu.yaml"}


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_launcher_config_schema(path, ray_schema):
    config = _load(path)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft7Validator(ray_schema).iter_errors(config)]
    assert errors == []


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_launcher_config_prepare_like_ray_up(path):
    """`ray up` fills in defaults and validates before contacting the cloud; do the same."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(_load(path))
    validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_broken_launcher_config_fails(ray_schema):
    config = _load(DEPLOY / "ray" / "gcp-gpu.yaml")
    v = jsonschema.Draft7Validator(ray_schema)
    for mutate in (
        lambda c: c.update(idle_timout_minutes=5),                                    # typo
        lambda c: _rename(c["available_node_types"]["gpu_a100_spot"], "min_workers", "min_worker"),
        lambda c: c["available_node_types"]["gpu_a100_spot"].update(max_workers="16"),
        lambda c: c["available_node_types"]["gpu_a100_spot"]["resources"].update(GPU=0.5),
        lambda c: c["available_node_types"]["gpu_a100_spot"].pop("node_config"),
    ):
        broken = copy.deepcopy(config)
        mutate(broken)
        assert list(v.iter_errors(broken)), "broken launcher config passed the Ray schema"


def _gcp_node_kind(node_config: dict) -> str:
    """Ray's GCP get_node_type/_validate_tpu_config (the module itself needs Google API
    clients that are not installed here), using Ray's own TPU helpers."""
    from ray._private.accelerators import TPUAcceleratorManager

    if "machineType" in node_config:
        return "compute"
    assert "acceleratorType" in node_config or "acceleratorConfig" in node_config, node_config
    assert not ("acceleratorType" in node_config and "acceleratorConfig" in node_config)
    assert "acceleratorType" in node_config, "use acceleratorType (single-host slices)"
    assert TPUAcceleratorManager.is_valid_tpu_accelerator_type(node_config["acceleratorType"])
    assert node_config.get("runtimeVersion"), "TPU VMs need a runtimeVersion"
    return "tpu"


def _setup_text(config: dict, node_type: str) -> str:
    """The setup commands Ray really runs on a node of this type: setup_commands +
    head_setup_commands on the head; on workers setup_commands + worker_setup_commands, unless
    the node type has its own worker_setup_commands, which then replace both
    (StandardAutoscaler._get_node_type_specific_fields after util.merge_setup_commands)."""
    from ray.autoscaler._private.util import prepare_config

    prepared = prepare_config(copy.deepcopy(config))
    nt = prepared["available_node_types"][node_type]
    if node_type == prepared["head_node_type"]:
        cmds = prepared["head_setup_commands"]
    else:
        cmds = nt.get("worker_setup_commands", prepared["worker_setup_commands"])
    return "\n".join(cmds)


def _check_install_order(setup: str, where: str):
    """The venv must be created before deploy/install.sh installs into it."""
    venv = setup.find("uv venv")
    install = setup.find("deploy/install.sh")
    assert venv >= 0, f"{where}: the effective setup never creates the virtual environment"
    assert install > venv, f"{where}: install.sh runs before the virtual environment exists"


def _node_env(setup: str) -> dict:
    """Variables written to ~/.differland/node.env by the setup commands."""
    m = re.search(r"printf '([^']*)'\s*>\s*\$HOME/\.differland/node\.env", setup)
    assert m, "setup must write $HOME/.differland/node.env"
    return dict(line.split("=", 1) for line in m.group(1).split("\\n") if line)


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_launcher_config_gcp_semantics(path):
    from ray._private.accelerators import tpu as ray_tpu

    config = _load(path)
    assert config["provider"]["type"] == "gcp"
    assert config["provider"]["availability_zone"].startswith(config["provider"]["region"])
    assert config["idle_timeout_minutes"] > 0
    head_type = config["head_node_type"]
    head = config["available_node_types"][head_type]
    assert _gcp_node_kind(head["node_config"]) == "compute", "the head must be a Compute Engine VM"
    assert "scheduling" not in head["node_config"], "the head must be on-demand (not Spot)"
    workers = {k: v for k, v in config["available_node_types"].items() if k != head_type}
    assert workers
    assert sum(w.get("min_workers", 0) for w in workers.values()) <= config["max_workers"]
    for name, w in workers.items():
        nc = w["node_config"]
        assert isinstance(w.get("min_workers"), int) and isinstance(w.get("max_workers"), int), name
        assert 0 <= w["min_workers"] <= w["max_workers"] <= config["max_workers"], name
        kind = _gcp_node_kind(nc)
        setup = _setup_text(config, name)
        _check_install_order(setup, name)
        env = _node_env(setup)
        sa = nc.get("serviceAccounts", [])
        assert sa and "https://www.googleapis.com/auth/cloud-platform" in sa[0]["scopes"], \
            f"{name}: workers need a service account with a storage-capable scope"
        if kind == "tpu":
            assert nc.get("schedulingConfig", {}).get("spot") is True or nc.get("schedulingConfig", {}).get("preemptible") is True
            acc = nc["acceleratorType"]
            chips = int(acc.split("-")[1]) // ray_tpu.get_tpu_cores_per_chip(acc)
            assert chips <= ray_tpu.get_num_tpu_visible_chips_per_host(acc), f"{name}: {acc} is multi-host"
            assert w["resources"].get("TPU") == chips, f"{name}: resources TPU should be {chips}"
            assert env.get("JAX_PLATFORMS") == "tpu"
            assert "install.sh tpu" in setup
        else:
            gpus = w["resources"].get("GPU", 0)
            assert gpus >= 1, f"{name}: compute worker without GPUs"
            sched = nc.get("scheduling", {})
            assert sched.get("provisioningModel") == "SPOT" or sched.get("preemptible") is True, name
            assert sched.get("onHostMaintenance") == "TERMINATE", f"{name}: GPU VMs must TERMINATE on maintenance"
            attached = sum(a.get("acceleratorCount", 0) for a in nc.get("guestAccelerators", []))
            if not re.match(r"^(a2|a3|g2)-", nc["machineType"]):
                assert attached == gpus, f"{name}: guestAccelerators count != resources GPU"
            assert env.get("JAX_PLATFORMS") == "cuda"
            assert env.get("XLA_PYTHON_CLIENT_PREALLOCATE") == "false"
            assert "install.sh cuda" in setup
        assert env.get("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT") == "false"
    head_setup = _setup_text(config, head_type)
    _check_install_order(head_setup, head_type)
    assert _node_env(head_setup).get("JAX_PLATFORMS") == "cpu"
    assert "install.sh cpu" in head_setup
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = "\n".join(config[key])
        assert ". $HOME/.differland/node.env" in start and "set -a" in start, f"{key} must export node.env"
        assert "--dashboard-host=0.0.0.0" not in start, "do not expose the Jobs API publicly"


def test_node_type_setup_override_is_caught():
    """A node type's own worker_setup_commands replace the common setup: caught."""
    config = _load(DEPLOY / "ray" / "gcp-gpu.yaml")
    config["available_node_types"]["gpu_a100_spot"]["worker_setup_commands"] = list(config["worker_setup_commands"])
    with pytest.raises(AssertionError, match="virtual environment"):
        _check_install_order(_setup_text(config, "gpu_a100_spot"), "gpu_a100_spot")


@pytest.mark.parametrize("path", RUNTIME_ENV_FILES, ids=lambda p: p.name)
def test_runtime_env_file(path):
    assert _runtime_env_errors(_load(path), path.name) == []
    env = _load(path)["env_vars"]
    assert "JAX_PLATFORMS" not in env, "JAX_PLATFORMS is per node (CPU head, GPU/TPU workers)"
    for k, v in {**COMMON_ENV, **GPU_ENV}.items():
        assert env.get(k) == v, k
    assert env.get("JAX_COMPILATION_CACHE_DIR", "").startswith("gs://")


def _runtime_env_errors(rt: dict, where: str) -> list[str]:
    from ray.runtime_env import RuntimeEnv

    if not isinstance(rt, dict):
        return [f"{where}: runtime env must be a mapping"]
    unknown = set(rt) - set(RuntimeEnv.known_fields)
    if unknown:
        return [f"{where}: unknown runtime_env fields {sorted(unknown)}"]
    try:
        RuntimeEnv(**rt)
    except Exception as e:  # Ray raises TypeError/ValueError with a precise message
        return [f"{where}: {e}"]
    return []


# ---------------------------------------------------------------------------------------------
# Container image
# ---------------------------------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text()
    out, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue
        buf += line.rstrip()
        if buf.endswith("\\"):
            buf = buf[:-1] + " "
            continue
        op, _, rest = buf.strip().partition(" ")
        out.append((op.upper(), rest.strip()))
        buf = ""
    return out


def _dockerfile_workdir() -> str:
    return [rest for op, rest in _dockerfile_instructions() if op == "WORKDIR"][-1]


def _env_pairs(rest: str) -> dict:
    tokens = shlex.split(rest)
    if len(tokens) >= 2 and "=" not in tokens[0]:
        return {tokens[0]: " ".join(tokens[1:])}
    return dict(t.split("=", 1) for t in tokens)


def test_dockerfile_variants_and_user():
    ins = _dockerfile_instructions()
    ops = [op for op, _ in ins]
    assert ops.count("FROM") == 1 and ops[0] in ("ARG", "FROM")
    args = {}
    for op, rest in ins:
        if op == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
    assert args.get("VARIANT") == "cpu", "ARG VARIANT must default to cpu"
    run_text = "\n".join(rest for op, rest in ins if op == "RUN")
    assert re.search(r"install\.sh\s+\"?\$\{?VARIANT\}?\"?", run_text), "the VARIANT must select the install"
    # Non-root: the last USER comes after the last RUN and is not root.
    users = [i for i, (op, _) in enumerate(ins) if op == "USER"]
    runs = [i for i, (op, _) in enumerate(ins) if op == "RUN"]
    assert users and users[-1] > runs[-1], "USER must follow every RUN"
    user = ins[users[-1]][1].split(":")[0]
    assert user not in ("root", "0"), "the image must not run as root"
    # No credentials: no secret-looking ENV/ARG names, no credential files copied in.
    for op, rest in ins:
        if op == "ENV":
            for k, v in _env_pairs(rest).items():
                assert not SECRET_WORDS.search(k), f"ENV {k} looks like a credential"
                assert "GOOGLE_APPLICATION_CREDENTIALS" not in k
                assert not re.search(r"\.json$|\.pem$|\.key$", v), f"ENV {k}={v} points to a key file"
        if op == "ARG":
            assert not SECRET_WORDS.search(rest.split("=")[0]), f"ARG {rest} looks like a credential"
        if op in ("COPY", "ADD"):
            srcs = [t for t in shlex.split(rest) if not t.startswith("--")][:-1]
            for src in srcs:
                assert not SECRET_WORDS.search(src), f"{op} {src} looks like a credential"
                assert (ROOT / src).exists(), f"{op} source {src} does not exist in the repository"
            assert op != "ADD" or not re.search(r"https?://", rest), "no remote ADD"
    # JAX environment in the image defaults
    env = {}
    for op, rest in ins:
        if op == "ENV":
            env.update(_env_pairs(rest))
    assert env.get("JAX_PLATFORMS") in ("${VARIANT}", "$VARIANT")
    assert env.get("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT") == "false"
    assert env.get("XLA_PYTHON_CLIENT_PREALLOCATE") == "false"
    # GKE mounts the NVIDIA driver libraries here; slim bases do not search it by default.
    assert "/usr/local/nvidia/lib64" in env.get("LD_LIBRARY_PATH", "")


def test_dockerignore_excludes_credentials():
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for pattern in (".git", "**/*.pem", "**/*credentials*", ".env", "**/*.zarr"):
        assert pattern in ignore, pattern


@pytest.mark.parametrize("variant,extra", [("cpu", "[cloud]"), ("cuda", "[cuda,cloud]"),
                                           ("tpu", "[tpu,cloud]")])
def test_install_script_variants(variant, extra):
    out = subprocess.run(
        ["sh", str(DEPLOY / "install.sh"), variant, "/src"],
        env={**os.environ, "DRY_RUN": "1", "RAY_VERSION": _ray_pin()},
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.split()
    assert f"/src{extra}" in out, out
    assert f"ray[default,data]=={_ray_pin()}" in out
    assert any(t.startswith("etils[") and "epath-gcs" in t for t in out)
    assert out[out.index("-c") + 1] == "/src/constraints.txt"  # the tested versions


def test_install_script_rejects_unknown_variant():
    res = subprocess.run(["sh", str(DEPLOY / "install.sh"), "rocm"], env={**os.environ, "DRY_RUN": "1"},
                         capture_output=True, text=True, timeout=30)
    assert res.returncode != 0 and "unknown VARIANT" in res.stderr


@lru_cache(maxsize=None)
def _ray_pin() -> str:
    args = dict(rest.split("=", 1) for op, rest in _dockerfile_instructions() if op == "ARG" and "=" in rest)
    return args["RAY_VERSION"]


def test_ray_version_pinned_consistently():
    pin = _ray_pin()
    found = {"Dockerfile": pin}
    script = (DEPLOY / "install.sh").read_text()
    found["install.sh"] = re.search(r"RAY_VERSION:-([0-9.]+)", script).group(1)
    for path in LAUNCHER_CONFIGS:
        for v in re.findall(r"RAY_VERSION=([0-9.]+)", path.read_text()):
            found[f"{path.name}"] = v
            assert v == pin, path.name
    for name, doc in ray_docs("RayCluster") + ray_docs("RayJob"):
        spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
        found[name] = spec["rayVersion"]
    assert set(found.values()) == {pin}, found


def test_template_values_consistent():
    """One `sed` per template value configures everything: no stray bucket or project names."""
    files = [p for p in DEPLOY.rglob("*") if p.is_file()] + [DOCS_CLOUD]
    for path in files:
        text = path.read_text()
        for bucket in re.findall(r"gs://([A-Za-z0-9_.-]+)", text):
            assert bucket == BUCKET_PLACEHOLDER, f"{path.name}: gs://{bucket} (use gs://{BUCKET_PLACEHOLDER})"
        for project in re.findall(r"@([A-Za-z0-9_-]+)\.iam\.gserviceaccount\.com", text):
            assert project == PROJECT_PLACEHOLDER, f"{path.name}: project {project}"
        for project in re.findall(r"docker\.pkg\.dev/([A-Za-z0-9_-]+)/", text):
            assert project == PROJECT_PLACEHOLDER, f"{path.name}: project {project}"


# ---------------------------------------------------------------------------------------------
# Command lines in manifests, launcher configs and docs
# ---------------------------------------------------------------------------------------------


def _shell_lines(text: str) -> list[str]:
    """Join backslash continuations; drop prompts."""
    out, buf = [], ""
    for line in text.splitlines():
        line = line.rstrip()
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        if buf.strip():
            out.append(re.sub(r"^\s*\$\s+", "", buf).strip())
        buf = ""
    return out


def _doc_code_lines() -> list[tuple[str, str]]:
    text = DOCS_CLOUD.read_text()
    blocks = re.findall(r"```(?:bash|sh|shell|console)?\n(.*?)```", text, flags=re.S)
    return [("docs/cloud.md", line) for b in blocks for line in _shell_lines(b) if not line.startswith("#")]


def _yaml_comment_lines() -> list[tuple[str, str]]:
    """Usage examples in deploy/ file headers: comment lines indented by 3+ spaces."""
    out = []
    for path in sorted(DEPLOY.rglob("*")):
        if not path.is_file():
            continue
        comment = "\n".join(m.group(1) for m in re.finditer(r"^#   (.*)$", path.read_text(), flags=re.M))
        out += [(str(path.relative_to(ROOT)), line) for line in _shell_lines(comment)]
    return out


def _segments(line: str) -> list[list[str]]:
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        return []
    segs, cur = [], []
    for t in tokens:
        if t in ("&&", "||", ";", "|"):
            segs.append(cur)
            cur = []
        else:
            cur.append(t)
    segs.append(cur)
    return [s for s in segs if s]


def collect_commands():
    """(source, argv) for every differland / ray command line the deployment mentions."""
    sources = list(_doc_code_lines()) + _yaml_comment_lines()
    for name, doc in ray_docs("RayJob"):
        sources.append((f"deploy/kuberay/{name}", doc["spec"]["entrypoint"]))
    found = []
    for src, line in sources:
        for seg in _segments(line):
            while seg and re.match(r"^[A-Z_][A-Z0-9_]*=", seg[0]):  # VAR=value prefixes
                seg = seg[1:]
            if seg[:3] == ["python", "-m", "differland_dist.cli.main"]:
                seg = ["differland", *seg[3:]]
            if seg and seg[0] in ("differland", "ray"):
                found.append((src, seg))
    return found


def _differland_commands():
    """(source, argv without the program name) of every `differland ...` command line,
    including the entrypoints of `ray job submit ... -- differland ...`."""
    out = []
    for src, argv in collect_commands():
        if argv[:3] == ["ray", "job", "submit"] and "--" in argv:
            argv = argv[argv.index("--") + 1:]
        if argv[:1] == ["differland"] and argv[1:]:
            out.append((src, argv[1:]))
    return out


def _repo_paths(argv: list[str]) -> list[str]:
    return [t for t in argv if re.match(r"^(configs|deploy|docs)/", t)]


@pytest.fixture(scope="session")
def cli():
    from differland_dist.cli import main as cli_main

    return cli_main


def test_commands_found():
    subs = {a[0] for _, a in _differland_commands()}
    assert {"calibrate", "infer"} <= subs, subs
    assert any(a[:3] == ["ray", "job", "submit"] for _, a in collect_commands())
    assert any(a[:2] == ["ray", "up"] for _, a in collect_commands())


@pytest.mark.parametrize("sub", sorted({a[0] for _, a in _differland_commands()}))
def test_differland_subcommand_help(sub, cli):
    """`differland SUB --help` exits 0 (fails until the subcommand exists)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()) as err:
        with pytest.raises(SystemExit) as exc:
            cli.main([sub, "--help"])
    assert exc.value.code == 0, f"`differland {sub} --help` failed: {err.getvalue()[-500:]}"
    assert sub in out.getvalue()


@pytest.mark.parametrize("src,argv", _differland_commands(), ids=lambda x: x if isinstance(x, str) else " ".join(x)[:80])
def test_differland_command_parses(src, argv, cli):
    """The whole command line is accepted by the real parser (a dry run of the arguments), and
    the repository paths it names (configs/...) exist."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = cli.build_parser().parse_args(argv)
    except SystemExit as e:
        if not ("--help" in argv and e.code == 0):
            pytest.fail(f"{src}: `differland {' '.join(argv)}` rejected: {err.getvalue()[-500:]}")
    else:
        assert getattr(args, "_run", None), f"{src}: {argv[0]} is not a subcommand"
    missing = [p for p in _repo_paths(argv) if not (ROOT / p).exists()]
    assert missing == [], f"{src}: `differland {' '.join(argv)}` references missing {missing}"


def _ray_command(argv: list[str]):
    import click
    from ray.scripts.scripts import cli as ray_cli

    cmd, rest, name = ray_cli, argv[1:], "ray"
    while isinstance(cmd, click.Group) and rest and rest[0] in cmd.commands:
        name, cmd, rest = rest[0], cmd.commands[rest[0]], rest[1:]
    assert not isinstance(cmd, click.Group), f"`{' '.join(argv)}` is not a complete ray command"
    return cmd.make_context(name, list(rest)).params


@pytest.mark.parametrize("src,argv", [(s, a) for s, a in collect_commands() if a[0] == "ray"],
                         ids=lambda x: x if isinstance(x, str) else " ".join(x)[:80])
def test_ray_command_parses(src, argv):
    params = _ray_command(argv)
    if argv[1:3] == ["job", "submit"]:
        from ray.dashboard.modules.dashboard_sdk import parse_runtime_env_args

        cwd = os.getcwd()
        try:
            os.chdir(ROOT)
            rt = parse_runtime_env_args(
                runtime_env=params.get("runtime_env"),
                runtime_env_json=params.get("runtime_env_json"),
                working_dir=params.get("working_dir"),
            )
        finally:
            os.chdir(cwd)
        assert _runtime_env_errors(rt, src) == []
        if "working_dir" in rt and "://" not in rt["working_dir"]:
            assert (ROOT / rt["working_dir"]).is_dir()
        env = rt.get("env_vars", {})
        assert "JAX_PLATFORMS" not in env, f"{src}: JAX_PLATFORMS is per node, not per job"
        # Every documented submission carries the job-wide environment.
        for k, v in COMMON_ENV.items():
            assert env.get(k) == v, f"{src}: runtime env lacks {k}={v}"
        assert params["entrypoint"], f"{src}: job without entrypoint"
    if argv[1] in ("up", "down", "dashboard", "attach", "exec", "rsync-up"):
        assert (ROOT / params["cluster_config_file"]).exists(), params["cluster_config_file"]
    missing = [p for p in _repo_paths(argv) if not (ROOT / p).exists()]
    assert missing == [], f"{src}: references missing {missing}"


# ---------------------------------------------------------------------------------------------
# docs/cloud.md
# ---------------------------------------------------------------------------------------------


def test_cloud_doc_sections():
    text = DOCS_CLOUD.read_text()
    for needle in (
        "Throughput per device: see docs/benchmarks.md",
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT",
        "XLA_PYTHON_CLIENT_PREALLOCATE",
        "XLA_PYTHON_CLIENT_MEM_FRACTION",
        "JAX_PLATFORMS",
        "JAX_COMPILATION_CACHE_DIR",
        "--resume",
        "workload identity",
        "5.5e7",
    ):
        assert needle.lower() in text.lower(), needle
    # The compilation cache's trust caveat is stated.
    assert re.search(r"write.{0,80}cache.{0,200}(run|execute)", text, flags=re.I | re.S)
    # Every deploy file is mentioned in the guide.
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            assert str(path.relative_to(ROOT)) in text, f"docs/cloud.md does not mention {path.relative_to(ROOT)}"


# ---------------------------------------------------------------------------------------------
# Shell syntax of every command the deployment runs
# ---------------------------------------------------------------------------------------------


def _shell_snippets():
    out = [("deploy/install.sh", (DEPLOY / "install.sh").read_text())]
    for path in LAUNCHER_CONFIGS:
        config = _load(path)
        lists = [config.get(k, []) for k in ("setup_commands", "head_setup_commands", "worker_setup_commands",
                                              "head_start_ray_commands", "worker_start_ray_commands",
                                              "initialization_commands")]
        lists += [nt.get("worker_setup_commands", []) for nt in config["available_node_types"].values()]
        out += [(path.name, cmd) for cmds in lists for cmd in cmds]
    out += [("deploy/Dockerfile", rest) for op, rest in _dockerfile_instructions() if op == "RUN"]
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", DOCS_CLOUD.read_text(), flags=re.S)
    out += [("docs/cloud.md", b) for b in blocks]
    return out


def test_shell_syntax():
    bad = []
    for src, snippet in _shell_snippets():
        res = subprocess.run(["bash", "-n", "-c", snippet], capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            bad.append(f"{src}: {snippet[:80]!r}: {res.stderr.strip()}")
    assert bad == []
