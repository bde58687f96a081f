"""Where an artefact comes from and goes to: a local folder or a Hugging Face Hub repository.

Every loader of iis-hf (concept banks, interpretation heads, models) takes "a folder or a Hub id";
this module is the one place that tells them apart and downloads the named files of a repository
(only those files: never a pickle the repository may also hold).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import ModelHubMixin

from .errors import first_line


def looks_like_hub_id(name: str | os.PathLike | None) -> bool:
    """Whether `name` can be a Hub repository id rather than a local path.

    A Hub id is ``name`` or ``owner/name``: no leading ``.`` or ``/``, at most one ``/``, and not an
    existing local path.

    >>> looks_like_hub_id("google/vit-base-patch16-224"), looks_like_hub_id("./model"), looks_like_hub_id("a/b/c")
    (True, False, False)
    """
    if not name:
        return False
    name = os.fspath(name)
    return (
        not os.path.exists(name)
        and not os.path.isabs(name)
        and not name.startswith(".")
        and name.count("/") <= 1
    )


def public_name(name: str | os.PathLike) -> str:
    """How a model, dataset or bank is named in anything iis-hf writes: a Hub id as given, a local
    folder by its base name, a Hub cache snapshot by the repository id it holds.

    Records travel (a pushed repository carries its card and JSON): the machine's paths must not.

    >>> public_name("google/vit-base-patch16-224"), public_name("/home/me/runs/vit-tiny/")
    ('google/vit-base-patch16-224', 'vit-tiny')
    >>> public_name("/home/me/.cache/huggingface/hub/models--google--vit/snapshots/0a1b")
    'google/vit'
    """
    text = os.fspath(name)
    if not text or (looks_like_hub_id(text) and not names_local_path(text)):
        return text
    parts = [p for p in re.split(r"[\\/]+", text) if p]
    for i, part in enumerate(parts[:-1]):  # <cache>/models--owner--name/snapshots/<commit>[/...]
        kind, _, repo = part.partition("--")
        if kind in ("models", "datasets", "spaces") and repo and parts[i + 1] == "snapshots":
            return repo.replace("--", "/")
    base = parts[-1] if parts else ""
    if base in ("", ".", ".."):  # "." or "..": the folder it stands for
        base = Path(text).resolve().name
    return base or text


def names_local_path(text: str) -> bool:
    """Whether a recorded string names a place on this machine: an absolute or home path, or a
    relative path that exists here (a plain word or a Hub id does not)."""
    if os.path.isabs(text) or re.match(r"~[\w.-]*([\\/]|$)|[A-Za-z]:[\\/]", text):
        return True
    return ("/" in text or "\\" in text) and (text.startswith(".") or os.path.exists(text))


def public_record(value: Any) -> Any:
    """A copy of a JSON-like record in which every string naming a local path is its `public_name`.

    Applied where a record is written (iis.json, concept_bank.json, the model card, training_args.json),
    so a file that may be pushed names no folder of this machine; everything else is kept as it is.
    """
    if isinstance(value, str):
        return public_name(value) if names_local_path(value) else value
    if isinstance(value, os.PathLike):
        return public_name(value)
    if isinstance(value, dict):
        return {key: public_record(item) for key, item in value.items()}
    if isinstance(value, list) or type(value) is tuple:
        return type(value)(public_record(item) for item in value)
    return value


def download_files(
    repo_id: str,
    names: Sequence[str],
    *,
    what: str,
    subfolder: str | None = None,
    revision: str | None = None,
    token: str | None = None,
) -> Path:
    """Download `names` from a Hub repository; return the local folder holding them.

    Raises a ValueError naming `what` when `repo_id` is neither a local folder nor a reachable
    repository holding those files.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HFValidationError

    if not looks_like_hub_id(repo_id):
        raise ValueError(f"{what} folder {repo_id} does not exist")
    try:
        paths = [
            hf_hub_download(repo_id, name, subfolder=subfolder, revision=revision, token=token)
            for name in names
        ]
    except HFValidationError as err:
        raise ValueError(f"{what} {repo_id!r} is neither a local folder nor a Hub repository id") from err
    except Exception as err:  # network errors, a missing repository or file: one clear message
        raise ValueError(
            f"{what} {repo_id!r} is not a local folder, and its files {list(names)} could not be downloaded "
            f"from the Hub ({first_line(err)})"
        ) from err
    return Path(paths[0]).parent


class ArtefactHubMixin(ModelHubMixin):
    """`huggingface_hub.ModelHubMixin` for artefacts that may share a folder with a model.

    `ModelHubMixin.save_pretrained` deletes and rewrites `config.json`, which in a model's folder is the
    backbone's; here `save_pretrained` writes the artefact's files (`_save_pretrained`) and a model card
    (unless the folder has one), and never touches `config.json`. `push_to_hub` is the mixin's: it saves
    into a temporary folder, with a card naming the repository, and uploads it as one commit.
    """

    commit_message = "Upload"  # the default commit message of push_to_hub

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *,
        state_dict: dict | None = None,
        repo_id: str | None = None,
        push_to_hub: bool = False,
        model_card: bool = True,
        model_card_kwargs: dict[str, Any] | None = None,
        **push_to_hub_kwargs,
    ) -> str | None:
        """Write the files and a model card (README.md, unless one exists); push when asked.

        `state_dict` replaces a module's own state (e.g. one gathered by FSDP/DeepSpeed); `model_card`
        False writes no card (a Trainer writes its own).
        """
        push_to_hub_kwargs.pop("config", None)  # ModelHubMixin.push_to_hub passes it; we keep no config.json
        save_directory = Path(save_directory)
        if state_dict is None:
            self._save_pretrained(save_directory)
        else:  # only a module's _save_pretrained (IISModelForImageClassification's) takes a state
            save_module: Callable[..., None] = self._save_pretrained
            save_module(save_directory, state_dict=state_dict)
        self.write_model_card(save_directory, model_card, {"repo_id": repo_id, **(model_card_kwargs or {})})
        if push_to_hub:
            return self.push_to_hub(
                repo_id or save_directory.name, model_card_kwargs=model_card_kwargs, **push_to_hub_kwargs
            )
        return None

    def write_model_card(self, save_directory: Path, model_card: bool, card_kwargs: dict[str, Any]) -> None:
        from .files import write_text_atomic

        if model_card and not (save_directory / "README.md").exists():
            write_text_atomic(save_directory / "README.md", str(self.generate_model_card(**card_kwargs)))

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        model_card_kwargs: dict[str, Any] | None = None,
        **kwargs,
    ) -> str:
        """Save into a temporary folder (its card naming `repo_id`) and upload it as one commit."""
        return super().push_to_hub(
            repo_id,
            commit_message=commit_message or self.commit_message,
            model_card_kwargs={"repo_id": repo_id, **(model_card_kwargs or {})},
            **kwargs,
        )
