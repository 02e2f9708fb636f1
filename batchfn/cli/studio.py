"""`batchfn studio`: open the web console of the current target in a browser.

The key travels in the URL fragment (`#key=...`), which browsers never send to a server;
the page moves it to the tab's sessionStorage and removes it from the address bar. The
URL with the key is printed only when asked (`--no-browser`).
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
import webbrowser

import click

from batchfn.cli.common import get_client
from batchfn.client import BatchfnClient

STUDIO_PATH = "/api/studio/"
CHECK_TIMEOUT = 10.0


def studio_url(base_url: str, key: str | None, job: str | None = None) -> str:
    """The console's URL on `base_url`, with the key (and the job to show) in the fragment."""
    fragment = {}
    if key:
        fragment["key"] = key
    if job:
        fragment["view"] = "/jobs/" + urllib.parse.quote(job, safe="")
    url = base_url.rstrip("/") + STUDIO_PATH
    return url + ("#" + urllib.parse.urlencode(fragment) if fragment else "")


def check_served(base_url: str) -> None:
    """Fail clearly when the target is down or does not serve the console."""
    url = base_url.rstrip("/") + STUDIO_PATH
    try:
        with urllib.request.urlopen(url, timeout=CHECK_TIMEOUT):
            return
    except urllib.error.HTTPError as exc:
        raise click.ClickException(
            f"{url} answered {exc.code}: this batchfn app does not serve the console "
            "(an older version, or a scoring-only app)") from None
    except OSError as exc:
        reason = getattr(exc, "reason", exc)
        raise click.ClickException(f"cannot reach {base_url}: {reason} (is `make serve` "
                                   "running, or are --url/BATCHFN_URL right?)") from None


def open_page(client: BatchfnClient, *, job: str | None = None) -> bool:
    """Open the console (a job's page) in a browser with the key; where none opens, print
    the page's URL without the key (the console asks for it). True when one opened."""
    url = studio_url(client.url, client.transport.key, job)
    if webbrowser.open(url):
        click.echo(f"opened {studio_url(client.url, None, job)} in batchfn studio", err=True)
        return True
    click.echo(f"no browser could be started: open {studio_url(client.url, None, job)} "
               "(the console asks for the key; `batchfn studio --no-browser` prints a URL "
               "with it)", err=True)
    return False


@click.command("studio")
@click.option("--job", "-j", "job", help="Open this job's page.")
@click.option("--no-browser", is_flag=True,
              help="Print the console's URL (it holds the key) instead of opening a browser.")
def studio(job: str | None, no_browser: bool) -> None:
    """Open batchfn studio, the web console, for the current target with its key."""
    client = get_client()
    check_served(client.url)
    if no_browser:
        click.echo(studio_url(client.url, client.transport.key, job))
        return
    if not client.transport.key:
        click.echo(f"no key for {client.url}: the console will ask for one", err=True)
    if not open_page(client, job=job):
        raise SystemExit(1)
