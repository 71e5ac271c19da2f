"""rundir: the run directory's paths, reading what stages wrote, stage markers; stages meet only there."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from covertune.core import io, rundir

SRC = Path(__file__).resolve().parents[2] / "src" / "covertune"
STAGE_MODULES = {
    "covertune.stages.data": SRC / "stages" / "data.py",
    "covertune.stages.train": SRC / "stages" / "train.py",
    "covertune.stages.merge": SRC / "stages" / "merge.py",
    "covertune.stages.generate": SRC / "stages" / "generate.py",
    "covertune.stages.evaluate": SRC / "stages" / "evaluate.py",
    "covertune.stages.report": SRC / "stages" / "report.py",
}


def imported_modules(path: Path) -> set[str]:
    """Every covertune module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m.startswith("covertune")}


@pytest.mark.parametrize("module", sorted(STAGE_MODULES))
def test_no_stage_imports_another_stage(module):
    others = set(STAGE_MODULES) - {module}
    assert imported_modules(STAGE_MODULES[module]) & others == set()


def test_the_pipeline_imports_no_stage():
    """`covertune run` finds each stage function by name; it shares nothing else with them."""
    assert imported_modules(SRC / "stages" / "pipeline.py") & set(STAGE_MODULES) == set()


def test_paths(tmp_path):
    assert rundir.split_path(tmp_path, "test") == tmp_path / "data" / "test.jsonl"
    assert rundir.adapter_dir(tmp_path) == tmp_path / "adapter"
    assert rundir.merged_dir(tmp_path) == tmp_path / "merged"
    assert rundir.checkpoints_dir(tmp_path) == tmp_path / "checkpoints"
    assert rundir.eval_csv(tmp_path) == tmp_path / "eval.csv"
    assert rundir.stage_marker(tmp_path, "train") == tmp_path / ".stages" / "train.json"


def test_read_split(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"test\.jsonl not found: run `covertune data --out"):
        rundir.read_split(tmp_path, "test")
    io.write_jsonl(tmp_path / "data" / "test.jsonl", [{"id": "test-0"}, {"id": "test-1"}])
    assert [r["id"] for r in rundir.read_split(tmp_path, "test")] == ["test-0", "test-1"]


def _adapter(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text("{}")
    return path


def test_fine_tuned_source(tmp_path):
    assert rundir.fine_tuned_source(tmp_path) == (None, None)  # no fine-tuned model in the run
    with pytest.raises(FileNotFoundError, match="no PEFT adapter at"):
        rundir.fine_tuned_source(tmp_path, adapter=str(tmp_path / "elsewhere"))
    with pytest.raises(FileNotFoundError, match="run `covertune merge` first"):
        rundir.fine_tuned_source(tmp_path, merged=str(tmp_path / "merged"))
    own = _adapter(tmp_path / "adapter")
    assert rundir.fine_tuned_source(tmp_path) == (own, None)
    other = _adapter(tmp_path / "other")
    assert rundir.fine_tuned_source(tmp_path, adapter=str(other)) == (other, None)
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "config.json").write_text("{}")
    assert rundir.fine_tuned_source(tmp_path, adapter=str(other), merged=str(tmp_path / "merged")) == (
        None, tmp_path / "merged")


def test_find_adapter_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `covertune train` first or pass --adapter"):
        rundir.find_adapter(tmp_path)


def test_read_train_config(tmp_path):
    assert rundir.read_train_config(tmp_path) == {}
    (tmp_path / "covertune_train.json").write_text(json.dumps({"prompt_format": "chat"}))
    assert rundir.read_train_config(tmp_path) == {"prompt_format": "chat"}
    (tmp_path / "covertune_train.json").write_text('{"prompt_format": "ch')
    with pytest.raises(ValueError, match="covertune_train.json is not valid JSON"):
        rundir.read_train_config(tmp_path)


def test_last_checkpoint_by_step_not_name(tmp_path):
    ckpts = tmp_path / "checkpoints"
    assert rundir.last_checkpoint(ckpts) is None
    for step in (9, 10, 2):
        (ckpts / f"checkpoint-{step}").mkdir(parents=True)
        (ckpts / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (ckpts / "checkpoint-11").mkdir()  # no trainer state: a save that did not finish
    assert rundir.last_checkpoint(ckpts) == ckpts / "checkpoint-10"  # 10 > 9, though "9" > "10" as text


def test_stage_markers(tmp_path):
    assert not rundir.is_done(tmp_path, "train") and rundir.stage_info(tmp_path, "train") is None
    rundir.mark_done(tmp_path, "train", {"global_step": 3})
    assert rundir.is_done(tmp_path, "train") and rundir.stage_info(tmp_path, "train") == {"global_step": 3}
    rundir.stage_marker(tmp_path, "train").write_text('{"global_st')  # cut off
    assert rundir.stage_info(tmp_path, "train") is None


def test_check_out(tmp_path):
    assert rundir.check_out(tmp_path / "new" / "run") == tmp_path / "new" / "run"  # made when written
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        rundir.check_out(tmp_path / "file")
    with pytest.raises(NotADirectoryError, match="is a file, so the run directory cannot be made"):
        rundir.check_out(tmp_path / "file" / "run")


def test_out_that_is_a_file_is_one_line_from_the_cli(tmp_path, capsys):
    from covertune.cli import main

    (tmp_path / "file").write_text("x")
    assert main(["data", "--data", "sample", "--out", str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("covertune data: error: --out ") and "is a file" in err and "\n" not in err


def test_output_path_stays_inside_the_run(tmp_path):
    run = tmp_path / "run"
    assert rundir.output_path(run, "eval.csv") == run / "eval.csv"
    assert rundir.output_path(run, "sub/../other.csv") == run / "sub/../other.csv"
    assert rundir.output_path(run, str(tmp_path / "elsewhere.csv")) == tmp_path / "elsewhere.csv"  # on purpose
    for name in ("../x.csv", "../../x.csv", "sub/../../x.csv"):
        with pytest.raises(ValueError, match="leads outside the run directory"):
            rundir.output_path(run, name)


def test_check_safetensors_names_a_truncated_file(tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.ones(64, 64)}, tmp_path / "adapter_model.safetensors")
    rundir.check_safetensors(tmp_path)
    data = (tmp_path / "adapter_model.safetensors").read_bytes()
    (tmp_path / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"adapter_model\.safetensors is not a readable safetensors file") as err:
        rundir.check_safetensors(tmp_path)
    assert "\n" not in str(err.value)


def test_last_good_checkpoint_skips_unreadable_ones(tmp_path, caplog):
    import torch
    from safetensors.torch import save_file

    ckpts = tmp_path / "checkpoints"
    for step in (1, 2, 3):
        folder = ckpts / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        save_file({"w": torch.ones(8)}, folder / "adapter_model.safetensors")
    (ckpts / "checkpoint-3" / "trainer_state.json").write_text('{"global_st')
    data = (ckpts / "checkpoint-2" / "adapter_model.safetensors").read_bytes()
    (ckpts / "checkpoint-2" / "adapter_model.safetensors").write_bytes(data[:-10])
    assert rundir.last_checkpoint(ckpts) == ckpts / "checkpoint-3"
    assert rundir.last_good_checkpoint(ckpts) == ckpts / "checkpoint-1"
    assert "checkpoint-3 cannot be continued from: trainer_state.json unreadable" in caplog.text
    assert "checkpoint-2 cannot be continued from" in caplog.text
