"""The one error type for bad user input (case keys, files, options)."""


class FemplastInputError(ValueError):
    """Invalid user input: the message names the key, the value and what is allowed.

    The command line turns it into exit code 2 before any computation starts.
    """

    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key} = {value!r} is invalid: {allowed}")
