"""The request examples of README.md and docs/*.md, run against the local host with the demo
models, so that the outputs they show stay the app's.

How a page marks its examples (docs/README.md says it too):

- A runnable example is a fenced ```sh block holding one `curl` command to "$URL/api/...",
  followed by a fenced ```json block with the body it answers. `"..."` in that body stands for
  a value that changes with every run (request ids, model versions); a list ending in `"..."`
  may go on, and an object holding `"...": "..."` may have more members. Everything else,
  predictions included, must be exactly what the app answers.
- `<!-- not run: REASON -->` just before a block that holds a `curl` leaves it out, with its
  reason.
- `<!-- example: router config -->` just before a ```json block makes that document the router
  config of the examples after it on the same page (each page starts with an empty config).

The curl command is read in Python (method, path, headers, body; `$URL` and `$KEY` are the local
host's) and sent with httpx: no shell, no real curl.
"""

from __future__ import annotations

import json
import shlex
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from devhost.process import DevHost
from tests.azurite_support import new_container
from tests.conftest import upload

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# The docs' $KEY: the function key of local runs, as local.settings.example.json sets it.
KEY = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]["DEVHOST_FUNCTION_KEY"]
CONFIG_BLOB = "config/router.json"
NOT_RUN = "not run:"
ROUTER_CONFIG = "example: router config"
ANY = "..."


@dataclass
class Block:
    """A fenced block of a page: its info string, text, first line and the HTML comment
    standing just before it (if any)."""

    page: Path
    line: int
    lang: str
    text: str
    comment: str | None
    end_line: int

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


@dataclass
class Example:
    block: Block
    shown: Block | None
    router_config: str | None  # the config in force for this example (None: empty config)


@dataclass
class Page:
    path: Path
    examples: list[Example] = field(default_factory=list)
    not_run: list[tuple[Block, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def fenced_blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if stripped.startswith("```"):
            fence = stripped[: len(stripped) - len(stripped.lstrip("`"))]
            lang = stripped[len(fence):].strip()
            j = i - 1
            while j >= 0 and not lines[j].strip():
                j -= 1
            comment = None
            if j >= 0 and lines[j].strip().startswith("<!--") and lines[j].strip().endswith("-->"):
                comment = lines[j].strip()[4:-3].strip()
            k = i + 1
            while k < len(lines) and lines[k].strip() != fence:
                k += 1
            blocks.append(Block(path, i + 1, lang, "\n".join(lines[i + 1:k]), comment, k + 1))
            i = k + 1
        else:
            i += 1
    return blocks


def holds_curl(block: Block) -> bool:
    return any(line.strip().startswith("curl ") for line in block.text.splitlines())


def read_page(path: Path) -> Page:
    page = Page(path)
    blocks = fenced_blocks(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    config: str | None = None
    for n, block in enumerate(blocks):
        if block.comment == ROUTER_CONFIG:
            if block.lang != "json":
                page.problems.append(f"{block.where}: '{ROUTER_CONFIG}' marks a {block.lang!r} block, "
                                     "not json")
            config = block.text
            continue
        if not holds_curl(block):
            continue
        if block.comment and block.comment.startswith(NOT_RUN):
            reason = block.comment[len(NOT_RUN):].strip()
            if not reason:
                page.problems.append(f"{block.where}: '{NOT_RUN}' without a reason")
            page.not_run.append((block, reason))
            continue
        if block.lang != "sh":
            page.problems.append(f"{block.where}: a curl example in a {block.lang or 'plain'!r} block "
                                 "(runnable examples are ```sh blocks; "
                                 f"else mark it '<!-- {NOT_RUN} REASON -->')")
            continue
        nxt = blocks[n + 1] if n + 1 < len(blocks) else None
        between = lines[block.end_line:nxt.line - 1] if nxt else []
        if nxt is None or nxt.lang != "json" or any(line.strip() for line in between):
            page.problems.append(f"{block.where}: a curl example not followed at once by a ```json "
                                 f"block with its output (or mark it '<!-- {NOT_RUN} REASON -->')")
            continue
        page.examples.append(Example(block, nxt, config))
    return page


@dataclass
class Request:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None


def parse_curl(text: str, url: str, key: str) -> Request:
    """Read one curl command as the docs write it: -s, -X METHOD, -H 'name: value',
    -d/--data/--data-raw BODY. A body without a content type is form-encoded, as curl sends it."""
    command = text.replace("\\\n", " ")
    tokens = shlex.split(command, comments=True)
    if not tokens or tokens[0] != "curl":
        raise ValueError(f"not one curl command: {text!r}")
    method, target, body = None, None, None
    headers: dict[str, str] = {}
    it = iter(tokens[1:])
    for token in it:
        if token in ("-s", "--silent"):
            continue
        if token in ("-X", "--request"):
            method = next(it)
        elif token in ("-H", "--header"):
            name, _, value = next(it).partition(":")
            headers[name.strip().lower()] = value.strip()
        elif token in ("-d", "--data", "--data-raw", "--data-binary"):
            if body is not None:
                raise ValueError("more than one body")
            body = next(it)
        elif token.startswith("-"):
            raise ValueError(f"curl option {token} is not read by this test: add it to parse_curl")
        elif target is None:
            target = token
        else:
            raise ValueError(f"a second URL, or more than one command: {token!r}")
    if target is None or not target.startswith("$URL/api/"):
        raise ValueError(f"the URL must be \"$URL/api/...\", not {target!r}")

    def expand(value: str) -> str:
        value = value.replace("$URL", url).replace("$KEY", key)
        if "$" in value:
            raise ValueError(f"an unknown shell variable in {value!r}")
        return value

    headers = {name: expand(value) for name, value in headers.items()}
    if body is not None:
        headers.setdefault("content-type", "application/x-www-form-urlencoded")
    return Request(method or ("POST" if body is not None else "GET"), expand(target), headers,
                   None if body is None else body.encode())


def mismatches(shown, real, path: str = "$") -> list[str]:
    """Where ``real`` differs from ``shown`` (``"..."`` matching anything, see the module doc)."""
    if shown == ANY:
        return []
    if isinstance(shown, dict):
        if not isinstance(real, dict):
            return [f"{path}: shown an object, got {real!r}"]
        open_ended = shown.get(ANY) == ANY
        keys = [k for k in shown if not (open_ended and k == ANY)]
        found = [f"{path}.{k}: shown, missing" for k in keys if k not in real]
        if not open_ended:
            found += [f"{path}.{k}: not shown, got {real[k]!r}" for k in real if k not in shown]
        for k in keys:
            if k in real:
                found += mismatches(shown[k], real[k], f"{path}.{k}")
        return found
    if isinstance(shown, list):
        if not isinstance(real, list):
            return [f"{path}: shown a list, got {real!r}"]
        open_ended = bool(shown) and shown[-1] == ANY
        items = shown[:-1] if open_ended else shown
        if len(real) < len(items) or (not open_ended and len(real) != len(items)):
            return [f"{path}: shown {len(items)} items, got {len(real)}: {real!r}"]
        return [m for i, item in enumerate(items) for m in mismatches(item, real[i], f"{path}[{i}]")]
    if type(shown) is not type(real) or shown != real:
        return [f"{path}: shown {shown!r}, got {real!r}"]
    return []


# Structure: no page needs the host for these.

def test_every_curl_example_runs_or_says_why_not():
    problems = [problem for path in PAGES for problem in read_page(path).problems]
    assert problems == []


def test_the_pages_have_examples_to_run():
    runnable = {path.relative_to(ROOT).as_posix(): len(read_page(path).examples) for path in PAGES}
    for page in ("README.md", "docs/http-api.md", "docs/models.md", "docs/routing.md",
                 "docs/ab-report.md"):
        assert runnable.get(page, 0) > 0, page


def test_the_curl_reader():
    request = parse_curl("""curl -s -X POST "$URL/api/score/churn" -H "x-functions-key: $KEY" \\
     -H "x-user-id: user-5" -d '{"rows": [[1, null]]}'   # a comment""", "http://h:1", "k")
    assert (request.method, request.url, request.body) == ("POST", "http://h:1/api/score/churn",
                                                           b'{"rows": [[1, null]]}')
    assert request.headers == {"x-functions-key": "k", "x-user-id": "user-5",
                               "content-type": "application/x-www-form-urlencoded"}
    assert parse_curl('curl -s "$URL/api/v2"', "http://h:1", "k").method == "GET"
    for bad in ('curl -s "$URL/api/v2" -o out', 'curl -s "https://example.com/api"',
                'curl -s "$URL/api/v2" -H "x: $OTHER"', 'echo hi'):
        with pytest.raises(ValueError):
            parse_curl(bad, "http://h:1", "k")


def test_what_the_comparison_lets_through():
    assert mismatches({"a": [0.5, ANY], "id": ANY}, {"a": [0.5, 1, 2], "id": "x"}) == []
    assert mismatches({"a": 1, ANY: ANY}, {"a": 1, "b": 2}) == []
    assert mismatches({"a": 1}, {"a": 1, "b": 2}) == ["$.b: not shown, got 2"]
    assert mismatches([0.1372], [0.5135220170133769]) == ["$[0]: shown 0.1372, got 0.5135220170133769"]
    assert mismatches([1], [1.0]) and mismatches([True], [1]) and mismatches([1, 2], [1])


# Running them.

@pytest.fixture(scope="module")
def models_container(azurite, demo_models):

    container = new_container(azurite.connection_string, f"docs{uuid.uuid4().hex[:12]}")
    for name, model in demo_models.items():
        upload(container, f"{name}.txt", model.path)
    upload(container, "churn/v2.txt", demo_models["churn"].path)  # the name with "/" of docs/http-api.md
    return container


@pytest.fixture(scope="module")
def host(azurite, models_container):
    tag = uuid.uuid4().hex[:10]
    env = {"AzureWebJobsStorage": azurite.connection_string,
           "MODEL_CONTAINER": models_container.container_name, "DEVHOST_FUNCTION_KEY": KEY,
           "DEVHOST_MASTER_KEY": f"master-{tag}", "ROUTER_CONFIG_BLOB": CONFIG_BLOB,
           "ROUTER_REFRESH_SECONDS": "0.2", "PREDICTION_LOG_CONTAINER": f"docs-log-{tag}",
           "OUTCOME_LOG_CONTAINER": f"docs-outcomes-{tag}", "SCORE_QUEUE_NAME": f"docs-{tag}",
           "RESULTS_QUEUE_NAME": f"docs-results-{tag}", "BATCH_CONTAINER": f"docs-batch-{tag}",
           "CHUNK_QUEUE_NAME": f"docs-chunks-{tag}"}
    with DevHost(ROOT, env, queues=False) as server:
        yield server


@pytest.fixture(scope="module")
def client(host):
    with httpx.Client(base_url=host.url, timeout=30) as c:
        yield c


def serve_router_config(client: httpx.Client, container, document: str, timeout: float = 30.0) -> None:
    """Upload ``document`` as the router config blob and wait until the host serves it."""
    version = container.get_blob_client(CONFIG_BLOB).upload_blob(document.encode(), overwrite=True)["etag"]
    deadline = time.monotonic() + timeout
    while True:  # GET /api/endpoints also starts a due check of the config blob
        described = client.get("/api/endpoints", headers={"x-functions-key": KEY}).json()
        if (described.get("config") or {}).get("version") == version.strip('"'):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the host did not take the router config up: {described}")
        time.sleep(0.1)


def pages_with_examples() -> list[Path]:
    return [path for path in PAGES if read_page(path).examples]


@pytest.mark.parametrize("path", pages_with_examples(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_examples_show_what_the_app_answers(path, client, host, models_container):
    page = read_page(path)
    assert page.problems == []
    in_force: object = None
    failures = []
    for example in page.examples:
        config = example.router_config or '{"endpoints": {}}'
        if config != in_force:
            serve_router_config(client, models_container, config)
            in_force = config
        request = parse_curl(example.block.text, host.url, KEY)
        response = client.request(request.method, request.url, headers=request.headers,
                                  content=request.body)
        shown = json.loads(example.shown.text)
        try:
            real = json.loads(response.content)
        except ValueError:
            failures.append(f"{example.block.where}: status {response.status_code}, not JSON: "
                            f"{response.text[:200]!r}")
            continue
        found = mismatches(shown, real)
        is_error = isinstance(real, dict) and "error" in real
        if is_error != (response.status_code >= 400) or not 200 <= response.status_code < 500:
            found.append(f"status {response.status_code} for {'an error' if is_error else 'a success'}")
        if found:
            failures.append(f"{example.block.where}: the output shown at line {example.shown.line} "
                            f"is not the app's:\n    " + "\n    ".join(found)
                            + f"\n    the app answered: {response.text}")
    assert failures == [], "\n".join(failures)
