"""User-facing errors: every message names the problem and what to do about it."""


class SofError(RuntimeError):
    """An error caused by input or set-up the user can fix; CLIs print it without a traceback."""


class DatasetError(SofError):
    """A dataset on disk is missing, malformed or of an unsupported version."""


def run_cli(main_fn):
    """Run a CLI body, turning SofError into a one-line message and exit code 2."""
    import sys

    try:
        return main_fn()
    except SofError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
