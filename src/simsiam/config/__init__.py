"""Configuration: the typed schema, overrides and YAML, value checks, and the named presets."""
from .checks import validate
from .overrides import (
                     apply_mapping,
                     apply_overrides,
                     from_dict,
                     load_yaml,
                     set_value,
                     valid_keys,
)
from .schema import (
                     CHOICES,
                     METHOD_DEFAULTS,
                     AugConfig,
                     Config,
                     ConfigError,
                     DataConfig,
                     HypothesisConfig,
                     LossConfig,
                     MethodsConfig,
                     ModelConfig,
                     MonitorConfig,
                     OptimConfig,
                     RunConfig,
)

__all__ = [
    "validate", "apply_mapping", "apply_overrides", "from_dict", "load_yaml", "set_value", "valid_keys", "CHOICES",
    "METHOD_DEFAULTS", "AugConfig", "Config", "ConfigError", "DataConfig", "HypothesisConfig", "LossConfig",
    "MethodsConfig", "ModelConfig", "MonitorConfig", "OptimConfig", "RunConfig",
]
