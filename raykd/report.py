"""The old name of :mod:`raykd.console_text` (what raykd prints about a job), kept for
importers outside the package's own modules; import :mod:`raykd.console_text` instead."""

from raykd.console_text import (  # noqa: F401
    dataset_lines,
    event_line,
    markdown_table,
    print_result,
    result_rows,
    score_column,
)
