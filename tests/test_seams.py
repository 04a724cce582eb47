"""The seams between layers: the error tree, the wire protocol, the run state's view."""

from __future__ import annotations

import ast
import pickle
import re
from pathlib import Path

import pytest

import mapnb
from mapnb import errors
from mapnb.errors import ErrorKind, ItemError, MapnbError
from mapnb.events import RunStatus
from mapnb.protocol import ENDED, FINISHED, Ended, Finished, Log, Started, typed

PKG = Path(mapnb.__file__).parent


def _all_subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _all_subclasses(sub)
    return out


def test_the_error_tree_in_errors_docstring_is_the_whole_tree():
    """Every exception class mapnb defines appears in the tree drawn in errors.py, under
    its real parent, and the drawing names nothing that does not exist."""
    import mapnb.backends.local  # noqa: F401  (everything that defines an error is loaded)
    import mapnb.cache  # noqa: F401
    import mapnb.journal  # noqa: F401

    drawn: dict[str, str | None] = {}  # class -> parent as drawn (None: a root)
    stack: list[tuple[int, str]] = []
    for line in errors.__doc__.split("::", 1)[1].split("\n\n")[1].splitlines():
        m = re.match(r"^[\s│]*(?:[├└]── )?(\w+)", line)
        assert m, line
        depth, name = m.start(1), m.group(1)  # a child's name starts further right
        while stack and stack[-1][0] >= depth:
            stack.pop()
        drawn[name] = stack[-1][1] if stack else None
        stack.append((depth, name))
    ours = {c for c in _all_subclasses(MapnbError) if c.__module__.startswith("mapnb")}
    assert {c.__name__ for c in ours} | {"MapnbError", "RunInterrupted", "NotRetried"} == set(drawn)
    for cls in ours:
        parent = next(b for b in cls.__mro__[1:] if issubclass(b, MapnbError) or b is MapnbError)
        assert drawn[cls.__name__] == parent.__name__, cls
    assert issubclass(mapnb.RunInterrupted, KeyboardInterrupt)
    assert not issubclass(mapnb.NotRetried, MapnbError)  # the user's to raise, not mapnb's


@pytest.mark.parametrize("backend", ["local", "threads"])
def test_an_item_that_raises_not_retried_fails_at_once(backend):
    from . import tasks

    run = mapnb.map_task(tasks.gives_up, retries=3, backend=backend, progress=False).submit(x=[1])
    run.wait(60)
    (err,) = run.errors
    assert run.attempts == [1] and err.final and not err.retryable and err.type == "NotRetried"


def test_item_error_kinds_are_an_enum_and_a_typo_fails_at_once():
    err = ItemError("timeout", "TimeoutError", "too slow")
    assert err.kind is ErrorKind.TIMEOUT and err.kind == "timeout"
    assert pickle.loads(pickle.dumps(err)) == err
    with pytest.raises(ValueError, match="not a valid ErrorKind"):
        ItemError("tiemout", "TimeoutError", "too slow")


def test_every_kind_the_code_uses_is_declared():
    """No ItemError is made with a kind outside ErrorKind (they used to drift)."""
    kinds = {k.value for k in ErrorKind}
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ItemError" and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant):
                    assert first.value in kinds, f"{path.name}:{node.lineno}: {first.value!r}"


def test_records_are_named_and_travel_as_plain_tuples():
    fin = Finished(7, 3, 1, True, b"x", 0.5, 0.75)
    assert fin[0] == FINISHED and (fin.index, fin.ok, fin.remote) == (3, True, None)
    back = pickle.loads(pickle.dumps([fin, Ended(7)]))
    assert type(back[0]) is tuple and back[0] == tuple(fin)  # no class on the wire
    assert typed(back[1]) == Ended(7) and typed(back[1]).culprit is None
    assert typed((ENDED, 7, None, False)).all_items is False  # trailing fields may be left out
    assert Log(1, 2, 1, "stdout", "hi").text == "hi" and Started(1, 2, 1, 0.0).t0 == 0.0


def test_run_state_is_read_through_a_view():
    run = mapnb.map_task(abs, backend="sequential", progress=False).submit(x=[-1, 2])
    run.wait(30)
    assert run.state is RunStatus.SUCCEEDED and run.state == "succeeded"
    assert list(run.view.outputs) == [1, 2] and run.view.succeeded() == 2
    assert not hasattr(run.view, "__dict__")  # nothing can be set on it
    with pytest.raises(AttributeError):
        run.view.n = 3  # type: ignore[misc]


def test_one_frozen_spec_drives_the_run_and_recover(tmp_path, monkeypatch):
    """map_task validates once into a MapSpec; with_overrides replaces it; the journal keeps
    it, and recover() rebuilds the map task from it; an entry written before the spec
    existed (a dict of its fields) still recovers."""
    import dataclasses

    from mapnb import journal
    from mapnb.spec import CacheSettings, MapSpec, Options

    monkeypatch.setenv("MAPNB_HOME", str(tmp_path))
    mt = mapnb.map_task(abs, retries=2, backend="sequential", progress=False)
    assert isinstance(mt.spec, MapSpec) and mt.spec.options.retries == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        mt.spec.name = "other"  # type: ignore[misc]
    bigger = mt.with_overrides(requests=mapnb.Resources(cpu=1))
    assert bigger.spec == dataclasses.replace(mt.spec, requests=mapnb.Resources(cpu=1))
    run = mt.submit(x=[-1, -2])
    run.wait(30)
    again = mapnb.recover(run.id)
    again.wait(30)
    assert again.outputs == [1, 2] and again._engine.job.fn is not None

    old = {  # the journal's entry as mapnb 0.1.0 wrote it
        "fn": abs, "name": "abs", "names": ("x",), "inputs": [(-3,)], "axes": None,
        "options": Options(retries=1), "cache": CacheSettings(), "progress": False,
        "requests": None, "limits": None, "backend": "sequential",
    }  # fmt: skip
    journal.Journal("oldformat123", ("x",), 1, old).close()
    back = mapnb.recover("oldformat123")
    back.wait(30)
    assert back.outputs == [3] and back.state == "succeeded"


def test_layers_import_only_downwards():
    """The caller's core and the worker side never import the notebook layer (mapnb.jupyter),
    and nothing outside the local backend imports its worker loop."""
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).as_posix()
        if rel.startswith("jupyter/") or rel == "__init__.py":
            continue  # the notebook layer itself, and the package that registers it
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = "." * node.level + (node.module or "")
                layer = target.lstrip(".").split(".")
                assert "jupyter" not in layer or layer[0] not in ("", "mapnb", "jupyter"), f"{rel} imports {target}"
                if not rel.startswith("backends/local/"):
                    assert not target.endswith("local.serve"), f"{rel} imports {target}"


def _imports() -> dict[str, set[str]]:
    """mapnb's modules and the mapnb modules each imports (lazy imports included, imports
    for type checking only left out)."""
    mods = {}
    for path in PKG.rglob("*.py"):
        name = ".".join(("mapnb", *path.relative_to(PKG).with_suffix("").parts))
        mods[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text())
        typing_only = {
            id(n)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
            for n in ast.walk(block)
        }
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join([*base, node.module] if node.module else base)
                # ``from . import name`` imports the module ``name`` when there is one.
                subs = {f"{target}.{a.name}" for a in node.names} & mods.keys()
                for cand in subs or {target}:
                    if cand in mods and cand != mod:
                        graph[mod].add(cand)
            elif isinstance(node, ast.Import):
                graph[mod] |= {a.name for a in node.names if a.name in mods and a.name != mod}
    return graph


def test_no_import_circle():
    """No module imports, even lazily, a module that imports it back (the packages' own
    __init__ files, which gather public names, aside)."""
    graph = _imports()
    packages = {"mapnb", "mapnb.backends", "mapnb.flyte", "mapnb.jupyter", "mapnb.backends.local"}
    graph = {m: {t for t in ts if t not in packages} for m, ts in graph.items() if m not in packages}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m == goal:
                return True
            if m not in seen:
                seen.add(m)
                todo += graph.get(m, ())
        return False

    circles = sorted((a, b) for a, targets in graph.items() for b in targets if reaches(b, a))
    assert not circles, circles
