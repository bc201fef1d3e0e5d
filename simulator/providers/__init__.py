"""The simulated providers, one module each, served under ``/<name>/``."""

from .base import ProviderSim
from .bluesky import Bluesky
from .facebook import Facebook
from .github import GitHub
from .linkedin import LinkedIn
from .mastodon import Mastodon
from .twitter import Twitter

#: Provider name -> its (stateless) simulator; state lives in ``Simulator``.
PROVIDER_SIMS: dict[str, ProviderSim] = {
    p.NAME: p for p in (GitHub(), Twitter(), Facebook(), LinkedIn(), Mastodon(), Bluesky())
}
