"""Contexts in the agent (docs/PROTOCOL.md, "Contexts"): how each format
arrives, `ctx`'s reads and searches, and the load ceiling. Driven over the
agent's stdin/stdout as the host drives it (frames.py)."""

from __future__ import annotations

from typing import Any

from frames import Agent, ctx_spec


def test_json_context_arrives_parsed(agent: Agent, files: Any) -> None:
    path = files(b'{"items": [1, 2, 3], "name": "ctx"}', ".json")
    agent.hello(contexts=[ctx_spec(0, path, "json")])
    cell = agent.exec("print(type(context).__name__, context['items'], context_0 is context, ctx.format)")
    assert cell.out == "dict [1, 2, 3] True json\n"


def test_text_context_is_decoded_with_replacement(agent: Agent, files: Any) -> None:
    path = files(b"caf\xc3\xa9 \xff!")
    agent.hello(contexts=[ctx_spec(0, path)])
    assert agent.exec("print(ascii(context))").out == "'caf\\xe9 \\ufffd!'\n"


def test_ctx_reads_and_searches_a_file(agent: Agent, files: Any) -> None:
    text = "".join("line %d alpha\n" % i for i in range(1, 1001)) + "THE-NEEDLE-7f3a here\nlast line no newline"
    path = files(text.encode())
    agent.hello(contexts=[ctx_spec(0, path)])
    cell = agent.exec(
        "hits = ctx.search('THE-NEEDLE-[0-9a-f]+')\n"
        "print(hits)\n"
        "print(repr(ctx.snippet(hits[0]['offset'], 5)))\n"
        "print(ctx.search_lines('needle', ignore_case=True))\n"
        "print(ctx.search_lines('^line 99[0-9] ', max_results=3))\n"
        "print(len(ctx.search('alpha', max_results=None)), len(ctx.search('alpha')))\n"
        "print(repr(ctx.head(13)), repr(ctx.tail(7)), repr(ctx.read(7, 5)))\n"
        "lines = list(ctx.iter_lines())\n"
        "print(len(lines), lines[0], lines[-1])\n"
        "print(next(ctx.iter_lines(hits[0]['offset'])))\n"
        "print(ctx.size == len(ctx) == %d)\n" % len(text)
    )
    assert cell.status == "ok", cell.err
    offset = text.index("THE-NEEDLE")
    out = cell.out.splitlines()
    assert out[0] == str([{"offset": offset, "match": "THE-NEEDLE-7f3a"}])
    assert out[1] == repr(text[offset - 5:offset + 5])
    assert out[2] == str([{"line": 1001, "offset": offset, "text": "THE-NEEDLE-7f3a here"}])
    assert out[3] == str([{"line": n, "offset": text.index("line %d alpha" % n), "text": "line %d alpha" % n}
                          for n in (990, 991, 992)])
    assert out[4] == "1000 10"
    assert out[5] == "'line 1 alpha\\n' 'newline' 'alpha'"
    assert out[6] == "1002 line 1 alpha last line no newline"
    assert out[7] == "THE-NEEDLE-7f3a here"
    assert out[8] == "True"


def test_ctx_handles_are_read_only_and_empty_files_work(agent: Agent, files: Any) -> None:
    empty = files(b"")
    agent.hello(contexts=[ctx_spec(0, empty)])
    cell = agent.exec("print(repr(context), ctx.size, ctx.search('x'), ctx.search_lines('x'), "
                      "list(ctx.iter_lines()), repr(ctx.head()), repr(ctx.tail()))\n"
                      "try:\n    ctx.size = 3\nexcept AttributeError as e:\n    print(e)")
    assert cell.out == "'' 0 [] [] [] '' ''\ncontext handles are read-only\n", cell.err


def test_a_context_above_max_load_bytes_is_not_loaded(agent: Agent, files: Any) -> None:
    big = files(b"0123456789" * 100 + b"MARK" + b"\n" * 10)
    small = files(b"small")
    agent.hello(contexts=[ctx_spec(0, big), ctx_spec(1, small)], max_load_bytes=100)
    cell = agent.exec("print(type(context).__name__, 'ctx' in context, '1014 bytes' in context)\n"
                      "print(context_1)\n"
                      "print(ctx.search('MARK'), ctxs[1].read(0, 5))")
    assert cell.out == "str True True\nsmall\n[{'offset': 1000, 'match': 'MARK'}] small\n", cell.err
    too_big = files(b"y" * 200)
    reply = agent.request("add_context", context=ctx_spec(2, too_big))
    assert (reply["ok"], reply["name"], reply["loaded"]) == (True, "context_2", False)
    assert agent.exec("print('ctxs[2]' in context_2, ctxs[2].head(3))").out == "True yyy\n"


def rss_anon_kb(pid: int) -> int:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise AssertionError("no RssAnon")


def test_a_gigabyte_context_is_searched_without_loading_it(agent: Agent, files: Any) -> None:
    size = 1 << 30
    path = files(b"")
    with open(path, "r+b") as f:
        f.truncate(size)
        f.seek(size // 2)
        f.write(b"\nTHE-NEEDLE-7f3a\n")
        f.seek(size - 5)
        f.write(b"\nend\n")
    agent.hello(contexts=[ctx_spec(0, path)], max_load_bytes=64 << 20)
    cell = agent.exec("hits = ctx.search('THE-NEEDLE-[0-9a-f]+')\nprint(hits)\n"
                      "print(ctx.search_lines('^end$'))\nprint(repr(ctx.tail(4)), ctx.size)", timeout=120)
    assert cell.status == "ok", cell.err
    lines = cell.out.splitlines()
    assert lines[0] == str([{"offset": size // 2 + 1, "match": "THE-NEEDLE-7f3a"}])
    assert lines[1] == str([{"line": 4, "offset": size - 4, "text": "end"}])
    assert lines[2] == "'end\\n' %d" % size
    assert rss_anon_kb(agent.proc.pid) < 200_000
