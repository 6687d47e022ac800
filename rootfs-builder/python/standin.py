"""rlm-sandbox: inert stand-ins handed to installed packages (docs/ROOTFS.md).

The sandbox removes `subprocess` and `ctypes`; user code that imports them
gets ImportError. Some packages import them at import time for things a
sandbox never does (pandas lists locales with `locale -a` and formats a
Windows clipboard error with `ctypes.WinError`; matplotlib looks for
LaTeX and fc-list). The build lists those import statements (file, line,
module: `_rlm_sandbox_standins.STAND_INS`), and sitecustomize's
`__import__` hands this module's stand-ins to exactly those statements,
never to anyone else and never through `sys.modules`.

A stand-in's attributes exist; calling any of them raises PermissionError
naming the policy. The `ctypes` one holds classes (so a package can
subclass `ctypes.Structure` in a class body) whose instantiation raises.
Nothing here refers to the removed modules or to anything that can start
a process or call foreign code, so user code that reaches a stand-in
through a package (`pandas.errors.ctypes`) gets nothing it could not
write itself.
"""

import types

# Every stand-in handed out: (file, line, module), in order. A log for the
# build's self-check, which proves each package's stand-ins inert.
granted = []

_CTYPES_MESSAGE = (
    "rlm-sandbox: ctypes is blocked: the sandbox calls no foreign code "
    "(%s was called on the inert stand-in a package's import gets)"
)


class _InertType(type):
    """A stand-in class: can be subclassed, named, multiplied into an
    array type; creating an instance raises PermissionError."""

    def __call__(cls, *args, **kwargs):
        raise PermissionError(_CTYPES_MESSAGE % cls.__qualname__)

    def __mul__(cls, length):
        return cls


class _InertModule(types.ModuleType):
    """A stand-in module whose every public attribute is an inert class."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(
                "module %r (rlm-sandbox stand-in) has no attribute %r" % (self.__name__, name)
            )
        value = _InertType(name, (), {"__module__": self.__name__})
        setattr(self, name, value)
        return value


ctypes = _InertModule("ctypes", "rlm-sandbox: an inert stand-in for ctypes")
for _name in ("util", "wintypes", "macholib"):
    setattr(ctypes, _name, _InertModule("ctypes." + _name, "rlm-sandbox: an inert stand-in"))
del _name


def hand_out(name, fromlist, file, line):
    """What `__import__(name, ..., fromlist)` returns for a listed
    statement: the top-level stand-in, or the submodule one when
    `from a.b import c` asks for names from `a.b`."""
    granted.append((file, line, name))
    root, _, rest = name.partition(".")
    if root == "subprocess":
        import _rlm_sandbox_subprocess

        module = _rlm_sandbox_subprocess
    else:
        module = ctypes
    if not fromlist:
        return module
    for part in rest.split(".") if rest else ():
        module = getattr(module, part)
    return module
