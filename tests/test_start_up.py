"""What a run imports: a scratch run with W&B off loads no model zoo and no wandb."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

HEAVY = ("timm", "torchvision", "wandb")


@pytest.mark.slow
def test_a_scratch_run_without_wandb_imports_no_model_zoo(toy_lesions, tmp_path):
    code = (
        "import json, sys\n"
        "from wbclf.cli import main\n"
        f"code = main(['train', '--dataset={toy_lesions}', '--epochs=1', '--image_size=32', "
        f"'--width=8', '--limit_per_class=10', '--num_workers=0', '--wandb_mode=disabled', "
        f"'--out_dir={tmp_path}', '--run_name=lean'])\n"
        f"print(json.dumps({{'code': code, 'loaded': [m for m in {HEAVY!r} "
        "if m in sys.modules]}))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "loaded": []}
    assert (tmp_path / "lean" / "summary.json").is_file()


def test_scratch_data_config_is_what_timm_resolves():
    """The scratch CNN's preprocessing, read without timm, is exactly timm's resolution."""
    from timm.data import resolve_model_data_config

    from wbclf.config import build_config
    from wbclf.models import create_model, model_data_config

    model = create_model("scratch", 3, build_config({"image_size": 48}))
    timm_cfg = resolve_model_data_config(model)
    ours = model_data_config(model)
    assert ours["input_size"] == tuple(timm_cfg["input_size"]) == (3, 48, 48)
    for key in ("mean", "std"):
        assert ours[key] == tuple(float(v) for v in timm_cfg[key])
    for key in ("interpolation", "crop_pct", "crop_mode"):
        assert ours[key] == timm_cfg[key]
