"""Keeping credentials out of everything differland writes.

fsspec ``storage_options`` (``data.storage_options``) and a Ray ``runtime_env`` may carry
credentials: gcsfs ``token``, s3fs ``key``/``secret``/``token``, botocore ``aws_*`` keys, Azure
account keys and SAS tokens, passwords. The config is saved into ``config.yaml``, every
checkpoint, ``network.npz`` and the attributes of inference outputs, so what is saved is
:func:`safe_config_dict`: the config with every known credential removed. A key that looks like
a credential but is not known here is refused (:func:`scrub`, ``strict=True``) rather than saved,
before any work starts. Credentials belong in the environment (service accounts, workload
identity, AWS profiles; see docs/cloud.md), where nothing of them is saved.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from differland_dist.errors import ConfigError

#: Option and environment-variable names (lower case) whose values are credentials; they are
#: dropped from what is saved.
SECRET_KEYS = frozenset({
    # fsspec / gcsfs / s3fs / adlfs / http / ssh / ftp
    "token", "key", "secret", "password", "passwd", "passphrase", "session_token",
    "security_token", "access_token", "refresh_token", "id_token", "private_key",
    "private_key_id", "client_secret", "client_assertion", "account_key", "sas_token",
    "connection_string", "credential", "credentials", "authorization", "auth", "api_key",
    "apikey", "access_key", "secret_key", "pkey", "key_filename", "cookies",
    # botocore / AWS
    "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "aws_security_token",
    # environment variables of well-known SDKs (compared in lower case)
    "azure_storage_key", "azure_storage_account_key", "azure_storage_connection_string",
    "azure_storage_sas_token", "azure_client_secret", "google_application_credentials",
    "google_oauth_access_token", "gcs_oauth_token", "hf_token", "wandb_api_key",
    "github_token", "ray_auth_token",
})

#: gcsfs ``token`` values that name a way to find credentials rather than being one.
TOKEN_METHODS = frozenset({"anon", "google_default", "cache", "cloud", "browser"})

#: Names that look like credentials to :data:`SECRET_LOOKING` but are not.
NOT_SECRET = frozenset({"anon", "access", "tokenizers_parallelism", "token_methods"})

#: A name that looks like it holds a credential.
SECRET_LOOKING = re.compile(
    r"secret|passw|passphrase|token|credential|private|api_?key|access_?key|account_?key|"
    r"auth|signature|\bsas\b|_sas|sas_|cookie|bearer|_key$|^key_", re.IGNORECASE)

#: A URL with a password in it (``scheme://user:password@host``).
URL_WITH_PASSWORD = re.compile(r"://[^/@\s:]+:[^/@\s]+@")


def _names_a_method(token: Any) -> bool:
    return token is None or (isinstance(token, str) and token in TOKEN_METHODS)


def is_secret_key(name: str) -> bool:
    """Whether ``name`` is a known credential option / environment variable."""
    return str(name).lower() in SECRET_KEYS


def looks_secret(name: str) -> bool:
    """Whether ``name`` looks like it holds a credential (known or not)."""
    n = str(name).lower()
    return n in SECRET_KEYS or (n not in NOT_SECRET and bool(SECRET_LOOKING.search(n)))


def scrub(options: Mapping[str, Any] | None, where: str, strict: bool = True) -> dict:
    """A copy of ``options`` (nested mappings and lists too) without credentials.

    Known credential keys are dropped (a gcsfs ``token`` that names a method, such as
    ``"anon"`` or ``"google_default"``, is kept). With ``strict``, a key that looks like a
    credential but is not known, or a string holding a URL with a password, raises
    ConfigError naming ``where.key`` (never the value); without it they are dropped too.
    """

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, Mapping):
            out = {}
            for k, v in node.items():
                here = f"{path}.{k}"
                if is_secret_key(k):
                    if str(k).lower() == "token" and _names_a_method(v):
                        out[k] = v
                    continue
                if looks_secret(k):
                    if strict:
                        raise ConfigError(
                            f"{here}: looks like a credential and would be saved into the run "
                            "(config.yaml, checkpoints, outputs); give credentials through the "
                            "environment instead (service account, workload identity, AWS "
                            "profile; see docs/cloud.md)")
                    continue
                out[k] = walk(v, here)
            return out
        if isinstance(node, (list, tuple)):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(node)]
        if isinstance(node, str) and URL_WITH_PASSWORD.search(node):
            if strict:
                raise ConfigError(f"{path}: a URL with a password in it would be saved into the "
                                  "run; give credentials through the environment instead")
            return URL_WITH_PASSWORD.sub("://<redacted>@", node)
        return node

    return walk(dict(options or {}), where)


def safe_config_dict(config, strict: bool = True) -> dict:
    """``config.to_dict()`` as it may be saved: ``data.storage_options`` and ``ray.runtime_env``
    scrubbed (:func:`scrub`), and ``data.url`` free of passwords."""
    d = config.to_dict()
    d["data"]["storage_options"] = scrub(d["data"].get("storage_options"), "data.storage_options",
                                         strict)
    d["ray"]["runtime_env"] = scrub(d["ray"].get("runtime_env"), "ray.runtime_env", strict)
    d["data"]["url"] = scrub({"url": d["data"].get("url", "")}, "data", strict)["url"]
    return d
