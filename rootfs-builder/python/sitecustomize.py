"""rlm-sandbox: interpreter-level defence in depth (not a boundary).

Installed into the sandbox's stdlib and imported at every start, also in
isolated mode (`python3 -I` skips only the user site). It installs an audit
hook that refuses process creation and the import of the modules behind
it; Python offers no way to remove an audit hook once installed. The
"import" audit event fires only for the `import` statement, not for
`importlib.import_module`, so a finder first on `sys.meta_path` refuses
the same modules there (code can remove the finder; not the hook).

Known limit: Debian compiles `_posixsubprocess` into the interpreter, and
`_imp.create_builtin` loads a built-in module without an "import" audit
event, so `fork_exec` stays reachable to determined code; the seccomp
profile then refuses the process it would create (clone without
CLONE_THREAD is EPERM; the selftest row builtin_fork_exec). The boundary is
the runtime (gVisor or runc), the seccomp profile, the read-only root with
no other programs in it, and the cgroup limits; this file only turns the
common cases into a clear error.
"""

import sys

# Immutable on purpose (tuples, frozensets, str): the hook's data must not
# be changeable through references found with `gc`.
_PROCESS_EVENTS = (
    ("os.system", "the sandbox runs no shell commands"),
    ("os.exec", "the sandbox runs no other programs"),
    ("os.posix_spawn", "the sandbox runs no other programs"),
    ("os.spawn", "the sandbox runs no other programs"),
    ("os.fork", "the sandbox creates no processes"),
    ("os.forkpty", "the sandbox creates no processes"),
    ("subprocess.Popen", "the sandbox runs no other programs"),
    ("pty.spawn", "the sandbox runs no other programs"),
    ("os.startfile", "the sandbox runs no other programs"),
)

# Their files are removed from this rootfs (stubs raise the same message);
# refusing the import here also covers `_posixsubprocess`, which is built
# into Debian's interpreter and cannot be deleted.
_BLOCKED_MODULES = (
    ("subprocess", "the sandbox runs no other programs"),
    ("_posixsubprocess", "the sandbox runs no other programs"),
    ("multiprocessing", "the sandbox creates no processes"),
    ("_multiprocessing", "the sandbox creates no processes"),
    ("_posixshmem", "the sandbox shares no memory between processes"),
    ("ctypes", "the sandbox calls no foreign code"),
    ("_ctypes", "the sandbox calls no foreign code"),
)

# Attributes whose change would alter the hook's behaviour; CPython audits
# each assignment as "object.__setattr__".
_HOOK_ATTRIBUTES = frozenset(("__code__", "__defaults__", "__kwdefaults__"))


def _rlm_sandbox_audit(
    event,
    args,
    _events=_PROCESS_EVENTS,
    _event_names=frozenset(e for e, _ in _PROCESS_EVENTS),
    _modules=_BLOCKED_MODULES,
    _module_names=frozenset(m for m, _ in _BLOCKED_MODULES),
    _hook_attributes=_HOOK_ATTRIBUTES,
    _perm=PermissionError,
    _imp=ImportError,
    _str=str,
    _getattr=getattr,
):
    if event == "import":
        name = _str(args[0]).partition(".")[0]
        if name in _module_names:
            for blocked, reason in _modules:
                if blocked == name:
                    raise _imp("rlm-sandbox: %s is blocked: %s" % (name, reason), name=name)
        return
    if event in _event_names:
        for blocked, reason in _events:
            if blocked == event:
                raise _perm("rlm-sandbox: %s is blocked: %s" % (event, reason))
    if event == "object.__setattr__" and args[1] in _hook_attributes:
        target = args[0]
        if (
            _getattr(target, "__name__", None) == "_rlm_sandbox_audit"
            and _getattr(target, "__module__", None) == "sitecustomize"
        ):
            raise _perm("rlm-sandbox: changing the sandbox's audit hook is blocked")


class _RlmSandboxBlockedImports:
    """Refuses the blocked modules on every import path."""

    @staticmethod
    def find_spec(
        fullname,
        path=None,
        target=None,
        _modules=_BLOCKED_MODULES,
        _imp=ImportError,
    ):
        name = fullname.partition(".")[0]
        for blocked, reason in _modules:
            if blocked == name:
                raise _imp("rlm-sandbox: %s is blocked: %s" % (name, reason), name=name)
        return None


def _rlm_sandbox_stand_ins():
    """Installs `__import__` that hands inert stand-ins to the listed
    import statements of installed packages (docs/ROOTFS.md).

    The list (`_rlm_sandbox_standins.STAND_INS`, written by the build:
    file, line, module name) holds the module-level `import subprocess` /
    `import ctypes` statements of the rootfs's dist-packages that no
    `except ImportError` guards. The statement is told by the frame that
    executes it: its code's file and current line. A cell's code is
    compiled from a `<...>` name, never a file of the read-only root, so
    `import subprocess`, `__import__("subprocess")` and
    `importlib.import_module` (whose frame is importlib's) from user code
    reach the original import, which the hook and the finder refuse. The
    stand-in never enters `sys.modules` as `subprocess` or `ctypes`. Code
    can forge a frame's file name (compile() takes any); what it gets then
    is the same inert module, which can do nothing.
    """
    from _rlm_sandbox_standins import STAND_INS

    if not STAND_INS:
        return
    import builtins

    def __import__(
        name,
        globals=None,
        locals=None,
        fromlist=(),
        level=0,
        _original=builtins.__import__,
        _stand_ins=STAND_INS,
        _roots=frozenset(("subprocess", "ctypes")),
        _getframe=sys._getframe,
    ):
        if level == 0 and name.partition(".")[0] in _roots:
            frame = _getframe(1)
            key = (frame.f_code.co_filename, frame.f_lineno, name)
            if key in _stand_ins:
                return _original("_rlm_sandbox_standin").hand_out(name, fromlist, key[0], key[1])
        return _original(name, globals, locals, fromlist, level)

    builtins.__import__ = __import__


sys.meta_path.insert(0, _RlmSandboxBlockedImports)
sys.addaudithook(_rlm_sandbox_audit)
_rlm_sandbox_stand_ins()
del _rlm_sandbox_audit, _RlmSandboxBlockedImports, _rlm_sandbox_stand_ins
