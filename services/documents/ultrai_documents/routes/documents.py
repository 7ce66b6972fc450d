"""Documents: upload, list, read (metadata, text, chunks, original) and delete."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from shared.errors import problem_responses
from shared.tokens import RevocationRecheck
from ultrai_documents.deps import Documents, Owner
from ultrai_documents.schemas import PREFIX, ChunkOut, DocumentCreated, DocumentOut, DocumentPage, document_url
from ultrai_documents.upload import content_disposition

router = APIRouter(prefix=PREFIX, tags=["documents"])


@router.post(
    "",
    status_code=201,
    response_model=DocumentCreated,
    summary="Upload a document (multipart/form-data, field 'file')",
    responses={
        200: {"model": DocumentCreated, "description": "The same bytes were uploaded before: that document"},
        **problem_responses(400, 401, 403, 413, 415, 422),
    },
)
async def upload(
    request: Request, response: Response, owner: Owner, documents: Documents, recheck: RevocationRecheck
) -> DocumentCreated:
    content_type = request.headers.get("content-type", "")
    doc, created = await documents.upload(owner, content_type, request.stream(), recheck)
    response.headers["Location"] = document_url(doc.id)
    if not created:
        response.status_code = 200
    return DocumentCreated.of_upload(doc, duplicate=not created)


@router.get(
    "",
    response_model=DocumentPage,
    summary="Your documents, newest first",
    responses=problem_responses(400, 401),
)
async def list_documents(
    owner: Owner,
    documents: Documents,
    limit: int = Query(20, ge=1, le=100),
    cursor: str | None = Query(None, max_length=200),
) -> DocumentPage:
    rows, next_cursor = await documents.page(owner, limit, cursor)
    return DocumentPage(items=[DocumentOut.of(d) for d in rows], next_cursor=next_cursor)


@router.get(
    "/{document_id}",
    response_model=DocumentOut,
    summary="One document's metadata",
    responses=problem_responses(401, 404),
)
async def get_document(document_id: str, owner: Owner, documents: Documents) -> DocumentOut:
    return DocumentOut.of(await documents.get(owner, document_id))


@router.get(
    "/{document_id}/text",
    summary="The extracted text (UTF-8)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}, **problem_responses(401, 404)},
)
async def get_text(document_id: str, owner: Owner, documents: Documents) -> Response:
    return StreamingResponse(await documents.text(owner, document_id), media_type="text/plain; charset=utf-8")


@router.get(
    "/{document_id}/chunks",
    response_model=list[ChunkOut],
    summary="The document's chunks (token-aware, overlapping)",
    responses=problem_responses(401, 404),
)
async def get_chunks(
    document_id: str,
    owner: Owner,
    documents: Documents,
    offset: int = Query(0, ge=0),
    limit: int = Query(50, ge=1, le=500),
) -> list[ChunkOut]:
    return [ChunkOut.of(c) for c in await documents.chunks(owner, document_id, offset, limit)]


@router.get(
    "/{document_id}/download",
    summary="The original file",
    response_class=StreamingResponse,
    responses=problem_responses(401, 404),
)
async def download(document_id: str, owner: Owner, documents: Documents) -> Response:
    doc, content = await documents.original(owner, document_id)
    return StreamingResponse(
        content,
        media_type=doc.media_type,
        headers={
            "Content-Disposition": content_disposition(doc.name),
            "Content-Length": str(doc.size_bytes),
            # X-Content-Type-Options: nosniff and a default-src 'none' CSP come from the shared
            # middleware on every response; a sandbox keeps an HTML original inert if opened.
            "Cache-Control": "private, no-store",
            "Content-Security-Policy": "sandbox",
        },
    )


@router.delete(
    "/{document_id}",
    status_code=204,
    summary="Delete a document with its chunks and analyses",
    responses=problem_responses(401, 404),
)
async def delete_document(document_id: str, owner: Owner, documents: Documents) -> Response:
    await documents.delete(owner, document_id)
    return Response(status_code=204)
