"""covertune write: inputs from flags, files and text, the letter `covertune generate` writes, --json, errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from covertune.core import io, records
from covertune.cli import main
from covertune.config.stages import GenerateConfig, WriteConfig
from covertune.stages.generate import generate
from covertune.metrics.grounding import ground_json
from covertune.core.records import INPUT_FIELDS
from covertune.stages.write import collect_fields, write


@pytest.fixture(scope="module")
def rows(dataset_dir):
    frame = pd.read_csv(dataset_dir / "test.csv", dtype=str, keep_default_na=False).head(2)
    return [records.from_source_row(r) for r in frame.to_dict("records")]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_dir, rows, make_tiny_adapter):
    """A run directory with data/test.jsonl, an adapter, and eval.csv written by `covertune generate`."""
    out = tmp_path_factory.mktemp("run")
    io.write_jsonl(out / "data" / "test.jsonl", rows)
    make_tiny_adapter(tiny_model_dir, out / "adapter", quantization="none")
    generate(GenerateConfig(model=str(tiny_model_dir), out=str(out), max_new_tokens=12, batch_size=2, dtype="fp32"))
    return out


def _cfg(tiny_model_dir, **kw):  # the torch engine, as generate's letters (tests/test_letter_engines.py: llama.cpp)
    return WriteConfig(**{"model": str(tiny_model_dir), "max_new_tokens": 12, "dtype": "fp32", "form": "auto",
                          "engine": "torch", **kw})


def test_letters_equal_generate(run_dir, tiny_model_dir, rows, tmp_path):
    """With --out, the run's fine-tuned model; without, the base: each letter is generate's for that row."""
    frame = pd.read_csv(run_dir / "eval.csv", dtype=str, keep_default_na=False)
    for i, row in enumerate(rows):
        fields = records.inputs_of(row)
        flags = {k: v for k, v in fields.items() if v}
        assert write(_cfg(tiny_model_dir, out=str(run_dir), **flags)) == frame["fine_tuned_output"][i]
        path = tmp_path / f"row{i}.json"
        path.write_text(json.dumps(fields))
        assert write(_cfg(tiny_model_dir, input=str(path))) == frame["base_output"][i]
    assert frame["fine_tuned_output"].tolist() != frame["base_output"].tolist()  # the adapter was used


def test_json_output(tiny_model_dir, rows):
    fields = records.inputs_of(rows[0])
    out = json.loads(write(_cfg(tiny_model_dir, json=True, **{k: v for k, v in fields.items() if v})))
    assert set(out) == {"letter", "grounding", "usage", "model", "form"}
    assert out["grounding"] == ground_json(out["letter"], fields)
    assert 0 < out["usage"]["completion_tokens"] <= 12 and out["usage"]["prompt_tokens"] > 20


def test_input_precedence_and_text_files(tmp_path):
    (tmp_path / "app.yaml").write_text("job_title: Welder\nhiring_company: Acme\napplicant_name:\n")
    (tmp_path / "posting.txt").write_text("We need a welder.\nMIG and TIG.\n")
    (tmp_path / "resume.txt").write_text("  Ten years of welding.  ")
    fields = collect_fields(WriteConfig(input=str(tmp_path / "app.yaml"), job_posting=str(tmp_path / "posting.txt"),
                                        resume=str(tmp_path / "resume.txt"), hiring_company="Acme Inc"))
    assert fields == {**{k: "" for k in INPUT_FIELDS}, "job_title": "Welder", "hiring_company": "Acme Inc",
                      "preferred_qualifications": "We need a welder.\nMIG and TIG.",
                      "current_experience": "Ten years of welding."}


def test_input_file_text_is_kept_as_written(tmp_path):
    """A field's text from --input is the prompt's as written, as a served request's JSON and a dataset row
    are: the same fields give the same prompt through every door."""
    (tmp_path / "app.json").write_text(json.dumps({"job_title": " Data Scientist", "skillsets": "SQL\n"}))
    fields = collect_fields(WriteConfig(input=str(tmp_path / "app.json")))
    assert fields["job_title"] == " Data Scientist" and fields["skillsets"] == "SQL\n"


def test_bad_inputs(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("job_title: X\nsalary: 5\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown field\(s\) \['salary'\]"):
        collect_fields(WriteConfig(input=str(tmp_path / "bad.yaml")))
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        collect_fields(WriteConfig(input=str(tmp_path / "list.yaml")))
    (tmp_path / "nested.yaml").write_text("skillsets: [a, b]\n")
    with pytest.raises(ValueError, match="'skillsets' must be text"):
        collect_fields(WriteConfig(input=str(tmp_path / "nested.yaml")))
    with pytest.raises(ValueError, match="no inputs"):
        collect_fields(WriteConfig())
    assert main(["write", "--resume", str(tmp_path / "missing.txt")]) == 2
    err = capsys.readouterr().err
    assert "covertune write: error: --resume" in err and "missing.txt" in err and "Traceback" not in err
    assert main(["write", "--job-title", "X", "--out", str(tmp_path / "nope")]) == 2
    assert "run directory" in capsys.readouterr().err


def test_cli_prints_the_letter(tiny_model_dir, capsys):
    assert main(["write", "--model", str(tiny_model_dir), "--dtype", "fp32", "--max-new-tokens", "6",
                 "--job-title", "Welder", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["usage"]["completion_tokens"] <= 6 and out["grounding"]["name_mentioned"] is None


def test_candidates_choose_as_generate_does(run_dir, tiny_model_dir, rows, tmp_path):
    cand = tmp_path / "run"
    io.write_jsonl(cand / "data" / "test.jsonl", rows[:1])  # one row: the same random draws as write
    generate(GenerateConfig(model=str(tiny_model_dir), out=str(cand), adapter=str(run_dir / "adapter"),
                            models=["fine_tuned"], max_new_tokens=12, batch_size=1, dtype="fp32", candidates=3,
                            select="mbr", candidate_temperature=1.5))
    frame = pd.read_csv(cand / "eval.csv", dtype=str, keep_default_na=False)
    side = io.read_jsonl(cand / "candidates" / "test.fine_tuned.jsonl")
    fields = {k: v for k, v in records.inputs_of(rows[0]).items() if v}
    cfg = _cfg(tiny_model_dir, out=str(run_dir), candidates=3, select="mbr", candidate_temperature=1.5, **fields)
    assert write(cfg) == frame["fine_tuned_output"][0]
    cfg.json = True
    out = json.loads(write(cfg))
    assert out["candidates"]["chosen"] == side[0]["chosen"]
    assert [c["letter"] for c in out["candidates"]["candidates"]] == [c["letter"] for c in side[0]["candidates"]]
    assert out["usage"]["completion_tokens"] == sum(c["new_tokens"] for c in side[0]["candidates"])
    with pytest.raises(ValueError, match="drop --do-sample"):
        write(_cfg(tiny_model_dir, candidates=2, do_sample=True, job_title="x"))


def test_classifier_mbr_scores_the_candidates(run_dir, tiny_model_dir, rows, tmp_path, flagged_train_records):
    from covertune.classify.model import LetterClassifier, examine_all

    fields = {k: v for k, v in records.inputs_of(rows[0]).items() if v}
    cfg = _cfg(tiny_model_dir, candidates=3, select="classifier-mbr", candidate_temperature=1.5, json=True,
               classifier=str(tmp_path / "none.json"), **fields)
    with pytest.raises(FileNotFoundError, match="no letter-quality classifier"):
        write(cfg)
    train = flagged_train_records[:150]
    checks, labels, _ = examine_all([r["cover_letter"] for r in train], [records.inputs_of(r) for r in train],
                                    [r["flags"] for r in train])
    classifier = LetterClassifier.fit([r["cover_letter"] for r in train], checks, labels)
    cfg.classifier = str(classifier.save(tmp_path / "clf" / "classifier.json").parent)
    out = json.loads(write(cfg))
    cands = out["candidates"]["candidates"]
    assert out["candidates"]["select"] == "classifier-mbr"
    assert [c["quality"] for c in cands] == pytest.approx(
        classifier.score([c["letter"] for c in cands], [records.inputs_of(rows[0])] * 3), abs=1e-6)
    assert out["letter"] == cands[out["candidates"]["chosen"]]["letter"]


def test_input_too_long_for_the_context_is_refused_before_generating(tiny_model_dir, tmp_path, capsys, monkeypatch):
    """A job posting longer than the model's context: the one-line message generate and serve give, at once."""
    from covertune.stages import write as write_module
    from covertune.core.limits import context_overflow

    def never(*args, **kwargs):
        raise AssertionError("generation started")

    monkeypatch.setattr(write_module, "generate_letters", never)
    posting = tmp_path / "posting.txt"
    posting.write_text("SQL, Python and reporting for a growing team. " * 1500)
    code = main(["write", "--model", str(tiny_model_dir), "--dtype", "fp32", "--max-new-tokens", "12",
                 "--job-posting", str(posting), "--job-title", "Analyst"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1, err
    n = int(err[0].split("the prompt is ")[1].split(" tokens")[0].replace(",", ""))
    assert context_overflow(n, 12, 2048)[1] in err[0] and n > 2048  # serve's and generate's words
    assert "shorten --job-posting" in err[0]


def test_form_on_the_command_line(run_dir, tiny_model_dir, capsys):
    """--form full completes the letter from the inputs, --form body strips it, both around the same letter."""
    from covertune.generation.letter_form import apply_form, is_full

    fields = {"job_title": "Welder", "hiring_company": "Acme Corp", "applicant_name": "Jane Doe"}
    flags = [x for k, v in fields.items() for x in (f"--{k.replace('_', '-')}", v)]
    common = ["write", "--model", str(tiny_model_dir), "--out", str(run_dir), "--dtype", "fp32", "--max-new-tokens", "8",
              *flags, "--json"]
    letters = {}
    for form in ("auto", "full", "body"):
        assert main([*common, "--form", form]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["form"] == form
        letters[form] = out["letter"]
    assert letters["auto"].strip()  # the run's fine-tuned tiny model writes something (the bare one may not)
    assert letters["full"] == apply_form(letters["auto"], "full", fields) and is_full(letters["full"], fields)
    assert letters["full"].startswith("Dear Acme Corp team,") and letters["full"].endswith("Sincerely,\nJane Doe")
    assert letters["body"] == apply_form(letters["auto"], "body", fields)
    with pytest.raises(SystemExit):  # argparse names the choices
        main([*common, "--form", "letter"])
    assert "invalid choice: 'letter'" in capsys.readouterr().err
