"""Check a node's widget values against its own schema when it runs.

ComfyUI lets NaN through min/max, skips range checks for values wired from another node (a
Primitive), and 0.3.75 does not check V3 combo values; so every VCD node re-checks its numbers
and choices here, and a bad value stops the run naming the input instead of giving a wrong result.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

from comfy_api.latest import io


def check_value(node: str, spec: io.Input, value: Any) -> None:
    """Raise ValueError naming ``node``'s input when ``value`` is not what its widget allows."""
    if value is None:
        return  # an optional input left unwired
    name = spec.id
    if isinstance(spec, io.Combo.Input):
        if value not in spec.options:
            shown = ", ".join(map(str, spec.options[:12])) + (" ..." if len(spec.options) > 12 else "") or "none yet"
            tip = spec.tooltip or ""  # a model list's tooltip starts with its folder: say where the file goes
            where = f" {name} is read from {tip.rstrip('.')}: put the file there and reload the page." \
                if tip.startswith("models/") else ""
            raise ValueError(f"{node}: {name} {value!r} is not one of the choices ({shown}). Pick one from the "
                             f"list.{where}")
        return
    if not isinstance(spec, (io.Int.Input, io.Float.Input)):
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{node}: {name} must be a number (got {value!r}).")
    if isinstance(spec, io.Int.Input) and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{node}: {name} must be a whole number (got {value}).")
    if not math.isfinite(value):
        raise ValueError(f"{node}: {name} must be a finite number (got {value}). Type a number in the widget.")
    low, high = spec.min, spec.max
    if low is not None and value < low:
        raise ValueError(f"{node}: {name} must be at least {low} (got {value}).")
    if high is not None and value > high:
        raise ValueError(f"{node}: {name} must be at most {high} (got {value}).")


def checked(execute: Callable[..., io.NodeOutput]) -> Callable[..., io.NodeOutput]:
    """Wrap a V3 node's ``execute`` so that its INT, FLOAT and COMBO inputs are checked first."""

    @functools.wraps(execute)
    def run(cls, *args: Any, **kwargs: Any) -> io.NodeOutput:
        schema = cls.define_schema()
        label = schema.display_name or schema.node_id
        for spec in schema.inputs:
            if spec.id in kwargs:
                check_value(label, spec, kwargs[spec.id])
        return execute(cls, *args, **kwargs)

    return run


def single(node: str, name: str, value: Any) -> Any:
    """The one value of an input that a list-input node (``is_input_list``) receives as a list of one."""
    if isinstance(value, list):
        if len(value) != 1:
            raise ValueError(f"{node}: {name} got a list of {len(value)} values; wire a single one (only the list "
                             "inputs named in the node's description take a list).")
        return value[0]
    return value
