import os
import sys

if __package__ in (None, ""):
    # executed as a zipapp / plain script: make the package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aimem_standin.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
