"""``python -m raykd.cli`` is the ``raykd`` command (as ``python -m raykd``)."""

from raykd.cli import main

main()
