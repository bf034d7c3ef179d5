"""`python -m bench.chaos [--duration 120] ...` from the project's root, or `python bench/chaos ...`
from anywhere: the chaos run (see `bench.chaos`)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as `python bench/chaos`
    sys.path.insert(0, str(ROOT))

from bench.chaos.run import main  # noqa: E402

sys.exit(main())
