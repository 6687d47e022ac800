"""Per-cell cost of an rlms iteration's `execute_code`, measured in one
run: the library's local environment (in-process, no isolation: the
floor), RlmSandboxREPL on runc and on runsc, and the library's Docker
environment when an image is given (`--docker-image`; scripts/bench_docker
prepares one). Two cells: `print(1)`, and one `llm_query` answered by
the library's LM handler (a client that answers at once, so the figure
is the environment's cost, not a model's). Environments take turns cell
by cell, so the machine's drift hits all alike. Prints p50/p90 per
environment and, per cell, the sandbox's difference to the local floor
and the Docker environment's ratio to the sandbox's.

Usage: target/py/bin/python scripts/bench_rlms.py [CELLS] [--docker-image IMAGE]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable, Dict, List

from rlm.clients.base_lm import BaseLM
from rlm.core.lm_handler import LMHandler
from rlm.core.types import ModelUsageSummary, UsageSummary
from rlm.environments.local_repl import LocalREPL

from rlm_sandbox.rlms import RlmSandboxREPL

CELLS = {"print(1)": "print(1)", "llm_query": "x = llm_query('hi')"}


class InstantLM(BaseLM):
    """A model that answers "ok" at once: the benchmark's stand-in."""

    def __init__(self) -> None:
        super().__init__(model_name="instant")

    def completion(self, prompt: Any) -> str:
        return "ok"

    async def acompletion(self, prompt: Any) -> str:
        return "ok"

    def get_usage_summary(self) -> UsageSummary:
        return UsageSummary(model_usage_summaries={"instant": self.get_last_usage()})

    def get_last_usage(self) -> ModelUsageSummary:
        return ModelUsageSummary(total_calls=1, total_input_tokens=1, total_output_tokens=1)


def pct(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cells", nargs="?", type=int, default=300)
    parser.add_argument("--docker-image", help="an image with python and requests, for the Docker environment")
    args = parser.parse_args()

    handler = LMHandler(InstantLM())
    handler.start()
    address = (handler.host, handler.port)
    makers: Dict[str, Callable[[], Any]] = {
        "local": lambda: LocalREPL(lm_handler_address=address, context_payload="ctx"),
        "rlm-sandbox runc": lambda: RlmSandboxREPL(lm_handler_address=address, context_payload="ctx", runtime="runc"),
        "rlm-sandbox runsc": lambda: RlmSandboxREPL(lm_handler_address=address, context_payload="ctx", runtime="runsc"),
    }
    if args.docker_image:
        from rlm.environments.docker_repl import DockerREPL

        makers["docker"] = lambda: DockerREPL(lm_handler_address=address, context_payload="ctx", image=args.docker_image)
    envs = {name: make() for name, make in makers.items()}
    try:
        times: Dict[str, Dict[str, List[float]]] = {n: {c: [] for c in CELLS} for n in envs}
        skip = set()
        for name, env in envs.items():  # warm-up, and a check that each env really works
            for _ in range(5):
                for code in CELLS.values():
                    env.execute_code(code)
            result = env.execute_code("print(1)")
            assert (result.stdout, result.stderr) == ("1\n", ""), f"{name}: {result}"
            result = env.execute_code("print(llm_query('hi'))")
            if result.stdout != "ok\n":
                print(f"{name}: llm_query does not reach the LM handler ({result.stdout.strip()!r}"
                      f"{result.stderr.strip()!r}); its llm_query cell is left out")
                skip.add((name, "llm_query"))
        for i in range(args.cells):
            for cell, code in CELLS.items():
                for name, env in envs.items():
                    if (name, cell) in skip or (name == "docker" and i >= max(20, args.cells // 20)):
                        continue  # docker: ~0.2 s a cell, a few dozen give a stable median
                    t = time.perf_counter()
                    env.execute_code(code)
                    times[name][cell].append((time.perf_counter() - t) * 1000)
    finally:
        for env in envs.values():
            env.cleanup()
        handler.stop()

    for cell in CELLS:
        print(f"cell {cell!r} (ms per execute_code)")
        p50 = {n: statistics.median(times[n][cell]) for n in envs if times[n][cell]}
        for name in p50:
            values = times[name][cell]
            print(f"  {name:18} p50 {p50[name]:8.3f}   p90 {pct(values, 0.9):8.3f}   (n={len(values)})")
        for name in ("rlm-sandbox runc", "rlm-sandbox runsc"):
            line = f"  {name}: +{p50[name] - p50['local']:.3f} ms over local (target <= 2 ms)"
            if "docker" in p50:
                line += f"; docker is {p50['docker'] / p50[name]:.0f}x slower (target >= 50x)"
            print(line)


if __name__ == "__main__":
    main()
