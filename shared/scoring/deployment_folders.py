"""The folders of one deployment's workers on a scoring host, out of other deployments' reach.

Under the work folder (and the scratch folder in RAM), where workers run as their
deployment's own user (worker_users.py):

    assets/                     root 0700: the host's downloads, reached by no worker
    deployments/                root 0711: names cannot be listed
      <user>/                   root, group <user>, 0750: only that user enters
        home/  tmp/             <user> 0700: HOME and TMPDIR
        assets/<kind>/...       the deployment's model and code: links to the host's
                                downloads (root's, read-only), made by the host
    outputs/                    root 0711
      <job>/                    <user> 0700: AZUREML_BI_OUTPUT_PATH of the job
    <scratch>/<user>/           root, group <user>, 0750
      logs/  inputs/            <user> 0700: attempt logs, mini-batch inputs

Nothing the host creates lies inside a folder a worker can write to, so a worker cannot
steer the host's writes elsewhere with a link. Workers that run as the host's own user (a
host that does not run as root) get the same layout under `host/`, unshared and unchowned.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from shared.scoring.isolation import WorkerAccount, prepare_worker_folder

HOST_SEGMENT = "host"  # the folder of workers that run as the host's own user


@dataclass(frozen=True)
class DeploymentFolders:
    """Where one deployment's workers live and write."""

    base: Path  # the deployment's folder under <work>/deployments
    home: Path
    temp: Path
    logs: Path
    scratch: Path  # <scratch>/<user>: its `inputs` folder takes mini-batch inputs
    account: WorkerAccount | None

    def inputs(self, root: Path) -> Path:
        """The deployment's input folder under `root` (the RAM scratch or the work folder),
        made if needed: the worker makes the mini-batch folders inside."""
        if root == self.scratch.parent:
            return prepare_worker_folder(self.scratch / "inputs", self.account)
        folder = _shared_with(root / self.base.name, self.account)
        return prepare_worker_folder(folder / "inputs", self.account)


def deployment_folders(work_dir: Path, scratch: Path,
                       account: WorkerAccount | None) -> DeploymentFolders:
    """Make (or find) the folders of the workers that run as `account` (None: the host's
    own user)."""
    segment = HOST_SEGMENT if account is None else account.name
    base = _shared_with(work_dir / "deployments" / segment, account)
    own_scratch = _shared_with(scratch / segment, account)
    return DeploymentFolders(
        base=base,
        home=prepare_worker_folder(base / "home", account),
        temp=prepare_worker_folder(base / "tmp", account),
        logs=prepare_worker_folder(own_scratch / "logs", account),
        scratch=own_scratch,
        account=account,
    )


def hide_contents(folder: Path) -> Path:
    """Make `folder` (root's) passable but not listable by workers: 0711."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o711)
    return folder


def keep_private(folder: Path) -> Path:
    """Make `folder` (root's) out of every worker's reach: 0700."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    return folder


def asset_view(source: Path, folders: DeploymentFolders, relative: Path) -> Path:
    """The deployment's own view of the downloaded asset folder `source`: the same tree
    under its folder (`relative` names where), its files hard links to the downloads (no
    copy; root's and read-only to the worker). Workers of the host's own user read the
    downloads themselves."""
    if folders.account is None:
        return source
    target = folders.base / "assets" / relative
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
    try:
        for folder, _, names in os.walk(source):
            inner = staging / os.path.relpath(folder, source)
            inner.mkdir(parents=True, exist_ok=True)
            for name in names:
                item = os.path.join(folder, name)
                mode = os.lstat(item).st_mode
                os.chmod(item, (mode | 0o444) & 0o755)  # readable through the link
                try:
                    os.link(item, inner / name)
                except OSError:  # another filesystem: a copy
                    shutil.copy2(item, inner / name)
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():  # another process of this host made it first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _shared_with(folder: Path, account: WorkerAccount | None) -> Path:
    """`folder`, root's, that only `account`'s group may enter and read (0750), in a
    parent that workers may pass but not list (0711)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.mkdir(exist_ok=True)
    if account is not None:
        os.chmod(folder.parent, 0o711)
        os.chown(folder, 0, account.gid, follow_symlinks=False)
        os.chmod(folder, 0o750, follow_symlinks=False)
    return folder
