"""``hf-contrastive generate`` on a tiny GPT-2 with a word-level tokenizer (no network)."""

from __future__ import annotations

import json

import pytest

from hf_contrastive.cli import main


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, tiny_models):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<s>": 2, "<unk>": 3, **{f"w{i}": i for i in range(4, 256)}}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    tiny_models["gpt2"].save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_generate_verb_json_and_metrics(tiny_folder, tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(
        "\n".join(json.dumps({"instructions": t}) for t in ["w17 w45 w99", "w8 w120", "w5 w6 w7 w9"])
    )
    rc = main(
        [
            "generate",
            str(tiny_folder),
            "--prompts-file",
            str(prompts),
            "--limit",
            "2",
            "--penalty-alpha",
            "0.6",
            "--top-k",
            "4",
            "--max-new-tokens",
            "6",
            "--json",
            "--metrics",
        ]
    )
    assert rc == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [x["prompt"] for x in lines[:2]] == ["w17 w45 w99", "w8 w120"]
    assert all(x["continuation"].strip() for x in lines[:2])
    assert set(lines[2]) == {"rep-2", "rep-3", "rep-4", "diversity"}


def test_generate_verb_rejects_bad_arguments(tiny_folder, capsys):
    assert main(["generate", str(tiny_folder), "--prompt", "w5 w6", "--top-k", "0"]) != 0
    err = capsys.readouterr().err
    assert "top_k" in err and "Traceback" not in err  # one line saying what to change
    with pytest.raises(ValueError, match="top_k"):  # --debug: the exception itself
        main(["generate", str(tiny_folder), "--prompt", "w5 w6", "--top-k", "0", "--debug"])
    assert main(["generate", str(tiny_folder)]) == 2
