"""Error-message text: plain, without terminal colour codes."""

import re

_TERMINAL_CODES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def plain(text: str) -> str:
    """`text` without terminal colour codes (Keras wraps the errors of its layers in bold, ``\\x1b[1m``)."""
    return _TERMINAL_CODES.sub("", text)


def operator_location(subgraph: int, position: int, opcode: str) -> str:
    """How messages name an operator: ``operator 3 (ADD)`` in the main subgraph,
    ``subgraph 2 operator 3 (ADD)`` elsewhere."""
    where = f"operator {position} ({opcode})"
    return where if subgraph == 0 else f"subgraph {subgraph} {where}"


def located(where: str, error: Exception) -> Exception:
    """A new error of `error`'s kind (NotImplementedError, TypeError or ValueError) whose message
    starts with `where`; raise it ``from error`` so that the traceback keeps the cause.

    Only the built-in kind is rebuilt: subclasses (JAX's ``ConcretizationTypeError``, ...) take
    other constructor arguments."""
    kind = next(k for k in (NotImplementedError, TypeError, ValueError, Exception) if isinstance(error, k))
    return kind(f"{where}: {error}")
