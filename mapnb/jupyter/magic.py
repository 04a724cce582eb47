"""The ``%%map_task`` cell magic: a cell body mapped over lists, on the public API.

``%load_ext mapnb`` registers it. The line holds options and ``NAME=EXPR`` pairs; the body
becomes a function of the mapped names whose last expression is its output. Parsing lives
here; everything that runs goes through :func:`mapnb.map_task`.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import keyword
import linecache
import sys
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments

from .._code import with_filename
from ..api import map_task
from ..errors import BackendError, InvalidMapError, MapTaskError

_OPEN, _CLOSE = "([{", ")]}"


def split_line(line: str) -> list[str]:
    """Split a magic line on spaces outside brackets and string literals.

    >>> split_line('--retries 1 a=[1, 2] b=f(" x ", y)')
    ['--retries', '1', 'a=[1, 2]', 'b=f(" x ", y)']
    """
    tokens: list[str] = []
    buf: list[str] = []
    stack: list[str] = []  # the closing brackets expected, innermost last
    i = 0
    while i < len(line):
        ch = line[i]
        if ch in "'\"":  # a string literal is part of the token, whatever it holds
            end = _string_end(line, i)
            buf.append(line[i:end])
            i = end
            continue
        if ch.isspace() and not stack:
            if buf:
                tokens.append("".join(buf))
                buf = []
        else:
            _track_bracket(ch, stack, line)
            buf.append(ch)
        i += 1
    if stack:
        raise UsageError(f"missing {''.join(reversed(stack))!r} in the %%map_task line: {line.strip()}")
    if buf:
        tokens.append("".join(buf))
    return tokens


def _string_end(line: str, start: int) -> int:
    """Where the string literal that opens at ``line[start]`` ends (one past its quote)."""
    quote = line[start] * 3 if line.startswith(line[start] * 3, start) else line[start]
    i = start + len(quote)
    while i < len(line):
        if line[i] == "\\":  # an escape: the next character cannot end the string
            i += 2
        elif line.startswith(quote, i):
            return i + len(quote)
        else:
            i += 1
    raise UsageError(f"unterminated string {quote} in the %%map_task line: {line.strip()}")


def _track_bracket(ch: str, stack: list[str], line: str) -> None:
    """Keep ``stack`` (the closing brackets expected) up to date with ``ch``."""
    if ch in _OPEN:
        stack.append(_CLOSE[_OPEN.index(ch)])
    elif ch in _CLOSE and (not stack or stack.pop() != ch):
        raise UsageError(f"unbalanced {ch!r} in the %%map_task line: {line.strip()}")


def _identifier(what: str, name: str) -> str:
    if not name.isidentifier() or keyword.iskeyword(name):
        raise UsageError(f"{what} must be a Python name; got {name!r}")
    return name


class CellFunction:
    """A ``%%map_task`` body as a function of the mapped names.

    It carries its source, so that a traceback raised in a worker process shows the
    cell's lines, as it would in the notebook.
    """

    __name__ = __qualname__ = "%%map_task"
    __mapnb_cell__ = True

    def __init__(
        self, fn: Callable[..., Any], filename: str, source: str, body: str = "", name: str = ""
    ) -> None:
        # What the grid, errors and the run call it: --name, else the body's first line.
        self.__name__ = self.__qualname__ = name or title_of(body)
        self.fn = fn
        self.filename = filename
        self.source = source
        self.body = body  # what the cell computes: its cache identity, whatever the line says
        self.__signature__ = inspect.signature(fn)

    def __call__(self, **kwargs: Any) -> Any:
        if self.filename not in linecache.cache:
            lines = self.source.splitlines(keepends=True)
            linecache.cache[self.filename] = (len(self.source), None, lines, self.filename)
        if self.fn.__code__.co_filename != self.filename:
            # cloudpickle >= 3.1.3 ships code as "<dynamic-code>"; name the cell again so a
            # worker's traceback shows the cell's lines.
            self.fn.__code__ = with_filename(self.fn.__code__, self.filename)
        return self.fn(**kwargs)

    def __repr__(self) -> str:
        return f"<%%map_task body of {', '.join(self.__signature__.parameters)}>"


def title_of(body: str, width: int = 60) -> str:
    """The first line of code in a cell body, shortened: a run's title says what runs."""
    for line in body.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return "%%map_task: " + (line if len(line) <= width else line[: width - 1] + "\u2026")
    return "%%map_task"


def compile_body(
    body: str,
    names: list[str],
    namespace: dict[str, Any],
    filename: str,
    first_line: str = "",
    name: str = "",
) -> CellFunction:
    """Turn a cell body into a :class:`CellFunction` of ``names`` with ``namespace`` as globals.

    The value of a final expression statement is returned, as a cell's ``Out`` would be.
    """
    try:
        tree = ast.parse(body, filename)
    except SyntaxError as e:
        raise UsageError(
            f"the %%map_task body has a syntax error on line {(e.lineno or 0) + 1}: {e.msg}"
        ) from None
    if not tree.body:
        raise UsageError(
            "the %%map_task body is empty: below the %%map_task line, write the code to run "
            "for each item (its last expression is the item's output)"
        )
    if isinstance(tree.body[-1], ast.Expr):
        last = tree.body[-1]
        tree.body[-1] = ast.copy_location(ast.Return(value=last.value), last)
    ast.increment_lineno(tree, 1)  # line 1 of the cell is the %%map_task line
    args = ast.arguments(
        posonlyargs=[], args=[ast.arg(arg=n) for n in names], kwonlyargs=[], kw_defaults=[], defaults=[]
    )
    extra: dict[str, Any] = {"type_params": []} if sys.version_info >= (3, 12) else {}
    fdef = ast.FunctionDef(name="cell_body", args=args, body=tree.body, decorator_list=[], **extra)
    module = ast.Module(body=[fdef], type_ignores=[])
    ast.fix_missing_locations(module)
    local: dict[str, Any] = {}
    exec(compile(module, filename, "exec"), namespace, local)
    source = f"%%map_task {first_line}\n{body}"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    return CellFunction(local["cell_body"], filename, source, body, name)


@magics_class
class MapTaskMagics(Magics):
    """The ``%%map_task`` magic; see :meth:`map_task`."""

    _cells = 0

    @magic_arguments()
    @argument("--concurrency", type=int, metavar="N", help="at most N items run at once")
    @argument(
        "--min-success-ratio",
        type=float,
        metavar="R",
        help="succeed when at least ceil(n*R) items succeed (default 1); failed ones are None",
    )
    @argument(
        "--min-successes",
        type=int,
        metavar="N",
        help="succeed when at least N items succeed (wins over --min-success-ratio)",
    )
    @argument(
        "--run-all-sub-nodes",
        action="store_true",
        help="once the run cannot succeed, still run every item to the end (then fail)",
    )
    @argument("--retries", type=int, metavar="N", help="extra attempts per failed item")
    @argument("--timeout", type=float, metavar="S", help="seconds per attempt before it is killed")
    @argument(
        "--backend", default="local", metavar="NAME", help="local (default), threads, sequential, dask or flyte"
    )
    @argument("--address", metavar="ADDR", help="the Dask scheduler to run on (implies --backend dask)")
    @argument("--product", action="store_true", help="every combination of the lists (a sweep)")
    @argument("--cache", action="store_true", help="keep each item's output on disk; reuse it next time")
    @argument(
        "--cache-version", metavar="V", help="part of every cache key (default: from the cell's source)"
    )
    @argument("--cache-serialize", action="store_true", help="identical items running at once compute once")
    @argument("--cache-overwrite", action="store_true", help="run every item again and replace its entry")
    @argument(
        "--recover", metavar="RUN_ID", help="continue that run of the same items: what succeeded is kept"
    )
    @argument(
        "--task",
        metavar="NAME",
        help="map the notebook's function or task NAME (a @flytekit.task, flytekit.map_task(...), "
        "a partial) instead of a cell body",
    )
    @argument("--name", metavar="TITLE", help="the run's title (default: the body's first line)")
    @argument("--out", metavar="VAR", help="bind the DataFrame to VAR (the partial one on failure)")
    @argument("--run", metavar="VAR", help="bind the MapRun to VAR")
    @argument(
        "--no-wait",
        action="store_true",
        help="return at once; the grid keeps updating while other cells run (use --run)",
    )
    @argument(
        "inputs",
        nargs="*",
        metavar="NAME=EXPR",
        help="a mapped name and the list it takes, evaluated in the notebook; "
        "an EXPR may contain spaces inside brackets",
    )
    @no_var_expand  # EXPRs are Python: IPython's {x}/$x expansion would rewrite {1: 2} or {a, b}
    @line_cell_magic  # a line magic too, so that %map_task? finds the documentation
    def map_task(self, line: str, cell: str | None = None) -> Any:
        """Run the cell once per item, in parallel, with each ``NAME`` bound to its value.

        The value of the body's last expression is the item's output; ``print`` goes to
        the item's log. Names the body uses from the notebook (functions, constants,
        modules) travel to the worker processes. After a blocking run, the DataFrame is
        the cell's output. Example::

            %%map_task --concurrency 4 --out results x=[1, 2, 3] scale=[10, 20, 30]
            print("working on", x)
            {"x": x, "y": x * scale}

        A function or task of the notebook (a ``@flytekit.task``, ``flytekit.map_task(...)``)
        is mapped by name, on one line: ``%map_task --task square x=[1, 2, 3]``.
        """
        opts = self._parse(line)
        if cell is None and opts.task is None:
            raise UsageError(
                "%%map_task is a cell magic: put it on the first line of a cell, options and "
                "NAME=EXPR pairs after it, and the body to run per item below; or map a function "
                "of the notebook on one line: %map_task --task NAME x=[...] (see %map_task?)"
            )
        ns = self._user_ns()
        lists = _evaluate_inputs(opts.inputs, ns)
        _check_bindings(opts)
        fn = self._function(opts, line, cell, list(lists), ns)
        mt, run = _submit(fn, opts, lists)
        if opts.run:
            ns[opts.run] = run
        if opts.no_wait:
            run.show()
            return None
        return _wait(mt, run, opts, ns)

    def _function(self, opts: Any, line: str, cell: str | None, names: list[str], ns: dict[str, Any]) -> Any:
        """What runs per item: the notebook's ``--task NAME``, else the cell body."""
        if opts.task is not None:
            return _named_task(opts.task, cell, ns)
        MapTaskMagics._cells += 1
        filename = f"<map_task cell {MapTaskMagics._cells}>"
        return compile_body(cell or "", names, ns, filename, line, opts.name or "")

    def _user_ns(self) -> dict[str, Any]:
        """The notebook's namespace: where ``EXPR`` is evaluated and ``--out``/``--run`` bind."""
        if self.shell is None:  # a MapTaskMagics made by hand, outside IPython
            raise UsageError("%%map_task runs in an IPython shell: %load_ext mapnb there")
        return self.shell.user_ns

    def _parse(self, line: str) -> Any:
        tokens = [_unquote(t) for t in split_line(line)]
        parser = self.map_task.parser  # built by @magic_arguments
        try:
            return parser.parse_intermixed_args(tokens)
        except UsageError as e:
            hint = _did_you_mean(tokens, parser)
            raise UsageError(f"%%map_task: {e}{hint} (see %%map_task? for the options)") from None


def _evaluate_inputs(tokens: list[str], ns: dict[str, Any]) -> dict[str, Any]:
    """The mapped lists: each ``NAME=EXPR`` token's EXPR, evaluated in the notebook."""
    lists: dict[str, Any] = {}
    for token in tokens:
        name, eq, expr = token.partition("=")
        if not eq or not expr:
            raise UsageError(f"expected NAME=EXPR or an option, got {token!r}")
        name = _identifier("a mapped name", name)
        if name in lists:
            raise UsageError(f"{name} is mapped twice")
        try:
            lists[name] = eval(expr, ns)  # the user's own expression, in their namespace
        except Exception as e:
            raise UsageError(f"could not evaluate {name}={expr}: {type(e).__name__}: {e}") from None
    if not lists:
        raise UsageError("nothing to map: add NAME=EXPR pairs, e.g. %%map_task x=[1, 2, 3]")
    return lists


def _check_bindings(opts: Any) -> None:
    """``--out`` and ``--run`` name variables, and ``--out`` needs a run that finishes."""
    for var in (opts.out, opts.run):
        if var is not None:
            _identifier("--out/--run", var)
    if opts.no_wait and opts.out:
        raise UsageError("--out needs the run to finish; with --no-wait use --run VAR, then VAR.df")


def _backend(opts: Any) -> Any:
    """``--backend``, or the Dask cluster at ``--address``."""
    if not opts.address:
        return opts.backend
    if opts.backend not in ("local", "dask"):
        raise UsageError(f"--address is a Dask scheduler's; it does not go with --backend {opts.backend}")
    from ..backends.dask import DaskBackend

    return DaskBackend.for_address(opts.address)


def _submit(fn: Any, opts: Any, lists: dict[str, Any]) -> tuple[Any, Any]:
    """Start the run through :func:`mapnb.map_task`; bad input is a UsageError."""
    backend = _backend(opts)
    try:
        mt = map_task(
            fn,
            concurrency=opts.concurrency,
            min_success_ratio=opts.min_success_ratio,
            min_successes=opts.min_successes,
            run_all_sub_nodes=opts.run_all_sub_nodes or None,
            retries=opts.retries,
            timeout=opts.timeout,
            backend=backend,
            cache=opts.cache or None,
            cache_version=opts.cache_version,
            cache_serialize=opts.cache_serialize or None,
            cache_overwrite=opts.cache_overwrite,
        )
        if opts.task is not None and opts.name:
            mt.name = opts.name
        submit = mt.submit_product if opts.product else mt.submit
        return mt, submit(recover=opts.recover, **lists)
    except (InvalidMapError, BackendError, ModuleNotFoundError) as e:  # bad input, no cluster
        raise UsageError(str(e)) from None


def _wait(mt: Any, run: Any, opts: Any, ns: dict[str, Any]) -> Any:
    """Block until the run ends; bind ``--out``; the DataFrame is the cell's output."""
    try:
        df = mt._block(run)
    except MapTaskError as e:
        if opts.out:
            ns[opts.out] = run._tracked(e.df)  # kept current by a Retry failed
        raise
    if opts.out:
        ns[opts.out] = df
    if run._grid is not None and run._grid._handles:
        # Under a grid, the DataFrame is shown as a display that a Retry failed updates
        # (a cell's Out[] cannot be changed afterwards).
        run._grid.display_frame(df)
        return None
    return df


def _unquote(token: str) -> str:
    """An option's quoted value (``'core face'``, ``--name="a b"``) as the text it quotes;
    ``NAME=EXPR`` pairs are Python and stay as written."""
    option, eq, value = token.partition("=") if token.startswith("--") else ("", "", token)
    if value[:1] in ("'", '"'):
        try:
            text = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return token
        if isinstance(text, str):
            return option + eq + text
    return token


def _named_task(name: str, cell: str | None, ns: dict[str, Any]) -> Any:
    """``--task NAME``: the notebook's callable NAME (a dotted name is looked up too)."""
    if not all(part.isidentifier() for part in name.split(".")):
        raise UsageError(f"--task must name a function or task of the notebook, such as square; got {name!r}")
    if cell is not None and cell.strip():
        raise UsageError(
            f"--task {name} maps {name}: leave the cell body empty, or drop --task to map the body"
        )
    try:
        fn = eval(name, ns)  # a (dotted) name, checked above
    except Exception as e:
        raise UsageError(f"--task {name}: {type(e).__name__}: {e}") from None
    if not callable(fn):
        raise UsageError(f"--task {name} must be a function or task; {name} is a {type(fn).__name__}")
    return fn


def _did_you_mean(tokens: list[str], parser: Any) -> str:
    """``; did you mean --concurrency?`` for a misspelt option, else ""."""
    known = [o for action in parser._actions for o in action.option_strings]
    for token in tokens:
        option = token.split("=", 1)[0]
        if option.startswith("--") and option not in known:
            close = difflib.get_close_matches(option, known, n=1, cutoff=0.6)
            if close:
                return f"; did you mean {close[0]}?"
    return ""


# IPython writes the usage as "::" and "%map_task" (the line magic's spelling): the help
# (%map_task? and %%map_task?) shows the cell magic's.
MapTaskMagics.map_task.parser.prog = "%%map_task"
MapTaskMagics.map_task.__doc__ = (MapTaskMagics.map_task.__doc__ or "").replace(
    "::\n\n  %map_task ", "Usage:\n\n  %%map_task ", 1
)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext mapnb``: register ``%%map_task``."""
    ipython.register_magics(MapTaskMagics)
