"""Run a command on an AVX2-only view of this CPU: the kernels an AVX2-only CPU runs, at native speed.

    python benchmarks/avx2_only.py -- python predict.py --model student.onnx --input dev.tsv ...
    python benchmarks/avx2_only.py --check        # what a process sees with and without it

Many users' CPUs have AVX2 and no AVX-512 (no VNNI); ONNX Runtime, MindSpore (oneDNN) and numpy
pick their kernels from CPUID at run time, so a model behaves and performs differently there. The
command runs with benchmarks/avx2_only.c preloaded: Linux traps each CPUID instruction (the CPU's
``cpuid_fault`` feature, Linux x86-64) and the library answers it with AVX-512, AVX-VNNI and AMX
taken out; GLIBC_TUNABLES hides them from glibc too. Unlike valgrind's AVX2 CPU it costs nothing:
the same kernels, run natively. What it cannot show is another core: clock, caches and the speed
of 256-bit instructions stay this machine's.

The library is compiled on first use with the C compiler (cc, or $CC) into a cache folder
($XDG_CACHE_HOME or ~/.cache)/ternarybert, named by the source's hash.
"""
import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "avx2_only.c")
# set in the environment of a process that runs under the library (and its children)
MARK = "TERNARYBERT_AVX2_ONLY"
# glibc reads CPUID before any preloaded library runs: its own switch for its string functions
GLIBC_HIDDEN = ("glibc.cpu.hwcaps=-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD,-AVX512_VNNI,-AVX512_BF16,"
                "-AVX512_IFMA,-AVX512_VBMI,-AVX512_VBMI2,-AVX512_BITALG,-AVX512_VPOPCNTDQ,-AVX_VNNI")
# numpy's names for what the library hides and what it keeps, for --check and the benchmarks' records
PROBED = ("AVX2", "FMA3", "AVX512F", "AVX512BW", "AVX512VL", "AVX512VNNI")


class Unsupported(RuntimeError):
    """This machine cannot give a process an AVX2-only CPUID (why: the message)."""


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def unsupported_reason():
    """None where the library works here, else why not (one line)."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"needs Linux on x86-64, this is {platform.system()} on {platform.machine()}"
    flags = _cpu_flags()
    if "avx2" not in flags:
        return "this CPU has no AVX2"
    if "cpuid_fault" not in flags:
        return "this CPU (or its hypervisor) cannot trap CPUID: no cpuid_fault in /proc/cpuinfo"
    if not shutil.which(os.environ.get("CC", "cc")):
        return f"no C compiler ({os.environ.get('CC', 'cc')}) to build {os.path.basename(SOURCE)}"
    return None


def library(cache_dir: str = None) -> str:
    """The compiled library's path, compiled now if this source has not been compiled before."""
    reason = unsupported_reason()
    if reason:
        raise Unsupported(reason)
    with open(SOURCE, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    cache_dir = cache_dir or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                                          "ternarybert")
    path = os.path.join(cache_dir, f"avx2_only-{digest}.so")
    if os.path.isfile(path):
        return path
    os.makedirs(cache_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache_dir)
    os.close(fd)
    try:  # compiled beside its final name, then renamed: a concurrent or interrupted build leaves no half file
        p = subprocess.run([os.environ.get("CC", "cc"), "-O2", "-shared", "-fPIC", "-o", tmp, SOURCE, "-ldl"],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise Unsupported(f"compiling {SOURCE} failed:\n{p.stderr[-2000:]}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def environment(base: dict = None, cache_dir: str = None) -> dict:
    """base (default: os.environ) with the library preloaded and AVX-512 hidden from glibc."""
    env = dict(os.environ if base is None else base)
    env["LD_PRELOAD"] = ":".join(p for p in (library(cache_dir), env.get("LD_PRELOAD", "")) if p)
    env["GLIBC_TUNABLES"] = ":".join(p for p in (env.get("GLIBC_TUNABLES", ""), GLIBC_HIDDEN) if p)
    env[MARK] = "1"
    return env


def active() -> bool:
    """Whether this process runs under the library (loaded, not just named in the environment)."""
    if os.environ.get(MARK) != "1":
        return False
    try:
        with open("/proc/self/maps") as f:
            return any("avx2_only-" in line for line in f)
    except OSError:
        return False


def reexec_if_asked(flag: bool, script: str, argv=None) -> None:
    """For a script's --avx2_only flag: replace this process by ``python script argv`` (default: this
    command line's arguments) under the library, unless it already runs under it. The library must
    be there from the process's start, before any module has read CPUID. Under it, checks that the
    view took (numpy's CPUID probe: AVX2, no AVX-512F) and stops the script if not."""
    if flag and active():
        failed = not_taken(seen_features())
        if failed:
            raise SystemExit(f"{script}: {failed}")
    elif flag:
        argv = sys.argv[1:] if argv is None else list(argv)
        sys.stdout.flush()
        sys.stderr.flush()
        # the script as this command line named it, so a benchmark records the command as typed
        named = sys.argv[0] if sys.argv and os.path.abspath(sys.argv[0]) == os.path.abspath(script) else None
        os.execve(sys.executable, [sys.executable, named or os.path.abspath(script)] + argv, environment())


def seen_features() -> dict:
    """What numpy's CPUID probe finds in this process: {name: bool} for PROBED."""
    from numpy.core._multiarray_umath import __cpu_features__ as found
    return {k: bool(found.get(k)) for k in PROBED}


def not_taken(seen: dict):
    """None if a process that saw ``seen`` (seen_features()) ran on the view, else what went wrong."""
    if seen["AVX512F"] or not seen["AVX2"]:
        return f"the AVX2-only view did not take: the process saw {seen}"
    return None


def describe() -> dict:
    """For a benchmark's record: whether this process runs under the library, and what it sees."""
    return {"avx2_only": active(), "cpuid_seen": seen_features()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="print what numpy's CPUID probe finds, with and without")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="the command to run (after --)")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    try:
        env = environment()
    except Unsupported as e:
        raise SystemExit(f"avx2_only: {e}")
    if args.check:
        probe = [sys.executable, "-c", f"import sys; sys.path.insert(0, {HERE!r}); import avx2_only, json; "
                 "print(json.dumps(avx2_only.describe()))"]
        for name, e in (("this CPU", None), ("AVX2-only view", env)):
            out = subprocess.run(probe, env=e, capture_output=True, text=True, check=True).stdout.strip()
            print(f"{name:15s} {out}")
        return 0
    if not command:
        ap.error("give a command after --, or --check")
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    sys.exit(main())
