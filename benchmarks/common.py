"""What every benchmark writes beside its numbers: the commit, the machine, the command."""
import json
import os
import platform
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def git_commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                                       stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"  # a benchmark run outside a checkout still reports


def provenance() -> dict:
    return {"commit": git_commit(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "command": "python " + shlex.join(sys.argv)}  # quoted: an argument may hold spaces


def _atomic_write_json(path: str, value) -> None:
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from src.config import atomic_write_text  # plain Python, no MindSpore import
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    atomic_write_text(path, json.dumps(value, indent=2))


def write_result(path: str, record: dict) -> None:
    """record + provenance as indented JSON at path (folders created), atomically: an interrupted
    benchmark leaves the previous file, never half of one."""
    _atomic_write_json(path, {**record, **provenance()})
    print(f"wrote {path}")


def _read_json(path: str, kind: type, what: str):
    with open(path) as f:
        try:
            value = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e}): write to another --out") from None
    if not isinstance(value, kind):
        raise ValueError(f"{path} holds no {what}: write to another --out")
    return value


def read_result(path: str) -> dict:
    """The record of a results file that write_result wrote; a missing or damaged file is named."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such results file")
    return _read_json(path, dict, "JSON object (a results record)")


def read_result_list(path: str) -> list:
    """The records of a JSON-list results file ([] when it does not exist yet); a file that is
    not one is named. Benchmarks that append call it before they measure."""
    if not os.path.isfile(path):
        return []
    return _read_json(path, list, "JSON list")


def append_result(path: str, record: dict) -> None:
    """record + provenance appended to the JSON list at path (created when missing), atomically."""
    records = read_result_list(path)
    _atomic_write_json(path, records + [{**record, **provenance()}])
    print(f"appended to {path}")


def named_files(ap, items, exts) -> dict:
    """``--files name=path ...`` -> {name: path}; ap.error names an item without a name, a missing
    file or a file not ending in one of ``exts``."""
    files = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not os.path.isfile(path) or os.path.splitext(path)[1] not in exts:
            ap.error(f"--files takes name=path with an existing {' or '.join(exts)} file, got {item!r}")
        files[name] = path
    return files


def proc_status_mb(key: str, pid="self") -> float:
    """A memory line of /proc/<pid>/status (VmHWM: peak resident, VmRSS: resident) in MiB; 0.0
    when it cannot be read (the process has ended, or not Linux)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return 0.0
