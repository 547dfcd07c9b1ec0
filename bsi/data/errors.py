"""The one exception the data layer raises for missing, corrupt or mismatched files."""

from __future__ import annotations


class DatasetError(Exception):
    """A dataset cannot be used as it is on disk; the message is one line that says what to do.

    Entry points print the message and exit with status 2 instead of showing a traceback.
    """
