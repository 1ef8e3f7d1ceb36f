"""User-facing errors: the CLI prints these as one line and exits with code 2 (no traceback)."""


class UserError(Exception):
    """A mistake in what the user asked for: a bad value, a missing file, an unknown choice."""


def choices(values) -> str:
    return ", ".join(str(v) for v in sorted(values))
