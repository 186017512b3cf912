"""Settings read from environment variables: one record each, from which ``docs/CONFIGURATION.md`` is made.

No pyspark here: the DAG's settings (``order_tracking_load.settings``) use these records when the DAG
file is parsed, and the local Spark session's (``spark_jobs.session``) when it starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, its default (as documented) and what it controls."""

    env: str
    default: str
    help: str
    documented_default: str | None = None  # what the docs show when the default is computed, e.g. a path

    def read(self) -> str:
        """The variable's value, or its default."""
        return os.environ.get(self.env, self.default)


def markdown_table(settings: tuple[Setting, ...]) -> str:
    """The settings as a Markdown table: variable, default, meaning."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for setting in settings:
        shown = setting.documented_default or (f"`{setting.default}`" if setting.default else "(empty)")
        rows.append(f"| `{setting.env}` | {shown} | {setting.help} |")
    return "\n".join(rows) + "\n"
