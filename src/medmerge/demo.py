"""`medmerge demo`: the whole chain on the bundled tiny model and sample data, on CPU.

Each stage reads its shipped YAML from configs/, writes under the demo folder, and is
skipped when its output's manifest shows the same config, so a rerun only redoes what changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from medmerge.base import BaseBuildConfig, build_base
from medmerge.config import StageConfig, build_config
from medmerge.manifest import read_manifest
from medmerge.paths import REPO_ROOT
from medmerge.merge import MergeConfig, run_merge
from medmerge.train import TrainConfig, train
from medmerge.verify import VerifyConfig, run_verify


_RUN_ONLY_KEYS = ("force", "progress")  # how a stage ran, not what it made


def _same_config(out: Path, cfg: StageConfig) -> bool:
    manifest = read_manifest(out) if out.is_dir() else None
    if not manifest or not isinstance(manifest.get("config"), dict):
        return False
    recorded = {k: v for k, v in manifest["config"].items() if k not in _RUN_ONLY_KEYS}
    return recorded == cfg.model_dump(exclude=set(_RUN_ONLY_KEYS))


def _stage(name: str, cfg: StageConfig, run: Callable[[StageConfig], object]) -> None:
    out = Path(cfg.out)
    if _same_config(out, cfg):
        print(f"[{name}] reusing {out} (same config)")
        return
    started = time.perf_counter()
    print(f"[{name}] -> {out}")
    status = run(cfg.model_copy(update={"force": out.exists()}))
    if isinstance(status, int) and status != 0:
        raise SystemExit(status)
    print(f"[{name}] done in {time.perf_counter() - started:.0f} s")


def run_demo(out_dir: str) -> int:
    root = Path(out_dir).resolve()
    configs = REPO_ROOT / "configs"
    started = time.perf_counter()
    base = build_config(BaseBuildConfig, configs / "base.yaml", {"out": str(root / "base")})
    _stage("base", base, build_base)
    for stage in ("pt", "sft"):
        cfg = build_config(
            TrainConfig, configs / f"{stage}.yaml", {"base": base.out, "out": str(root / stage)}
        )
        _stage(stage, cfg, train)
    merge = build_config(
        MergeConfig,
        configs / "merge.yaml",
        {
            "base": base.out,
            "adapters": [
                {"path": str(root / "pt"), "weight": 0.3},
                {"path": str(root / "sft"), "weight": 0.7},
            ],
            "out": str(root / "merged"),
        },
    )
    _stage("merge", merge, run_merge)
    check = build_config(
        VerifyConfig, configs / "verify.yaml", {"base": base.out, "merged": merge.out}
    )
    print("[verify] logits, tensors and provenance of the merged checkpoint")
    if run_verify(check) != 0:
        raise SystemExit(1)
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s; everything is under {root}:")
    for name in ("base", "pt", "sft", "merged"):
        print(f"  {name:6s} {root / name}")
    print(f"  verification: {root / 'merged' / 'verify.json'}")
    print(f"  loss curves: {root / 'pt' / 'loss_curve.png'}, {root / 'sft' / 'loss_curve.png'}")
    return 0
