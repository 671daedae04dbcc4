"""Model ladders: the study's 28 reference shapes, and a generator of custom ladders."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from scaling.errors import UserError
from scaling.flops import ModelShape, params_non_embedding
from scaling.paths import check_name, sweeps_search_path


@dataclass(frozen=True)
class ShapeSpec:
    """A shape without vocab and seq_len, which the sweep's data decides."""

    name: str
    d_model: int
    n_layers: int
    n_heads: int

    def with_data(self, vocab: int, seq_len: int) -> ModelShape:
        return ModelShape(self.name, self.d_model, self.n_layers, self.n_heads, vocab, seq_len)


def available_ladders(extra: tuple[Path, ...] = ()) -> list[str]:
    """Ladder names in the ladder/ folders of the sweep search path (scaling.paths.sweeps_search_path)."""
    dirs = sweeps_search_path(extra, check=False)
    return sorted({p.stem for d in dirs for p in (d / "ladder").glob("*.yaml")})


def find_ladder(name: str, extra: tuple[Path, ...] = ()) -> Path | None:
    """The file of a named ladder: the first ladder/NAME.yaml on the sweep search path."""
    for d in sweeps_search_path(extra):
        path = d / "ladder" / f"{name}.yaml"
        if path.exists():
            return path
    return None


def load_ladder(name: str) -> list[ShapeSpec]:
    """A named ladder (ladder/NAME.yaml in a sweep folder, user folders first) or a path to such a YAML file."""
    given = Path(name)
    path = given if given.suffix in (".yaml", ".yml") else find_ladder(name)
    if path is None or not path.exists():
        raise UserError(
            f"unknown ladder {name!r}: choose from {', '.join(available_ladders())} or give a YAML path"
        )
    return parse_shapes(yaml.safe_load(path.read_text()).get("shapes", []), where=str(path))


def parse_shapes(items: list, where: str) -> list[ShapeSpec]:
    shapes = []
    for i, item in enumerate(items):
        try:
            shapes.append(
                ShapeSpec(
                    str(item["name"]), int(item["d_model"]), int(item["n_layers"]), int(item["n_heads"])
                )
            )
        except (KeyError, TypeError, ValueError):
            raise UserError(
                f"{where}: shape #{i} needs name, d_model, n_layers, n_heads (got {item!r})"
            ) from None
    for s in shapes:
        check_name(s.name, f"{where}: model name")
    names = [s.name for s in shapes]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(f"{where}: duplicate shape names {', '.join(dupes)}")
    return shapes


def head_count(d_model: int) -> int:
    """Head dim 64 from d=256 up; 32 for d in [64, 256); 16 below; a single head under 32."""
    if d_model < 32:
        return 1
    head_dim = 64 if d_model >= 256 else 32 if d_model >= 64 else 16
    return max(1, d_model // head_dim)


def depth_for(d_model: int, aspect: float) -> int:
    return max(1, round(d_model / aspect))


def generate_ladder(
    min_params: float,
    max_params: float,
    count: int,
    vocab: int,
    seq_len: int,
    aspect: float = 64.0,
    width_step: int = 8,
    max_layers: int | None = None,
) -> list[ShapeSpec]:
    """`count` shapes whose non-embedding parameter counts are spread log-uniformly over
    [min_params, max_params]. Depth follows width (n_layers ~ d_model / aspect); widths are
    multiples of `width_step` and divisible by their head count. Names read `d<width>-l<layers>`."""
    if not (0 < min_params <= max_params):
        raise UserError(
            f"ladder range [{min_params:g}, {max_params:g}] is empty: need 0 < min_params <= max_params"
        )
    if count < 1:
        raise UserError(f"ladder count must be >= 1, got {count}")
    candidates = []
    for d in range(width_step, 8192 + 1, width_step):
        n_heads = head_count(d)
        if d % n_heads or (d // n_heads) % 2:
            continue
        layers = depth_for(d, aspect)
        if max_layers:
            layers = min(layers, max_layers)
        shape = ShapeSpec(f"d{d}-l{layers}", d, layers, n_heads)
        candidates.append((params_non_embedding(shape.with_data(vocab, seq_len)), shape))
    if count == 1:
        targets = [math.sqrt(min_params * max_params)]
    else:
        step = math.log(max_params / min_params) / (count - 1)
        targets = [min_params * math.exp(i * step) for i in range(count)]
    chosen: list[ShapeSpec] = []
    for target in targets:
        best = min(candidates, key=lambda c: abs(math.log(c[0] / target)))[1]
        if best not in chosen:
            chosen.append(best)
    return chosen


def shapes_with_data(shapes: list[ShapeSpec], vocab: int, seq_len: int) -> list[ModelShape]:
    return [s.with_data(vocab, seq_len) for s in shapes]
