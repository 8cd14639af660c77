"""The one error type for bad user input (case keys, files, options)."""


class FemplastInputError(ValueError):
    """Invalid user input: the message names the key, the value and what is allowed.

    The command line turns it into exit code 2 before any computation starts.
    """

    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        text, limit = repr(value), 400 if isinstance(value, str) else 80
        if len(text) > limit:  # one readable line, whatever the value (file names in full)
            text = text[:limit - 3] + "..."
        super().__init__(f"{key} = {text} is invalid: {allowed}")


class FemplastInputErrors(FemplastInputError):
    """Several input problems found by one validation pass, reported together (one line
    each); ``problems`` lists them, the first also sets ``key``, ``value`` and ``allowed``."""

    def __init__(self, problems: list[FemplastInputError]):
        self.problems = [p for exc in problems for p in self.flatten(exc)]
        first = self.problems[0]
        self.key, self.value, self.allowed = first.key, first.value, first.allowed
        ValueError.__init__(self, "\n".join(str(p) for p in self.problems))

    @staticmethod
    def flatten(exc: FemplastInputError) -> list[FemplastInputError]:
        return list(exc.problems) if isinstance(exc, FemplastInputErrors) else [exc]


def io_error_line(exc: OSError) -> str:
    """One line for a failed file operation: the path and the system's reason (ENOSPC: 'No
    space left on device'), e.g. for the command line's exit code 1."""
    path = exc.filename if exc.filename is not None else getattr(exc, "femplast_path", None)
    reason = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    return f"{path}: {reason}" if path is not None else reason
