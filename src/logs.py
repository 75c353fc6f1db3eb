"""Logging set-up: one format for every entry point, script and benchmark."""
import collections
import logging
import os
import sys

FORMAT = "%(asctime)s %(levelname)s %(message)s"


def setup_logging(stream=None) -> None:
    """INFO and above to ``stream``: stdout for the training entry points, stderr for the data
    scripts, the recipe runner and predict.py (whose stdout may carry predictions)."""
    logging.basicConfig(level=logging.INFO, handlers=[logging.StreamHandler(stream or sys.stdout)], force=True,
                        format=FORMAT)


def log_to_file(path: str) -> None:
    """Also log to ``path`` (called once the output folder is prepared)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(FORMAT))
    logging.getLogger().addHandler(handler)


class Throughput:
    """Samples per second over the last ``window`` log intervals, from cumulative (samples, seconds).

    A run-long average would carry the first step's graph compilation, and any pause (a suspended
    job, a machine busy for a while), into every later estimate; this one forgets them once
    ``window`` newer intervals have been logged. The first call has no interval yet: its average."""

    def __init__(self, window: int = 5):
        self.marks = collections.deque(maxlen=window + 1)

    def update(self, samples: float, seconds: float) -> float:
        self.marks.append((samples, seconds))
        (s0, t0), (s1, t1) = self.marks[0], self.marks[-1]
        if len(self.marks) == 1:
            return s1 / max(t1, 1e-9)
        return (s1 - s0) / max(t1 - t0, 1e-9)


def format_duration(seconds: float) -> str:
    """H:MM:SS with the hours unbounded (time.strftime's %H wraps at a day)."""
    s = int(round(max(seconds, 0.0)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
