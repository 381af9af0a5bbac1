"""The lean supervisor process: `python -S .../supervisor/runner.py PLAN_FD`.

`start-all` validates the configuration (pydantic, honcho, ...) and then replaces itself with
this script, keeping its pid (1 in a container). PID 1 pays for its memory for the container's
whole life, so this process imports only what the loop needs from the standard library:
it runs without `site` (-S), receives the plan as a `marshal`led dict in an inherited memory
file (marshal is built in; json and dataclasses would cost ~4 MB), and reads it through plain
namespaces with the same fields as `supervisor.plan.Plan`.
"""

import marshal
import os
import sys
from types import SimpleNamespace

# Run as a script: make the package importable, and never let supervisor/*.py shadow stdlib.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def plan_from(data: dict) -> SimpleNamespace:
    def spec(fields: dict | None) -> SimpleNamespace | None:
        if fields is None:
            return None
        escalations = tuple(SimpleNamespace(**e) for e in fields["escalations"])
        return SimpleNamespace(**{**fields, "escalations": escalations})

    return SimpleNamespace(
        **{
            **data,
            "processes": tuple(spec(p) for p in data["processes"]),
            "release": spec(data["release"]),
            "restart": SimpleNamespace(**data["restart"]),
            "logs": SimpleNamespace(**data["logs"]),
        }
    )


def read_plan(fd: int) -> SimpleNamespace:
    with os.fdopen(fd, "rb") as source:
        source.seek(0)
        return plan_from(marshal.loads(source.read()))


def main(argv: list) -> int:
    from supervisor.runtime import Runtime

    return Runtime(read_plan(int(argv[0]))).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
