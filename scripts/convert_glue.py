"""Convert a GLUE task to MindRecord / TFRecord: see src/glue.py (python scripts/convert_glue.py -h)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from src.glue import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
