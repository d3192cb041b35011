"""Errors a user can act on: each message names what was tried and what to do next."""


class HeadscopeError(Exception):
    """Base class: the message is shown to the user as-is (one line in the CLI, an error box in the app)."""


class InputError(HeadscopeError, ValueError):
    """Bad input from the user: a prompt, a head list, a dataset, an option."""


class ModelLoadError(HeadscopeError):
    """A model could not be loaded; the message says what was tried and what to do."""


class Cancelled(HeadscopeError):
    """A long computation was cancelled by its caller."""
