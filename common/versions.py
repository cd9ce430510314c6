"""Version bounds for the modules that use another library's private API (transports/compat, pipeline/compat)."""
from __future__ import annotations


def version_tuple(text: str) -> tuple[int, ...]:
    """'1.16.0' → (1, 16, 0); stops at the first part without digits ('0.42.1.dev0' → (0, 42, 1))."""
    out = []
    for part in text.split("."):
        digits = part[:len(part) - len(part.lstrip("0123456789"))]  # leading digits: '1rc1' → '1', 'dev0' → ''
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def check_version(name: str, version: str, lowest: str, below: str) -> None:
    """RuntimeError unless lowest <= version < below."""
    if not version_tuple(lowest) <= version_tuple(version) < version_tuple(below):
        raise RuntimeError(f"{name} {version} is not supported: this code uses its private API, checked for "
                           f">={lowest},<{below}")
