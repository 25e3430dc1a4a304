"""`medmerge merge`: check the inputs, stream the merged checkpoint and/or adapter, verify, record.

Read top to bottom: refuse bad inputs before writing anything, write into a staging folder,
verify it, write the manifest, and only then rename it into place.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from medmerge.architectures import architecture_of
from medmerge.artifacts import check_output_free, guard_inputs, staged_output
from medmerge.checkpoints import DTYPE_NAMES, Checkpoint, freed_memory_returned
from medmerge.errors import MergeError
from medmerge.lora import MergeSpec, check_shapes, get_method
from medmerge.lora.methods import methods_with
from medmerge.manifest import (
    MANIFEST_NAME,
    model_identity,
    sha256_file,
    write_manifest,
)
from medmerge.merge.adapter_export import export_adapter
from medmerge.merge.config import MergeConfig
from medmerge.merge.full_export import MergeJob, export_full, resolve_dtype
from medmerge.provenance import check_identity, has_recorded_base, side_file_digests

MERGED_ADAPTER_DIR = "merged_adapter"


def run_merge(cfg: MergeConfig) -> int:
    """Merge; return 0 on success, 1 when the merged result fails verification."""
    with freed_memory_returned():
        return _run_merge(cfg)


def _run_merge(cfg: MergeConfig) -> int:
    spec = MergeSpec.from_config(cfg)
    _check_export(cfg)
    inputs = [cfg.base, *(a.path for a in cfg.adapters)]
    check_output_free(cfg.out, cfg.force)
    guard_inputs(cfg.out, inputs)
    base = Checkpoint(cfg.base)
    spec = spec.on(architecture_of(base.config))
    adapters = spec.load(cfg.allow_pickle)
    check_shapes(adapters, base, spec.plan)
    job = MergeJob(
        base=base,
        adapters=adapters,
        spec=spec,
        out_dtype=resolve_dtype(cfg.dtype, base),
        max_shard_size=cfg.max_shard_size,
    )
    # The adapters are hashed beside the merge, and the base as the merge reads it. Only
    # when an adapter recorded the base it was trained on is the base hashed first, so that
    # a foreign adapter is refused before anything is written.
    identity = None
    if any(has_recorded_base(a) for a in adapters):
        identity = model_identity(base.folder)
        check_identity(adapters, identity)
    with ThreadPoolExecutor(max_workers=1) as pool:
        adapter_hashes = pool.submit(lambda: [a.hashes() for a in adapters])
        with staged_output(cfg.out, cfg.force, inputs=inputs) as staging:
            outputs, base_digests = _export(job, cfg, staging)
            identity = identity or model_identity(base.folder, known=base_digests)
            verified = _verify(cfg, job, staging) if cfg.verify else None
            hashes = adapter_hashes.result()
            payload = _manifest_payload(cfg, job, hashes, identity, outputs, verified)
            write_manifest(staging, "merge", payload)
    _summarise(cfg, job, verified)
    return 1 if verified is False else 0


def _check_export(cfg: MergeConfig) -> None:
    """A merged adapter carries the merge exactly only for a low-rank-exact method."""
    if cfg.export != "full" and not get_method(cfg.method).low_rank_exact:
        exact = ", ".join(methods_with(low_rank_exact=True))
        raise MergeError(
            f"a merged adapter is exact only for method {exact}, not {cfg.method}; use "
            "--export full; fix the merge config"
        )


def _export(
    job: MergeJob, cfg: MergeConfig, staging: Path
) -> tuple[dict[str, object], dict[Path, str]]:
    """The manifest's record of what was written, and the base's file digests where the
    export read the base whole."""
    outputs: dict[str, object] = {}
    base_digests: dict[Path, str] = {}
    if cfg.export in ("full", "both"):
        exported = export_full(job, staging, _progress(len(job.base.entries)))
        outputs["files"], base_digests = exported.files, exported.base_digests
        outputs["side_files"] = side_file_digests(staging)
    if cfg.export in ("adapter", "both"):
        folder = staging if cfg.export == "adapter" else staging / MERGED_ADAPTER_DIR
        folder.mkdir(exist_ok=True)
        report = export_adapter(job.adapters, job.spec.plan, job.base, folder, cfg.adapter_rank)
        report.pop("dropped_energy")
        outputs["adapter"] = {"folder": folder.name if folder != staging else ".", **report}
    return outputs, base_digests


def _progress(total: int):
    from tqdm import tqdm

    bar = tqdm(total=total, unit="tensor", desc="merge", disable=None, leave=False)
    return bar.update


def _verify(cfg: MergeConfig, job: MergeJob, staging: Path) -> bool | None:
    """Verify the staged output against the base and adapters (full exports only)."""
    if cfg.export == "adapter":
        return None
    from medmerge.verify.run import verify_merge_output

    return verify_merge_output(job.spec, cfg.base, staging, cfg.out)


def _manifest_payload(cfg, job, hashes, identity, outputs, verified) -> dict[str, object]:
    return {
        "base": identity,
        "adapters": [
            {
                "path": str(adapter.path.resolve()),
                "weight": spec.weight,
                **adapter_hashes,
                "adapter_manifest_sha256": _manifest_digest(adapter.path),
                "template": (adapter.manifest or {}).get("template"),
                "enable_thinking": (adapter.manifest or {}).get("enable_thinking"),
            }
            for adapter, adapter_hashes, spec in zip(
                job.adapters, hashes, cfg.adapters, strict=True
            )
        ],
        "method": cfg.method,
        "density": cfg.density,
        "seed": cfg.seed,
        "group_weights": cfg.group_weights,
        "layer_ranges": [r.model_dump() for r in cfg.layer_ranges],
        "dtype": DTYPE_NAMES[job.out_dtype],
        "export": cfg.export,
        "outputs": outputs,
        "config": cfg.model_dump(),
        "verified": verified,
    }


def _manifest_digest(folder: Path) -> str | None:
    path = folder / MANIFEST_NAME
    return sha256_file(path) if path.is_file() else None


def _summarise(cfg: MergeConfig, job: MergeJob, verified: bool | None) -> None:
    weights = ", ".join(f"{Path(a.path).name}={a.weight:g}" for a in cfg.adapters)
    status = {True: "verified", False: "FAILED verification", None: "not verified"}[verified]
    print(
        f"medmerge: merged {weights} ({cfg.method}, {DTYPE_NAMES[job.out_dtype]}) -> {cfg.out} [{status}]",
        file=sys.stderr,
    )
