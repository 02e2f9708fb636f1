"""How batchfn runs uv, which both apps use: the control app resolves environments with it,
scoring hosts build them.

uv may build packages from source (running their setup code), so it runs with its own
settings only (indexes, certificates, proxies), never the host's secrets.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

# Host variables uv keeps: none names or holds a credential of the host's.
UV_VARIABLES = frozenset({"PATH", "LANG", "SSL_CERT_FILE", "SSL_CERT_DIR",
                          "REQUESTS_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
                          "http_proxy", "https_proxy", "no_proxy"})
# uv's own settings an operator may give the app: a private index, a wheel folder, ...
UV_PREFIXES = ("UV_INDEX", "UV_EXTRA_INDEX", "UV_DEFAULT_INDEX", "UV_FIND_LINKS",
               "UV_NATIVE_TLS", "UV_HTTP_TIMEOUT", "UV_OFFLINE", "UV_PYTHON_DOWNLOADS",
               "UV_PYTHON_INSTALL_DIR", "UV_CONCURRENT")
# "1": scoring hosts may install uv-managed Pythons (versions other than the image's), and
# the control app accepts environments that pin one. Both apps read it.
MANAGED_PYTHONS_SETTING = "BATCHFN_MANAGED_PYTHONS"


def managed_pythons(environ: Mapping[str, str] | None = None) -> bool:
    """BATCHFN_MANAGED_PYTHONS: "1" on, unset/empty/"0" off; ValueError for anything else
    (a typo would silently refuse or build every other Python)."""
    text = (os.environ if environ is None else environ).get(MANAGED_PYTHONS_SETTING, "").strip()
    if text not in ("", "0", "1"):
        raise ValueError(f"{MANAGED_PYTHONS_SETTING} must be 0 or 1, not {text!r}")
    return text == "1"


def uv_environment(environ: Mapping[str, str], extra: Mapping[str, str] | None = None
                   ) -> dict[str, str]:
    """The environment uv runs with: the allowed host variables, then `extra`."""
    env = {k: v for k, v in environ.items() if k in UV_VARIABLES or k.startswith(UV_PREFIXES)}
    env.setdefault("PATH", os.defpath)
    env.update(extra or {})
    return env


def uv_binary() -> str | None:
    """The uv executable: the one the pinned `uv` package installed beside this
    interpreter, or in the scripts folder of the environment that holds that package (an
    interpreter that imports it from another environment's site-packages), else one on
    PATH (None: none)."""
    beside = shutil.which("uv", path=os.path.dirname(sys.executable))
    if beside:
        return beside
    package = importlib.util.find_spec("uv")
    if package is not None and package.origin:
        folder = Path(package.origin).parent  # <prefix>/lib/pythonX.Y/site-packages/uv
        installed = shutil.which("uv", path=str(folder.parents[3] / "bin"))
        if installed:
            return installed
    return shutil.which("uv")
