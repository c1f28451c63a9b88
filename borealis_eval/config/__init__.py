"""The ablation config: schema (typed sections), loader (YAML, `extends`, errors), grid (overrides).

    abl, variants = load_ablation("ablations/cpu/text_ratio.yaml", {"train.steps": 100})
"""

from borealis_eval.config.grid import apply_overrides, check_path, grid_origin, parse_assignment, variants_table
from borealis_eval.config.labels import axis_label, cell_of
from borealis_eval.config.loader import deep_merge, load_ablation, load_eval_scope
from borealis_eval.config.schema import *  # noqa: F403 - the section models are the package's vocabulary
from borealis_eval.config.schema import __all__ as _schema_names
from borealis_eval.errors import ConfigError

__all__ = [*_schema_names, "ConfigError", "apply_overrides", "axis_label", "cell_of", "check_path", "grid_origin", "deep_merge",
           "load_ablation", "load_eval_scope", "parse_assignment", "variants_table"]
