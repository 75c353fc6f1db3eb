"""What every benchmark writes beside its numbers: the commit, the machine, the command."""
import json
import os
import platform
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
            "command": "python " + " ".join(sys.argv)}


def write_result(path: str, record: dict) -> None:
    """record + provenance as indented JSON at path (folders created)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump({**record, **provenance()}, f, indent=2)
    print(f"wrote {path}")


def read_result_list(path: str) -> list:
    """The records of a JSON-list results file ([] when it does not exist yet); a file that is
    not one is named. Benchmarks that append call it before they measure."""
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        try:
            records = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e}): write to another --out") from None
    if not isinstance(records, list):
        raise ValueError(f"{path} holds no JSON list: write to another --out")
    return records


def append_result(path: str, record: dict) -> None:
    """record + provenance appended to the JSON list at path (created when missing), atomically."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from src.config import atomic_write_text  # plain Python, no MindSpore import
    records = read_result_list(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    atomic_write_text(path, json.dumps(records + [{**record, **provenance()}], indent=2))
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
