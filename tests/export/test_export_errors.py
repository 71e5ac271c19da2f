"""export on bad input: one-line errors that say what to do, and nothing half-written left behind."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from covertune.cli import main
from covertune.config.stages import ExportConfig
from covertune.config.build import build
from covertune.stages.export import export


def make_run(tmp_path, model_dir):
    run = tmp_path / "run"
    shutil.copytree(model_dir, run / "merged")
    return run


def leftovers(folder):
    """Files and folders under ``folder`` (recursively), as relative paths."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def cli_error(capsys, *argv) -> str:
    capsys.readouterr()  # what the test printed before (progress bars of its own saves)
    assert main(["export", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("covertune export: error: "), err
    assert "Traceback" not in err
    return err


def test_run_without_adapter_or_merged_model(tmp_path, capsys):
    run = tmp_path / "empty"
    run.mkdir()
    with pytest.raises(FileNotFoundError, match="nothing to export"):
        export(ExportConfig(out=str(run)))
    err = cli_error(capsys, "--out", str(run))
    assert "covertune train" in err and "--merged" in err
    assert leftovers(run) == []
    err = cli_error(capsys, "--out", str(run), "--merged", str(tmp_path / "nope"))
    assert "no config.json" in err


def test_unsupported_architecture_names_it(tiny_model_dir, tmp_path, capsys):
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    run = tmp_path / "run"
    model.save_pretrained(run / "merged")
    tok.save_pretrained(run / "merged")
    with pytest.raises(ValueError, match=r"'qwen2' architecture \(Qwen2ForCausalLM.*not supported yet"):
        export(ExportConfig(out=str(run)))
    err = cli_error(capsys, "--out", str(run), "--format", "gguf")
    assert "qwen2" in err and "--format safetensors" in err
    assert not (run / "export").exists()
    # the safetensors format takes any architecture
    assert "wrote" in export(ExportConfig(out=str(run), format="safetensors"))


def test_unwritable_output(tiny_model_dir, tmp_path, capsys):
    run = make_run(tmp_path, tiny_model_dir)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(RuntimeError, match="cannot write the export"):
        export(ExportConfig(out=str(run), export_dir=str(blocker / "gguf")))
    err = cli_error(capsys, "--out", str(run), "--export-dir", str(blocker / "gguf"))
    assert "--export-dir" in err
    assert blocker.read_text() == "not a folder"
    if os.geteuid() != 0:  # root writes anywhere: the permission case only means something for a user
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            cli_error(capsys, "--out", str(run), "--export-dir", str(locked / "gguf"))
            assert leftovers(locked) == []
        finally:
            locked.chmod(0o700)


def test_failure_while_writing_leaves_nothing_and_keeps_the_previous_export(tiny_model_dir, tmp_path, capsys):
    """A tokenizer the GGUF writer refuses (a normalizer llama.cpp would not apply) fails inside the
    export's temporary folder: it is removed, and a complete earlier export stays as it was."""
    run = make_run(tmp_path, tiny_model_dir)
    export(ExportConfig(out=str(run)))
    folder = run / "export" / "gguf-f16"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    spec = json.loads((run / "merged" / "tokenizer.json").read_text())
    spec["normalizer"] = {"type": "NFKC"}
    (run / "merged" / "tokenizer.json").write_text(json.dumps(spec))
    err = cli_error(capsys, "--out", str(run), "--force")
    assert "normalizer" in err
    assert leftovers(run / "export") == sorted(["gguf-f16", *(f"gguf-f16/{n}" for n in before)])
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_bad_options(tmp_path, capsys):
    for option, value in (("format", "onnx"), ("quant", "q5_k"), ("prompt_format", "xml"), ("dtype", "int4")):
        config = tmp_path / f"{option}.yaml"
        config.write_text(f"export:\n  {option}: {value}\n")
        err = cli_error(capsys, "--out", str(tmp_path), "--config", str(config))
        assert f"option '{option}' expects one of" in err and repr(value) in err
        with pytest.raises(SystemExit) as exit_info:  # the same choices on the command line
            main(["export", "--out", str(tmp_path), "--" + option.replace("_", "-"), value])
        assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_options_from_flags_and_yaml(tiny_model_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    help_text = capsys.readouterr().out
    assert "--quant" in help_text and "--format" in help_text and "--export-dir" in help_text
    cfg = build("export", {"out": "runs/a", "export": {"quant": "q8_0"}}, {"format": "gguf"})
    assert (cfg.out, cfg.quant, cfg.format) == ("runs/a", "q8_0", "gguf")

    run = make_run(tmp_path, tiny_model_dir)
    yaml_file = tmp_path / "x.yaml"
    yaml_file.write_text("export:\n  quant: q4_0\n  max_new_tokens: 300\n")
    assert main(["export", "--config", str(yaml_file), "--out", str(run), "--name", "Letters"]) == 0
    assert "wrote" in capsys.readouterr().out
    modelfile = (run / "export" / "gguf-q4_0" / "Modelfile").read_text()
    assert "PARAMETER num_predict 300" in modelfile and "ollama create letters -f Modelfile" in modelfile


def test_byte_fallback_with_a_byte_level_decoder_is_refused(tiny_model_dir, tmp_path, capsys):
    """A byte-fallback BPE (SentencePiece style, as Llama-2's) is exported through gguf.vocab's readers
    (test_export_spm); one whose decoder is byte-level is neither kind and is refused by name, nothing written."""
    run = make_run(tmp_path, tiny_model_dir)
    spec = json.loads((run / "merged" / "tokenizer.json").read_text())
    spec["model"]["byte_fallback"] = True
    (run / "merged" / "tokenizer.json").write_text(json.dumps(spec))
    err = cli_error(capsys, "--out", str(run))
    assert "SentencePiece" in err and "ByteLevel decoder" in err and "not supported yet" in err
    assert leftovers(run / "export") == []
