"""A small loopback stand-in for the Hugging Face Hub, so tests can push and pull for real.

The Hub itself is out of reach in the test environment. `fake_hub()` starts a threaded HTTP server
on 127.0.0.1 that speaks enough of the Hub's HTTP API for the `huggingface_hub` client (2.x) to
create repositories, commit files and download them again, and it records what it receives:

    from hub_server import fake_hub

    with fake_hub() as hub:                  # the client (and transformers) now talk to `hub.url`
        bank.push_to_hub("user/bank")
        hub.files("user/bank")               # {path: bytes} on `main`, after the last commit
        hub.commits("user/bank")             # [{"oid", "message", "description", "files", "deleted", "branch"}]
        ConceptBank.from_pretrained("user/bank")

Or as a pytest fixture: `from hub_server import fake_hub_fixture  # noqa: F401` in a test module,
then ask for `hub`. Also on the FakeHub: `hub.url`, `hub.env` (variables for a subprocess),
`hub.repos(repo_type=None)`, `hub.files(repo_id, repo_type="model", revision="main")` (a branch or
a commit id), `hub.add_repo(repo_id, files)` (seed a repo without HTTP), `hub.requests` (every
`(method, path)` received) and `hub.unhandled` (requests it had no answer for: assert it is empty).

What it implements (repo types model, dataset and space: `/api/{type}s/...`):

    POST   /api/repos/create                     create_repo (409 when it exists: exist_ok works)
    DELETE /api/repos/delete                     delete_repo
    GET    /api/whoami-v2                        whoami
    POST   /api/validate-yaml                    card metadata check before a README.md commit
    GET    /api/agent-harnesses                  an empty registry (the client asks for it once online)
    GET    /api/{type}s/{repo}[/revision/{rev}]  model_info / dataset_info / space_info / repo_info
    GET    /api/{type}s/{repo}/tree/{rev}[/{path}]   list_repo_tree / list_repo_files (recursive, expand)
    POST   /api/{type}s/{repo}/paths-info/{rev}  get_paths_info
    GET    /api/{type}s/{repo}/refs              list_repo_refs
    GET    /api/{type}s/{repo}/commits/{rev}     list_repo_commits
    POST   /api/{type}s/{repo}/branch/{branch}   create_branch (DELETE: delete_branch)
    POST   /api/{type}s/{repo}/preupload/{rev}   upload mode per file: always "regular"
    POST   /api/{type}s/{repo}/commit/{rev}      the NDJSON commit: base64 files, deletedFile, deletedFolder
    HEAD/GET /[datasets/|spaces/]{repo}/resolve/{rev}/{path}   hf_hub_download (Range supported)

Every file is answered "regular" by the preupload endpoint, so the client embeds its bytes (base64)
in the commit payload, for `.safetensors` files and large files too (the client honours the answer
whatever the name or size): no LFS batch API and no Xet transfer is ever involved, as the client
only sends files answered "lfs" through hf_xet. With hf_xet installed, `upload_folder` goes through
the client's streamed pipeline (`_upload_pipeline.py`, which opens a local XetSession but sends it
nothing); `fake_hub(disable_xet=True)` sets `HF_HUB_DISABLE_XET` so it takes the classic
`create_commit` path instead. `.gitignore` rules (sent by the client, or a `.gitignore` in the repo)
are applied roughly (fnmatch) to answer `shouldIgnore`.
A commit holding an `lfsFile` (never sent after a "regular" answer) is refused with 422. Pull
requests (`create_pr=True`) and tags are not implemented: such requests are answered 501 and
listed in `hub.unhandled`, like any other unknown endpoint.

Like the Hub, a new repository starts with an "initial commit" holding `.gitattributes` (so
`hub.files()` lists it; `hub.commits()[0]` is that commit). Preupload reports the blob id of files
already there, so the client skips unchanged files and makes no empty commit, as on the Hub.
Writes need an `Authorization: Bearer ...` header (401 otherwise); private repos are invisible
(404) to requests without one.

Redirecting the client in-process (restored on exit, like monkeypatch):
  - environment: HF_ENDPOINT, HF_TOKEN (a dummy token), HF_HUB_OFFLINE=0, TRANSFORMERS_OFFLINE=0,
    HF_DATASETS_OFFLINE=0, HF_EVALUATE_OFFLINE=0, HF_HUB_DISABLE_TELEMETRY=1, HF_HUB_CACHE and
    HF_XET_CACHE (in a temporary folder: hf_xet writes its logs there); it removes
    HUGGING_FACE_HUB_TOKEN and HF_OIDC_RESOURCE;
  - huggingface_hub.constants: ENDPOINT, HUGGINGFACE_CO_URL_TEMPLATE, HF_URL_HOSTS, HF_HUB_OFFLINE
    (read by `is_offline_mode()`, which transformers uses too), HF_HUB_DISABLE_TELEMETRY,
    HF_HUB_DISABLE_XET, HF_HUB_DISABLE_IMPLICIT_TOKEN, HF_HUB_CACHE and HUGGINGFACE_HUB_CACHE (a
    temporary cache per server, so downloads never mix with the user's cache or another test's);
  - huggingface_hub.hf_api.api.endpoint: the module-level HfApi behind `huggingface_hub.create_repo`,
    `upload_file` (used by ModelCard.push_to_hub), ...;
  - huggingface_hub.utils._http._HUB_ORIGINS (hosts trusted with the token on redirects);
  - huggingface_hub.utils._detect_agent._registry: pinned to the empty registry, otherwise the
    first online request fetches `/api/agent-harnesses` and writes it under HF_HOME;
  - `ENDPOINT` imported by name in huggingface_hub.utils._git_credential and huggingface_hub.cli.auth;
  - transformers.utils.hub._hf_api: the cached HfApi (its endpoint is fixed when it is first built)
    is reset so a fresh one is built against the fake Hub, and the old one is put back on exit;
  - datasets.config (HF_ENDPOINT, HUB_DATASETS_URL, HF_HUB_OFFLINE, HF_DATASETS_OFFLINE) and
    evaluate.config (HF_ENDPOINT, HF_LIST_ENDPOINT, HUB_EVALUATE_URL, HF_EVALUATE_OFFLINE), when
    those packages are imported.
HfApi objects built before entering keep their own endpoint (build them inside). Modules imported
for the first time inside the context are put back to their environment's values on exit
(transformers' cached HfApi, datasets.config, evaluate.config).
The shared httpx client of huggingface_hub is closed on exit (its pooled connections point at the
stopped server). For code run in a subprocess, `fake_hub(patch=False)` only starts the server and
`hub.env` holds the environment variables to give the child.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

__all__ = ["FakeHub", "fake_hub", "fake_hub_fixture"]

DEFAULT_USER = "user"
DEFAULT_TOKEN = "hf_fake_token_for_tests"
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
GITATTRIBUTES = (
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
)


def git_blob_oid(data: bytes) -> str:
    """The git blob id of `data` (what the Hub reports as a regular file's oid and ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Commit:
    oid: str
    message: str
    description: str
    added: list[str]
    deleted: list[str]
    branch: str
    parent: str | None
    date: str
    tree: dict[str, bytes]  # the repository's files after this commit

    def as_dict(self) -> dict[str, Any]:
        return {
            "oid": self.oid,
            "message": self.message,
            "description": self.description,
            "files": list(self.added),
            "deleted": list(self.deleted),
            "branch": self.branch,
        }


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool
    created_at: str
    sdk: str | None = None
    commits: list[Commit] = field(default_factory=list)  # every commit, in order, all branches
    branches: dict[str, str] = field(default_factory=dict)  # branch -> head commit oid

    def commit(self, oid: str) -> Commit:
        return next(c for c in self.commits if c.oid == oid)

    def resolve(self, revision: str) -> Commit | None:
        if revision in self.branches:
            return self.commit(self.branches[revision])
        if len(revision) >= 7:
            for c in self.commits:
                if c.oid.startswith(revision.lower()):
                    return c
        return None

    def history(self, oid: str) -> list[Commit]:
        """Commits reachable from `oid`, newest first."""
        out, cur = [], self.commit(oid)
        while cur is not None:
            out.append(cur)
            cur = self.commit(cur.parent) if cur.parent else None
        return out


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class FakeHub:
    """The server's state and the helpers tests read it with (thread-safe)."""

    def __init__(self, user: str = DEFAULT_USER, token: str = DEFAULT_TOKEN):
        self.user = user
        self.token = token
        self.url = ""  # set once the server listens
        self.env: dict[str, str] = {}
        self.cache_dir = ""
        self.requests: list[tuple[str, str]] = []  # (method, path?query) of every request
        self.unhandled: list[tuple[str, str]] = []  # requests the fake Hub had no answer for
        self._repos: dict[tuple[str, str], Repo] = {}
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ what tests read
    def repos(self, repo_type: str | None = None) -> list[str]:
        with self._lock:
            return sorted(rid for (rtype, rid) in self._repos if repo_type in (None, rtype))

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        with self._lock:
            try:
                return self._repos[(repo_type, repo_id)]
            except KeyError:
                raise KeyError(f"the fake Hub has no {repo_type} repo {repo_id!r}: {self.repos()}") from None

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        """path -> bytes of the repository at `revision` (a branch or a commit id)."""
        with self._lock:
            commit = self.repo(repo_id, repo_type).resolve(revision)
            if commit is None:
                raise KeyError(f"{repo_id} has no revision {revision!r}")
            return dict(commit.tree)

    def commits(self, repo_id: str, repo_type: str = "model") -> list[dict[str, Any]]:
        """Every commit received, oldest first: {oid, message, description, files, deleted, branch}."""
        with self._lock:
            return [c.as_dict() for c in self.repo(repo_id, repo_type).commits]

    def add_repo(
        self, repo_id: str, files: dict[str, bytes] | None = None, repo_type: str = "model", private=False
    ) -> None:
        """Seed a repository directly (no HTTP), e.g. to test downloads alone."""
        with self._lock:
            repo = self._create(repo_id, repo_type, private)
            if files:
                self._commit(repo, "main", "Seed files", "", dict(files), [], [])

    # ------------------------------------------------------------------ state changes
    def _create(self, repo_id: str, repo_type: str, private: bool, sdk: str | None = None) -> Repo:
        key = (repo_type, repo_id)
        if key in self._repos:
            raise HubError(409, f"You already created this {repo_type} repo", headers={"url": repo_id})
        repo = Repo(repo_id, repo_type, private, _now(), sdk=sdk)
        self._repos[key] = repo
        initial = Commit(
            oid=self._new_oid(repo_id),
            message="initial commit",
            description="",
            added=[".gitattributes"],
            deleted=[],
            branch="main",
            parent=None,
            date=_now(),
            tree={".gitattributes": GITATTRIBUTES},
        )
        repo.commits.append(initial)
        repo.branches["main"] = initial.oid
        return repo

    @staticmethod
    def _new_oid(seed: str) -> str:
        return hashlib.sha1(f"{seed}:{uuid.uuid4().hex}:{time.time_ns()}".encode()).hexdigest()

    def _commit(
        self,
        repo: Repo,
        branch: str,
        message: str,
        description: str,
        added: dict[str, bytes],
        deleted_files: list[str],
        deleted_folders: list[str],
    ) -> Commit:
        head = repo.commit(repo.branches[branch])
        tree = dict(head.tree)
        deleted = []
        for path in deleted_files:
            if path not in tree:
                raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            del tree[path]
            deleted.append(path)
        for folder in deleted_folders:
            prefix = folder.rstrip("/") + "/"
            gone = [p for p in tree if p.startswith(prefix)]
            if not gone:
                raise HubError(404, f"A folder with this name doesn't exist: {folder}", "EntryNotFound")
            for p in gone:
                del tree[p]
            deleted.extend(gone)
        tree.update(added)
        commit = Commit(
            self._new_oid(repo.repo_id),
            message,
            description,
            list(added),
            deleted,
            branch,
            head.oid,
            _now(),
            tree,
        )
        repo.commits.append(commit)
        repo.branches[branch] = commit.oid
        return commit


# ---------------------------------------------------------------------- HTTP layer
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"
    timeout = 30  # an idle keep-alive connection frees its thread after this long
    hub: FakeHub  # set on the subclass made per server

    def log_message(self, format, *args):  # silence the default stderr access log
        pass

    # one entry point for every method
    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        hub = self.hub
        split = urlsplit(self.path)
        self.query = parse_qs(split.query)
        self.body = self._read_body()
        with hub._lock:
            hub.requests.append((method, self.path))
        try:
            with hub._lock:
                status, headers, body = _route(hub, self, method, split.path)
        except HubError as err:
            status, body = err.status, json.dumps({"error": err.message}).encode()
            headers = {"Content-Type": "application/json", "X-Error-Message": err.message, **err.headers}
            if err.code:
                headers["X-Error-Code"] = err.code
            if status == 501:
                with hub._lock:
                    hub.unhandled.append((method, self.path))
        except Exception as err:  # a bug in the fake Hub: answer 500 with the reason
            status, headers = 500, {"Content-Type": "application/json"}
            body = json.dumps({"error": f"fake Hub error: {type(err).__name__}: {err}"}).encode()
        self.send_response(status)
        headers.setdefault("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)

    def json(self) -> Any:
        return json.loads(self.body or b"{}")

    @property
    def authenticated(self) -> bool:
        return self.headers.get("Authorization", "").startswith("Bearer ")


def _json(data: Any, status: int = 200, headers: dict | None = None):
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(data).encode()


def _route(hub: FakeHub, req: _Handler, method: str, path: str):
    parts = [unquote(p) for p in path.split("/")[1:]]  # split before unquoting: %2F stays inside a part
    if parts[:1] == ["api"]:
        return _route_api(hub, req, method, parts[1:])
    # /[datasets/|spaces/]{ns}/{name}/resolve/{rev}/{path...}
    repo_type = "model"
    if parts and parts[0] in ("datasets", "spaces"):
        repo_type, parts = REPO_TYPES[parts[0]], parts[1:]
    if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
        return _resolve(hub, req, repo_type, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
    raise HubError(501, f"the fake Hub does not implement {method} {path}")


def _route_api(hub: FakeHub, req: _Handler, method: str, parts: list[str]):
    if parts == ["whoami-v2"] and method == "GET":
        if not req.authenticated:
            raise HubError(401, "Invalid credentials in Authorization header")
        return _json(
            {
                "type": "user",
                "id": "0" * 24,
                "name": hub.user,
                "fullname": "Fake User",
                "email": None,
                "emailVerified": False,
                "isPro": False,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "fake", "role": "write"}},
            }
        )
    if parts == ["validate-yaml"] and method == "POST":
        return _json({"errors": [], "warnings": []})
    if parts == ["agent-harnesses"] and method == "GET":
        return _json({"standardEnvVars": [], "harnesses": {}})
    if parts == ["repos", "create"] and method == "POST":
        return _create_repo(hub, req)
    if parts == ["repos", "delete"] and method == "DELETE":
        _require_auth(req)
        payload = req.json()
        repo_id = f"{payload.get('organization') or hub.user}/{payload['name']}"
        if hub._repos.pop((payload.get("type") or "model", repo_id), None) is None:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return _json({})
    if len(parts) >= 3 and parts[0] in REPO_TYPES:
        repo_type, repo_id, rest = REPO_TYPES[parts[0]], f"{parts[1]}/{parts[2]}", parts[3:]
        repo = _get_repo(hub, req, repo_type, repo_id)
        action = rest[0] if rest else ""
        if method == "GET" and (not rest or (action == "revision" and len(rest) == 2)):
            return _repo_info(hub, repo, rest[1] if rest else "main")
        if method == "GET" and action == "tree" and len(rest) >= 2:
            return _tree(repo, req, rest[1], "/".join(rest[2:]))
        if method == "POST" and action == "paths-info" and len(rest) == 2:
            return _paths_info(repo, req, rest[1])
        if method == "GET" and rest == ["refs"]:
            branches = [
                {"name": b, "ref": f"refs/heads/{b}", "targetCommit": o} for b, o in repo.branches.items()
            ]
            return _json({"branches": branches, "converts": [], "tags": [], "pullRequests": []})
        if method == "GET" and action == "commits" and len(rest) == 2:
            return _list_commits(repo, rest[1])
        if action == "branch" and len(rest) == 2 and method in ("POST", "DELETE"):
            return _branch(repo, req, method, rest[1])
        if method == "POST" and action == "preupload" and len(rest) == 2:
            return _preupload(repo, req, rest[1])
        if method == "POST" and action == "commit" and len(rest) == 2:
            return _create_commit(hub, repo, req, rest[1])
    raise HubError(501, f"the fake Hub does not implement {method} /api/{'/'.join(parts)}")


def _require_auth(req: _Handler) -> None:
    if not req.authenticated:
        raise HubError(401, "You must be authenticated to do this (no Authorization header)")


def _get_repo(hub: FakeHub, req: _Handler, repo_type: str, repo_id: str) -> Repo:
    repo = hub._repos.get((repo_type, repo_id))
    if repo is None or (repo.private and not req.authenticated):
        raise HubError(404, f"Repository not found: {repo_type} {repo_id}", "RepoNotFound")
    return repo


def _get_commit(repo: Repo, revision: str) -> Commit:
    commit = repo.resolve(revision)
    if commit is None:
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
    return commit


def _create_repo(hub: FakeHub, req: _Handler):
    _require_auth(req)
    payload = req.json()
    repo_type = payload.get("type") or "model"
    if repo_type not in URL_PREFIX:
        raise HubError(400, f"unsupported repo type {repo_type!r}")
    if repo_type == "space" and not payload.get("sdk"):
        raise HubError(400, "a Space needs an sdk")
    repo_id = f"{payload.get('organization') or hub.user}/{payload['name']}"
    private = payload.get("visibility", "private" if payload.get("private") else "public") != "public"
    url = f"{hub.url}/{URL_PREFIX[repo_type]}{repo_id}"
    try:
        hub._create(repo_id, repo_type, private, sdk=payload.get("sdk"))
    except HubError as err:
        return _json({"error": err.message, "url": url}, status=409)
    return _json({"url": url, "name": repo_id, "id": uuid.uuid4().hex[:24]})


def _card_data(tree: dict[str, bytes]) -> dict | None:
    text = tree.get("README.md", b"").decode("utf-8", "replace")
    if not text.startswith("---"):
        return None
    import yaml

    try:
        data = yaml.safe_load(text.split("---", 2)[1])
    except (yaml.YAMLError, IndexError):
        return None
    return data if isinstance(data, dict) else None


def _repo_info(hub: FakeHub, repo: Repo, revision: str):
    commit = _get_commit(repo, revision)
    card = _card_data(commit.tree) or {}
    tags = list(card.get("tags") or [])
    info: dict[str, Any] = {
        "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
        "id": repo.repo_id,
        "author": repo.repo_id.split("/")[0],
        "sha": commit.oid,
        "lastModified": commit.date,
        "createdAt": repo.created_at,
        "private": repo.private,
        "disabled": False,
        "gated": False,
        "downloads": 0,
        "likes": 0,
        "tags": tags,
        "cardData": card or None,
        "siblings": [
            {"rfilename": p, "size": len(d), "blobId": git_blob_oid(d)}
            for p, d in sorted(commit.tree.items())
        ],
    }
    if repo.repo_type == "model":
        info["modelId"] = repo.repo_id
        info["library_name"] = card.get("library_name")
        info["pipeline_tag"] = card.get("pipeline_tag")
        if "config.json" in commit.tree:
            with contextlib.suppress(ValueError):
                config = json.loads(commit.tree["config.json"])
                info["config"] = {k: config[k] for k in ("architectures", "model_type") if k in config}
    if repo.repo_type == "space":
        info["sdk"] = repo.sdk
    return _json(info)


def _entry(path: str, data: bytes | None, commit: Commit | None = None, repo: Repo | None = None) -> dict:
    if data is None:
        entry = {"type": "directory", "oid": hashlib.sha1(f"tree:{path}".encode()).hexdigest(), "size": 0}
    else:
        entry = {"type": "file", "oid": git_blob_oid(data), "size": len(data)}
    entry["path"] = path
    if commit is not None and repo is not None:  # expand=True: the last commit that touched the path
        last = next(
            (
                c
                for c in repo.history(commit.oid)
                if any(p == path or p.startswith(path + "/") for p in c.added + c.deleted)
            ),
            commit,
        )
        entry["lastCommit"] = {"id": last.oid, "title": last.message, "date": last.date}
    return entry


def _tree(repo: Repo, req: _Handler, revision: str, folder: str):
    commit = _get_commit(repo, revision)
    recursive = req.query.get("recursive", ["False"])[0].lower() in ("1", "true")
    expand = req.query.get("expand", ["False"])[0].lower() in ("1", "true")
    prefix = folder.strip("/") + "/" if folder.strip("/") else ""
    if prefix and not any(p.startswith(prefix) for p in commit.tree):
        raise HubError(404, f"Entry not found: {folder}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
    entries: dict[str, dict] = {}
    for path, data in sorted(commit.tree.items()):
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix) :].split("/")
        for depth in range(1, len(rest)):  # the folders on the way
            if depth > 1 and not recursive:
                break
            sub = prefix + "/".join(rest[:depth])
            entries.setdefault(sub, _entry(sub, None, commit if expand else None, repo))
        if recursive or len(rest) == 1:
            entries[path] = _entry(path, data, commit if expand else None, repo)
    return _json(sorted(entries.values(), key=lambda e: (e["type"] != "directory", e["path"])))


def _paths_info(repo: Repo, req: _Handler, revision: str):
    commit = _get_commit(repo, revision)
    form = parse_qs(req.body.decode()) if req.body else {}
    if req.headers.get("Content-Type", "").startswith("application/json"):
        form = {k: v if isinstance(v, list) else [v] for k, v in req.json().items()}
    expand = str(form.get("expand", ["False"])[0]).lower() in ("1", "true")
    out = []
    for path in form.get("paths", []):
        path = path.strip("/")
        if path in commit.tree:
            out.append(_entry(path, commit.tree[path], commit if expand else None, repo))
        elif any(p.startswith(path + "/") for p in commit.tree):
            out.append(_entry(path, None, commit if expand else None, repo))
    return _json(out)


def _list_commits(repo: Repo, revision: str):
    commit = _get_commit(repo, revision)
    return _json(
        [
            {
                "id": c.oid,
                "authors": [{"user": repo.repo_id.split("/")[0]}],
                "date": c.date,
                "title": c.message,
                "message": c.description,
            }
            for c in repo.history(commit.oid)
        ]
    )


def _branch(repo: Repo, req: _Handler, method: str, branch: str):
    _require_auth(req)
    if method == "DELETE":
        if branch not in repo.branches or branch == "main":
            raise HubError(404 if branch not in repo.branches else 403, f"cannot delete branch {branch}")
        del repo.branches[branch]
        return _json({})
    if branch in repo.branches:
        raise HubError(409, f"Reference already exists: refs/heads/{branch}")
    start = _get_commit(repo, req.json().get("startingPoint") or "main")
    repo.branches[branch] = start.oid
    return _json({})


def _writable_branch(repo: Repo, req: _Handler, revision: str) -> str:
    _require_auth(req)
    if req.query.get("create_pr"):
        raise HubError(501, "the fake Hub does not implement pull requests (create_pr=True)")
    if revision not in repo.branches:
        raise HubError(
            404, f"Invalid rev id: {revision} (commits go to an existing branch)", "RevisionNotFound"
        )
    return revision


def _ignored(path: str, gitignore: str | None) -> bool:
    """A rough .gitignore matcher: enough for simple patterns (`*.log`, `logs/`, `/build`)."""
    if not gitignore:
        return False
    ignored = False
    for raw in gitignore.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        anchored = pattern.startswith("/")
        pattern = pattern.strip("/")
        parts = path.split("/")
        candidates = [
            "/".join(parts[:i]) for i in range(1, len(parts) + 1)
        ]  # each parent folder, then the file
        if not anchored and "/" not in pattern:
            candidates += parts
        if any(fnmatch.fnmatch(c, pattern) for c in candidates):
            ignored = not negate
    return ignored


def _preupload(repo: Repo, req: _Handler, revision: str):
    branch = _writable_branch(repo, req, revision)
    tree = repo.commit(repo.branches[branch]).tree
    payload = req.json()
    gitignore = payload.get("gitIgnore")
    if gitignore is None and ".gitignore" in tree:
        gitignore = tree[".gitignore"].decode("utf-8", "replace")
    files = [
        {
            "path": f["path"],
            "uploadMode": "regular",  # never "lfs": the client then base64-embeds the bytes in the commit
            "shouldIgnore": _ignored(f["path"], gitignore),
            "oid": git_blob_oid(tree[f["path"]]) if f["path"] in tree else None,
        }
        for f in payload.get("files", [])
    ]
    return _json({"files": files, "commitOid": repo.branches[branch]})


def _create_commit(hub: FakeHub, repo: Repo, req: _Handler, revision: str):
    branch = _writable_branch(repo, req, revision)
    lines = [json.loads(line) for line in req.body.splitlines() if line.strip()]
    if not lines or lines[0].get("key") != "header":
        raise HubError(400, "the commit payload must start with a header line")
    header = lines[0]["value"]
    parent = header.get("parentCommit")
    if parent is not None and parent != repo.branches[branch]:
        raise HubError(412, f"parentCommit {parent} is not the head of {branch} ({repo.branches[branch]})")
    added: dict[str, bytes] = {}
    deleted_files: list[str] = []
    deleted_folders: list[str] = []
    for line in lines[1:]:
        key, value = line.get("key"), line.get("value") or {}
        if key == "file":
            content = value.get("content", "")
            if value.get("encoding") == "base64":
                added[value["path"]] = base64.b64decode(content)
            else:
                added[value["path"]] = content.encode()
        elif key == "deletedFile":
            deleted_files.append(value["path"])
        elif key == "deletedFolder":
            deleted_folders.append(value["path"])
        elif key == "lfsFile":
            raise HubError(422, f"the fake Hub takes regular uploads only, not LFS ({value.get('path')})")
        else:
            raise HubError(400, f"unknown commit operation {key!r}")
    commit = hub._commit(
        repo,
        branch,
        header.get("summary", ""),
        header.get("description", ""),
        added,
        deleted_files,
        deleted_folders,
    )
    url = f"{hub.url}/{URL_PREFIX[repo.repo_type]}{repo.repo_id}/commit/{commit.oid}"
    return _json({"success": True, "commitOid": commit.oid, "commitUrl": url, "pullRequestUrl": None})


def _resolve(hub: FakeHub, req: _Handler, repo_type: str, repo_id: str, revision: str, path: str):
    repo = _get_repo(hub, req, repo_type, repo_id)
    commit = _get_commit(repo, revision)
    if path not in commit.tree:
        raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
    data = commit.tree[path]
    headers = {
        "Content-Type": "application/octet-stream",
        "ETag": f'"{git_blob_oid(data)}"',
        "X-Repo-Commit": commit.oid,
        "Accept-Ranges": "bytes",
        "Content-Disposition": f"inline; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1])}",
    }
    range_header = req.headers.get("Range", "")
    if range_header.startswith("bytes=") and "," not in range_header:
        start_s, _, end_s = range_header[len("bytes=") :].partition("-")
        if start_s:
            start, end = int(start_s), int(end_s) if end_s else len(data) - 1
        else:  # a suffix range: the last N bytes
            start, end = max(0, len(data) - int(end_s)), len(data) - 1
        if start >= len(data) and len(data) > 0:
            return 416, {**headers, "Content-Range": f"bytes */{len(data)}"}, b""
        end = min(end, len(data) - 1)
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        return 206, headers, data[start : end + 1]
    return 200, headers, data


# ---------------------------------------------------------------------- patching the client
class _Patcher:
    """Set attributes and environment variables, remembering the old values (like monkeypatch)."""

    _MISSING = object()

    def __init__(self):
        self._attrs: list[tuple[Any, str, Any]] = []
        self._env: list[tuple[str, str | None]] = []

    def setattr(self, obj: Any, name: str, value: Any) -> None:
        self._attrs.append((obj, name, getattr(obj, name, self._MISSING)))
        setattr(obj, name, value)

    def setenv(self, name: str, value: str | None) -> None:
        self._env.append((name, os.environ.get(name)))
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value

    def undo(self) -> None:
        for obj, name, old in reversed(self._attrs):
            if old is self._MISSING:
                with contextlib.suppress(AttributeError):
                    delattr(obj, name)
            else:
                setattr(obj, name, old)
        for name, old in reversed(self._env):
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old
        self._attrs.clear()
        self._env.clear()


def _config_values(url: str, offline: bool) -> dict[str, dict[str, Any]]:
    """What datasets.config and evaluate.config compute at import from HF_ENDPOINT and the offline flags."""
    return {
        "datasets.config": {
            "HF_ENDPOINT": url,
            "HUB_DATASETS_URL": url + "/datasets/{repo_id}/resolve/{revision}/{path}",
            "HF_HUB_OFFLINE": offline,
            "HF_DATASETS_OFFLINE": offline,
        },
        "evaluate.config": {
            "HF_ENDPOINT": url,
            "HF_LIST_ENDPOINT": url + "/api/spaces?filter={type}",
            "HUB_EVALUATE_URL": url + "/spaces/{path}/resolve/{revision}/{name}",
            "HF_EVALUATE_OFFLINE": offline,
        },
    }


def _patch_clients(p: _Patcher, hub: FakeHub, disable_xet: bool) -> list[str]:
    """Point the imported clients at `hub`; return the config modules that were patched."""
    # Import first, patch after: a module imported for the first time while patched would keep the
    # fake values (huggingface_hub.hf_api builds its module-level HfApi at import).
    import huggingface_hub
    import huggingface_hub.hf_api as hf_api
    import huggingface_hub.utils._http as http
    from huggingface_hub import constants

    for name, value in hub.env.items():
        p.setenv(name, value)
    p.setenv("HUGGING_FACE_HUB_TOKEN", None)
    p.setenv("HF_OIDC_RESOURCE", None)

    host = urlsplit(hub.url).hostname
    p.setattr(constants, "ENDPOINT", hub.url)
    p.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    p.setattr(constants, "HF_URL_HOSTS", frozenset(constants.HF_URL_HOSTS | {host}))
    p.setattr(constants, "HF_HUB_OFFLINE", False)
    p.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    p.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", False)
    p.setattr(constants, "HF_HUB_DISABLE_XET", bool(disable_xet))
    p.setattr(constants, "HF_HUB_CACHE", hub.cache_dir)
    p.setattr(constants, "HUGGINGFACE_HUB_CACHE", hub.cache_dir)

    p.setattr(hf_api.api, "endpoint", hub.url)
    p.setattr(http, "_HUB_ORIGINS", frozenset(http._HUB_ORIGINS | {http._url_origin(hub.url)}))
    for module_name in ("huggingface_hub.utils._git_credential", "huggingface_hub.cli.auth"):
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, "ENDPOINT"):
            p.setattr(module, "ENDPOINT", hub.url)
    if "HUGGINGFACE_CO_URL_TEMPLATE" in vars(huggingface_hub):  # cached by the lazy top-level import
        p.setattr(huggingface_hub, "HUGGINGFACE_CO_URL_TEMPLATE", constants.HUGGINGFACE_CO_URL_TEMPLATE)
    detect_agent = sys.modules.get("huggingface_hub.utils._detect_agent")
    if detect_agent is not None:
        p.setattr(detect_agent, "_registry", detect_agent._EMPTY_REGISTRY)

    transformers_hub = sys.modules.get("transformers.utils.hub")
    if transformers_hub is not None and hasattr(transformers_hub, "_hf_api"):
        p.setattr(transformers_hub, "_hf_api", None)  # rebuilt on first use, against the fake Hub

    patched = []
    for module_name, values in _config_values(hub.url, offline=False).items():
        module = sys.modules.get(module_name)
        if module is not None:
            for name, value in values.items():
                p.setattr(module, name, value)
            patched.append(module_name)
    return patched


def _unpatch_late_imports(hub: FakeHub, patched_configs: list[str]) -> None:
    """Fix what was imported while the fake Hub was patched in, so nothing keeps pointing at it."""
    transformers_hub = sys.modules.get("transformers.utils.hub")
    cached = getattr(transformers_hub, "_hf_api", None)
    if cached is not None and getattr(cached, "endpoint", None) == hub.url:
        transformers_hub._hf_api = None
    true_values = {"1", "ON", "YES", "TRUE"}
    url = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    from huggingface_hub import constants

    datasets_offline = os.environ.get("HF_DATASETS_OFFLINE")
    offline = {
        "datasets.config": constants.HF_HUB_OFFLINE
        if datasets_offline is None
        else datasets_offline.upper() in true_values,
        "evaluate.config": os.environ.get("HF_EVALUATE_OFFLINE", "AUTO").upper() in true_values,
    }
    for module_name in _config_values(url, False):
        module = sys.modules.get(module_name)
        if module is not None and module_name not in patched_configs:
            for name, value in _config_values(url, offline[module_name])[module_name].items():
                setattr(module, name, value)


def _close_client_session() -> None:
    http = sys.modules.get("huggingface_hub.utils._http")
    if http is not None:
        http.close_session()


@contextlib.contextmanager
def fake_hub(
    *,
    patch: bool = True,
    disable_xet: bool = False,
    user: str = DEFAULT_USER,
    token: str = DEFAULT_TOKEN,
) -> Iterator[FakeHub]:
    """Start a fake Hub on 127.0.0.1 (free port) and point huggingface_hub/transformers at it.

    patch=False starts the server only: give `hub.env` to a subprocess. disable_xet=True makes
    `upload_folder` take the classic single-commit path instead of the hf_xet pipeline.
    """
    hub = FakeHub(user=user, token=token)
    handler = type("FakeHubHandler", (_Handler,), {"hub": hub})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.block_on_close = False
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    hub.cache_dir = tempfile.mkdtemp(prefix="fake-hub-cache-")
    hub.env = {
        "HF_ENDPOINT": hub.url,
        "HF_TOKEN": token,
        "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        "HF_DATASETS_OFFLINE": "0",
        "HF_EVALUATE_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_CACHE": hub.cache_dir,
        # hf_xet (used by upload_folder's pipeline even when no file goes through Xet) writes its
        # logs under HF_XET_CACHE, read when the process's first XetSession is made.
        "HF_XET_CACHE": os.path.join(hub.cache_dir, "xet"),
    }
    if disable_xet:
        hub.env["HF_HUB_DISABLE_XET"] = "1"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="fake-hub", daemon=True)
    thread.start()
    patcher = _Patcher()
    patched_configs: list[str] = []
    try:
        if patch:
            _close_client_session()
            patched_configs = _patch_clients(patcher, hub, disable_xet)
        yield hub
    finally:
        patcher.undo()
        if patch:
            _unpatch_late_imports(hub, patched_configs)
            _close_client_session()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        shutil.rmtree(hub.cache_dir, ignore_errors=True)


@pytest.fixture(name="hub")
def fake_hub_fixture() -> Iterator[FakeHub]:
    """pytest fixture `hub`: a running, patched-in fake Hub (see `fake_hub`)."""
    with fake_hub() as hub:
        yield hub
