"""Configuration: one YAML file, secrets from the environment, validated at start."""

from connector.config.schema import Config, ConfigError, load_config, load_config_text

__all__ = ["Config", "ConfigError", "load_config", "load_config_text"]
