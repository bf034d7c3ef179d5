"""The child process of a parallel rebuild (`projections.rebuild.parallel`): not a command for
people. A module of its own so that `python -m projections.rebuild` runs it without the package
importing it first."""

from projections.rebuild.parallel import child_main

child_main()
