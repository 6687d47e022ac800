"""rlm-sandbox: what asyncio takes from `subprocess`, without subprocess.

asyncio imports `subprocess` at module level for its constants (default
arguments such as `stdin=subprocess.PIPE`), so the build points those
imports here: `import asyncio` works, while `import subprocess` in user
code still raises ImportError and `asyncio.create_subprocess_*` raises
PermissionError.
"""

PIPE = -1
STDOUT = -2
DEVNULL = -3

_MESSAGE = "rlm-sandbox: subprocess is blocked: the sandbox runs no other programs"


class SubprocessError(Exception):
    pass


class CalledProcessError(SubprocessError):
    pass


class TimeoutExpired(SubprocessError):
    pass


class Popen:
    def __init__(self, *args, **kwargs):
        raise PermissionError(_MESSAGE)


def list2cmdline(seq):
    raise PermissionError(_MESSAGE)
