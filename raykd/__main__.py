"""``python -m raykd`` is the ``raykd`` command."""

from raykd.cli import main

main()
