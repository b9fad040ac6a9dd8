"""The two kinds of error a user can meet, so the CLI can print them without a traceback."""


class InputError(ValueError):
    """Bad user input: the message starts with the offending file or folder and names the problem."""


class WeightsUnavailableError(RuntimeError):
    """Backbone weights could not be found or downloaded; the message names offline alternatives."""
