"""``python -m crs COMMAND ...``: the same as the ``crs`` command."""

from crs.cli import main

main()
