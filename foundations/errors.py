"""The one error type users see: a bad config or missing input, reported as one line."""


class UserError(Exception):
    """Something the user can fix. The entry point prints ``str(err)`` on one line and exits 2."""
