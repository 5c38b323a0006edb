"""The one exception type for a user's mistake: the CLI prints it as one line, no traceback."""


class SightdError(Exception):
    """Bad input from the user (config, data, model file); the message says what to do."""
