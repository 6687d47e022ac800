# rlm-sandbox: lists the import statements of installed packages that get
# an inert stand-in (docs/ROOTFS.md), run at build time with the new tree's
# own interpreter in a chroot: `python3 -I -B -c SCRIPT ROOT...`.
#
# For each .py file under the given package roots (dist-packages), the
# statements `import subprocess`, `import ctypes`, `import ctypes.util`,
# `from ctypes import ...` that run at import time (the module body, class
# bodies, if/for/while/with/match blocks; not function bodies, which run on
# call) and that no enclosing `try` guards with a handler catching
# ImportError (ImportError, Exception, BaseException or a bare except): a
# guarded import already copes with ImportError, and handing it a stand-in
# would send the package down its "available" path. Prints one line per
# statement and module, `FILE<TAB>LINE<TAB>MODULE`, sorted.
import ast, os, sys

ROOTS = ("subprocess", "ctypes")
CATCHING = ("ImportError", "Exception", "BaseException")


def catches_import_error(handler):
    if handler.type is None:
        return True
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    for kind in kinds:
        name = kind.id if isinstance(kind, ast.Name) else getattr(kind, "attr", None)
        if name in CATCHING:
            return True
    return False


def visit(body, guarded, found):
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.partition(".")[0] in ROOTS and not guarded:
                    found.add((node.lineno, alias.name))
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 0 and module.partition(".")[0] in ROOTS and not guarded:
                found.add((node.lineno, module))
        elif isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            inner = guarded or any(catches_import_error(h) for h in node.handlers)
            visit(node.body, inner, found)
            for handler in node.handlers:
                visit(handler.body, guarded, found)
            visit(node.orelse, guarded, found)
            visit(node.finalbody, guarded, found)
        elif isinstance(node, ast.Match):
            for case in node.cases:
                visit(case.body, guarded, found)
        else:
            for field in ("body", "orelse", "finalbody"):
                value = getattr(node, field, None)
                if isinstance(value, list):
                    visit(value, guarded, found)


def scan(path):
    with open(path, "rb") as f:
        source = f.read()
    if b"subprocess" not in source and b"ctypes" not in source:
        return set()
    try:
        tree = ast.parse(source, path)
    except (SyntaxError, ValueError):
        # Not importable by this Python either: nothing to hand out.
        return set()
    found = set()
    visit(tree.body, False, found)
    return found


lines = []
for root in sys.argv[1:]:
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                for line, module in scan(path):
                    lines.append("%s\t%d\t%s" % (path, line, module))
lines.sort()
print("\n".join(lines))
