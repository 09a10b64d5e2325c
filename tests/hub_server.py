"""A local stand-in for the Hugging Face Hub: the few HTTP endpoints that `huggingface_hub`, `transformers` and
`datasets` call to create a repository, upload to it (regular and LFS files) and download from it.

Stdlib only (plus `yaml`, to validate README metadata like the Hub does). Run it in a thread of the test process and
point clients at it with `HF_ENDPOINT`, `HF_HUB_DISABLE_XET=1` and any `HF_TOKEN`, set before `huggingface_hub` is
imported (it reads them at import, so the clients run in subprocesses):

    >>> with LocalHub(tmp_path / "storage") as hub:
    ...     env = {**os.environ, **hub.client_env(tmp_path / "hf_home")}  # HF_ENDPOINT, HF_TOKEN, HF_HOME, ...
    ...     hub.fail_next_commits = 1  # the next commit answers 500, after its files were pre-uploaded

Repositories live in memory as a list of commit snapshots (`{path: StoredFile}`); file contents are kept on disk
under `root/blobs/<sha256>`. Not covered: xet, pull requests, branches other than `main`, pagination, gated repos.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

USER = "user"
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".parquet", ".arrow", ".zip", ".gz")
LFS_SIZE_LIMIT = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"*{suffix} filter=lfs diff=lfs merge=lfs -text\n" for suffix in LFS_SUFFIXES).encode()
REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
TYPE = r"(?P<type>models|datasets|spaces)"
REV = r"(?P<rev>[^/]+)"


def git_blob_oid(data: bytes) -> str:
    """The git object id of a blob, as `git hash-object` computes it."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-LFS pointer file that stands in the git tree for an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class StoredFile:
    """One file of a commit: its size, git oid, LFS sha256 (None for a regular file) and content sha256."""

    size: int
    git_oid: str
    lfs_sha256: str | None
    content_sha256: str


@dataclass
class Repository:
    """A repository: its commits (oldest first), each a full snapshot of the tree."""

    repo_type: str
    repo_id: str
    private: bool
    commits: list[tuple[str, str, dict[str, StoredFile]]] = field(default_factory=list)  # (oid, title, snapshot)

    @property
    def head(self) -> tuple[str, str, dict[str, StoredFile]]:
        return self.commits[-1]

    def snapshot(self, revision: str) -> tuple[str, dict[str, StoredFile]] | None:
        """`(commit oid, files)` at `main`/`HEAD` or at a commit oid (or prefix), or None."""
        if revision in ("main", "HEAD", "refs/heads/main"):
            return self.head[0], self.head[2]
        for oid, _, files in reversed(self.commits):
            if len(revision) >= 7 and oid.startswith(revision):
                return oid, files
        return None


class HubError(Exception):
    """An error answer: status, message and the Hub's `X-Error-Code`."""

    def __init__(self, status: int, message: str, code: str | None = None, body: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.body = status, message, code, body


class LocalHub:
    """The server: state, request dispatch, and start/stop as a context manager.

    Args:
        root: folder for file contents.
        user: the name `whoami` returns (the namespace of repositories created without one).
    """

    def __init__(self, root: str | Path, user: str = USER) -> None:
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.user = user
        self.repos: dict[tuple[str, str], Repository] = {}
        self.fail_next_commits = 0
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status) of every request
        self.lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def start(self) -> LocalHub:
        handler = type("BoundHandler", (HubRequestHandler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def client_env(self, hf_home: str | Path) -> dict[str, str]:
        """Environment variables that point `huggingface_hub` (imported afterwards) at this server."""
        return {
            "HF_ENDPOINT": self.endpoint,
            "HF_HUB_DISABLE_XET": "1",
            "HF_TOKEN": "hf_local_test_token",
            "HF_HOME": str(hf_home),
            "HF_HUB_OFFLINE": "0",
            "HF_DATASETS_OFFLINE": "0",
            "TRANSFORMERS_OFFLINE": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_HUB_ETAG_TIMEOUT": "30",
            "HF_HUB_DOWNLOAD_TIMEOUT": "30",
            "NO_PROXY": "127.0.0.1,localhost",
        }

    # -- state helpers (also used by tests) --------------------------------------------------------------------

    def repo(self, repo_id: str, repo_type: str = "model") -> Repository:
        with self.lock:
            found = self.repos.get((repo_type, repo_id))
        if found is None:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return found

    def files(self, repo_id: str, repo_type: str = "model") -> dict[str, bytes]:
        """Contents of every file at `main` of a repository."""
        return {path: self.read_blob(entry) for path, entry in self.repo(repo_id, repo_type).head[2].items()}

    def read_blob(self, entry: StoredFile) -> bytes:
        return (self.root / "blobs" / entry.content_sha256).read_bytes()

    def store_blob(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        path = self.root / "blobs" / digest
        if not path.exists():
            partial = path.with_suffix(".partial")
            partial.write_bytes(data)
            partial.replace(path)
        return digest

    def has_blob(self, sha256: str) -> bool:
        return (self.root / "blobs" / sha256).is_file()

    def repo_url(self, repo_type: str, repo_id: str) -> str:
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        return f"{self.endpoint}/{prefix}{repo_id}"

    def new_commit(self, repo: Repository, title: str, files: dict[str, StoredFile]) -> str:
        parent = repo.commits[-1][0] if repo.commits else ""
        listing = json.dumps({path: entry.git_oid for path, entry in sorted(files.items())})
        oid = hashlib.sha1(f"{parent}\n{title}\n{listing}\n{time.time_ns()}".encode()).hexdigest()
        repo.commits.append((oid, title, files))
        return oid

    def regular_file(self, data: bytes) -> StoredFile:
        return StoredFile(len(data), git_blob_oid(data), None, self.store_blob(data))

    @staticmethod
    def upload_mode(path: str, size: int, sample: bytes) -> str:
        """`lfs` for binary suffixes, large files and samples with a NUL byte; `regular` otherwise."""
        if path.endswith(LFS_SUFFIXES) or size > LFS_SIZE_LIMIT or b"\0" in sample:
            return "lfs"
        return "regular"


class HubRequestHandler(BaseHTTPRequestHandler):
    """Dispatches a request to the first route whose method and path pattern match."""

    hub: LocalHub
    protocol_version = "HTTP/1.1"

    ROUTES: list[tuple[str, re.Pattern, str]] = [
        (method, re.compile(pattern), name)
        for method, pattern, name in [
            ("GET", r"^/api/whoami-v2$", "whoami"),
            ("POST", r"^/api/repos/create$", "create_repo"),
            ("POST", r"^/api/repos/delete$", "delete_repo"),
            ("POST", r"^/api/validate-yaml$", "validate_yaml"),
            ("GET", rf"^/api/{TYPE}/{REPO}/tree/{REV}(?:/(?P<path>.*))?$", "tree"),
            ("POST", rf"^/api/{TYPE}/{REPO}/paths-info/{REV}$", "paths_info"),
            ("GET", rf"^/api/{TYPE}/{REPO}/refs$", "refs"),
            ("POST", rf"^/api/{TYPE}/{REPO}/preupload/{REV}$", "preupload"),
            ("POST", rf"^/api/{TYPE}/{REPO}/commit/{REV}$", "commit"),
            ("GET", rf"^/api/{TYPE}/{REPO}(?:/revision/{REV})?$", "repo_info"),
            ("POST", rf"^/(?P<prefix>datasets/|spaces/)?{REPO}\.git/info/lfs/objects/batch$", "lfs_batch"),
            ("PUT", r"^/lfs-upload/(?P<oid>[0-9a-f]{64})$", "lfs_upload"),
            ("GET", rf"^/(?P<prefix>datasets/|spaces/)?{REPO}/resolve/{REV}/(?P<path>.+)$", "resolve"),
            ("HEAD", rf"^/(?P<prefix>datasets/|spaces/)?{REPO}/resolve/{REV}/(?P<path>.+)$", "resolve"),
        ]
    ]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        """Silent: requests are recorded in `hub.requests` instead."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        body = self._read_body()
        status = 404
        try:
            for route_method, pattern, name in self.ROUTES:
                match = pattern.match(url.path) if route_method == method else None
                if match:
                    params = {key: unquote(value) for key, value in match.groupdict().items() if value is not None}
                    status = getattr(self, f"handle_{name}")(body=body, method=method, **params)
                    break
            else:
                raise HubError(404, f"No route for {method} {url.path}")
        except HubError as error:
            status = error.status
            self._send_json(status, error.body or {"error": error.message}, error_code=error.code)
        except Exception as error:  # noqa: BLE001 - a server bug must reach the client as an answer, not a hang-up
            status = 500
            self._send_json(status, {"error": f"Test server error: {type(error).__name__}: {error}"})
        self.hub.requests.append((method, url.path, status))

    # -- I/O helpers -------------------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            return self.rfile.read(length)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return b""

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> int:
        headers = dict(headers or {})
        headers.setdefault("Content-Length", str(len(payload)))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        return status

    def _send_json(self, status: int, data: Any, error_code: str | None = None) -> int:
        headers = {"Content-Type": "application/json"}
        if error_code:
            headers["X-Error-Code"] = error_code
            if isinstance(data, dict) and "error" in data:
                headers["X-Error-Message"] = str(data["error"])[:200]
        return self._send(status, json.dumps(data).encode(), headers)

    def _json_body(self, body: bytes) -> Any:
        try:
            return json.loads(body or b"{}")
        except json.JSONDecodeError as error:
            raise HubError(400, f"Invalid JSON body: {error}") from error

    def _repo(self, type_or_prefix: str | None, repo_id: str) -> Repository:
        """The repository of a request; private ones answer 401 without a token, as the Hub does."""
        repo_type = (type_or_prefix or "models").rstrip("/").rstrip("s") or "model"
        repository = self.hub.repo(repo_id, repo_type)
        if repository.private and not self.headers.get("Authorization"):
            raise HubError(401, f"Repository {repo_id} is private: authenticate to access it", "RepoNotFound")
        return repository

    def _snapshot(self, repo: Repository, revision: str) -> tuple[str, dict[str, StoredFile]]:
        found = repo.snapshot(revision)
        if found is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return found

    # -- account and repositories ------------------------------------------------------------------------------

    def handle_whoami(self, body: bytes, method: str) -> int:
        if not self.headers.get("Authorization"):
            raise HubError(401, "Invalid credentials in Authorization header")
        return self._send_json(
            200,
            {
                "type": "user",
                "id": "0" * 24,
                "name": self.hub.user,
                "fullname": "Local Test User",
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "local", "role": "write"}},
            },
        )

    def handle_create_repo(self, body: bytes, method: str) -> int:
        if not self.headers.get("Authorization"):
            raise HubError(401, "You must be authenticated to create a repository")
        data = self._json_body(body)
        repo_type = data.get("type") or "model"
        repo_id = f"{data.get('organization') or self.hub.user}/{data['name']}"
        url = self.hub.repo_url(repo_type, repo_id)
        with self.hub.lock:
            if (repo_type, repo_id) in self.hub.repos:
                return self._send_json(409, {"error": "You already created this repo", "url": url}, "RepoExists")
            private = data.get("visibility") in ("private", "protected") or bool(data.get("private"))
            repo = Repository(repo_type, repo_id, private)
            self.hub.new_commit(repo, "initial commit", {".gitattributes": self.hub.regular_file(GITATTRIBUTES)})
            self.hub.repos[(repo_type, repo_id)] = repo
        return self._send_json(200, {"url": url, "name": repo_id, "id": hashlib.md5(repo_id.encode()).hexdigest()})

    def handle_delete_repo(self, body: bytes, method: str) -> int:
        data = self._json_body(body)
        repo_type = data.get("type") or "model"
        repo_id = f"{data.get('organization') or self.hub.user}/{data['name']}"
        with self.hub.lock:
            if self.hub.repos.pop((repo_type, repo_id), None) is None:
                raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return self._send_json(200, {})

    def handle_validate_yaml(self, body: bytes, method: str) -> int:
        data = self._json_body(body)
        errors = validate_card_metadata(data.get("content", ""), data.get("repoType") or "model")
        if errors:
            return self._send_json(400, {"errors": [{"message": error} for error in errors]})
        return self._send_json(200, {"warnings": []})

    def handle_repo_info(self, body: bytes, method: str, type: str, repo: str, rev: str = "main") -> int:
        repository = self._repo(type, repo)
        oid, files = self._snapshot(repository, rev)
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        info: dict[str, Any] = {
            "_id": hashlib.md5(repo.encode()).hexdigest()[:24],
            "id": repo,
            "author": repo.split("/")[0],
            "sha": oid,
            "lastModified": now,
            "createdAt": now,
            "private": repository.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": [{"rfilename": path, "size": entry.size} for path, entry in sorted(files.items())],
            "usedStorage": sum(entry.size for entry in files.values()),
        }
        if type == "models":
            info["modelId"] = repo
        card = files.get("README.md")
        if card is not None:
            metadata = front_matter(self.hub.read_blob(card).decode("utf-8"))
            if isinstance(metadata, dict):
                info["cardData"] = metadata
        return self._send_json(200, info)

    def handle_refs(self, body: bytes, method: str, type: str, repo: str) -> int:
        head = self._repo(type, repo).head[0]
        branch = {"name": "main", "ref": "refs/heads/main", "targetCommit": head}
        return self._send_json(200, {"branches": [branch], "converts": [], "tags": []})

    # -- listing -----------------------------------------------------------------------------------------------

    def _entry(self, path: str, entry: StoredFile, commit: tuple[str, str] | None) -> dict[str, Any]:
        item: dict[str, Any] = {"type": "file", "oid": entry.git_oid, "size": entry.size, "path": path}
        if entry.lfs_sha256 is not None:
            pointer_size = len(lfs_pointer(entry.lfs_sha256, entry.size))
            item["lfs"] = {"oid": entry.lfs_sha256, "size": entry.size, "pointerSize": pointer_size}
        if commit is not None:
            item["lastCommit"] = {"id": commit[0], "title": commit[1], "date": "2026-01-01T00:00:00.000Z"}
        return item

    @staticmethod
    def _directory(path: str) -> dict[str, Any]:
        return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}

    def _commit_meta(self, repository: Repository, oid: str, expand: bool) -> tuple[str, str] | None:
        if not expand:
            return None
        title = next(title for commit, title, _ in repository.commits if commit == oid)
        return oid, title

    def handle_tree(self, body: bytes, method: str, type: str, repo: str, rev: str, path: str = "") -> int:
        repository = self._repo(type, repo)
        oid, files = self._snapshot(repository, rev)
        commit = self._commit_meta(repository, oid, self.query.get("expand", "").lower() in ("1", "true"))
        recursive = self.query.get("recursive", "").lower() in ("1", "true")
        prefix = path.strip("/")
        if prefix in files:
            raise HubError(404, f"{prefix} is a file, not a folder", "EntryNotFound")
        listing, directories = [], set()
        for file_path, entry in sorted(files.items()):
            if prefix and not file_path.startswith(prefix + "/"):
                continue
            relative = file_path[len(prefix) + 1 :] if prefix else file_path
            parts = relative.split("/")
            base = f"{prefix}/" if prefix else ""
            for depth in range(1, len(parts)):
                if depth == 1 or recursive:
                    directories.add(base + "/".join(parts[:depth]))
            if len(parts) == 1 or recursive:
                listing.append(self._entry(file_path, entry, commit))
        if prefix and not listing and not directories:
            raise HubError(404, f"{prefix} does not exist at {rev}", "EntryNotFound")
        listing += [self._directory(directory) for directory in sorted(directories)]
        return self._send_json(200, listing)

    def handle_paths_info(self, body: bytes, method: str, type: str, repo: str, rev: str) -> int:
        repository = self._repo(type, repo)
        oid, files = self._snapshot(repository, rev)
        content_type = self.headers.get("Content-Type", "")
        if content_type.startswith("application/json"):
            data = self._json_body(body)
            paths, expand = data.get("paths", []), bool(data.get("expand"))
        else:
            form = parse_qs(body.decode())
            paths, expand = form.get("paths", []), form.get("expand", ["false"])[-1].lower() in ("1", "true")
        commit = self._commit_meta(repository, oid, expand)
        result = []
        for path in paths:
            path = path.strip("/")
            if path in files:
                result.append(self._entry(path, files[path], commit))
            elif any(file_path.startswith(path + "/") for file_path in files):
                result.append(self._directory(path))
        return self._send_json(200, result)

    # -- upload ------------------------------------------------------------------------------------------------

    def handle_preupload(self, body: bytes, method: str, type: str, repo: str, rev: str) -> int:
        repository = self._repo(type, repo)
        _, files = self._snapshot(repository, rev)
        answers = []
        for item in self._json_body(body).get("files", []):
            sample = base64.b64decode(item.get("sample", ""))
            mode = LocalHub.upload_mode(item["path"], int(item.get("size", 0)), sample)
            existing = files.get(item["path"])
            remote_oid = None
            if existing is not None:
                remote_oid = existing.lfs_sha256 if existing.lfs_sha256 is not None else existing.git_oid
            answers.append({"path": item["path"], "uploadMode": mode, "shouldIgnore": False, "oid": remote_oid})
        return self._send_json(200, {"files": answers, "commitOid": repository.head[0]})

    def handle_lfs_batch(self, body: bytes, method: str, repo: str, prefix: str | None = None) -> int:
        self._repo(prefix, repo)
        objects = []
        for item in self._json_body(body).get("objects", []):
            answer: dict[str, Any] = {"oid": item["oid"], "size": int(item["size"]), "authenticated": True}
            if not self.hub.has_blob(item["oid"]):
                answer["actions"] = {"upload": {"href": f"{self.hub.endpoint}/lfs-upload/{item['oid']}"}}
            objects.append(answer)
        return self._send_json(200, {"transfer": "basic", "objects": objects})

    def handle_lfs_upload(self, body: bytes, method: str, oid: str) -> int:
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, "The uploaded content does not match its sha256")
        self.hub.store_blob(body)
        return self._send(200, b"")

    def handle_commit(self, body: bytes, method: str, type: str, repo: str, rev: str) -> int:
        repository = self._repo(type, repo)
        if rev not in ("main", "refs/heads/main"):
            raise HubError(400, f"This test server only commits to main, not {rev}")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        with self.hub.lock:
            if self.hub.fail_next_commits > 0:
                self.hub.fail_next_commits -= 1
                raise HubError(500, "Internal Error: the commit could not be written (simulated failure)")
            files = dict(repository.head[2])
            title = "commit"
            for line in lines:
                title = self._apply_operation(files, line["key"], line["value"]) or title
            oid = self.hub.new_commit(repository, title, files)
        url = f"{self.hub.repo_url(repository.repo_type, repo)}/commit/{oid}"
        return self._send_json(200, {"success": True, "commitOid": oid, "commitUrl": url, "pullRequestUrl": None})

    def _apply_operation(self, files: dict[str, StoredFile], key: str, value: dict[str, Any]) -> str | None:
        """Applies one NDJSON line of a commit to `files`; returns the commit title for the header."""
        if key == "header":
            return value.get("summary") or "commit"
        if key == "file":
            files[value["path"]] = self.hub.regular_file(base64.b64decode(value["content"]))
        elif key == "lfsFile":
            sha256, size = value["oid"], int(value["size"])
            if not self.hub.has_blob(sha256):
                raise HubError(422, f"LFS object {sha256} of {value['path']} was never uploaded")
            files[value["path"]] = StoredFile(size, git_blob_oid(lfs_pointer(sha256, size)), sha256, sha256)
        elif key == "deletedFile":
            if files.pop(value["path"], None) is None:
                raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
        elif key == "deletedFolder":
            folder = value["path"].rstrip("/") + "/"
            for path in [path for path in files if path.startswith(folder)]:
                del files[path]
        else:
            raise HubError(400, f"Unsupported commit operation {key!r}")
        return None

    # -- download ----------------------------------------------------------------------------------------------

    def handle_resolve(self, body: bytes, method: str, repo: str, rev: str, path: str, prefix: str | None = None):
        repository = self._repo(prefix, repo)
        oid, files = self._snapshot(repository, rev)
        entry = files.get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        data = self.hub.read_blob(entry)
        headers = {
            "X-Repo-Commit": oid,
            "ETag": f'"{entry.git_oid}"',
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
        }
        if entry.lfs_sha256 is not None:
            headers.update({"X-Linked-Etag": f'"{entry.lfs_sha256}"', "X-Linked-Size": str(entry.size)})
        status, data = self._apply_range(data, headers)
        headers["Content-Length"] = str(len(data))
        return self._send(status, data, headers)

    def _apply_range(self, data: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "").strip())
        if not match:
            return 200, data
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) else len(data) - 1
        if start >= len(data) and data:
            raise HubError(416, "Requested range not satisfiable")
        headers["Content-Range"] = f"bytes {start}-{min(end, len(data) - 1)}/{len(data)}"
        return 206, data[start : end + 1]


def front_matter(text: str) -> Any:
    """The parsed YAML block at the top of a README (None if there is none)."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, flags=re.DOTALL)
    return yaml.safe_load(match.group(1)) if match else None


def validate_card_metadata(content: str, repo_type: str) -> list[str]:
    """What the Hub checks before accepting a README: parseable YAML mapping, and a parseable `model-index`."""
    try:
        metadata = front_matter(content)
    except yaml.YAMLError as error:
        return [f"Invalid YAML: {error}"]
    if metadata is None:
        return []
    if not isinstance(metadata, dict):
        return ["The metadata must be a YAML mapping"]
    if repo_type == "model" and "model-index" in metadata:
        from huggingface_hub.repocard_data import model_index_to_eval_results

        try:
            model_index_to_eval_results(metadata["model-index"])
        except (KeyError, TypeError, ValueError) as error:
            return [f"Invalid model-index: {error!r}"]
    return []
