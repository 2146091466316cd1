"""The user's own data and own deployed model, end to end, through the CLIs as the README writes them.

- A study whose ``[data]`` names ``imagefolder`` (or ``cifar10``) but no root runs with ``--data TREE``.
- Official-layout train-form weights (1000 classes) -> ``convert`` -> ``prune --target-speedup`` on a
  tiny ImageFolder with a new head -> one fine-tuning epoch -> ONNX that matches torch in onnxruntime.
- Pruning without data prunes, and says what it skipped.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import optuna
import pytest
import torch

from repvgg_nas import RepVGGSpec, build_model, zoo
from repvgg_nas.checkpoint import load_model, save_checkpoint
from repvgg_nas.cli import run_cli
from repvgg_nas.convert.__main__ import main as convert_main
from repvgg_nas.export import onnx_max_error
from repvgg_nas.layout import StudyPaths
from repvgg_nas.prune.__main__ import _parser as prune_parser
from repvgg_nas.prune import speedup
from repvgg_nas.prune.__main__ import main as prune_main
from repvgg_nas.report import summary_frame
from repvgg_nas.report.frames import report_trials_frame
from repvgg_nas.search.__main__ import main as search_main

from .helpers import fake_cifar10, png_tree, randomize_bn, write_tiny_study
from .test_prune import _fake_measure as fake_measure
from .test_weights import foreign_state_dict

README = Path(__file__).resolve().parents[1] / "README.md"
COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


def _tree(root: Path, per_class: int = 10) -> Path:
    png_tree(root, COLOURS, per_class)
    return root


def _study_without_root(tmp_path: Path, name: str) -> Path:
    """The tiny study with ``[data] name = NAME`` and no root; training at 16 px, measured at 24 px."""
    path = write_tiny_study(tmp_path / "studies", n=1, name=f"own_{name}")
    text = path.read_text().replace('name = "synthetic"', f'name = "{name}"\nhflip = false')
    path.write_text(text.replace("batch_size = 2\nresolution = 16", "batch_size = 2\nresolution = 24"))
    return path


@pytest.mark.parametrize("dataset", ["imagefolder", "cifar10"])
def test_search_a_study_without_root_on_data_given_by_flag(tmp_path, capsys, dataset):
    root = tmp_path / "data"
    if dataset == "imagefolder":
        _tree(root)
    else:
        fake_cifar10(root)
    study = _study_without_root(tmp_path, dataset)
    reports = tmp_path / "reports"
    argv = ["--study", str(study), "--data", str(root), "--reports-dir", str(reports), "--no-progress"]
    assert run_cli(search_main, argv) == 0, capsys.readouterr().err
    paths = StudyPaths.of(study.stem, reports)
    assert paths.trials_csv.is_file()
    loaded = optuna.load_study(study_name=study.stem, storage=paths.default_storage)
    stored = loaded.user_attrs["data"]
    assert stored["name"] == dataset and stored["root"] == str(root) and stored["hflip"] is False
    (trial,) = loaded.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert 0.0 <= trial.values[0] <= 1.0 and trial.values[1] > 0
    summary = summary_frame(loaded, report_trials_frame(loaded)).set_index("field")["value"]
    assert summary["training resolution"].startswith("16x16")
    assert summary["deployment resolution"].startswith("24x24")


def test_search_dataset_flag_turns_a_builtin_study_to_local_data(tmp_path, capsys):
    root = _tree(tmp_path / "imgs")
    argv = ["--study", "quick", "--dataset", "imagefolder", "--data", str(root), "--data-resolution", "48",
            "--no-hflip", "--measure-resolution", "96", "--seed", "3", "--dry-run", "--reports-dir", str(tmp_path / "r")]
    assert run_cli(search_main, argv) == 0
    out = capsys.readouterr().out
    data = eval(re.search(r"data: (\{.*\})", out).group(1))  # the dry run prints the validated dicts
    assert data["name"] == "imagefolder" and data["root"] == str(root) and data["resolution"] == 48
    assert data["hflip"] is False
    assert "'resolution': 96" in re.search(r"measure: (\{.*\})", out).group(1) and "seed 3" in out
    assert not (tmp_path / "r").exists()


# ---- your own deployed model ----------------------------------------------------------------------------
TRANSFER_SPEC = RepVGGSpec.from_paper((1, 1, 2, 2, 1), 0.5, 0.5, num_classes=1000)


def _official_weights(path: Path, spec: RepVGGSpec = TRANSFER_SPEC) -> Path:
    torch.manual_seed(0)
    torch.save(foreign_state_dict(randomize_bn(build_model(spec)), "official"), path)
    return path


def test_official_weights_convert_prune_finetune_onnx(tmp_path, capsys):
    weights = _official_weights(tmp_path / "RepVGG-tiny-train.pth")
    tree = _tree(tmp_path / "my_images")
    deploy = tmp_path / "tiny_deploy.pt"
    assert run_cli(convert_main, [str(weights), str(deploy), "--resolution", "64"]) == 0
    assert load_model(deploy)[1].spec.num_classes == 1000
    capsys.readouterr()

    mine, onnx = tmp_path / "tiny_mine.pt", tmp_path / "tiny_mine.onnx"
    argv = [str(deploy), "--target-speedup", "1.5", "--dataset", "imagefolder", "--data", str(tree),
            "--data-resolution", "16", "--new-head", "--finetune-epochs", "1", "--measure-resolution", "96",
            "--batch-size", "8", "--max-seconds", "1", "--device", "cpu", "--out", str(mine), "--onnx", str(onnx),
            "--no-progress"]
    assert run_cli(prune_main, argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "fine-tuned" in printed and "max |onnxruntime - torch|" in printed
    model, ckpt = load_model(mine)
    assert ckpt.deploy and ckpt.spec.num_classes == len(COLOURS)  # the new head
    assert sum(ckpt.spec.widths) < sum(TRANSFER_SPEC.widths)
    meta = ckpt.meta
    assert meta["new_head"] is True and meta["prune"]["target_speedup"] == 1.5 and meta["layout"] == "official"
    assert meta["data"]["name"] == "imagefolder" and meta["data"]["resolution"] == 16
    assert meta["measure_resolution"] == 96 and 0.0 <= meta["accuracy"] <= 1.0
    assert meta["speedup"] >= 1.5 or "cannot be met" in printed  # measured in lockstep
    x = torch.randn(3, 3, 96, 96)
    assert onnx_max_error(onnx, model, x) < 1e-4


def test_prune_without_data_says_what_it_skipped(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(speedup, "measure_specs", fake_measure)  # speed is not what is tested here
    deploy = tmp_path / "deploy.pt"
    assert run_cli(convert_main, [str(_official_weights(tmp_path / "w.pth")), str(deploy), "--resolution", "32"]) == 0
    capsys.readouterr()
    out = tmp_path / "small.pt"
    argv = [str(deploy), "--ratio", "0.5", "--measure-resolution", "32", "--batch-size", "2", "--max-seconds", "0.1",
            "--device", "cpu", "--out", str(out), "--no-progress"]
    assert run_cli(prune_main, argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "no data: skipped recalibration, fine-tuning, accuracy" in printed and "fine-tuned" not in printed
    _, ckpt = load_model(out)
    assert ckpt.spec.num_classes == 1000 and ckpt.meta["data"] is None and ckpt.meta["accuracy"] is None
    assert 0.4 <= 1 - sum(ckpt.spec.widths) / sum(TRANSFER_SPEC.widths) <= 0.6


def test_pruning_keeps_the_data_a_search_checkpoint_recorded(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(speedup, "measure_specs", fake_measure)
    spec = RepVGGSpec.from_paper((1, 1, 1, 1, 1), 0.25, 0.25, num_classes=3)
    tree = _tree(tmp_path / "imgs")
    src = save_checkpoint(tmp_path / "m.pt", randomize_bn(build_model(spec)),
                          meta={"data": {"name": "imagefolder", "root": str(tree), "resolution": 16}})
    argv = [str(src), "--ratio", "0.25", "--finetune-epochs", "1", "--measure-resolution", "32", "--batch-size", "2",
            "--max-seconds", "0.1", "--device", "cpu", "--data-resolution", "24", "--no-hflip", "--no-progress"]
    assert run_cli(prune_main, argv) == 0, capsys.readouterr().err
    _, ckpt = load_model(tmp_path / "m_pruned.pt")
    assert ckpt.meta["data"]["root"] == str(tree) and ckpt.meta["data"]["resolution"] == 24
    assert ckpt.meta["data"]["hflip"] is False and ckpt.meta["new_head"] is False


# ---- the README's own-data examples -----------------------------------------------------------------------
def _readme_section() -> str:
    text = README.read_text()
    start = text.index("## Your own data")
    return text[start:text.index("\n## ", start + 1)]


def _commands(section: str) -> list[list[str]]:
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [shlex.split(line) for b in blocks for line in b.splitlines() if line.startswith("python -m repvgg_nas.")]


def test_readme_own_data_examples_run_as_written(tmp_path, monkeypatch, capsys):
    """The README's study file and search command validate on a tree (dry run); convert runs verbatim
    on official A0 weights; the prune command parses (it runs for real, tiny, in the test above)."""
    section = _readme_section()
    (toml,) = re.findall(r"```toml\n(.*?)```", section, re.S)
    commands = _commands(section)
    tools = [c[2] for c in commands]
    assert tools == ["repvgg_nas.search", "repvgg_nas.search", "repvgg_nas.convert", "repvgg_nas.prune"], tools
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_study.toml").write_text(toml)
    _tree(tmp_path / "my_images")
    for argv in commands[:2]:
        assert run_cli(search_main, [*argv[3:], "--dry-run"]) == 0, capsys.readouterr().err
        shown = capsys.readouterr().out
        assert "'name': 'imagefolder', 'root': 'my_images', 'resolution': 64" in shown
        assert "'resolution': 224" in shown.split("measure:")[1]
    convert, prune = commands[2], commands[3]
    _official_weights(tmp_path / convert[3], zoo.get("A0"))
    assert run_cli(convert_main, convert[3:]) == 0, capsys.readouterr().err
    assert load_model(tmp_path / convert[4])[1].spec == zoo.get("A0")
    args = prune_parser().parse_args(prune[3:])
    assert args.checkpoint == convert[4] and args.target_speedup == 1.5 and args.new_head
    assert (args.dataset, args.data, args.data_resolution) == ("imagefolder", "my_images", 64)
    assert args.onnx is not None and args.out is not None


def test_overrides_apply_to_the_raw_study_before_validation(tmp_path):
    from repvgg_nas.config import Override
    from repvgg_nas.errors import ConfigError
    from repvgg_nas.search import load_study_config

    study, tree = _study_without_root(tmp_path, "imagefolder"), _tree(tmp_path / "imgs")
    with pytest.raises(ConfigError, match="data.root: is required for the 'imagefolder' dataset"):
        load_study_config(study)
    cfg = load_study_config(study, overrides={"data.root": str(tree), "seed": 7, "measure.resolution": 40})
    assert (cfg.data.root, cfg.seed, cfg.measure.resolution, cfg.data.resolution) == (str(tree), 7, 40, 16)
    with pytest.raises(ConfigError, match=r"^--data '/no/such': .*data.root: '/no/such' for dataset 'imagefolder' does not exist"):
        load_study_config(study, [Override("data.root", "/no/such", "--data")])
    with pytest.raises(ConfigError, match=r"^override seed -2: .*seed: -2 is out of range"):
        load_study_config(study, overrides={"data.root": str(tree), "seed": -2})
