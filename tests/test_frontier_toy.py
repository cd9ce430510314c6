"""benchmarks/frontier.py's toy half on CPU (the random tiny model: the numbers are meaningless, the plumbing is
not): one configuration scored through quality.py with random prompts and random changes, and the table it makes."""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import frontier  # noqa: E402


def test_the_toy_frontier_scores_a_configuration_and_tabulates_it(tmp_path):
    out = tmp_path / "toy.json"
    frontier.main(["toy", "--model", "tiny", "--configs", "full 2/2,causal+tiny 3/18", "--blocks", "6",
                   "--scenes", "1", "--scene-blocks", "5", "--changes", "1", "--out", str(out),
                   "--log-dir", str(tmp_path)])
    res = json.loads(out.read_text())
    row = res["configs"]["full 2/2"]
    assert row["options"][:4] == ["--block-frames", "2", "--context-frames", "2"]
    assert 0.0 <= row["random_prompts"] <= 1.0 and row["seam_ratio"] > 0 and row["seam_ratio_latent"] > 0
    assert "soft_clean_median" in row and 0.0 <= row["soft_clean_within_1"] <= 1.0
    assert "not_scored" in res["configs"]["causal+tiny 3/18"]
    q = json.loads((tmp_path / "toy_full_2-2.json").read_text())
    assert q["latency_random"]["soft"]["n"] == q["latency_random"]["cut"]["n"] == 1
    lines = frontier.table({}, res).splitlines()
    assert lines[0].startswith("| configuration |") and "soft clean after" in lines[0]
    assert lines[2].startswith("| full 2/2 |") and f"{row['random_prompts']:.3f}" in lines[2]
