"""Who is asking: the identity that public mode's quotas and its cancel/retry checks key on.

Never the Gradio session hash: a client chooses it and a new connection gets a fresh one for nothing, so
14 clients filled a shared queue in 26 s. Instead:

- on a Hugging Face Space with OAuth (`hf_oauth: true` in the README's front matter, which sets
  OAUTH_CLIENT_ID), the logged-in user's username; browsing needs no login, submitting does;
- elsewhere, the client's network address, hashed. A reverse proxy's X-Forwarded-For (which any client
  can send) is honoured only from the proxy addresses the operator lists in FORWARDED_ALLOW_IPS, uvicorn's
  own setting, which `moduletune serve` defaults to none (uvicorn's default trusts any local process).
"""

from __future__ import annotations

import hashlib
import os

OAUTH_ENV = "MODULETUNE_PUBLIC_OAUTH"  # on / off; unset: on where the Space provides OAuth (OAUTH_CLIENT_ID)
TRUSTED_PROXIES_ENV = "FORWARDED_ALLOW_IPS"  # uvicorn's: the proxies whose X-Forwarded-For it applies


class LoginRequired(ValueError):
    """A public Space with OAuth: this action needs a Hugging Face login."""


def oauth_enabled(environ=None) -> bool:
    """Whether visitors are identified by Hugging Face OAuth (MODULETUNE_PUBLIC_OAUTH, else OAUTH_CLIENT_ID)."""
    env = os.environ if environ is None else environ
    setting = str(env.get(OAUTH_ENV, "")).strip().lower()
    if setting:
        return setting in ("1", "true", "yes", "on")
    return bool(env.get("OAUTH_CLIENT_ID"))


def trust_no_proxy_by_default(environ=None) -> None:
    """Unless the operator listed proxies, let uvicorn apply no X-Forwarded-For (call before launching)."""
    env = os.environ if environ is None else environ
    env.setdefault(TRUSTED_PROXIES_ENV, "")


def client_address(request) -> str | None:
    """The address a request came from, as uvicorn resolved it (the socket's peer, or a trusted proxy's
    X-Forwarded-For entry)."""
    return getattr(getattr(request, "client", None), "host", None) if request is not None else None


def visitor(request, profile=None, oauth: bool = False) -> str:
    """The submitter a request acts as: 'hf:<username>' when logged in, else 'web-<digest of the address>'.

    With oauth on and nobody logged in, LoginRequired: a public Space accepts runs from logged-in users only."""
    username = getattr(profile, "username", None)
    if username:
        return f"hf:{username}"
    if oauth:
        raise LoginRequired(
            "log in with Hugging Face (the button at the top of the page) to queue, cancel or "
            "retry runs in this public Space; browsing needs no login"
        )
    address = client_address(request)
    return f"web-{hashlib.sha256(address.encode()).hexdigest()[:12]}" if address else "web"
