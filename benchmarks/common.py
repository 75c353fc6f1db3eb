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


def append_result(path: str, record: dict) -> None:
    """record + provenance appended to the JSON list at path (created when missing)."""
    records = []
    if os.path.isfile(path):
        with open(path) as f:
            records = json.load(f)
        if not isinstance(records, list):
            raise ValueError(f"{path} holds no JSON list: write to another --out")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(records + [{**record, **provenance()}], f, indent=2)
    os.replace(tmp, path)
    print(f"appended to {path}")


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
