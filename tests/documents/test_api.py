"""The documents API in process: upload, type checks, storage, dedupe, ownership, downloads, quota,
multipart abuse and body limits."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from pathlib import Path

import httpx
import pytest

from tests.documents import files as F
from tests.documents.conftest import (
    count_rows,
    documents_app,
    make_docx,
    make_pdf,
    new_user_id,
    running_analysis,
    upload,
)
from tests.support.tokens import TokenIssuer

API = "/api/v1/documents"


async def _ok(client: httpx.AsyncClient, headers: dict, data: bytes, name: str = "f.bin", **kw) -> dict:
    resp = await upload(client, headers, data, name, **kw)
    assert resp.status_code == 201, resp.text
    return resp.json()


# --------------------------------------------------------------------------------- happy paths


async def test_upload_pdf_then_read_everything_back(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    h = issuer.headers(new_user_id())
    data = make_pdf(["Quarterly report: revenue grew.", "Outlook: steady."])
    doc = await _ok(client, h, data, "report.pdf")
    assert doc["kind"] == "pdf" and doc["media_type"] == "application/pdf"
    assert doc["page_count"] == 2 and doc["size_bytes"] == len(data)
    assert doc["sha256"] == hashlib.sha256(data).hexdigest()
    assert doc["chunk_count"] == 1 and doc["token_count"] > 0

    got = await client.get(f"{API}/{doc['id']}", headers=h)
    assert got.status_code == 200 and got.json()["id"] == doc["id"]
    text = await client.get(f"{API}/{doc['id']}/text", headers=h)
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    assert "revenue grew" in text.text and "steady" in text.text
    chunks = await client.get(f"{API}/{doc['id']}/chunks", headers=h)
    assert chunks.json()[0]["text"] == text.text
    down = await client.get(f"{API}/{doc['id']}/download", headers=h)
    assert down.status_code == 200 and down.content == data
    assert down.headers["content-type"] == "application/pdf"
    assert down.headers["x-content-type-options"] == "nosniff"
    assert down.headers["content-disposition"].startswith('attachment; filename="report.pdf"')


async def test_upload_docx_and_latin1_text(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    h = issuer.headers(new_user_id())
    doc = await _ok(client, h, make_docx(["Dear reader,", "Kind regards."]), "letter.docx")
    assert doc["kind"] == "docx"
    text = await client.get(f"{API}/{doc['id']}/text", headers=h)
    assert text.text == "Dear reader,\nKind regards."
    note = await _ok(client, h, "Café crème à la façade, très naïve.".encode("latin-1"), "note.txt")
    assert note["kind"] == "text"
    back = await client.get(f"{API}/{note['id']}/text", headers=h)
    assert back.content.decode("utf-8") == "Café crème à la façade, très naïve."


async def test_large_text_is_chunked_with_overlap(tmp_dir: Path, issuer: TokenIssuer, shared_db) -> None:
    async with documents_app(tmp_dir, issuer, shared_db, chunk_tokens=200, chunk_overlap_tokens=30) as client:
        h = issuer.headers(new_user_id())
        body = "\n\n".join(f"Section {i}. " + "The committee discussed the budget at length. " * 8 for i in range(40))
        doc = await _ok(client, h, body.encode(), "minutes.txt")
        assert doc["chunk_count"] > 5
        chunks = (await client.get(f"{API}/{doc['id']}/chunks", params={"limit": 500}, headers=h)).json()
        assert len(chunks) == doc["chunk_count"]
        assert all(c["token_count"] <= 200 for c in chunks)
        assert all(b["start_char"] < a["end_char"] for a, b in itertools.pairwise(chunks))


# ------------------------------------------------------------------------------ type from content


async def test_pdf_named_file_that_is_not_a_pdf_is_415(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    resp = await upload(
        client, issuer.headers(new_user_id()), b"plain words pretending", "invoice.pdf", "application/pdf"
    )
    assert resp.status_code == 415
    assert resp.headers["content-type"] == "application/problem+json"
    assert "Supported types" in resp.json()["detail"]


@pytest.mark.parametrize(
    ("data", "name", "content_type"),
    [
        (F.PNG, "photo.pdf", "application/pdf"),
        (F.EXE, "setup.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
        (F.HTML, "page.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
        (F.zip_not_docx(), "archive.docx", "application/zip"),
    ],
    ids=["png-as-pdf", "exe-as-docx", "html-as-docx", "zip-as-docx"],
)
async def test_mislabelled_files_are_415(
    client: httpx.AsyncClient, issuer: TokenIssuer, data: bytes, name: str, content_type: str
) -> None:
    resp = await upload(client, issuer.headers(new_user_id()), data, name, content_type)
    assert resp.status_code == 415, resp.text


async def test_declared_content_type_is_ignored(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    # A real PDF sent as image/png with no extension: the content decides, and it is a PDF.
    doc = await _ok(client, issuer.headers(new_user_id()), make_pdf(["real pdf"]), "scan", content_type="image/png")
    assert doc["kind"] == "pdf" and doc["media_type"] == "application/pdf"


async def test_corrupt_pdf_is_422(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    resp = await upload(client, issuer.headers(new_user_id()), F.pdf_corrupt(), "broken.pdf")
    assert resp.status_code == 422
    assert "PDF" in resp.json()["detail"]


@pytest.mark.parametrize(
    "build",
    [F.docx_bomb, F.docx_overlapping, F.docx_billion_laughs, F.docx_symlink, F.docx_nested_zip],
    ids=["deflate-bomb", "quoted-overlap", "billion-laughs", "symlink", "nested-zip"],
)
async def test_hostile_docx_is_422_and_nothing_is_left(tmp_dir: Path, issuer: TokenIssuer, fresh_db, build) -> None:
    async with documents_app(tmp_dir, issuer, fresh_db) as client:
        h = issuer.headers(new_user_id())
        resp = await upload(client, h, build(), "hostile.docx")
        assert resp.status_code == 422, resp.text
        assert (await client.get(API, headers=h)).json()["items"] == []
        assert (await client.get("/live")).status_code == 200
        # Nothing half-written: no rows and no temporary files.
        assert await count_rows(tmp_dir, fresh_db, "documents") == 0
        assert await count_rows(tmp_dir, fresh_db, "document_blobs") == 0
        assert list((tmp_dir / "documents-tmp").iterdir()) == []


async def test_pdf_bombs_are_422_and_the_service_stays_up(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    h = issuer.headers(new_user_id())
    for data in (F.pdf_flate_bomb(200), F.pdf_pages(10_000), F.pdf_circular_prev()):
        resp = await upload(client, h, data, "x.pdf")
        assert resp.status_code == 422, resp.text
    assert (await client.get("/health")).status_code == 200


async def test_worker_limits_answer_422(tmp_dir: Path, issuer: TokenIssuer, shared_db) -> None:
    # Decompression caps lifted: only the worker's memory limit stops the bomb.
    async with documents_app(tmp_dir, issuer, shared_db, extract_memory_mb=200, pdf_max_stream_bytes=2**40) as client:
        resp = await upload(client, issuer.headers(new_user_id()), F.pdf_flate_bomb(300), "bomb.pdf")
        assert resp.status_code == 422
        assert "limit" in resp.json()["detail"]
        assert (await client.get("/live")).status_code == 200


# -------------------------------------------------------------------------------------- dedupe


async def test_reupload_returns_the_existing_document(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    h = issuer.headers(new_user_id())
    data = make_docx(["Same bytes twice."])
    first = await _ok(client, h, data, "one.docx")
    again = await upload(client, h, data, "renamed.docx")
    assert again.status_code == 200
    assert again.json()["id"] == first["id"] and again.json()["duplicate"] is True
    assert again.headers["location"] == f"{API}/{first['id']}"
    assert len((await client.get(API, headers=h)).json()["items"]) == 1
    # Another user uploading the same bytes gets a document of their own.
    other = await _ok(client, issuer.headers(new_user_id()), data, "one.docx")
    assert other["id"] != first["id"]


async def test_concurrent_identical_uploads_store_one(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    h = issuer.headers(new_user_id())
    data = make_pdf(["Raced upload."])
    results = await asyncio.gather(*(upload(client, h, data, "r.pdf") for _ in range(4)))
    ids = {r.json()["id"] for r in results}
    assert len(ids) == 1
    assert sorted(r.status_code for r in results).count(201) == 1


# ------------------------------------------------------------------------------------- ownership


async def test_another_users_document_is_invisible_everywhere(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    owner, intruder = issuer.headers(new_user_id()), issuer.headers(new_user_id())
    doc = await _ok(client, owner, make_pdf(["Private."]), "private.pdf")
    analysis = await client.post(
        f"{API}/{doc['id']}/analyses", headers=owner, json={"kind": "summary", "models": ["m"]}
    )
    assert analysis.status_code == 202
    aid = analysis.json()["id"]
    base = f"{API}/{doc['id']}"
    assert (await client.get(API, headers=intruder)).json()["items"] == []
    for method, path, body in [
        ("GET", base, None),
        ("GET", f"{base}/text", None),
        ("GET", f"{base}/chunks", None),
        ("GET", f"{base}/download", None),
        ("GET", f"{base}/analyses", None),
        ("POST", f"{base}/analyses", {"kind": "summary", "models": ["m"]}),
        ("GET", f"{base}/analyses/{aid}", None),
        ("GET", f"{base}/analyses/{aid}/events", None),
        ("DELETE", base, None),
    ]:
        resp = await client.request(method, path, headers=intruder, json=body)
        assert resp.status_code == 404, (method, path, resp.status_code)
        assert "Private" not in resp.text
    # Still there for its owner.
    assert (await client.get(base, headers=owner)).status_code == 200


async def test_no_token_is_401(client: httpx.AsyncClient) -> None:
    for method, path in [("GET", API), ("POST", API), ("GET", f"{API}/{'0' * 32}")]:
        resp = await client.request(method, path)
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"].startswith("Bearer")


async def test_unknown_or_malformed_ids_are_404(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    h = issuer.headers(new_user_id())
    for doc_id in ("0" * 32, "nope", "../../etc/passwd"):
        assert (await client.get(f"{API}/{doc_id}", headers=h)).status_code == 404


# ------------------------------------------------------------------------------- list and delete


async def test_list_is_paginated_newest_first(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    h = issuer.headers(new_user_id())
    ids = [(await _ok(client, h, f"Document number {i}.".encode(), f"{i}.txt"))["id"] for i in range(5)]
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get(API, headers=h, params=params)).json()
        seen += [d["id"] for d in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))
    assert (await client.get(API, headers=h, params={"cursor": "garbage!"})).status_code == 400


async def test_delete_removes_chunks_and_analyses(tmp_dir: Path, issuer: TokenIssuer, fresh_db) -> None:
    async with documents_app(tmp_dir, issuer, fresh_db) as client:
        h = issuer.headers(new_user_id())
        doc = await _ok(client, h, make_pdf(["Delete me."]), "d.pdf")
        resp = await client.post(f"{API}/{doc['id']}/analyses", headers=h, json={"kind": "summary", "models": ["m"]})
        assert resp.status_code == 202
        assert await count_rows(tmp_dir, fresh_db, "analyses") == 1
        # Wait for the (llm-less, failing) analysis to finish, so no write of its races the delete.
        events = await client.get(resp.headers["location"] + "/events", headers=h)
        assert "event: failed" in events.text
        assert (await client.delete(f"{API}/{doc['id']}", headers=h)).status_code == 204
        assert (await client.get(f"{API}/{doc['id']}", headers=h)).status_code == 404
        await asyncio.sleep(0.2)  # let the (failing, llm-less) analysis task finish writing, if it still runs
        for table in (
            "documents",
            "document_blobs",
            "document_text_parts",
            "document_chunks",
            "analyses",
            "analysis_events",
        ):
            assert await count_rows(tmp_dir, fresh_db, table) == 0, table


# ------------------------------------------------------------------------------------- file names


@pytest.mark.parametrize(
    ("name", "expected_ascii"),
    [
        ("../../etc/passwd", "passwd"),
        ("a\x00b.txt", "ab.txt"),
        ("evil\u202etxt.exe", "eviltxt.exe"),
        ("semi;colon%.txt", "semi_colon_.txt"),
        ("C:\\Windows\\system32\\x.txt", "x.txt"),
        ("résumé.txt", "r_sum_.txt"),
    ],
)
async def test_malicious_filenames_never_become_paths(
    client: httpx.AsyncClient, issuer: TokenIssuer, name: str, expected_ascii: str
) -> None:
    h = issuer.headers(new_user_id())
    # Sent raw (httpx would percent-encode some of these characters itself).
    resp = await _raw(client, h, _multipart([("file", f"content for {name!r}".encode(), name)]))
    assert resp.status_code == 201, resp.text
    doc = resp.json()
    assert "/" not in doc["name"] and "\\" not in doc["name"] and "\x00" not in doc["name"]
    assert "\u202e" not in doc["name"]
    down = await client.get(f"{API}/{doc['id']}/download", headers=h)
    disposition = down.headers["content-disposition"]
    assert disposition.startswith(f"attachment; filename=\"{expected_ascii}\"; filename*=UTF-8''")
    assert "\r" not in disposition and "\n" not in disposition


async def test_thousand_character_filename_is_truncated(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    doc = await _ok(client, issuer.headers(new_user_id()), b"long name", "n" * 1000 + ".txt")
    assert len(doc["name"]) == 255 and doc["name"].endswith(".txt")


# ------------------------------------------------------------------------------------------ quota


async def test_quota_on_document_count_and_bytes(tmp_dir: Path, issuer: TokenIssuer, shared_db) -> None:
    async with documents_app(tmp_dir, issuer, shared_db, quota_max_documents=2, quota_max_bytes=1000) as client:
        h = issuer.headers(new_user_id())
        await _ok(client, h, b"first document", "1.txt")
        too_big = await upload(client, h, b"x " * 600, "big.txt")
        assert too_big.status_code == 403 and "storage limit" in too_big.json()["detail"]
        await _ok(client, h, b"second document", "2.txt")
        third = await upload(client, h, b"third document", "3.txt")
        assert third.status_code == 403 and "limit of 2 documents" in third.json()["detail"]
        # Another user has a quota of their own.
        await _ok(client, issuer.headers(new_user_id()), b"first document", "1.txt")


# -------------------------------------------------------------------------------- multipart abuse


def _multipart(parts: list[tuple[str, bytes, str | None]], boundary: str = "b0undary", preamble: bytes = b"") -> bytes:
    out = bytearray(preamble)
    for name, data, filename in parts:
        out += f"--{boundary}\r\n".encode()
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"Content-Disposition: {disposition}\r\n\r\n".encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


async def _raw(client: httpx.AsyncClient, h: dict, body: bytes, boundary: str = "b0undary") -> httpx.Response:
    headers = {**h, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    return await client.post(API, headers=headers, content=body)


async def test_thousand_and_one_fields_is_400(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    parts = [(f"f{i}", b"v", None) for i in range(1001)] + [("file", b"hello", "a.txt")]
    resp = await _raw(client, issuer.headers(new_user_id()), _multipart(parts))
    assert resp.status_code == 400 and "parts" in resp.json()["detail"]


async def test_thousand_and_one_files_is_400(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    parts = [("file", b"hello %d" % i, f"{i}.txt") for i in range(1001)]
    resp = await _raw(client, issuer.headers(new_user_id()), _multipart(parts))
    assert resp.status_code == 400


async def test_two_megabyte_text_field_is_400(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    parts = [("note", b"a" * (2 * 1024 * 1024), None), ("file", b"hello", "a.txt")]
    resp = await _raw(client, issuer.headers(new_user_id()), _multipart(parts))
    assert resp.status_code == 400 and "field" in resp.json()["detail"]


async def test_huge_crlf_preamble_and_epilogue_are_bounded(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    h = issuer.headers(new_user_id())
    body = _multipart([("file", b"preamble test", "p.txt")], preamble=b"\r\n" * 500_000) + b"\r\n" * 500_000
    resp = await _raw(client, h, body)
    assert resp.status_code in (201, 400), resp.text
    assert (await client.get("/live")).status_code == 200


async def test_pathological_part_headers_are_400(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    h = issuer.headers(new_user_id())
    many = b"--b0undary\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(1000))
    many += b'Content-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nhi\r\n--b0undary--\r\n'
    assert (await _raw(client, h, many)).status_code == 400
    long = b"--b0undary\r\nX-Long: " + b"a" * 100_000 + b"\r\n"
    long += b'Content-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nhi\r\n--b0undary--\r\n'
    assert (await _raw(client, h, long)).status_code == 400


async def test_not_multipart_and_missing_file(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    h = issuer.headers(new_user_id())
    assert (await client.post(API, headers=h, content=b"raw bytes")).status_code == 415
    assert (await _raw(client, h, _multipart([("other", b"x", None)]))).status_code == 400
    truncated = _multipart([("file", b"hello", "a.txt")])[:-20]
    assert (await _raw(client, h, truncated)).status_code == 400


# ------------------------------------------------------------------------------------ body limits


async def test_upload_over_the_limit_is_413(tmp_dir: Path, issuer: TokenIssuer, shared_db) -> None:
    async with documents_app(tmp_dir, issuer, shared_db, max_upload_bytes=100_000) as client:
        h = issuer.headers(new_user_id())
        resp = await upload(client, h, b"a" * 100_001, "big.txt")
        assert resp.status_code == 413
        assert resp.headers["content-type"] == "application/problem+json"
        ok = await upload(client, h, b"a " * 50_000, "fits.txt")
        assert ok.status_code == 201


async def test_json_endpoints_keep_the_small_body_limit(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    h = issuer.headers(new_user_id())
    doc = await _ok(client, h, b"json limits", "j.txt")
    big = b'{"kind": "custom", "instruction": "' + b"a" * 2_000_000 + b'"}'
    resp = await client.post(
        f"{API}/{doc['id']}/analyses", headers={**h, "Content-Type": "application/json"}, content=big
    )
    assert resp.status_code == 413

    async def chunked():
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    resp = await client.post(
        f"{API}/{doc['id']}/analyses", headers={**h, "Content-Type": "application/json"}, content=chunked()
    )
    assert resp.status_code == 413


# ----------------------------------------------------------------------------- analyses requests


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "qa", "models": ["m"]},
        {"kind": "extract", "models": ["m"], "fields": []},
        {"kind": "custom", "models": ["m"]},
        {"kind": "summary", "models": ["m"], "question": "why?"},
        {"kind": "translate", "models": ["m"]},
        {"kind": "summary", "models": [f"m{i}" for i in range(40)]},
    ],
)
async def test_invalid_analysis_requests_are_422(client: httpx.AsyncClient, issuer: TokenIssuer, body: dict) -> None:
    h = issuer.headers(new_user_id())
    doc = await _ok(client, h, b"analysis validation " + str(body).encode(), "v.txt")
    resp = await client.post(f"{API}/{doc['id']}/analyses", headers=h, json=body)
    assert resp.status_code == 422, resp.text


async def test_analysis_without_llm_fails_and_says_why(client: httpx.AsyncClient, issuer: TokenIssuer) -> None:
    h = issuer.headers(new_user_id())
    doc = await _ok(client, h, b"no llm here", "n.txt")
    resp = await client.post(f"{API}/{doc['id']}/analyses", headers=h, json={"kind": "summary", "models": ["m"]})
    assert resp.status_code == 202
    url = resp.headers["location"]
    events = await client.get(url + "/events", headers=h)
    assert events.headers["content-type"].startswith("text/event-stream")
    assert "event: failed" in events.text
    final = (await client.get(url, headers=h)).json()
    assert final["status"] == "failed"
    assert final["result"]["models"][0]["status"] == "error"


async def test_unfinished_analyses_are_picked_up_at_start(tmp_dir: Path, issuer: TokenIssuer, fresh_db) -> None:
    from shared.db import Database
    from tests.documents.conftest import settings_for
    from ultrai_documents.analysis.service import params_hash
    from ultrai_documents.models import Analysis

    user = new_user_id()
    h = issuer.headers(user)
    async with documents_app(tmp_dir, issuer, fresh_db) as client:
        doc = await _ok(client, h, b"left behind by a process that stopped", "l.txt")
    # An analysis the previous process had started and never finished.
    db = Database(settings_for(tmp_dir, database_url=fresh_db), "documents")
    params = {"kind": "summary", "question": None, "fields": None, "instruction": None, "models": ["m"]}
    params["synthesis_model"] = None
    async with db.sessions() as session:
        session.add(
            Analysis(
                id="a" * 32,
                document_id=doc["id"],
                owner_id=user,
                kind="summary",
                params=params,
                params_hash=params_hash(params),
                status="running",
            )
        )
        await session.commit()
    await db.dispose()
    async with documents_app(tmp_dir, issuer, fresh_db) as client:
        url = f"{API}/{doc['id']}/analyses/{'a' * 32}"
        # (A generous bound only so that a missed pickup fails rather than waits forever.)
        events = await asyncio.wait_for(client.get(url + "/events", headers=h), 60)
        # Run again (and failed here only because no llm service is running).
        assert events.text.count('"status":"running"') == 1, events.text
        assert "event: failed" in events.text
        assert (await client.get(url, headers=h)).json()["status"] == "failed"


async def test_estimate_without_llm_is_503_and_the_start_goes_ahead(
    client: httpx.AsyncClient, issuer: TokenIssuer
) -> None:
    """The llm service is down: the estimate cannot be made (503), and starting the analysis does
    as it does without the llm service (queued; it fails saying why, as above)."""
    h = issuer.headers(new_user_id())
    doc = await _ok(client, h, b"estimate me without llm", "e.txt")
    body = {"kind": "summary", "models": ["m"]}
    resp = await client.post(f"{API}/{doc['id']}/analyses/estimate", headers=h, json=body)
    assert resp.status_code == 503, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert (await client.get(f"{API}/{doc['id']}/analyses", headers=h)).json() == []
    # Checked like the start: someone else's document is not there, a bad body is a 422.
    intruder = issuer.headers(new_user_id())
    assert (await client.post(f"{API}/{doc['id']}/analyses/estimate", headers=intruder, json=body)).status_code == 404
    bad = await client.post(f"{API}/{doc['id']}/analyses/estimate", headers=h, json={"kind": "qa", "models": ["m"]})
    assert bad.status_code == 422
    assert (await client.post(f"{API}/{doc['id']}/analyses", headers=h, json=body)).status_code == 202


async def test_too_many_running_analyses_per_user_is_429(
    tmp_dir: Path, issuer: TokenIssuer, shared_db, silent_url: str
) -> None:
    # An auth service that accepts connections and never answers: analyses stay running.
    url = silent_url
    # (Starting waits for the silent llm's estimate, the budget check, only that long.)
    async with documents_app(
        tmp_dir,
        issuer,
        shared_db,
        auth_url=url,
        llm_url=url,
        analysis_max_active_per_user=1,
        analysis_budget_check_seconds=0.2,
    ) as client:
        h = issuer.headers(new_user_id())
        doc = await _ok(client, h, b"busy document", "b.txt")
        first = await client.post(f"{API}/{doc['id']}/analyses", headers=h, json={"kind": "summary", "models": ["m"]})
        assert first.status_code == 202
        second = await client.post(
            f"{API}/{doc['id']}/analyses", headers=h, json={"kind": "qa", "question": "who?", "models": ["m"]}
        )
        assert second.status_code == 429 and second.headers["retry-after"]
        # The same request as the running one is that one, not a new one.
        again = await client.post(f"{API}/{doc['id']}/analyses", headers=h, json={"kind": "summary", "models": ["m"]})
        assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
        # Another user is not held back by this one.
        h2 = issuer.headers(new_user_id())
        other = await _ok(client, h2, b"another busy document", "o.txt")
        resp = await client.post(f"{API}/{other['id']}/analyses", headers=h2, json={"kind": "summary", "models": ["m"]})
        assert resp.status_code == 202


async def test_an_analysis_handed_over_twice_runs_once(tmp_dir: Path, issuer: TokenIssuer, fresh_db) -> None:
    """The runner may deliver an analysis more than once (two processes picking up the same queue);
    the claim in the database lets exactly one of them run it."""
    from shared.client import ServiceClient
    from shared.db import Database
    from tests.documents.conftest import settings_for
    from ultrai_documents.analysis.analyst import Analyst
    from ultrai_documents.models import AnalysisEvent

    h = issuer.headers(new_user_id())
    async with documents_app(tmp_dir, issuer, fresh_db, analysis_workers=1) as client:
        doc = await _ok(client, h, b"handed over twice", "t.txt")
    settings = settings_for(tmp_dir, database_url=fresh_db)
    db = Database(settings, "documents")
    llm = ServiceClient("llm", "http://127.0.0.1:9")
    try:
        async with db.sessions() as session:
            from ultrai_documents.analysis.service import params_hash
            from ultrai_documents.models import Analysis

            params = {"kind": "summary", "question": None, "fields": None, "instruction": None}
            params |= {"models": ["m"], "synthesis_model": None}
            session.add(
                Analysis(
                    id="b" * 32,
                    document_id=doc["id"],
                    owner_id="x",
                    kind="summary",
                    params=params,
                    params_hash=params_hash(params),
                    status="queued",
                )
            )
            await session.commit()
        analyst = Analyst(db.sessions, llm, settings)
        await asyncio.gather(analyst.run("b" * 32), analyst.run("b" * 32), analyst.run("b" * 32))
        async with db.sessions() as session:
            from sqlalchemy import select

            events = (await session.scalars(select(AnalysisEvent).where(AnalysisEvent.analysis_id == "b" * 32))).all()
        running = [e for e in events if e.event == "status" and e.data == {"status": "running"}]
        assert len(running) == 1
        assert [e.event for e in events].count("failed") == 1
    finally:
        await llm.aclose()
        await db.dispose()


async def test_a_running_analysis_of_a_live_process_is_left_to_it(tmp_dir: Path, issuer: TokenIssuer, fresh_db) -> None:
    """A rolling deploy: the new process takes over only the analyses whose runner stopped beating;
    one whose runner beat a moment ago (the old instance, still serving) is not run a second time."""
    from datetime import timedelta

    from shared.db import Database
    from tests.documents.conftest import settings_for
    from ultrai_documents.models import Analysis, utcnow

    user = new_user_id()
    h = issuer.headers(user)
    async with documents_app(tmp_dir, issuer, fresh_db) as client:
        doc = await _ok(client, h, b"two analyses, one of them still in good hands", "r.txt")
    db = Database(settings_for(tmp_dir, database_url=fresh_db), "documents")
    async with db.sessions() as session:
        for analysis_id, beat in (("c" * 32, utcnow()), ("d" * 32, utcnow() - timedelta(hours=1))):
            session.add(running_analysis(analysis_id, doc["id"], user, heartbeat_at=beat))
        await session.commit()
    await db.dispose()
    async with documents_app(tmp_dir, issuer, fresh_db, analysis_lease_seconds=600) as client:
        base = f"{API}/{doc['id']}/analyses"
        # The silent one is taken over (and fails here: no llm service is running).
        events = await asyncio.wait_for(client.get(f"{base}/{'d' * 32}/events", headers=h), 60)
        assert events.text.count('"status":"running"') == 1 and "event: failed" in events.text, events.text
        # The live one stays with its runner: not claimed, not run, no event.
        live = (await client.get(f"{base}/{'c' * 32}", headers=h)).json()
        assert live["status"] == "running"
        async with db.sessions() as session:
            from sqlalchemy import select

            from ultrai_documents.models import AnalysisEvent

            row = await session.get(Analysis, "c" * 32)
            assert row is not None and row.attempt == 1
            rows = (await session.scalars(select(AnalysisEvent).where(AnalysisEvent.analysis_id == "c" * 32))).all()
            assert rows == []
        await db.dispose()


async def test_cancel_an_analysis(tmp_dir: Path, issuer: TokenIssuer, shared_db, silent_url: str) -> None:
    """In process: a running analysis (its llm call never answered) is cancelled at once, its
    stream ends with ``cancelled``, a second cancel is a 409, and only its owner may cancel it."""
    url = silent_url
    async with documents_app(
        tmp_dir, issuer, shared_db, auth_url=url, llm_url=url, analysis_budget_check_seconds=0.2
    ) as client:
        h = issuer.headers(new_user_id())
        doc = await _ok(client, h, b"a document whose analysis is stopped", "s.txt")
        resp = await client.post(f"{API}/{doc['id']}/analyses", headers=h, json={"kind": "summary", "models": ["m"]})
        analysis = resp.json()["links"]["self"]
        for _ in range(200):
            if (await client.get(analysis, headers=h)).json()["status"] == "running":
                break
            await asyncio.sleep(0.05)
        assert (await client.get(analysis, headers=h)).json()["status"] == "running"

        # Someone else's analysis is not theirs to cancel; no token is a 401.
        other = await client.post(analysis + "/cancel", headers=issuer.headers(new_user_id()))
        assert other.status_code == 404
        assert (await client.post(analysis + "/cancel")).status_code == 401

        cancelled = await client.post(analysis + "/cancel", headers=h)
        assert cancelled.status_code == 200, cancelled.text
        body = cancelled.json()
        assert body["status"] == "cancelled" and body["finished_at"] is not None
        events = await asyncio.wait_for(client.get(analysis + "/events", headers=h), 30)
        assert events.text.rstrip().endswith('data: {"status":"cancelled"}'), events.text
        again = await client.post(analysis + "/cancel", headers=h)
        assert again.status_code == 409
        assert again.headers["content-type"].startswith("application/problem+json")
        assert "cancelled" in again.json()["detail"]
        assert (await client.get(analysis, headers=h)).json()["status"] == "cancelled"
