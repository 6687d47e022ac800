# mypy: ignore-errors
"""The sandbox's side of rlm_sandbox.dspy: its source is sent into the
sandbox as the first cell and runs there as a module of its own in
sys.modules (user code that rebinds or deletes globals cannot break it),
in the sandbox's CPython; `g` is always the user's globals. Never
imported on the host."""

# JSON through the agent's module (CPython's C codec without `import
# json`, whose regular expressions cost ~6 ms of CPU, scripts/
# bench_agent_start.py, more under gVisor): this module is set up on a claimed pool sandbox's
# time-to-interactive path. The calls below give json.dumps/json.loads's
# own settings where they differ from the agent's.
from _rlm_agent import cjson

# Each parameter kind rlm_sandbox.dspy sends (tool_params), and how a def
# spells it.
_PREFIXES = {
    "positional_only": "",
    "positional": "",
    "var_positional": "*",
    "keyword": "",
    "var_keyword": "**",
}
#: rlm_sandbox.dspy.POSITIONAL_KEY: the arguments given by position.
POSITIONAL_KEY = "*args"
MARK = None
inputs = {}
bound_tools = {}
_answer = None
_host = None
#: The sandbox's own names (answer, llm_query, the contexts', ...), as at
#: the start: no input or tool may be bound to one.
_own = frozenset()


class Refused(Exception):
    """A step's input or tool is named as one of the sandbox's own names:
    the step is refused before anything is bound (the host reads this
    exception's line as the interpreter's error, not the code's)."""


class Submitted(BaseException):
    """SUBMIT ends the code at once (a BaseException: `except Exception` does not stop it)."""


class _HostDefault:
    def __repr__(self):
        return "<host default>"


_HOST_DEFAULT = _HostDefault()


def start(g, mark, host_tool):
    """Keeps the sandbox's answer dict, host tool and own names. The names
    are checked here, not on the host: the host would wait for a claim's
    `ready` (its names) before it could send a step's first cell."""
    global MARK, _answer, _host, _own
    MARK, _answer, _host = mark, g["answer"], g[host_tool]
    # An input named `context` is the first context file's value (the
    # host sends it so), which may be bound already.
    _own = frozenset(n for n in g if not n.startswith("_") and n != "context")


def put_json(name, text):
    inputs[name] = cjson.loads(text, constants=True)


def apply(g, text):
    """One step's bookkeeping, in order: SUBMIT, tools, file inputs,
    bindings; refused first when a tool or input has one of the sandbox's
    own names."""
    ops = cjson.loads(text, constants=True)
    for what, names in (("tool", ops.get("tools", ())), ("input", ops.get("bind", ()))):
        for name in names:
            if name in _own:
                raise Refused("%s name %r is one of the sandbox's own names" % (what, name))
    if "submit" in ops:
        g["SUBMIT"] = _make_submit(ops["submit"])
    if "tools" in ops:
        _bind_tools(g, ops["tools"])
    for name, index in ops.get("files", {}).items():
        inputs[name] = g["context_%d" % index]
    for name in ops.get("bind", ()):
        g[name] = inputs[name]


def _jsonable(value):
    """SUBMIT's stand-in for a value JSON has no form for."""
    if isinstance(value, (set, frozenset)):
        try:
            return sorted(value)
        except TypeError:
            return list(value)
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars
    if callable(tolist):
        return tolist()
    return str(value)


def _bind(names, args, kwargs):
    """The fields by name, as inspect.Signature.bind binds parameters that
    are all positional-or-keyword and required (its messages too)."""
    if len(args) > len(names):
        raise TypeError("too many positional arguments")
    values = dict(zip(names, args))
    for key, value in kwargs.items():
        if key in values:
            raise TypeError("multiple values for argument %r" % key)
        if key not in names:
            raise TypeError("got an unexpected keyword argument %r" % key)
        values[key] = value
    for name in names:
        if name not in values:
            raise TypeError("missing a required argument: %r" % name)
    return {name: values[name] for name in names}


def _make_submit(names):
    shown = "(%s)" % ", ".join(names)
    # A function with the fields as its parameters, for inspect.signature
    # (which follows __wrapped__) and help(); names are identifiers.
    spec = {}
    exec("def SUBMIT%s: pass" % shown, spec)

    def SUBMIT(*args, **kwargs):
        try:
            values = _bind(names, args, kwargs)
        except TypeError as e:
            raise TypeError("SUBMIT%s: %s" % (shown, e)) from None
        _answer["content"] = MARK + cjson.dumps(values, default=_jsonable, ensure_ascii=True, allow_nan=True)
        _answer["ready"] = True
        raise Submitted("SUBMIT ends the step")

    SUBMIT.__wrapped__ = spec["SUBMIT"]
    SUBMIT.__doc__ = "Submits the final outputs %s and ends this step." % shown
    return SUBMIT


def _bind_tools(g, specs):
    for name, fn in list(bound_tools.items()):
        if g.get(name) is fn:
            del g[name]
    bound_tools.clear()
    for name, params in specs.items():
        g[name] = bound_tools[name] = _make_tool(name, params)


def _make_tool(name, params):
    """The sandbox's function for host tool `name`: called as the code
    calls it (its arguments sent as given), after Python's own binding
    check against the host function's parameters: a function of those
    parameters, compiled here, that inspect.signature and help() find
    through __wrapped__. Not inspect.Signature: importing inspect costs
    ~10 ms in a fresh sandbox, on the first step of every dspy.RLM task
    (it registers tools)."""
    if not name.isidentifier():
        raise ValueError("tool name %r is not an identifier" % (name,))
    source, shown = _parameters(params)
    spec = {"_D": _HOST_DEFAULT}
    exec("def %s(%s): pass" % (name, source), spec)
    check = spec[name]

    def tool(*args, **kwargs):
        try:
            check(*args, **kwargs)
        except TypeError as e:
            raise TypeError(str(e)) from None
        # Sent as called (LocalInterpreter's host calls tools[name](*args, **kwargs)).
        arguments = dict(kwargs)
        if args:
            arguments[POSITIONAL_KEY] = list(args)
        return _call(name, arguments)

    tool.__name__ = tool.__qualname__ = name
    tool.__wrapped__ = check
    tool.__doc__ = "Calls the host tool %s(%s); a host error is a RuntimeError." % (name, shown)
    return tool


def _parameters(params):
    """A parameter list from the host's [name, kind, has_default] triples,
    in their order, as a def's source (defaults `_D`) and as shown (as
    inspect.Signature shows it). Names must be identifiers: they are
    compiled."""
    last_positional_only = max((i for i, (_, k, _) in enumerate(params) if k == "positional_only"), default=-1)
    source, shown = [], []
    star = False
    for i, (param, kind, has_default) in enumerate(params):
        if kind not in _PREFIXES or not isinstance(param, str) or not param.isidentifier():
            raise ValueError("tool parameter %r of kind %r cannot be bound" % (param, kind))
        if kind == "keyword" and not star:
            source.append("*")
            shown.append("*")
        star = star or kind in ("keyword", "var_positional")
        source.append(_PREFIXES[kind] + param + ("=_D" if has_default else ""))
        shown.append(_PREFIXES[kind] + param + ("=%r" % _HOST_DEFAULT if has_default else ""))
        if i == last_positional_only:
            source.append("/")
            shown.append("/")
    return ", ".join(source), ", ".join(shown)


def _call(name, arguments):
    try:
        cjson.dumps(arguments)
    except (TypeError, ValueError) as e:
        raise TypeError("%s(): arguments must be JSON values: %s" % (name, e)) from None
    reply = _host(name, arguments)
    if isinstance(reply, dict) and "value" in reply:
        return reply["value"]
    if isinstance(reply, dict) and isinstance(reply.get("error"), str):
        raise RuntimeError(reply["error"])
    text = reply if isinstance(reply, str) else "%s(): the host gave no result" % name
    raise RuntimeError(text[len("Error: "):] if text.startswith("Error: ") else text)
