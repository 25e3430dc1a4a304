"""Checks on merged weights, logits and manifests."""

from medmerge.provenance import check_template
from medmerge.verify.config import VerifyConfig
from medmerge.verify.run import run_verify, verify

__all__ = ["VerifyConfig", "check_template", "run_verify", "verify"]
