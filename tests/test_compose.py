"""The Docker deployment (Dockerfile, compose.yaml, .dockerignore) without Docker: the compose file is
valid Compose and configures visionq the way its settings and commands read it, the image runs as a
user of its own with visionq as PID 1, and the Dockerfile's build steps work (slow: a fresh virtualenv).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import flower.urls
import jsonschema
import pytest
import typer
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from typer.exceptions import TyperException

from tests.deploy import compose, dockerfile
from tests.helpers import settings_of
from visionq import constants
from visionq.api.routes import health
from visionq.cli import app
from visionq.cli.serve import check_flower_exposure
from visionq.config import Settings

ROOT = Path(__file__).parent.parent
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA = Path(__file__).parent / "deploy" / "compose-spec.json"
# compose-spec.json as check-jsonschema 0.39.0 vendors it (tests/deploy/README.md).
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"

# The values a .env would give the variables compose.yaml requires.
SECRETS = {
    "POSTGRES_PASSWORD": "pg0123456789abcdef",
    "RABBITMQ_PASSWORD": "mq0123456789abcdef",
    "VISIONQ_FLOWER_BASIC_AUTH": "admin:fl0123456789abcdef",
}
VISIONQ_SERVICES = ("api", "worker", "beat", "flower")
# Variables a visionq container may get besides visionq's own settings, and who reads them.
# Interpolated with a default when .env leaves them out.
OPTIONAL_VARIABLES = {"VISIONQ_FORWARDED_ALLOW_IPS"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    """compose.yaml with the secrets filled in, as `docker compose config` sees it."""
    data = compose.interpolate(compose.load(COMPOSE), SECRETS)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(spec["services"])


@pytest.fixture(scope="module")
def final_stage() -> dockerfile.Stage:
    """The stage the image is made of: the Dockerfile's last."""
    return dockerfile.stages(DOCKERFILE)[-1]


def _image_env() -> dict[str, str]:
    """The ENV of the image's stage."""
    return dockerfile.stages(DOCKERFILE)[-1].env()


def _settings_of_service(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as a container of `service` builds them: the image's environment, then the service's."""
    for name in [n for n in os.environ if n.startswith("VISIONQ_")]:
        monkeypatch.delenv(name)
    for name, value in {**_image_env(), **compose.environment(service)}.items():
        if name.startswith("VISIONQ_"):
            monkeypatch.setenv(name, value)
    return settings_of()


def _command(service: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The service's visionq subcommand and its options, parsed by the real command line."""
    argv = service["command"]
    assert isinstance(argv, list), "exec form: a list, so no shell sits between Docker and visionq"
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    with typer.Context(group) as parent:
        command = group.get_command(parent, argv[0])
        assert command is not None, f"visionq has no command {argv[0]!r}"
        with command.make_context(argv[0], list(argv[1:]), parent=parent) as ctx:
            return argv[0], dict(ctx.params)


def _published_ports(service: dict[str, Any]) -> set[int]:
    """The container ports a service publishes on the host."""
    return {int(str(port).rsplit(":", 1)[-1].split("/")[0]) for port in service.get("ports", [])}


def _healthcheck_url(service: dict[str, Any]) -> str:
    (url,) = re.findall(r"https?://[^'\"\s]+", " ".join(service["healthcheck"]["test"]))
    return str(url)


# --- the Compose Specification --------------------------------------------------------------------


def test_the_vendored_schema_is_the_one_its_note_names() -> None:
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256


def test_the_compose_file_is_valid_under_the_compose_specification(spec: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.validators.validator_for(schema).check_schema(schema)
    jsonschema.validate(spec, schema)


@pytest.mark.parametrize(
    ("path", "mistake"),
    [
        (("services", "worker"), {"stop_grace_periods": "330s"}),
        (("services", "api", "healthcheck"), {"interval": 10}),
        (("services", "api", "depends_on", "postgres"), {"condition": "service_ready"}),
    ],
)
def test_the_schema_refuses_a_misspelt_or_mistyped_compose_file(
    spec: dict[str, Any], path: tuple[str, ...], mistake: dict[str, Any]
) -> None:
    broken = json.loads(json.dumps(spec))
    node = broken
    for key in path:
        node = node[key]
    node.update(mistake)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, json.loads(SCHEMA.read_text()))


def test_the_stack_refuses_to_start_without_its_secrets() -> None:
    raw = compose.load(COMPOSE)
    for name in SECRETS:
        with pytest.raises(compose.MissingVariable, match=name):
            compose.interpolate(raw, {k: v for k, v in SECRETS.items() if k != name})
    assert compose.variables_used(raw) == set(SECRETS) | OPTIONAL_VARIABLES


# --- visionq's settings and commands --------------------------------------------------------------


def test_the_services_are_the_servers_and_visionqs_four_processes(services: dict[str, Any]) -> None:
    assert set(services) == {"rabbitmq", "postgres", *VISIONQ_SERVICES}


@pytest.mark.parametrize("name", VISIONQ_SERVICES)
def test_every_visionq_variable_is_a_setting_and_nothing_else_is_passed(
    services: dict[str, Any], name: str
) -> None:
    known = {f"VISIONQ_{field.upper()}" for field in Settings.model_fields}
    env = compose.environment(services[name])
    assert {k for k in env if k.startswith("VISIONQ_")} <= known
    assert all(k.startswith("VISIONQ_") for k in env)


@pytest.mark.parametrize("name", VISIONQ_SERVICES)
def test_every_visionq_service_reaches_the_compose_servers_with_their_credentials(
    services: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings_of_service(services[name], monkeypatch)
    postgres = compose.environment(services["postgres"])
    database = make_url(settings.resolved_database_url)
    assert (database.drivername, database.host, database.port) == ("postgresql+psycopg", "postgres", 5432)
    assert (database.username, database.password, database.database) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        postgres["POSTGRES_DB"],
    )
    create_engine(database).dispose()  # the driver is installed: the URL names one visionq can load
    rabbitmq = compose.environment(services["rabbitmq"])
    broker = urlsplit(settings.resolved_broker_url)
    assert (broker.scheme, broker.hostname, broker.port, broker.path) == ("amqp", "rabbitmq", 5672, "//")
    assert (broker.username, broker.password) == (
        rabbitmq["RABBITMQ_DEFAULT_USER"],
        rabbitmq["RABBITMQ_DEFAULT_PASS"],
    )
    assert settings.data_dir == Path(_image_env()["VISIONQ_DATA_DIR"])


@pytest.mark.parametrize("name", VISIONQ_SERVICES)
def test_every_visionq_service_runs_a_real_command_with_real_options(
    services: dict[str, Any], name: str
) -> None:
    command, _ = _command(services[name])
    assert command == name
    assert "entrypoint" not in services[name]  # the image's: visionq, as PID 1


def test_an_option_visionq_does_not_have_is_caught() -> None:
    with pytest.raises(TyperException, match="No such option: --address"):
        _command({"command": ["flower", "--address", "0.0.0.0"]})


def test_the_api_listens_on_the_port_it_publishes_and_checks_its_readiness_there(
    services: dict[str, Any],
) -> None:
    _, options = _command(services["api"])
    assert options["host"] == "0.0.0.0"
    assert _published_ports(services["api"]) == {options["port"]}
    url = urlsplit(_healthcheck_url(services["api"]))
    assert (url.hostname, url.port) == ("127.0.0.1", options["port"])
    assert url.path == "/readyz" and url.path in {route.path for route in health.router.routes}  # type: ignore[attr-defined]


def test_flower_listens_on_the_port_it_publishes_and_has_the_basic_auth_that_allows_it(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, options = _command(services["flower"])
    assert _published_ports(services["flower"]) == {options["port"]}
    url = urlsplit(_healthcheck_url(services["flower"]))
    assert url.port == options["port"]
    # Flower's own route, outside its basic auth (a healthcheck sends no credentials).
    routes = {h.regex.pattern if hasattr(h, "regex") else h[0] for h in flower.urls.handlers}
    assert url.path in {route.rstrip("$") for route in routes}
    settings = _settings_of_service(services["flower"], monkeypatch)
    assert settings.flower_basic_auth is not None
    assert settings.flower_basic_auth.get_secret_value() == SECRETS["VISIONQ_FLOWER_BASIC_AUTH"]
    check_flower_exposure(options["host"], settings)  # returns: `visionq flower` starts


class _Readiness(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802  # http.server's name
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  # http.server's signature
        pass


@pytest.fixture
def readiness_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Readiness)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_the_api_healthcheck_fails_exactly_when_readyz_is_not_ok(
    services: dict[str, Any],
    readiness_server: ThreadingHTTPServer,
    monkeypatch: pytest.MonkeyPatch,
    status: int,
    healthy: bool,
) -> None:
    kind, *argv = services["api"]["healthcheck"]["test"]
    assert kind == "CMD" and argv[0] == "python"  # the image's python: the slim image has no curl
    monkeypatch.setattr(_Readiness, "status", status)
    port = readiness_server.server_address[1]
    code = argv[-1].replace(":8000/", f":{port}/")
    run = subprocess.run([sys.executable, *argv[1:-1], code], capture_output=True, timeout=30, check=False)
    assert (run.returncode == 0) is healthy, run.stderr


def test_the_visionq_services_start_once_rabbitmq_and_postgresql_are_healthy(
    services: dict[str, Any],
) -> None:
    assert services["rabbitmq"]["healthcheck"]["test"] == ["CMD", "rabbitmq-diagnostics", "-q", "ping"]
    postgres = compose.environment(services["postgres"])
    assert services["postgres"]["healthcheck"]["test"] == [
        "CMD",
        "pg_isready",
        "-h",
        "127.0.0.1",
        "-U",
        postgres["POSTGRES_USER"],
        "-d",
        postgres["POSTGRES_DB"],
    ]
    for name in VISIONQ_SERVICES:
        assert services[name]["depends_on"] == {
            "rabbitmq": {"condition": "service_healthy"},
            "postgres": {"condition": "service_healthy"},
        }


def test_the_worker_scales_and_drains_for_longer_than_a_detection_may_run(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker  # --scale worker=N
    assert worker.get("stop_signal", "SIGTERM") == "SIGTERM"
    assert compose.seconds(worker["stop_grace_period"]) > constants.TASK_TIME_LIMIT_S


def test_beat_runs_exactly_once(services: dict[str, Any]) -> None:
    beat = services["beat"]
    assert beat.get("scale", 1) == 1 and beat.get("deploy", {}).get("replicas", 1) == 1


def test_rabbitmq_gives_a_job_longer_than_its_time_limit_before_it_drops_the_consumer(
    services: dict[str, Any],
) -> None:
    erl_args = compose.environment(services["rabbitmq"])["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"].split()
    timeout_ms = int(erl_args[erl_args.index("consumer_timeout") + 1])
    assert erl_args[erl_args.index("consumer_timeout") - 1] == "-rabbit"
    assert timeout_ms == constants.RABBITMQ_CONSUMER_TIMEOUT_S * 1000 > constants.TASK_TIME_LIMIT_S * 1000


def test_postgresql_and_rabbitmq_keep_their_data_in_named_volumes(spec: dict[str, Any]) -> None:
    mounts = {name: spec["services"][name]["volumes"] for name in ("postgres", "rabbitmq")}
    assert mounts == {
        "postgres": ["postgres-data:/var/lib/postgresql/data"],
        "rabbitmq": ["rabbitmq-data:/var/lib/rabbitmq"],
    }
    assert set(spec["volumes"]) == {"postgres-data", "rabbitmq-data"}
    # RabbitMQ's data dir is named after its node, rabbit@<hostname>: a fixed one survives re-creation.
    assert spec["services"]["rabbitmq"]["hostname"] == "rabbitmq"


def test_every_service_is_restarted_when_it_stops(services: dict[str, Any]) -> None:
    assert {name: s.get("restart") for name, s in services.items()} == dict.fromkeys(
        services, "unless-stopped"
    )


def test_the_visionq_services_run_the_image_this_dockerfile_builds(services: dict[str, Any]) -> None:
    assert {(services[n]["image"], services[n]["build"]) for n in VISIONQ_SERVICES} == {
        ("visionq:latest", ".")
    }
    # Further settings come from visionq.env when it exists; without it the stack starts all the same.
    for name in VISIONQ_SERVICES:
        assert services[name]["env_file"] == [{"path": "visionq.env", "required": False}]


# --- the image ------------------------------------------------------------------------------------


def test_the_image_runs_as_a_user_of_its_own_made_with_useradd(final_stage: dockerfile.Stage) -> None:
    users = [i.operands()[0] for i in final_stage.all("USER")]
    assert users and users[-1] not in {"root", "0"} and not users[-1].startswith(("root:", "0:"))
    useradds = [i.args for i in final_stage.all("RUN") if "useradd" in i.args]
    assert useradds and re.search(rf"\buseradd\b.*\s{re.escape(users[-1])}(\s|$)", useradds[0])
    assert not re.search(r"--uid 0\b", useradds[0])


def test_visionq_is_pid_1_so_a_stop_reaches_the_workers_main_process(final_stage: dockerfile.Stage) -> None:
    (entrypoint,) = final_stage.all("ENTRYPOINT")
    assert entrypoint.exec_form() == ["visionq"]  # exec form: no shell in between to swallow SIGTERM
    (cmd,) = final_stage.all("CMD")
    assert cmd.exec_form() is not None
    assert final_stage.all("STOPSIGNAL")[0].args == "SIGTERM"


def test_the_image_keeps_its_models_in_the_data_dir_its_user_owns(final_stage: dockerfile.Stage) -> None:
    env = final_stage.env()
    data_dir = env["VISIONQ_DATA_DIR"]
    (useradd,) = [i.args for i in final_stage.all("RUN") if "useradd" in i.args]
    user = final_stage.all("USER")[-1].args
    assert f"--home-dir {data_dir}" in useradd
    assert re.search(rf"install -d -o {user} .*{re.escape(data_dir)}", useradd)  # the user's to write
    assert final_stage.all("WORKDIR")[-1].args == data_dir
    keywords = [i.keyword for i in final_stage.instructions]
    pull = next(n for n, i in enumerate(final_stage.instructions) if "models.sh" in i.args)
    assert keywords.index("USER") < pull  # pulled as the user: its files are the user's


def test_the_build_stage_installs_visionq_into_the_venv_the_image_copies(
    final_stage: dockerfile.Stage,
) -> None:
    build = dockerfile.stages(DOCKERFILE)[0]
    (install,) = [i for i in build.all("RUN") if "install.sh" in i.args]
    _, _, venv, source = install.operands()
    assert source == build.all("WORKDIR")[0].args
    (copy,) = final_stage.all("COPY")
    assert copy.flags()["from"] == [build.name] and copy.operands() == [venv, venv]
    assert final_stage.env()["PATH"].startswith(f"{venv}/bin:")


@pytest.mark.parametrize(
    "kept_out",
    [".git", ".venv", ".visionq", ".env", "**/__pycache__", ".mypy_cache", ".pytest_cache", "tests"],
)
def test_the_build_context_keeps_out_the_virtualenv_data_secrets_and_caches(kept_out: str) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert kept_out in patterns


# --- the Dockerfile's build steps, run ------------------------------------------------------------


def _build_sources(tmp: Path) -> Path:
    """What the build stage's COPY instructions put in its WORKDIR, copied from this checkout."""
    build = dockerfile.stages(DOCKERFILE)[0]
    workdir = tmp / "src"
    workdir.mkdir()
    for copy in build.all("COPY"):
        *sources, dest = copy.operands()
        for source in sources:
            origin = ROOT / source
            target = workdir / dest / origin.name if dest.endswith("/") else workdir / dest
            if origin.is_dir():
                ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
                shutil.copytree(origin, target, ignore=ignore)
            else:
                shutil.copyfile(origin, target)
    return workdir


def _run(argv: list[str], env: dict[str, str], cwd: Path, timeout: float) -> str:
    run = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    assert run.returncode == 0, f"{argv} exited {run.returncode}:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    return run.stdout


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_dockerfile_build_steps_install_visionq_and_its_models_in_a_fresh_virtualenv(
    tmp_path: Path,
) -> None:
    scripts = ROOT / "deploy" / "docker"
    source = _build_sources(tmp_path)
    venv, data = tmp_path / "venv", tmp_path / "data"
    data.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISIONQ_")}
    for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
        env.pop(name, None)
    env |= {"PYTHON": shutil.which("python3.11") or sys.executable, "PIP_NO_INPUT": "1"}
    _run(["sh", str(scripts / "install.sh"), str(venv), str(source)], env, tmp_path, timeout=420)

    # Non-editable: the package lives in the venv, with every file of the source tree (package data too).
    python = venv / "bin" / "python"
    where = _run([str(python), "-c", "import visionq; print(visionq.__file__)"], env, tmp_path, 60)
    package = Path(where.strip()).parent
    assert package.is_relative_to(venv)
    expected = {p.relative_to(source / "visionq") for p in (source / "visionq").rglob("*") if p.is_file()}
    present = {p.relative_to(package) for p in package.rglob("*") if p.is_file()}
    assert expected <= present, f"missing from the installed package: {sorted(map(str, expected - present))}"

    image_env = env | {"PATH": f"{venv / 'bin'}:{env['PATH']}", "VISIONQ_DATA_DIR": str(data)}
    _run(["sh", str(scripts / "models.sh")], image_env, data, timeout=300)
    listed = _run([str(venv / "bin" / "visionq"), "models", "list", "--json"], image_env, data, 60)
    names = {json.loads(line)["name"] for line in listed.splitlines()}
    assert names == {constants.DEFAULT_MODEL, constants.DEFAULT_MODEL + constants.INT8_SUFFIX}
    # The installed package carries its migrations: a fresh database migrates.
    migrate = f"from visionq.store import migrate_database; migrate_database('sqlite:///{data}/check.db')"
    _run([str(python), "-c", migrate], image_env, data, 120)
