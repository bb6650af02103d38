"""``sslkit`` subcommands beyond LightningCLI's fit/validate/test."""
