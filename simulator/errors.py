"""The simulator's errors: a bad scenario (re-exported by ``simulator.scenario``), a bad provider class."""


class ScenarioError(ValueError):
    """The scenario (or a run-time change to it) is malformed."""


class ProviderDefinitionError(RuntimeError):
    """A simulated provider's class misses a fact or states one that cannot be right."""
