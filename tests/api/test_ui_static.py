"""The web UI's static files served by the API at "/", without shadowing any API route."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from pzone.tilt import TILT_CLASSES
from pzone_api.main import STATIC_DIR
from tests.support.api import make_app

pytestmark = pytest.mark.integration

# ES modules load only with a JavaScript MIME type; both spellings are valid.
JS_TYPES = ("text/javascript", "application/javascript")
# Every script, views/ and its subfolders included: the page loads each one as a module of its own.
SCRIPTS = sorted(p.relative_to(STATIC_DIR).as_posix() for p in STATIC_DIR.rglob("*.js"))
ASSETS = {
    **dict.fromkeys(SCRIPTS, JS_TYPES),
    "app.css": ("text/css",),
    "favicon.svg": ("image/svg+xml",),
}
# `import … from "./x.js"` and `import("./x.js")`: every static and dynamic import of a module.
IMPORT = re.compile(r"""(?:\bfrom\s*|\bimport\s*\(?\s*)["']([^"']+)["']""")


@pytest.fixture
def client(sqlite_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(make_app(sqlite_url, tmp_path / "data")) as test_client:
        yield test_client


def media_type(response: httpx.Response) -> str:
    return response.headers["content-type"].split(";")[0].strip()


def test_index_is_served_at_the_root(client: TestClient) -> None:
    for path in ("/", "/index.html"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert media_type(response) == "text/html"
        assert '<script type="module" src="app.js"></script>' in response.text
        assert 'href="app.css"' in response.text


@pytest.mark.parametrize("name", sorted(ASSETS))
def test_assets_have_their_content_types(client: TestClient, name: str) -> None:
    response = client.get(f"/{name}")
    assert response.status_code == 200
    assert media_type(response) in ASSETS[name]
    assert response.content == (STATIC_DIR / name).read_bytes()


def test_api_routes_win_over_the_static_mount(client: TestClient) -> None:
    health = client.get("/api/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert client.get("/openapi.json").json()["info"]["title"] == "P-ZONE API"
    assert client.get("/api/auth/me").status_code == 401  # the API's answer, not a static file
    missing = client.get("/api/no-such-route")
    assert missing.status_code == 404 and "<html" not in missing.text.lower()
    assert client.get("/no-such-file.js").status_code == 404


def test_every_route_wins_over_the_ui(client: TestClient) -> None:
    """Every documented GET route answers itself (401, 403, 200 …), not the static files' bare 404."""
    paths = client.get("/openapi.json").json()["paths"]
    checked = 0
    for template, operations in paths.items():
        if "get" not in operations:
            continue
        path = re.sub(r"\{[^}]+\}", "x", template)
        response = client.get(path)
        assert not (response.status_code == 404 and response.json() == {"detail": "Not Found"}), path
        assert "<html" not in response.text[:200].lower() or path == "/docs" or path.startswith("/redoc"), (
            path
        )
        checked += 1
    assert checked >= 5


def test_routes_added_after_create_app_still_win(sqlite_url: str, tmp_path: Path) -> None:
    """The UI is the router's fallback, not a mount at "/" that would shadow routers included later."""
    app = make_app(sqlite_url, tmp_path / "data")
    later = APIRouter(prefix="/api/later")

    @later.get("/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    @later.post("/ping")
    def ping_post() -> dict[str, str]:
        return {"pong": "post"}

    app.include_router(later)
    with TestClient(app) as test_client:
        assert test_client.get("/api/later/ping").json() == {"pong": "yes"}
        assert test_client.post("/api/later/ping").json() == {"pong": "post"}
        assert test_client.get("/").status_code == 200  # and the UI is still there


def test_the_ui_needs_nothing_from_the_internet() -> None:
    """No CDN, no web fonts, no external script: the machines have no internet (the SVG namespace is no fetch)."""
    external = re.compile(r"(?:https?:)?//(?!www\.w3\.org/2000/svg)[a-z0-9.-]+\.[a-z]{2,}/", re.IGNORECASE)
    files = [p for p in STATIC_DIR.rglob("*") if p.suffix in {".html", ".js", ".css", ".svg"}]
    names = {p.relative_to(STATIC_DIR).as_posix(): p for p in files}
    assert set(names) >= {"index.html", *ASSETS}
    for name, path in names.items():
        text = path.read_text(encoding="utf-8")
        assert not external.search(text), f"{name} refers to {external.search(text)}"
        assert "@import" not in text and "@font-face" not in text, name


def imports_of(script: str) -> list[str]:
    """The scripts (relative to STATIC_DIR) that one script imports, each specifier resolved as a browser would."""
    text = (STATIC_DIR / script).read_text(encoding="utf-8")
    found = []
    for specifier in IMPORT.findall(text):
        assert specifier.startswith(("./", "../")), f"{script} imports {specifier!r}: only the UI's own files"
        target = (STATIC_DIR / script).parent / specifier
        assert target.resolve().is_relative_to(STATIC_DIR.resolve()), (
            f"{script} imports {specifier} outside static/"
        )
        found.append(target.resolve().relative_to(STATIC_DIR.resolve()).as_posix())
    return found


def test_every_script_is_imported_present_and_served(client: TestClient) -> None:
    """From index.html's app.js, every import leads to a file the API serves as JavaScript, and every script is used."""
    reached, todo = set(), ["app.js"]
    while todo:
        script = todo.pop()
        if script in reached:
            continue
        reached.add(script)
        for target in imports_of(script):
            assert (STATIC_DIR / target).is_file(), f"{script} imports {target}, which is missing"
            response = client.get(f"/{target}")
            assert response.status_code == 200 and media_type(response) in JS_TYPES, target
            todo.append(target)
    assert reached == set(SCRIPTS)  # no script left that nothing loads
    assert {"views/auth.js", "views/upload.js", "views/history.js", "views/dashboard.js"} <= reached


# Imports every module into Node (so that every named import must match an export, and every file must parse), with
# the least of a DOM the modules touch at import time; app.js itself starts the app and is only parsed.
MODULES_CHECK = """
globalThis.document = { cookie: "" };
const root = process.argv[2];
for (const name of process.argv.slice(3)) {
  if (name === "app.js") continue;
  await import(new URL(name, root));
}
console.log("ok");
"""


def test_every_module_links_in_node(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    copy = tmp_path / "static"
    shutil.copytree(STATIC_DIR, copy)
    (copy / "package.json").write_text('{"type": "module"}', encoding="utf-8")  # .js as ES modules, any Node
    for script in SCRIPTS:
        checked = subprocess.run(
            [node, "--check", str(copy / script)], capture_output=True, text=True, timeout=60
        )
        assert checked.returncode == 0, f"{script}: {checked.stderr}"
    check = copy / "check.mjs"
    check.write_text(MODULES_CHECK, encoding="utf-8")
    done = subprocess.run(
        [node, str(check), copy.as_uri() + "/", *SCRIPTS], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_no_script_is_a_monolith() -> None:
    """One job per script: views and their sections in modules of their own, none much over 500 lines."""
    for script in SCRIPTS:
        lines = (STATIC_DIR / script).read_text(encoding="utf-8").count("\n")
        assert lines <= 500, f"{script} has {lines} lines"


def test_the_tilt_states_are_spelled_once() -> None:
    """dom.js's TILT_STATES is the UI's one list of the tilt classes, the same as pzone.tilt's; chart.js colours them."""
    dom = (STATIC_DIR / "dom.js").read_text(encoding="utf-8")
    spelled = re.search(r"export const TILT_STATES = \[([^\]]*)\];", dom)
    assert spelled is not None
    assert tuple(json.loads(f"[{spelled.group(1)}]")) == TILT_CLASSES
    listing = re.compile(r"\[\s*" + r"\s*,\s*".join(f'"{name}"' for name in TILT_CLASSES[:2]))
    repeated = [s for s in SCRIPTS if listing.search((STATIC_DIR / s).read_text(encoding="utf-8"))]
    assert repeated == ["dom.js"], (
        f"the tilt states are listed again in {repeated}; import TILT_STATES instead"
    )
    # chart.js stands alone (it is also run on its own, below): its colour per state must cover the same states.
    chart = (STATIC_DIR / "chart.js").read_text(encoding="utf-8")
    colors = re.search(r"const STATE_COLORS = \{([^}]*)\}", chart)
    assert colors is not None
    assert tuple(re.findall(r"(\w+):", colors.group(1))) == TILT_CLASSES


def test_the_dashboard_draws_live_accuracy() -> None:
    dashboard = (STATIC_DIR / "views" / "dashboard.js").read_text(encoding="utf-8")
    accuracy = (STATIC_DIR / "views" / "dashboard" / "accuracy.js").read_text(encoding="utf-8")
    assert '"/api/accuracy"' in dashboard and "accuracyChart(" in accuracy
    assert "export function accuracyChart" in (STATIC_DIR / "chart.js").read_text(encoding="utf-8")


# A DOM of the least the chart uses (createElementNS, setAttribute, append), so that Node can run it.
ACCURACY_CHART_CHECK = """
class El { constructor(tag) { this.tag = tag; this.attrs = {}; this.children = []; this.textContent = ""; }
  setAttribute(k, v) { this.attrs[k] = v; } append(...c) { this.children.push(...c); } }
globalThis.document = { createElementNS: (_ns, tag) => new El(tag) };
const { accuracyChart } = await import(process.argv[2]);
const point = (t, accuracy, n) => ({ t, accuracy, macro_f1: accuracy / 2, n });
const versions = [
  { model_version: "v1", points: [point("2026-03-01T11:00:00Z", 1, 3), point("2026-03-01T11:15:00Z", 0.5, 2),
                                  point("2026-03-01T11:45:00Z", 0.75, 4)] },
  { model_version: "v2", points: [point("2026-03-01T12:00:00Z", 0.25, 4)] },
  { model_version: "v3", points: [] },
];
const root = accuracyChart(versions, { since: "2026-03-01T11:00:00Z", until: "2026-03-01T12:10:00Z", bucketS: 900 });
const series = root.children.filter((c) => c.attrs.class === "accuracy-series");
const empty = accuracyChart([], { since: "2026-03-01T11:00:00Z", until: "2026-03-01T12:10:00Z" });
console.log(JSON.stringify({
  label: root.attrs["aria-label"],
  series: series.map((s) => ({ version: s.attrs["data-model-version"], d: s.children[0].attrs.d,
                               dots: s.children.length - 1, color: s.children[0].attrs.stroke })),
  empty: empty.attrs["aria-label"],
}));
"""


def test_accuracy_chart_draws_one_line_per_version(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    script = tmp_path / "check.mjs"
    script.write_text(ACCURACY_CHART_CHECK, encoding="utf-8")
    chart = tmp_path / "chart.mjs"  # .mjs: Node loads it as an ES module without a package.json
    chart.write_bytes((STATIC_DIR / "chart.js").read_bytes())
    done = subprocess.run([node, str(script), chart.as_uri()], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["label"] == "Live accuracy by model version: v1 latest 75%; v2 latest 25%."
    v1, v2 = out["series"]  # a version without points draws nothing
    assert (v1["version"], v1["dots"], v2["version"], v2["dots"]) == ("v1", 3, "v2", 1)
    assert v1["d"].count("M") == 2 and v1["d"].count("L") == 1  # the bucket left out (11:30) breaks the line
    assert v1["color"] != v2["color"]
    assert "no scored predictions" in out["empty"]
