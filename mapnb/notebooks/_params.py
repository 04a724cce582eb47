"""Parameters as papermill handles them: parsed from the command line or a file, checked
against the cell tagged ``parameters``, and injected after it as an
``injected-parameters`` cell."""

from __future__ import annotations

import ast
import copy
import json
import warnings
from pathlib import Path
from typing import Any

from ..errors import InvalidMapError

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"


class ParameterWarning(UserWarning):
    """A parameter the notebook does not declare, or a notebook with no ``parameters`` cell."""


def parse_value(text: str) -> Any:
    """A command-line value: a Python literal, else YAML, else the text itself.

    >>> parse_value("3"), parse_value("[1, 2]"), parse_value("adam"), parse_value("{a: 1}")
    (3, [1, 2], 'adam', {'a': 1})
    """
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    try:
        import yaml
    except ImportError:  # PyYAML is optional: without it, what is not a literal is text
        return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if value is None and text.strip() not in ("null", "~", "") else value


def split_values(text: str) -> list[str]:
    """Split ``V1,V2,...`` on the commas outside brackets and quotes.

    >>> split_values("0.1,[1, 2],'a,b'")
    ['0.1', '[1, 2]', "'a,b'"]
    """
    parts, buf, depth, quote = [], [], 0, ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    parts.append("".join(buf))
    return [p.strip() for p in parts]


def read_file(path: str | Path) -> dict[str, Any]:
    """The parameters in a YAML (or JSON) file: a mapping of names to values."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise InvalidMapError(f"parameters file {str(path)!r} cannot be read: {e.strerror or e}") from None
    try:
        import yaml

        data = yaml.safe_load(text)
    except ImportError:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise InvalidMapError(
                f"parameters file {str(path)!r} is not JSON ({e}); for YAML, pip install pyyaml"
            ) from None
    except Exception as e:  # yaml.YAMLError, without importing yaml at module level
        raise InvalidMapError(f"parameters file {str(path)!r} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise InvalidMapError(
            f"parameters file {str(path)!r} must hold a mapping of names to values; got {type(data).__name__}"
        )
    return data


def check_names(params: dict[str, Any], what: str) -> None:
    """Parameter names must be Python names whose values can be written as literals."""
    for name, value in params.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise InvalidMapError(f"{what}: parameter names must be Python names; got {name!r}")
        try:
            same = ast.literal_eval(repr(value)) == value
        except Exception:
            same = False
        if not same:
            raise InvalidMapError(
                f"{what}: parameter {name}={value!r} cannot be written into a notebook; "
                "use numbers, strings, booleans, None, and lists, tuples or dicts of them"
            )


def parameters_cell(nb: Any) -> int | None:
    """The index of the cell tagged ``parameters``, or None."""
    for i, cell in enumerate(nb.cells):
        if PARAMETERS_TAG in cell.get("metadata", {}).get("tags", []):
            return i
    return None


def declared(nb: Any) -> set[str] | None:
    """The names the ``parameters`` cell assigns, or None when there is no such cell."""
    i = parameters_cell(nb)
    if i is None:
        return None
    names: set[str] = set()
    try:
        tree = ast.parse(_python_source(nb.cells[i].source))
    except SyntaxError:
        return names
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        for t in targets:
            for n in ast.walk(t) if t is not None else ():
                if isinstance(n, ast.Name):
                    names.add(n.id)
    return names


def _python_source(source: str) -> str:
    # IPython magics and shell escapes are not Python: blank them out before parsing.
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def check_against(nb: Any, params: dict[str, Any], where: str) -> None:
    """Warn, as papermill does, about what the notebook does not declare."""
    if not params:
        return
    names = declared(nb)
    if names is None:
        warnings.warn(
            f"{where} has no cell tagged 'parameters': the parameters are injected at the top",
            ParameterWarning,
            stacklevel=3,
        )
        return
    unknown = sorted(set(params) - names)
    if unknown:
        warnings.warn(
            f"{where} does not declare {', '.join(unknown)} in its 'parameters' cell "
            f"(it declares {', '.join(sorted(names)) or 'nothing'}); injected anyway",
            ParameterWarning,
            stacklevel=3,
        )


def inject(nb: Any, params: dict[str, Any]) -> Any:
    """A copy of ``nb`` with an ``injected-parameters`` cell after the ``parameters`` cell
    (at the top without one); an earlier injected cell is replaced, as papermill does."""
    import nbformat

    nb = copy.deepcopy(nb)
    nb.cells = [c for c in nb.cells if INJECTED_TAG not in c.get("metadata", {}).get("tags", [])]
    if not params:
        return nb
    lines = ["# Parameters"] + [f"{name} = {value!r}" for name, value in params.items()]
    cell = nbformat.v4.new_code_cell("\n".join(lines) + "\n", metadata={"tags": [INJECTED_TAG]})
    cell.pop("id", None)
    i = parameters_cell(nb)
    nb.cells.insert(0 if i is None else i + 1, cell)
    if nb.nbformat == 4 and nb.nbformat_minor >= 5:
        cell["id"] = "injected-parameters"
    return nb
