"""The package's import seams: pure compute imports no torch/ray/fsspec; models import no ray."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "ray", "fsspec", "pyarrow", "transformers", "torchvision")


def imported_after(module: str) -> set[str]:
    """Top-level packages a fresh interpreter has loaded after importing ``module``."""
    code = f"import sys, {module}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(output.split())


@pytest.mark.parametrize(
    "module", ["segcore.categories", "segcore.panoptic", "segcore.fusion", "segcore.metrics.pq", "segcore.png"]
)
def test_pure_compute_imports_no_framework_and_no_io(module):
    assert imported_after(module).isdisjoint(HEAVY)


@pytest.mark.parametrize("module", ["segcore.models.registry", "segcore.models.hf", "segcore.models.torchvision_backend"])
def test_models_never_import_ray(module):
    assert "ray" not in imported_after(module)


def test_checking_a_spec_loads_no_model_library():
    code = "from segcore.models.registry import check_spec; check_spec('torchvision:maskrcnn_resnet50_fpn+fcn_resnet50')"
    output = subprocess.run(
        [sys.executable, "-c", code + "; import sys; print('transformers' in sys.modules, 'torchvision' in sys.modules)"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert output.split() == ["False", "False"]
