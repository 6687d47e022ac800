"""rlm-sandbox: an inert stand-in for `subprocess` (docs/ROOTFS.md).

asyncio imports `subprocess` at module level for its constants (default
arguments such as `stdin=subprocess.PIPE`), so the build points those
imports here; an installed package whose own module imports `subprocess`
at import time gets this module too (sitecustomize hands it out for
exactly those import statements). `import subprocess` in user code still
raises ImportError.

Its constants and exception classes are subprocess's, so code that names
them (`except subprocess.CalledProcessError`) works; everything else that
can be called raises PermissionError naming the policy, which is an
OSError: code that treats a missing program as OSError carries on. It
holds no reference to anything that can start a process: reaching it
(`pandas._config.localization.subprocess`) gives user code nothing.
"""

PIPE = -1
STDOUT = -2
DEVNULL = -3

_MESSAGE = (
    "rlm-sandbox: subprocess is blocked: the sandbox runs no other programs "
    "(%s was called on the inert stand-in a package's import gets)"
)


class SubprocessError(Exception):
    pass


class CalledProcessError(SubprocessError):
    def __init__(self, returncode, cmd, output=None, stderr=None):
        self.returncode = returncode
        self.cmd = cmd
        self.output = output
        self.stderr = stderr


class TimeoutExpired(SubprocessError):
    def __init__(self, cmd, timeout, output=None, stderr=None):
        self.cmd = cmd
        self.timeout = timeout
        self.output = output
        self.stderr = stderr


class Popen:
    def __init__(self, *args, **kwargs):
        raise PermissionError(_MESSAGE % "Popen")


class CompletedProcess:
    def __init__(self, *args, **kwargs):
        raise PermissionError(_MESSAGE % "CompletedProcess")


def _blocked(name):
    def blocked(*args, **kwargs):
        raise PermissionError(_MESSAGE % name)

    blocked.__name__ = blocked.__qualname__ = name
    return blocked


run = _blocked("run")
call = _blocked("call")
check_call = _blocked("check_call")
check_output = _blocked("check_output")
getoutput = _blocked("getoutput")
getstatusoutput = _blocked("getstatusoutput")
list2cmdline = _blocked("list2cmdline")


def __getattr__(name):
    # Any other public name exists too, and refuses to be called.
    if name.startswith("_"):
        raise AttributeError("module 'subprocess' (rlm-sandbox stand-in) has no attribute %r" % name)
    value = _blocked(name)
    globals()[name] = value
    return value
