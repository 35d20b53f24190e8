"""`edgeconv train`: a checkpoint (state_dict + source + metrics) that `--weights` loads."""
import json

import torch
from click.testing import CliRunner

from edgeconv.cli import main
from edgeconv.zoo import create_model, load_weights


def test_train_cli_writes_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "tiny.pt"
    r = CliRunner().invoke(main, ["train", "tiny", "--epochs", "3", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "held-out digits" in r.output
    saved = torch.load(out, weights_only=True)  # plain data: loads without running code
    assert set(saved) == {"state_dict", "source", "metrics"} and saved["source"]["spec"]["name"] == "tiny"
    metrics = json.loads(out.with_suffix(".json").read_text())
    assert metrics["eval_count"] == 500 and metrics["train_count"] == 1297
    assert metrics["fp32_top1"] > 0.85  # 94.6% measured after 3 epochs; chance is 10%
    net = load_weights(create_model("tiny"), out)
    assert torch.equal(net.state_dict()["classifier.weight"], saved["state_dict"]["classifier.weight"])


def test_train_rejects_other_data(tmp_path):
    r = CliRunner().invoke(main, ["train", "tiny", "--data", str(tmp_path), "--epochs", "1"])
    assert r.exit_code == 2 and "digits" in r.output
