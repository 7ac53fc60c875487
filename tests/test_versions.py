"""The tested versions: constraints.txt pins every package the project installs, and the
environment the suite runs in holds exactly those versions (CI's `make test`)."""

import importlib.metadata
import os

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pins() -> dict[str, tuple[str, Marker | None]]:
    pins = {}
    with open(os.path.join(ROOT, "constraints.txt")) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            req = Requirement(line)
            (spec,) = req.specifier  # exactly one ==
            assert spec.operator == "==", line
            pins[canonicalize_name(req.name)] = (spec.version, req.marker)
    return pins


def _declared() -> list[Requirement]:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra]
    return reqs


def test_every_dependency_is_pinned():
    pins = _pins()
    missing = [r.name for r in _declared() if canonicalize_name(r.name) not in pins]
    assert not missing, f"add to constraints.txt: {missing}"
    # jax[cuda12]'s plugin and runtime follow jax's version
    assert pins["jax-cuda12-plugin"][0] == pins["jax-cuda12-pjrt"][0] == pins["jax"][0]
    assert pins["jaxlib"][0] == pins["jax"][0]


def test_pins_satisfy_the_declared_ranges():
    pins = _pins()
    for req in _declared():
        version = pins[canonicalize_name(req.name)][0]
        assert req.specifier.contains(version, prereleases=True), (req, version)


@pytest.mark.skipif(
    not os.environ.get("COLEAF_CONSTRAINTS"),
    reason="installed without constraints.txt (make install CONSTRAINTS=)",
)
def test_installed_versions_are_the_pinned_ones():
    wrong = []
    for name, (version, marker) in _pins().items():
        if marker is not None and not marker.evaluate():
            continue
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # e.g. the CUDA plugin on a CPU machine
        if Version(installed) != Version(version):
            wrong.append(f"{name} {installed} (constraints.txt: {version})")
    assert not wrong, wrong
