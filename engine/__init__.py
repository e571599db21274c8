"""The thin Python layer: stages, strategies, orders, risk policy, pre-flight, monitoring,
storage and the `engine` command."""
