"""The front's nginx.conf for real: Debian's nginx runs k8s/base/front/nginx.conf in front of the real API.

Only what must differ on a test machine is replaced (the listen address, the upstream's address, the html root and
the /tmp paths), each exactly once, so the rest of the file under test is the one the image and the ConfigMap ship.
nginx runs as an unprivileged user (as in the container); behind it runs `pzone api` on a SQLite file migrated by
`pzone db upgrade`. Checked: the static UI, /healthz, the /api/ proxy (the back-end's own answer, the client's Host
kept for the API's same-origin check), security headers and gzip, the body-size limit (413 before the API sees
anything), the rate limits (429, stricter on log-in) and `nginx -t`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.paths import REPO
from tests.support.services import free_port, wait_port

pytestmark = pytest.mark.integration

CONF = REPO / "k8s" / "base" / "front" / "nginx.conf"
STATIC = REPO / "serving" / "api" / "src" / "pzone_api" / "static"
NGINX = Path(os.environ.get("PZONE_TEST_NGINX", "/usr/sbin/nginx"))
PZONE = Path(sys.executable).with_name("pzone")
TEMP_PATHS = (
    ("client_body_temp_path", "client_temp"),
    ("proxy_temp_path", "proxy_temp"),
    ("fastcgi_temp_path", "fastcgi_temp"),
    ("uwsgi_temp_path", "uwsgi_temp"),
    ("scgi_temp_path", "scgi_temp"),
)
NOBODY = 65534  # as root, nginx runs as nobody here: the container's nginx is not root either

if not NGINX.is_file():
    pytest.skip(f"no nginx at {NGINX} (./dev test installs Debian's)", allow_module_level=True)


def render(text: str, *, port: int, api_port: int, html: Path, workdir: Path) -> str:
    """The real file with exactly the test-specific values replaced; each replacement must happen once."""
    replacements = [
        ("listen 8080;", f"listen 127.0.0.1:{port};"),
        ("server pzone-api:8000;", f"server 127.0.0.1:{api_port};"),
        ("root /usr/share/nginx/html;", f"root {html};"),
        ("pid /tmp/nginx.pid;", f"pid {workdir / 'nginx.pid'};"),
        *[(f"{name} /tmp/{folder};", f"{name} {workdir / folder};") for name, folder in TEMP_PATHS],
    ]
    for old, new in replacements:
        assert text.count(old) == 1, f"expected exactly one {old!r} in {CONF}"
        text = text.replace(old, new)
    return text


def test_render_replaces_only_what_differs_on_a_test_machine() -> None:
    original = CONF.read_text()
    rendered = render(original, port=1, api_port=2, html=Path("/test/html"), workdir=Path("/test/work"))
    changed = [(a, b) for a, b in zip(original.splitlines(), rendered.splitlines(), strict=True) if a != b]
    assert len(changed) == 4 + len(TEMP_PATHS)
    for old, new in changed:
        assert old.split()[0] == new.split()[0]  # the same directive, another value
    # Nothing left (outside comments) that points at the container's paths or the cluster's names.
    directives = "\n".join(line.split("#")[0] for line in rendered.splitlines())
    for gone in ("pzone-api:8000", "/usr/share/nginx/html", " /tmp/", "8080"):
        assert gone not in directives
    assert not any(line.split()[:1] == ["user"] for line in original.splitlines())


# --- processes ------------------------------------------------------------------------------------------------


# The user nginx runs as here (None: this process's own, when it is not root), with no supplementary groups.
RUN_AS: int | None = NOBODY if os.geteuid() == 0 else None
EXTRA_GROUPS: list[int] | None = [] if RUN_AS is not None else None


def _give_away(path: Path) -> None:
    if RUN_AS is not None:
        os.chown(path, RUN_AS, RUN_AS)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@dataclass
class Api:
    url: str
    port: int
    log: Path


@dataclass
class Front:
    url: str
    conf: Path
    workdir: Path
    log: Path


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """`pzone api` on a SQLite file that `pzone db upgrade` migrated (settings isolated from the environment)."""
    tmp = tmp_path_factory.mktemp("api")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PZONE_", "AWS_"))}
    env.update(
        PZONE_DATA_DIR=str(tmp / "data"),
        PZONE_DATABASE_URL=f"sqlite:///{tmp / 'pzone.db'}",
        PZONE_LOG_LEVEL="INFO",
        PZONE_COOKIE_SECURE="false",
        # The API's own lock-outs stay out of the way of nginx's limit.
        PZONE_LOGIN_MAX_ATTEMPTS="1000",
        PZONE_LOGIN_MAX_PER_EMAIL="1000",
        PZONE_LOGIN_MAX_PER_ADDRESS="1000",
        COLUMNS="300",
    )
    migrated = subprocess.run(
        [str(PZONE), "db", "upgrade"], env=env, capture_output=True, text=True, timeout=60, cwd=tmp
    )
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    port = free_port()
    log = tmp / "api.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(PZONE), "api", "--port", str(port)], env=env, cwd=tmp, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/api/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield Api(url, port, log)
    finally:
        _stop(process)


@pytest.fixture
def front(api: Api) -> Iterator[Front]:
    """A fresh nginx (fresh rate-limit state) with the rendered file, as an unprivileged user."""
    workdir = Path(tempfile.mkdtemp(prefix="pzone-nginx-"))
    try:
        _give_away(workdir)
        port = free_port()
        conf = workdir / "nginx.conf"
        conf.write_text(render(CONF.read_text(), port=port, api_port=api.port, html=STATIC, workdir=workdir))
        _give_away(conf)
        log = workdir / "nginx.log"  # access log (/dev/stdout) and error log (stderr)
        with log.open("wb") as out:
            # nginx reopens /dev/stdout for its access log: the file must be the nginx user's, as a container
            # runtime hands its stdio to the container's user (runc chowns it).
            _give_away(log)
            process = subprocess.Popen(
                [str(NGINX), "-p", str(workdir), "-e", "stderr", "-c", str(conf), "-g", "daemon off;"],
                stdout=out,
                stderr=subprocess.STDOUT,
                user=RUN_AS,
                group=RUN_AS,
                extra_groups=EXTRA_GROUPS,
            )
        try:
            wait_port(port, process=process)
            yield Front(f"http://127.0.0.1:{port}", conf, workdir, log)
        finally:
            _stop(process)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- the checks -----------------------------------------------------------------------------------------------


def test_nginx_t_accepts_the_file(front: Front) -> None:
    result = subprocess.run(
        [str(NGINX), "-t", "-p", str(front.workdir), "-e", "stderr", "-c", str(front.conf)],
        stdout=subprocess.DEVNULL,  # the access log opens /dev/stdout, which a pipe would refuse to nobody
        stderr=subprocess.PIPE,
        text=True,
        timeout=30,
        user=RUN_AS,
        group=RUN_AS,
        extra_groups=EXTRA_GROUPS,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_static_ui_healthz_and_headers(front: Front) -> None:
    with httpx.Client(base_url=front.url, timeout=5) as client:
        index = client.get("/")
        assert index.status_code == 200
        assert index.text == (STATIC / "index.html").read_text()
        assert index.headers["content-type"].startswith("text/html")
        for name in (
            "content-security-policy",
            "x-content-type-options",
            "x-frame-options",
            "referrer-policy",
        ):
            assert name in index.headers, name
        assert "frame-ancestors 'none'" in index.headers["content-security-policy"]
        assert index.headers["cache-control"] == "no-cache"  # revalidated: the files are not fingerprinted
        assert "server" not in index.headers or "/" not in index.headers["server"]  # no version

        # A hash-route SPA: unknown paths are the UI too, and so are the scripts' folders (no directory 403).
        for path in ("/history/anything", "/views", "/views/", "/views/dashboard/"):
            other = client.get(path)
            assert other.status_code == 200 and other.text == index.text, path

        script = client.get("/app.js", headers={"Accept-Encoding": "gzip"})
        assert script.status_code == 200 and script.headers["content-encoding"] == "gzip"
        assert script.headers["content-type"].startswith(("application/javascript", "text/javascript"))
        assert script.content == (STATIC / "app.js").read_bytes()  # httpx decompressed it

        health = client.get("/healthz")
        assert health.status_code == 200 and health.text == "ok\n"
        assert client.post("/", content=b"x").status_code == 403  # the UI takes no writes


def test_every_script_is_served_as_javascript(front: Front) -> None:
    """The UI's modules, views/ and its subfolders included: a module loads only with a JavaScript content type."""
    scripts = sorted(p.relative_to(STATIC).as_posix() for p in STATIC.rglob("*.js"))
    assert "views/dashboard.js" in scripts
    with httpx.Client(base_url=front.url, timeout=5) as client:
        for name in scripts:
            script = client.get(f"/{name}")
            assert script.status_code == 200, name
            assert script.headers["content-type"].startswith(("application/javascript", "text/javascript")), (
                name
            )
            assert script.headers["cache-control"] == "no-cache", name
            assert "script-src 'self'" in script.headers["content-security-policy"], name
            assert script.content == (STATIC / name).read_bytes(), name


def test_api_is_proxied_with_the_back_ends_answer(front: Front, api: Api) -> None:
    direct = httpx.get(f"{api.url}/api/healthz", timeout=5)
    with httpx.Client(base_url=front.url, timeout=5) as client:
        proxied = client.get("/api/healthz", headers={"Accept-Encoding": "gzip"})
        assert proxied.status_code == 200
        assert proxied.content == direct.content and proxied.json() == direct.json()
        assert proxied.headers["content-type"] == direct.headers["content-type"]
        assert "content-encoding" not in proxied.headers  # API answers are never compressed (BREACH)
        assert "x-content-type-options" in proxied.headers

        # Host is passed with its port: a same-origin log-in passes the API's Origin check (401: no such user),
        # a cross-site one is refused by the API (403).
        body = {"email": "nobody@example.com", "password": "not the password"}
        same = client.post("/api/auth/login", json=body, headers={"Origin": front.url})
        assert same.status_code == 401, same.text
        cross = client.post("/api/auth/login", json=body, headers={"Origin": "http://evil.example"})
        assert cross.status_code == 403 and "Origin" in cross.text

        # The back-end's own errors pass through untouched.
        missing = client.get("/api/no-such-route")
        assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}


def test_a_body_over_the_limit_is_refused_before_the_api(front: Front, api: Api) -> None:
    marker = uuid.uuid4().hex
    with httpx.Client(base_url=front.url, timeout=10) as client:
        small = client.post(f"/api/probe-small-{marker}", content=b"x" * 1000)
        assert small.status_code in (404, 405)  # reached the API, which has no such route
        big = client.post(f"/api/probe-big-{marker}", content=b"x" * (1024 * 1024 + 1))
        assert big.status_code == 413
        assert big.json()["detail"]["code"] == "too_large"
        assert "x-content-type-options" in big.headers
        # The photo fallback takes a photo-sized body (the API answers: not signed in).
        files = {"file": ("photo.jpg", b"\xff\xd8" + b"x" * (3 * 1024 * 1024), "image/jpeg")}
        upload = client.post("/api/photos/upload", files=files, data={"device_id": "d1"})
        assert upload.status_code in (401, 403), upload.text
    time.sleep(0.3)  # let the API's log catch up
    log = api.log.read_text()
    assert f"probe-small-{marker}" in log  # the API logs what reaches it ...
    assert f"probe-big-{marker}" not in log  # ... and the oversized body never did


def test_bursts_over_the_rate_limit_get_429(front: Front) -> None:
    with httpx.Client(base_url=front.url, timeout=5) as client:
        statuses = [client.get("/api/healthz").status_code for _ in range(150)]
        assert statuses[:41].count(200) == 41  # the burst allowance
        assert 429 in statuses
        refused = client.get("/api/healthz")
        assert refused.status_code == 429
        assert refused.json()["detail"]["code"] == "rate_limited"
        assert client.get("/").status_code == 200  # the static UI is not limited
        assert client.get("/healthz").status_code == 200


def test_log_in_is_limited_more_strictly(front: Front) -> None:
    body = {"email": "nobody@example.com", "password": "not the password"}
    with httpx.Client(base_url=front.url, timeout=10) as client:
        answers = [client.post("/api/auth/login", json=body) for _ in range(14)]
    statuses = [a.status_code for a in answers]
    assert statuses[:11] == [401] * 11, statuses  # burst of 10 + the first one
    assert statuses[11:] == [429] * 3, statuses
    assert answers[-1].json()["detail"]["code"] == "rate_limited"
    # Far below the general API limit: the rest of the API still answers.
    with httpx.Client(base_url=front.url, timeout=5) as client:
        assert client.get("/api/healthz").status_code == 200
