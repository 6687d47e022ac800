"""rlm-sandbox: interpreter-level defence in depth (not a boundary).

Installed into the sandbox's stdlib; loaded at every start, also in
isolated mode (-I). The audit hook refuses process creation; an audit hook
cannot be removed from Python code once installed. The real boundary is
the runtime (gVisor or runc), the seccomp profile and the cgroup limits.
"""

import sys

_BLOCKED_EVENTS = {
    "os.system": "the sandbox runs no shell commands",
    "os.exec": "the sandbox runs no other programs",
    "os.posix_spawn": "the sandbox runs no other programs",
    "os.spawn": "the sandbox runs no other programs",
    "os.fork": "the sandbox creates no processes",
    "os.forkpty": "the sandbox creates no processes",
    "subprocess.Popen": "the sandbox runs no other programs",
    "pty.spawn": "the sandbox runs no other programs",
    "os.startfile": "the sandbox runs no other programs",
}


# Modules removed from this rootfs; the import hook also covers the ones
# compiled into the interpreter (_posixsubprocess is built in on Debian).
_BLOCKED_MODULES = {
    "subprocess": "the sandbox runs no other programs",
    "_posixsubprocess": "the sandbox runs no other programs",
    "multiprocessing": "the sandbox creates no processes",
    "_multiprocessing": "the sandbox creates no processes",
    "_posixshmem": "the sandbox shares no memory",
    "ctypes": "the sandbox calls no foreign code",
    "_ctypes": "the sandbox calls no foreign code",
}


def _rlm_sandbox_audit(
    event,
    args,
    _blocked=_BLOCKED_EVENTS,
    _modules=_BLOCKED_MODULES,
    _perm=PermissionError,
    _imp=ImportError,
):
    if event == "import":
        name = args[0].partition(".")[0]
        reason = _modules.get(name)
        if reason is not None:
            raise _imp("rlm-sandbox: %s is blocked: %s" % (name, reason), name=name)
        return
    reason = _blocked.get(event)
    if reason is not None:
        raise _perm("rlm-sandbox: %s is blocked: %s" % (event, reason))


sys.addaudithook(_rlm_sandbox_audit)
del _rlm_sandbox_audit
