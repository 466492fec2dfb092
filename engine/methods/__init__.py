"""Methods: each is a function `run(ctx) -> summary dict` built from phases of
`RunContext.train_phase`. One line in METHOD_FUNCS adds a method."""

from __future__ import annotations

from ..registry import Registry
from . import concave, dense, imp, random, reinit

METHOD_FUNCS = Registry("method")
METHOD_FUNCS.register("concave", concave.run)
METHOD_FUNCS.register("imp", imp.run)
METHOD_FUNCS.register("random", random.run)
METHOD_FUNCS.register("dense", dense.run)
METHOD_FUNCS.register("reinit", reinit.run)
