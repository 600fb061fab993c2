"""The one exception that reaches the user: a plain sentence, exit status 2, no traceback."""


class UserError(Exception):
    """Bad input or an unusable environment; the message says what is wrong and what to do."""
