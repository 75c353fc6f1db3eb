"""Import a Hugging Face BERT folder: see src/checkpoint.py (python scripts/import_hf.py -h)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from src.checkpoint import main_import  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_import())
