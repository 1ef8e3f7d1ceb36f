"""User-facing errors: the CLI prints these as one line and exits with code 2 (no traceback)."""


class UserError(Exception):
    """A mistake in what the user asked for: a bad value, a missing file, an unknown choice."""


def choices(values) -> str:
    return ", ".join(str(v) for v in sorted(values))


class Terminated(KeyboardInterrupt):
    """SIGTERM (SLURM, `kill`): ends a run as 'interrupted' like Ctrl-C, and the process with 128 + 15 = 143."""
