"""The prior families by `kind`, and `build_prior`. Each family's networks and sampling
are in its own module: `ar` (ar, dalle), `maskgit` (maskgit, muse), `rq` (rq,
contextual_rq), `var` (next-scale); what they share is in `base` and `sampling`."""

from __future__ import annotations

from vqtool.priors.ar import ARPrior, TextARPrior
from vqtool.priors.base import PriorBase, PriorConfig
from vqtool.priors.maskgit import MaskGITPrior, TextMaskGITPrior
from vqtool.priors.rq import ContextualRQPrior, RQPrior
from vqtool.priors.var import VARPrior

__all__ = ["PRIORS", "PriorBase", "PriorConfig", "build_prior"]

#: kind -> class (`PriorConfig.kind` names the same seven)
PRIORS: dict[str, type[PriorBase]] = {
    "ar": ARPrior,
    "maskgit": MaskGITPrior,
    "rq": RQPrior,
    "dalle": TextARPrior,
    "muse": TextMaskGITPrior,
    "contextual_rq": ContextualRQPrior,
    "var": VARPrior,
}


def build_prior(cfg: PriorConfig) -> PriorBase:
    cfg.validate()
    return PRIORS[cfg.kind](cfg)
