"""Static checks of everything under infra/: Kubernetes and KubeRay manifests, the Ray cluster
launcher config, its IAM policy and the Dockerfile.

Every Kubernetes document, rendered as `infra/k8s/render.py` renders it, is validated against the
Kubernetes 1.34 schemas (the `kubernetes-validate` package, strict: unknown fields fail); RayCluster
and RayJob against a trimmed schema of KubeRay's ray.io/v1 CRDs (tests/fixtures), their pod
templates as core/v1 PodTemplates. Least privilege is checked on the parsed documents: every pod's
and container's securityContext, Pod Security labels, digests, and the NetworkPolicies by evaluating
them (which pod may open which port on which pod or address). Every cross reference is followed:
Secrets and keys (in the pod's namespace), ConfigMaps, volumes, Services to pods, images to
Dockerfile stages, entry points to files under jobs/ and configs/.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import importlib.util
import ipaddress
import json
import re
import shlex
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA = REPO_ROOT / "infra"
K8S = INFRA / "k8s"
DOCKERFILE = INFRA / "docker" / "Dockerfile"
LAUNCHER = INFRA / "cluster" / "aws-gpu.yaml"
SECRETS_EXAMPLE = K8S / "secrets.example.yaml"
IAM_POLICY = INFRA / "cluster" / "aws-iam-policy.json"
KUBERAY_SCHEMA = REPO_ROOT / "tests" / "fixtures" / "kuberay_v1_trimmed.schema.json"
RAY_NS, MLFLOW_NS = "sensorlm-ray", "sensorlm"
NAMESPACES = {RAY_NS, MLFLOW_NS}
K8S_VERSION = "1.34.0"  # the schemas kubernetes-validate checks against; also the PSA version label
# What render.py is given in these tests (any well-formed values).
RENDER_VALUES = {
    "REGISTRY": "registry.example.com/sensorlm",
    "SENSORLM_DIGEST": "1" * 64,
    "SENSORLM_MLFLOW_DIGEST": "sha256:" + "2" * 64,
    "POSTGRES_DIGEST": "3" * 64,
    "KUBE_API_CIDR": "10.0.0.1/32",
}

ALL_YAML = sorted(p for p in INFRA.rglob("*") if p.suffix in (".yaml", ".yml"))
K8S_YAML = sorted(p for p in ALL_YAML if K8S in p.parents)
KNOWN_KINDS = {
    ("v1", "Namespace"),
    ("v1", "Secret"),
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("v1", "PersistentVolumeClaim"),
    ("v1", "ResourceQuota"),
    ("v1", "LimitRange"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("batch/v1", "Job"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("ray.io/v1", "RayCluster"),
    ("ray.io/v1", "RayJob"),
}
CLUSTER_SCOPED = {"Namespace"}
# Environment variable names that hold credentials: their value must come from a Secret.
SECRET_ENV_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL", re.I)
# user:password@ in a URL, unless the password is a $(VAR) reference expanded by Kubernetes.
URL_CREDENTIALS = re.compile(r"://[^/\s:@]+:(?!\$\()[^@\s/]+@")


def _docs(path: Path) -> list[dict]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for i, d in enumerate(docs):
        assert isinstance(d, dict), f"{path}: document {i} is a {type(d).__name__}, not a mapping"
    return docs


def _render_module():
    name = "sensorlm_infra_render"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, K8S / "render.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


_RENDERED: dict[Path, list[dict]] = {}


def _rendered(path: Path) -> list[dict]:
    """The documents of `path` as render.py writes them (placeholders filled); the example Secrets as is."""
    if path not in _RENDERED:
        text = path.read_text()
        if path != SECRETS_EXAMPLE:
            text = _render_module().render_text(text, RENDER_VALUES, path.name)
        _RENDERED[path] = [d for d in yaml.safe_load_all(text) if d is not None]
    return _RENDERED[path]


def _all_k8s_docs() -> list[tuple[Path, dict]]:
    return [(p, d) for p in K8S_YAML for d in _rendered(p)]


def _by_kind(kind: str) -> list[tuple[Path, dict]]:
    return [(p, d) for p, d in _all_k8s_docs() if d.get("kind") == kind]


def _rel(p: Path) -> str:
    return str(p.relative_to(REPO_ROOT))


def _pod_specs(doc: dict) -> list[tuple[str, dict, dict]]:
    """(where, pod template metadata, pod spec) for every pod a workload or Ray resource describes."""
    kind, spec = doc["kind"], doc.get("spec", {})
    out = []
    if kind in ("Deployment", "StatefulSet", "Job"):
        tpl = spec["template"]
        out.append((f"{kind} {doc['metadata']['name']}", tpl.get("metadata", {}), tpl["spec"]))
    elif kind in ("RayCluster", "RayJob"):
        cluster = spec if kind == "RayCluster" else spec.get("rayClusterSpec")
        if cluster:
            head = cluster["headGroupSpec"]["template"]
            out.append((f"{kind} head", head.get("metadata", {}), head["spec"]))
            for g in cluster.get("workerGroupSpecs", []):
                out.append((f"{kind} group {g['groupName']}", g["template"].get("metadata", {}), g["template"]["spec"]))
        if kind == "RayJob" and spec.get("submitterPodTemplate"):
            tpl = spec["submitterPodTemplate"]
            out.append(("RayJob submitter", tpl.get("metadata", {}), tpl["spec"]))
    return out


def _containers(doc: dict):
    for where, _, pod in _pod_specs(doc):
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            yield where, pod, c


def _secret_keys() -> dict[tuple[str, str], set[str]]:
    """(namespace, name) -> keys of every Secret in the example (a pod reads only its own namespace's)."""
    keys: dict[tuple[str, str], set[str]] = {}
    for d in _docs(SECRETS_EXAMPLE):
        assert d["kind"] == "Secret", f"{_rel(SECRETS_EXAMPLE)}: holds a {d['kind']}; only Secrets belong there"
        keys[(d["metadata"]["namespace"], d["metadata"]["name"])] = set(d.get("stringData", {})) | set(d.get("data", {}))
    return keys


def _configmap_keys() -> dict[str, set[str]]:
    return {d["metadata"]["name"]: set(d.get("data", {})) for _, d in _by_kind("ConfigMap")}


def _dockerfile_stages() -> dict[str, str]:
    """stage name -> base image, from the FROM lines."""
    stages = {}
    for line in DOCKERFILE.read_text().splitlines():
        m = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line.strip(), re.I)
        if m:
            stages[m.group(2)] = m.group(1)
    return stages


def _documented_builds() -> dict[str, str]:
    """image name (without tag) -> Dockerfile target, from the build commands in its header."""
    builds = {}
    for line in DOCKERFILE.read_text().splitlines():
        m = re.search(r"docker build -f infra/docker/Dockerfile --target (\S+)\s+-t (\S+)", line)
        if m:
            builds[m.group(2).split(":")[0]] = m.group(1)
    return builds


def _run_stage_lines(stage: str) -> list[str]:
    lines, current = [], None
    for line in DOCKERFILE.read_text().splitlines():
        m = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line.strip(), re.I)
        if m:
            current = m.group(1)
        elif current == stage:
            lines.append(line)
    return lines


# ---------------------------------------------------------------------------------------------
# every YAML file


def test_infra_has_the_expected_files():
    names = {_rel(p) for p in ALL_YAML}
    for required in (
        "infra/k8s/raycluster.yaml",
        "infra/k8s/rayjob.yaml",
        "infra/k8s/mlflow.yaml",
        "infra/k8s/postgres.yaml",
        "infra/k8s/secrets.example.yaml",
        "infra/cluster/aws-gpu.yaml",
    ):
        assert required in names, f"{required} is missing"
    assert DOCKERFILE.is_file()


@pytest.mark.parametrize("path", ALL_YAML, ids=_rel)
def test_every_yaml_file_parses_to_mappings(path):
    docs = _docs(path)
    assert docs, f"{_rel(path)} holds no YAML document"


@pytest.mark.parametrize("path", K8S_YAML, ids=_rel)
def test_k8s_documents_have_identity_fields(path):
    for d in _docs(path):
        where = f"{_rel(path)}: {d.get('kind')} {d.get('metadata', {}).get('name')}"
        assert (d.get("apiVersion"), d.get("kind")) in KNOWN_KINDS, f"{where}: unexpected apiVersion/kind"
        assert d["metadata"].get("name"), f"{where}: metadata.name is missing"
        if d["kind"] not in CLUSTER_SCOPED:
            assert d["metadata"].get("namespace") in NAMESPACES, f"{where}: metadata.namespace must be one of {NAMESPACES}"


def test_names_are_unique_per_kind():
    seen = {}
    for path, d in _all_k8s_docs():
        key = (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])
        assert key not in seen, f"{key} is defined in {_rel(seen[key])} and {_rel(path)}"
        seen[key] = path


def test_ray_runs_apart_from_mlflow_and_postgres():
    where = {(d["kind"], d["metadata"]["name"]): d["metadata"].get("namespace") for _, d in _all_k8s_docs()}
    assert where[("RayCluster", "sensorlm")] == where[("RayJob", "sensorlm-train-vitb")] == RAY_NS
    assert where[("PersistentVolumeClaim", "sensorlm-shared")] == RAY_NS
    for kind, name in (("Deployment", "mlflow"), ("StatefulSet", "postgres"), ("Service", "postgres"), ("Job", "mlflow-bootstrap")):
        assert where[(kind, name)] == MLFLOW_NS, f"{kind} {name} belongs with MLflow, not with Ray"
    # No Ray pod can read the admin's, the promoter's, PostgreSQL's or S3's Secrets: they are not in its namespace.
    ray_secrets = {name for ns, name in _secret_keys() if ns == RAY_NS}
    assert ray_secrets == {"sensorlm-ray-token", "sensorlm-mlflow-trainer"}


def test_namespaces_enforce_pod_security_restricted():
    namespaces = {d["metadata"]["name"]: d["metadata"].get("labels", {}) for _, d in _by_kind("Namespace")}
    assert set(namespaces) == NAMESPACES
    version = "v" + ".".join(K8S_VERSION.split(".")[:2])
    for name, labels in namespaces.items():
        for mode in ("enforce", "audit", "warn"):
            assert labels.get(f"pod-security.kubernetes.io/{mode}") == "restricted", f"namespace {name}: {mode} != restricted"
            assert labels.get(f"pod-security.kubernetes.io/{mode}-version") == version, f"namespace {name}: pin {mode}-version"


# ---------------------------------------------------------------------------------------------
# schemas: Kubernetes (kubernetes-validate) and KubeRay (a trimmed CRD schema)


@pytest.mark.parametrize("path", K8S_YAML, ids=_rel)
def test_documents_pass_the_kubernetes_schemas(path):
    import jsonschema
    import kubernetes_validate

    kuberay = json.loads(KUBERAY_SCHEMA.read_text())
    for d in _rendered(path):
        where = f"{_rel(path)}: {d['kind']} {d['metadata']['name']}"
        if d["apiVersion"] == "ray.io/v1":
            errors = sorted(jsonschema.Draft7Validator(kuberay[d["kind"]]).iter_errors(d), key=lambda e: list(e.path))
            assert not errors, f"{where}: " + "; ".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)
            for part, meta, pod in _pod_specs(d):
                template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t", "namespace": RAY_NS},
                            "template": {"metadata": meta, "spec": pod}}
                try:
                    kubernetes_validate.validate(template, K8S_VERSION, strict=True)
                except kubernetes_validate.ValidationError as e:
                    raise AssertionError(f"{where} {part}: {e.message} at {'.'.join(map(str, e.path))}") from None
            continue
        try:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            raise AssertionError(f"{where}: {e.message} at {'.'.join(map(str, e.path))}") from None


def test_the_trimmed_kuberay_schema_catches_mistakes():
    import jsonschema

    kuberay = json.loads(KUBERAY_SCHEMA.read_text())
    rc = copy.deepcopy(_raycluster())
    jsonschema.validate(rc, kuberay["RayCluster"])
    rc["spec"]["workerGroupSpecs"][0]["maxReplica"] = 8  # misspelt
    with pytest.raises(jsonschema.ValidationError, match="maxReplica"):
        jsonschema.validate(rc, kuberay["RayCluster"])
    rc = copy.deepcopy(_raycluster())
    rc["spec"]["authOptions"]["mode"] = "tokens"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(rc, kuberay["RayCluster"])


# ---------------------------------------------------------------------------------------------
# secrets


def test_only_the_example_file_defines_secrets():
    for path, d in _by_kind("Secret"):
        name = d["metadata"]["name"]
        assert path == SECRETS_EXAMPLE, f"{_rel(path)} defines Secret {name}; Secrets are created with kubectl"


def test_example_secrets_hold_only_obvious_fakes():
    for d in _docs(SECRETS_EXAMPLE):
        name = d["metadata"]["name"]
        assert "data" not in d, f"Secret {name}: use stringData so the fake values stay readable"
        assert d.get("stringData"), f"Secret {name} lists no keys"
        for key, value in d["stringData"].items():
            assert "EXAMPLE" in str(value), f"Secret {name} key {key}: example values must say EXAMPLE, got {value!r}"


def test_every_secret_reference_is_in_the_example():
    known = _secret_keys()
    refs = 0
    for path, d in _all_k8s_docs():
        ns = d["metadata"]["namespace"] if d["kind"] != "Namespace" else None
        for where, _, c in _containers(d):
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs += 1
                    at = f"{_rel(path)} {where} env {env['name']}"
                    assert (ns, ref["name"]) in known, f"{at}: Secret {ref['name']} is not in secrets.example.yaml in namespace {ns}"
                    assert ref["key"] in known[(ns, ref["name"])], f"{at}: Secret {ref['name']} has no key {ref['key']}"
            for src in c.get("envFrom", []):
                if "secretRef" in src:
                    assert (ns, src["secretRef"]["name"]) in known
    assert refs >= 8, "expected the Postgres, S3, MLflow and trainer credentials to come from Secrets"


@pytest.mark.parametrize("path", [p for p in K8S_YAML if p != SECRETS_EXAMPLE], ids=_rel)
def test_no_credentials_inline(path):
    for d in _docs(path):
        for where, _, c in _containers(d):
            for env in c.get("env", []):
                if "value" in env and SECRET_ENV_NAME.search(env["name"]):
                    raise AssertionError(f"{_rel(path)} {where}: env {env['name']} is a literal; use a secretKeyRef")
        for text in _strings(d):
            assert not URL_CREDENTIALS.search(text), f"{_rel(path)}: a URL with an inline password: {text}"
            assert not re.search(r"(?i)password\s*[=:]\s*(?!\$\()\S", text), f"{_rel(path)}: an inline password in {text!r}"


def _strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def test_variable_references_in_env_resolve_to_earlier_variables():
    # Kubernetes expands $(NAME) only from variables defined earlier in the same container.
    for path, d in _all_k8s_docs():
        for where, _, c in _containers(d):
            defined: set[str] = set()
            for env in c.get("env", []):
                for ref in re.findall(r"\$\((\w+)\)", env.get("value", "")):
                    assert ref in defined, f"{_rel(path)} {where}: env {env['name']} uses $({ref}) before it is defined"
                defined.add(env["name"])
            for arg in c.get("args", []) + c.get("command", []):
                for ref in re.findall(r"\$\((\w+)\)", arg):
                    assert ref in defined, f"{_rel(path)} {where}: argument {arg!r} uses undefined $({ref})"


# ---------------------------------------------------------------------------------------------
# workloads, volumes, services


def test_workloads_have_containers_selectors_and_probes():
    workloads = _by_kind("Deployment") + _by_kind("StatefulSet")
    assert {d["metadata"]["name"] for _, d in workloads} >= {"mlflow", "postgres"}
    for path, d in workloads:
        spec = d["spec"]
        labels = spec["template"]["metadata"]["labels"]
        for k, v in spec["selector"]["matchLabels"].items():
            assert labels.get(k) == v, f"{_rel(path)} {d['metadata']['name']}: selector {k}={v} misses the pod labels"
        containers = spec["template"]["spec"]["containers"]
        assert containers, f"{_rel(path)}: no containers"
        for c in containers:
            assert c.get("name") and c.get("image"), f"{_rel(path)}: a container without name or image"
            assert c.get("readinessProbe"), f"{_rel(path)} {c['name']}: no readinessProbe"
            assert c.get("resources", {}).get("requests"), f"{_rel(path)} {c['name']}: no resource requests"
        if d["kind"] == "StatefulSet":
            services = {s["metadata"]["name"] for _, s in _by_kind("Service")}
            assert spec["serviceName"] in services, f"{_rel(path)}: serviceName {spec['serviceName']} is not a Service"


def test_volumes_and_mounts_resolve():
    pvcs = {d["metadata"]["name"] for _, d in _by_kind("PersistentVolumeClaim")}
    configmaps = _configmap_keys()
    for path, d in _all_k8s_docs():
        templates = {t["metadata"]["name"] for t in d.get("spec", {}).get("volumeClaimTemplates", [])}
        for where, _, pod in _pod_specs(d):
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            for v in volumes.values():
                if "persistentVolumeClaim" in v:
                    claim = v["persistentVolumeClaim"]["claimName"]
                    assert claim in pvcs, f"{_rel(path)} {where}: volume {v['name']} claims undefined {claim}"
                if "configMap" in v:
                    cm = v["configMap"]["name"]
                    assert cm in configmaps, f"{_rel(path)} {where}: ConfigMap {cm} is not defined"
                    for item in v["configMap"].get("items", []):
                        assert item["key"] in configmaps[cm], f"{_rel(path)} {where}: ConfigMap {cm} lacks {item['key']}"
            for c in pod.get("containers", []):
                for m in c.get("volumeMounts", []):
                    known_volume = m["name"] in volumes or m["name"] in templates
                    assert known_volume, f"{_rel(path)} {where}: mount {m['name']} has no volume"
                for env in c.get("env", []):
                    ref = env.get("valueFrom", {}).get("configMapKeyRef")
                    if ref:
                        keys = configmaps.get(ref["name"], set())
                        assert ref["key"] in keys, f"{_rel(path)} {where}: ConfigMap {ref['name']} lacks {ref['key']}"


def test_services_select_pods_and_named_ports_exist():
    pods = []
    for _, d in _all_k8s_docs():
        for _, meta, pod in _pod_specs(d):
            pods.append((meta.get("labels", {}), pod))
    for path, svc in _by_kind("Service"):
        selector = svc["spec"]["selector"]
        matches = [pod for labels, pod in pods if all(labels.get(k) == v for k, v in selector.items())]
        assert matches, f"{_rel(path)}: Service {svc['metadata']['name']} selects no pod ({selector})"
        for port in svc["spec"]["ports"]:
            assert isinstance(port["port"], int)
            target = port.get("targetPort")
            if isinstance(target, str):
                names = {p.get("name") for pod in matches for c in pod["containers"] for p in c.get("ports", [])}
                assert target in names, f"{_rel(path)}: targetPort {target} is not a container port name"


def test_mlflow_server_uses_postgres_s3_auth_and_serves_artifacts():
    (path, dep), = [(p, d) for p, d in _by_kind("Deployment") if d["metadata"]["name"] == "mlflow"]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    args = " ".join(c.get("command", []) + c.get("args", []))
    assert "--serve-artifacts" in args
    assert "--app-name=sensorlm-auth" in args  # basic auth + only MANAGE moves an alias
    env = {e["name"]: e for e in c["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"].startswith("postgresql")
    assert "$(POSTGRES_PASSWORD)" in env["MLFLOW_BACKEND_STORE_URI"]["value"]
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "sensorlm-postgres"
    cm = _configmap_keys()
    assert "MLFLOW_ARTIFACTS_DESTINATION" in env
    dest_ref = env["MLFLOW_ARTIFACTS_DESTINATION"]["valueFrom"]["configMapKeyRef"]
    (settings,) = [d for _, d in _by_kind("ConfigMap") if d["metadata"]["name"] == dest_ref["name"]]
    assert settings["data"][dest_ref["key"]].startswith("s3://")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        assert "secretKeyRef" in env[var]["valueFrom"], f"{var} must come from a Secret"
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]["value"] == "false"
    assert cm  # the auth config is mounted from a ConfigMap (checked by test_volumes_and_mounts_resolve)


def test_postgres_password_comes_from_the_same_secret_as_mlflow():
    (_, sts), = _by_kind("StatefulSet")
    env = {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    # The Secret of the same name in the same namespace as MLflow's.
    assert sts["metadata"]["namespace"] == MLFLOW_NS
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "sensorlm-postgres", "key": "password"}
    assert sts["spec"]["volumeClaimTemplates"], "PostgreSQL needs a persistent volume"


# ---------------------------------------------------------------------------------------------
# KubeRay


def _raycluster() -> dict:
    (_, rc), = _by_kind("RayCluster")
    return rc


def test_raycluster_required_fields_and_gpu_group():
    import ray

    spec = _raycluster()["spec"]
    # Required by the ray.io/v1 CRD: spec.headGroupSpec.template; per worker group groupName,
    # minReplicas, maxReplicas, template.
    assert spec["headGroupSpec"]["template"]["spec"]["containers"], "the head group has no container"
    assert spec["rayVersion"] == ray.__version__, "rayVersion must match the Ray the project pins"
    for key, value in spec["headGroupSpec"].get("rayStartParams", {}).items():
        assert isinstance(value, str), f"rayStartParams.{key} must be a string, got {value!r}"
    groups = spec["workerGroupSpecs"]
    assert groups
    gpu_groups = []
    for g in groups:
        for field in ("groupName", "minReplicas", "maxReplicas", "template"):
            assert field in g, f"worker group {g.get('groupName')}: {field} is required"
        replicas = g.get("replicas", g["minReplicas"])
        assert 0 <= g["minReplicas"] <= replicas <= g["maxReplicas"], f"group {g['groupName']}: replicas out of bounds"
        for c in g["template"]["spec"]["containers"]:
            limits, requests = c["resources"].get("limits", {}), c["resources"].get("requests", {})
            if "nvidia.com/gpu" in limits:
                gpu_groups.append(g)
                # Extended resources cannot be overcommitted: requests must equal limits.
                assert requests.get("nvidia.com/gpu", limits["nvidia.com/gpu"]) == limits["nvidia.com/gpu"]
                assert int(limits["nvidia.com/gpu"]) >= 1
    assert gpu_groups, "no worker group asks for nvidia.com/gpu"
    assert spec.get("enableInTreeAutoscaling") is True
    assert any(g["maxReplicas"] > g["minReplicas"] for g in gpu_groups), "the autoscaler has no room to add GPU workers"


def test_raycluster_token_auth_uses_the_example_secret():
    spec = _raycluster()["spec"]
    auth = spec["authOptions"]
    assert auth["mode"] == "token"
    secrets = _secret_keys()
    key = (_raycluster()["metadata"]["namespace"], auth["secretName"])
    assert key in secrets, f"authOptions.secretName {auth['secretName']} is not in secrets.example.yaml in {key[0]}"
    assert "auth_token" in secrets[key], "KubeRay reads the token from the key auth_token"


def test_raycluster_pods_mount_the_shared_volume_and_reach_mlflow():
    rc = _raycluster()
    pods = _pod_specs(rc)
    for where, _, pod in pods:
        c = pod["containers"][0]
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        assert "/mnt/shared" in mounts, f"{where}: checkpoints need the shared volume at /mnt/shared"
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes[mounts["/mnt/shared"]]["persistentVolumeClaim"]["claimName"] == "sensorlm-shared"
        env = {e["name"]: e for e in c.get("env", [])}
        # MLflow lives in the other namespace: its full Service name.
        assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow.sensorlm.svc.cluster.local:5000"
        assert "secretKeyRef" in env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]
    (pvc,) = [d for _, d in _by_kind("PersistentVolumeClaim") if d["metadata"]["name"] == "sensorlm-shared"]
    assert "ReadWriteMany" in pvc["spec"]["accessModes"], "every Ray node writes checkpoints to it"


def _rayjob() -> dict:
    (_, job), = _by_kind("RayJob")
    return job


def _entrypoint() -> tuple[str, str, list[str]]:
    """(script, config, overrides) of the RayJob's `python jobs/X.py --config Y k=v ...`."""
    words = shlex.split(_rayjob()["spec"]["entrypoint"])
    assert words[0] == "python", f"entrypoint should start with python, got {words[0]}"
    script = words[1]
    assert "--config" in words, "entrypoint has no --config"
    config = words[words.index("--config") + 1]
    overrides = [w for w in words[2:] if "=" in w and not w.startswith("-")]
    return script, config, overrides


def test_rayjob_entrypoint_refers_to_files_in_the_repository():
    script, config, _ = _entrypoint()
    assert script.startswith("jobs/") and (REPO_ROOT / script).is_file(), f"entrypoint script {script} does not exist"
    assert config.startswith("configs/") and (REPO_ROOT / config).is_file(), f"entrypoint config {config} does not exist"


def test_rayjob_overrides_are_valid_for_the_run_config():
    from sensorlm.training.config import load_train_config

    _, config, overrides = _entrypoint()
    cfg = load_train_config(str(REPO_ROOT / config), overrides)
    assert cfg.scaling.use_gpu is True
    assert cfg.name, "a fixed run name lets a resubmitted job resume from its checkpoint"
    # Ray Train's storage must be on the volume every Ray pod mounts.
    assert cfg.storage_path.startswith("/mnt/shared/"), f"storage_path {cfg.storage_path} is not on the shared volume"


def test_rayjob_targets_the_raycluster_with_a_runtime_env():
    spec = _rayjob()["spec"]
    assert spec.get("clusterSelector") or spec.get("rayClusterSpec"), "a RayJob needs a cluster"
    if "clusterSelector" in spec:
        assert spec["clusterSelector"]["ray.io/cluster"] == _raycluster()["metadata"]["name"]
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert isinstance(runtime_env, dict)
    # The submitter runs the head's image, so the working dir is the image's copy of the repo.
    workdirs = [ln.split()[1] for ln in _run_stage_lines("runtime") if ln.startswith("WORKDIR")]
    assert runtime_env["working_dir"] == workdirs[-1], "working_dir must be the runtime image's WORKDIR"
    assert spec.get("submissionMode", "K8sJobMode") in ("K8sJobMode", "HTTPMode", "SidecarMode", "InteractiveMode")


# ---------------------------------------------------------------------------------------------
# images and the Dockerfile


# `image: [${REGISTRY}/]name[:tag]@sha256:${NAME_DIGEST}` in the templates: a digest, never a tag alone.
IMAGE_TEMPLATE = re.compile(r"^(?:\$\{REGISTRY\}/)?(?P<name>[a-z0-9._-]+)(?::[\w.-]+)?@sha256:\$\{(?P<digest>[A-Z_]+_DIGEST)\}$")


def test_every_image_is_pinned_by_a_digest_placeholder():
    stages = _dockerfile_stages()
    builds = _documented_builds()
    assert builds, "the Dockerfile header should show how each image is built"
    for image, target in builds.items():
        assert target in stages, f"{image} is built from target {target}, which the Dockerfile does not define"
    seen = set()
    for path in K8S_YAML:
        for d in _docs(path):  # the templates, before render.py
            images = [(where, c["image"]) for where, _, c in _containers(d)]
            images += [(f"{d['kind']} autoscaler", d["spec"]["autoscalerOptions"]["image"])
                       for _ in [0] if d.get("kind") == "RayCluster" and "image" in d["spec"].get("autoscalerOptions", {})]
            for where, image in images:
                m = IMAGE_TEMPLATE.match(image)
                assert m, f"{_rel(path)} {where}: image {image} is not pinned by a digest placeholder (name@sha256:${{X_DIGEST}})"
                seen.add(m.group("name"))
                if m.group("name") in builds:  # the project's images come from the project's registry
                    assert image.startswith("${REGISTRY}/"), f"{_rel(path)} {where}: {image} should live in ${{REGISTRY}}"
    assert {"sensorlm", "sensorlm-mlflow"} <= seen, "the Ray pods and the MLflow server should run the project's images"
    # Rendered: every image is a concrete digest.
    for path, d in _all_k8s_docs():
        for where, _, c in _containers(d):
            assert re.search(r"@sha256:[0-9a-f]{64}$", c["image"]), f"{_rel(path)} {where}: {c['image']}"


def test_render_refuses_unfilled_or_malformed_placeholders(tmp_path):
    render = _render_module()
    written = render.render(tmp_path / "out", RENDER_VALUES)
    assert {p.name for p in written} == {p.name for p in K8S_YAML} - {SECRETS_EXAMPLE.name}
    for p in written:
        assert not render.placeholders(p.read_text()), f"{p.name} still has placeholders"
    for broken, message in (
        ({"SENSORLM_DIGEST": ""}, r"unfilled placeholder.*SENSORLM_DIGEST"),
        ({"SENSORLM_DIGEST": "latest"}, "not a sha256 digest"),
        ({"POSTGRES_DIGEST": "abc123"}, "not a sha256 digest"),
        ({"KUBE_API_CIDR": "169.254.169.254/32"}, "metadata"),
        ({"KUBE_API_CIDR": "0.0.0.0/0"}, "metadata"),
        ({"REGISTRY": "https://registry.example.com"}, "host"),
    ):
        with pytest.raises(render.RenderError, match=message):
            render.render(tmp_path / "bad", {**RENDER_VALUES, **broken})
    with pytest.raises(render.RenderError, match="unknown placeholder"):
        render.render_text("image: x@sha256:${OTHER_THING}", {"OTHER_THING": "1"}, "t")


def test_dockerfile_pins_match_the_project():
    import mlflow

    text = DOCKERFILE.read_text()
    stages = _dockerfile_stages()
    assert stages["base"].startswith("python:3.11"), "the images run Python 3.11, as CI does"
    # torch pinned in the image must satisfy pyproject's range.
    from packaging.requirements import Requirement
    from packaging.version import Version

    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    torch_req = Requirement(re.search(r'"(torch[^"]*)"', pyproject).group(1))
    torch_pin = re.search(r'"torch==([^"]+)"', text).group(1)
    assert Version(torch_pin) in torch_req.specifier, f"image torch {torch_pin} is outside pyproject's {torch_req}"
    mlflow_pin = re.search(r'"mlflow\[auth\]==([^"]+)"', text).group(1)
    assert mlflow_pin == mlflow.__version__, "the server image should run the MLflow the project tests against"


def test_dockerfile_installs_existing_extras_and_copies_existing_paths():
    import tomllib

    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    extras = set(pyproject["project"].get("optional-dependencies", {}))
    for line in DOCKERFILE.read_text().splitlines():
        for group in re.findall(r'-e\s+"?\.\[([^\]]+)\]', line):
            for extra in group.split(","):
                assert extra.strip() in extras, f"Dockerfile installs extra [{extra.strip()}], not in pyproject.toml"
        m = re.match(r"COPY\s+(?:--\S+\s+)*(\S+)\s+\S+$", line.strip())
        if m:
            assert (REPO_ROOT / m.group(1)).exists(), f"Dockerfile copies {m.group(1)}, which does not exist"
    launcher_setup = " ".join(_launcher()["setup_commands"])
    for group in re.findall(r'pip install -e "?[^"\s\[]*\[([^\]]+)\]', launcher_setup):
        for extra in group.split(","):
            assert extra.strip() in extras, f"{_rel(LAUNCHER)} installs extra [{extra.strip()}], not in pyproject.toml"


def _dockerignored(patterns: list[str], path: str) -> bool:
    """Docker's .dockerignore rule: a pattern matches a path from the context root (Go's
    filepath.Match, plus "**" for any number of folders); a folder that matches excludes all it holds."""
    def regex(pattern: str) -> str:
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            else:
                out += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
                i += 1
        return out

    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    return any(re.fullmatch(regex(p.strip("/")), prefix) for p in patterns for prefix in prefixes)


def test_dockerignore_keeps_secrets_environments_and_stores_out_of_images():
    """`COPY . /app` copies the build context: the secrets docs/cluster.md writes (.secrets/),
    virtual environments, outputs and local MLflow stores must never be in it."""
    patterns = [line.strip() for line in (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert not [p for p in patterns if p.startswith("!")], "no re-inclusion: it could bring an ignored secret back"
    for path in (".secrets/ray-token", ".secrets/mlflow-admin-password", "infra/k8s/.secrets/x", ".venv/bin/python",
                 ".venv-ci/lib/site.py", ".venv311/pyvenv.cfg", "outputs/ray_results/ckpt", "mlruns/1/model.safetensors",
                 "mlflow.db", ".cache/servers/mlflow/basic_auth.db", "sub/dir/mlflow.db", "data/wearable_tiny/train-000000.tar",
                 "jobs/outputs/x", "tests/mlruns/0/meta.yaml", ".git/config", "sensorlm/__pycache__/cli.cpython-311.pyc",
                 "infra/.env", "build/k8s/raycluster.yaml"):
        assert _dockerignored(patterns, path), f"{path} would be copied into the image"
    for path in ("sensorlm/cli/__init__.py", "pyproject.toml", "README.md", "infra/mlflow_auth/sensorlm_mlflow_auth.py",
                 "configs/sensorlm_tiny.yaml", "jobs/train_sensorlm.py", "sensorlm/data/loader.py"):
        assert not _dockerignored(patterns, path), f"{path} is needed in the image"


# ---------------------------------------------------------------------------------------------
# Ray cluster launcher


# What infra/cluster/render.py is given in these tests (any well-formed values).
AWS_VALUES = {"AWS_REGION": "us-west-2", "AWS_ACCOUNT_ID": "123456789012", "SUBNET_IDS": "subnet-0aaaa1111,subnet-0bbbb2222",
              "SECURITY_GROUP_ID": "sg-0123abcd", "IMAGE_ID": "ami-0fedcba98"}


@functools.lru_cache(maxsize=None)
def _aws_rendered() -> Path:
    spec = importlib.util.spec_from_file_location("aws_render", INFRA / "cluster" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = Path(tempfile.mkdtemp(prefix="sensorlm-aws-"))
    module.render(out, AWS_VALUES)
    return out


def _launcher() -> dict:
    """The launcher config as `ray up` reads it (rendered)."""
    return yaml.safe_load((_aws_rendered() / LAUNCHER.name).read_text())


def test_cluster_launcher_passes_rays_own_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = _launcher()
    full = prepare_config(copy.deepcopy(cfg))  # fills the provider's defaults, as `ray up` does
    validate_config(full)  # ray/autoscaler/ray-schema.json
    assert cfg["provider"]["type"] == "aws"
    assert cfg["head_node_type"] in cfg["available_node_types"]


def test_cluster_launcher_has_autoscaled_gpu_workers():
    cfg = _launcher()
    gpu_types = {
        name: t
        for name, t in cfg["available_node_types"].items()
        if name != cfg["head_node_type"] and t.get("resources", {}).get("GPU", 0) > 0
    }
    assert gpu_types, "no worker node type offers GPUs"
    for name, t in gpu_types.items():
        assert 0 <= t["min_workers"] <= t["max_workers"], f"{name}: min_workers > max_workers"
        assert t["max_workers"] <= cfg["max_workers"]
    assert sum(t["max_workers"] for t in gpu_types.values()) >= 1


def test_cluster_launcher_matches_the_pinned_stack_and_enables_token_auth():
    import ray

    cfg = _launcher()
    py = _dockerfile_stages()["base"].split(":")[1].split("-")[0].replace(".", "")  # 3.11 -> 311
    assert cfg["docker"]["image"] == f"rayproject/ray:{ray.__version__}-py{py}-gpu"
    torch_pin = re.search(r'"torch==([^"]+)"', DOCKERFILE.read_text()).group(1)
    setup = " ".join(cfg["setup_commands"])
    assert f"torch=={torch_pin}" in setup, "the launcher should install the torch the image pins"
    assert "pip install -e" in setup
    local_sources = [local for local in cfg["file_mounts"].values() if not local.startswith("~")]
    assert "." in local_sources, "the repository (run from its root) should be mounted on the nodes"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = " ".join(cfg[key])
        assert "RAY_AUTH_MODE=token" in start, f"{key}: start Ray with token authentication"
    assert any(remote.endswith(".ray/auth_token") for remote in cfg["file_mounts"]), "nodes need the token file"
    assert "--dashboard-host=127.0.0.1" in " ".join(cfg["head_start_ray_commands"])


# ---------------------------------------------------------------------------------------------
# least privilege in the pods


def _all_pods():
    for path, d in _all_k8s_docs():
        for where, meta, pod in _pod_specs(d):
            yield path, d, where, meta, pod


def test_every_pod_and_container_runs_restricted():
    """Pod Security `restricted` and more: non-root, no escalation, no capabilities, RuntimeDefault
    seccomp, read-only root filesystem (writes go to emptyDir scratch), on every container."""
    pods = list(_all_pods())
    assert len(pods) >= 6, [w for _, _, w, _, _ in pods]
    for path, d, where, _, pod in pods:
        at = f"{_rel(path)} {where}"
        psc = pod.get("securityContext", {})
        assert psc.get("runAsNonRoot") is True, f"{at}: pod securityContext.runAsNonRoot must be true"
        assert psc.get("runAsUser", 1) != 0 and psc.get("runAsGroup", 1) != 0, f"{at}: runs as root"
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{at}: seccompProfile RuntimeDefault"
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), at
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for v in volumes.values():
            assert "hostPath" not in v, f"{at}: hostPath volume {v['name']}"
            if "emptyDir" in v:
                assert v["emptyDir"].get("sizeLimit"), f"{at}: emptyDir {v['name']} needs a sizeLimit"
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            csc = c.get("securityContext", {})
            cat = f"{at} container {c['name']}"
            assert csc.get("allowPrivilegeEscalation") is False, f"{cat}: allowPrivilegeEscalation must be false"
            assert csc.get("capabilities", {}).get("drop") == ["ALL"], f"{cat}: capabilities.drop must be [ALL]"
            assert not csc.get("capabilities", {}).get("add"), f"{cat}: adds capabilities"
            assert csc.get("readOnlyRootFilesystem") is True, f"{cat}: readOnlyRootFilesystem must be true"
            assert not csc.get("privileged"), f"{cat}: privileged"
            assert csc.get("runAsUser", 1) != 0 and csc.get("runAsNonRoot", True) is True, f"{cat}: root"
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            writable = {path for path, name in mounts.items() if "emptyDir" in volumes.get(name, {})}
            if c["name"] != "bootstrap":  # a stdlib script that writes nothing
                assert "/tmp" in writable, f"{cat}: /tmp must be a writable emptyDir (the root filesystem is read-only)"
            if d["kind"] in ("RayCluster", "RayJob"):
                assert {"/tmp", "/home/ray"} <= writable, f"{cat}: Ray's temp dir and caches need emptyDir scratch"


def test_autoscaler_sidecar_is_restricted_too():
    opts = _raycluster()["spec"]["autoscalerOptions"]
    sc = opts["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and sc["readOnlyRootFilesystem"] is True
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert {"ephemeral-storage"} <= set(opts["resources"]["requests"]) & set(opts["resources"]["limits"])
    assert any(m["mountPath"] == "/tmp" for m in opts["volumeMounts"])


def test_service_account_tokens_only_where_the_api_is_needed():
    """No pod automounts a token; the Ray head's job drivers must not hold KubeRay's service account
    (it may patch pods and the RayCluster): only the autoscaler container mounts a projected token."""
    for path, d, where, _, pod in _all_pods():
        assert pod.get("automountServiceAccountToken") is False, f"{_rel(path)} {where}: must not automount a token"
        token_volumes = {v["name"] for v in pod.get("volumes", [])
                         if any("serviceAccountToken" in src for src in v.get("projected", {}).get("sources", []))}
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            mounted = {m["name"] for m in c.get("volumeMounts", [])} & token_volumes
            assert not mounted, f"{_rel(path)} {where} container {c['name']} mounts the API token {mounted}"
    cluster = _raycluster()["spec"]
    assert cluster["enableInTreeAutoscaling"] is True
    volumes = {v["name"]: v for v in cluster["headGroupSpec"]["template"]["spec"]["volumes"]}
    mounts = {m["name"]: m for m in cluster["autoscalerOptions"]["volumeMounts"]}
    token = mounts["autoscaler-api-token"]
    assert token["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount" and token["readOnly"] is True
    sources = volumes["autoscaler-api-token"]["projected"]["sources"]
    assert sources[0]["serviceAccountToken"]["path"] == "token"
    assert sources[0]["serviceAccountToken"]["expirationSeconds"] <= 3600
    assert {"configMap", "downwardAPI"} <= {k for src in sources for k in src}, "the CA and namespace beside the token"


_QUOTA_RESOURCES = {"requests.cpu": ("requests", "cpu"), "requests.memory": ("requests", "memory"),
                    "limits.memory": ("limits", "memory"), "requests.nvidia.com/gpu": ("requests", "nvidia.com/gpu"),
                    "requests.ephemeral-storage": ("requests", "ephemeral-storage"),
                    "limits.ephemeral-storage": ("limits", "ephemeral-storage")}


def _quantity(text) -> float:
    text = str(text)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": 1e-3}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def _pods_at_full_scale():
    """(namespace, containers of one pod, copies) of every pod the manifests can run at once."""
    for path, d in _all_k8s_docs():
        ns, kind, spec = d["metadata"].get("namespace"), d["kind"], d.get("spec", {})
        if kind == "Deployment":  # a rolling update runs one pod more
            yield ns, spec["template"]["spec"]["containers"], spec.get("replicas", 1) + 1
        elif kind in ("StatefulSet", "Job"):
            yield ns, spec["template"]["spec"]["containers"], spec.get("replicas", 1)
        elif kind == "RayCluster":
            head = spec["headGroupSpec"]["template"]["spec"]["containers"]
            yield ns, head + [{"resources": spec["autoscalerOptions"]["resources"]}], 1
            for g in spec["workerGroupSpecs"]:
                yield ns, g["template"]["spec"]["containers"], g["maxReplicas"]
        elif kind == "RayJob" and spec.get("submitterPodTemplate"):
            yield ns, spec["submitterPodTemplate"]["spec"]["containers"], 1


def test_every_namespace_has_a_quota_that_fits_its_own_workloads():
    """A ResourceQuota per namespace bounds what a job there can start (pods, CPUs, memory, GPUs,
    storage, no LoadBalancer or NodePort Services), and still admits every manifest at full scale."""
    quotas = {d["metadata"]["namespace"]: d["spec"]["hard"] for _, d in _by_kind("ResourceQuota")}
    ranges = {d["metadata"]["namespace"] for _, d in _by_kind("LimitRange")}
    namespaces = {d["metadata"]["name"] for _, d in _by_kind("Namespace")}
    assert set(quotas) == namespaces == ranges
    used = {ns: dict.fromkeys(_QUOTA_RESOURCES, 0.0) | {"pods": 0.0} for ns in namespaces}
    for ns, containers, copies in _pods_at_full_scale():
        used[ns]["pods"] += copies
        for key, (part, resource) in _QUOTA_RESOURCES.items():
            used[ns][key] += copies * sum(_quantity(c.get("resources", {}).get(part, {}).get(resource, 0))
                                          for c in containers)
    for _, d in _by_kind("PersistentVolumeClaim"):
        ns = d["metadata"]["namespace"]
        used[ns]["persistentvolumeclaims"] = used[ns].get("persistentvolumeclaims", 0) + 1
        used[ns]["requests.storage"] = used[ns].get("requests.storage", 0) + _quantity(d["spec"]["resources"]["requests"]["storage"])
    for _, d in _by_kind("StatefulSet"):
        ns = d["metadata"]["namespace"]
        for claim in d["spec"].get("volumeClaimTemplates", []):
            used[ns]["persistentvolumeclaims"] = used[ns].get("persistentvolumeclaims", 0) + d["spec"].get("replicas", 1)
            used[ns]["requests.storage"] = used[ns].get("requests.storage", 0) + _quantity(claim["spec"]["resources"]["requests"]["storage"])
    for ns, hard in quotas.items():
        assert hard["services.loadbalancers"] == "0" and hard["services.nodeports"] == "0", ns
        for key, value in used[ns].items():
            assert key in hard, f"{ns}: the quota does not bound {key}"
            assert value <= _quantity(hard[key]), f"{ns}: {key} needs {value:g} at full scale, the quota allows {hard[key]}"
    assert used["sensorlm-ray"]["requests.nvidia.com/gpu"] == _quantity(quotas["sensorlm-ray"]["requests.nvidia.com/gpu"]) == 8


def test_every_container_bounds_its_ephemeral_storage():
    for path, d, where, _, pod in _all_pods():
        for c in pod.get("containers", []):
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                assert "ephemeral-storage" in res.get(part, {}), f"{_rel(path)} {where} {c['name']}: ephemeral-storage {part}"


def test_no_compiled_op_cache_on_a_shared_volume():
    for path, d, where, _, pod in _all_pods():
        for c in pod.get("containers", []):
            names = {e["name"] for e in c.get("env", [])}
            assert "TORCH_EXTENSIONS_DIR" not in names, f"{_rel(path)} {where}: compiled ops come with the image"


# ---------------------------------------------------------------------------------------------
# NetworkPolicies, evaluated


def _policies() -> list[dict]:
    return [d for _, d in _by_kind("NetworkPolicy")]


def _selects(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, f"only matchLabels selectors are evaluated here: {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _peer_matches(peer: dict, policy_ns: str, target) -> bool:
    """Does a from/to peer match `target`: ("pod", namespace, labels) or ("ip", address)?"""
    if "ipBlock" in peer:
        if target[0] != "ip":
            return False  # pods are matched by selectors (ipBlock is for addresses outside the cluster)
        ip = ipaddress.ip_address(target[1])
        block = peer["ipBlock"]
        return ip in ipaddress.ip_network(block["cidr"]) and not any(ip in ipaddress.ip_network(e) for e in block.get("except", []))
    if target[0] != "pod":
        return False
    _, ns, labels = target
    ns_ok = _selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": ns}) if "namespaceSelector" in peer else ns == policy_ns
    return ns_ok and _selects(peer.get("podSelector", {}), labels)


def _port_matches(ports: list[dict] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    return any(p.get("protocol", "TCP") == protocol and p.get("port") in (None, port) for p in ports)


def _direction_allows(direction: str, pod_ns: str, pod_labels: dict, peer, port: int, protocol: str) -> bool:
    """Kubernetes semantics: isolated for `direction` if any policy selects the pod for it; then
    allowed iff some rule of some selecting policy matches peer and port."""
    key, peers_key, kind = ("egress", "to", "Egress") if direction == "egress" else ("ingress", "from", "Ingress")
    selecting = [p for p in _policies() if p["metadata"]["namespace"] == pod_ns
                 and kind in p["spec"].get("policyTypes", ["Ingress"]) and _selects(p["spec"]["podSelector"], pod_labels)]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get(key, []):
            peers = rule.get(peers_key)
            if (not peers or any(_peer_matches(x, pod_ns, peer) for x in peers)) and _port_matches(rule.get("ports"), port, protocol):
                return True
    return False


PODS = {
    "ray-head": (RAY_NS, {"app.kubernetes.io/name": "ray", "ray.io/node-type": "head", "ray.io/cluster": "sensorlm"}),
    "ray-worker": (RAY_NS, {"app.kubernetes.io/name": "ray", "ray.io/node-type": "worker", "ray.io/cluster": "sensorlm"}),
    "submitter": (RAY_NS, {"app.kubernetes.io/name": "ray-submitter"}),
    "mlflow": (MLFLOW_NS, {"app.kubernetes.io/name": "mlflow"}),
    "postgres": (MLFLOW_NS, {"app.kubernetes.io/name": "postgres"}),
    "bootstrap": (MLFLOW_NS, {"app.kubernetes.io/name": "mlflow-bootstrap"}),
    "kube-dns": ("kube-system", {"k8s-app": "kube-dns"}),
    "kuberay-operator": ("kuberay-system", {"app.kubernetes.io/name": "kuberay-operator"}),
    "stranger": ("default", {"app": "anything"}),
}


def _allowed(src: str, dst: str, port: int, protocol: str = "TCP") -> bool:
    """Is a connection from pod `src` to pod (or IP address) `dst` on `port` allowed?"""
    src_ns, src_labels = PODS[src]
    if dst in PODS:
        dst_ns, dst_labels = PODS[dst]
        egress = _direction_allows("egress", src_ns, src_labels, ("pod", dst_ns, dst_labels), port, protocol)
        ingress = _direction_allows("ingress", dst_ns, dst_labels, ("pod", src_ns, src_labels), port, protocol)
        return egress and ingress
    return _direction_allows("egress", src_ns, src_labels, ("ip", dst), port, protocol)


def test_pod_labels_used_by_the_policies_are_on_the_pods():
    for where, _, labels in [(w, d, m.get("labels", {})) for _, d, w, m, _ in _all_pods()]:
        name = labels.get("app.kubernetes.io/name")
        assert name in {"ray", "ray-submitter", "mlflow", "postgres", "mlflow-bootstrap"}, f"{where}: label {name}"


def test_both_namespaces_deny_by_default():
    for ns in NAMESPACES:
        deny = [p for p in _policies() if p["metadata"]["namespace"] == ns and p["spec"]["podSelector"] == {}
                and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"} and not p["spec"].get("ingress")
                and not p["spec"].get("egress")]
        assert deny, f"namespace {ns} has no default-deny NetworkPolicy"


@pytest.mark.parametrize("src, dst, port, allowed", [
    # what the system needs
    ("ray-worker", "ray-head", 6379, True),
    ("ray-head", "ray-worker", 12345, True),
    ("ray-worker", "ray-worker", 40000, True),
    ("ray-worker", "mlflow", 5000, True),
    ("ray-head", "mlflow", 5000, True),
    ("mlflow", "postgres", 5432, True),
    ("bootstrap", "mlflow", 5000, True),
    ("submitter", "ray-head", 8265, True),
    ("kuberay-operator", "ray-head", 8265, True),
    ("ray-head", "10.0.0.1", 443, True),  # the autoscaler -> the API server (KUBE_API_CIDR)
    ("mlflow", "52.218.0.10", 443, True),  # S3
    # and nothing else
    ("ray-worker", "postgres", 5432, False),
    ("ray-worker", "mlflow", 5432, False),
    ("ray-worker", "mlflow", 22, False),
    ("mlflow", "ray-head", 8265, False),
    ("postgres", "mlflow", 5000, False),
    ("postgres", "52.218.0.10", 443, False),
    ("stranger", "mlflow", 5000, False),
    ("stranger", "ray-head", 8265, False),
    ("stranger", "postgres", 5432, False),
    ("submitter", "ray-worker", 6379, False),
    ("submitter", "mlflow", 5000, False),
    ("bootstrap", "postgres", 5432, False),
    ("kuberay-operator", "ray-worker", 8265, False),
    ("ray-worker", "10.0.0.1", 443, False),
    ("ray-worker", "52.218.0.10", 443, False),  # no internet for jobs
    ("mlflow", "10.1.2.3", 443, False),  # the S3 rule is for public addresses only
])
def test_network_paths(src, dst, port, allowed):
    assert _allowed(src, dst, port) is allowed, f"{src} -> {dst}:{port} should be {'allowed' if allowed else 'refused'}"


@pytest.mark.parametrize("src", ["ray-head", "ray-worker", "submitter", "mlflow", "postgres", "bootstrap"])
def test_metadata_address_is_unreachable_and_dns_reachable(src):
    for port in (80, 443, 53):
        assert not _allowed(src, "169.254.169.254", port), f"{src} reaches the cloud metadata service on {port}"
    assert _allowed(src, "kube-dns", 53, "UDP") and _allowed(src, "kube-dns", 53, "TCP")
    # Every ipBlock that could hold the metadata address excepts it.
    for p in _policies():
        for rule in p["spec"].get("egress", []):
            for peer in rule.get("to", []):
                if "ipBlock" in peer:
                    block = peer["ipBlock"]
                    if ipaddress.ip_address("169.254.169.254") in ipaddress.ip_network(block["cidr"]):
                        assert any(ipaddress.ip_address("169.254.169.254") in ipaddress.ip_network(e)
                                   for e in block.get("except", [])), f"{p['metadata']['name']}: ipBlock without except"


# ---------------------------------------------------------------------------------------------
# the images' runtime user


def test_dockerfile_code_is_root_owned_and_ops_are_built_in():
    runtime = "\n".join(_run_stage_lines("runtime"))
    assert "--chown" not in runtime and "chown ray" not in runtime, "/app must stay root-owned (read-only to the runtime user)"
    assert re.search(r"^COPY \. /app$", runtime, re.M)
    # DeepSpeed's ops compiled at build time into a root-owned directory, read-only at run time.
    env = re.search(r"^ENV TORCH_EXTENSIONS_DIR=(\S+)$", runtime, re.M)
    assert env and env.group(1).startswith("/opt/"), "TORCH_EXTENSIONS_DIR should be a root-owned dir in the image"
    build = runtime.index("Builder().load()")
    assert build < runtime.rindex("USER ray"), "the ops are built before the image drops to the runtime user"
    for stage in ("runtime", "mlflow"):
        users = [ln.split()[1] for ln in _run_stage_lines(stage) if ln.startswith("USER ")]
        assert users and users[-1] == "ray", f"stage {stage} must end as the unprivileged user"
    mlflow_stage = "\n".join(_run_stage_lines("mlflow"))
    assert "COPY infra/mlflow_auth" in mlflow_stage and "sensorlm-auth" in mlflow_stage


# ---------------------------------------------------------------------------------------------
# Ray cluster launcher on AWS: IAM and the security group


AWS_SETUP = INFRA / "cluster" / "aws-setup.sh"
WORKER_POLICY = INFRA / "cluster" / "aws-iam-worker-policy.json"


def _statements(path: Path) -> list[dict]:
    policy = json.loads((_aws_rendered() / path.name).read_text())
    assert policy["Version"] == "2012-10-17"
    for st in policy["Statement"]:
        st["Action"] = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
        st["Resource"] = [st["Resource"]] if isinstance(st["Resource"], str) else st["Resource"]
    return policy["Statement"]


def test_launcher_names_least_privilege_profiles_for_every_node_type():
    cfg = _launcher()
    for name, node_type in cfg["available_node_types"].items():
        profile = node_type["node_config"].get("IamInstanceProfile")
        expected = "sensorlm-ray-head" if name == cfg["head_node_type"] else "sensorlm-ray-worker"
        assert profile == {"Name": expected}, f"node type {name}: IamInstanceProfile should be {expected} (else Ray creates its own, with EC2 and S3 full access)"
    group = cfg["provider"]["security_group"]
    assert group == {"GroupName": "sensorlm-ray-launcher"}, "no extra IpPermissions: the group's rules come from aws-setup.sh"
    assert "0.0.0.0/0" not in json.dumps(cfg), "no rule of the launcher opens anything to the world"


@pytest.mark.parametrize("policy", [IAM_POLICY, WORKER_POLICY], ids=lambda p: p.name)
def test_iam_policies_are_least_privilege(policy):
    cfg = _launcher()
    for st in _statements(policy):
        assert st["Effect"] == "Allow" and st.get("Sid")
        for action in st["Action"]:
            service, _, verb = action.partition(":")
            assert "*" not in verb and action != "*", f"{policy.name} {st['Sid']}: wildcard action {action}"
        if "*" in st["Resource"]:
            assert all(a.split(":")[1].startswith("Describe") for a in st["Action"]), f"{st['Sid']}: Resource * beyond Describe"
        for action in st["Action"]:
            if action.startswith("s3:"):
                assert all(r in ("arn:aws:s3:::sensorlm-checkpoints", "arn:aws:s3:::sensorlm-checkpoints/*") for r in st["Resource"]), st
            if action.startswith("iam:"):
                assert action == "iam:PassRole" and st["Resource"] == ["arn:aws:iam::123456789012:role/sensorlm-ray-worker"], st
            if action in ("ec2:TerminateInstances", "ec2:StopInstances", "ec2:StartInstances"):
                assert st["Condition"]["StringEquals"]["aws:ResourceTag/ray-cluster-name"] == cfg["cluster_name"], st
    actions = {a for st in _statements(policy) for a in st["Action"]}
    if policy == WORKER_POLICY:
        assert {a.split(":")[0] for a in actions} == {"s3"}, "workers need the checkpoint bucket and nothing else"
    else:
        assert {"ec2:RunInstances", "ec2:TerminateInstances", "iam:PassRole"} <= actions


def test_every_node_requires_imdsv2_and_starts_from_the_named_image_and_subnets():
    """A container with its own network namespace never reaches the instance metadata (and the
    head role's credentials in it): session tokens required, hop limit 1, on every node type."""
    cfg = _launcher()
    for name, node_type in cfg["available_node_types"].items():
        conf = node_type["node_config"]
        assert conf["MetadataOptions"] == {"HttpEndpoint": "enabled", "HttpTokens": "required",
                                           "HttpPutResponseHopLimit": 1}, name
        assert conf["ImageId"] == AWS_VALUES["IMAGE_ID"] and conf["SubnetIds"] == AWS_VALUES["SUBNET_IDS"].split(","), name
    assert cfg["provider"]["region"] == AWS_VALUES["AWS_REGION"]


def test_head_policy_launches_only_what_the_launcher_names_and_tags_only_at_launch():
    """The head role cannot tag another instance into the cluster (and then terminate it), and can
    launch only the launcher's instance types with IMDSv2, from its image, into its subnets and group."""
    cfg = _launcher()
    statements = _statements(IAM_POLICY)
    arn = f"arn:aws:ec2:{AWS_VALUES['AWS_REGION']}:{AWS_VALUES['AWS_ACCOUNT_ID']}"
    types = sorted({t["node_config"]["InstanceType"] for t in cfg["available_node_types"].values()})
    run = [st for st in statements if "ec2:RunInstances" in st["Action"]]
    allowed_run = set()
    for st in run:
        assert st["Action"] == ["ec2:RunInstances"], st["Sid"]
        allowed_run |= set(st["Resource"])
        if f"{arn}:instance/*" in st["Resource"]:
            assert st["Resource"] == [f"{arn}:instance/*"], "the instance conditions must apply to instances alone"
            eq = st["Condition"]["StringEquals"]
            assert eq["aws:RequestTag/ray-cluster-name"] == cfg["cluster_name"]
            assert sorted(eq["ec2:InstanceType"]) == types
            assert eq["ec2:MetadataHttpTokens"] == "required"
            assert st["Condition"]["NumericLessThanEquals"]["ec2:MetadataHttpPutResponseHopLimit"] == "1"
        elif any(":volume/" in r or ":network-interface/" in r for r in st["Resource"]):
            assert st["Condition"]["StringEquals"]["aws:RequestTag/ray-cluster-name"] == cfg["cluster_name"]
    subnets = {f"{arn}:subnet/{s}" for s in AWS_VALUES["SUBNET_IDS"].split(",")}
    assert allowed_run == {f"{arn}:instance/*", f"{arn}:volume/*", f"{arn}:network-interface/*", *subnets,
                           f"{arn}:security-group/{AWS_VALUES['SECURITY_GROUP_ID']}", f"{arn}:key-pair/ray-autoscaler_*",
                           f"arn:aws:ec2:{AWS_VALUES['AWS_REGION']}::image/{AWS_VALUES['IMAGE_ID']}"}
    tagging = [st for st in statements if "ec2:CreateTags" in st["Action"]]
    assert tagging
    for st in tagging:
        assert st["Action"] == ["ec2:CreateTags"], st["Sid"]
        cond = st["Condition"]
        if "ec2:CreateAction" in cond.get("StringEquals", {}):
            assert cond["StringEquals"]["ec2:CreateAction"] == "RunInstances"
        else:  # status tags on the cluster's own nodes, never its membership tag
            assert cond["StringEquals"]["aws:ResourceTag/ray-cluster-name"] == cfg["cluster_name"]
            keys = cond["ForAllValues:StringLike"]["aws:TagKeys"]
            assert not [k for k in keys if fnmatch.fnmatchcase("ray-cluster-name", k)], keys


def test_aws_render_refuses_missing_or_malformed_values(tmp_path):
    spec = importlib.util.spec_from_file_location("aws_render", INFRA / "cluster" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for key, bad, message in (("SUBNET_IDS", "", "SUBNET_IDS is unset"), ("IMAGE_ID", "ami-xyz", "IMAGE_ID='ami-xyz'"),
                              ("SUBNET_IDS", "subnet-0aaaa1111;rm -rf /", "SUBNET_IDS="),
                              ("AWS_ACCOUNT_ID", "*", "AWS_ACCOUNT_ID='*'")):
        with pytest.raises(module.RenderError, match=re.escape(message)):
            module.render(tmp_path / "out", {**AWS_VALUES, key: bad})
    assert not (tmp_path / "out").exists()


def _fake_aws(tmp_path: Path) -> tuple[dict, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "aws_calls.log"
    (bin_dir / "aws").write_text(f'#!/usr/bin/env bash\necho "$@" >> "{log}"\necho sg-0fa4e0001\n')
    (bin_dir / "aws").chmod(0o755)
    import os
    import sys

    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "VPC_ID": "vpc-0fake", "PYTHON": sys.executable,
           "SUBNET_IDS": AWS_VALUES["SUBNET_IDS"], "IMAGE_ID": AWS_VALUES["IMAGE_ID"],
           "AWS_REGION": AWS_VALUES["AWS_REGION"], "AWS_ACCOUNT_ID": AWS_VALUES["AWS_ACCOUNT_ID"]}
    return env, log


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "10.0.0.0/8", "not-a-cidr"])
def test_aws_setup_refuses_open_ssh(tmp_path, cidr):
    import subprocess

    env, log = _fake_aws(tmp_path)
    done = subprocess.run(["bash", str(AWS_SETUP)], env={**env, "SSH_CIDR": cidr}, capture_output=True, text=True)
    assert done.returncode != 0 and not log.exists(), "nothing may be created with an open SSH range"


def test_aws_setup_admits_ssh_only_from_the_given_cidr(tmp_path):
    import subprocess

    env, log = _fake_aws(tmp_path)
    done = subprocess.run(["bash", str(AWS_SETUP)], env={**env, "SSH_CIDR": "203.0.113.7/32"}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    ingress = [c for c in calls if c.startswith("ec2 authorize-security-group-ingress")]
    assert ingress[0].split() == ["ec2", "authorize-security-group-ingress", "--group-id", "sg-0fa4e0001", "--protocol", "tcp",
                                  "--port", "22", "--cidr", "203.0.113.7/32"]
    assert "UserIdGroupPairs=[{GroupId=sg-0fa4e0001}]" in ingress[1], "the other rule admits members of the group only"
    assert len(ingress) == 2 and "0.0.0.0/0" not in log.read_text()
    created = [c for c in calls if c.startswith("ec2 create-security-group")]
    assert f"--group-name {_launcher()['provider']['security_group']['GroupName']}" in created[0]
    policies = [c for c in calls if c.startswith("iam put-role-policy")]
    rendered = REPO_ROOT / "build" / "aws"
    assert any(f"file://{rendered / IAM_POLICY.name}" in c and "sensorlm-ray-head" in c for c in policies)
    assert any(f"file://{rendered / WORKER_POLICY.name}" in c and "sensorlm-ray-worker" in c for c in policies)
    head_policy = json.loads((rendered / IAM_POLICY.name).read_text())
    assert "security-group/sg-0fa4e0001" in json.dumps(head_policy), "the head may launch into the group just made"
