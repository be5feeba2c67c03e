"""The package as users meet it: imports, metadata, README and CI in step."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import contrast_attn

ROOT = Path(__file__).resolve().parents[1]


def test_import_does_not_pull_heavy_optional_dependencies() -> None:
    code = (
        "import sys, torch\n"
        "before = set(sys.modules)\n"
        "import contrast_attn, contrast_attn.functional\n"
        "heavy = [m for m in ('torchvision', 'matplotlib', 'sklearn', 'tqdm', 'lightly',"
        " 'pytorch_metric_learning') if m in sys.modules and m not in before]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import contrast_attn imported {out.stdout.strip()}"


def test_version_is_defined_once() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", contrast_attn.__version__)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject
    assert "contrast_attn._version.__version__" in pyproject


def test_typed_package_marker_exists() -> None:
    assert (ROOT / "contrast_attn" / "py.typed").is_file()


def test_public_names_resolve() -> None:
    for name in contrast_attn.__all__:
        assert hasattr(contrast_attn, name), name
    for name in contrast_attn.functional.__all__:
        assert callable(getattr(contrast_attn.functional, name)), name


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    assert len(blocks) >= 2, "README must open with the example command and the test command"
    test_command = next(b for b in blocks[:2] if "pytest" in b)
    # CI creates its own virtual environment; what follows the activation must match.
    after_venv = test_command.split("&&", 2)[2].strip()
    assert after_venv in (ROOT / ".ci" / "run").read_text()
