"""`edgeconv train`: a checkpoint (state_dict + spec + metrics) that `--weights` loads."""
import json

import torch
from click.testing import CliRunner

from edgeconv.cli import main
from edgeconv.zoo import create_model, load_weights


def test_train_cli_writes_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "tiny.pt"
    r = CliRunner().invoke(main, ["train", "tiny", "--epochs", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "held-out digits" in r.output
    saved = torch.load(out, weights_only=False)
    assert set(saved) == {"state_dict", "spec", "metrics"} and saved["spec"]["name"] == "tiny"
    metrics = json.loads(out.with_suffix(".json").read_text())
    assert metrics["eval_count"] == 500 and metrics["train_count"] == 1297 and 0 <= metrics["fp32_top1"] <= 1
    load_weights(create_model("tiny"), out)


def test_train_rejects_other_data(tmp_path):
    r = CliRunner().invoke(main, ["train", "tiny", "--data", str(tmp_path), "--epochs", "1"])
    assert r.exit_code == 2 and "digits" in r.output
