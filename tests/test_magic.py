"""The %%map_task cell magic, through IPython's own run_cell_magic."""

from __future__ import annotations

import os

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from mapnb.jupyter.magic import split_line


@pytest.fixture(scope="module")
def shell():
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "mapnb")
    return sh


def cell(shell, line: str, body: str):
    return shell.run_cell_magic("map_task", line, body)


def test_split_line_keeps_brackets_and_strings_whole():
    assert split_line('--retries 1 a=[1, 2] b=range(3) c=df["col one"]') == [
        "--retries", "1", "a=[1, 2]", "b=range(3)", 'c=df["col one"]'
    ]  # fmt: skip
    assert split_line("s='a ) b' t={'k': (1, 2)}") == ["s='a ) b'", "t={'k': (1, 2)}"]
    assert split_line('u="""x y""" v=\'it\\\'s\'') == ['u="""x y"""', "v='it\\'s'"]


@pytest.mark.parametrize(
    "line, message",
    [
        ("x=[1, 2", "missing ']'"),
        ("x=(1, 2]", "unbalanced ']'"),
        ("x='abc", "unterminated string"),
        ("--concurrency", "expected one argument"),
        ("--concurrency two x=[1]", "invalid int value: 'two'"),
        ("--bogus x=[1]", "unrecognized arguments: --bogus"),
        ("", "nothing to map"),
        ("x", "expected NAME=EXPR"),
        ("x=", "expected NAME=EXPR"),
        ("1x=[1]", "a mapped name must be a Python name; got '1x'"),
        ("for=[1]", "got 'for'"),
        ("x=[1] x=[2]", "x is mapped twice"),
        ("x=undefined_name", "could not evaluate x=undefined_name: NameError"),
        ("x=1/0", "ZeroDivisionError"),
        ("x=5", "x= must be a finite iterable"),
        ("x='abc'", "x= got str"),
        ("x=[1, 2] y=[1]", "x has 2 items, y has 1 item"),
        ("--concurrency 0 x=[1]", "concurrency must be an integer >= 1"),
        ("--retries -1 x=[1]", "retries"),
        ("--timeout -2 x=[1]", "timeout"),
        ("--min-success-ratio 1.5 x=[1]", "min_success_ratio"),
        ("--min-successes 3 x=[1, 2]", "min_successes=3 but the map has 2 items"),
        ("--backend nope x=[1]", "nope"),
        ("--out 2bad x=[1]", "--out/--run must be a Python name"),
        ("--no-wait --out df x=[1]", "--out needs the run to finish"),
    ],
)
def test_bad_lines_raise_usage_errors_that_say_what_is_wrong(shell, line, message):
    with pytest.raises(UsageError, match=None) as info:
        cell(shell, line, "x")
    assert message in str(info.value)


def test_a_syntax_error_in_the_body_names_its_line(shell):
    with pytest.raises(UsageError, match="syntax error on line 3"):
        cell(shell, "x=[1]", "y = x\ny = = 2\n")


def test_the_body_runs_per_item_in_workers_with_notebook_names(shell):
    shell.run_cell(
        "import math\nOFFSET = 100\ndef score(v):\n    return math.sqrt(v) + OFFSET\n"
    ).raise_error()
    df = cell(
        shell,
        "--concurrency 2 --retries 1 --timeout 30 --out res --run r value=[1, 4, 9] tag=['a', 'b', 'c']",
        "import os\nprint(f'processing {value}')\n{'value': value, 'score': score(value), 'pid': os.getpid()}",
    )
    assert shell.user_ns["res"] is df
    assert list(df["score"]) == [101.0, 102.0, 103.0] and list(df["tag"]) == ["a", "b", "c"]
    assert os.getpid() not in set(df["pid"])  # the body ran in worker processes
    run = shell.user_ns["r"]
    assert run.logs(1) == "processing 4\n" and run.state == "succeeded"


def test_expressions_are_python_not_ipython_variable_expansion(shell):
    shell.user_ns["y"] = 5
    df = cell(shell, "--backend threads d=[{'a': 1}, {'a': y}]", "d['a']")
    assert list(df["output"]) == [1, 5]
    with pytest.raises(UsageError, match="sets have no order"):
        cell(shell, "x={1, 2}", "x")


def test_a_body_without_a_final_expression_returns_none(shell):
    df = cell(shell, "x=range(2)", "y = x * 2")
    assert list(df["output"]) == [None, None]


def test_product_sweeps_every_combination(shell):
    df = cell(shell, "--product --run sweep a=[1, 2] b=[10, 20, 30]", "a * b")
    assert len(df) == 6 and list(df["output"]) == [10, 20, 30, 20, 40, 60]
    assert shell.user_ns["sweep"].axes == [[1, 2], [10, 20, 30]]


def test_no_wait_returns_at_once_and_binds_the_run(shell):
    out = cell(shell, "--no-wait --run bg x=[0.3, 0.3]", "import time\ntime.sleep(x)\nx")
    assert out is None
    run = shell.user_ns["bg"]
    assert not run.done()
    assert list(run.result(timeout=30)["output"]) == [0.3, 0.3]


def test_a_failing_item_shows_its_own_traceback_and_keeps_the_partial_results(shell, capsys):
    shell.run_cell(
        "%%map_task --concurrency 1 --out part x=[1, 0, 2]\ndef inner(v):\n    return 10 // v\ninner(x)\n"
    )
    shown = capsys.readouterr().out
    assert "Traceback of item 1" in shown and "ZeroDivisionError" in shown
    assert 'File "<map_task cell' in shown and "return 10 // v" in shown  # the cell's own lines
    assert "mapnb/" not in shown and "magic.py" not in shown
    part = shell.user_ns["part"]
    assert part.loc[0, "output"] == 10 and part.loc[1, "output"] is None
    assert list(part["status"]) == ["succeeded", "failed", "aborted"]


def test_help_documents_the_magic(shell):
    doc = shell.find_cell_magic("map_task").__doc__
    for flag in ("--concurrency", "--min-success-ratio", "--min-successes", "--run-all-sub-nodes", "--retries", "--timeout", "--backend",
                 "--product", "--out", "--run", "--no-wait", "NAME=EXPR"):  # fmt: skip
        assert flag in doc
    for name in ("%%map_task", "%map_task"):
        info = shell.object_inspect(name)
        assert info["found"] and "--no-wait" in info["docstring"]
    with pytest.raises(UsageError, match="is a cell magic"):
        shell.run_line_magic("map_task", "x=[1]")


def test_the_small_things_a_new_user_trips_on(shell):
    import pandas as pd

    doc = shell.find_cell_magic("map_task").__doc__
    assert doc.startswith("Usage:\n\n  %%map_task [--concurrency N]"), doc[:80]  # no stray "::"
    with pytest.raises(UsageError, match="did you mean --concurrency"):
        cell(shell, "--concurency 2 x=[1]", "x")
    with pytest.raises(UsageError, match="body is empty"):
        cell(shell, "x=[1, 2]", "# only a comment\n\n")
    shell.user_ns["frame"] = pd.DataFrame({"a": range(100)})
    with pytest.raises(UsageError) as e:
        cell(shell, "x=frame", "x")
    assert "DataFrame of shape (100, 1)" in str(e.value) and "\n" not in str(e.value)
    assert len(str(e.value)) < 200


def test_a_run_is_titled_by_what_it_runs(shell):
    cell(shell, "--run r x=[1]", "\n# setup\ny = x * 2\ny")
    assert shell.user_ns["r"].name == "%%map_task: y = x * 2"
    cell(shell, "--run r --name doubling x=[1]", "x * 2")
    assert shell.user_ns["r"].name == "doubling"
    assert "doubling" in repr(shell.user_ns["r"])
    # A quoted title is the text it quotes, as in a shell; NAME=EXPR stays Python.
    cell(shell, "--run r --name 'core face' x=['a b']", "x")
    assert shell.user_ns["r"].name == "core face"
    assert shell.user_ns["r"].df["output"].tolist() == ["a b"]
    cell(shell, '--run r --name="x = y" x=[1]', "x")
    assert shell.user_ns["r"].name == "x = y"


def test_a_notebook_functions_traceback_in_a_worker_shows_its_cell_lines(shell):
    # cloudpickle ships notebook code as "<dynamic-code>", and a worker has no copy of the
    # cell: the job carries the cell's file name and lines.
    shell.run_cell("import mapnb\ndef ratio(x):\n    total = 10\n    return total // x\n")
    shell.run_cell("run = mapnb.map_task(ratio, min_success_ratio=0, progress=False).submit(x=[0, 5])")
    run = shell.user_ns["run"]
    assert run.wait(60) and run.outputs == [None, 2]
    tb = run.errors[0].traceback
    assert "<dynamic-code>" not in tb and "return total // x" in tb, tb
    filename = shell.user_ns["ratio"].__code__.co_filename
    assert f'File "{filename}", line 4, in ratio' in tb, tb


def test_min_successes_and_run_all_sub_nodes_from_the_magic(shell):
    """--min-successes N fails the run below N successes; --run-all-sub-nodes still runs
    every item to the end (nothing aborted), where without it the rest is aborted."""
    body = "import time\nif x in (1, 2):\n    raise ValueError(x)\nif x == 3 and slow:\n    time.sleep(60)\nx"
    line = "--min-successes 4 --no-wait --run r x=range(5)"
    shell.user_ns["slow"] = False
    cell(shell, "--run-all-sub-nodes " + line, body)
    run = shell.user_ns["r"]
    run.wait(60)
    assert run.state == "failed"
    assert list(run.df["status"]) == ["succeeded", "failed", "failed", "succeeded", "succeeded"]
    shell.user_ns["slow"] = True  # item 3 is still running when 1 and 2 have failed
    cell(shell, line, body)
    run = shell.user_ns["r"]
    run.wait(60)
    assert run.state == "failed" and run.df["status"][3] == "aborted"
