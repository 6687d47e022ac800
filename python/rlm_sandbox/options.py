"""Keyword settings as rlm-sandbox command-line flags.

Settings are spelled as the flags with `_` for `-` (`max_output_bytes=`
is `--max-output-bytes`), so the binary's `--help` and the README's
RLM_* table document them; an unknown keyword is refused here with the
accepted names rather than by the binary after a process start."""

from __future__ import annotations

import os
from typing import Any, Dict, FrozenSet, List, Mapping

# Settings `run` and `session` share (the sandbox and the egress filter).
COMMON: FrozenSet[str] = frozenset(
    {
        "config", "preset", "mode", "runtime", "allow_unsafe_runtime", "network", "memory", "cpus",
        "pids", "timeout", "max_stdout_bytes", "max_output_bytes", "tmp_size", "rootfs",
        "seccomp_profile", "state_dir", "runsc_path", "runc_path", "runsc_flags", "policy",
        "redact_env", "redact_file", "entropy_threshold", "hex_entropy_threshold", "allow_hashes",
        "no_entropy", "similarity_threshold", "echo_max_bytes", "echo_action",
    }
)
# Settings only a session has (sub-calls, contexts, interrupts).
SESSION_ONLY: FrozenSet[str] = frozenset(
    {
        "llm_command", "llm_endpoint", "llm_model", "llm_api_key_env", "max_llm_calls",
        "llm_max_in_flight", "llm_max_prompt_bytes", "llm_timeout", "context_load_bytes",
        "interrupt_grace",
    }
)
SESSION: FrozenSet[str] = COMMON | SESSION_ONLY
# Flags that take no value: True adds them, False leaves them out.
_SWITCHES: FrozenSet[str] = frozenset({"allow_unsafe_runtime", "network", "no_entropy"})


def to_flags(settings: Mapping[str, Any], accepted: FrozenSet[str], what: str) -> List[str]:
    """`--flag value` arguments for `settings`; None values are left out
    (the binary's default, or its RLM_* variable, applies)."""
    unknown = sorted(set(settings) - accepted)
    if unknown:
        raise TypeError(
            f"{what} got unknown setting(s) {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(sorted(accepted))}"
        )
    argv: List[str] = []
    for name in sorted(settings):
        value = settings[name]
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if name in _SWITCHES:
            if not isinstance(value, bool):
                raise TypeError(f"{what}: {name} must be True or False, not {value!r}")
            if value:
                argv.append(flag)
        elif isinstance(value, (list, tuple)):
            for item in value:
                argv += [flag, _text(name, item, what)]
        else:
            argv += [flag, _text(name, value, what)]
    return argv


def _text(name: str, value: Any, what: str) -> str:
    """One flag value as the binary reads it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float, os.PathLike)):
        return os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    raise TypeError(f"{what}: {name}={value!r} must be a str, a number or a path")


def environment(extra: Mapping[str, str]) -> Dict[str, str]:
    """The binary's environment: ours, plus `extra`. Without our
    RLM_SANDBOX_SERVER: the client has decided already (a process is
    started only for a local sandbox, e.g. `server=False`), and the binary
    would otherwise send its session to that server."""
    env = {k: v for k, v in os.environ.items() if k != "RLM_SANDBOX_SERVER"}
    env.update(extra)
    return env
