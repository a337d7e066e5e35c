"""Errors that reach the user.

Anything the user supplied (a config file, a task spec, a data file, a CLI flag) that is wrong raises
:class:`InputError`; the CLI prints its message alone (no traceback) and exits with code 2.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input: the message names the file, key, column or row, and what is allowed."""


class ConfigError(InputError):
    """A config key is unknown, ill-typed or out of range."""


class DataError(InputError):
    """A data file or task spec cannot be loaded as declared."""


class OfflineError(InputError):
    """Something needs the network (a hub model or dataset) and this process is offline."""
