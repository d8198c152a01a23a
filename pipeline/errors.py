"""One error type for bad input: the CLI prints its message as one line and exits non-zero."""


class CakdError(Exception):
    """A problem the user can fix (bad params, missing file, corrupt image, failed gate).

    The CLI turns it into a single line on stderr and exit code ``exit_code``; never a traceback.
    """

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
