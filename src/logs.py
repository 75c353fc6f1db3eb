"""Logging set-up: one format for every entry point, script and benchmark."""
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
