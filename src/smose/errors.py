"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class SmoseError(Exception):
    """A problem the user can fix: bad input, an unusable file, an unsupported environment."""
