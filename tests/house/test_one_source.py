"""One source per contract: each test fails when a second spelling of a contract appears in the code.

`duplicates` sees runs of six lines or more; these contracts are one line each (a tuple of class names, a default
angle, a union type), so they are looked for by shape in the syntax tree of every module that could copy them
(:data:`tests.support.code_scan.SOURCE_ROOTS`). The model tier's HTTP contract has its own module of such tests,
test_contracts.py.
"""

from __future__ import annotations

import ast
import re

import pytest

from tests.support.code_scan import SOURCE_ROOTS, modules, where
from tests.support.paths import REPO

pytestmark = pytest.mark.unit

ONE_PLACE = "core/src/pzone/tilt.py"
CLASS_NAMES = {"upright", "tilted", "fallen"}
# upright_max_deg, FALLEN_MIN_DEG, tilt_upright_max_deg... (not mean_fallen_s, a duration)
THRESHOLD_NAME = re.compile(r"(upright|fallen)_(max|min)|(max|min)_(upright|fallen)", re.IGNORECASE)


def tilt_class_spellings(path: str, tree: ast.Module) -> list[str]:
    """Collections that list two or more of the tilt classes by name (tuples, lists, sets, dict keys, Literal[...],
    an enum's members)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            items = node.elts
        elif isinstance(node, ast.Dict):
            items = [key for key in node.keys if key is not None]
        elif isinstance(node, ast.ClassDef):
            items = [stmt.value for stmt in node.body if isinstance(stmt, ast.Assign)]
        else:
            continue
        names = {item.value for item in items if isinstance(item, ast.Constant) and item.value in CLASS_NAMES}
        if len(names) >= 2:
            found.append(where(path, node))
    return found


def threshold_spellings(path: str, tree: ast.Module) -> list[str]:
    """A number bound to a name about the upright or fallen threshold: an assignment, a field or a default."""
    found = []
    for node in ast.walk(tree):
        pairs: list[tuple[str, ast.expr | None]] = []
        if isinstance(node, ast.Assign):
            pairs = [(t.id, node.value) for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            pairs = [(node.target.id, node.value)]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            positional = args.posonlyargs + args.args
            pairs = list(
                zip(
                    [a.arg for a in positional[len(positional) - len(args.defaults) :]],
                    args.defaults,
                    strict=True,
                )
            )
            pairs += [
                (a.arg, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None
            ]
        elif isinstance(node, ast.keyword) and node.arg:
            pairs = [(node.arg, node.value)]
        for name, value in pairs:
            if THRESHOLD_NAME.search(name) and _is_number(value):
                found.append(where(path, value or node))
    return found


def _is_number(node: ast.expr | None) -> bool:
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Field" and node.args:
        node = node.args[0]  # pydantic's Field(default, ...)
    return isinstance(node, ast.Constant) and type(node.value) in (int, float)


def params_file_readers(path: str, tree: ast.Module) -> list[str]:
    """YAML loads of params.yaml (any yaml.*load* call whose argument names params)."""
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and "load" in node.func.attr
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "yaml"
            and "params" in ast.unparse(node).lower()
        ):
            found.append(where(path, node))
    return found


def store_unions(path: str, tree: ast.Module) -> list[str]:
    """``LocalObjectStore | S3ObjectStore`` (either order, or Union[...]) where the ObjectStore protocol belongs."""
    found = []
    for node in ast.walk(tree):
        union = (isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr)) or (
            isinstance(node, ast.Subscript) and ast.unparse(node.value).endswith("Union")
        )
        text = ast.unparse(node) if union else ""
        if "LocalObjectStore" in text and "S3ObjectStore" in text:
            found.append(where(path, node))
    return found


def definitions(tree: ast.Module, name: str) -> list[ast.AST]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name]


def calls(tree: ast.Module, dotted: str) -> list[ast.AST]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func) == dotted]


def test_the_tilt_classes_are_named_in_one_place() -> None:
    spellings = [hit for path, tree in modules() for hit in tilt_class_spellings(path, tree)]
    assert [hit.split(":")[0] for hit in spellings] == [ONE_PLACE], (
        f"use pzone.tilt.TILT_CLASSES: {spellings}"
    )


def test_the_tilt_thresholds_have_one_default() -> None:
    spellings = [hit for path, tree in modules() for hit in threshold_spellings(path, tree)]
    assert [hit.split(":")[0] for hit in spellings] == [ONE_PLACE] * 2, (
        f"read the defaults from pzone.tilt (training: from params.yaml): {spellings}"
    )


def test_params_yaml_is_read_by_one_loader() -> None:
    readers = [hit for path, tree in modules() for hit in params_file_readers(path, tree)]
    loaders = [path for path, tree in modules() if definitions(tree, "load_params")]
    assert loaders == ["pipelines/src/pzone_pipelines/params.py"]
    assert all(hit.startswith("pipelines/src/pzone_pipelines/params.py:") for hit in readers), readers


def test_mlflow_is_configured_in_one_place() -> None:
    places = [path for path, tree in modules() if definitions(tree, "configure_mlflow")]
    setters = [path for path, tree in modules() if calls(tree, "mlflow.set_tracking_uri")]
    assert places == setters == ["pipelines/src/pzone_pipelines/tracking.py"]


def test_the_registry_aliases_are_named_in_one_place() -> None:
    """The MLflow aliases register moves and training and packaging look up (a record's "champion" key aside)."""
    aliases = {"champion", "challenger", "previous-champion"}
    found = [
        where(path, node)
        for path, tree in modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in aliases and not _is_dict_key(tree, node)
    ]
    assert {hit.split(":")[0] for hit in found} == {"pipelines/src/pzone_pipelines/tracking.py"}, found


@pytest.mark.parametrize(
    ("code", "spelled"),
    [
        ('alias = "champion"', True),
        ('client.get_model_version_by_alias(name, "challenger")', True),
        ('record = {"champion": version}', False),
        ('version = record["champion"]["version"]', False),
    ],
)
def test_a_record_key_is_not_an_alias_spelling(code: str, spelled: bool) -> None:
    tree = ast.parse(code)
    hits = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and n.value in {"champion", "challenger"} and not _is_dict_key(tree, n)
    ]
    assert bool(hits) is spelled


def _is_dict_key(tree: ast.Module, node: ast.AST) -> bool:
    """A record's key: written in a dict display, or read back with a subscript."""
    return any(
        (isinstance(d, ast.Dict) and any(k is node for k in d.keys))
        or (isinstance(d, ast.Subscript) and d.slice is node)
        for d in ast.walk(tree)
    )


def test_the_object_store_protocol_is_the_type() -> None:
    everywhere = [REPO / "tests", *SOURCE_ROOTS]
    unions = [
        hit
        for root in everywhere
        for path in sorted(root.rglob("*.py"))
        for hit in store_unions(
            path.relative_to(REPO).as_posix(), ast.parse(path.read_text(encoding="utf-8"))
        )
    ]
    assert unions == [], "annotate with pzone.storage.ObjectStore"


@pytest.mark.parametrize(
    ("check", "code", "hits"),
    [
        (tilt_class_spellings, 'LABELS = ("upright", "tilted", "fallen")', 1),
        (tilt_class_spellings, 'STYLE = {"upright": "green", "fallen": "red"}', 1),
        (tilt_class_spellings, 'Name = Literal["upright", "tilted"]', 1),
        (tilt_class_spellings, 'class S(StrEnum):\n    A = "upright"\n    B = "fallen"', 1),
        (tilt_class_spellings, 'state = "upright"', 0),
        (threshold_spellings, "UPRIGHT_MAX_DEG = 20.0", 1),
        (threshold_spellings, "class P:\n    fallen_min_deg: float = 60", 1),
        (threshold_spellings, "def f(x, upright_max_deg=20.0, *, fallen_min_deg=60.0): ...", 2),
        (threshold_spellings, "s = Settings(tilt_upright_max_deg=Field(20.0))", 1),
        (threshold_spellings, "upright_max_deg = params.upright_max_deg", 0),
        (params_file_readers, 'p = yaml.safe_load(Path("params.yaml").read_text())', 1),
        (params_file_readers, "p = yaml.safe_load(lock_path.read_text())", 0),
        (store_unions, "def f(store: LocalObjectStore | S3ObjectStore) -> None: ...", 1),
        (store_unions, "Store = Union[S3ObjectStore, LocalObjectStore]", 1),
        (store_unions, "shared = methods(LocalObjectStore) & methods(S3ObjectStore)", 0),
        (threshold_spellings, "def f(mean_fallen_s=20.0): ...", 0),
    ],
)
def test_the_checks_find_what_they_look_for(check, code: str, hits: int) -> None:  # type: ignore[no-untyped-def]
    assert len(check("x.py", ast.parse(code))) == hits
