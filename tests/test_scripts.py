"""scripts/test.sh (the command CI runs): every test file in exactly one of its two pytest
processes, pytest options passed to both, and the exit codes combined. A stand-in for Python
records each call and exits with a chosen code, so no test runs twice."""
import glob
import os
import stat
import subprocess

import pytest

from conftest import ROOT


def _run_test_sh(tmp_path, codes):
    """scripts/test.sh with PYTHON = a recorder; codes: exit code by 'first' / 'second' process."""
    fake = tmp_path / "python"
    fake.write_text("#!/bin/bash\n"
                    f"echo \"$*\" >> {tmp_path}/calls.txt\n"
                    f"case \"$*\" in *tests/test_e2e.py*) exit {codes['first']};; *) exit {codes['second']};; esac\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    p = subprocess.run(["bash", "scripts/test.sh", "-m", "not slow"], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PYTHON=str(fake)), timeout=60)
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    return p, calls


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: scripts/test.sh runs a single pytest")
def test_test_sh_runs_every_file_once_and_combines_exit_codes(tmp_path):
    p, calls = _run_test_sh(tmp_path, {"first": 0, "second": 0})
    assert p.returncode == 0 and "all tests passed" in p.stdout, p.stdout + p.stderr
    assert len(calls) == 2 and all(c.startswith("-m pytest -q -p no:cacheprovider --basetemp ") for c in calls)
    assert all(" -m not slow " in c for c in calls)  # the user's options reach both processes
    files = [w for c in calls for w in c.split() if w.startswith("tests/")]
    expected = sorted(os.path.relpath(f, ROOT) for f in glob.glob(os.path.join(ROOT, "tests", "test_*.py")))
    assert sorted(files) == expected  # each file exactly once
    basetemps = [c.split("--basetemp ")[1].split()[0] for c in calls]
    assert basetemps[0] != basetemps[1]
    for codes, rc in (({"first": 1, "second": 0}, 1), ({"first": 0, "second": 1}, 1),
                      ({"first": 5, "second": 0}, 0), ({"first": 5, "second": 5}, 5)):
        (tmp_path / "calls.txt").unlink()
        p, _ = _run_test_sh(tmp_path, codes)
        assert p.returncode == rc, (codes, p.stdout)
    assert "FAILED: process 1 exit 0, process 2 exit 1" in _run_test_sh(tmp_path, {"first": 0, "second": 1})[0].stdout


def test_test_sh_without_its_python_says_what_to_run(tmp_path):
    p = subprocess.run(["bash", "scripts/test.sh"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHON=str(tmp_path / "none" / "python")))
    assert p.returncode == 2 and "bash scripts/setup.sh --dev" in p.stderr and "none/python" in p.stderr
