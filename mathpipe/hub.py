"""The Hugging Face Hub, for every stage that reads from it: pinned revisions and one download call.

    check_revision(spec.revision, f"{prefix}.revision", "model")    # in a config's validate()
    folder = download(repo, revision, "prepare.hub.openr1", repo_type="dataset", allow_patterns=[glob])

A download that fails for a reason the Hub client names (no network, offline mode with an empty
cache, an unknown or gated repository or revision, a malformed repository id) is bad input: one
`DataError` naming the parameter, repository and revision. Anything else is a bug and keeps its
traceback. Tokens come from the environment (HF_TOKEN), as huggingface_hub reads them.
"""

from __future__ import annotations

import re
from pathlib import Path

from mathpipe.config import check
from mathpipe.errors import DataError

COMMIT = re.compile(r"[0-9a-f]{40}")


def check_revision(revision: str, key: str, what: str) -> None:
    """A Hub source must be pinned to a commit, so that a run can be repeated."""
    check(COMMIT.fullmatch(revision) is not None, key,
          f"must be a 40-character commit hash so the {what} is pinned, got '{revision}'")


def download(repo_id: str, revision: str, key: str, **snapshot_options) -> Path:
    """huggingface_hub.snapshot_download at `revision`; the local folder it filled."""
    from huggingface_hub import snapshot_download  # imported lazily: only Hub runs need it
    from huggingface_hub.errors import HFValidationError

    try:
        return Path(snapshot_download(repo_id=repo_id, revision=revision, **snapshot_options))
    except (OSError, HFValidationError) as e:  # the client's HTTP, offline and not-found errors are OSErrors
        raise DataError(f"{key}: could not download {repo_id}@{revision}: {e}") from None
