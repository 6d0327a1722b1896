"""deploy/: the image, the compose file and the Kubernetes manifests, checked without running them.

No container engine or cluster is needed. The manifests are validated against the Kubernetes
schemas bundled by `kubernetes-validate`, the compose file against the Compose Specification bundled
by `check-jsonschema` (both in the dev extra). Every HERALD_* variable deploy/ sets must be one
Herald reads, every value must pass `load_settings`, and every command the image, compose and the
manifests run must be a `herald` command the CLI accepts.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from service.cli import parser
from service.settings import Settings, load_settings
from workers.main import CHUNK_TIMEOUT

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

# The oldest Kubernetes the manifests promise to work on, and the newest the validator bundles.
K8S_VERSIONS = ("1.30", "latest")
# The parts production runs; `herald dev` (embedded servers, demo page) is not one of them.
ROLES = {"api", "worker", "migrate"}
# What Herald waits for on SIGTERM (see service/cli.py and workers/main.py): granian kills requests
# after 25 s; the worker waits 20 s for jobs, then up to 20 s for its stream consumer.
SHUTDOWN_SECONDS = max(25 + 5, 20 + 20, CHUNK_TIMEOUT)


# --- reading deploy/ ----------------------------------------------------------------------------


def _yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, doc) for path in _manifest_files() for doc in _yaml_documents(path)]


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in _manifests() if doc["kind"] == kind]


def _named(kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in _of_kind(kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} named {name}, found {len(found)}"
    return found[0]


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        text = line.strip()
        if text.startswith("#") or (not text and not pending):
            continue
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        keyword, _, arguments = (pending + text).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def _runtime_stage() -> list[tuple[str, str]]:
    """The instructions of the last stage: the image that runs."""
    instructions = _dockerfile()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def _exec_form(keyword: str) -> list[str]:
    found = [arguments for k, arguments in _runtime_stage() if k == keyword]
    if not found:
        return []
    try:
        argv = json.loads(found[-1])
    except json.JSONDecodeError:
        argv = None
    if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
        # The shell form: Docker runs it with /bin/sh as PID 1, which does not pass SIGTERM on.
        return ["/bin/sh", "-c", found[-1]]
    return argv


def _image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in _runtime_stage():
        if keyword == "ENV":
            for item in shlex.split(arguments):
                name, sep, value = item.partition("=")
                assert sep, f"ENV {arguments!r}: use the NAME=value form"
                env[name] = value
    return env


def _image_user() -> str:
    users = [arguments for keyword, arguments in _runtime_stage() if keyword == "USER"]
    assert users, "the image must name a USER"
    return users[-1]


def _default_argv() -> list[str]:
    return _exec_form("ENTRYPOINT") + _exec_form("CMD")


def _herald_services() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in _compose()["services"].items()
        if str(service.get("image", "")).startswith("herald") or "build" in service
    }


def _compose_argv(service: Mapping[str, Any]) -> list[str]:
    command = service.get("command")
    if command is None:
        return _default_argv()
    args = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    return _exec_form("ENTRYPOINT") + args


def _pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for filename, doc in _manifests():
        if doc["kind"] in ("Deployment", "Job"):
            yield f"{filename}: {doc['kind']} {doc['metadata']['name']}", doc["spec"]["template"]["spec"]


def _containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for where, pod in _pod_specs():
        for container in pod.get("initContainers", []) + pod["containers"]:
            yield f"{where}, container {container['name']}", container


def _k8s_argv(container: Mapping[str, Any]) -> list[str]:
    # Kubernetes: `command` replaces the image's ENTRYPOINT, `args` its CMD.
    entrypoint = container.get("command", _exec_form("ENTRYPOINT"))
    args = container.get("args", _exec_form("CMD") if "command" not in container else [])
    return [*entrypoint, *args]


def _all_commands() -> list[tuple[str, list[str]]]:
    commands = [("deploy/Dockerfile: CMD", _default_argv())]
    commands += [(f"compose.yaml: service {name}", _compose_argv(s)) for name, s in _herald_services().items()]
    commands += [(where, _k8s_argv(container)) for where, container in _containers()]
    return commands


def _k8s_env(container: Mapping[str, Any]) -> dict[str, str]:
    """What the container sees: the image's ENV, then envFrom in order, then env."""
    env = dict(_image_env())
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(_named("ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            secret = _named("Secret", source["secretRef"]["name"])
            assert "data" not in secret, "use stringData, so the placeholders can be read and checked"
            env.update(secret["stringData"])
    for item in container.get("env", []):
        assert "value" in item, f"{item['name']}: set a literal value"
        env[item["name"]] = item["value"]
    return env


def _compose_env(service: Mapping[str, Any]) -> dict[str, str]:
    env = dict(_image_env())
    given = service.get("environment", {})
    if isinstance(given, list):
        given = dict(item.split("=", 1) for item in given)
    for name, value in given.items():
        assert value is not None, f"{name}: set a value (compose would pass the host's through)"
        env[name] = str(value)
    return env


class _Recording(Mapping[str, str]):
    """An environment that remembers which names were looked up."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = dict(values)
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self.values[key]

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return self.values.get(key, default)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.asked.add(key)
        return key in self.values

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


def _names_read_by_settings() -> set[str]:
    env = _Recording({})
    load_settings(env)
    return {name for name in env.asked if name.startswith("HERALD_")}


def _deploy_files() -> list[Path]:
    return [DOCKERIGNORE, *sorted(p for p in DEPLOY.rglob("*") if p.is_file())]


# --- (1) Kubernetes schemas ----------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_validate_against_the_kubernetes_schemas(version: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[dev]'")
    if version == "latest":
        version = kubernetes_validate.latest_version()
    problems = []
    manifests = _manifests()
    for filename, doc in manifests:
        where = f"{filename}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{where}: {exc.message}")
    assert not problems, "\n".join(problems)
    kinds = {doc["kind"] for _, doc in manifests}
    assert kinds >= {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap", "Secret"}
    assert "Job" in kinds


def test_the_kubernetes_validation_is_strict() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[dev]'")
    deployment = _named("Deployment", "herald-api")
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 60  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in _manifest_files())


def test_the_kustomization_builds() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (apt-get install kubectl, or any kubectl >= 1.27)")
    built = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False)
    assert built.returncode == 0, built.stderr
    names = sorted((d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(built.stdout) if d)
    assert names == sorted((d["kind"], d["metadata"]["name"]) for _, d in _manifests())


# --- (2) the Compose Specification ---------------------------------------------------------------


def _check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("check_jsonschema", reason="pip install -e '.[dev]'")
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_compose_file_validates_against_the_compose_spec() -> None:
    checked = _check_compose(COMPOSE)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_compose_validation_catches_a_misspelt_key(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("    healthcheck:\n", "    healtcheck:\n", 1))
    assert _check_compose(broken).returncode != 0


# --- (3) HERALD_* names --------------------------------------------------------------------------


def test_every_herald_variable_in_deploy_is_one_herald_reads() -> None:
    source = (ROOT / "service" / "settings.py").read_text()
    in_settings = set(re.findall(r"\"(HERALD_[A-Z0-9_]+)\"", source))
    read = _names_read_by_settings()
    assert read <= in_settings and "HERALD_DATABASE_URL" in read

    mentioned: dict[str, set[str]] = {}
    for path in _deploy_files():
        for name in re.findall(r"\bHERALD_[A-Z0-9_]+", path.read_text()):
            mentioned.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    assert mentioned, "deploy/ sets no HERALD_* variable at all?"
    unknown = {name: sorted(files) for name, files in mentioned.items() if name not in read}
    assert not unknown, f"not read by service/settings.py: {unknown}"

    set_names = set(_image_env())
    for service in _herald_services().values():
        set_names |= set(_compose_env(service))
    for _, container in _containers():
        set_names |= set(_k8s_env(container))
    assert {n for n in set_names if n.startswith("HERALD_")} <= read


# --- (4) commands --------------------------------------------------------------------------------


@pytest.mark.parametrize(("where", "argv"), _all_commands(), ids=[where for where, _ in _all_commands()])
def test_every_command_is_a_herald_command(where: str, argv: list[str]) -> None:
    assert argv[:1] == ["herald"], f"{where}: runs {argv}, not herald"
    try:
        args = parser().parse_args(argv[1:])
    except SystemExit as exc:
        pytest.fail(f"{where}: `{shlex.join(argv)}` is refused by the herald CLI (exit {exc.code})")
    assert args.command in ROLES, f"{where}: `{shlex.join(argv)}` is not a production role"


def test_the_image_runs_the_api_by_default() -> None:
    assert _default_argv() == ["herald", "api"]
    assert _image_env().get("HERALD_HOST") == "0.0.0.0"


def test_compose_and_kubernetes_run_every_role() -> None:
    compose_roles = {_compose_argv(s)[1] for s in _herald_services().values()}
    k8s_roles = {_k8s_argv(c)[1] for _, c in _containers()}
    assert compose_roles == ROLES
    assert k8s_roles == ROLES


# --- (5) values ----------------------------------------------------------------------------------


def _settings(where: str, env: Mapping[str, str]) -> Settings:
    settings = load_settings(env)  # raises SettingsError naming the variable
    settings.require_backends()
    assert not settings.demo, f"{where}: the demo page is for `herald dev` only"
    return settings


@pytest.mark.parametrize("name", ["migrate", "api", "worker"])
def test_compose_settings_pass_load_settings(name: str) -> None:
    settings = _settings(name, _compose_env(_herald_services()[name]))
    assert settings.host == "0.0.0.0"
    assert settings.database_url is not None and "@postgres:5432/" in settings.database_url
    assert settings.redis_url is not None and settings.redis_url.startswith("redis://redis:6379/")


def test_kubernetes_settings_pass_load_settings() -> None:
    # The Secret's placeholders are valid URLs (on the reserved .invalid domain), so they are
    # checked as they are; test_the_secret_holds_placeholders_only keeps them placeholders.
    for where, container in _containers():
        settings = _settings(where, _k8s_env(container))
        assert settings.host == "0.0.0.0"


def test_the_secret_holds_placeholders_only() -> None:
    for secret in _of_kind("Secret"):
        assert set(secret["stringData"]) == {"HERALD_DATABASE_URL", "HERALD_REDIS_URL"}
        for name, value in secret["stringData"].items():
            host = urlsplit(value).hostname or ""
            assert host.endswith(".invalid"), f"{name}: keep a placeholder here, not a real address"


def test_the_api_probes_and_ports_agree_with_the_settings() -> None:
    config = _named("ConfigMap", "herald-config")["data"]
    port = load_settings(config).port
    api = _named("Deployment", "herald-api")["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    assert ports == {"http": port}
    assert api["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    # /readyz waits up to HERALD_BACKEND_TIMEOUT for each backend before it answers.
    assert api["readinessProbe"]["timeoutSeconds"] > load_settings(config).backend_timeout
    service = _named("Service", "herald-api")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]


def test_compose_health_checks() -> None:
    services = _compose()["services"]
    api_test = services["api"]["healthcheck"]["test"]
    assert api_test[:3] == ["CMD", "python", "-c"] and "/readyz" in api_test[3]
    compile(api_test[3], "compose healthcheck", "exec")  # the image has Python, not curl
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


# --- how the parts fit -------------------------------------------------------------------------


def test_compose_migrates_before_the_api_and_the_workers_start() -> None:
    services = _compose()["services"]
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        assert services[name]["deploy"]["replicas"] == 2


def test_redis_persists_the_stream() -> None:
    redis = _compose()["services"]["redis"]
    command = redis["command"]
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    options = dict(zip(argv[1::2], argv[2::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] in ("everysec", "always")
    assert options.get("--maxmemory-policy", "noeviction") == "noeviction"
    assert any(v.split(":")[1] == "/data" for v in redis["volumes"])


def test_postgres_keeps_its_data_in_a_named_volume() -> None:
    compose = _compose()
    volumes = compose["services"]["postgres"]["volumes"]
    assert any(v.split(":")[0] in compose["volumes"] for v in volumes)


def test_shutdown_grace_outlasts_herald_own_shutdown() -> None:
    for where, pod in _pod_specs():
        if "Deployment" in where:
            assert pod["terminationGracePeriodSeconds"] > SHUTDOWN_SECONDS, where
    for name in ("api", "worker"):
        grace = _herald_services()[name]["stop_grace_period"]
        assert re.fullmatch(r"\d+s", grace) and int(grace[:-1]) > SHUTDOWN_SECONDS, name


def test_pods_run_as_the_image_non_root_user() -> None:
    uid, _, gid = _image_user().partition(":")
    assert uid.isdigit() and int(uid) != 0, "USER must be numeric for runAsNonRoot to check it"
    for where, pod in _pod_specs():
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, where
        assert (context["runAsUser"], context["runAsGroup"]) == (int(uid), int(gid or uid)), where
    for where, container in _containers():
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
        assert "limits" in container["resources"] and "requests" in container["resources"], where


def test_selectors_autoscalers_and_budgets_find_their_pods() -> None:
    deployments = {d["metadata"]["name"]: d for d in _of_kind("Deployment")}
    for deployment in deployments.values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for hpa in _of_kind("HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
    assert {h["spec"]["scaleTargetRef"]["name"] for h in _of_kind("HorizontalPodAutoscaler")} == set(deployments)
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in deployments.values()]
    selectors = [p["spec"]["selector"]["matchLabels"] for p in _of_kind("PodDisruptionBudget")]
    selectors += [s["spec"]["selector"] for s in _of_kind("Service")]
    for selector in selectors:
        assert sum(selector.items() <= labels.items() for labels in pod_labels) == 1, selector


def test_every_herald_container_runs_the_same_image() -> None:
    images = {c["image"] for _, c in _containers()} | {s["image"] for s in _herald_services().values()}
    assert len(images) == 1, images


# --- the image's build context -------------------------------------------------------------------


def _dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (negated, regex) rules, with Docker's meaning of *, ** and ?."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((negated, re.compile(regex)))
    return rules


def _ignored(path: str) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for negated, regex in _dockerignore_rules():
        if any(regex.fullmatch(c) for c in candidates):
            ignored = not negated
    return ignored


def test_the_build_context_holds_what_the_dockerfile_copies_and_nothing_private() -> None:
    for path in (".git/HEAD", ".venv/bin/python", ".herald/pg/postmaster.pid", ".mypy_cache/x", ".env"):
        assert _ignored(path), path
    assert _ignored("service/__pycache__/cli.cpython-311.pyc")
    copies = [a.split() for k, a in _dockerfile() if k == "COPY" and "--from" not in a]
    sources = [source for *srcs, _ in copies for source in srcs]
    assert {"pyproject.toml", "README.md", "schema.sql", "service", "workers"} <= set(sources)
    for source in sources:
        path = ROOT / source
        assert path.exists(), source
        files = list(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            relative = str(file.relative_to(ROOT))
            assert not _ignored(relative), f"{relative} is copied by the Dockerfile but left out by .dockerignore"


def test_the_dockerfile_builds_a_wheel_and_installs_it_into_a_slim_python() -> None:
    instructions = _dockerfile()
    args = dict(a.split("=", 1) for k, a in instructions if k == "ARG" and "=" in a)
    stages = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], a) for k, a in instructions if k == "FROM"]
    assert len(stages) >= 2
    image = stages[-1].split()[0]
    match = re.fullmatch(r"python:3\.(\d+)-slim(-\w+)?", image)
    assert match and int(match.group(1)) >= 11, image
    runs = " ".join(a for k, a in instructions if k == "RUN")
    assert "pip wheel" in runs and "/wheels/herald-" in runs  # from its file: "herald" on PyPI is another project
