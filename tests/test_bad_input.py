"""Bad-input sweep: every way a user can get the input wrong, across the CLIs, in one place.

Each case must give exit code 2, one line on stderr starting with ``error:``,
no traceback, and no partial files: no reports folder for the search, no
output (or temp) file for convert and prune. Several cases are also checked
closer to their code elsewhere; this file is the contract of the whole.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from repvgg_nas import build_model
from repvgg_nas.checkpoint import save_checkpoint
from repvgg_nas.cli import run_cli
from repvgg_nas.convert.__main__ import main as convert_main
from repvgg_nas.prune.__main__ import main as prune_main
from repvgg_nas.search.__main__ import main as search_main

UNREACHABLE = "postgresql+psycopg://nobody:hunter2@127.0.0.1:1/x"
BASE = 'space = "quick"\nn_trials = 2\n'

# (case id, study file text, extra search arguments, expected message part)
SEARCH_CASES = [
    ("malformed-toml", "space = 'quick'\n[train\n", [], "malformed TOML"),
    ("unknown-key", BASE + "trials = 3\n", [], "trials: unknown key"),
    ("wrong-type", BASE + '[train]\nepochs = "three"\n', [], "train.epochs: must be an integer"),
    ("out-of-range", BASE.replace("n_trials = 2", "n_trials = 0"), [], "n_trials: 0 is out of range"),
    ("out-of-range-measure", BASE + "[measure]\nbatch_size = 0\n", [], "measure.batch_size: 0 is out of range"),
    ("missing-data-root", BASE + '[data]\nname = "cifar10"\nroot = "/no/such/dir"\n', [], "does not exist"),
    ("missing-data-flag", BASE + '[data]\nname = "cifar10"\nroot = "{tmp}"\n', ["--data", "/no/such/images"], "does not exist"),
    ("unreachable-storage", BASE, ["--storage", UNREACHABLE], "cannot open storage 'postgresql+psycopg://nobody:***@127.0.0.1:1/x'"),
    ("sqlite-no-dir", BASE, ["--storage", "sqlite:////no/such/dir/s.db"], "cannot open storage"),
    ("journal-unwritable", BASE, ["--storage", "journal:/proc/no/such/journal.log"], "cannot open storage"),
    ("not-a-url", BASE, ["--storage", "nonsense"], "is not a storage URL"),
    ("workers-on-sqlite", BASE, ["--workers", "3"], "--workers 3 needs a storage several processes can write at once"),
    ("workers-zero", BASE, ["--workers", "0"], "--workers must be >= 1"),
    ("grace-too-short", BASE, ["--heartbeat-interval", "5", "--grace-period", "5"], "must be longer than"),
]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def _check_one_line(code: int, err: str, message: str) -> None:
    err = err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err, err
    assert "Traceback" not in err and message in err, err


@pytest.mark.parametrize("case, text, extra, message", SEARCH_CASES, ids=[c[0] for c in SEARCH_CASES])
def test_search_bad_input(tmp_path, capsys, case, text, extra, message):
    study = tmp_path / "st.toml"
    study.write_text(text.replace("{tmp}", str(tmp_path)))
    before = _files(tmp_path)
    code = run_cli(search_main, ["--study", str(study), "--reports-dir", str(tmp_path / "r"), "--no-progress", *extra])
    _check_one_line(code, capsys.readouterr().err, message)
    assert "hunter2" not in capsys.readouterr().err
    assert _files(tmp_path) == before  # no reports folder, no storage file, nothing


@pytest.mark.parametrize("name", ["a/b", "../x", "..", "sub\\dir", ".hidden"])
def test_search_study_name_with_path_parts(tmp_path, capsys, name):
    code = run_cli(search_main, ["--study", name, "--reports-dir", str(tmp_path / "r")])
    _check_one_line(code, capsys.readouterr().err, "is invalid")
    assert not (tmp_path / "r").exists()


def test_study_file_named_dot_dot_cannot_escape_reports(tmp_path, capsys):
    study = tmp_path / "...toml"  # stem '..': reports/.. would be outside reports/
    study.write_text(BASE)
    code = run_cli(search_main, ["--study", str(study), "--reports-dir", str(tmp_path / "r")])
    _check_one_line(code, capsys.readouterr().err, "study name '..' is invalid")
    assert _files(tmp_path) == {study}


# ---- checkpoints: convert and prune -------------------------------------------------------------------
class Evil:
    """Unpickling this runs code; weights_only loading must refuse it before that."""

    def __reduce__(self):
        return (print, ("pwned",))


def _good(tmp: Path, spec) -> Path:
    return save_checkpoint(tmp / "good.pt", build_model(spec))


def _truncated(tmp: Path, spec) -> Path:
    src = _good(tmp, spec)
    (tmp / "cut.pt").write_bytes(src.read_bytes()[:1500])
    src.unlink()
    return tmp / "cut.pt"


def _misfit(tmp: Path, spec) -> Path:
    src = _good(tmp, spec)
    data = torch.load(src, weights_only=True)
    data["spec"]["widths"][1] = 24
    data["spec"]["groups"][1] = 1
    torch.save(data, tmp / "misfit.pt")
    src.unlink()
    return tmp / "misfit.pt"


def _evil(tmp: Path, spec) -> Path:
    torch.save({"format_version": 1, "spec": spec.to_dict(), "payload": Evil()}, tmp / "evil.pt")
    return tmp / "evil.pt"


def _raw_pickle(tmp: Path, spec) -> Path:
    (tmp / "raw.pkl").write_bytes(pickle.dumps({"x": Evil()}))
    return tmp / "raw.pkl"


CHECKPOINTS: list[tuple[str, Callable[[Path, object], Path], str]] = [
    ("truncated", _truncated, "truncated or corrupt"),
    ("weights-do-not-fit-spec", _misfit, "has shape"),
    ("pickled-objects", _evil, "refused to load"),
    ("plain-pickle", _raw_pickle, "error: "),
]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("tool", ["convert", "prune"])
@pytest.mark.parametrize("case, make, message", CHECKPOINTS, ids=[c[0] for c in CHECKPOINTS])
def test_bad_checkpoints(tmp_path, capsys, tiny_spec, tool, case, make, message):
    src = make(tmp_path, tiny_spec)
    out = tmp_path / "out.pt"
    before = _files(tmp_path)
    if tool == "convert":
        code = run_cli(convert_main, [str(src), str(out)])
    else:
        code = run_cli(prune_main, [str(src), "--ratio", "0.5", "--out", str(out), "--no-progress"])
    captured = capsys.readouterr()
    _check_one_line(code, captured.err, message)
    assert "pwned" not in captured.out  # the pickled code never ran
    assert _files(tmp_path) == before  # no output, no temp file


def test_prune_study_trial_with_bad_study_name(tmp_path, capsys):
    code = run_cli(prune_main, ["--study", "../x", "--trial", "0", "--ratio", "0.5", "--reports-dir", str(tmp_path)])
    _check_one_line(code, capsys.readouterr().err, "is invalid")
    assert _files(tmp_path) == set()


# ---- the same contract through a real interpreter (python -m) ---------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["repvgg_nas.search", "--study", "{study}", "--storage", UNREACHABLE, "--reports-dir", "{tmp}/r"], "cannot open storage"),
    (["repvgg_nas.prune", "{tmp}/evil.pt", "--ratio", "0.5", "--out", "{tmp}/o.pt"], "refused to load"),
    (["repvgg_nas.search", "--study", "{study}", "--reports-dir", "{study}"], "is a file, not a folder"),
    (["repvgg_nas.search", "--study", "{study}", "--n-trials", "0"], "--n-trials must be >= 1"),
])
def test_python_m_exit_2_one_line_no_traceback(tmp_path, tiny_spec, argv, message):
    study = tmp_path / "st.toml"
    study.write_text(BASE)
    _evil(tmp_path, tiny_spec)
    before = _files(tmp_path)
    args = [a.format(tmp=tmp_path, study=study) for a in argv]
    r = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=120)
    _check_one_line(r.returncode, r.stderr, message)
    assert "pwned" not in r.stdout and "hunter2" not in r.stderr
    assert _files(tmp_path) == before


# ---- own data: the data flags of prune and search, output folders, argparse errors -----------------------
COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


def _converted(tmp: Path) -> Path:
    """A deploy checkpoint as ``convert`` writes it from official weights: 1000 classes, no data recorded."""
    from repvgg_nas import RepVGGSpec, reparameterize

    spec = RepVGGSpec.from_paper((1, 1, 1, 1, 1), 0.25, 0.25, num_classes=1000)
    return save_checkpoint(tmp / "deploy.pt", reparameterize(build_model(spec).eval()), meta={"layout": "official"})


def _tree(tmp: Path, kind: str) -> Path:
    """A data folder that is wrong in one way (``kind``), or a good one ("good")."""
    from .helpers import png_tree

    root = tmp / "imgs"
    if kind == "missing":
        return root
    png_tree(root, {"red": COLOURS["red"]} if kind == "one-class" else COLOURS, 6)
    if kind == "corrupt":
        (root / "green" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return root


# (case id, tree kind, extra prune flags, expected message part)
PRUNE_DATA_CASES = [
    ("missing-path", "missing", ["--new-head"], "for dataset 'imagefolder' does not exist"),
    ("class-mismatch", "good", [], "predicts 1000 classes but its data"),
    ("one-class", "one-class", ["--new-head"], "a classifier needs at least 2"),
    ("corrupt-image", "corrupt", ["--new-head"], "broken.png"),
    ("unknown-dataset", "good", ["--dataset", "imagefolders"], "--dataset 'imagefolders'"),
]


@pytest.mark.parametrize("case, kind, extra, message", PRUNE_DATA_CASES, ids=[c[0] for c in PRUNE_DATA_CASES])
def test_prune_bad_data(tmp_path, capsys, case, kind, extra, message):
    src, root = _converted(tmp_path), _tree(tmp_path, kind)
    before = _files(tmp_path)
    argv = [str(src), "--ratio", "0.3", "--dataset", "imagefolder", "--data", str(root), "--data-resolution", "16",
            "--no-progress", *extra]
    _check_one_line(run_cli(prune_main, argv), capsys.readouterr().err, message)
    assert _files(tmp_path) == before


@pytest.mark.parametrize("extra, message", [
    (["--new-head"], "--new-head needs data: give --dataset NAME --data PATH"),
    (["--finetune-epochs", "2"], "--finetune-epochs 2 needs data"),
    (["--importance", "taylor"], "--importance taylor needs data"),
    (["--data", "{tmp}"], "records no dataset; name it with --dataset"),
    (["--dataset", "imagefolder", "--new-head", "--finetune-epochs", "0"], "--new-head needs fine-tuning"),
    (["--out", "{tmp}/deploy.pt/x.pt"], "deploy.pt' is a file, not a folder"),
    (["--out", "{tmp}"], "is a folder; give a file name"),
    (["--onnx", "{tmp}/deploy.pt/m.onnx"], "--onnx"),
    (["--data-resolution", "4", "--dataset", "imagefolder", "--data", "{tmp}"], "--data-resolution 4: data.resolution: 4 is out of range; must be >= 8"),
    (["--ratio", "0.2"], "not allowed with argument --target-speedup"),
])
def test_prune_flags_that_need_data_or_a_place_to_write(tmp_path, capsys, extra, message):
    src = _converted(tmp_path)
    before = _files(tmp_path)
    argv = [str(src), "--target-speedup", "1.5", "--no-progress", *(a.format(tmp=tmp_path) for a in extra)]
    _check_one_line(run_cli(prune_main, argv), capsys.readouterr().err, message)
    assert _files(tmp_path) == before


@pytest.mark.parametrize("kind, message", [
    ("missing", "does not exist"), ("one-class", "a classifier needs at least 2"), ("corrupt", "broken.png"),
])
def test_search_bad_data_folder(tmp_path, capsys, kind, message):
    root = _tree(tmp_path, kind)
    study = tmp_path / "st.toml"
    study.write_text(BASE + '[data]\nname = "imagefolder"\nresolution = 16\n')
    before = _files(tmp_path)
    argv = ["--study", str(study), "--data", str(root), "--reports-dir", str(tmp_path / "r"), "--no-progress"]
    _check_one_line(run_cli(search_main, argv), capsys.readouterr().err, message)
    assert _files(tmp_path) == before


@pytest.mark.parametrize("reports, message", [
    ("{tmp}/st.toml", "--reports-dir '{tmp}/st.toml' is a file, not a folder"),
    ("{tmp}/st.toml/r", "a part of the path is a file, not a folder"),
    ("{tmp}/locked/r", "cannot be created: permission denied"),
])
def test_search_reports_dir_that_cannot_be_written(tmp_path, capsys, reports, message):
    import os

    study = tmp_path / "st.toml"
    study.write_text(BASE)
    (tmp_path / "locked").mkdir(mode=0o500)
    if "locked" in reports and os.access(tmp_path / "locked", os.W_OK):
        pytest.skip("running as root: permissions are not enforced")
    before = _files(tmp_path)
    argv = ["--study", str(study), "--reports-dir", reports.format(tmp=tmp_path), "--no-progress"]
    _check_one_line(run_cli(search_main, argv), capsys.readouterr().err, message.format(tmp=tmp_path))
    assert _files(tmp_path) == before


@pytest.mark.parametrize("extra, message", [
    (["--n-trials", "0"], "--n-trials must be >= 1, got 0"),
    (["--n-trials", "many"], "argument --n-trials: invalid int value: 'many'"),
    (["--seed", "-1"], "--seed -1:"),
    (["--data-resolution", "4"], "--data-resolution 4:"),
    (["--dataset", "mnist"], "--dataset 'mnist': "),
    (["--data", "{tmp}"], "--data '{tmp}': "),
    (["--measure-resolution", "0"], "--measure-resolution 0: "),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
])
def test_search_bad_flags_are_one_line_naming_the_flag(tmp_path, capsys, extra, message):
    study = tmp_path / "st.toml"
    study.write_text(BASE)
    before = _files(tmp_path)
    argv = ["--study", str(study), "--reports-dir", str(tmp_path / "r"), *(a.format(tmp=tmp_path) for a in extra)]
    _check_one_line(run_cli(search_main, argv), capsys.readouterr().err, message.format(tmp=tmp_path))
    assert _files(tmp_path) == before
