"""Who is asking: named identities for tokens, and the actor (``agent`` / ``human``) the server stamps.

A stock Jupyter Server has one token and calls whoever holds it "Anonymous <moon>": it cannot tell
an assistant from a person.  :class:`GuardIdentityProvider` maps each token to a named identity
(``GuardIdentityProvider.named_tokens = {"<token>": "claude"}``), keeps the server's own token
working, and the extension's ``agent_identities`` says which names are agents.  Behind JupyterHub
or another provider, the provider's usernames are used the same way.

The actor is decided by the server, never by the client: ``agent`` for an identity named as an
agent, otherwise the kernelspec's actor (``human`` where nothing says more).
"""

from __future__ import annotations

import hmac
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from jupyter_server.auth.identity import IdentityProvider, User
from traitlets import Dict, Unicode

ACTORS = ("agent", "human")


class GuardIdentityProvider(IdentityProvider):
    """The server's token provider, plus tokens that each name an identity (an agent or a person)."""

    named_tokens = Dict(
        key_trait=Unicode(), value_trait=Unicode(), default_value={},
        help="Tokens that each authenticate a named identity: {token: username}. Name the agents among "
             "them in GuardExtension.agent_identities; the server's own token (IdentityProvider.token) "
             "stays an anonymous identity.",
    ).tag(config=True)

    @property
    def auth_enabled(self) -> bool:
        return bool(self.named_tokens) or bool(super().auth_enabled)

    async def get_user_token(self, handler: Any) -> User | None:
        """A named token's identity, else the server's own token as before."""
        sent = self.get_token(handler)
        if sent:
            for token, username in self.named_tokens.items():
                if token and hmac.compare_digest(sent.encode(), token.encode()):
                    return User(username=username, name=username, display_name=username)
        user: User | None = await super().get_user_token(handler)
        return user


@dataclass(frozen=True)
class Identity:
    """The authenticated identity behind a request, as the server's records show it."""

    username: str | None
    """The identity's username (None: no request, a server-side call)."""
    name: str | None
    """Its display name."""
    agent: bool
    """Whether the configuration names it as an agent."""

    def as_dict(self) -> dict[str, Any]:
        return {"username": self.username, "name": self.name, "agent": self.agent}

    def actor(self, kernel_actor: str | None) -> str:
        """``agent`` for an agent identity, else the kernelspec's actor (``human`` when it names none)."""
        if self.agent:
            return "agent"
        return kernel_actor if kernel_actor in ACTORS else "human"


def identity_of(user: Any, agents: Collection[str]) -> Identity:
    """The :class:`Identity` of a handler's ``current_user`` (a :class:`User`, a dict, or None)."""
    if user is None:
        return Identity(None, None, False)
    if isinstance(user, dict):
        username, name = user.get("username") or user.get("name"), user.get("name")
    else:
        username, name = getattr(user, "username", None), getattr(user, "display_name", None) or getattr(
            user, "name", None)
    username = str(username) if username is not None else None
    return Identity(username, str(name) if name is not None else None, username in agents)


SERVER_SIDE = Identity(None, None, False)
"""No request at all (a server extension, a collaboration room): decided as the extension's
``server_side_actor``."""

__all__ = ["ACTORS", "SERVER_SIDE", "GuardIdentityProvider", "Identity", "identity_of"]
