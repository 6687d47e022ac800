# rlm-sandbox: the built rootfs's self-check, run with `python3 -I -c` as the
# sandbox user inside a chroot of the new tree. Prints one line per failure
# on stderr and exits 1, or prints "rlm-sandbox self-check ok".
#
# Arguments `PACKAGE=MODULE` name the top-level modules of the extra
# packages (`rootfs build --with`); each is imported first. A failed import
# prints one tab-separated line on stdout for the builder to report:
# `refuse PACKAGE MODULE BLOCKED` when it needed what the sandbox removes
# or refuses (the "rlm-sandbox: X is blocked" message anywhere in the
# exception chain), `importfail PACKAGE MODULE TYPE: MESSAGE` otherwise.
# An import that was handed inert stand-ins (docs/ROOTFS.md) prints, before
# the final line, `standin PACKAGE FILE:LINE MODULE` for each; the
# self-check proves every one inert, and after each package that user
# code still cannot import subprocess or ctypes by any route.
import importlib, os, re, sys

failures = []

def check(what, ok, detail=""):
    if not ok:
        failures.append("%s%s" % (what, (": " + detail) if detail else ""))

def _chain(e):
    seen = []
    while e is not None and e not in seen:
        seen.append(e)
        e = e.__cause__ or e.__context__
    return seen

def _user_side_refused(package):
    # What a cell does: code compiled from a `<...>` name, never a file.
    for what, code in (
        ("import %s", "import %s"),
        ("importlib.import_module(%r)", "import importlib; importlib.import_module(%r)"),
        ("__import__(%r)", "__import__(%r)"),
    ):
        for blocked in ("subprocess", "ctypes"):
            label = "%s: user code's %s" % (package, what % blocked)
            try:
                exec(compile(code % blocked, "<cell>", "exec"), {})
                check(label, False, "succeeded")
            except ImportError as e:
                check(label, str(e).startswith("rlm-sandbox: %s is blocked" % blocked), str(e))
    for blocked in ("subprocess", "ctypes"):
        check("%s: sys.modules[%r]" % (package, blocked), blocked not in sys.modules,
              repr(sys.modules.get(blocked)))


def _granted():
    standin = sys.modules.get("_rlm_sandbox_standin")
    return list(standin.granted) if standin is not None else []


def _prove_inert(package, module):
    # Every callable of a stand-in raises PermissionError naming the policy.
    standin = sys.modules["_rlm_sandbox_standin"]
    root = module.partition(".")[0]
    target = standin.hand_out(module, ("x",), "<selfcheck>", 0)
    standin.granted.pop()
    calls = (("Popen", ["true"]), ("run", ["true"]), ("check_output", ["true"])) \
        if root == "subprocess" else (("CDLL", "libc.so.6"), ("cast", 0), ("WinError", None))
    for attribute, argument in calls:
        label = "%s: stand-in %s.%s" % (package, module, attribute)
        try:
            getattr(target, attribute)(argument)
            check(label, False, "succeeded")
        except PermissionError as e:
            check(label, str(e).startswith("rlm-sandbox: %s is blocked" % root), str(e))


refused = []
standins = []
for pair in sys.argv[1:]:
    package, _, name = pair.partition("=")
    before = len(_granted())
    try:
        module = importlib.import_module(name)
    except BaseException as e:
        chain = _chain(e)
        text = " ".join("%s: %s" % (type(x).__name__, x) for x in chain)
        blocked = re.search(r"rlm-sandbox: ([\w.]+) is blocked", text)
        if blocked:
            refused.append("refuse\t%s\t%s\t%s" % (package, name, blocked.group(1)))
        else:
            inner = chain[-1]
            detail = " ".join(("%s: %s" % (type(inner).__name__, inner)).split())
            refused.append("importfail\t%s\t%s\t%s" % (package, name, detail[:300]))
        continue
    cached = getattr(module, "__cached__", None)
    if cached:
        check("bytecode of " + name, os.path.exists(cached), cached + " missing")
    for file, line, blocked in _granted()[before:]:
        standins.append("standin\t%s\t%s:%d\t%s" % (package, file, line, blocked))
        _prove_inert(package, blocked)
    _user_side_refused(package)
if refused:
    print("\n".join(refused))
    sys.exit(1)

MODULES = (
    "json re collections itertools math random hashlib datetime csv sqlite3 "
    "ssl threading concurrent.futures uuid platform textwrap statistics decimal "
    "base64 zlib gzip io mmap signal socket asyncio fcntl select _rlm_agent"
).split()
for name in MODULES:
    try:
        module = importlib.import_module(name)
    except Exception as e:
        check("import " + name, False, "%s: %s" % (type(e).__name__, e))
        continue
    cached = getattr(module, "__cached__", None)
    if cached:
        check("bytecode of " + name, os.path.exists(cached), cached + " missing")

for name in ("subprocess", "multiprocessing", "ctypes", "_posixsubprocess", "_ctypes"):
    try:
        importlib.import_module(name)
        check("import " + name, False, "succeeded")
    except ImportError as e:
        check("import " + name, str(e).startswith("rlm-sandbox: "), str(e))

for what, call in (("os.system", lambda: os.system("true")),
                   ("os.fork", os.fork),
                   ("os.posix_spawn", lambda: os.posix_spawn(sys.executable, [sys.executable], {}))):
    try:
        call()
        check(what, False, "succeeded")
    except PermissionError as e:
        check(what, str(e).startswith("rlm-sandbox: %s is blocked" % what), str(e))

check("sitecustomize loaded", "sitecustomize" in sys.modules)
# The stdlib's, not one a package (or a .pth) put earlier on sys.path.
check("sitecustomize from the stdlib",
      os.path.dirname(getattr(sys.modules.get("sitecustomize"), "__file__", "") or "")
      == os.path.dirname(os.__file__))
check("isolated mode", sys.flags.isolated == 1)

if os.getuid() != 0:
    try:
        open("/etc/shadow").close()
        check("open /etc/shadow", False, "readable")
    except PermissionError:
        pass
    try:
        open("/usr/lib/rlm-sandbox-write-test", "w").close()
        check("write to /usr/lib", False, "writable")
    except PermissionError:
        pass

import asyncio, json, sqlite3, tempfile
from concurrent.futures import ThreadPoolExecutor

with ThreadPoolExecutor(4) as pool:
    check("thread pool", list(pool.map(lambda x: x * x, range(5))) == [0, 1, 4, 9, 16])
with tempfile.NamedTemporaryFile("w+", dir="/tmp") as f:
    f.write("data")
    f.flush()
    f.seek(0)
    check("file I/O in /tmp", f.read() == "data")
db = sqlite3.connect(":memory:")
check("sqlite3", db.execute("select 6 * 7").fetchone() == (42,))

async def _answer():
    await asyncio.sleep(0)
    return 42

check("asyncio.run", asyncio.run(_answer()) == 42)
try:
    asyncio.run(asyncio.create_subprocess_exec("true"))
    check("asyncio subprocess", False, "succeeded")
except PermissionError as e:
    check("asyncio subprocess", "rlm-sandbox:" in str(e), str(e))
check("json", json.loads('{"a": [1]}') == {"a": [1]})

# The session agent, in process (no host to talk to): frames, a context
# over a file, a tool function, tracebacks without its own frames.
try:
    import io
    import _rlm_agent as agent

    frame = agent.encode_frame(agent.JSON, agent.encode_json({"t": "ready", "s": "\udcff"}))
    check("agent frame round trip",
          agent.read_frame(io.BytesIO(frame)) == (agent.JSON, b'{"t":"ready","s":"?"}'))
    with tempfile.NamedTemporaryFile("wb", dir="/tmp") as f:
        f.write(b"first line\nthe NEEDLE here\nlast\n")
        f.flush()
        ctx = agent.ContextFile.open(0, f.name, "text")
        check("agent ctx search", ctx.search("NEEDLE") == [{"offset": 15, "match": "NEEDLE"}])
        check("agent ctx search_lines",
              ctx.search_lines("needle", ignore_case=True) == [{"line": 2, "offset": 11, "text": "the NEEDLE here"}])
        check("agent ctx read", (ctx.size, ctx.head(5), ctx.tail(5)) == (32, "first", "last\n"))
        check("agent ctx lines", list(ctx.iter_lines()) == ["first line", "the NEEDLE here", "last"])
    with tempfile.NamedTemporaryFile("wb", dir="/tmp") as f:
        empty = agent.ContextFile.open(1, f.name, "text")
        check("agent empty ctx", (empty.size, empty.search("x"), empty.head()) == (0, [], ""))
    tool = agent.make_tool("lookup", ["key"], lambda name, args: (name, args))
    check("agent tool", tool(key="k") == ("lookup", {"key": "k"}))
    try:
        agent.ContextFile.open(2, "/nonexistent", "text").search(42)
    except Exception as e:
        text = agent.format_user_exception(e)
        check("agent traceback", "_rlm_agent" not in text and "FileNotFoundError" in text, text)
except Exception as e:
    check("agent in process", False, "%s: %s" % (type(e).__name__, e))

if failures:
    for line in failures:
        print("FAIL " + line, file=sys.stderr)
    sys.exit(1)
if standins:
    print("\n".join(standins))
print("rlm-sandbox self-check ok")
