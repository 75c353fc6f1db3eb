"""Every command in the README's and docs' bash blocks names a file that exists and only options
that its entry point accepts (from the entry point's own --help, which needs no MindSpore), so a
renamed flag or a moved script cannot leave the documentation behind."""
import glob
import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT

DOCS = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
# shell wrappers -> the Python entry point whose options they pass on (None: the wrapper's own)
WRAPPED = {"quickstart.sh": "scripts/quickstart.py", "run_finetune.sh": "finetune.py", "run_eval.sh": "eval.py",
           "run_export.sh": "export.py", "setup.sh": None, "test.sh": None}


def documented_commands():
    """(doc, command) for each `python ...` / `bash ...` command of the fenced bash blocks:
    continuation lines joined, comments dropped, `a && b` and `x | b` split."""
    out = []
    for doc in DOCS:
        with open(doc, encoding="utf-8") as f:
            lines = f.read().splitlines()
        blocks, lang = [], None  # the shell blocks: ```bash, ```sh or a bare ``` fence
        for line in lines:
            if line.startswith("```"):
                if lang is None:
                    lang = line[3:].strip() or "plain"
                    if lang in ("bash", "sh", "plain"):
                        blocks.append([])
                else:
                    lang = None
            elif lang in ("bash", "sh", "plain"):
                blocks[-1].append(line)
        for block in blocks:
            for line in re.sub(r"\\\n\s*", " ", "\n".join(block)).splitlines():
                line = re.split(r"\s#", line)[0].strip()
                for part in re.split(r"&&|\|", line):
                    part = part.strip()
                    if part.startswith(("python ", "bash ")):
                        out.append((os.path.relpath(doc, ROOT), part))
    return out


def entry_point(script: str):
    name = os.path.basename(script)
    if script.endswith(".py"):
        return script
    if name in WRAPPED:
        return WRAPPED[name]
    if name.startswith(("run_train_", "run_standalone_train_", "run_distribute_train_")):
        return "train.py"
    raise AssertionError(f"no entry point known for {script}: add it to WRAPPED")


_HELP = {}


def options_of(entry: str) -> str:
    if entry not in _HELP:
        p = subprocess.run([sys.executable, entry, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, GLOG_v="3"))
        assert p.returncode == 0, f"{entry} --help failed:\n{p.stderr[-2000:]}"
        _HELP[entry] = p.stdout
    return _HELP[entry]


COMMANDS = documented_commands()


def test_the_docs_hold_the_main_commands():
    scripts = {shlex.split(c)[1] for _, c in COMMANDS}
    for s in ("scripts/quickstart.sh", "scripts/test.sh", "scripts/run_train_cpu.sh", "finetune.py", "eval.py", "export.py", "predict.py"):
        assert s in scripts, s


@pytest.mark.parametrize("doc,command", COMMANDS, ids=[f"{d}:{c[:60]}" for d, c in COMMANDS])
def test_documented_command_uses_existing_files_and_options(doc, command):
    words = shlex.split(command)
    script = words[1]
    assert os.path.isfile(os.path.join(ROOT, script)), f"{doc}: {script} does not exist ({command})"
    flags = {w.split("=")[0] for w in words[2:] if w.startswith("--")}
    entry = entry_point(script)
    if entry is None:  # the wrapper's own options: named in its text
        with open(os.path.join(ROOT, script)) as f:
            own = f.read()
        missing = [fl for fl in flags if fl not in own]
    else:
        help_text = options_of(entry)
        missing = [fl for fl in flags if not re.search(re.escape(fl) + r"\b", help_text)]
    assert not missing, f"{doc}: {command}\n  options {missing} are not options of {entry or script}"
