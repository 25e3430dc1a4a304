"""The run folder of `medmerge run`: where each stage writes, named once.

pipeline.py writes these folders and report/build.py reads them; both take the names from
here, so renaming a stage's folder is one change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# stage name -> its folder under the run folder (verify writes into the merge's folder)
STAGE_FOLDERS = {
    "base": "base",
    "pt": "pt",
    "sft": "sft",
    "merge": "merged",
    "verify": "merged",
    "eval": "eval",
    "sweep": "sweep",
    "headline": "headline",
    "mistakes": "mistakes",
    "audit": "audit",
    "diagnose": "diagnostics",
    "mechanism": "mechanism",
    "report": "report",
}
RECORDS = ".pipeline"  # the pipeline's per-stage records (resolved config and input hashes)


@dataclass(frozen=True)
class RunLayout:
    """The folders and well-known files of one run folder."""

    root: Path

    @classmethod
    def of(cls, run_dir: str | os.PathLike) -> RunLayout:
        return cls(Path(run_dir).resolve())

    def folder(self, stage: str) -> Path:
        return self.root / STAGE_FOLDERS[stage]

    @property
    def records(self) -> Path:
        return self.root / RECORDS

    def record(self, stage: str) -> Path:
        """The pipeline's record of a stage: what it last ran with."""
        return self.records / f"{stage}.json"

    @property
    def verify_report(self) -> Path:
        return self.folder("verify") / "verify.json"

    @property
    def report_html(self) -> Path:
        return self.folder("report") / "report.html"

    def stage_folders(self) -> list[Path]:
        """Every stage's folder, once each, in the order of the chain."""
        return [self.root / name for name in dict.fromkeys(STAGE_FOLDERS.values())]
