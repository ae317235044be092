"""The one base class for user-facing errors: the CLI prints these without a traceback."""


class LongctxError(ValueError):
    """A problem with the user's input or configuration; the message says what and where."""
