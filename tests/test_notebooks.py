"""mapnb.notebooks: notebooks run in real kernels (nbclient, ipykernel), one mapnb item each."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
import warnings

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

import mapnb
import mapnb.notebooks as nbs
from mapnb import InvalidMapError
from mapnb.notebooks import ParameterWarning

KS = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}


def write_nb(path, *cells, tags=None, metadata=None):
    """A notebook of code cells (strings) and markdown cells (("md", text))."""
    made = []
    for i, c in enumerate(cells):
        if isinstance(c, tuple):
            made.append(new_markdown_cell(c[1]))
        else:
            made.append(new_code_cell(textwrap.dedent(c), metadata={"tags": (tags or {}).get(i, [])}))
    nbformat.write(new_notebook(cells=made, metadata=metadata if metadata is not None else KS), path)
    return path


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def gone(pid: int, within: float = 20.0) -> bool:
    """Whether process ``pid`` is gone within ``within`` seconds (a SIGKILL takes a moment)."""
    deadline = time.monotonic() + within
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not pid_alive(pid)


def test_failing_cell_records_durations_outputs_and_parameters(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_nb(
        tmp_path / "sweep.ipynb",
        "alpha = 1\nname = 'x'",
        ("md", "# a sweep"),
        "import mapnb\nprint('alpha is', alpha)\nmapnb.record('score', alpha * 10)\nmapnb.record('obj', {1, 2})",
        "x = 1\ny = x / (alpha - 1)\n",
        tags={0: ["parameters"]},
    )
    write_nb(tmp_path / "plain.ipynb", "import os\nprint(os.getcwd())")
    with pytest.warns(ParameterWarning) as caught:
        run = nbs.run(
            [tmp_path / "sweep.ipynb", "plain.ipynb"], product={"alpha": [1, 2]}, parameters={"beta": 0},
            output_dir="executed", concurrency=2, progress=False,
        )  # fmt: skip
    texts = [str(w.message) for w in caught]
    assert any("sweep.ipynb does not declare beta" in t for t in texts)
    assert any("plain.ipynb has no cell tagged 'parameters'" in t for t in texts)
    df = run.df
    assert run.state == "failed"
    assert list(df.columns[:13]) == [
        "notebook", "parameters", "status", "cell", "line", "source_line", "error", "duration_s",
        "attempts", "cells_run", "cell_durations", "output", "kernel",
    ]  # fmt: skip
    assert df["status"].tolist() == ["failed", "succeeded", "succeeded", "succeeded"], [
        e and e.message for e in run.errors
    ]
    assert df["parameters"][0] == {"beta": 0, "alpha": 1}
    bad = df.iloc[0]
    assert (bad["cell"], bad["line"], bad["source_line"]) == (3, 2, "y = x / (alpha - 1)")
    assert bad["error"] == "cell 3, line 2: ZeroDivisionError: division by zero"
    assert bad["attempts"] == 1 and bad["cells_run"] == 3
    assert set(bad["cell_durations"]) == {0, 2, 3}  # the code cells, as indexed in the file
    assert df["score"].tolist() == [10, 20, None, None]  # recorded by the failed one too
    assert df["obj"][1] == {1, 2}  # not JSON: pickled
    assert df["cell"][1] is None and df["error"][1] is None
    assert "── cell 2/3 ──" in run.logs(1) and "alpha is 2" in run.logs(1)
    # Each notebook works in its own folder; the output paths keep the sweep apart.
    assert df["output"].tolist() == [
        "executed/sweep[alpha=1].ipynb", "executed/sweep[alpha=2].ipynb",
        "executed/plain[alpha=1].ipynb", "executed/plain[alpha=2].ipynb",
    ]  # fmt: skip
    plain = nbformat.read(tmp_path / "executed/plain[alpha=1].ipynb", as_version=4)
    assert plain.cells[0].metadata.tags == ["injected-parameters"]  # at the top: no parameters cell
    assert plain.cells[1].outputs[0]["text"].strip() == str(tmp_path)
    failed = nbformat.read(tmp_path / "executed/sweep[alpha=1].ipynb", as_version=4)
    tags = [c.metadata.get("tags", []) for c in failed.cells]
    assert tags[1] == ["injected-parameters"] and "alpha = 1" in failed.cells[1].source
    assert tags[4] == ["mapnb-error"]  # the banner, right above the failing cell
    assert "ZeroDivisionError" in failed.cells[4].source
    assert failed.cells[5].outputs[-1]["ename"] == "ZeroDivisionError"
    with pytest.raises(mapnb.MapTaskError, match="3 of 4 succeeded"):
        run.result()


def test_timeouts_kill_the_kernel_say_which_cell_and_are_not_retried(tmp_path):
    pids = tmp_path / "pids"
    hang = write_nb(
        tmp_path / "hang.ipynb",
        f"import os, time\nopen({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n')",
        "time.sleep(0.1)",
        "time.sleep(120)",
    )
    slow = write_nb(
        tmp_path / "slow.ipynb",
        f"import os, time\nopen({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n')",
        "x = 1\ntime.sleep(120)",
    )
    run = nbs.run([hang], cell_timeout=3, retries=2, progress=False)
    run2 = nbs.run([slow], timeout=4, retries=2, progress=False)
    a, b = run.df.iloc[0], run2.df.iloc[0]
    assert a["status"] == "failed" and a["attempts"] == 1
    assert a["cell"] == 2 and a["error"] == "cell 2: the cell ran longer than cell_timeout=3 s and was killed"
    assert b["status"] == "failed" and b["attempts"] == 1 and b["cell"] == 1
    assert "ran longer than timeout=4 s; this cell was running" in b["error"]
    kernels = [int(p) for p in pids.read_text().split()]
    assert len(kernels) == 2 and all(gone(p) for p in kernels)


def test_a_dead_kernel_is_retried_and_a_failed_start_is_retried_before_any_cell(tmp_path, monkeypatch):
    """Infrastructure failures: a kernel that dies (retries) and a kernel that fails to
    start (retried at once, as in the port race), with a kernelspec of our own."""
    marker, starts = tmp_path / "died-once", tmp_path / "starts"
    flaky = tmp_path / "kernels" / "flaky"
    flaky.mkdir(parents=True)
    launcher = tmp_path / "launch.py"
    launcher.write_text(
        "import os, sys\n"
        f"with open({str(starts)!r}, 'a') as f: f.write('x')\n"
        f"if len(open({str(starts)!r}).read()) == 1: sys.exit(1)  # the first start fails\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'ipykernel_launcher'] + sys.argv[1:])\n"
    )
    (flaky / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, str(launcher), "-f", "{connection_file}"],
        "display_name": "flaky", "language": "python",
    }))  # fmt: skip
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    nb = write_nb(
        tmp_path / "dies.ipynb",
        f"import os, pathlib\nm = pathlib.Path({str(marker)!r})\n"
        "if not m.exists():\n    m.touch()\n    os.kill(os.getpid(), 9)\nprint('second time lucky')",
        metadata={"kernelspec": {"name": "flaky", "display_name": "flaky", "language": "python"}},
    )
    run = nbs.run(nb, retries=1, progress=False)
    row = run.df.iloc[0]
    assert row["status"] == "succeeded" and row["attempts"] == 2 and row["kernel"] == "flaky"
    assert len(starts.read_text()) == 3  # failed, died in the cell, then ran
    assert "second time lucky" in run.logs(0)
    # Without retries, a kernel that dies is a failure that says so.
    marker.unlink()
    run = nbs.run(nb, progress=False)
    assert run.df["status"][0] == "failed"
    assert run.df["error"][0].startswith("KernelDiedError: cell 0: the kernel died")


def test_bad_input_is_refused_before_anything_runs(tmp_path):
    good = write_nb(tmp_path / "good.ipynb", "x = 1", tags={0: ["parameters"]})
    (tmp_path / "broken.ipynb").write_text("{not json")
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "empty").mkdir()
    julia = write_nb(
        tmp_path / "julia.ipynb", "1 + 1",
        metadata={"kernelspec": {"name": "julia-9.9", "display_name": "Julia", "language": "julia"}},
    )  # fmt: skip
    cases = [
        (dict(paths=tmp_path / "broken.ipynb"), "broken.ipynb is not a valid notebook"),
        (dict(paths=tmp_path / "notes.txt"), "is not a notebook"),
        (dict(paths=tmp_path / "nope.ipynb"), "does not exist"),
        (dict(paths=tmp_path / "empty"), "holds no notebook"),
        (dict(paths=str(tmp_path / "*.nothing.ipynb")), "matches no notebook"),
        (dict(paths=julia), "kernel 'julia-9.9' .* is not installed; installed: .*python3"),
        (dict(paths=good, kernel="nope"), "kernel 'nope' \\(given as kernel\\) is not installed"),
        (dict(paths=good, parameters={"x": 1}, product={"x": [1, 2]}), "x given both"),
        (dict(paths=good, parameters={"x": object()}), "cannot be written into a notebook"),
        (dict(paths=good, product={"x": 3}), "product: x must be a list"),
        (dict(paths=good, cell_timeout=0), "cell_timeout must be a positive number"),
        (dict(paths=good, depends=["data.csv"]), "need cache=True"),
        (dict(paths=good, cache=True, depends=[tmp_path / "data.csv"]), "data.csv' does not exist"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InvalidMapError, match=message):
            nbs.run(**kwargs, progress=False)
    before = mapnb.last_run()
    with pytest.raises(InvalidMapError):
        nbs.run([good, tmp_path / "broken.ipynb"], progress=False)
    assert mapnb.last_run() is before  # nothing started, not even the good notebook


def test_parse_values_as_literals_or_yaml():
    assert nbs.parse_value("0.5") == 0.5
    assert nbs.parse_value("[1, 2]") == [1, 2]
    assert nbs.parse_value("adam") == "adam"
    assert nbs.parse_value("{lr: 0.1, opt: sgd}") == {"lr": 0.1, "opt": "sgd"}
    assert nbs.parse_value("True") is True and nbs.parse_value("null") is None


def test_record_outside_a_kernel_is_kept_here():
    from mapnb import _record

    mapnb.record("answer", 42)
    assert _record.recorded()["answer"] == 42
    with pytest.raises(ValueError, match="non-empty string name"):
        mapnb.record("", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "mapnb.notebooks" in repr(mapnb.notebooks)


def mapnb_cli(*args, cwd, env=None):
    import subprocess

    full = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        **(env or {}),
    }
    full.pop("GITHUB_ACTIONS", None) if not (env or {}).get("GITHUB_ACTIONS") else None
    return subprocess.run(
        [sys.executable, "-m", "mapnb", "notebooks", *map(str, args)],
        cwd=cwd, env=full, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cli_parameters_failures_junit_and_github(tmp_path):
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    write_nb(
        nbdir / "train.ipynb",
        "lr = 0.1\nopt = 'sgd'\nepochs = 1",
        "import mapnb\nmapnb.record('loss', lr * epochs)\nmapnb.record('opt', opt)",
        tags={0: ["parameters"]},
    )
    write_nb(nbdir / "broken.ipynb", "x = 1", "y = 2\nraise ValueError('bad data')")
    (tmp_path / "p.yaml").write_text("epochs: 3\nopt: adam\n")
    summary = tmp_path / "summary.md"
    out = mapnb_cli(
        "nbs", "-f", "p.yaml", "-p", "opt", "'rms'", "--product", "lr=0.5,2", "--junit-xml", "report.xml",
        "--junit-cells", "--concurrency", "2", "--no-live",
        cwd=tmp_path, env={"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)},
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    err = out.stderr
    assert "warning: nbs/broken.ipynb has no cell tagged 'parameters'" in err
    assert "✗ failed    nbs/broken.ipynb [lr=0.5]" in err
    assert ">   2 | raise ValueError('bad data')" in err  # the failing cell's source, its line marked
    assert "ValueError: bad data" in err and "2 of 4 notebooks succeeded" in err
    # The annotation points into the .ipynb file at the failing line.
    lines = (nbdir / "broken.ipynb").read_text().splitlines()
    ann = [x for x in out.stdout.splitlines() if x.startswith("::error file=nbs/broken.ipynb")]
    assert len(ann) == 2
    line_no = int(ann[0].split("line=")[1].split(",")[0])
    assert "raise ValueError('bad data')" in lines[line_no - 1]
    assert "| `nbs/train.ipynb` | [epochs=3, opt='rms', lr=0.5] | succeeded |" in summary.read_text()
    xml = (tmp_path / "report.xml").read_text()
    import xml.etree.ElementTree as ET

    suite = ET.fromstring(xml).find("testsuite")
    assert (suite.get("tests"), suite.get("failures")) == (
        "12",
        "4",
    )  # 4 notebooks + 8 cells; 2 notebooks and their 2 cells failed
    names = [c.get("name") for c in suite.iter("testcase")]
    assert "nbs/train.ipynb [lr=2]" in names and "cell 1" in names
    executed = nbformat.read(tmp_path / "executed/nbs/train[lr=2].ipynb", as_version=4)
    injected = executed.cells[1].source
    assert "epochs = 3" in injected and "opt = 'rms'" in injected and "lr = 2" in injected
    from mapnb._record import read

    recorded = [read(o["data"]) for o in executed.cells[2].outputs if o.get("data")]
    assert ("loss", 6) in recorded and ("opt", "rms") in recorded

    ok = mapnb_cli("nbs/train.ipynb", "--output-dir", "elsewhere", "--no-live", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "elsewhere/nbs/train.ipynb").exists()


def test_cli_usage_errors_exit_2_before_anything_runs(tmp_path):
    write_nb(tmp_path / "a.ipynb", "x = 1", tags={0: ["parameters"]})
    cases = [
        (["a.ipynb", "-p", "x", "1", "-p", "x", "2"], "-p x is given twice"),
        (["a.ipynb", "-p", "x", "1", "--product", "x=1,2"], "x is given both with -p and with --product"),
        (["a.ipynb", "--kernel", "nope"], "kernel 'nope'"),
        (["missing.ipynb"], "does not exist"),
        (["--product", "x=1,2", "a.ipynb", "--junit-cells"], "--junit-cells needs --junit-xml"),
    ]
    for args, message in cases:
        out = mapnb_cli(*args, cwd=tmp_path)
        assert out.returncode == 2 and message in out.stderr, (args, out.stderr)
    assert not (tmp_path / "executed").exists()


def test_pytest_plugin_runs_notebooks_as_tests_and_is_inert_without_its_option(tmp_path):
    import subprocess

    write_nb(tmp_path / "good.ipynb", "print('fine')")
    write_nb(tmp_path / "bad.ipynb", "x = 1", "assert x == 2, 'x is not 2'")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "mapnb.notebooks.pytest_plugin",
        "-p",
        "no:cacheprovider",
        "-q",
    ]
    out = subprocess.run([*cmd, "--mapnb-notebooks", "--mapnb-concurrency", "2", str(tmp_path)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    assert "1 failed, 1 passed" in out.stdout
    assert ">   1 | assert x == 2, 'x is not 2'" in out.stdout and "AssertionError: x is not 2" in out.stdout
    inert = subprocess.run(
        [*cmd, str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert inert.returncode == 5 and "no tests ran" in inert.stdout  # nothing collected, nothing started
    light = subprocess.run(
        [sys.executable, "-c", "import sys, mapnb.notebooks.pytest_plugin; "
         "print([m for m in ('nbclient', 'pandas', 'jupyter_client', 'IPython') if m in sys.modules])"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert light.stdout.strip() == "[]"


def test_cache_skips_unchanged_notebooks_and_writes_their_output_again(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.txt").write_text("3")
    runs = tmp_path / "runs"
    write_nb(
        tmp_path / "n.ipynb",
        "k = 1",
        f"import mapnb\nopen({str(runs)!r}, 'a').write('x')\nmapnb.record('v', int(open('data.txt').read()) * k)",
        tags={0: ["parameters"]},
    )

    def go(**kw):
        return nbs.run("n.ipynb", cache=True, depends=["data.txt"], output_dir="out", progress=False, **kw)

    first = go()
    assert first.df["status"][0] == "succeeded" and first.df["v"][0] == 3
    (tmp_path / "out/n.ipynb").unlink()
    again = go()
    assert again.df["status"].tolist() == ["cached"] and again.df["v"][0] == 3
    assert again.state == "succeeded" and runs.read_text() == "x"  # not executed again
    stored = nbformat.read(tmp_path / "out/n.ipynb", as_version=4)  # written again from the cache
    assert stored.cells[1].outputs[0]["data"]["text/plain"] == "recorded v = 3"
    (tmp_path / "data.txt").write_text("4")  # a dependency changed
    changed = go()
    assert changed.df["status"][0] == "succeeded" and changed.df["v"][0] == 4
    other = go(parameters={"k": 2})  # other parameters: another key
    assert other.df["status"][0] == "succeeded" and other.df["v"][0] == 8
    assert runs.read_text() == "xxx"


def test_the_log_streams_the_running_cell_while_it_runs(tmp_path):
    nb = write_nb(
        tmp_path / "s.ipynb", "import time", "print('halfway', flush=True)\ntime.sleep(4)\nprint('end')"
    )
    run = nbs.run(nb, wait=False, progress=False)
    try:
        deadline = time.monotonic() + 120
        while "halfway" not in run.logs(0) and time.monotonic() < deadline and not run.done():
            time.sleep(0.1)
        assert "── cell 2/2 ──\nhalfway" in run.logs(0)
        assert not run.done()  # seen while the cell still sleeps
    finally:
        run.wait(120)
    assert run.logs(0).endswith("end\n")


def test_notebooks_run_on_the_dask_backend(tmp_path, dask_client):
    nb = write_nb(tmp_path / "d.ipynb", "k = 1", "import mapnb, os\nmapnb.record('pid', os.getpid())",
                  tags={0: ["parameters"]})  # fmt: skip
    run = nbs.run(nb, product={"k": [1, 2]}, backend="dask", output_dir=tmp_path / "out", progress=False)
    df = run.df
    assert df["status"].tolist() == ["succeeded", "succeeded"]
    assert df["pid"][0] != os.getpid() and (tmp_path / "out" / "d[k=2].ipynb").exists()


def test_cancel_kills_the_kernels_of_running_notebooks_on_the_threads_backend(tmp_path):
    pids = tmp_path / "pids"
    nb = write_nb(
        tmp_path / "long.ipynb",
        f"import os, time\nopen({str(pids)!r}, 'a').write(f'{{os.getpid()}}\\n')",
        "time.sleep(300)",
    )
    run = nbs.run(nb, backend="threads", wait=False, progress=False)
    deadline = time.monotonic() + 120
    while "cell 2/2" not in run.logs(0) and time.monotonic() < deadline:
        time.sleep(0.1)
    t0 = time.monotonic()
    run.cancel(wait=True, timeout=60)
    assert run.done() and time.monotonic() - t0 < 30  # not the 300 s of the cell
    assert run.statuses[0].value == "cancelled"
    assert gone(int(pids.read_text().split()[0]))


def test_recover_reruns_only_the_notebooks_that_did_not_succeed(tmp_path):
    runs, ready = tmp_path / "runs", tmp_path / "ready"
    good = write_nb(tmp_path / "good.ipynb", f"open({str(runs)!r}, 'a').write('g')")
    flaky = write_nb(
        tmp_path / "flaky.ipynb", f"import os\nassert os.path.exists({str(ready)!r}), 'not ready'"
    )
    run = nbs.run([good, flaky], progress=False)
    assert run.df["status"].tolist() == ["succeeded", "failed"]
    ready.touch()
    again = nbs.recover(run.id, progress=False)
    assert again.id == run.id and again.df["status"].tolist() == ["succeeded", "succeeded"]
    assert runs.read_text() == "g"  # the good notebook was not executed again
